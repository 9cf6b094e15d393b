//! The client port's answers at its edges, next to a real etcd 3.4's: a request message over
//! the gRPC receive limit, a gRPC method or service nobody serves, a gRPC method path sent
//! over HTTP/1.1, and a Range with a `sort_order` outside the enum. One single-member etcd
//! and one single-member raftkv get the same requests; both answers must be etcd 3.4.23's as
//! observed by hand (so the expectations also catch an etcd that changed), and equal.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use proto::etcdserverpb::range_request::SortTarget;
use proto::etcdserverpb::{kv_client::KvClient, PutRequest, RangeRequest};
use proto::prost::bytes::{Buf, BufMut, Bytes};
use proto::prost::Message;
use raftkv_client::client::{Client, Timeouts};
use raftkv_client::leader::{wait_for_leader, TermLedger};
use raftkv_client::local_cluster::{ClusterSpec, LocalCluster, MemberProgram};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Free loopback ports below 32768 (the tests' port rule), probed by binding them.
fn low_ports(count: usize) -> Vec<u16> {
    let start = 20_000 + (std::process::id() % 600) as u16 * 20;
    let mut ports = Vec::new();
    for port in (start..32_000).chain(20_000..start) {
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
            if ports.len() == count {
                return ports;
            }
        }
    }
    panic!("no {count} free loopback ports below 32000");
}

struct Side {
    label: &'static str,
    cluster: LocalCluster,
    channel: Channel,
}

impl Side {
    fn addr(&self) -> SocketAddr {
        self.cluster.member(0).endpoint().parse().expect("endpoint")
    }
}

async fn start(label: &'static str, program: MemberProgram, ports: (u16, u16)) -> Side {
    let mut spec = ClusterSpec::new(program, &format!("edge-{label}"), 1);
    spec.ports = Some(vec![ports]);
    let cluster = LocalCluster::start(spec).expect("cannot start the member");
    let endpoints = cluster.endpoints();
    let client = Client::new(
        &endpoints,
        Timeouts {
            dial: Duration::from_secs(2),
            call: Duration::from_secs(5),
        },
    )
    .expect("client");
    if let Err(e) = wait_for_leader(
        &client,
        &mut TermLedger::default(),
        Duration::from_secs(30),
        |_| true,
    )
    .await
    {
        panic!("{label} has no leader: {e}\n{}", cluster.log_tails(20));
    }
    let channel = Channel::from_shared(format!("http://{}", endpoints[0]))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    Side {
        label,
        cluster,
        channel,
    }
}

/// Request and response bodies as raw protobuf bytes, to call any path with any payload.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Calls `path` with `body`; the error's code and message, or `None` on success.
async fn call_raw(side: &Side, path: &'static str, body: Vec<u8>) -> Option<(Code, String)> {
    let mut grpc = tonic::client::Grpc::new(side.channel.clone());
    grpc.ready().await.expect("channel ready");
    let answer: Result<tonic::Response<Vec<u8>>, Status> = grpc
        .unary(
            tonic::Request::new(body),
            PathAndQuery::from_static(path),
            Raw,
        )
        .await;
    answer.err().map(|s| (s.code(), s.message().to_string()))
}

/// An HTTP/1.1 request on a fresh connection; the status line and the body.
fn http1(addr: SocketAddr, request: &str, body: &[u8]) -> (String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    stream.write_all(body).expect("write body");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("read to the connection's close");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, body.to_string())
}

async fn check_all(etcd: &Side, ours: &Side) {
    for side in [etcd, ours] {
        let label = side.label;

        // Over max-request-bytes (1.5 MiB) + 512 KiB of gRPC allowance: refused by the
        // gRPC layer before any handler runs. 2,200,010 is the message's length.
        let mut kv = KvClient::new(side.channel.clone());
        let big = PutRequest {
            key: Bytes::from_static(b"big"),
            value: Bytes::from(vec![b'x'; 2_200_000]),
            ..Default::default()
        };
        assert_eq!(big.encoded_len(), 2_200_010);
        let e = kv.put(big).await.expect_err("too large");
        assert_eq!(
            (e.code(), e.message()),
            (
                Code::ResourceExhausted,
                "grpc: received message larger than max (2200010 vs. 2097152)"
            ),
            "{label}: a message over the receive limit"
        );
        // Just over max-request-bytes but within the allowance: etcd's own check.
        let e = kv
            .put(PutRequest {
                key: Bytes::from_static(b"big"),
                value: Bytes::from(vec![b'x'; 1_600_000]),
                ..Default::default()
            })
            .await
            .expect_err("too large");
        assert_eq!(
            (e.code(), e.message()),
            (Code::InvalidArgument, "etcdserver: request is too large"),
            "{label}: a request over --max-request-bytes"
        );

        // Methods and services nobody serves.
        let range = RangeRequest {
            key: Bytes::from_static(b"a"),
            ..Default::default()
        }
        .encode_to_vec();
        // etcd 3.7's streaming List: Kubernetes falls back to Range on UNIMPLEMENTED (and
        // only on that code). etcd 3.4 does not know the method; raftkv's API has it and
        // answers "Not yet implemented", so only the code is compared.
        let stream_list = call_raw(side, "/etcdserverpb.KV/RangeStream", Vec::new()).await;
        assert_eq!(
            stream_list.map(|(code, _)| code),
            Some(Code::Unimplemented),
            "{label}: RangeStream"
        );
        let cases: [(&'static str, Code, &str); 5] = [
            (
                "/etcdserverpb.KV/Nope",
                Code::Unimplemented,
                "unknown method Nope for service etcdserverpb.KV",
            ),
            (
                "/etcdserverpb.Watch/Nope",
                Code::Unimplemented,
                "unknown method Nope for service etcdserverpb.Watch",
            ),
            (
                "/foo.Bar/Baz",
                Code::Unimplemented,
                "unknown service foo.Bar",
            ),
            (
                "/etcdserverpb.Nope/Range",
                Code::Unimplemented,
                "unknown service etcdserverpb.Nope",
            ),
            (
                "/etcdserverpb.KV",
                Code::ResourceExhausted,
                "malformed method name: \"/etcdserverpb.KV\"",
            ),
        ];
        for (path, code, message) in cases {
            assert_eq!(
                call_raw(side, path, range.clone()).await,
                Some((code, message.to_string())),
                "{label}: {path}"
            );
        }
        // A known method still answers through the same raw path.
        assert_eq!(
            call_raw(side, "/etcdserverpb.KV/Range", range.clone()).await,
            None,
            "{label}: Range"
        );

        // A gRPC method path over HTTP/1.1 is not gRPC: 404 from the HTTP endpoints.
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(range.len() as u32).to_be_bytes());
        framed.extend_from_slice(&range);
        let request = format!(
            "POST /etcdserverpb.KV/Range HTTP/1.1\r\nHost: {}\r\nContent-Type: application/grpc\r\n\
             TE: trailers\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            side.addr(),
            framed.len()
        );
        assert_eq!(
            http1(side.addr(), &request, &framed),
            (
                "HTTP/1.1 404 Not Found".to_string(),
                "404 page not found\n".to_string()
            ),
            "{label}: gRPC path over HTTP/1.1"
        );
        // The HTTP endpoints themselves still answer over HTTP/1.1.
        let (status, _) = http1(
            side.addr(),
            "GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            &[],
        );
        assert_eq!(status, "HTTP/1.1 200 OK", "{label}: /version over HTTP/1.1");

        // A sort order outside the enum: no sort at all (key order, not by value).
        for (key, value) in [("s1", "c"), ("s2", "b"), ("s3", "a")] {
            kv.put(PutRequest {
                key: Bytes::from(key.as_bytes().to_vec()),
                value: Bytes::from(value.as_bytes().to_vec()),
                ..Default::default()
            })
            .await
            .expect("put");
        }
        for sort_order in [5, -1] {
            let resp = kv
                .range(RangeRequest {
                    key: Bytes::from_static(b"s1"),
                    range_end: Bytes::from_static(b"s4"),
                    sort_order,
                    sort_target: SortTarget::Value as i32,
                    limit: 2,
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("{label}: sort_order {sort_order}: {e}"))
                .into_inner();
            let keys: Vec<&[u8]> = resp.kvs.iter().map(|kv| &kv.key[..]).collect();
            assert_eq!(
                (keys, resp.more, resp.count),
                (vec![&b"s1"[..], &b"s2"[..]], true, 3),
                "{label}: sort_order {sort_order}"
            );
        }
    }
}

#[test]
fn the_client_port_answers_its_edge_cases_like_etcd() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _context = runtime.enter();
    let ports = low_ports(4);
    runtime.block_on(async {
        let etcd = start(
            "etcd",
            MemberProgram::Etcd(common::etcd_binary()),
            (ports[0], ports[1]),
        )
        .await;
        let ours = start("raftkv", common::raftkv_program(), (ports[2], ports[3])).await;
        let limit = Duration::from_secs(120);
        if tokio::time::timeout(limit, check_all(&etcd, &ours))
            .await
            .is_err()
        {
            panic!(
                "the checks did not finish within {limit:?}\n{}\n{}",
                etcd.cluster.log_tails(20),
                ours.cluster.log_tails(20)
            );
        }
    });
}
