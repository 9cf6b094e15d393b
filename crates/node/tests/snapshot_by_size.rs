//! When the driver asks for a snapshot: every `snapshot_count` applied entries, and once
//! images reach `snapshot_size_floor` bytes, only when the entries applied since the last
//! one add up to a quarter of its size (`node::IMAGE_BYTES_PER_LOG_BYTE`), so that a large
//! store does not spend its CPU and disk rewriting itself every few thousand entries.

use std::time::Duration;

mod common;

use bytes::Bytes;
use common::TICK;
use node::{Driver, DriverConfig, ENTRY_BYTES, IMAGE_BYTES_PER_LOG_BYTE, MAX_COUNTS_PER_SNAPSHOT};
use raft::{Snapshot, SnapshotMeta};
const COUNT: u64 = 10;
const FLOOR: u64 = 4_000;

fn single_member() -> Driver {
    let cfg = DriverConfig {
        snapshot_count: COUNT,
        snapshot_size_floor: FLOOR,
        ..common::config()
    };
    let mut d = Driver::new(common::member(1, vec![1]), cfg, (0, 0), Duration::ZERO);
    let mut now = Duration::ZERO;
    while d.status().core.leader != Some(1) {
        assert!(now < Duration::from_secs(10), "single member never led");
        now += TICK;
        d.tick(now);
        assert!(drain(&mut d).is_none());
    }
    d
}

/// Runs every batch (as if written, sent and applied); the snapshot asked for, if any.
fn drain(d: &mut Driver) -> Option<SnapshotMeta> {
    let mut asked = None;
    while let Some(fx) = d.poll() {
        if let Some(s) = fx.start_snapshot {
            asked = Some(SnapshotMeta {
                index: s.index,
                term: s.term,
                conf_state: s.conf_state,
            });
        }
        d.advance();
    }
    asked
}

/// Proposes entries of `size` bytes one at a time until a snapshot is asked for (or
/// `limit` entries); returns how many it took.
fn entries_until_snapshot(d: &mut Driver, size: usize, limit: u64) -> Option<(u64, SnapshotMeta)> {
    for n in 1..=limit {
        d.propose(n, Bytes::from(vec![b'v'; size]));
        if let Some(meta) = drain(d) {
            return Some((n, meta));
        }
    }
    None
}

/// The snapshot asked for is written with an image of `image` bytes.
fn written(d: &mut Driver, meta: SnapshotMeta, image: u64) {
    assert!(d.snapshot_written(Ok(Snapshot {
        meta,
        data: Bytes::from(vec![0u8; image as usize]),
    })));
}

#[test]
fn below_the_floor_the_count_alone_decides() {
    let mut d = single_member();
    // The election's no-op counts as an applied entry too.
    let (n, meta) = entries_until_snapshot(&mut d, 100, 100).expect("a first snapshot");
    assert!(n <= COUNT, "first snapshot after {n} entries");
    written(&mut d, meta, FLOOR - 1);
    let (n, _) = entries_until_snapshot(&mut d, 1, 100).expect("a second snapshot");
    assert_eq!(
        n, COUNT,
        "an image below the floor: every {COUNT} entries, however small"
    );
}

/// Entries of `size` bytes needed to reach a quarter of an image of `image` bytes.
fn entries_for_a_quarter(image: u64, size: u64) -> u64 {
    (image / IMAGE_BYTES_PER_LOG_BYTE).div_ceil(size + ENTRY_BYTES)
}

#[test]
fn above_the_floor_a_snapshot_waits_for_a_quarter_of_the_image_in_log() {
    let mut d = single_member();
    let (_, meta) = entries_until_snapshot(&mut d, 100, 100).expect("a first snapshot");
    let image = 40_000;
    written(&mut d, meta, image);
    // 100-byte entries: the count is reached after 10, the bytes only later.
    let expected = entries_for_a_quarter(image, 100);
    assert!(expected > COUNT && expected < COUNT * MAX_COUNTS_PER_SNAPSHOT);
    let (n, meta) = entries_until_snapshot(&mut d, 100, 1_000).expect("a second snapshot");
    assert_eq!(
        n, expected,
        "asked for once a quarter of {image} bytes was in the log"
    );
    // Large entries reach the bytes first: then the count still holds it back.
    written(&mut d, meta, image);
    let (n, _) = entries_until_snapshot(&mut d, 20_000, 100).expect("a third snapshot");
    assert_eq!(n, COUNT, "the count is still a minimum");
}

#[test]
fn however_small_the_entries_a_snapshot_comes_after_ten_counts() {
    let mut d = single_member();
    let (_, meta) = entries_until_snapshot(&mut d, 100, 100).expect("a first snapshot");
    let image = 400_000;
    written(&mut d, meta, image);
    assert!(entries_for_a_quarter(image, 0) > COUNT * MAX_COUNTS_PER_SNAPSHOT);
    let (n, _) = entries_until_snapshot(&mut d, 0, 10_000).expect("a snapshot by the cap");
    assert_eq!(n, COUNT * MAX_COUNTS_PER_SNAPSHOT);
}

#[test]
fn a_failed_snapshot_is_retried_by_count_and_the_bytes_count_from_the_request() {
    let mut d = single_member();
    let (_, _) = entries_until_snapshot(&mut d, 100, 100).expect("a first snapshot");
    // It failed: the next is asked for after the count again, from the failure on.
    assert!(!d.snapshot_written(Err(())));
    let (n, meta) = entries_until_snapshot(&mut d, 100, 100).expect("a retry");
    assert_eq!(n, COUNT);
    let image = 40_000;
    written(&mut d, meta, image);
    // The bytes applied before a snapshot was asked for do not count towards the next:
    // 500-byte entries reach a quarter of the image after more than the count.
    let expected = entries_for_a_quarter(image, 500);
    assert!(expected > COUNT);
    let (n, _) = entries_until_snapshot(&mut d, 500, 100).expect("a snapshot by bytes");
    assert_eq!(n, expected);
    // Above the floor, a failure gives the bytes back: the retry waits for the count only.
    assert!(!d.snapshot_written(Err(())));
    let (n, _) = entries_until_snapshot(&mut d, 500, 100).expect("a retry by count");
    assert_eq!(
        n, COUNT,
        "a failed snapshot must not wait for another quarter of the image"
    );
}
