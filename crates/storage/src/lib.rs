//! # storage — raftkv's durable Raft log, hard state and snapshots
//!
//! A member's data dir holds a metadata file, a segmented write-ahead log (every record
//! framed with its length and a CRC-32C) and checksummed snapshot files. This crate writes
//! them so that a crash at any moment loses nothing that was acknowledged, and reads them
//! back on start, refusing to start — with the file, the offset and what to do — rather
//! than silently dropping committed data. The on-disk formats are in `docs/storage.md`.
//!
//! ## API in one screen
//!
//! ```text
//! use std::sync::Arc;
//! use storage::{RealFs, Storage, StorageOptions};
//!
//! // Start: open (or initialise) the data dir; `expect_existing` = this member had state
//! // before, so an empty dir is an error (a wiped volume must not rejoin silently).
//! let mut opts = StorageOptions::new(member_id, cluster_id);
//! opts.expect_existing = restarting;            // segment_size, keep_snapshots: defaults
//! let (mut store, recovered) = Storage::open(Arc::new(RealFs), &data_dir, &opts)?;
//! // recovered.snapshot: Option<raft::Snapshot> (verified) → load into the state machine;
//! let initial = recovered.initial_state(bootstrap_conf_state);   // raft::InitialState
//!
//! // Ready loop: one durable batch (one fdatasync) per Ready, before persisted_messages.
//! store.save(rd.hard_state.as_ref(), &rd.entries, rd.snapshot.as_ref())?;
//!
//! // Background snapshot: serialise on another thread, then make it current.
//! let writer = store.snapshot_writer();          // Clone + Send, never blocks the WAL
//! let written = writer.write(&meta, &mut image_reader)?;   // tmp, fsync, rename, dir fsync
//! store.compact_to(&written)?;    // WAL marker (1 fsync), purge covered segments, keep 2
//! // store.load_snapshot() reads the current one back (to send to a follower).
//! ```
//!
//! `open` also locks the data dir (`raftkv.lock`, flock): a second process gets
//! `StorageError::Locked` after waiting `opts.lock_wait` (2 s) for the first to exit.
//!
//! Reads: `hard_state()`, `first_index()`, `last_index()`, `entries(lo, hi)` (`[lo, hi)`),
//! `term(i)`, `snapshot_meta()`. Errors: [`StorageError`]; `is_no_space()` errors leave the
//! store usable (the batch was rolled back), any other write error makes it refuse further
//! writes until a restart (after a failed fsync the page cache cannot be trusted).
//!
//! Testing helpers: [`LazyFs`] (LazyFS power-loss semantics behind the [`FileSystem`]
//! trait), [`LogStore`] + [`conformance`] (a suite any log store must pass) and
//! [`MemLogStore`] (the in-memory reference store).

mod codec;
pub mod conformance;
mod error;
mod fs;
mod lazy_fs;
mod log_store;
mod meta;
mod snapshot;
mod store;
mod wal;

pub use error::{Result, StorageError};
pub use fs::{write_file_atomically, FileSystem, FsFile, RealFs};
pub use lazy_fs::{LazyFs, LossMode};
pub use log_store::{LogStore, MemLogStore};
pub use meta::{FORMAT_VERSION, META_FILE};
pub use snapshot::{SnapshotWriter, WrittenSnapshot};
pub use store::{Recovered, Storage, StorageOptions};
pub use wal::DEFAULT_SEGMENT_SIZE;
