//! Snapshots: round trip, determinism, and rejection of damaged input.

mod common;
use common::*;
use mvcc::{SnapshotError, Store};

fn busy_store() -> Store {
    let mut store = abcde();
    do_del(&mut store, del("b", "")).unwrap();
    must_put(&mut store, "a", "again");
    do_txn(
        &mut store,
        txn(
            vec![],
            vec![op_put(put("x", "1")), op_del(del("c", "d"))],
            vec![],
        ),
    )
    .unwrap();
    do_compact(&mut store, 4).unwrap();
    must_put(&mut store, "bin\u{0}\u{ff}", "\u{1}");
    store
}

#[test]
fn restore_gives_back_an_equal_store_that_continues_identically() {
    let mut original = busy_store();
    let bytes = original.snapshot();
    let mut restored = Store::restore(&bytes).unwrap();
    assert_eq!(restored, original);
    assert_eq!(restored.hash_kv(0), original.hash_kv(0));
    assert_eq!(restored.hash_all(), original.hash_all());
    assert_eq!(restored.approximate_size(), original.approximate_size());
    for store in [&mut original, &mut restored] {
        must_put(store, "z", "1");
        do_del(store, del("a", "\0")).unwrap();
    }
    assert_eq!(restored, original);
    assert_eq!(restored.last_events(), original.last_events());
    assert_eq!(restored.hash_all(), original.hash_all());
}

#[test]
fn the_whole_store_hash_sees_every_change_and_compaction() {
    let mut store = busy_store();
    let mut seen = vec![store.hash_all()];
    must_put(&mut store, "a", "again");
    seen.push(store.hash_all());
    // A compaction changes no live key, only what history is kept.
    do_compact(&mut store, 6).unwrap();
    seen.push(store.hash_all());
    do_del(&mut store, del("x", "")).unwrap();
    seen.push(store.hash_all());
    let mut distinct = seen.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), seen.len(), "{seen:?}");
}

#[test]
fn snapshots_are_deterministic() {
    assert_eq!(busy_store().snapshot(), busy_store().snapshot());
    assert_eq!(
        Store::new().snapshot(),
        Store::restore(&Store::new().snapshot()).unwrap().snapshot()
    );
}

#[test]
fn any_flipped_byte_is_detected() {
    let bytes = busy_store().snapshot();
    for i in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[i] ^= 0x40;
        assert!(
            Store::restore(&damaged).is_err(),
            "flip at {i} went unnoticed"
        );
    }
}

#[test]
fn truncated_or_foreign_input_is_rejected_without_panicking() {
    let bytes = busy_store().snapshot();
    for len in 0..bytes.len() {
        assert!(
            Store::restore(&bytes[..len]).is_err(),
            "truncation to {len} accepted"
        );
    }
    assert_eq!(
        Store::restore(b"definitely not a snapshot"),
        Err(SnapshotError::NotASnapshot)
    );
    let mut future = bytes.clone();
    future[8..12].copy_from_slice(&99u32.to_be_bytes());
    assert_eq!(
        Store::restore(&future),
        Err(SnapshotError::UnsupportedVersion(99))
    );
}

fn apply_alarm(store: &mut Store, action: i32, member_id: u64, alarm: i32) {
    use proto::etcdserverpb::AlarmRequest;
    use proto::raftkvpb::{internal_request::Request, InternalRequest};
    store
        .apply(&InternalRequest {
            auth: None,
            request: Some(Request::Alarm(AlarmRequest {
                action,
                member_id,
                alarm,
            })),
        })
        .unwrap();
}

#[test]
fn alarms_travel_in_snapshots_and_keep_refusing_puts() {
    let mut store = busy_store();
    apply_alarm(&mut store, 1, 0xabc, 1); // ACTIVATE NOSPACE
    let restored = Store::restore(&store.snapshot()).unwrap();
    assert_eq!(restored, store);
    assert_eq!(restored.alarms().list().len(), 1);
    assert_eq!(restored.alarms().list()[0].member_id, 0xabc);
    let mut restored = restored;
    assert_eq!(
        do_put(&mut restored, put("more", "data")),
        Err(mvcc::MvccError::NoSpace)
    );
    // Deletes still work, and disarming lets puts through again.
    do_del(&mut restored, del("a", "")).unwrap();
    apply_alarm(&mut restored, 2, 0xabc, 1); // DEACTIVATE NOSPACE
    must_put(&mut restored, "more", "data");
}

#[test]
fn a_store_without_alarms_or_leases_writes_the_first_format() {
    // No sections: the bytes a build from before alarms and leases wrote and can read.
    let store = busy_store();
    let image = store.snapshot();
    assert_eq!(&image[8..12], &1u32.to_be_bytes());
    let restored = Store::restore(&image).unwrap();
    assert_eq!(restored, store);
    assert!(restored.alarms().is_empty());
}

/// `image` with `extra` inserted before its checksum, and a checksum to match.
fn with_extra_bytes(image: &[u8], extra: &[u8]) -> Vec<u8> {
    let mut body = image[..image.len() - 4].to_vec();
    body.extend_from_slice(extra);
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_be_bytes());
    body
}

#[test]
fn unknown_repeated_or_disordered_sections_are_refused() {
    let mut store = busy_store();
    apply_alarm(&mut store, 1, 0xabc, 1); // ACTIVATE NOSPACE: a 'W' section
    let image = store.snapshot();
    assert!(Store::restore(&image).is_ok());
    let unknown = with_extra_bytes(&image, &[b'Z', 0, 0, 0, 0]);
    assert_eq!(
        Store::restore(&unknown),
        Err(SnapshotError::Malformed("unknown section"))
    );
    let repeated = with_extra_bytes(&image, &[b'W', 0, 0, 0, 4, 0, 0, 0, 0]);
    assert_eq!(
        Store::restore(&repeated),
        Err(SnapshotError::Malformed(
            "sections repeated or out of order"
        ))
    );
    let out_of_order = with_extra_bytes(&image, &[b'L', 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        Store::restore(&out_of_order),
        Err(SnapshotError::Malformed(
            "sections repeated or out of order"
        ))
    );
}

#[test]
fn a_bumped_and_compacted_store_keeps_its_keys_and_refuses_old_revisions() {
    let mut store = busy_store();
    let before = store.current_revision();
    let live = store.range(&get("a", "\0")).unwrap().kvs;
    store.bump_revision(1000, true).unwrap();
    assert_eq!(store.current_revision(), before + 1000);
    assert_eq!(store.compact_revision(), before + 1000);
    assert_eq!(store.range(&get("a", "\0")).unwrap().kvs, live);
    let mut old = get("a", "\0");
    old.revision = before;
    assert_eq!(store.range(&old), Err(mvcc::MvccError::Compacted));
    assert_eq!(must_put(&mut store, "next", "1"), before + 1001);
    // Survives a snapshot, and a bump without compaction keeps the history.
    let mut other = Store::restore(&busy_store().snapshot()).unwrap();
    other.bump_revision(5, false).unwrap();
    old.revision = before;
    assert!(other.range(&old).is_ok());
    assert!(other.bump_revision(-1, false).is_err());
}

#[test]
fn an_image_with_two_entries_at_one_revision_is_refused() {
    let mut store = Store::new();
    must_put(&mut store, "a", "1");
    must_put(&mut store, "b", "2");
    let mut image = store.snapshot();
    // Key "b" (length 1, one entry), then its entry's main revision, 3: make it 2, which
    // key "a" already holds, and re-seal the checksum so only the structure is wrong.
    let b_entry = image
        .windows(9)
        .position(|w| w == b"\0\0\0\x01b\0\0\0\x01")
        .unwrap()
        + 9;
    assert_eq!(image[b_entry..b_entry + 8], 3i64.to_be_bytes());
    image[b_entry..b_entry + 8].copy_from_slice(&2i64.to_be_bytes());
    let body = image.len() - 4;
    let crc = crc32fast::hash(&image[..body]);
    image[body..].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(
        Store::restore(&image),
        Err(SnapshotError::Malformed("two entries share a revision"))
    );
}

/// A sink that keeps what it is given and the size of the largest single write.
#[derive(Default)]
struct Recorder {
    bytes: Vec<u8>,
    largest_write: usize,
}

impl std::io::Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.largest_write = self.largest_write.max(buf.len());
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_streamed_image_is_the_same_bytes_in_bounded_chunks_with_the_length_announced() {
    use proto::etcdserverpb::LeaseGrantRequest;
    use proto::raftkvpb::{internal_request::Request, InternalRequest};
    let plain = busy_store();
    let mut with_sections = busy_store();
    with_sections
        .apply(&InternalRequest {
            auth: None,
            request: Some(Request::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 7 })),
        })
        .unwrap();
    apply_alarm(&mut with_sections, 1, 0xabc, 1);
    // One key whose history alone is several chunks, beside many small keys.
    let mut long_history = Store::new();
    let value = "v".repeat(1000);
    for i in 0..5_000 {
        must_put(&mut long_history, "hot", &value);
        if i % 5 == 0 {
            must_put(&mut long_history, &format!("k{i:05}"), "small");
        }
    }
    for store in [plain, with_sections, long_history] {
        let mut sink = Recorder::default();
        store.snapshot_to(&mut sink).unwrap();
        assert_eq!(
            sink.bytes,
            store.snapshot(),
            "streamed and in-memory images differ"
        );
        assert_eq!(store.snapshot_len(), sink.bytes.len() as u64);
        assert_eq!(Store::restore(&sink.bytes).unwrap(), store);
        assert!(
            sink.largest_write <= (1 << 20) + 2_000,
            "a write of {} bytes: the image was not streamed",
            sink.largest_write
        );
    }
}

/// The image format is frozen: snapshot files and backups written by every earlier build
/// hold it. These fingerprints were computed with the encoder of b9b3a2f (the last build
/// that built the image in one buffer, before `snapshot_to` streamed it) for the same
/// two stores; a change of the encoder that changes a byte fails here.
#[test]
fn the_image_bytes_are_those_of_the_earlier_encoder() {
    use proto::etcdserverpb::LeaseGrantRequest;
    use proto::raftkvpb::{internal_request::Request, InternalRequest};
    let mut small = abcde();
    do_del(&mut small, del("b", "")).unwrap();
    must_put(&mut small, "a", "again");
    do_compact(&mut small, 4).unwrap();
    // More than one 1 MiB chunk, with a lease section.
    let mut large = Store::new();
    for i in 0..3000 {
        must_put(&mut large, &format!("k{}", i % 50), &"v".repeat(700));
    }
    large
        .apply(&InternalRequest {
            auth: None,
            request: Some(Request::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 7 })),
        })
        .unwrap();
    for (store, len, crc) in [(small, 387, 0x2978_8ec3), (large, 2_235_625, 0x27d5_e85a)] {
        let image = store.snapshot();
        assert_eq!((image.len(), crc32fast::hash(&image)), (len, crc));
    }
}
