//! How long a member takes to come back with a big store: `restart_bench [KEYS] [--drop-caches]`.
//!
//! Builds an MVCC store of KEYS distinct keys with 1 KiB values (default 1,000,000), writes it
//! as a Raft snapshot into a real data dir plus a WAL tail of 10,000 put entries after it,
//! closes everything, then restarts the way `server::server` does: `Storage::open` (WAL
//! replay + snapshot verification), `MvccMachine::restore` from the snapshot image, then the
//! committed tail re-applied through `MvccMachine::apply` (on a live member the Raft core
//! hands those entries back as committed entries; applying them is the same work).
//!
//! The restart is checked, not just timed: the restored store must hold KEYS + tail keys, be
//! at the same revision and have the same `hash_kv` as the store that was written, so an
//! empty or partial restore cannot pass.
//!
//! `--drop-caches` (root only) syncs and drops the page cache before the restart, for a
//! cold-cache figure; without it the figure is warm-cache (the files were just written).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use mvcc::Store;
use prost::Message as _;
use proto::etcdserverpb::PutRequest;
use proto::raftkvpb::internal_request::Request;
use proto::raftkvpb::InternalRequest;
use raft::{ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta};
use server::kv::MvccMachine;
use server::node::StateMachine;
use storage::{RealFs, Storage, StorageOptions};

/// Entries in the WAL after the snapshot (what a member replays on top of it).
const TAIL_ENTRIES: u64 = 10_000;
/// Entries per `save` while writing the tail, like one Ready's batch.
const SAVE_BATCH: usize = 1_000;
const VALUE_LEN: usize = 1024;
const MEMBER_ID: u64 = 1;
const CLUSTER_ID: u64 = 0x5eed;
const TERM: u64 = 1;

fn put_request(id: u64, key: String) -> InternalRequest {
    // Values differ per key so the hash comparison sees value mix-ups too.
    let value = vec![b'a' + (id % 26) as u8; VALUE_LEN];
    InternalRequest {
        auth: None,
        request: Some(Request::Put(PutRequest {
            key: Bytes::from(key.into_bytes()),
            value: Bytes::from(value),
            ..Default::default()
        })),
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// What the written store looked like, to compare the restored one against.
struct Expected {
    keys: usize,
    revision: i64,
    hash: mvcc::HashKv,
}

/// Build the store, write snapshot + WAL tail into `dir`, and return what a restart must see.
fn prepare(dir: &std::path::Path, keys: u64) -> anyhow::Result<Expected> {
    let t = Instant::now();
    let mut store = Store::new();
    for i in 0..keys {
        let req = put_request(i + 1, format!("restart/{i:09}"));
        store
            .apply(&req)
            .map_err(|e| anyhow::anyhow!("put {i}: {e:?}"))?;
    }
    println!(
        "build store:       {:>8.3} s  ({} keys, revision {})",
        secs(t.elapsed()),
        store.key_count(),
        store.current_revision()
    );

    let t = Instant::now();
    let image = Bytes::from(store.snapshot());
    println!(
        "serialise store:   {:>8.3} s  ({:.1} MiB image)",
        secs(t.elapsed()),
        image.len() as f64 / (1024.0 * 1024.0)
    );

    // Pretend entry i carried put i: the snapshot covers indexes 1..=keys.
    let snap_index = keys;
    let t = Instant::now();
    let opts = StorageOptions::new(MEMBER_ID, CLUSTER_ID);
    let (mut storage, recovered) =
        Storage::open(Arc::new(RealFs), dir, &opts).context("open a fresh data dir")?;
    if !recovered.created {
        bail!("{} was not empty", dir.display());
    }
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: snap_index,
            term: TERM,
            conf_state: ConfState {
                voters: vec![MEMBER_ID],
                learners: vec![],
            },
        },
        data: image,
    };
    let mut hs = HardState {
        term: TERM,
        vote: Some(MEMBER_ID),
        commit: snap_index,
    };
    storage
        .save(Some(&hs), &[], Some(&snapshot))
        .context("save the snapshot")?;
    drop(snapshot);
    println!("write snapshot:    {:>8.3} s", secs(t.elapsed()));

    let t = Instant::now();
    let mut batch = Vec::with_capacity(SAVE_BATCH);
    for n in 1..=TAIL_ENTRIES {
        let index = snap_index + n;
        let req = put_request(index, format!("restart/tail/{n:06}"));
        store
            .apply(&req)
            .map_err(|e| anyhow::anyhow!("tail put {n}: {e:?}"))?;
        batch.push(Entry {
            term: TERM,
            index,
            kind: EntryKind::Normal,
            data: Bytes::from(req.encode_to_vec()),
        });
        if batch.len() == SAVE_BATCH || n == TAIL_ENTRIES {
            hs.commit = index;
            storage
                .save(Some(&hs), &batch, None)
                .context("save tail entries")?;
            batch.clear();
        }
    }
    println!(
        "write WAL tail:    {:>8.3} s  ({TAIL_ENTRIES} entries, {} segment(s))",
        secs(t.elapsed()),
        storage.wal_segment_count()
    );
    drop(storage);

    let expected = Expected {
        keys: store.key_count(),
        revision: store.current_revision(),
        hash: store
            .hash_kv(0)
            .map_err(|e| anyhow::anyhow!("hash_kv: {e:?}"))?,
    };
    Ok(expected)
}

fn drop_page_cache() -> anyhow::Result<()> {
    let status = std::process::Command::new("sync")
        .status()
        .context("run sync")?;
    if !status.success() {
        bail!("sync failed: {status}");
    }
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("drop the page cache (needs root)")?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut keys: u64 = 1_000_000;
    let mut cold = false;
    for arg in std::env::args().skip(1) {
        if arg == "--drop-caches" {
            cold = true;
        } else {
            keys = arg
                .replace(['_', ','], "")
                .parse()
                .with_context(|| format!("KEYS must be a number, got {arg:?}"))?;
        }
    }
    if keys == 0 {
        bail!("KEYS must be at least 1");
    }
    let tmp = tempfile::tempdir().context("create a temp dir")?;
    let dir = tmp.path().join("member");
    println!(
        "restart_bench: {keys} keys x {VALUE_LEN} B + {TAIL_ENTRIES} WAL entries in {}",
        dir.display()
    );

    // The written store is dropped inside `prepare`, so the restart does not compete with
    // it for memory.
    let expected = prepare(&dir, keys)?;
    if cold {
        drop_page_cache()?;
        println!("page cache dropped (cold-cache restart)");
    } else {
        println!("page cache warm (files just written)");
    }

    // The restart, in the order server::server does it.
    let start = Instant::now();
    let mut opts = StorageOptions::new(MEMBER_ID, CLUSTER_ID);
    opts.expect_existing = true;
    let (storage, recovered) =
        Storage::open(Arc::new(RealFs), &dir, &opts).context("reopen the data dir")?;
    let initial = recovered.initial_state(ConfState::default());
    let t_open = start.elapsed();

    let t = Instant::now();
    let snap = recovered
        .snapshot
        .as_ref()
        .context("the reopened data dir has no snapshot")?;
    let mut machine = MvccMachine::default();
    machine.restore(&snap.data)?;
    let applied_from = snap.meta.index;
    let t_restore = t.elapsed();

    let t = Instant::now();
    let mut replayed = 0u64;
    for e in initial
        .entries
        .iter()
        .filter(|e| e.index > applied_from && e.index <= initial.hard_state.commit)
    {
        match machine.apply(e) {
            Some(Err(err)) => bail!("re-applying entry {}: {err:?}", e.index),
            Some(Ok(_)) => replayed += 1,
            None => {}
        }
    }
    let t_replay = t.elapsed();
    let total = start.elapsed();

    println!(
        "restart: Storage::open  {:>8.3} s  (snapshot at {applied_from}, {} WAL entries)",
        secs(t_open),
        recovered.entries.len()
    );
    println!("restart: Store restore  {:>8.3} s", secs(t_restore));
    println!(
        "restart: WAL replay     {:>8.3} s  ({replayed} entries)",
        secs(t_replay)
    );
    println!("restart: TOTAL          {:>8.3} s", secs(total));

    let got_keys = machine.store.key_count();
    let got_rev = machine.store.current_revision();
    let got_hash = machine
        .store
        .hash_kv(0)
        .map_err(|e| anyhow::anyhow!("hash_kv after restart: {e:?}"))?;
    let want_keys = usize::try_from(keys + TAIL_ENTRIES)?;
    if got_keys != want_keys || got_keys != expected.keys {
        bail!(
            "restored {got_keys} keys, expected {want_keys} (written store had {})",
            expected.keys
        );
    }
    if got_rev != expected.revision || got_hash != expected.hash {
        bail!(
            "restored store differs: revision {got_rev} vs {}, hash {got_hash:?} vs {:?}",
            expected.revision,
            expected.hash
        );
    }
    println!(
        "verified: {got_keys} keys, revision {got_rev}, hash_kv {:#010x} equal to the written store",
        got_hash.hash
    );
    drop(storage);
    if total > Duration::from_secs(5) {
        bail!("restart took {:.3} s, over the 5 s budget", secs(total));
    }
    Ok(())
}
