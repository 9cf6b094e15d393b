//! The binary encoding of WAL records (documented in docs/storage.md, "WAL format").
//!
//! Every record is one frame:
//!
//! ```text
//! +------------+------------+------+---------------------+
//! | len: u32le | crc: u32le | type | payload             |
//! +------------+------------+------+---------------------+
//!               crc = CRC-32C(type ‖ payload), len = 1 + payload length
//! ```
//!
//! All integers are little-endian. A frame is self-checking, so recovery can tell a
//! complete record from a torn or damaged one without trusting anything around it.

use bytes::Bytes;
use raft::{ConfState, Entry, EntryKind, HardState, SnapshotMeta};

/// Bytes before the body of a frame: length and checksum.
pub(crate) const FRAME_HEADER: usize = 8;
/// Upper bound on a body; anything larger is garbage, not a record. Bounds the damage a
/// flipped length bit can do (we never allocate or skip by an absurd length).
pub(crate) const MAX_BODY: usize = 512 << 20;

/// Magic at the start of every segment's header record.
pub(crate) const SEGMENT_MAGIC: [u8; 4] = *b"RKVW";

pub(crate) const TYPE_SEGMENT_HEADER: u8 = 1;
pub(crate) const TYPE_ENTRY: u8 = 2;
pub(crate) const TYPE_HARD_STATE: u8 = 3;
pub(crate) const TYPE_SNAPSHOT: u8 = 4;
pub(crate) const TYPE_BATCH_END: u8 = 5;

/// A decoded WAL record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// First record of every segment: which segment this is.
    SegmentHeader { format: u32, seq: u64 },
    /// A log entry. An entry at index `i` replaces every entry at `i` and above.
    Entry(Entry),
    /// The hard state as of this point of the log.
    HardState(HardState),
    /// A snapshot at `meta.index` is durable: entries up to it are no longer needed.
    Snapshot(SnapshotMeta),
    /// WAL format 2: the end of a synced batch. `start` is the segment offset where the
    /// records it closes begin: where the previous batch end (or the segment's head) ends.
    /// Written only after everything before `start` was fsynced, so a valid one proves that.
    BatchEnd { start: u64 },
}

/// Appends one frame to `buf`, with `body` writing the type byte and payload.
fn frame(buf: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_HEADER]);
    body(buf);
    let body_len = buf.len() - start - FRAME_HEADER;
    let crc = crc32c::crc32c(&buf[start + FRAME_HEADER..]);
    buf[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

pub(crate) fn encode_segment_header(buf: &mut Vec<u8>, format: u32, seq: u64) {
    frame(buf, |b| {
        b.push(TYPE_SEGMENT_HEADER);
        b.extend_from_slice(&SEGMENT_MAGIC);
        b.extend_from_slice(&format.to_le_bytes());
        b.extend_from_slice(&seq.to_le_bytes());
    })
}

pub(crate) fn encode_entry(buf: &mut Vec<u8>, e: &Entry) {
    frame(buf, |b| {
        b.push(TYPE_ENTRY);
        b.extend_from_slice(&e.term.to_le_bytes());
        b.extend_from_slice(&e.index.to_le_bytes());
        b.push(kind_to_byte(e.kind));
        b.extend_from_slice(&e.data);
    })
}

pub(crate) fn encode_hard_state(buf: &mut Vec<u8>, hs: &HardState) {
    frame(buf, |b| {
        b.push(TYPE_HARD_STATE);
        b.extend_from_slice(&hs.term.to_le_bytes());
        b.extend_from_slice(&hs.vote.unwrap_or(0).to_le_bytes());
        b.extend_from_slice(&hs.commit.to_le_bytes());
    })
}

pub(crate) fn encode_snapshot_marker(buf: &mut Vec<u8>, meta: &SnapshotMeta) {
    frame(buf, |b| {
        b.push(TYPE_SNAPSHOT);
        encode_snapshot_meta(b, meta);
    })
}

pub(crate) fn encode_batch_end(buf: &mut Vec<u8>, start: u64) {
    frame(buf, |b| {
        b.push(TYPE_BATCH_END);
        b.extend_from_slice(&start.to_le_bytes());
    })
}

/// The snapshot metadata encoding, shared by WAL markers and snapshot files.
pub(crate) fn encode_snapshot_meta(b: &mut Vec<u8>, meta: &SnapshotMeta) {
    b.extend_from_slice(&meta.index.to_le_bytes());
    b.extend_from_slice(&meta.term.to_le_bytes());
    for ids in [&meta.conf_state.voters, &meta.conf_state.learners] {
        b.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            b.extend_from_slice(&id.to_le_bytes());
        }
    }
}

fn kind_to_byte(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Normal => 0,
        EntryKind::Noop => 1,
        EntryKind::ConfChange => 2,
    }
}

fn kind_from_byte(b: u8) -> Result<EntryKind, String> {
    match b {
        0 => Ok(EntryKind::Normal),
        1 => Ok(EntryKind::Noop),
        2 => Ok(EntryKind::ConfChange),
        other => Err(format!("unknown entry kind {other}")),
    }
}

/// What is at a position of a segment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A complete frame whose checksum matches; the body is `start..end`, the next frame
    /// begins at `end`.
    Valid { body_start: usize, end: usize },
    /// Exactly the end of the data.
    End,
    /// The frame runs past the end of the data (a write cut short).
    Truncated,
    /// The frame is complete but fails its checks (bad checksum, absurd length, zeros).
    Bad(String),
}

/// Examines the frame that starts at `at` in `data`.
pub(crate) fn read_frame(data: &[u8], at: usize) -> Frame {
    let rest = &data[at.min(data.len())..];
    if rest.is_empty() {
        return Frame::End;
    }
    if rest.len() < FRAME_HEADER {
        return Frame::Truncated;
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    if len == 0 {
        return Frame::Bad("zero-length frame (zeroed or never-written bytes)".into());
    }
    if len > MAX_BODY {
        return Frame::Bad(format!("frame length {len} exceeds the maximum {MAX_BODY}"));
    }
    if rest.len() < FRAME_HEADER + len {
        return Frame::Truncated;
    }
    let body = &rest[FRAME_HEADER..FRAME_HEADER + len];
    let actual = crc32c::crc32c(body);
    if actual != crc {
        return Frame::Bad(format!(
            "checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"
        ));
    }
    Frame::Valid {
        body_start: at + FRAME_HEADER,
        end: at + FRAME_HEADER + len,
    }
}

/// Little-endian cursor over a record body; every read is bounds-checked.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "record body too short ({} bytes, needed {})",
                    self.data.len(),
                    self.pos + n
                )
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn ids(&mut self) -> Result<Vec<u64>, String> {
        let n = self.u32()? as usize;
        if n > (self.data.len() - self.pos) / 8 {
            return Err(format!("member list of {n} ids does not fit in the record"));
        }
        (0..n).map(|_| self.u64()).collect()
    }
    fn finish(&self) -> Result<(), String> {
        if self.pos == self.data.len() {
            Ok(())
        } else {
            Err(format!(
                "{} unexpected trailing bytes in record",
                self.data.len() - self.pos
            ))
        }
    }
}

/// Decodes the body of a valid frame. `segment` is the whole segment as `Bytes`, so entry
/// payloads are zero-copy slices of it.
pub(crate) fn decode_body(
    segment: &Bytes,
    body_start: usize,
    end: usize,
) -> Result<Record, String> {
    let body = &segment[body_start..end];
    let mut c = Cursor { data: body, pos: 0 };
    let record = match c.u8()? {
        TYPE_SEGMENT_HEADER => {
            if c.take(4)? != SEGMENT_MAGIC {
                return Err("segment header has the wrong magic".into());
            }
            Record::SegmentHeader {
                format: c.u32()?,
                seq: c.u64()?,
            }
        }
        TYPE_ENTRY => {
            let term = c.u64()?;
            let index = c.u64()?;
            let kind = kind_from_byte(c.u8()?)?;
            let data = segment.slice(body_start + c.pos..end);
            c.pos = body.len();
            Record::Entry(Entry {
                term,
                index,
                kind,
                data,
            })
        }
        TYPE_HARD_STATE => {
            let term = c.u64()?;
            let vote = c.u64()?;
            let commit = c.u64()?;
            Record::HardState(HardState {
                term,
                vote: (vote != 0).then_some(vote),
                commit,
            })
        }
        TYPE_SNAPSHOT => Record::Snapshot(decode_snapshot_meta_from(&mut c)?),
        TYPE_BATCH_END => Record::BatchEnd { start: c.u64()? },
        other => return Err(format!("unknown record type {other}")),
    };
    c.finish()?;
    Ok(record)
}

fn decode_snapshot_meta_from(c: &mut Cursor<'_>) -> Result<SnapshotMeta, String> {
    let index = c.u64()?;
    let term = c.u64()?;
    let voters = c.ids()?;
    let learners = c.ids()?;
    Ok(SnapshotMeta {
        index,
        term,
        conf_state: ConfState { voters, learners },
    })
}

/// Decodes a whole buffer as one [`SnapshotMeta`] (used by snapshot files).
pub(crate) fn decode_snapshot_meta(data: &[u8]) -> Result<SnapshotMeta, String> {
    let mut c = Cursor { data, pos: 0 };
    let meta = decode_snapshot_meta_from(&mut c)?;
    c.finish()?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(buf: Vec<u8>) -> Vec<Record> {
        let seg = Bytes::from(buf);
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            match read_frame(&seg, at) {
                Frame::Valid { body_start, end } => {
                    out.push(decode_body(&seg, body_start, end).unwrap());
                    at = end;
                }
                Frame::End => return out,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn every_record_type_round_trips() {
        let entry = Entry {
            term: 7,
            index: 42,
            kind: EntryKind::ConfChange,
            data: Bytes::from_static(b"xyz"),
        };
        let hs = HardState {
            term: 9,
            vote: Some(3),
            commit: 40,
        };
        let meta = SnapshotMeta {
            index: 40,
            term: 7,
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                learners: vec![9],
            },
        };
        let mut buf = Vec::new();
        encode_segment_header(&mut buf, 1, 5);
        encode_entry(&mut buf, &entry);
        encode_hard_state(&mut buf, &hs);
        encode_hard_state(&mut buf, &HardState::default());
        encode_snapshot_marker(&mut buf, &meta);
        encode_batch_end(&mut buf, 1 << 40);
        assert_eq!(
            decode_all(buf),
            vec![
                Record::SegmentHeader { format: 1, seq: 5 },
                Record::Entry(entry),
                Record::HardState(hs),
                Record::HardState(HardState::default()),
                Record::Snapshot(meta),
                Record::BatchEnd { start: 1 << 40 },
            ]
        );
    }

    #[test]
    fn damaged_frames_are_detected_not_decoded() {
        let mut buf = Vec::new();
        encode_entry(
            &mut buf,
            &Entry {
                term: 1,
                index: 1,
                kind: EntryKind::Normal,
                data: Bytes::from_static(b"hello"),
            },
        );
        for cut in 1..buf.len() {
            assert_eq!(read_frame(&buf[..cut], 0), Frame::Truncated, "cut at {cut}");
        }
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            match read_frame(&bad, 0) {
                Frame::Valid { .. } => panic!("bit {bit} flip went unnoticed"),
                Frame::End => panic!("impossible"),
                Frame::Truncated | Frame::Bad(_) => {}
            }
        }
        assert!(matches!(read_frame(&[0u8; 16], 0), Frame::Bad(_)));
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        for body in [
            vec![],
            vec![TYPE_ENTRY, 1, 2],
            vec![99],
            vec![
                TYPE_SNAPSHOT,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                255,
                255,
                255,
                255,
            ],
        ] {
            let mut buf = Vec::new();
            frame(&mut buf, |b| b.extend_from_slice(&body));
            let seg = Bytes::from(buf);
            match read_frame(&seg, 0) {
                Frame::Valid { body_start, end } => {
                    assert!(decode_body(&seg, body_start, end).is_err())
                }
                Frame::Bad(_) => assert!(body.is_empty()),
                other => panic!("{other:?}"),
            }
        }
    }
}
