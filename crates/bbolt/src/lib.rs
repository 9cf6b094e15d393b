//! A reader and a writer of bbolt database files.
//!
//! etcd keeps its whole state in one bbolt file (`member/snap/db`), and `etcdctl snapshot
//! save` writes a copy of that file followed by its SHA-256. To let an etcd user move to
//! raftkv without losing history, `raftkv snapshot restore` reads such a file; this crate
//! is the part that understands bbolt's on-disk B+tree. The reader never maps the file and
//! treats every byte as untrusted: a truncated or corrupt file is a [`BoltError`] naming
//! what is wrong, never a panic or an endless walk.
//!
//! The other way, raftkv's own backups are bbolt files in etcd's layout so that etcd's
//! tools read them: [`write_db`] (module `write`) lays out a whole database at once.
//!
//! The format, as bbolt (version 2) lays it out in native (little-endian) byte order:
//!
//! * The file is a sequence of pages of `page_size` bytes. Every page starts with a 16-byte
//!   header: page id (u64), flags (u16: branch 0x01, leaf 0x02, meta 0x04, freelist 0x10),
//!   element count (u16) and the number of overflow pages that follow it (u32).
//! * Pages 0 and 1 are the two meta pages; the valid one with the higher transaction id is
//!   current. A meta holds the magic `0xED0CDAED`, the version, the page size, the root
//!   bucket (its root page and sequence), the freelist page, the high-water page id, the
//!   transaction id and an FNV-1a 64 checksum of the fields before it.
//! * A bucket is a B+tree: branch pages hold (key, child page) elements, leaf pages hold
//!   (flags, key, value) elements; a leaf element with flag 0x01 is a nested bucket whose
//!   value is a 16-byte bucket header (root page, sequence), followed — when the root page
//!   is 0 — by the bucket's single leaf page inlined in the value.

mod error;
mod meta;
mod page;
mod write;

use std::collections::BTreeSet;

pub use error::BoltError;
pub use meta::Meta;
pub use write::{write_db, BucketContents, WriteError, MAX_KEY_SIZE, PAGE_SIZE};

use page::{PageView, BRANCH_PAGE, LEAF_PAGE};

/// Deepest B+tree walked. bbolt's trees are a handful of levels deep; anything deeper
/// is a corrupt file pointing pages at each other.
const MAX_DEPTH: usize = 64;

/// A bbolt database held in memory.
#[derive(Debug)]
pub struct Db {
    data: Vec<u8>,
    meta: Meta,
}

/// One bucket of a [`Db`]: a sorted map of byte keys to values or nested buckets.
#[derive(Debug, Clone, Copy)]
pub struct Bucket<'a> {
    db: &'a Db,
    root: BucketRoot<'a>,
}

#[derive(Debug, Clone, Copy)]
enum BucketRoot<'a> {
    /// The tree starts at this page.
    Page(u64),
    /// A small bucket stored inside its parent's leaf: the bytes are one leaf page.
    Inline(&'a [u8]),
}

/// What a key of a bucket holds.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Data(&'a [u8]),
    Bucket(Bucket<'a>),
}

impl Db {
    /// Reads a database from its bytes, choosing the current meta page as bbolt does.
    pub fn from_bytes(data: Vec<u8>) -> Result<Db, BoltError> {
        let meta = meta::current(&data)?;
        if (meta.high_water_page as u128) * (meta.page_size as u128) > data.len() as u128 {
            return Err(BoltError::Truncated {
                needed: (meta.high_water_page as u128 * meta.page_size as u128) as u64,
                len: data.len() as u64,
            });
        }
        Ok(Db { data, meta })
    }

    /// The meta page in effect.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The root bucket, whose keys are the top-level buckets.
    pub fn root(&self) -> Bucket<'_> {
        Bucket {
            db: self,
            root: BucketRoot::Page(self.meta.root_page),
        }
    }

    /// The top-level bucket `name`, if it exists.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'_>>, BoltError> {
        self.root().bucket(name)
    }

    fn page(&self, id: u64) -> Result<PageView<'_>, BoltError> {
        if id < 2 || id >= self.meta.high_water_page {
            return Err(BoltError::BadPageId {
                id,
                high_water: self.meta.high_water_page,
            });
        }
        PageView::at(&self.data, id, self.meta.page_size as usize)
    }
}

impl<'a> Bucket<'a> {
    /// Every key of the bucket in order, with what it holds.
    pub fn entries(&self) -> Result<Vec<(&'a [u8], Value<'a>)>, BoltError> {
        let mut out = Vec::new();
        let mut visited = BTreeSet::new();
        match self.root {
            BucketRoot::Page(id) => self.walk(id, 0, &mut visited, &mut out)?,
            BucketRoot::Inline(bytes) => {
                let page = PageView::inline(bytes)?;
                self.collect_leaf(&page, &mut out)?;
            }
        }
        for pair in out.windows(2) {
            if pair[0].0 >= pair[1].0 {
                return Err(BoltError::KeysOutOfOrder {
                    key: pair[1].0.to_vec(),
                });
            }
        }
        Ok(out)
    }

    /// The nested bucket `name`, if the key exists and holds a bucket.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'a>>, BoltError> {
        Ok(self
            .entries()?
            .into_iter()
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| match v {
                Value::Bucket(b) => Some(b),
                Value::Data(_) => None,
            }))
    }

    /// The value stored at `key`, if the key exists and holds data.
    pub fn get(&self, key: &[u8]) -> Result<Option<&'a [u8]>, BoltError> {
        Ok(self
            .entries()?
            .into_iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| match v {
                Value::Data(d) => Some(d),
                Value::Bucket(_) => None,
            }))
    }

    fn walk(
        &self,
        id: u64,
        depth: usize,
        visited: &mut BTreeSet<u64>,
        out: &mut Vec<(&'a [u8], Value<'a>)>,
    ) -> Result<(), BoltError> {
        if depth > MAX_DEPTH {
            return Err(BoltError::TooDeep { page: id });
        }
        if !visited.insert(id) {
            return Err(BoltError::PageReused { id });
        }
        let page = self.db.page(id)?;
        match page.flags() {
            BRANCH_PAGE => {
                for i in 0..page.count() {
                    let (_, child) = page.branch_element(i)?;
                    self.walk(child, depth + 1, visited, out)?;
                }
                Ok(())
            }
            LEAF_PAGE => self.collect_leaf(&page, out),
            flags => Err(BoltError::UnexpectedPageType { id, flags }),
        }
    }

    fn collect_leaf(
        &self,
        page: &PageView<'a>,
        out: &mut Vec<(&'a [u8], Value<'a>)>,
    ) -> Result<(), BoltError> {
        if page.flags() != LEAF_PAGE {
            return Err(BoltError::UnexpectedPageType {
                id: page.id(),
                flags: page.flags(),
            });
        }
        for i in 0..page.count() {
            let (is_bucket, key, value) = page.leaf_element(i)?;
            let value = if is_bucket {
                Value::Bucket(self.nested(key, value)?)
            } else {
                Value::Data(value)
            };
            out.push((key, value));
        }
        Ok(())
    }

    fn nested(&self, key: &[u8], value: &'a [u8]) -> Result<Bucket<'a>, BoltError> {
        let header =
            value
                .get(..page::BUCKET_HEADER_SIZE)
                .ok_or_else(|| BoltError::BadBucketHeader {
                    key: key.to_vec(),
                    len: value.len(),
                })?;
        let root = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        let root = if root == 0 {
            BucketRoot::Inline(&value[page::BUCKET_HEADER_SIZE..])
        } else {
            BucketRoot::Page(root)
        };
        Ok(Bucket { db: self.db, root })
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod write_tests;
