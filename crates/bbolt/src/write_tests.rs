//! The writer against the crate's own reader: what goes in comes out, in trees of every
//! shape, and every page of the file is used exactly once (what bbolt's `tx.Check()`
//! demands). etcd's own tools read written files in `tests/etcdctl_status.rs`.

use std::collections::BTreeMap;

use super::*;
use crate::page::PageView;

/// A deterministic stream of pseudo-random numbers (no dependency for a test).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

fn bucket(name: &str, entries: Entries) -> BucketContents {
    BucketContents {
        name: name.as_bytes().to_vec(),
        entries,
    }
}

/// A bucket's keys and values, in order.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Reads every bucket back as plain data.
fn read_back(file: Vec<u8>) -> BTreeMap<Vec<u8>, Entries> {
    let db = Db::from_bytes(file).expect("written file opens");
    let mut out = BTreeMap::new();
    for (name, value) in db.root().entries().expect("root bucket") {
        let Value::Bucket(b) = value else {
            panic!("top-level key {name:?} is not a bucket")
        };
        let entries = b
            .entries()
            .expect("bucket reads")
            .into_iter()
            .map(|(k, v)| match v {
                Value::Data(d) => (k.to_vec(), d.to_vec()),
                Value::Bucket(_) => panic!("nested bucket under {name:?}"),
            })
            .collect();
        out.insert(name.to_vec(), entries);
    }
    out
}

/// Counts how often each page id is used by the trees, the metas and the freelist, and
/// checks every page below the high-water mark is used exactly once.
fn assert_every_page_used_once(file: &[u8]) {
    let db = Db::from_bytes(file.to_vec()).unwrap();
    let meta = db.meta().clone();
    assert_eq!(meta.page_size as usize, PAGE_SIZE);
    assert_eq!(file.len(), meta.high_water_page as usize * PAGE_SIZE);
    let mut uses = vec![0u32; meta.high_water_page as usize];
    uses[0] += 1;
    uses[1] += 1;
    let mark = |uses: &mut Vec<u32>, id: u64| -> PageView<'_> {
        let page = PageView::at(file, id, PAGE_SIZE).unwrap();
        let overflow = crate::page::u32_at(&file[id as usize * PAGE_SIZE..], 12).unwrap();
        for i in 0..=overflow as u64 {
            uses[(id + i) as usize] += 1;
        }
        page
    };
    let freelist = mark(&mut uses, meta.freelist_page);
    assert_eq!(freelist.flags(), crate::page::FREELIST_PAGE);
    assert_eq!(freelist.count(), 0, "no free pages");
    let mut stack = vec![meta.root_page];
    let mut bucket_roots = Vec::new();
    while let Some(id) = stack.pop() {
        let page = mark(&mut uses, id);
        match page.flags() {
            page::BRANCH_PAGE => {
                assert!(page.count() > 0, "branch page {id} is empty");
                for i in 0..page.count() {
                    stack.push(page.branch_element(i).unwrap().1);
                }
            }
            page::LEAF_PAGE => {
                for i in 0..page.count() {
                    let (is_bucket, _, value) = page.leaf_element(i).unwrap();
                    if is_bucket {
                        let root = u64::from_le_bytes(value[..8].try_into().unwrap());
                        assert_ne!(root, 0, "buckets are never inlined");
                        bucket_roots.push(root);
                    }
                }
            }
            other => panic!("page {id} has type {other:#x}"),
        }
        if stack.is_empty() {
            stack.append(&mut bucket_roots);
        }
    }
    for (id, n) in uses.iter().enumerate() {
        assert_eq!(*n, 1, "page {id} is used {n} times");
    }
}

#[test]
fn empty_database_and_empty_bucket() {
    let file = write_db(&[]).unwrap();
    assert_every_page_used_once(&file);
    assert!(read_back(file).is_empty());

    let file = write_db(&[bucket("empty", vec![])]).unwrap();
    assert_every_page_used_once(&file);
    let back = read_back(file);
    assert_eq!(back.len(), 1);
    assert!(back[&b"empty".to_vec()].is_empty());
}

#[test]
fn many_keys_make_multi_level_trees() {
    let mut rng = Lcg(7);
    // 60k keys of ~40 bytes: ~600 leaves, several branch pages, so three levels.
    let big: Vec<_> = (0..60_000u64)
        .map(|i| {
            let v = vec![(rng.next() & 0xff) as u8; (rng.next() % 30) as usize];
            (format!("key/{i:010}").into_bytes(), v)
        })
        .collect();
    let small = vec![(b"a".to_vec(), b"1".to_vec())];
    let buckets = vec![bucket("big", big.clone()), bucket("small", small.clone())];
    let file = write_db(&buckets).unwrap();
    assert_every_page_used_once(&file);

    let db = Db::from_bytes(file.clone()).unwrap();
    let root = db.bucket(b"big").unwrap().unwrap();
    let BucketRoot::Page(root_page) = root.root else {
        panic!("inline")
    };
    let top = db.page(root_page).unwrap();
    assert_eq!(top.flags(), page::BRANCH_PAGE);
    let (_, child) = top.branch_element(0).unwrap();
    assert_eq!(
        db.page(child).unwrap().flags(),
        page::BRANCH_PAGE,
        "60k keys need two branch levels"
    );

    let back = read_back(file);
    assert_eq!(back[&b"big".to_vec()], big);
    assert_eq!(back[&b"small".to_vec()], small);
}

#[test]
fn values_from_empty_to_beyond_a_page_use_overflow_pages() {
    let sizes = [
        0usize, 1, 100, 4000, 4064, 4065, 4096, 5000, 8192, 20_000, 102_400,
    ];
    let entries: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let value: Vec<u8> = (0..n).map(|j| (j * 31 + i) as u8).collect();
            (format!("v{i:02}").into_bytes(), value)
        })
        .collect();
    // A key near bbolt's limit makes branch pages overflow too.
    let long_keys: Vec<_> = (0..5u8)
        .map(|i| (vec![b'k' + i; MAX_KEY_SIZE - 1], vec![i; 3000]))
        .collect();
    let file = write_db(&[
        bucket("long", long_keys.clone()),
        bucket("sizes", entries.clone()),
    ])
    .unwrap();
    assert_every_page_used_once(&file);
    let back = read_back(file);
    assert_eq!(back[&b"sizes".to_vec()], entries);
    assert_eq!(back[&b"long".to_vec()], long_keys);
}

#[test]
fn random_trees_round_trip() {
    let mut rng = Lcg(42);
    for round in 0..20 {
        let n_buckets = 1 + rng.next() % 6;
        let mut buckets = Vec::new();
        for b in 0..n_buckets {
            let mut map = BTreeMap::new();
            for _ in 0..rng.next() % 3000 {
                let klen = 1 + (rng.next() % 64) as usize;
                let key: Vec<u8> = (0..klen).map(|_| rng.next() as u8).collect();
                let vlen = match rng.next() % 50 {
                    0 => (rng.next() % 20_000) as usize,
                    _ => (rng.next() % 200) as usize,
                };
                map.insert(key, vec![rng.next() as u8; vlen]);
            }
            buckets.push(bucket(&format!("b{b}"), map.into_iter().collect()));
        }
        let file = write_db(&buckets).unwrap();
        assert_every_page_used_once(&file);
        let back = read_back(file);
        assert_eq!(back.len(), buckets.len(), "round {round}");
        for b in &buckets {
            assert_eq!(back[&b.name], b.entries, "round {round}");
        }
    }
}

#[test]
fn unordered_or_oversized_input_is_refused() {
    let e = |k: &str| (k.as_bytes().to_vec(), vec![]);
    assert!(matches!(
        write_db(&[bucket("b", vec![]), bucket("a", vec![])]),
        Err(WriteError::BucketOrder { .. })
    ));
    assert!(matches!(
        write_db(&[bucket("a", vec![]), bucket("a", vec![])]),
        Err(WriteError::BucketOrder { .. })
    ));
    assert!(matches!(
        write_db(&[bucket("", vec![])]),
        Err(WriteError::BucketOrder { .. })
    ));
    assert!(matches!(
        write_db(&[bucket("a", vec![e("y"), e("x")])]),
        Err(WriteError::KeyOrder { .. })
    ));
    assert!(matches!(
        write_db(&[bucket("a", vec![e("")])]),
        Err(WriteError::KeyOrder { .. })
    ));
    assert!(matches!(
        write_db(&[bucket("a", vec![(vec![1; MAX_KEY_SIZE + 1], vec![])])]),
        Err(WriteError::KeyTooLarge { .. })
    ));
}
