//! `raftkv snapshot restore`: the data dir of one member of a new cluster, from a backup
//! file (`crate::backup`).
//!
//! As etcd's restore: the member's and the cluster's ids come from the restore's own
//! `--name`, `--initial-cluster`, `--initial-cluster-token` and
//! `--initial-advertise-peer-urls` (so a restored cluster is a new cluster, and its members
//! never talk to the old one's), and the data dir starts with a Raft snapshot at index 1,
//! term 1, holding the backup's store and the new membership. Run it once per member with
//! the same file and flags except `--name`/`--initial-advertise-peer-urls`; every member
//! then starts from the same state and elects a leader in term 2.
//!
//! The keys, their history and revisions are the backup's. By default (etcd 3.6's
//! `--bump-revision` / `--mark-compacted` made the default, as issue 17 asks) the current
//! revision then moves forward by [`DEFAULT_BUMP`] and the history is compacted there: a
//! watcher that resumes across the restore with an old revision is told it was compacted
//! instead of missing or repeating events, and no revision is handed out twice. With
//! `bump_revision = 0, mark_compacted = false` the store is exactly the backup's (HashKV at
//! the backup's revision equals the original's). Alarms raised in the old cluster name old
//! member ids and are dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use mvcc::Store;
use raft::{ConfState, HardState, Snapshot, SnapshotMeta};
use storage::{RealFs, Storage, StorageOptions};

use crate::args::ServerArgs;
use crate::config::Config;

/// How far a restore moves the revision by default: etcd's documentation suggests
/// 1,000,000,000 (more writes than any cluster makes between a backup and a restore).
pub const DEFAULT_BUMP: i64 = 1_000_000_000;

/// What a restore does to the backup's revisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreOptions {
    pub bump_revision: i64,
    pub mark_compacted: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            bump_revision: DEFAULT_BUMP,
            mark_compacted: true,
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub data_dir: PathBuf,
    pub member_id: u64,
    pub cluster_id: u64,
    pub members: Vec<(String, u64)>,
    pub revision: i64,
    pub keys: usize,
}

/// Read and check a backup file (`crate::backup::read`): raftkv's own (the store image
/// in the `raftkv` bucket of its bbolt file, or in an earlier `RKVBAK01` file), or etcd's
/// database as `etcdctl snapshot save` writes it (`migrate`: its SHA-256, bbolt's
/// structure, etcd's history), which becomes a store with the same keys, revisions and
/// versions.
pub fn read_backup(path: &Path) -> anyhow::Result<Store> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let contents = crate::backup::read(&bytes).with_context(|| path.display().to_string())?;
    drop(bytes);
    match contents {
        crate::backup::Contents::Raftkv(image) => Store::restore(&image)
            .map_err(|e| anyhow::anyhow!("{}: the store image is damaged: {e}", path.display())),
        crate::backup::Contents::Etcd(backend) => backend
            .into_store()
            .with_context(|| format!("{}: cannot migrate this etcd database", path.display())),
    }
}

/// Build the data dir `args` names (which must not exist or be empty) from `backup`.
/// `args` are a member's server flags; only the identity and data-dir flags matter.
pub fn restore(
    backup: &Path,
    args: &ServerArgs,
    options: RestoreOptions,
) -> anyhow::Result<Restored> {
    let mut store = read_backup(backup)?;
    let config = Config::from_args(args)?;
    let dir = &config.data_dir;
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "data-dir {:?} exists and is not empty: restore only into a new data dir",
            dir.display()
        );
    }
    store.clear_alarms();
    store
        .bump_revision(options.bump_revision, options.mark_compacted)
        .map_err(|e| anyhow::anyhow!("--bump-revision: {e}"))?;
    let revision = store.current_revision();
    let keys = store.key_count();
    let opts = StorageOptions::new(config.member_id, config.cluster_id);
    let (mut storage, recovered) = Storage::open(Arc::new(RealFs), dir, &opts)
        .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", dir.display()))?;
    if !recovered.created {
        bail!("data-dir {:?} already holds a member", dir.display());
    }
    let conf_state = ConfState {
        voters: config.initial_members.iter().map(|m| m.id).collect(),
        learners: vec![],
    };
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: 1,
            term: 1,
            conf_state,
        },
        data: bytes::Bytes::from(store.snapshot()),
    };
    let hard_state = HardState {
        term: 1,
        vote: None,
        commit: 1,
    };
    storage
        .save(Some(&hard_state), &[], Some(&snapshot))
        .map_err(|e| anyhow::anyhow!("cannot write the restored snapshot: {e}"))?;
    Ok(Restored {
        data_dir: dir.clone(),
        member_id: config.member_id,
        cluster_id: config.cluster_id,
        members: config
            .initial_members
            .iter()
            .map(|m| (m.name.clone(), m.id))
            .collect(),
        revision,
        keys,
    })
}
