//! `raftkv member list|add|remove|promote|update`: etcd's Cluster service with etcdctl's
//! arguments and printed lines (simple output format), so scripts written for
//! `etcdctl member …` read raftkv's output unchanged.

use anyhow::{Context, Result};
use clap::Subcommand;
use proto::etcdserverpb::cluster_client::ClusterClient;
use proto::etcdserverpb::{
    Member, MemberAddRequest, MemberPromoteRequest, MemberRemoveRequest, MemberUpdateRequest,
};

use crate::cli::GlobalOptions;
use crate::commands::{client, emit};

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// List the members (as `raftkv members`).
    List,
    /// Add a member: `NAME --peer-urls=URL[,URL]`; prints what the new member must be started
    /// with (`--initial-cluster-state existing`).
    Add {
        name: String,
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
        /// Add it as a learner (receives the log, does not vote).
        #[arg(long)]
        learner: bool,
    },
    /// Remove the member with this hex id.
    Remove { id: String },
    /// Promote the learner with this hex id to a voter.
    Promote { id: String },
    /// Change the peer URLs of the member with this hex id.
    Update {
        id: String,
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
    },
}

/// One Cluster RPC with failover and the client's token, its error as etcd's message.
macro_rules! call {
    ($client:expr, $method:ident, $req:expr) => {
        rpc!($client, ClusterClient, $method, $req)
    };
}

fn parse_id(text: &str) -> Result<u64> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16)
        .with_context(|| format!("bad member ID arg ({text:?}), expecting ID in Hex"))
}

pub async fn run(global: &GlobalOptions, cmd: &MemberCommand) -> Result<()> {
    let c = client(global).await?;
    match cmd {
        MemberCommand::List => crate::commands::members(global).await,
        MemberCommand::Add {
            name,
            peer_urls,
            learner,
        } => {
            let resp = call!(
                c,
                member_add,
                MemberAddRequest {
                    peer_ur_ls: peer_urls.clone(),
                    is_learner: *learner,
                }
            );
            let id = resp.member.as_ref().map_or(0, |m| m.id);
            let cluster = resp.header.as_ref().map_or(0, |h| h.cluster_id);
            emit(&added_text(name, id, cluster, peer_urls, &resp.members))
        }
        MemberCommand::Remove { id } => {
            let id = parse_id(id)?;
            let resp = call!(c, member_remove, MemberRemoveRequest { id });
            let cluster = resp.header.as_ref().map_or(0, |h| h.cluster_id);
            emit(&format!(
                "Member {id:16x} removed from cluster {cluster:16x}\n"
            ))
        }
        MemberCommand::Promote { id } => {
            let id = parse_id(id)?;
            let resp = call!(c, member_promote, MemberPromoteRequest { id });
            let cluster = resp.header.as_ref().map_or(0, |h| h.cluster_id);
            emit(&format!(
                "Member {id:16x} promoted in cluster {cluster:16x}\n"
            ))
        }
        MemberCommand::Update { id, peer_urls } => {
            let id = parse_id(id)?;
            let resp = call!(
                c,
                member_update,
                MemberUpdateRequest {
                    id,
                    peer_ur_ls: peer_urls.clone(),
                }
            );
            let cluster = resp.header.as_ref().map_or(0, |h| h.cluster_id);
            emit(&format!(
                "Member {id:16x} updated in cluster {cluster:16x}\n"
            ))
        }
    }
}

/// etcdctl's answer to `member add`: the new id, then the environment the new member must
/// start with. `ETCD_INITIAL_CLUSTER` lists every member's peer URLs in the answer's order,
/// the new one under the name given here (it has none yet), another unstarted one with an
/// empty name, as etcdctl does.
fn added_text(
    name: &str,
    id: u64,
    cluster: u64,
    peer_urls: &[String],
    members: &[Member],
) -> String {
    let mut initial = Vec::new();
    for m in members {
        let shown = if m.id == id { name } else { m.name.as_str() };
        for url in &m.peer_ur_ls {
            initial.push(format!("{shown}={url}"));
        }
    }
    format!(
        "Member {id:16x} added to cluster {cluster:16x}\n\n\
         ETCD_NAME=\"{name}\"\n\
         ETCD_INITIAL_CLUSTER=\"{}\"\n\
         ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{}\"\n\
         ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n",
        initial.join(","),
        peer_urls.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_add_prints_what_etcdctl_prints() {
        let members = vec![
            Member {
                id: 0x1,
                name: "a".into(),
                peer_ur_ls: vec!["http://h:1".into()],
                ..Member::default()
            },
            Member {
                id: 0xab,
                name: String::new(),
                peer_ur_ls: vec!["http://h:9".into()],
                ..Member::default()
            },
            Member {
                id: 0xcd,
                name: String::new(),
                peer_ur_ls: vec!["http://h:7".into()],
                ..Member::default()
            },
        ];
        let text = added_text("new", 0xab, 0xcc, &["http://h:9".into()], &members);
        assert_eq!(
            text,
            "Member               ab added to cluster               cc\n\n\
             ETCD_NAME=\"new\"\n\
             ETCD_INITIAL_CLUSTER=\"a=http://h:1,new=http://h:9,=http://h:7\"\n\
             ETCD_INITIAL_ADVERTISE_PEER_URLS=\"http://h:9\"\n\
             ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n"
        );
        assert!(parse_id("zz")
            .unwrap_err()
            .to_string()
            .contains("expecting ID in Hex"));
        assert_eq!(parse_id("0xAB").unwrap(), 0xab);
    }
}
