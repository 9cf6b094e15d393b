//! `Driver::keep_snapshot_image`: the core takes other bytes for the snapshot its log
//! starts at (the server's copy mapped from the file), and only for that snapshot; it never
//! compacts. That the core then sends those bytes is `raft`'s
//! `compact_at_the_log_start_only_replaces_the_image_sent`.

use std::time::Duration;

mod common;

use bytes::Bytes;
use common::TICK;
use node::Driver;
use raft::{Snapshot, SnapshotMeta};

/// A single-member cluster, elected, with a proposal applied.
fn elected_single_member() -> Driver {
    let mut d = Driver::new(
        common::member(1, vec![1]),
        common::config(),
        (0, 0),
        Duration::ZERO,
    );
    let mut now = Duration::ZERO;
    while d.status().core.leader != Some(1) {
        assert!(now < TICK * 1000, "a single member elects itself");
        now += TICK;
        d.tick(now);
        while d.poll().is_some() {
            d.advance();
        }
    }
    d.propose(1, Bytes::from_static(b"x"));
    while d.poll().is_some() {
        d.advance();
    }
    d
}

/// Asks for a snapshot of everything applied and reports it written with `data`.
fn snapshot_now(d: &mut Driver, data: &'static [u8]) -> SnapshotMeta {
    assert!(d.request_snapshot());
    let mut meta = None;
    while let Some(fx) = d.poll() {
        meta = fx.start_snapshot.or(meta);
        d.advance();
    }
    let meta = meta.expect("the requested snapshot starts");
    let snapshot = Snapshot {
        meta: meta.clone(),
        data: Bytes::from_static(data),
    };
    assert!(
        d.snapshot_written(Ok(snapshot)),
        "the log is compacted to it"
    );
    meta
}

#[test]
fn only_the_snapshot_the_log_starts_at_takes_new_bytes() {
    let mut d = elected_single_member();
    let first = snapshot_now(&mut d, b"heap copy");
    let again = |meta: &SnapshotMeta| Snapshot {
        meta: meta.clone(),
        data: Bytes::from_static(b"mapped copy"),
    };
    assert!(d.keep_snapshot_image(again(&first)));
    assert_eq!(
        d.status().core.first_index,
        first.index + 1,
        "nothing compacted"
    );

    // An applied index past the log's start, which the core would compact to: the driver
    // refuses it, since it is not a snapshot this member holds.
    d.propose(1, Bytes::from_static(b"y"));
    while d.poll().is_some() {
        d.advance();
    }
    let mut later = first.clone();
    later.index += 1;
    assert!(d.status().applied >= later.index);
    assert!(
        !d.keep_snapshot_image(again(&later)),
        "an index past the log's start is not a snapshot it holds"
    );
    assert_eq!(
        d.status().core.first_index,
        first.index + 1,
        "nothing compacted"
    );

    let second = snapshot_now(&mut d, b"newer heap copy");
    assert!(second.index > first.index);
    assert!(
        !d.keep_snapshot_image(again(&first)),
        "a superseded snapshot does not come back"
    );
    assert!(d.keep_snapshot_image(again(&second)));
}
