//! Writing a complete bbolt file in one go, so that raftkv's backups are databases that
//! etcd's tools (`etcdctl snapshot status|restore`, which open them with bbolt and run
//! `tx.Check()`) accept.
//!
//! The file is written as bbolt would leave it after one transaction that created every
//! bucket, but laid out bottom-up in a single pass:
//!
//! * page 0 and 1: the two meta pages (identical but for the transaction id, so either is
//!   a valid current meta), each with its FNV-1a checksum;
//! * then, bucket by bucket, the leaf pages holding its keys in order (as many elements as
//!   fit a page; an element bigger than a page gets a page of its own, extended with
//!   overflow pages), then branch pages over them, level by level, until one root page;
//! * the root bucket's own tree, whose leaf elements name each bucket and hold its
//!   16-byte header (root page, sequence 0): every bucket has its own root page, none is
//!   inlined, because inline buckets only save space and the tree code stays one path;
//! * an empty freelist page, the last page.
//!
//! Every page is reachable from the metas and none is free, which is what `tx.Check()`
//! verifies.

use crate::meta::{fnv1a_64, CHECKSUMMED_LEN, MAGIC, VERSION};
use crate::page::{
    BRANCH_ELEMENT_SIZE, BRANCH_PAGE, BUCKET_LEAF_FLAG, FREELIST_PAGE, LEAF_ELEMENT_SIZE,
    LEAF_PAGE, META_PAGE, PAGE_HEADER_SIZE,
};

/// The page size written: bbolt's default on the platforms etcd runs on.
pub const PAGE_SIZE: usize = 4096;
/// bbolt refuses longer keys on `Put` (`bolt.MaxKeySize`).
pub const MAX_KEY_SIZE: usize = 32768;
/// bbolt refuses longer values on `Put` (`bolt.MaxValueSize`).
pub const MAX_VALUE_SIZE: usize = (1 << 31) - 2;

/// One top-level bucket to write: its name and its keys with their values, in strictly
/// increasing key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketContents {
    pub name: Vec<u8>,
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Why a set of buckets cannot be written as a bbolt file bbolt itself would accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("bucket names must be non-empty and strictly increasing; {name:?} is not")]
    BucketOrder { name: Vec<u8> },
    #[error("bucket {bucket:?}: keys must be non-empty and strictly increasing; {key:?} is not")]
    KeyOrder { bucket: Vec<u8>, key: Vec<u8> },
    #[error("bucket {bucket:?}: key {key:?} is longer than bbolt allows")]
    KeyTooLarge { bucket: Vec<u8>, key: Vec<u8> },
    #[error("bucket {bucket:?}: the value of key {key:?} is longer than bbolt allows")]
    ValueTooLarge { bucket: Vec<u8>, key: Vec<u8> },
}

/// The bytes of a bbolt database holding `buckets` (names in strictly increasing order).
pub fn write_db(buckets: &[BucketContents]) -> Result<Vec<u8>, WriteError> {
    check(buckets)?;
    let mut file = Pages::new();
    let mut roots = Vec::with_capacity(buckets.len());
    for bucket in buckets {
        let elements = bucket.entries.iter().map(|(k, v)| Element {
            flags: 0,
            key: k,
            value: v,
        });
        roots.push(file.tree(elements));
    }
    let headers: Vec<[u8; 16]> = roots.iter().map(|&root| bucket_header(root)).collect();
    let root = file.tree(buckets.iter().zip(&headers).map(|(b, h)| Element {
        flags: BUCKET_LEAF_FLAG,
        key: &b.name,
        value: h,
    }));
    let freelist = file.push(FREELIST_PAGE, 0, &[]);
    Ok(file.finish(root, freelist))
}

fn check(buckets: &[BucketContents]) -> Result<(), WriteError> {
    let mut previous: Option<&[u8]> = None;
    for bucket in buckets {
        if bucket.name.is_empty() || previous.is_some_and(|p| p >= &bucket.name[..]) {
            return Err(WriteError::BucketOrder {
                name: bucket.name.clone(),
            });
        }
        previous = Some(&bucket.name);
        let mut previous_key: Option<&[u8]> = None;
        for (key, value) in &bucket.entries {
            let err = |make: fn(Vec<u8>, Vec<u8>) -> WriteError| {
                Err(make(bucket.name.clone(), key.clone()))
            };
            if key.is_empty() || previous_key.is_some_and(|p| p >= &key[..]) {
                return err(|bucket, key| WriteError::KeyOrder { bucket, key });
            }
            if key.len() > MAX_KEY_SIZE {
                return err(|bucket, key| WriteError::KeyTooLarge { bucket, key });
            }
            if value.len() > MAX_VALUE_SIZE {
                return err(|bucket, key| WriteError::ValueTooLarge { bucket, key });
            }
            previous_key = Some(key);
        }
    }
    Ok(())
}

/// A nested bucket's value in its parent: root page and sequence, no inline page.
fn bucket_header(root: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(&root.to_le_bytes());
    h
}

/// A leaf element to be written.
struct Element<'a> {
    flags: u32,
    key: &'a [u8],
    value: &'a [u8],
}

/// The file being built: pages from id 2 on, each followed by its overflow pages.
struct Pages {
    /// Every page after the two metas, back to back, a multiple of the page size.
    body: Vec<u8>,
}

impl Pages {
    fn new() -> Self {
        Pages { body: Vec::new() }
    }

    fn next_id(&self) -> u64 {
        2 + (self.body.len() / PAGE_SIZE) as u64
    }

    /// Appends a page of type `flags` with `count` elements and `content` after its
    /// header, spilling into overflow pages as needed; returns its id.
    fn push(&mut self, flags: u16, count: usize, content: &[u8]) -> u64 {
        let id = self.next_id();
        let len = PAGE_HEADER_SIZE + content.len();
        let pages = len.div_ceil(PAGE_SIZE);
        let count = u16::try_from(count).expect("elements are packed far below 65536 a page");
        let overflow = u32::try_from(pages - 1).expect("a value below 2 GiB");
        self.body.extend_from_slice(&id.to_le_bytes());
        self.body.extend_from_slice(&flags.to_le_bytes());
        self.body.extend_from_slice(&count.to_le_bytes());
        self.body.extend_from_slice(&overflow.to_le_bytes());
        self.body.extend_from_slice(content);
        self.body.resize((id as usize - 2 + pages) * PAGE_SIZE, 0);
        id
    }

    /// Writes a B+tree holding `elements` (in key order) and returns its root page.
    fn tree<'a>(&mut self, elements: impl Iterator<Item = Element<'a>>) -> u64 {
        // The first level: leaves. `level` holds each page's first key and id.
        let mut level: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut batch: Vec<Element<'a>> = Vec::new();
        let mut used = PAGE_HEADER_SIZE;
        for e in elements {
            let size = LEAF_ELEMENT_SIZE + e.key.len() + e.value.len();
            if !batch.is_empty() && used + size > PAGE_SIZE {
                level.push(self.leaf(&batch));
                batch.clear();
                used = PAGE_HEADER_SIZE;
            }
            used += size;
            batch.push(e);
        }
        if !batch.is_empty() || level.is_empty() {
            level.push(self.leaf(&batch));
        }
        // Branch levels until a single page is left.
        while level.len() > 1 {
            let mut above = Vec::new();
            let mut start = 0;
            let mut used = PAGE_HEADER_SIZE;
            for (i, (key, _)) in level.iter().enumerate() {
                let size = BRANCH_ELEMENT_SIZE + key.len();
                // At least two children a branch page, so that every level shrinks.
                if i - start >= 2 && used + size > PAGE_SIZE {
                    above.push(self.branch(&level[start..i]));
                    start = i;
                    used = PAGE_HEADER_SIZE;
                }
                used += size;
            }
            above.push(self.branch(&level[start..]));
            level = above;
        }
        level[0].1
    }

    /// Writes one leaf page; returns its first key and id.
    fn leaf(&mut self, elements: &[Element<'_>]) -> (Vec<u8>, u64) {
        let mut content = Vec::new();
        let data_start = LEAF_ELEMENT_SIZE * elements.len();
        let mut data_len = 0;
        for (i, e) in elements.iter().enumerate() {
            // The key's position counts from the element itself.
            let pos = data_start + data_len - LEAF_ELEMENT_SIZE * i;
            content.extend_from_slice(&e.flags.to_le_bytes());
            content.extend_from_slice(&(pos as u32).to_le_bytes());
            content.extend_from_slice(&(e.key.len() as u32).to_le_bytes());
            content.extend_from_slice(&(e.value.len() as u32).to_le_bytes());
            data_len += e.key.len() + e.value.len();
        }
        for e in elements {
            content.extend_from_slice(e.key);
            content.extend_from_slice(e.value);
        }
        let first = elements.first().map(|e| e.key.to_vec()).unwrap_or_default();
        (first, self.push(LEAF_PAGE, elements.len(), &content))
    }

    /// Writes one branch page over `children`; returns its first key and id.
    fn branch(&mut self, children: &[(Vec<u8>, u64)]) -> (Vec<u8>, u64) {
        let mut content = Vec::new();
        let data_start = BRANCH_ELEMENT_SIZE * children.len();
        let mut data_len = 0;
        for (i, (key, child)) in children.iter().enumerate() {
            let pos = data_start + data_len - BRANCH_ELEMENT_SIZE * i;
            content.extend_from_slice(&(pos as u32).to_le_bytes());
            content.extend_from_slice(&(key.len() as u32).to_le_bytes());
            content.extend_from_slice(&child.to_le_bytes());
            data_len += key.len();
        }
        for (key, _) in children {
            content.extend_from_slice(key);
        }
        let first = children[0].0.clone();
        (first, self.push(BRANCH_PAGE, children.len(), &content))
    }

    /// The whole file: both metas pointing at `root` and `freelist`, then the pages.
    fn finish(self, root: u64, freelist: u64) -> Vec<u8> {
        let high_water = self.next_id();
        let mut file = Vec::with_capacity(2 * PAGE_SIZE + self.body.len());
        for txid in [0u64, 1] {
            let mut m = Vec::with_capacity(CHECKSUMMED_LEN + 8);
            m.extend_from_slice(&MAGIC.to_le_bytes());
            m.extend_from_slice(&VERSION.to_le_bytes());
            m.extend_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
            m.extend_from_slice(&0u32.to_le_bytes()); // flags
            m.extend_from_slice(&root.to_le_bytes());
            m.extend_from_slice(&0u64.to_le_bytes()); // root bucket's sequence
            m.extend_from_slice(&freelist.to_le_bytes());
            m.extend_from_slice(&high_water.to_le_bytes());
            m.extend_from_slice(&txid.to_le_bytes());
            debug_assert_eq!(m.len(), CHECKSUMMED_LEN);
            let sum = fnv1a_64(&m);
            m.extend_from_slice(&sum.to_le_bytes());
            let start = file.len();
            file.extend_from_slice(&txid.to_le_bytes()); // page id = txid here: 0, 1
            file.extend_from_slice(&META_PAGE.to_le_bytes());
            file.extend_from_slice(&0u16.to_le_bytes());
            file.extend_from_slice(&0u32.to_le_bytes());
            file.extend_from_slice(&m);
            file.resize(start + PAGE_SIZE, 0);
        }
        file.extend_from_slice(&self.body);
        file
    }
}
