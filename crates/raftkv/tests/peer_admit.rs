//! A pre-claimed member can still join (issue 16, peer hardening without TLS): an outsider
//! dials the running members first, posing as the third member that has not started yet,
//! and is recorded in its place; the real member is then refused as "lost its data dir" and
//! stops. The operator runs `raftkv peer admit <id> --data-dir <its data dir>`; the
//! outsider's connections are cut at their next frame, the real member starts again and
//! joins, and the three agree on a leader, commit through the newcomer and hold the same
//! data. Members run plain `raftkv server` processes on free loopback ports.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use raftkv_client::local_cluster::{ClusterSpec, LocalCluster};
use server::transport::codec::{self, Frame, Hello, HelloReply};

/// An outsider's peer connection to `peer_port` that sent a Hello claiming to be member
/// `from` with `incarnation`, and the member's answer.
fn hello(
    peer_port: u16,
    cluster_id: u64,
    from: u64,
    to: u64,
    incarnation: u64,
) -> (TcpStream, Frame) {
    let mut stream = TcpStream::connect(("127.0.0.1", peer_port)).expect("dial the peer port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = BytesMut::new();
    codec::encode(
        &Frame::Hello(Hello {
            version: codec::PROTOCOL_VERSION,
            cluster_id,
            from,
            to,
            incarnation,
            name: String::new(),
            client_urls: Vec::new(),
        }),
        &mut out,
    );
    stream.write_all(&out).unwrap();
    let mut buf = BytesMut::new();
    let reply = loop {
        if let Some(body) = codec::split_frame(&mut buf).unwrap() {
            break codec::decode(body).unwrap();
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).expect("read the hello reply");
        assert!(n > 0, "the member hung up before answering the hello");
        buf.extend_from_slice(&chunk[..n]);
    };
    (stream, reply)
}

/// An outsider's peer connection to `peer_port`, claiming to be member `from`.
fn claim(peer_port: u16, cluster_id: u64, from: u64, to: u64, incarnation: u64) -> TcpStream {
    let (stream, reply) = hello(peer_port, cluster_id, from, to, incarnation);
    assert!(
        matches!(reply, Frame::HelloReply(HelloReply::Accepted { .. })),
        "the outsider's first claim is accepted (that is the weakness): {reply:?}"
    );
    stream
}

/// Whether the member closed `stream` once it carried a frame (EOF or reset within `limit`).
fn closed_at_next_frame(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut out = BytesMut::new();
    codec::encode(&Frame::Ping { sent: 1 }, &mut out);
    if stream.write_all(&out).is_err() {
        return true;
    }
    // Nothing comes back on a served connection (a Ping is answered on the member's own
    // connection to the peer), so only an end of stream within the deadline counts.
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut chunk = [0u8; 256];
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return true,
            Ok(_) => return false,
        }
    }
    false
}

fn raftkv(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_raftkv"));
    cmd.args(args);
    common::run_with_timeout(cmd, None, Duration::from_secs(30))
}

#[test]
fn a_pre_claimed_member_joins_after_the_operator_admits_it() {
    let spec = ClusterSpec::new(common::raftkv_program(), "adm", 3);
    let mut cluster = LocalCluster::create(spec).expect("cluster");
    cluster.start_member(0).unwrap();
    cluster.start_member(1).unwrap();
    let endpoints = cluster.endpoints();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(common::statuses(&endpoints[..2]));

    // The IDs are public: the member list names the one that has not started yet.
    let (cluster_id, ids) = runtime.block_on(async {
        let mut c = etcd_client::Client::connect([&endpoints[0]], None)
            .await
            .unwrap();
        let list = c.member_list().await.unwrap();
        let id_of = |i: usize| {
            let url = cluster.member(i).peer_url();
            list.members()
                .iter()
                .find(|m| m.peer_urls().contains(&url))
                .map(|m| m.id())
                .unwrap_or_else(|| panic!("no member with peer URL {url}"))
        };
        (
            list.header().unwrap().cluster_id(),
            [id_of(0), id_of(1), id_of(2)],
        )
    });

    // The outsider dials both running members first as member 2.
    let forged = 0x0bad_0bad_0bad_0badu64;
    let mut outsiders: Vec<TcpStream> = (0..2)
        .map(|i| {
            claim(
                cluster.member(i).peer_port,
                cluster_id,
                ids[2],
                ids[i],
                forged,
            )
        })
        .collect();

    // Control: until the operator acts, the outsider's connection is served.
    assert!(
        !closed_at_next_frame(&mut outsiders[0], Duration::from_secs(2)),
        "the outsider's connection should still be open before the admission"
    );

    // The real member 2 starts, is taken for a wiped member, and stops.
    cluster.start_member(2).unwrap();
    let status = cluster
        .wait_for_exit(2, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!status.success(), "the refused member must stop");
    let log = std::fs::read_to_string(&cluster.member(2).log_path).unwrap();
    assert!(log.contains("lost its data dir"), "{log}");

    // Only a member of the cluster can be admitted, and only with a real incarnation.
    let ep01 = format!("--endpoints={},{}", endpoints[0], endpoints[1]);
    let unknown = raftkv(&["peer", "admit", "dead", "--incarnation", "1f", &ep01]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("etcdserver: member not found"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let zero = raftkv(&[
        "peer",
        "admit",
        &format!("{:x}", ids[2]),
        "--incarnation",
        "0",
        &ep01,
    ]);
    assert!(!zero.status.success());

    // The operator admits the real member with the incarnation from its own data dir.
    let data_dir = cluster.member(2).data_dir.to_string_lossy().into_owned();
    let admitted = raftkv(&[
        "peer",
        "admit",
        &format!("{:x}", ids[2]),
        "--data-dir",
        &data_dir,
        &ep01,
    ]);
    assert!(
        admitted.status.success(),
        "raftkv peer admit: {}",
        String::from_utf8_lossy(&admitted.stderr)
    );
    assert!(String::from_utf8_lossy(&admitted.stdout).contains("admitted"));

    // Both members applied it (the command answered after its own member applied; the other
    // may still be applying): the outsider's connections end at their next frame.
    for (i, stream) in outsiders.iter_mut().enumerate() {
        assert!(
            closed_at_next_frame(stream, Duration::from_secs(10)),
            "member {i} still serves the outsider's connection after the admission"
        );
    }
    // And a new claim with the forged incarnation is refused.
    let (_retry, reply) = hello(
        cluster.member(0).peer_port,
        cluster_id,
        ids[2],
        ids[0],
        forged,
    );
    assert!(
        matches!(reply, Frame::HelloReply(HelloReply::Refused { .. })),
        "{reply:?}"
    );

    // The real member starts again and joins: three members, one leader, writes through it.
    cluster.start_member(2).unwrap();
    let st = runtime.block_on(common::statuses(&endpoints));
    assert_eq!(st.len(), 3);
    runtime.block_on(async {
        let mut c = common::connect_answering(&endpoints[2]).await;
        c.put("after-admission", "joined", None).await.unwrap();
        for ep in &endpoints {
            let mut r = etcd_client::Client::connect([ep], None).await.unwrap();
            let got = r.get("after-admission", None).await.unwrap();
            assert_eq!(got.kvs()[0].value_str().unwrap(), "joined", "read at {ep}");
        }
    });
    assert!(
        cluster.member(2).is_running(),
        "the admitted member keeps running"
    );
}
