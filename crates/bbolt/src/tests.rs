//! The reader against small files laid out by hand, page by page, so that every structure
//! (both metas, branch and leaf pages, overflow, inline and nested buckets) and every kind
//! of damage can be made on purpose. A real etcd file is read in
//! `crates/raftkv/tests/migrate_from_etcd.rs`.

use super::*;
use crate::meta::fnv1a_64;

const PS: usize = 4096;

fn header(id: u64, flags: u16, count: u16, overflow: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(16);
    h.extend_from_slice(&id.to_le_bytes());
    h.extend_from_slice(&flags.to_le_bytes());
    h.extend_from_slice(&count.to_le_bytes());
    h.extend_from_slice(&overflow.to_le_bytes());
    h
}

/// A leaf page's bytes: elements (flags, key, value), then keys and values.
fn leaf(id: u64, elements: &[(u32, &[u8], Vec<u8>)]) -> Vec<u8> {
    let mut page = header(id, 0x02, elements.len() as u16, 0);
    let mut data = Vec::new();
    let data_start = 16 + 16 * elements.len();
    for (i, (flags, key, value)) in elements.iter().enumerate() {
        let element_at = 16 + 16 * i;
        let pos = (data_start + data.len() - element_at) as u32;
        page.extend_from_slice(&flags.to_le_bytes());
        page.extend_from_slice(&pos.to_le_bytes());
        page.extend_from_slice(&(key.len() as u32).to_le_bytes());
        page.extend_from_slice(&(value.len() as u32).to_le_bytes());
        data.extend_from_slice(key);
        data.extend_from_slice(value);
    }
    page.extend_from_slice(&data);
    page
}

fn branch(id: u64, children: &[(&[u8], u64)]) -> Vec<u8> {
    let mut page = header(id, 0x01, children.len() as u16, 0);
    let mut data = Vec::new();
    let data_start = 16 + 16 * children.len();
    for (i, (key, child)) in children.iter().enumerate() {
        let pos = (data_start + data.len() - (16 + 16 * i)) as u32;
        page.extend_from_slice(&pos.to_le_bytes());
        page.extend_from_slice(&(key.len() as u32).to_le_bytes());
        page.extend_from_slice(&child.to_le_bytes());
        data.extend_from_slice(key);
    }
    page.extend_from_slice(&data);
    page
}

fn meta(id: u64, root: u64, high_water: u64, txid: u64) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&0xED0C_DAEDu32.to_le_bytes());
    m.extend_from_slice(&2u32.to_le_bytes());
    m.extend_from_slice(&(PS as u32).to_le_bytes());
    m.extend_from_slice(&0u32.to_le_bytes());
    m.extend_from_slice(&root.to_le_bytes());
    m.extend_from_slice(&0u64.to_le_bytes());
    m.extend_from_slice(&0xffff_ffff_ffff_ffffu64.to_le_bytes());
    m.extend_from_slice(&high_water.to_le_bytes());
    m.extend_from_slice(&txid.to_le_bytes());
    let sum = fnv1a_64(&m);
    m.extend_from_slice(&sum.to_le_bytes());
    let mut page = header(id, 0x04, 0, 0);
    page.extend_from_slice(&m);
    page
}

/// A nested bucket's value: its header, and its page inlined when `root` is 0.
fn bucket_value(root: u64, inline: Option<Vec<u8>>) -> Vec<u8> {
    let mut v = root.to_le_bytes().to_vec();
    v.extend_from_slice(&0u64.to_le_bytes());
    v.extend(inline.unwrap_or_default());
    v
}

/// Lays `pages` out at their ids; a page longer than one page size spans overflow pages.
fn file(pages: Vec<(u64, Vec<u8>)>, total_pages: u64) -> Vec<u8> {
    let mut f = vec![0u8; total_pages as usize * PS];
    for (id, bytes) in pages {
        let at = id as usize * PS;
        f[at..at + bytes.len()].copy_from_slice(&bytes);
    }
    f
}

/// The file every test starts from:
/// root bucket (page 2) = { "big": bucket at page 3, "small": inline bucket };
/// page 3 = branch -> leaves 4 and 5; leaf 5 holds a value spanning an overflow page (6).
fn sample() -> Vec<u8> {
    let inline = leaf(0, &[(0, b"x", b"1".to_vec()), (0, b"y", b"2".to_vec())]);
    let root = leaf(
        2,
        &[
            (1, b"big", bucket_value(3, None)),
            (1, b"small", bucket_value(0, Some(inline))),
        ],
    );
    let tree = branch(3, &[(b"a", 4), (b"m", 5)]);
    let left = leaf(4, &[(0, b"a", b"A".to_vec()), (0, b"b", b"B".to_vec())]);
    let mut right = leaf(5, &[(0, b"m", vec![7u8; 6000]), (0, b"z", b"Z".to_vec())]);
    right[12..16].copy_from_slice(&1u32.to_le_bytes()); // one overflow page
    file(
        vec![
            (0, meta(0, 2, 7, 10)),
            (1, meta(1, 2, 7, 9)),
            (2, root),
            (3, tree),
            (4, left),
            (5, right),
        ],
        7,
    )
}

fn keys(bucket: &Bucket<'_>) -> Vec<Vec<u8>> {
    bucket
        .entries()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k.to_vec())
        .collect()
}

#[test]
fn reads_nested_inline_branch_and_overflow_pages() {
    let db = Db::from_bytes(sample()).unwrap();
    assert_eq!(db.meta().txid, 10);
    assert_eq!(keys(&db.root()), vec![b"big".to_vec(), b"small".to_vec()]);
    let big = db.bucket(b"big").unwrap().unwrap();
    assert_eq!(
        keys(&big),
        [b"a".to_vec(), b"b".to_vec(), b"m".to_vec(), b"z".to_vec()]
    );
    assert_eq!(big.get(b"m").unwrap().unwrap(), vec![7u8; 6000].as_slice());
    assert_eq!(big.get(b"z").unwrap(), Some(&b"Z"[..]));
    assert_eq!(big.get(b"nope").unwrap(), None);
    let small = db.bucket(b"small").unwrap().unwrap();
    assert_eq!(small.get(b"y").unwrap(), Some(&b"2"[..]));
    assert!(db.bucket(b"missing").unwrap().is_none());
}

#[test]
fn the_newer_valid_meta_wins_and_a_damaged_one_is_skipped() {
    let mut f = sample();
    // Damage the newer meta (page 0, txid 10): the older one (page 1, txid 9) is used.
    f[16 + 20] ^= 0xff;
    let db = Db::from_bytes(f.clone()).unwrap();
    assert_eq!(db.meta().txid, 9);
    // Both damaged: refused, naming both.
    f[PS + 16 + 20] ^= 0xff;
    let err = Db::from_bytes(f).unwrap_err();
    assert!(matches!(err, BoltError::NoValidMeta { .. }), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn damage_inside_the_tree_is_named_not_followed() {
    let with = |page: usize, at: usize, bytes: &[u8]| {
        let mut f = sample();
        f[page * PS + at..page * PS + at + bytes.len()].copy_from_slice(bytes);
        let db = Db::from_bytes(f).unwrap();
        let big = db.bucket(b"big").unwrap().unwrap();
        big.entries().unwrap_err()
    };
    // The branch's second child points back at the branch itself: a cycle.
    let err = with(3, 16 + 16 + 8, &3u64.to_le_bytes());
    assert_eq!(err, BoltError::PageReused { id: 3 });
    // ... at a page beyond the high-water mark.
    let err = with(3, 16 + 16 + 8, &99u64.to_le_bytes());
    assert!(matches!(err, BoltError::BadPageId { id: 99, .. }), "{err}");
    // ... at the meta page.
    let err = with(3, 16 + 16 + 8, &1u64.to_le_bytes());
    assert!(matches!(err, BoltError::BadPageId { id: 1, .. }), "{err}");
    // A leaf whose header says it is another page.
    let err = with(4, 0, &8u64.to_le_bytes());
    assert_eq!(err, BoltError::PageIdMismatch { id: 4, found: 8 });
    // An element whose key lies past the end of its page.
    let err = with(4, 16 + 4, &100_000u32.to_le_bytes());
    assert_eq!(err, BoltError::BadElement { page: 4, index: 0 });
    // Keys out of order (leaf 4's first key rewritten from "a" to "q").
    let left_data = 16 + 2 * 16;
    let err = with(4, left_data, b"q");
    assert!(matches!(err, BoltError::KeysOutOfOrder { .. }), "{err}");
}

#[test]
fn truncated_and_foreign_files_are_refused() {
    let f = sample();
    let err = Db::from_bytes(f[..5 * PS].to_vec()).unwrap_err();
    assert!(matches!(err, BoltError::Truncated { .. }), "{err}");
    let err = Db::from_bytes(b"definitely not a database".to_vec()).unwrap_err();
    assert!(matches!(err, BoltError::NoValidMeta { .. }), "{err}");
    let err = Db::from_bytes(vec![0u8; 3 * PS]).unwrap_err();
    assert!(matches!(err, BoltError::NoValidMeta { .. }), "{err}");
}
