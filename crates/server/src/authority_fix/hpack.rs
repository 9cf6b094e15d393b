//! An HPACK decoder (RFC 7541), just what the `:authority` adapter needs: whole header
//! blocks in, `(name, value)` lists out, with the dynamic table kept in step with the
//! client's encoder.
//!
//! Every byte comes from the network, so every read is bounds-checked and every malformed
//! block is an [`HpackError`]; nothing here can panic on input (property tests in
//! `props.rs` feed it random and mutated blocks). The table size a client may ask for is
//! capped at what the HTTP/2 server allows (4,096 octets, the protocol default, which h2
//! does not change), and a block may not expand past [`MAX_DECODED`], so a block of tiny
//! references to one large entry cannot make us allocate gigabytes.

use std::collections::VecDeque;

use super::huffman::{self, HuffmanError};

/// SETTINGS_HEADER_TABLE_SIZE's default, which our HTTP/2 server keeps: the largest dynamic
/// table a client may use.
pub const MAX_TABLE_SIZE: usize = 4096;
/// Most octets (names + values + 32 per field, as RFC 7541 counts) one block may decode to.
/// h2 refuses header lists far smaller than this, so no valid request comes near it.
pub const MAX_DECODED: usize = 1 << 20;
/// Per-entry overhead RFC 7541 §4.1 adds to name and value lengths.
const ENTRY_OVERHEAD: usize = 32;

pub type Field = (Vec<u8>, Vec<u8>);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("header block ends inside a field")]
    Truncated,
    #[error("integer too large")]
    IntegerOverflow,
    #[error("index {0} is not in the header table")]
    BadIndex(usize),
    #[error("dynamic table size update to {0} exceeds the allowed {MAX_TABLE_SIZE}")]
    TableSizeTooLarge(usize),
    #[error("dynamic table size update after a header field")]
    LateTableSizeUpdate,
    #[error("header block decodes to more than {MAX_DECODED} octets")]
    TooLarge,
    #[error(transparent)]
    Huffman(#[from] HuffmanError),
}

/// The static table (RFC 7541 Appendix A); index 1 is the first entry.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The decoding side of one connection's header compression.
pub struct Decoder {
    /// Newest entry first, so index 62 is `dynamic[0]`.
    dynamic: VecDeque<Field>,
    size: usize,
    max_size: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            dynamic: VecDeque::new(),
            size: 0,
            max_size: MAX_TABLE_SIZE,
        }
    }
}

/// A cursor over a header block.
struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.first().copied()
    }

    fn byte(&mut self) -> Result<u8, HpackError> {
        let (&b, rest) = self.bytes.split_first().ok_or(HpackError::Truncated)?;
        self.bytes = rest;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], HpackError> {
        if n > self.bytes.len() {
            return Err(HpackError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    /// An integer with an `prefix`-bit prefix (RFC 7541 §5.1). Values past `u32::MAX` are
    /// refused: no valid length, index or table size comes near.
    fn integer(&mut self, prefix: u32) -> Result<usize, HpackError> {
        let max_prefix = (1u32 << prefix) - 1;
        let first = u32::from(self.byte()?) & max_prefix;
        if first < max_prefix {
            return Ok(first as usize);
        }
        let mut value = u64::from(max_prefix);
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            value += u64::from(b & 0x7f) << shift;
            if value > u64::from(u32::MAX) {
                return Err(HpackError::IntegerOverflow);
            }
            if b & 0x80 == 0 {
                return Ok(value as usize);
            }
            shift += 7;
            if shift > 28 {
                return Err(HpackError::IntegerOverflow);
            }
        }
    }

    /// A string literal (RFC 7541 §5.2), raw or Huffman-coded.
    fn string(&mut self) -> Result<Vec<u8>, HpackError> {
        let huffman = self.peek().ok_or(HpackError::Truncated)? & 0x80 != 0;
        let len = self.integer(7)?;
        let raw = self.take(len)?;
        if !huffman {
            return Ok(raw.to_vec());
        }
        let mut out = Vec::with_capacity(raw.len() + raw.len() / 2);
        huffman::decode(raw, &mut out)?;
        Ok(out)
    }
}

impl Decoder {
    /// Decodes one complete header block (a HEADERS frame's fragment plus its
    /// CONTINUATIONs), updating the dynamic table as the block says.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, HpackError> {
        let mut input = Input { bytes: block };
        let mut fields = Vec::new();
        let mut decoded = 0usize;
        while let Some(first) = input.peek() {
            let field = if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let index = input.integer(7)?;
                self.get(index)?
            } else if first & 0x40 != 0 {
                // Literal with incremental indexing (§6.2.1).
                let field = self.literal(&mut input, 6)?;
                self.insert(field.clone());
                field
            } else if first & 0x20 != 0 {
                // Dynamic table size update (§6.3): only before the first field (§4.2).
                if !fields.is_empty() {
                    return Err(HpackError::LateTableSizeUpdate);
                }
                let size = input.integer(5)?;
                if size > MAX_TABLE_SIZE {
                    return Err(HpackError::TableSizeTooLarge(size));
                }
                self.max_size = size;
                self.evict();
                continue;
            } else {
                // Literal without indexing or never indexed (§6.2.2, §6.2.3): both have a
                // 4-bit prefix and leave the table alone.
                self.literal(&mut input, 4)?
            };
            decoded += field.0.len() + field.1.len() + ENTRY_OVERHEAD;
            if decoded > MAX_DECODED {
                return Err(HpackError::TooLarge);
            }
            fields.push(field);
        }
        Ok(fields)
    }

    /// A literal field whose name is an index (non-zero) or a following string.
    fn literal(&self, input: &mut Input<'_>, prefix: u32) -> Result<Field, HpackError> {
        let index = input.integer(prefix)?;
        let name = if index == 0 {
            input.string()?
        } else {
            self.get(index)?.0
        };
        let value = input.string()?;
        Ok((name, value))
    }

    fn get(&self, index: usize) -> Result<Field, HpackError> {
        if index == 0 {
            return Err(HpackError::BadIndex(index));
        }
        if let Some((name, value)) = STATIC_TABLE.get(index - 1) {
            return Ok((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
        }
        self.dynamic
            .get(index - 1 - STATIC_TABLE.len())
            .cloned()
            .ok_or(HpackError::BadIndex(index))
    }

    /// Adds an entry (§4.4): older entries are evicted to make room; an entry larger than
    /// the whole table empties it and is not kept.
    fn insert(&mut self, field: Field) {
        let size = field.0.len() + field.1.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            self.dynamic.clear();
            self.size = 0;
            return;
        }
        self.size += size;
        self.dynamic.push_front(field);
        self.evict();
    }

    fn evict(&mut self) {
        while self.size > self.max_size {
            match self.dynamic.pop_back() {
                Some((name, value)) => self.size -= name.len() + value.len() + ENTRY_OVERHEAD,
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn fields(list: &[(&str, &str)]) -> Vec<Field> {
        list.iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    /// RFC 7541 Appendix C.3 (raw strings) and C.4 (Huffman): three requests on one
    /// connection, the later ones indexing the entries the earlier ones added.
    #[test]
    fn rfc_request_examples() {
        let expected = [
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ]),
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache"),
            ]),
            fields(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ]),
        ];
        let raw = [
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ];
        let huffman = [
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ];
        for blocks in [raw, huffman] {
            let mut d = Decoder::default();
            for (block, want) in blocks.iter().zip(&expected) {
                assert_eq!(&d.decode(&hex(block)).unwrap(), want);
            }
            // 3 entries: custom-key (54), cache-control (53), :authority (57).
            assert_eq!(d.dynamic.len(), 3);
            assert_eq!(d.size, 164);
        }
    }

    /// RFC 7541 Appendix C.5: responses with a 256-octet table, so entries get evicted.
    #[test]
    fn rfc_eviction_example() {
        let mut d = Decoder::default();
        // A size update to 256 first, as an encoder would send after the SETTINGS change.
        let mut first = vec![0x3f, 0xe1, 0x01];
        first.extend(hex(
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
             2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
             6c65 2e63 6f6d",
        ));
        assert_eq!(
            d.decode(&first).unwrap(),
            fields(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com"),
            ])
        );
        assert_eq!(d.size, 222);
        // ":status: 307" evicts ":status: 302".
        assert_eq!(
            d.decode(&hex("4803 3330 37c1 c0bf")).unwrap(),
            fields(&[
                (":status", "307"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com"),
            ])
        );
        assert_eq!(d.size, 222);
        assert_eq!(d.dynamic.len(), 4);
    }

    #[test]
    fn malformed_blocks_are_errors() {
        let cases: [(&[u8], HpackError); 9] = [
            (&[0x80], HpackError::BadIndex(0)),
            (&[0xbe], HpackError::BadIndex(62)),
            (&[0xff], HpackError::Truncated),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                HpackError::IntegerOverflow,
            ),
            (&[0x3f], HpackError::Truncated),
            (&[0x3f, 0xe2, 0x1f], HpackError::TableSizeTooLarge(4097)),
            (&[0x82, 0x20], HpackError::LateTableSizeUpdate),
            (&[0x40, 0x05, b'a'], HpackError::Truncated),
            (
                &[0x00, 0x81, 0x00, 0x00],
                HpackError::Huffman(HuffmanError::BadPadding),
            ),
        ];
        for (block, error) in cases {
            assert_eq!(Decoder::default().decode(block), Err(error), "{block:02x?}");
        }
    }

    #[test]
    fn a_block_may_not_expand_without_bound() {
        let mut d = Decoder::default();
        // One 4,000-octet entry, then a block of 300 one-octet references to it.
        let mut add = vec![0x40, 0x01, b'x', 0x7f];
        let mut len = Vec::new();
        let mut rest = 4000 - 127;
        while rest >= 128 {
            len.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        len.push(rest as u8);
        add.extend(len);
        add.extend(vec![b'v'; 4000]);
        assert_eq!(d.decode(&add).unwrap().len(), 1);
        assert_eq!(d.decode(&[0xbe; 300]), Err(HpackError::TooLarge));
    }
}
