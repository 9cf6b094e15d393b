//! A pre-claimed member can still join (issue 16, peer hardening without TLS): an outsider
//! dials the running members first, posing as the third member that has not started yet,
//! and is recorded in its place; the real member is then refused as "lost its data dir" and
//! stops. The operator runs `raftkv peer admit <id> --data-dir <its data dir>`; the
//! outsider's connections are cut at their next frame, the real member starts again and
//! joins, and the three agree on a leader, commit through the newcomer and hold the same
//! data. Members run plain `raftkv server` processes on free loopback ports.
//!
//! Also: an admission reaches a member that was down when it was applied, through the
//! snapshot it catches up from; and a join question (answered before any handshake) tells
//! an asker from another address nothing about the cluster.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use raftkv_client::local_cluster::{free_loopback_ports, ClusterSpec, LocalCluster};
use server::transport::codec::{self, Frame, Hello, HelloReply};

/// A connection to the peer port `peer_port` on 127.0.0.1, from local address `from`
/// (any address of 127/8 is this host's: Linux routes all of it to `lo`).
fn dial(peer_port: u16, from: IpAddr) -> TcpStream {
    let runtime = common::runtime();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind((from, 0).into())
            .expect("bind the source address");
        socket
            .connect(([127, 0, 0, 1], peer_port).into())
            .await
            .expect("dial the peer port")
            .into_std()
            .unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Send `frame` on `stream` and read the one frame that answers it.
fn exchange(stream: &mut TcpStream, frame: &Frame) -> Frame {
    let mut out = BytesMut::new();
    codec::encode(frame, &mut out);
    stream.write_all(&out).unwrap();
    let mut buf = BytesMut::new();
    loop {
        if let Some(body) = codec::split_frame(&mut buf).unwrap() {
            return codec::decode(body).unwrap();
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).expect("read the answer");
        assert!(n > 0, "the member hung up before answering");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// An outsider's peer connection to `peer_port` that sent a Hello claiming to be member
/// `from` with `incarnation`, and the member's answer.
fn hello(
    peer_port: u16,
    cluster_id: u64,
    from: u64,
    to: u64,
    incarnation: u64,
) -> (TcpStream, Frame) {
    let mut stream = dial(peer_port, IpAddr::from([127, 0, 0, 1]));
    let reply = exchange(
        &mut stream,
        &Frame::Hello(Hello {
            version: codec::PROTOCOL_VERSION,
            cluster_id,
            from,
            to,
            incarnation,
            name: String::new(),
            client_urls: Vec::new(),
        }),
    );
    (stream, reply)
}

/// A join question for `peer_urls`, asked of the member at `peer_port` from address
/// `from`, before any handshake, and its answer.
fn ask_join(peer_port: u16, from: IpAddr, peer_urls: &[String]) -> Result<(u64, u64), String> {
    let mut stream = dial(peer_port, from);
    match exchange(
        &mut stream,
        &Frame::JoinQuery {
            peer_urls: peer_urls.to_vec(),
        },
    ) {
        Frame::JoinAnswer { result } => result.map(|f| (f.cluster_id, f.member_id)),
        other => panic!("a join question answered with {other:?}"),
    }
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

/// The cluster's id and its founders' member ids, in the cluster's member order (the IDs
/// are public: anyone who reaches a client port can list them).
async fn cluster_ids(cluster: &LocalCluster) -> (u64, Vec<u64>) {
    let mut c = etcd_client::Client::connect([cluster.member(0).endpoint()], None)
        .await
        .unwrap();
    let list = c.member_list().await.unwrap();
    let ids = (0..cluster.len())
        .map(|i| {
            let url = cluster.member(i).peer_url();
            list.members()
                .iter()
                .find(|m| m.peer_urls().contains(&url))
                .map(|m| m.id())
                .unwrap_or_else(|| panic!("no member with peer URL {url}"))
        })
        .collect();
    (list.header().unwrap().cluster_id(), ids)
}

/// `member add --learner` of `peer_url` through `endpoint` (retried while the cluster is
/// not ready for it); returns the new member's id once `endpoint`'s member lists it.
async fn add_learner(endpoint: &str, peer_url: &str) -> u64 {
    let mut c = etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let options = etcd_client::MemberAddOptions::new().with_is_learner();
        match c.member_add([peer_url], Some(options)).await {
            Ok(r) => return r.member().expect("the added member").id(),
            Err(e) if Instant::now() < deadline => {
                eprintln!("member add: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("member add {peer_url}: {e}"),
        }
    }
}

/// Waits until the member at `endpoint` lists member `id` (it applied its addition).
async fn listed_at(endpoint: &str, id: u64) {
    let mut c = etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c
        .member_list()
        .await
        .is_ok_and(|l| l.members().iter().any(|m| m.id() == id))
    {
        assert!(Instant::now() < deadline, "{endpoint} never listed {id:x}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A log line without its terminal colour codes (`ESC [ ... m`), so `field=value` reads
/// as written.
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
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
    let (cluster_id, ids) = runtime.block_on(cluster_ids(&cluster));
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

/// An admission reaches a member that was down when it was applied and that catches up from
/// a snapshot taken after it (the entry itself compacted away): the outsider pre-claims a
/// learner that has not started at member 2 only; member 2 stops; the operator admits the
/// learner's incarnation through the two others; writes make them snapshot past it;
/// member 2 starts, installs the leader's snapshot, and from then on refuses the outsider's
/// claim and accepts the admitted incarnation.
#[test]
fn an_admission_reaches_a_member_that_catches_up_from_a_snapshot() {
    let mut spec = ClusterSpec::new(common::raftkv_program(), "adms", 3);
    spec.extra_args = vec!["--snapshot-count=10".into()];
    let mut cluster = LocalCluster::start(spec).expect("cluster");
    let endpoints = cluster.endpoints();
    let runtime = common::runtime();
    runtime.block_on(common::statuses(&endpoints));
    let (cluster_id, ids) = runtime.block_on(cluster_ids(&cluster));

    // A learner is added and never started: its id is in the member list.
    let port = free_loopback_ports(1).expect("port")[0];
    let learner = runtime.block_on(async {
        let id = add_learner(&endpoints[0], &format!("http://127.0.0.1:{port}")).await;
        listed_at(&endpoints[2], id).await;
        id
    });
    // The outsider claims it at member 2, which records the forged incarnation.
    let forged = 0x0bad_0bad_0bad_0badu64;
    let c_port = cluster.member(2).peer_port;
    let outsider = claim(c_port, cluster_id, learner, ids[2], forged);
    drop(outsider);
    cluster
        .stop_member(2, Duration::from_secs(10))
        .expect("stop member 2");

    // The operator admits the learner's real incarnation through the two running members.
    let real = 0x600d_f00d_600d_f00du64;
    let ep01 = format!("--endpoints={},{}", endpoints[0], endpoints[1]);
    let admitted = raftkv(&[
        "peer",
        "admit",
        &format!("{learner:x}"),
        "--incarnation",
        &format!("{real:x}"),
        &ep01,
    ]);
    assert!(
        admitted.status.success(),
        "raftkv peer admit: {}",
        String::from_utf8_lossy(&admitted.stderr)
    );
    // Its log index is at most the index the members report right after it.
    let admitted_by = runtime.block_on(async {
        let mut c = etcd_client::Client::connect([&endpoints[0]], None)
            .await
            .unwrap();
        c.status().await.unwrap().raft_index()
    });
    // Enough writes for several snapshots (every 10 entries) past the admission.
    runtime.block_on(async {
        let mut c = common::connect_answering(&endpoints[0]).await;
        for i in 0..60 {
            c.put(format!("k{i}"), "v", None).await.unwrap();
        }
    });

    cluster.start_member(2).unwrap();
    runtime.block_on(common::statuses(&endpoints));
    // It caught up from a snapshot taken after the admission, so it never applied the entry.
    let log_path = cluster.member(2).log_path.clone();
    let installed = common::poll_until("snapshot install", Duration::from_secs(30), || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        log.lines()
            .map(without_colours)
            .filter(|l| l.contains("installing snapshot from the leader"))
            .filter_map(|l| {
                let at = l.find("index=")? + "index=".len();
                let digits: String = l[at..].chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u64>().ok()
            })
            .max()
            .ok_or_else(|| "no snapshot installed yet".to_string())
    });
    assert!(
        installed > admitted_by,
        "member 2 installed a snapshot at {installed}, not past the admission (<= {admitted_by})"
    );

    // Member 2 now refuses the outsider's claim and accepts the admitted incarnation.
    let (_refused, reply) = hello(c_port, cluster_id, learner, ids[2], forged);
    assert!(
        matches!(reply, Frame::HelloReply(HelloReply::Refused { .. })),
        "member 2 still takes the outsider for the learner: {reply:?}"
    );
    let (_accepted, reply) = hello(c_port, cluster_id, learner, ids[2], real);
    assert!(
        matches!(reply, Frame::HelloReply(HelloReply::Accepted { .. })),
        "member 2 refuses the admitted incarnation: {reply:?}"
    );
}

/// A join question is answered before any handshake, so without peer mTLS it is answered
/// only for a member added with `member add`, asked from an address its peer URL's host
/// resolves to; any other asker learns nothing about the cluster: no cluster id, member
/// id or peer URL in the refusal.
#[test]
fn a_join_question_from_elsewhere_learns_nothing() {
    let spec = ClusterSpec::new(common::raftkv_program(), "joinq", 3);
    let cluster = LocalCluster::start(spec).expect("cluster");
    let endpoints = cluster.endpoints();
    let runtime = common::runtime();
    runtime.block_on(common::statuses(&endpoints));
    let (cluster_id, ids) = runtime.block_on(cluster_ids(&cluster));
    // A new member, to be started on 127.0.0.2.
    let port = free_loopback_ports(1).expect("port")[0];
    let new_url = format!("http://127.0.0.2:{port}");
    let new_id = runtime.block_on(async {
        let id = add_learner(&endpoints[0], &new_url).await;
        listed_at(&endpoints[0], id).await;
        id
    });
    let peer_port = cluster.member(0).peer_port;
    let outsider: IpAddr = [127, 0, 0, 9].into();
    let founder_url = cluster.member(1).peer_url();
    let says_nothing = |refusal: &str| {
        for id in ids.iter().chain([&cluster_id, &new_id]) {
            assert!(!refusal.contains(&format!("{id:x}")), "{refusal}");
        }
        assert!(!refusal.contains("127.0.0."), "{refusal}");
        for m in cluster.members() {
            assert!(!refusal.contains(&m.peer_port.to_string()), "{refusal}");
        }
    };

    // From another host, for the new member's URL: refused, and told nothing.
    let refusal = ask_join(peer_port, outsider, std::slice::from_ref(&new_url))
        .expect_err("an outsider's join question was answered");
    says_nothing(&refusal);
    // For an unknown URL (the outsider's own): the same.
    let own = format!("http://127.0.0.9:{port}");
    says_nothing(&ask_join(peer_port, outsider, &[own]).expect_err("answered a stranger"));
    // From a founder's own host, for that founder's URL: founders never join.
    let from_founder = ask_join(peer_port, [127, 0, 0, 1].into(), &[founder_url])
        .expect_err("a founder's URL was answered");
    says_nothing(&from_founder);

    // From the new member's host: answered, with who it is.
    let answer = ask_join(peer_port, [127, 0, 0, 2].into(), &[new_url]);
    assert_eq!(answer, Ok((cluster_id, new_id)));
}
