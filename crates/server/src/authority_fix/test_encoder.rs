//! An HPACK encoder for the tests: it writes every representation a client may use, so the
//! decoder meets indexed fields, indexed names, the three literal kinds, Huffman strings and
//! table size updates. It keeps its own model of the dynamic table (written separately from
//! the decoder's on purpose, so a table bug in one does not hide in the other).

use std::collections::VecDeque;

use super::hpack::Field;
use super::huffman;

/// How to write one field.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    /// Use an exact table match as an indexed field when there is one.
    pub index_whole: bool,
    /// Refer to the name by index when it is in a table.
    pub index_name: bool,
    /// 0: incremental indexing, 1: without indexing, 2: never indexed.
    pub literal_kind: u8,
    pub huffman_name: bool,
    pub huffman_value: bool,
}

impl Style {
    /// What a typical client encoder does: index everything it can.
    pub const INDEXING: Style = Style {
        index_whole: true,
        index_name: true,
        literal_kind: 0,
        huffman_name: false,
        huffman_value: false,
    };
}

const STATIC_NAMES: [&str; 61] = [
    ":authority",
    ":method",
    ":method",
    ":path",
    ":path",
    ":scheme",
    ":scheme",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "accept",
    "access-control-allow-origin",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-range",
    "content-type",
    "cookie",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "link",
    "location",
    "max-forwards",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "refresh",
    "retry-after",
    "server",
    "set-cookie",
    "strict-transport-security",
    "transfer-encoding",
    "user-agent",
    "vary",
    "via",
    "www-authenticate",
];

/// Static entries that have a value (all others have an empty one).
const STATIC_VALUES: [(usize, &str); 14] = [
    (2, "GET"),
    (3, "POST"),
    (4, "/"),
    (5, "/index.html"),
    (6, "http"),
    (7, "https"),
    (8, "200"),
    (9, "204"),
    (10, "206"),
    (11, "304"),
    (12, "400"),
    (13, "404"),
    (14, "500"),
    (16, "gzip, deflate"),
];

pub fn static_entry(index: usize) -> (&'static str, &'static str) {
    let value = STATIC_VALUES
        .iter()
        .find(|(i, _)| *i == index)
        .map_or("", |(_, v)| *v);
    (STATIC_NAMES[index - 1], value)
}

pub struct Encoder {
    /// Newest first, as the index space counts.
    table: VecDeque<Field>,
    capacity: usize,
}

impl Encoder {
    pub fn new() -> Self {
        Encoder {
            table: VecDeque::new(),
            capacity: 4096,
        }
    }

    /// Encodes with [`Style::INDEXING`].
    pub fn encode<'a>(
        &mut self,
        fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Vec<u8> {
        let fields: Vec<Field> = fields
            .into_iter()
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        let styles = vec![Style::INDEXING; fields.len()];
        self.encode_with(&fields, &styles, None)
    }

    /// Encodes `fields[i]` in `styles[i]`, after a table size update when asked for.
    pub fn encode_with(
        &mut self,
        fields: &[Field],
        styles: &[Style],
        resize: Option<usize>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(size) = resize {
            integer(&mut out, 0x20, 5, size);
            self.capacity = size;
            self.shrink();
        }
        for (field, style) in fields.iter().zip(styles) {
            self.field(&mut out, field, *style);
        }
        out
    }

    fn find(&self, name: &[u8], value: Option<&[u8]>) -> Option<usize> {
        let statics = (1..=61)
            .map(static_entry)
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        let dynamics = self.table.iter().map(|(n, v)| (&n[..], &v[..]));
        statics
            .chain(dynamics)
            .position(|(n, v)| n == name && value.is_none_or(|value| v == value))
            .map(|p| p + 1)
    }

    fn field(&mut self, out: &mut Vec<u8>, (name, value): &Field, style: Style) {
        if style.index_whole {
            if let Some(index) = self.find(name, Some(value)) {
                integer(out, 0x80, 7, index);
                return;
            }
        }
        let name_index = if style.index_name {
            self.find(name, None)
        } else {
            None
        };
        let (first, prefix) = match style.literal_kind {
            0 => (0x40, 6),
            1 => (0x00, 4),
            _ => (0x10, 4),
        };
        integer(out, first, prefix, name_index.unwrap_or(0));
        if name_index.is_none() {
            string(out, name, style.huffman_name);
        }
        string(out, value, style.huffman_value);
        if style.literal_kind == 0 {
            self.table.push_front((name.clone(), value.clone()));
            self.shrink();
        }
    }

    fn shrink(&mut self) {
        let used =
            |t: &VecDeque<Field>| t.iter().map(|(n, v)| n.len() + v.len() + 32).sum::<usize>();
        while used(&self.table) > self.capacity {
            self.table.pop_back();
        }
    }
}

fn integer(out: &mut Vec<u8>, first: u8, prefix: u32, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

fn string(out: &mut Vec<u8>, s: &[u8], use_huffman: bool) {
    if use_huffman {
        let coded = huffman::encode(s);
        integer(out, 0x80, 7, coded.len());
        out.extend_from_slice(&coded);
    } else {
        integer(out, 0, 7, s.len());
        out.extend_from_slice(s);
    }
}
