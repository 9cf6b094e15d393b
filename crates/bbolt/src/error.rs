//! Everything that can be wrong with a bbolt file, named precisely enough to act on.

/// Why a file could not be read as a bbolt database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoltError {
    #[error("file is truncated: {needed} bytes needed, {len} present")]
    Truncated { needed: u64, len: u64 },
    #[error("not a bbolt database: no valid meta page (first: {first}; second: {second})")]
    NoValidMeta { first: String, second: String },
    #[error("page at byte {offset} is not a meta page (flags {flags:#x})")]
    NotAMetaPage { offset: usize, flags: u16 },
    #[error("bad magic {magic:#x} in the meta page at byte {offset}")]
    BadMagic { offset: usize, magic: u32 },
    #[error("unsupported bbolt version {version} (only version 2 exists)")]
    UnsupportedVersion { version: u32 },
    #[error("meta page at byte {offset} fails its checksum (stored {stored:#x}, computed {computed:#x})")]
    MetaChecksum {
        offset: usize,
        stored: u64,
        computed: u64,
    },
    #[error("implausible page size {page_size}")]
    BadPageSize { page_size: u32 },
    #[error("page id {id} is outside the database (high-water mark {high_water})")]
    BadPageId { id: u64, high_water: u64 },
    #[error("page {id} says it is page {found}")]
    PageIdMismatch { id: u64, found: u64 },
    #[error("page {id} has type {flags:#x} where a branch or leaf page belongs")]
    UnexpectedPageType { id: u64, flags: u16 },
    #[error("element {index} of page {page} points outside the page")]
    BadElement { page: u64, index: usize },
    #[error("nested bucket {key:?} has a {len}-byte header (16 needed)")]
    BadBucketHeader { key: Vec<u8>, len: usize },
    #[error("an inline bucket page of {len} bytes is too short")]
    BadInlinePage { len: usize },
    #[error("page {id} is reached twice: the tree has a cycle")]
    PageReused { id: u64 },
    #[error("the tree under page {page} is deeper than any real bbolt tree")]
    TooDeep { page: u64 },
    #[error("keys out of order before {key:?}")]
    KeysOutOfOrder { key: Vec<u8> },
}
