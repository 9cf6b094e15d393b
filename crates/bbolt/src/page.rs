//! One page of a bbolt file, read with bounds checks on every offset.

use crate::error::BoltError;

pub(crate) const PAGE_HEADER_SIZE: usize = 16;
/// A branch element: position of its key (u32, from the element), key size (u32), child (u64).
pub(crate) const BRANCH_ELEMENT_SIZE: usize = 16;
/// A leaf element: flags (u32), position of its key (u32, from the element), key size
/// (u32), value size (u32); the value follows the key.
pub(crate) const LEAF_ELEMENT_SIZE: usize = 16;
/// A nested bucket's value starts with its root page (u64) and sequence (u64).
pub(crate) const BUCKET_HEADER_SIZE: usize = 16;

pub(crate) const BRANCH_PAGE: u16 = 0x01;
pub(crate) const LEAF_PAGE: u16 = 0x02;
pub(crate) const META_PAGE: u16 = 0x04;
pub(crate) const FREELIST_PAGE: u16 = 0x10;
/// A leaf element that is a nested bucket.
pub(crate) const BUCKET_LEAF_FLAG: u32 = 0x01;

/// The bytes of one page (with its overflow pages), header included.
pub(crate) struct PageView<'a> {
    bytes: &'a [u8],
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl<'a> PageView<'a> {
    /// Page `id` of `file`, extended over its overflow pages. The id written in the page's
    /// header must be `id`: a pointer to the wrong page is corruption.
    pub(crate) fn at(file: &'a [u8], id: u64, page_size: usize) -> Result<Self, BoltError> {
        let start = (id as usize)
            .checked_mul(page_size)
            .ok_or(BoltError::BadPageId { id, high_water: 0 })?;
        let header = file
            .get(start..start + PAGE_HEADER_SIZE)
            .ok_or(BoltError::Truncated {
                needed: (start + PAGE_HEADER_SIZE) as u64,
                len: file.len() as u64,
            })?;
        let written_id = u64_at(header, 0).expect("16-byte header");
        if written_id != id {
            return Err(BoltError::PageIdMismatch {
                id,
                found: written_id,
            });
        }
        let overflow = u32_at(header, 12).expect("16-byte header") as usize;
        let end = overflow
            .checked_add(1)
            .and_then(|pages| pages.checked_mul(page_size))
            .and_then(|len| len.checked_add(start))
            .filter(|end| *end <= file.len())
            .ok_or(BoltError::Truncated {
                needed: (start as u64).saturating_add((overflow as u64 + 1) * page_size as u64),
                len: file.len() as u64,
            })?;
        Ok(PageView {
            bytes: &file[start..end],
        })
    }

    /// A page stored inline in a nested bucket's value.
    pub(crate) fn inline(bytes: &'a [u8]) -> Result<Self, BoltError> {
        if bytes.len() < PAGE_HEADER_SIZE {
            return Err(BoltError::BadInlinePage { len: bytes.len() });
        }
        Ok(PageView { bytes })
    }

    pub(crate) fn id(&self) -> u64 {
        u64_at(self.bytes, 0).expect("checked length")
    }

    pub(crate) fn flags(&self) -> u16 {
        u16_at(self.bytes, 8).expect("checked length")
    }

    pub(crate) fn count(&self) -> usize {
        u16_at(self.bytes, 10).expect("checked length") as usize
    }

    fn element(&self, index: usize, size: usize) -> Result<(usize, &'a [u8]), BoltError> {
        let at = PAGE_HEADER_SIZE + index * size;
        let bytes = self.bytes.get(at..at + size).ok_or(self.bad(index))?;
        Ok((at, bytes))
    }

    fn slice(&self, index: usize, from: usize, len: usize) -> Result<&'a [u8], BoltError> {
        from.checked_add(len)
            .and_then(|end| self.bytes.get(from..end))
            .ok_or(self.bad(index))
    }

    fn bad(&self, index: usize) -> BoltError {
        BoltError::BadElement {
            page: self.id(),
            index,
        }
    }

    /// Element `index` of a branch page: its key and child page.
    pub(crate) fn branch_element(&self, index: usize) -> Result<(&'a [u8], u64), BoltError> {
        let (at, e) = self.element(index, BRANCH_ELEMENT_SIZE)?;
        let pos = u32_at(e, 0).expect("element") as usize;
        let ksize = u32_at(e, 4).expect("element") as usize;
        let child = u64_at(e, 8).expect("element");
        let key = self.slice(index, at + pos, ksize)?;
        Ok((key, child))
    }

    /// Element `index` of a leaf page: whether it is a nested bucket, its key, its value.
    pub(crate) fn leaf_element(
        &self,
        index: usize,
    ) -> Result<(bool, &'a [u8], &'a [u8]), BoltError> {
        let (at, e) = self.element(index, LEAF_ELEMENT_SIZE)?;
        let flags = u32_at(e, 0).expect("element");
        let pos = u32_at(e, 4).expect("element") as usize;
        let ksize = u32_at(e, 8).expect("element") as usize;
        let vsize = u32_at(e, 12).expect("element") as usize;
        let key = self.slice(index, at + pos, ksize)?;
        let value = self.slice(index, at + pos + ksize, vsize)?;
        Ok((flags & BUCKET_LEAF_FLAG != 0, key, value))
    }
}
