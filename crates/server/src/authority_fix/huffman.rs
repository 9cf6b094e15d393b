//! HPACK's Huffman code (RFC 7541 §5.2, Appendix B), decoding only.
//!
//! The code is canonical: within one length, codes rise with the symbol, and every code of a
//! length follows all shorter ones. So the code *lengths* of the 257 symbols (256 octets and
//! end-of-string) define it completely, and decoding needs no tree: after each bit, a code
//! of length `l` is a symbol when it falls among the `count[l]` codes starting at
//! `first[l]`. Tests check the table against the RFC's examples.

use std::sync::OnceLock;

/// Code length in bits of each symbol 0..=255 and of EOS (256), from RFC 7541 Appendix B.
#[rustfmt::skip]
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    30,
];

const EOS: u16 = 256;
const MAX_LEN: usize = 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HuffmanError {
    #[error("Huffman string contains the end-of-string symbol")]
    EndOfStringInside,
    #[error("Huffman string padding is longer than 7 bits or not all ones")]
    BadPadding,
}

/// The canonical code in the form decoding uses.
struct Canonical {
    /// First code of each length (meaningful when `count` of that length is non-zero).
    first: [u32; MAX_LEN + 1],
    /// How many codes have each length.
    count: [u32; MAX_LEN + 1],
    /// Index in `symbols` of the first symbol of each length.
    offset: [u32; MAX_LEN + 1],
    /// Symbols ordered by (code length, symbol): the order in which codes are assigned.
    symbols: [u16; 257],
}

fn canonical() -> &'static Canonical {
    static CODE: OnceLock<Canonical> = OnceLock::new();
    CODE.get_or_init(|| {
        let mut c = Canonical {
            first: [0; MAX_LEN + 1],
            count: [0; MAX_LEN + 1],
            offset: [0; MAX_LEN + 1],
            symbols: [0; 257],
        };
        for &len in &CODE_LENGTHS {
            c.count[usize::from(len)] += 1;
        }
        let mut code = 0u32;
        let mut index = 0u32;
        for len in 1..=MAX_LEN {
            c.first[len] = code;
            c.offset[len] = index;
            code = (code + c.count[len]) << 1;
            index += c.count[len];
        }
        let mut next = c.offset;
        for (symbol, &len) in CODE_LENGTHS.iter().enumerate() {
            let slot = &mut next[usize::from(len)];
            c.symbols[*slot as usize] = symbol as u16;
            *slot += 1;
        }
        c
    })
}

/// Decodes a whole Huffman-coded string literal.
pub fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let c = canonical();
    let mut code = 0u32;
    let mut len = 0usize;
    for &byte in input {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            // Bits that are only the start of a longer code sit at or above
            // `first[len] + count[len]`; the `>=` keeps the subtraction safe regardless.
            if c.count[len] != 0 && code >= c.first[len] && code - c.first[len] < c.count[len] {
                let symbol = c.symbols[(c.offset[len] + code - c.first[len]) as usize];
                if symbol == EOS {
                    return Err(HuffmanError::EndOfStringInside);
                }
                out.push(symbol as u8);
                code = 0;
                len = 0;
            } else if len == MAX_LEN {
                // Every 30-bit pattern not matched above is the EOS prefix or longer; with
                // a complete code this cannot be reached except through EOS itself.
                return Err(HuffmanError::EndOfStringInside);
            }
        }
    }
    // What is left must be padding: at most 7 bits, all ones (a prefix of EOS).
    if len > 7 || code != (1u32 << len) - 1 {
        return Err(HuffmanError::BadPadding);
    }
    Ok(())
}

/// Huffman-encodes `input` (tests only: the adapter never writes Huffman strings).
#[cfg(test)]
pub fn encode(input: &[u8]) -> Vec<u8> {
    let c = canonical();
    // The code of each symbol, from its rank among the symbols of its length.
    let mut codes = [0u32; 257];
    for len in 1..=MAX_LEN {
        for k in 0..c.count[len] {
            codes[c.symbols[(c.offset[len] + k) as usize] as usize] = c.first[len] + k;
        }
    }
    let mut out = Vec::new();
    let mut acc = 0u64;
    let mut bits = 0u32;
    for &b in input {
        acc = (acc << CODE_LENGTHS[usize::from(b)]) | u64::from(codes[usize::from(b)]);
        bits += u32::from(CODE_LENGTHS[usize::from(b)]);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        let pad = 8 - bits;
        out.push(((acc << pad) | ((1 << pad) - 1)) as u8);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn decoded(input: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut out = Vec::new();
        decode(input, &mut out).map(|()| out)
    }

    #[test]
    fn the_lengths_make_a_complete_prefix_code() {
        // Kraft's equality: the code wastes no bit pattern, so every bit string is a
        // sequence of symbols plus a proper prefix of one.
        let sum: u64 = CODE_LENGTHS
            .iter()
            .map(|&l| 1u64 << (MAX_LEN - usize::from(l)))
            .sum();
        assert_eq!(sum, 1u64 << MAX_LEN);
        // EOS is the only 30-bit code and is all ones.
        let c = canonical();
        assert_eq!(c.symbols[256], EOS);
        assert_eq!(c.first[30] + c.count[30] - 1, (1 << 30) - 1);
    }

    /// The Huffman strings of RFC 7541 Appendix C.4 and C.6.
    #[test]
    fn rfc_examples() {
        let cases = [
            ("f1e3c2e5f23a6ba0ab90f4ff", "www.example.com"),
            ("a8eb10649cbf", "no-cache"),
            ("25a849e95ba97d7f", "custom-key"),
            ("25a849e95bb8e8b4bf", "custom-value"),
            ("6402", "302"),
            ("aec3771a4b", "private"),
            (
                "d07abe941054d444a8200595040b8166e082a62d1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29ad171863c78f0b97c8e9ae82ae43d3",
                "https://www.example.com",
            ),
        ];
        for (code, text) in cases {
            assert_eq!(decoded(&hex(code)).unwrap(), text.as_bytes(), "{text}");
            assert_eq!(encode(text.as_bytes()), hex(code), "{text}");
        }
    }

    #[test]
    fn every_octet_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decoded(&encode(&all)).unwrap(), all);
        assert_eq!(decoded(&[]).unwrap(), b"");
    }

    #[test]
    fn bad_padding_and_eos_are_errors() {
        // '0' is 00000 (5 bits): three zero bits of padding are not EOS's ones.
        assert_eq!(decoded(&[0b0000_0000]), Err(HuffmanError::BadPadding));
        // A whole byte of ones is more than 7 bits of padding.
        assert_eq!(decoded(&[0x07, 0xff]), Err(HuffmanError::BadPadding));
        // EOS itself (30 ones) inside the string.
        assert_eq!(
            decoded(&[0xff, 0xff, 0xff, 0xff]),
            Err(HuffmanError::EndOfStringInside)
        );
    }
}
