//! etcd 3.4's JSON mapping of protobuf messages, as its grpc-gateway marshals them
//! (golang/protobuf's `jsonpb` with `OrigName`): proto field names, 64-bit integers as
//! strings, bytes as standard base64, enums by name, fields at their default left out, and
//! `<`, `>`, `&` escaped as `\u003c`, `\u003e`, `\u0026` as Go's JSON encoder does.
//!
//! The mapping itself is prost-reflect's (`DynamicMessage` with serde), driven by the
//! descriptor set the proto crate embeds; a typed message crosses over by its protobuf
//! encoding, so the gateway needs no second set of generated types.

use std::io;
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor};
use prost_reflect::{MethodDescriptor, SerializeOptions};
use serde::Serialize;
use tonic::Status;

/// The descriptors of every raftkv proto file, decoded once.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET).expect("embedded descriptor set")
    })
}

/// The descriptor of `service`'s `method` (e.g. `etcdserverpb.KV`, `Range`).
pub fn method(service: &str, method: &str) -> MethodDescriptor {
    pool()
        .get_service_by_name(service)
        .and_then(|s| s.methods().find(|m| m.name() == method))
        .unwrap_or_else(|| panic!("{service}/{method} is in the descriptor set"))
}

fn serialize_options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(true)
        .skip_default_fields(true)
}

/// Go's JSON encoder escapes HTML characters; jsonpb inherits that for strings.
struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escaped = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escaped.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// Any serde value as Go would write it (used for the error objects).
pub fn write_value<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    let mut ser = serde_json::Serializer::with_formatter(out, GoFormatter);
    value
        .serialize(&mut ser)
        .expect("serialising into memory cannot fail");
}

/// Append the JSON of `msg`, whose type is `desc`, to `out`.
pub fn write_message<M: prost::Message>(out: &mut Vec<u8>, desc: &MessageDescriptor, msg: &M) {
    let dynamic = DynamicMessage::decode(desc.clone(), msg.encode_to_vec().as_slice())
        .expect("a message decodes as its own type");
    let mut ser = serde_json::Serializer::with_formatter(out, GoFormatter);
    dynamic
        .serialize_with_options(&mut ser, &serialize_options())
        .expect("serialising into memory cannot fail");
}

/// A typed message from one JSON value. Unknown fields are ignored, as etcd's gateway does.
pub fn from_value<M: prost::Message + Default>(
    desc: &MessageDescriptor,
    value: serde_json::Value,
) -> Result<M, Status> {
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let dynamic = DynamicMessage::deserialize_with_options(desc.clone(), value, &options)
        .map_err(|e| Status::invalid_argument(go_message(&e.to_string())))?;
    M::decode(prost::Message::encode_to_vec(&dynamic).as_slice())
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Bring a few of serde's messages closer to what Go's decoder says for the same input.
fn go_message(serde: &str) -> String {
    // prost-reflect: "invalid base64: Invalid symbol 33, offset 0."
    if let Some(rest) = serde.strip_prefix("invalid base64: Invalid symbol ") {
        if let Some((_, offset)) = rest.split_once(", offset ") {
            let offset = offset.trim_end_matches('.');
            return format!("illegal base64 data at input byte {offset}");
        }
    }
    serde.to_string()
}

/// The first JSON value of a request body. `Ok(None)` for an empty body, which etcd's
/// gateway takes as the request with every field at its default. Anything after the first
/// value is ignored, as Go's `json.Decoder` does for one `Decode`.
pub fn first_value(body: &[u8]) -> Result<Option<serde_json::Value>, String> {
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>();
    match values.next() {
        None => Ok(None),
        Some(Ok(v)) => Ok(Some(v)),
        Some(Err(e)) => Err(go_syntax_message(&e)),
    }
}

/// Go's `encoding/json` words for the commonest syntax error; otherwise serde's.
fn go_syntax_message(e: &serde_json::Error) -> String {
    if e.is_eof() {
        return "unexpected EOF".to_string();
    }
    e.to_string()
}

/// Splits a growing byte stream into JSON values (the client-streaming requests: Watch and
/// LeaseKeepAlive bodies carry one request object after another).
#[derive(Default)]
pub struct ValueSplitter {
    buf: Vec<u8>,
}

impl ValueSplitter {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete value, `Ok(None)` when more input is needed.
    pub fn next_value(&mut self) -> Result<Option<serde_json::Value>, String> {
        let mut values =
            serde_json::Deserializer::from_slice(&self.buf).into_iter::<serde_json::Value>();
        match values.next() {
            None => {
                // Only whitespace so far.
                self.buf.clear();
                Ok(None)
            }
            Some(Ok(v)) => {
                let used = values.byte_offset();
                self.buf.drain(..used);
                Ok(Some(v))
            }
            Some(Err(e)) if e.is_eof() => Ok(None),
            Some(Err(e)) => Err(go_syntax_message(&e)),
        }
    }

    /// Whether unparsed non-whitespace input remains (the body ended inside a value).
    pub fn has_partial(&self) -> bool {
        self.buf.iter().any(|b| !b.is_ascii_whitespace())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};

    #[test]
    fn etcds_mapping_names_strings_base64_and_no_defaults() {
        let m = method("etcdserverpb.KV", "Range");
        let resp = RangeResponse {
            header: Some(ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 3,
                raft_term: 0,
            }),
            kvs: vec![proto::mvccpb::KeyValue {
                key: bytes::Bytes::from_static(b"<&>"),
                value: bytes::Bytes::from_static(b"bar"),
                create_revision: 3,
                ..Default::default()
            }],
            more: false,
            count: 1,
        };
        let mut out = Vec::new();
        write_message(&mut out, &m.output(), &resp);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"header":{"cluster_id":"1","member_id":"2","revision":"3"},"kvs":[{"key":"PCY+","create_revision":"3","value":"YmFy"}],"count":"1"}"#
        );
    }

    #[test]
    fn requests_take_names_strings_numbers_and_ignore_unknown_fields() {
        let m = method("etcdserverpb.KV", "Range");
        let v =
            first_value(br#"{"key":"Zm9v","range_end":"Zm9w","limit":"5","revision":7,"bogus":1}"#)
                .unwrap()
                .unwrap();
        let r: RangeRequest = from_value(&m.input(), v).unwrap();
        assert_eq!(&r.key[..], b"foo");
        assert_eq!(&r.range_end[..], b"fop");
        assert_eq!((r.limit, r.revision), (5, 7));
        let bad = first_value(br#"{"key":"!!"}"#).unwrap().unwrap();
        let e = from_value::<RangeRequest>(&m.input(), bad).unwrap_err();
        assert_eq!(e.message(), "illegal base64 data at input byte 0");
        assert_eq!(first_value(b"  ").unwrap(), None);
        assert!(first_value(b"xx").is_err());
    }

    #[test]
    fn html_characters_are_escaped_like_go() {
        let mut out = Vec::new();
        write_value(&mut out, &serde_json::json!({"error": "a<b>&c"}));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"error":"a\u003cb\u003e\u0026c"}"#
        );
    }

    #[test]
    fn the_splitter_yields_values_as_they_complete() {
        let mut s = ValueSplitter::default();
        s.push(br#"{"a":1} {"b""#);
        assert_eq!(s.next_value().unwrap(), Some(serde_json::json!({"a":1})));
        assert_eq!(s.next_value().unwrap(), None);
        assert!(s.has_partial());
        s.push(br#":2}"#);
        assert_eq!(s.next_value().unwrap(), Some(serde_json::json!({"b":2})));
        assert!(!s.has_partial());
        s.push(b"nope");
        assert!(s.next_value().is_err());
    }
}
