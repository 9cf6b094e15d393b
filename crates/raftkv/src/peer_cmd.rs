//! `raftkv peer admit`: tell the cluster which incarnation a member really has, when an
//! outsider dialled first under that member's ID and was recorded in its place (a member
//! that had never started; docs/security.md, "A pre-claimed member"). The incarnation is the
//! hex number in the real member's `<data-dir>/raftkv.incarnation`; `--data-dir` reads it
//! from there (the operator runs this where that directory is).

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;
use proto::raftkvpb::peers_client::PeersClient;
use proto::raftkvpb::PeerIncarnation;

use crate::cli::GlobalOptions;

#[derive(Subcommand, Debug)]
pub enum PeerCommand {
    /// Admit member MEMBER_ID (hex, as `member list` prints it) with the incarnation in its
    /// data dir, replacing what every member had recorded for it; connections under any
    /// other incarnation are closed. The member is then restarted to join.
    Admit {
        /// The member's ID, hex.
        member_id: String,
        /// Its incarnation, hex (the content of `<data-dir>/raftkv.incarnation`).
        #[arg(
            long,
            conflicts_with = "data_dir",
            required_unless_present = "data_dir"
        )]
        incarnation: Option<String>,
        /// Read the incarnation from this member's data dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// The incarnation: given, or read from `<data_dir>/raftkv.incarnation`.
fn incarnation_of(given: Option<&str>, data_dir: Option<&PathBuf>) -> Result<u64> {
    let text = match (given, data_dir) {
        (Some(hex), _) => hex.to_string(),
        (None, Some(dir)) => {
            let file = dir.join("raftkv.incarnation");
            std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?
        }
        (None, None) => bail!("give --incarnation or --data-dir"),
    };
    let hex = text.trim();
    match u64::from_str_radix(hex.trim_start_matches("0x"), 16) {
        Ok(0) | Err(_) => bail!("an incarnation is a non-zero hex number, got {hex:?}"),
        Ok(n) => Ok(n),
    }
}

pub async fn run(global: &GlobalOptions, cmd: &PeerCommand) -> Result<()> {
    let PeerCommand::Admit {
        member_id,
        incarnation,
        data_dir,
    } = cmd;
    let member = u64::from_str_radix(member_id.trim_start_matches("0x"), 16)
        .map_err(|_| anyhow::anyhow!("member ID {member_id:?} is not a hex number"))?;
    let incarnation = incarnation_of(incarnation.as_deref(), data_dir.as_ref())?;
    let client = crate::commands::client(global).await?;
    let request = PeerIncarnation {
        member_id: member,
        incarnation,
    };
    client
        .with_failover(|channel| {
            let request = client.request(request);
            async move { PeersClient::new(channel).admit_peer(request).await }
        })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.status.message()))?;
    crate::commands::emit(&format!(
        "Member {member:x} admitted with the given incarnation; restart it to join\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_incarnation_comes_from_the_flag_or_the_data_dir() {
        assert_eq!(incarnation_of(Some("1f"), None).unwrap(), 0x1f);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("raftkv.incarnation"), "abc\n").unwrap();
        assert_eq!(
            incarnation_of(None, Some(&dir.path().to_path_buf())).unwrap(),
            0xabc
        );
        assert!(incarnation_of(Some("0"), None).is_err());
        assert!(incarnation_of(Some("xyz"), None).is_err());
        let missing = dir.path().join("nope");
        let err = incarnation_of(None, Some(&missing))
            .unwrap_err()
            .to_string();
        assert!(err.contains("raftkv.incarnation"), "{err}");
    }
}
