//! `raftkv snapshot save|status|restore`: backups of a member's state (the file format is
//! `server::backup`; docs/operations.md says what etcdctl can and cannot do with it).

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::cli::GlobalOptions;
use crate::output::OutputFormat;

/// Stream `Maintenance/Snapshot` from the one endpoint into `file` (through `file.part`,
/// renamed only once the SHA-256 and the image inside check out), with progress on stderr.
pub async fn save(global: &GlobalOptions, file: &Path) -> Result<()> {
    let endpoints = global.endpoints_or_default();
    if endpoints.len() != 1 {
        bail!("snapshot must be requested to one selected node, not multiple {endpoints:?}");
    }
    let client = global.client_for(&endpoints)?;
    let mut stream = client
        .snapshot()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut data = Vec::new();
    let mut last_shown = 0usize;
    let mut stderr = std::io::stderr();
    while let Some(message) = stream
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("snapshot stream broke: {}", s.message()))?
    {
        data.extend_from_slice(&message.blob);
        let total = data.len() + message.remaining_bytes as usize;
        if data.len() - last_shown >= 1 << 20 || message.remaining_bytes == 0 {
            last_shown = data.len();
            let _ = write!(
                stderr,
                "\rreceived {} of {} bytes ({:.0}%)",
                data.len(),
                total,
                100.0 * data.len() as f64 / total.max(1) as f64
            );
        }
    }
    let _ = writeln!(stderr);
    let store = server::backup::open(&data)
        .map_err(|e| anyhow::anyhow!("the received snapshot is unusable: {e}"))
        .and_then(|image| {
            mvcc::Store::restore(&image)
                .map_err(|e| anyhow::anyhow!("the received store image is damaged: {e}"))
        })?;
    let part = file.with_extension("part");
    std::fs::write(&part, &data).with_context(|| format!("cannot write {}", part.display()))?;
    std::fs::File::open(&part)?.sync_all()?;
    std::fs::rename(&part, file)
        .with_context(|| format!("cannot rename {} to {}", part.display(), file.display()))?;
    println!(
        "Snapshot saved at {} (revision {}, {} keys, {} bytes, sha256 verified)",
        file.display(),
        store.current_revision(),
        store.key_count(),
        data.len()
    );
    Ok(())
}

/// etcdctl's `snapshot status` columns: hash (HashKV of the latest revision), revision,
/// total keys, total size.
pub fn status(global: &GlobalOptions, file: &Path) -> Result<()> {
    let store = server::restore::read_backup(file)?;
    let size = std::fs::metadata(file)?.len();
    let hash = store
        .hash_kv(0)
        .map_err(|e| anyhow::anyhow!("cannot hash the snapshot: {e}"))?
        .hash;
    let revision = store.current_revision();
    let keys = store.key_count();
    match global.write_out {
        OutputFormat::Json => println!(
            "{{\"hash\":{hash},\"revision\":{revision},\"totalKey\":{keys},\"totalSize\":{size}}}"
        ),
        _ => {
            println!("+----------+----------+------------+------------+");
            println!("|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |");
            println!("+----------+----------+------------+------------+");
            println!("| {hash:8x} | {revision:8} | {keys:10} | {size:10} |");
            println!("+----------+----------+------------+------------+");
        }
    }
    Ok(())
}

/// Build one new member's data dir from a backup.
pub fn restore(
    file: &Path,
    args: &server::ServerArgs,
    options: server::restore::RestoreOptions,
) -> Result<()> {
    let r = server::restore::restore(file, args, options)?;
    for (name, id) in &r.members {
        println!(
            "added member {id:x} ({name}) to the restored cluster {:x}",
            r.cluster_id
        );
    }
    println!(
        "restored snapshot (revision {}, {} keys) into {} as member {:x}",
        r.revision,
        r.keys,
        r.data_dir.display(),
        r.member_id
    );
    Ok(())
}
