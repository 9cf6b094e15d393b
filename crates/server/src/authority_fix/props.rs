//! Property tests: the HPACK decoder against the test encoder over random header lists and
//! every representation, the decoder and the whole adapter on random and mutated input
//! (where the only acceptable outcomes are a result or an error — a panic fails the test),
//! and the adapter's two modes end to end.

use std::io;

use futures_util::FutureExt as _;
use proptest::collection::vec;
use proptest::prelude::*;
use tokio::io::AsyncReadExt as _;

use super::hpack::{Decoder, Field};
use super::test_encoder::{static_entry, Encoder, Style};
use super::{
    fix_authority, AuthorityFix, CONTINUATION, END_HEADERS, HEADERS, PADDED, PREFACE, PRIORITY,
};

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (1usize..=61).prop_map(|i| static_entry(i).0.as_bytes().to_vec()),
        vec(any::<u8>(), 0..12),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..24),
        1 => (1usize..=61).prop_map(|i| static_entry(i).1.as_bytes().to_vec()),
        1 => vec(any::<u8>(), 0..600),
    ]
}

fn style() -> impl Strategy<Value = Style> {
    (
        any::<bool>(),
        any::<bool>(),
        0u8..3,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(index_whole, index_name, literal_kind, huffman_name, huffman_value)| Style {
                index_whole,
                index_name,
                literal_kind,
                huffman_name,
                huffman_value,
            },
        )
}

/// One header block to write: its fields, how each is written, and a table size update.
#[derive(Clone, Debug)]
struct Block {
    fields: Vec<Field>,
    styles: Vec<Style>,
    resize: Option<usize>,
}

/// A table size update now and then, often small enough to force evictions.
fn resize() -> impl Strategy<Value = Option<usize>> {
    prop::option::weighted(0.3, prop_oneof![0usize..=400, 0usize..=4096])
}

fn block() -> impl Strategy<Value = Block> {
    (vec((name(), value(), style()), 0..10), resize()).prop_map(|(items, resize)| Block {
        fields: items
            .iter()
            .map(|(n, v, _)| (n.clone(), v.clone()))
            .collect(),
        styles: items.iter().map(|(_, _, s)| *s).collect(),
        resize,
    })
}

/// Blocks that mostly repeat fields from a small pool, as a client's requests do, so that
/// later blocks refer to dynamic entries (by whole field or by name) after some of them
/// were evicted.
fn related_blocks() -> impl Strategy<Value = Vec<Block>> {
    vec((name(), value()), 1..8).prop_flat_map(|pool| {
        let n = pool.len();
        let item = prop_oneof![
            3 => (0..n, style()).prop_map(|(i, s)| (None, i, s)),
            1 => ((name(), value()), style()).prop_map(|(f, s)| (Some(f), 0, s)),
        ];
        vec((vec(item, 0..10), resize()), 1..6).prop_map(move |blocks| {
            blocks
                .into_iter()
                .map(|(items, resize)| Block {
                    fields: items
                        .iter()
                        .map(|(fresh, i, _)| fresh.clone().unwrap_or_else(|| pool[*i].clone()))
                        .collect(),
                    styles: items.iter().map(|(_, _, s)| *s).collect(),
                    resize,
                })
                .collect::<Vec<_>>()
        })
    })
}

fn encode_all(blocks: &[Block]) -> Vec<Vec<u8>> {
    let mut encoder = Encoder::new();
    blocks
        .iter()
        .map(|b| encoder.encode_with(&b.fields, &b.styles, b.resize))
        .collect()
}

/// A change to a byte string: 0 flip a byte, 1 insert one, 2 delete one, 3 cut the rest.
fn mutate(bytes: &mut Vec<u8>, (kind, at, byte): (u8, usize, u8)) {
    if bytes.is_empty() {
        bytes.push(byte);
        return;
    }
    let at = at % bytes.len();
    match kind {
        0 => bytes[at] ^= byte | 1,
        1 => bytes.insert(at, byte),
        2 => {
            bytes.remove(at);
        }
        _ => bytes.truncate(at),
    }
}

fn mutation() -> impl Strategy<Value = (u8, usize, u8)> {
    (0u8..4, any::<usize>(), any::<u8>())
}

/// Runs a whole client byte stream through the adapter.
fn run(input: &[u8]) -> io::Result<Vec<u8>> {
    let mut fix = AuthorityFix::new(input);
    let mut out = Vec::new();
    fix.read_to_end(&mut out)
        .now_or_never()
        .expect("reading from a slice never waits")?;
    Ok(out)
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.extend_from_slice(payload);
}

/// How one header block travels: in how many pieces, padded, with a priority, and followed
/// by a DATA frame.
#[derive(Clone, Debug)]
struct Framing {
    pieces: usize,
    padding: Option<u8>,
    priority: bool,
    data: Vec<u8>,
}

fn framing() -> impl Strategy<Value = Framing> {
    (
        1usize..4,
        prop::option::of(any::<u8>()),
        any::<bool>(),
        vec(any::<u8>(), 0..20),
    )
        .prop_map(|(pieces, padding, priority, data)| Framing {
            pieces,
            padding,
            priority,
            data,
        })
}

/// The preface and the frames of one request per block, on streams 1, 3, 5, ...
fn connection(blocks: &[Vec<u8>], framings: &[Framing]) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    for (i, (block, f)) in blocks.iter().zip(framings).enumerate() {
        let stream_id = 1 + 2 * i as u32;
        let piece = block.len().div_ceil(f.pieces).max(1);
        let mut chunks: Vec<&[u8]> = block.chunks(piece).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let last = chunks.len() - 1;
        for (j, chunk) in chunks.iter().enumerate() {
            let end = if j == last { END_HEADERS } else { 0 };
            if j > 0 {
                frame(&mut out, CONTINUATION, end, stream_id, chunk);
                continue;
            }
            let mut flags = end;
            let mut payload = Vec::new();
            if let Some(pad) = f.padding {
                flags |= PADDED;
                payload.push(pad);
            }
            if f.priority {
                flags |= PRIORITY;
                payload.extend_from_slice(&[0, 0, 0, 0, 16]);
            }
            payload.extend_from_slice(chunk);
            payload.extend(std::iter::repeat_n(0, usize::from(f.padding.unwrap_or(0))));
            frame(&mut out, HEADERS, flags, stream_id, &payload);
        }
        frame(&mut out, 0x0, 0x1, stream_id, &f.data);
    }
    out
}

/// The header blocks (decoded) and DATA payloads of the adapter's output, in order.
fn read_back(stream: &[u8]) -> (Vec<Vec<Field>>, Vec<Vec<u8>>) {
    assert!(stream.starts_with(PREFACE));
    let mut rest = &stream[PREFACE.len()..];
    let mut decoder = Decoder::default();
    let (mut blocks, mut data) = (Vec::new(), Vec::new());
    let mut pending: Option<Vec<u8>> = None;
    while !rest.is_empty() {
        let len = (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
        let (kind, flags) = (rest[3], rest[4]);
        let mut payload = &rest[9..9 + len];
        rest = &rest[9 + len..];
        match kind {
            HEADERS => {
                assert_eq!(flags & PADDED, 0, "the adapter writes no padding");
                if flags & PRIORITY != 0 {
                    payload = &payload[5..];
                }
                pending = Some(payload.to_vec());
            }
            CONTINUATION => pending
                .as_mut()
                .expect("CONTINUATION after HEADERS")
                .extend_from_slice(payload),
            _ => data.push(payload.to_vec()),
        }
        if matches!(kind, HEADERS | CONTINUATION) && flags & END_HEADERS != 0 {
            let block = pending.take().expect("a block");
            blocks.push(decoder.decode(&block).expect("the adapter's blocks decode"));
        }
    }
    (blocks, data)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Whatever representations an encoder picks, the decoder gets the fields back, and its
    /// dynamic table follows across blocks (later blocks index earlier entries).
    #[test]
    fn decoding_undoes_encoding(blocks in prop_oneof![vec(block(), 1..5), related_blocks()]) {
        let encoded = encode_all(&blocks);
        let mut decoder = Decoder::default();
        for (block, bytes) in blocks.iter().zip(&encoded) {
            prop_assert_eq!(&decoder.decode(bytes).unwrap(), &block.fields);
        }
    }

    /// Random bytes are a result or an error, never a panic.
    #[test]
    fn random_blocks_never_panic(blocks in vec(vec(any::<u8>(), 0..64), 1..4)) {
        let mut decoder = Decoder::default();
        for block in &blocks {
            let _ = decoder.decode(block);
        }
    }

    /// Valid blocks with bytes flipped, inserted, deleted or cut: a result or an error.
    #[test]
    fn mutated_blocks_never_panic(
        blocks in related_blocks(),
        mutations in vec(mutation(), 1..6),
    ) {
        let mut encoded = encode_all(&blocks);
        for (i, m) in mutations.iter().enumerate() {
            let target = i % encoded.len();
            mutate(&mut encoded[target], *m);
        }
        let mut decoder = Decoder::default();
        for bytes in &encoded {
            let _ = decoder.decode(bytes);
        }
    }

    /// A connection whose first request carries a scheme in `:authority`: every block comes
    /// out with the scheme stripped (a bare path becomes `localhost`) and every other field
    /// and frame as it was, however the blocks were encoded and framed.
    #[test]
    fn schemes_are_stripped_from_every_block(
        blocks in related_blocks().prop_map(|mut b| { b.truncate(3); b }),
        framings in vec(framing(), 3),
        port in any::<u16>(),
    ) {
        let mut blocks = blocks;
        for b in &mut blocks {
            b.fields.insert(0, (b":authority".to_vec(), format!("http://h{port}:{port}").into_bytes()));
            b.styles.insert(0, Style::INDEXING);
        }
        let input = connection(&encode_all(&blocks), &framings);
        let (decoded, data) = read_back(&run(&input).unwrap());
        let expected: Vec<Vec<Field>> = blocks
            .iter()
            .map(|b| {
                b.fields
                    .iter()
                    .map(|(n, v)| {
                        let v = if n == b":authority" { fix_authority(v).to_vec() } else { v.clone() };
                        (n.clone(), v)
                    })
                    .collect()
            })
            .collect();
        prop_assert_eq!(decoded, expected);
        let sent: Vec<Vec<u8>> = framings.iter().take(blocks.len()).map(|f| f.data.clone()).collect();
        prop_assert_eq!(data, sent);
    }

    /// Without a scheme in the first block, the connection passes byte for byte.
    #[test]
    fn connections_without_a_scheme_pass_unchanged(
        blocks in vec(block(), 1..4),
        framings in vec(framing(), 3),
    ) {
        let mut blocks = blocks;
        let first = &mut blocks[0];
        let (fields, styles): (Vec<Field>, Vec<Style>) = first
            .fields
            .iter()
            .cloned()
            .zip(first.styles.iter().copied())
            .filter(|((n, _), _)| n != b":authority")
            .unzip();
        first.fields = fields;
        first.styles = styles;
        first.fields.push((b":authority".to_vec(), b"127.0.0.1:2379".to_vec()));
        first.styles.push(Style::INDEXING);
        let input = connection(&encode_all(&blocks), &framings);
        prop_assert_eq!(run(&input).unwrap(), input);
    }

    /// Mutated connections (either mode): the adapter gives bytes or an error, never panics.
    #[test]
    fn mutated_connections_never_panic(
        blocks in vec(block(), 1..4),
        framings in vec(framing(), 3),
        scheme in any::<bool>(),
        mutations in vec(mutation(), 1..6),
    ) {
        let mut blocks = blocks;
        let authority = if scheme { "http://127.0.0.1:2379" } else { "127.0.0.1:2379" };
        blocks[0].fields.insert(0, (b":authority".to_vec(), authority.as_bytes().to_vec()));
        blocks[0].styles.insert(0, Style::INDEXING);
        let mut input = connection(&encode_all(&blocks), &framings);
        for m in &mutations {
            // Keep the preface most of the time, so the HTTP/2 paths are the ones exercised.
            let keep = PREFACE.len();
            let mut tail = input.split_off(keep.min(input.len()));
            mutate(&mut tail, *m);
            input.extend(tail);
        }
        let _ = run(&input);
    }
}
