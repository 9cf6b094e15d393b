//! WAL bytes as tests see them: the frame layout of docs/storage.md, "WAL format", read
//! and rewritten without the storage crate's own codec. Each test binary uses a part.
#![allow(dead_code)]

/// The type byte of a segment header record.
pub const SEGMENT_HEADER: u8 = 1;
/// The type byte of a batch end (WAL format 2), which closes every synced batch.
pub const BATCH_END: u8 = 5;
/// A batch end's frame: 8 bytes of frame header, the type, an 8-byte offset.
pub const BATCH_END_LEN: u64 = 17;

/// The frames of a segment's file ([len u32][crc u32][body], body = type ‖ payload) up to
/// where its records end (zeros written ahead of them, or the end of the file), as
/// (offset, frame bytes).
pub fn frames(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 || at + 8 + len > bytes.len() {
            break;
        }
        out.push((at, bytes[at..at + 8 + len].to_vec()));
        at += 8 + len;
    }
    out
}

/// A frame as the WAL writes it around `body`.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    f.extend_from_slice(body);
    f
}

/// The segment as a raftkv before WAL format 2 wrote it: the same records without batch
/// ends, the header saying format 1, nothing after the last record.
pub fn as_format_1(bytes: &[u8]) -> Vec<u8> {
    let mut v1 = Vec::new();
    for (_, f) in frames(bytes) {
        match f[8] {
            BATCH_END => continue,
            SEGMENT_HEADER => {
                // The header's body: the type, "RKVW", the format, the sequence.
                let mut body = f[8..].to_vec();
                body[5..9].copy_from_slice(&1u32.to_le_bytes());
                v1.extend_from_slice(&frame(&body));
            }
            _ => v1.extend_from_slice(&f),
        }
    }
    v1
}
