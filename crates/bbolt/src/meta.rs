//! The two meta pages and the choice between them.

use crate::error::BoltError;
use crate::page::{u32_at, u64_at, META_PAGE, PAGE_HEADER_SIZE};

pub(crate) const MAGIC: u32 = 0xED0C_DAED;
pub(crate) const VERSION: u32 = 2;
/// The checksum covers the meta's fields before it: 56 bytes.
pub(crate) const CHECKSUMMED_LEN: usize = 56;
const META_LEN: usize = CHECKSUMMED_LEN + 8;
/// Page sizes tried for the second meta when the first is unreadable (bbolt would use the
/// OS page size; a file written elsewhere may use any power of two).
const PAGE_SIZES: [usize; 5] = [4096, 8192, 16384, 32768, 65536];

/// A meta page's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    /// The root bucket's root page.
    pub root_page: u64,
    pub freelist_page: u64,
    /// One past the highest page in use: the file holds at least this many pages.
    pub high_water_page: u64,
    pub txid: u64,
}

/// The meta in effect: of the valid metas, the one with the higher transaction id (a
/// crash during a commit leaves the older one intact).
pub(crate) fn current(file: &[u8]) -> Result<Meta, BoltError> {
    let first = read(file, 0, None);
    let page_size = first.as_ref().ok().map(|m| m.page_size as usize);
    let second = match page_size {
        Some(size) => read(file, size, Some(size)),
        None => PAGE_SIZES
            .iter()
            .map(|&size| read(file, size, Some(size)))
            .find(|m| m.is_ok())
            .unwrap_or(Err(BoltError::NoValidMeta {
                first: "see above".into(),
                second: "no second meta page at any usual page size".into(),
            })),
    };
    match (first, second) {
        (Ok(a), Ok(b)) => Ok(if b.txid > a.txid { b } else { a }),
        (Ok(a), Err(_)) => Ok(a),
        (Err(_), Ok(b)) => Ok(b),
        (Err(a), Err(b)) => Err(BoltError::NoValidMeta {
            first: a.to_string(),
            second: b.to_string(),
        }),
    }
}

/// The meta page starting at byte `offset`; `expected_size` is the page size that put it
/// there (the second meta must agree with its own position).
fn read(file: &[u8], offset: usize, expected_size: Option<usize>) -> Result<Meta, BoltError> {
    let page = file
        .get(offset..offset + PAGE_HEADER_SIZE + META_LEN)
        .ok_or(BoltError::Truncated {
            needed: (offset + PAGE_HEADER_SIZE + META_LEN) as u64,
            len: file.len() as u64,
        })?;
    let flags = u16::from_le_bytes([page[8], page[9]]);
    if flags & META_PAGE == 0 {
        return Err(BoltError::NotAMetaPage { offset, flags });
    }
    let m = &page[PAGE_HEADER_SIZE..];
    let field = |at| u64_at(m, at).expect("checked length");
    let magic = u32_at(m, 0).expect("checked length");
    if magic != MAGIC {
        return Err(BoltError::BadMagic { offset, magic });
    }
    let version = u32_at(m, 4).expect("checked length");
    if version != VERSION {
        return Err(BoltError::UnsupportedVersion { version });
    }
    let checksum = field(CHECKSUMMED_LEN);
    let computed = fnv1a_64(&m[..CHECKSUMMED_LEN]);
    if checksum != computed {
        return Err(BoltError::MetaChecksum {
            offset,
            stored: checksum,
            computed,
        });
    }
    let page_size = u32_at(m, 8).expect("checked length");
    if !(1024..=1 << 20).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(BoltError::BadPageSize { page_size });
    }
    if expected_size.is_some_and(|s| s != page_size as usize) {
        return Err(BoltError::BadPageSize { page_size });
    }
    Ok(Meta {
        page_size,
        root_page: field(16),
        freelist_page: field(32),
        high_water_page: field(40),
        txid: field(48),
    })
}

/// FNV-1a, 64 bits: bbolt's meta checksum.
pub(crate) fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}
