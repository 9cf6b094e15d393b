//! The JSON gateway (`POST /v3/...`) next to a real etcd 3.4's: one single-member etcd and
//! one single-member raftkv get the same sequence of HTTP/1.1 requests (KV, txn, compaction,
//! leases with the streamed keep-alive, a streamed watch, auth with the `Authorization`
//! header, and the error answers: bad JSON, bad base64, wrong method, unknown path); the
//! status codes, content types and JSON bodies must be equal once the member identity in
//! the headers (cluster and member ids, raft term) and auth tokens are set aside.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use raftkv_client::local_cluster::{ClusterSpec, LocalCluster, MemberProgram};
use serde_json::Value;

/// Free loopback ports from this test's range (25000-25999).
fn ports(count: usize) -> Vec<u16> {
    let start = 25_000 + (std::process::id() % 40) as u16 * 20;
    let found: Vec<u16> = (start..26_000)
        .chain(25_000..start)
        .filter(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        .take(count)
        .collect();
    assert_eq!(found.len(), count, "free ports in 25000-25999");
    found
}

/// One HTTP answer: status, content type and the (de-chunked) body.
#[derive(Debug, PartialEq)]
struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Sends one HTTP/1.1 request on a fresh connection and reads until `done` says the body
/// read so far is enough (or the server closes).
fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
    done: impl Fn(&str) -> bool,
) -> Reply {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write");
    s.write_all(body.as_bytes()).expect("write body");
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(reply) = parse(&raw) {
            if done(&reply.body) {
                return reply;
            }
        }
        assert!(Instant::now() < deadline, "no full answer to {path}");
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // Go resets a connection whose request body it did not read; what came before
            // the reset is the answer.
            Err(_) if parse(&raw).is_some() => break,
            Err(e) => panic!(
                "reading the answer to {path}: {e}; so far {:?}",
                String::from_utf8_lossy(&raw)
            ),
        }
    }
    parse(&raw)
        .unwrap_or_else(|| panic!("no answer to {path}: {:?}", String::from_utf8_lossy(&raw)))
}

/// Status, content type and body of what has arrived, de-chunking a chunked body.
fn parse(raw: &[u8]) -> Option<Reply> {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let body = if header("transfer-encoding") == "chunked" {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
                break;
            };
            if size == 0 || after.len() < size {
                break;
            }
            out.push_str(&after[..size]);
            rest = after[size..].trim_start_matches("\r\n");
        }
        out
    } else {
        rest.to_string()
    };
    Some(Reply {
        status,
        content_type: header("content-type"),
        body,
    })
}

/// Member identity and secrets differ between the two servers; everything else must not.
fn normalise(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for key in ["cluster_id", "member_id", "raft_term"] {
                map.remove(key);
            }
            if let Some(t) = map.get_mut("token") {
                *t = Value::String("<token>".into());
            }
            map.values_mut().for_each(normalise);
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

struct Side {
    label: &'static str,
    _cluster: LocalCluster,
    addr: SocketAddr,
    token: Option<String>,
}

impl Side {
    fn start(label: &'static str, program: MemberProgram, ports: (u16, u16)) -> Side {
        let mut spec = ClusterSpec::new(program, &format!("gw-{label}"), 1);
        spec.ports = Some(vec![ports]);
        let cluster = LocalCluster::start(spec).expect("cannot start the member");
        let addr: SocketAddr = cluster.member(0).endpoint().parse().expect("endpoint");
        let side = Side {
            label,
            _cluster: cluster,
            addr,
            token: None,
        };
        common::poll_until(
            &format!("{label} answers /v3/kv/range"),
            Duration::from_secs(30),
            || {
                TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                    .map_err(|e| format!("connect: {e}"))?;
                let r = std::panic::catch_unwind(|| {
                    exchange(
                        addr,
                        "POST",
                        "/v3/kv/range",
                        r#"{"key":"AA=="}"#,
                        None,
                        |_| false,
                    )
                })
                .map_err(|_| "no answer".to_string())?;
                (r.status == 200).then_some(()).ok_or(format!("{r:?}"))
            },
        );
        side
    }

    fn post(&self, path: &str, body: &str) -> Reply {
        exchange(self.addr, "POST", path, body, self.token.as_deref(), |_| {
            false
        })
    }

    /// A streaming call, read until `lines` complete JSON lines have arrived.
    fn post_lines(&self, path: &str, body: &str, lines: usize) -> Reply {
        exchange(self.addr, "POST", path, body, self.token.as_deref(), |b| {
            b.matches('\n').count() >= lines
        })
    }
}

/// A normalised answer: what is compared between the two servers.
fn seen(r: &Reply) -> (u16, String, Value) {
    let mut body = if r.content_type == "application/json" {
        // Streams are one object per line.
        let values: Vec<Value> = r
            .body
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if values.len() == 1 {
            values.into_iter().next().unwrap()
        } else {
            Value::Array(values)
        }
    } else {
        Value::String(r.body.clone())
    };
    normalise(&mut body);
    (r.status, r.content_type.clone(), body)
}

/// Sends the same request to both and asserts equal answers; returns etcd's.
fn same(etcd: &Side, ours: &Side, what: &str, path: &str, body: &str) -> Reply {
    let a = etcd.post(path, body);
    let b = ours.post(path, body);
    assert_eq!(
        seen(&a),
        seen(&b),
        "{what}: {path} {body}\netcd: {a:?}\nraftkv: {b:?}"
    );
    a
}

#[test]
fn json_gateway_answers_as_etcd_does() {
    let p = ports(4);
    let etcd = Side::start(
        "etcd",
        MemberProgram::Etcd(common::etcd_binary()),
        (p[0], p[1]),
    );
    let mut etcd = etcd;
    let mut ours = Side::start("raftkv", common::raftkv_program(), (p[2], p[3]));

    // KV. "foo" = Zm9v, "bar" = YmFy, "fop" = Zm9w, "<&>" = PCY+.
    let r = same(
        &etcd,
        &ours,
        "put",
        "/v3/kv/put",
        r#"{"key":"Zm9v","value":"YmFy"}"#,
    );
    assert_eq!(r.status, 200);
    same(
        &etcd,
        &ours,
        "put prev_kv",
        "/v3/kv/put",
        r#"{"key":"Zm9v","value":"PCY+","prev_kv":true}"#,
    );
    let r = same(&etcd, &ours, "range", "/v3/kv/range", r#"{"key":"Zm9v"}"#);
    assert_eq!(r.json()["kvs"][0]["version"], "2", "int64 as strings");
    same(
        &etcd,
        &ours,
        "range prefix",
        "/v3/kv/range",
        r#"{"key":"Zm8=","range_end":"Zm9w","count_only":true}"#,
    );
    same(
        &etcd,
        &ours,
        "v3beta",
        "/v3beta/kv/range",
        r#"{"key":"Zm9v","keys_only":true}"#,
    );
    same(
        &etcd,
        &ours,
        "numbers for int64",
        "/v3/kv/range",
        r#"{"key":"Zm9v","revision":2,"limit":"1"}"#,
    );
    same(
        &etcd,
        &ours,
        "unknown field",
        "/v3/kv/range",
        r#"{"key":"Zm9v","bogus":1}"#,
    );
    same(
        &etcd,
        &ours,
        "txn",
        "/v3/kv/txn",
        r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VERSION","version":"2"}],"success":[{"request_put":{"key":"Zm9w","value":"YmFy"}},{"request_range":{"key":"Zm9v"}}],"failure":[{"request_delete_range":{"key":"Zm9v"}}]}"#,
    );
    same(
        &etcd,
        &ours,
        "txn failing",
        "/v3/kv/txn",
        r#"{"compare":[{"key":"Zm9v","target":"VALUE","value":"eA=="}],"failure":[{"request_range":{"key":"Zm9w"}}]}"#,
    );
    same(
        &etcd,
        &ours,
        "Go field names",
        "/v3/kv/txn",
        r#"{"compare":[{"result":0,"target":1,"key":"Zm9v","TargetUnion":null}],"success":[{"Request":{"RequestPut":{"key":"Zm9v","value":"YmFy"}}}]}"#,
    );
    same(
        &etcd,
        &ours,
        "nested txn",
        "/v3/kv/txn",
        r#"{"success":[{"request_txn":{"success":[{"request_range":{"key":"Zm9v"}}]}}]}"#,
    );
    same(
        &etcd,
        &ours,
        "delete",
        "/v3/kv/deleterange",
        r#"{"key":"Zm9w","prev_kv":true}"#,
    );

    // Errors.
    same(&etcd, &ours, "no key", "/v3/kv/range", "{}");
    same(&etcd, &ours, "empty body", "/v3/kv/put", "");
    same(
        &etcd,
        &ours,
        "bad base64",
        "/v3/kv/range",
        r#"{"key":"!!"}"#,
    );
    same(
        &etcd,
        &ours,
        "future revision",
        "/v3/kv/range",
        r#"{"key":"Zm9v","revision":"100"}"#,
    );
    let r = same(&etcd, &ours, "unknown path", "/v3/kv/nope", "{}");
    assert_eq!(r.status, 404);
    let a = exchange(etcd.addr, "GET", "/v3/kv/range", "", None, |_| false);
    let b = exchange(ours.addr, "GET", "/v3/kv/range", "", None, |_| false);
    assert_eq!(
        (a.status, &a.body),
        (405, &"Method Not Allowed\n".to_string())
    );
    assert_eq!(seen(&a), seen(&b), "wrong method");
    let a = etcd.post("/v3/kv/range", "xx");
    let b = ours.post("/v3/kv/range", "xx");
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (b.status, b.json()["code"].clone()),
        "bad JSON: {a:?} {b:?}"
    );

    // Compaction.
    same(
        &etcd,
        &ours,
        "compact",
        "/v3/kv/compaction",
        r#"{"revision":"3","physical":true}"#,
    );
    same(
        &etcd,
        &ours,
        "compacted",
        "/v3/kv/range",
        r#"{"key":"Zm9v","revision":"2"}"#,
    );

    // Watch: created, then the history from revision 3 on.
    same(
        &etcd,
        &ours,
        "put for watch",
        "/v3/kv/put",
        r#"{"key":"Zm9vMg==","value":"eA=="}"#,
    );
    let body = r#"{"create_request":{"key":"Zm9v","range_end":"Zm9w","start_revision":"3"}}"#;
    let a = etcd.post_lines("/v3/watch", body, 2);
    let b = ours.post_lines("/v3/watch", body, 2);
    assert_eq!(seen(&a), seen(&b), "watch\netcd: {a:?}\nraftkv: {b:?}");
    assert!(a.body.contains("\"events\""), "{a:?}");
    let body = r#"{"create_request":{"key":"Zm9v","start_revision":"2"}}"#;
    let a = etcd.post_lines("/v3/watch", body, 2);
    let b = ours.post_lines("/v3/watch", body, 2);
    assert_eq!(
        seen(&a),
        seen(&b),
        "watch from a compacted revision\netcd: {a:?}\nraftkv: {b:?}"
    );

    // Leases, the keep-alive streamed.
    same(
        &etcd,
        &ours,
        "grant",
        "/v3/lease/grant",
        r#"{"ID":"4660","TTL":"60"}"#,
    );
    same(
        &etcd,
        &ours,
        "put with lease",
        "/v3/kv/put",
        r#"{"key":"bA==","value":"eA==","lease":"4660"}"#,
    );
    let a = etcd.post_lines("/v3/lease/keepalive", r#"{"ID":"4660"}"#, 1);
    let b = ours.post_lines("/v3/lease/keepalive", r#"{"ID":"4660"}"#, 1);
    assert_eq!(seen(&a), seen(&b), "keepalive\netcd: {a:?}\nraftkv: {b:?}");
    same(
        &etcd,
        &ours,
        "ttl",
        "/v3/kv/lease/timetolive",
        r#"{"ID":"4660","keys":true}"#,
    );
    same(&etcd, &ours, "leases", "/v3/lease/leases", "{}");
    same(
        &etcd,
        &ours,
        "revoke",
        "/v3/lease/revoke",
        r#"{"ID":"4660"}"#,
    );
    same(
        &etcd,
        &ours,
        "revoke again",
        "/v3/kv/lease/revoke",
        r#"{"ID":"4660"}"#,
    );
    same(
        &etcd,
        &ours,
        "key gone",
        "/v3/kv/range",
        r#"{"key":"bA=="}"#,
    );

    // Auth, with the token in the Authorization header.
    same(
        &etcd,
        &ours,
        "user add",
        "/v3/auth/user/add",
        r#"{"name":"root","password":"pw"}"#,
    );
    same(
        &etcd,
        &ours,
        "role add",
        "/v3/auth/role/add",
        r#"{"name":"root"}"#,
    );
    same(
        &etcd,
        &ours,
        "grant role",
        "/v3/auth/user/grant",
        r#"{"user":"root","role":"root"}"#,
    );
    same(
        &etcd,
        &ours,
        "user get",
        "/v3/auth/user/get",
        r#"{"name":"root"}"#,
    );
    same(
        &etcd,
        &ours,
        "no such user",
        "/v3/auth/user/get",
        r#"{"name":"<nobody>"}"#,
    );
    same(&etcd, &ours, "enable", "/v3/auth/enable", "{}");
    same(
        &etcd,
        &ours,
        "no token",
        "/v3/kv/range",
        r#"{"key":"Zm9v"}"#,
    );
    same(
        &etcd,
        &ours,
        "wrong password",
        "/v3/auth/authenticate",
        r#"{"name":"root","password":"no"}"#,
    );
    for side in [&mut etcd, &mut ours] {
        let r = side.post(
            "/v3/auth/authenticate",
            r#"{"name":"root","password":"pw"}"#,
        );
        assert_eq!(r.status, 200, "{}: {r:?}", side.label);
        side.token = Some(r.json()["token"].as_str().expect("token").to_string());
    }
    same(
        &etcd,
        &ours,
        "with token",
        "/v3/kv/range",
        r#"{"key":"Zm9v"}"#,
    );
    same(&etcd, &ours, "role list", "/v3/auth/role/list", "{}");
    let tokens = (etcd.token.take(), ours.token.take());
    etcd.token = Some("bogus.token".into());
    ours.token = Some("bogus.token".into());
    same(
        &etcd,
        &ours,
        "bad token",
        "/v3/kv/range",
        r#"{"key":"Zm9v"}"#,
    );
    (etcd.token, ours.token) = tokens;
    same(&etcd, &ours, "disable", "/v3/auth/disable", "{}");
    // Disabling auth invalidated the token, and a token is still checked while auth is
    // off: refused (401), as etcd 3.4 does; without one the same request goes through.
    let r = same(
        &etcd,
        &ours,
        "token after disable",
        "/v3/kv/range",
        r#"{"key":"Zm9v"}"#,
    );
    assert_eq!(r.status, 401, "{r:?}");
    etcd.token = None;
    ours.token = None;
    let r = same(
        &etcd,
        &ours,
        "no token after disable",
        "/v3/kv/range",
        r#"{"key":"Zm9v"}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
}

/// `--enable-grpc-gateway=false`: the JSON paths answer as any unknown path (etcd's plain
/// 404), the health endpoint still works. Same flag, same answers, on both servers.
#[test]
fn gateway_switched_off_answers_404_as_etcd_does() {
    // Not `ports`: that walk starts at the same port for every test of this process, and the
    // other test runs beside this one.
    let p = raftkv_client::local_cluster::free_loopback_ports(4).expect("free ports");
    let mut answers = Vec::new();
    for (i, program) in [
        MemberProgram::Etcd(common::etcd_binary()),
        common::raftkv_program(),
    ]
    .into_iter()
    .enumerate()
    {
        let mut spec = ClusterSpec::new(program, &format!("gw-off-{i}"), 1);
        spec.ports = Some(vec![(p[2 * i], p[2 * i + 1])]);
        spec.extra_args = vec!["--enable-grpc-gateway=false".to_string()];
        let cluster = LocalCluster::start(spec).expect("cannot start the member");
        let addr: SocketAddr = cluster.member(0).endpoint().parse().expect("endpoint");
        common::poll_until("/health answers", Duration::from_secs(30), || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                .map_err(|e| format!("connect: {e}"))?;
            let r = exchange(addr, "GET", "/health", "", None, |_| false);
            (r.status == 200).then_some(()).ok_or(format!("{r:?}"))
        });
        let range = exchange(
            addr,
            "POST",
            "/v3/kv/range",
            r#"{"key":"AA=="}"#,
            None,
            |_| false,
        );
        let beta = exchange(
            addr,
            "POST",
            "/v3beta/kv/put",
            r#"{"key":"AA=="}"#,
            None,
            |_| false,
        );
        answers.push((range.status, range.body, beta.status));
    }
    assert_eq!(answers[0].0, 404, "etcd: {answers:?}");
    assert_eq!(answers[0], answers[1], "left etcd, right raftkv");
}
