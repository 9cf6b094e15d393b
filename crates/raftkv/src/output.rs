//! Printing responses as etcdctl does: `simple` (plain lines), `json` (etcdctl's JSON shape:
//! bytes base64-encoded, zero fields omitted) and `table`.
//!
//! Keeping etcdctl's shapes means scripts and habits carry over: `-w json | jq` finds the same
//! field names with either tool.

use std::fmt::Write as _;

use base64::Engine as _;
use clap::ValueEnum;
use proto::etcdserverpb::{
    response_op::Response, CompactionResponse, DeleteRangeResponse, HashKvResponse,
    LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeResponse,
    LeaseTimeToLiveResponse, Member, PutResponse, RangeResponse, ResponseHeader, StatusResponse,
    TxnResponse, WatchResponse,
};
use proto::mvccpb::{event::EventType, Event, KeyValue};
use serde_json::{json, Map, Value};

/// `-w` / `--write-out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Simple,
    Json,
    Table,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Inserts `value` unless it is a zero / false / empty value (Go's `omitempty`).
fn put_nonzero(map: &mut Map<String, Value>, name: &str, value: Value) {
    let zero = match &value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    };
    if !zero {
        map.insert(name.to_string(), value);
    }
}

pub fn header_json(header: Option<&ResponseHeader>) -> Value {
    let h = header.cloned().unwrap_or_default();
    let mut map = Map::new();
    put_nonzero(&mut map, "cluster_id", json!(h.cluster_id));
    put_nonzero(&mut map, "member_id", json!(h.member_id));
    put_nonzero(&mut map, "revision", json!(h.revision));
    put_nonzero(&mut map, "raft_term", json!(h.raft_term));
    Value::Object(map)
}

pub fn kv_json(kv: &KeyValue) -> Value {
    let mut map = Map::new();
    put_nonzero(&mut map, "key", json!(b64(&kv.key)));
    put_nonzero(&mut map, "create_revision", json!(kv.create_revision));
    put_nonzero(&mut map, "mod_revision", json!(kv.mod_revision));
    put_nonzero(&mut map, "version", json!(kv.version));
    put_nonzero(&mut map, "value", json!(b64(&kv.value)));
    put_nonzero(&mut map, "lease", json!(kv.lease));
    Value::Object(map)
}

pub fn range_json(r: &RangeResponse) -> Value {
    let mut map = Map::new();
    map.insert("header".into(), header_json(r.header.as_ref()));
    put_nonzero(
        &mut map,
        "kvs",
        Value::Array(r.kvs.iter().map(kv_json).collect()),
    );
    put_nonzero(&mut map, "more", json!(r.more));
    put_nonzero(&mut map, "count", json!(r.count));
    Value::Object(map)
}

pub fn put_json(r: &PutResponse) -> Value {
    let mut map = Map::new();
    map.insert("header".into(), header_json(r.header.as_ref()));
    if let Some(prev) = &r.prev_kv {
        map.insert("prev_kv".into(), kv_json(prev));
    }
    Value::Object(map)
}

pub fn delete_json(r: &DeleteRangeResponse) -> Value {
    let mut map = Map::new();
    map.insert("header".into(), header_json(r.header.as_ref()));
    put_nonzero(&mut map, "deleted", json!(r.deleted));
    put_nonzero(
        &mut map,
        "prev_kvs",
        Value::Array(r.prev_kvs.iter().map(kv_json).collect()),
    );
    Value::Object(map)
}

pub fn txn_json(r: &TxnResponse) -> Value {
    let responses = r
        .responses
        .iter()
        .map(|op| match &op.response {
            Some(Response::ResponseRange(x)) => {
                json!({ "Response": { "response_range": range_json(x) } })
            }
            Some(Response::ResponsePut(x)) => {
                json!({ "Response": { "response_put": put_json(x) } })
            }
            Some(Response::ResponseDeleteRange(x)) => {
                json!({ "Response": { "response_delete_range": delete_json(x) } })
            }
            Some(Response::ResponseTxn(x)) => {
                json!({ "Response": { "response_txn": txn_json(x) } })
            }
            None => json!({}),
        })
        .collect();
    let mut map = Map::new();
    map.insert("header".into(), header_json(r.header.as_ref()));
    put_nonzero(&mut map, "succeeded", json!(r.succeeded));
    put_nonzero(&mut map, "responses", Value::Array(responses));
    Value::Object(map)
}

pub fn status_json(endpoint: &str, s: &StatusResponse) -> Value {
    let mut status = Map::new();
    status.insert("header".into(), header_json(s.header.as_ref()));
    put_nonzero(&mut status, "version", json!(s.version));
    put_nonzero(&mut status, "dbSize", json!(s.db_size));
    put_nonzero(&mut status, "leader", json!(s.leader));
    put_nonzero(&mut status, "raftIndex", json!(s.raft_index));
    put_nonzero(&mut status, "raftTerm", json!(s.raft_term));
    put_nonzero(&mut status, "raftAppliedIndex", json!(s.raft_applied_index));
    put_nonzero(&mut status, "errors", json!(s.errors));
    put_nonzero(&mut status, "dbSizeInUse", json!(s.db_size_in_use));
    put_nonzero(&mut status, "isLearner", json!(s.is_learner));
    json!({ "Endpoint": endpoint, "Status": Value::Object(status) })
}

pub fn member_json(m: &Member) -> Value {
    let mut map = Map::new();
    put_nonzero(&mut map, "ID", json!(m.id));
    put_nonzero(&mut map, "name", json!(m.name));
    put_nonzero(&mut map, "peerURLs", json!(m.peer_ur_ls));
    put_nonzero(&mut map, "clientURLs", json!(m.client_ur_ls));
    put_nonzero(&mut map, "isLearner", json!(m.is_learner));
    Value::Object(map)
}

/// A JSON object from already-encoded values, its fields in the order given. The lease lines
/// are built this way because etcdctl prints Go struct fields in declaration order while
/// `serde_json::Map` sorts its keys (its `preserve_order` feature is off), and a script may
/// compare the raw lines of the two tools.
fn ordered_object(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(name, value)| format!("\"{name}\":{value}"))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// The header's fields in etcd's order, the zero ones left out (Go's `omitempty`).
fn header_fields(header: Option<&ResponseHeader>) -> Vec<(&'static str, String)> {
    let h = header.cloned().unwrap_or_default();
    [
        ("cluster_id", h.cluster_id.to_string()),
        ("member_id", h.member_id.to_string()),
        ("revision", h.revision.to_string()),
        ("raft_term", h.raft_term.to_string()),
    ]
    .into_iter()
    .filter(|(_, value)| value != "0")
    .collect()
}

/// `etcdctl -w json lease grant`: clientv3's `LeaseGrantResponse`, which embeds the header
/// (so its fields sit at the top level) and always carries `Error`.
pub fn lease_grant_json(r: &LeaseGrantResponse) -> String {
    let mut fields = header_fields(r.header.as_ref());
    fields.push(("ID", r.id.to_string()));
    fields.push(("TTL", r.ttl.to_string()));
    fields.push(("Error", Value::from(r.error.as_str()).to_string()));
    ordered_object(&fields)
}

/// `etcdctl -w json lease revoke`: the protobuf response itself, so the header is nested.
pub fn lease_revoke_json(r: &LeaseRevokeResponse) -> String {
    ordered_object(&[("header", ordered_object(&header_fields(r.header.as_ref())))])
}

/// `etcdctl -w json lease timetolive`: clientv3's `LeaseTimeToLiveResponse`; `keys` is
/// `null` (a nil slice in Go) when the lease has none or they were not asked for.
pub fn lease_time_to_live_json(r: &LeaseTimeToLiveResponse) -> String {
    let keys = if r.keys.is_empty() {
        "null".to_string()
    } else {
        Value::from(r.keys.iter().map(|k| b64(k)).collect::<Vec<_>>()).to_string()
    };
    let mut fields = header_fields(r.header.as_ref());
    fields.push(("id", r.id.to_string()));
    fields.push(("ttl", r.ttl.to_string()));
    fields.push(("granted-ttl", r.granted_ttl.to_string()));
    fields.push(("keys", keys));
    ordered_object(&fields)
}

/// `etcdctl -w json lease list`: clientv3's `LeaseLeasesResponse`; `leases` is `[]`, never
/// `null`, when there are none.
pub fn lease_leases_json(r: &LeaseLeasesResponse) -> String {
    let leases: Vec<Value> = r.leases.iter().map(|l| json!({ "id": l.id })).collect();
    let mut fields = header_fields(r.header.as_ref());
    fields.push(("leases", Value::Array(leases).to_string()));
    ordered_object(&fields)
}

/// `etcdctl -w json lease keep-alive`: clientv3's `LeaseKeepAliveResponse`, one per answer.
pub fn lease_keep_alive_json(r: &LeaseKeepAliveResponse) -> String {
    let mut fields = header_fields(r.header.as_ref());
    fields.push(("ID", r.id.to_string()));
    fields.push(("TTL", r.ttl.to_string()));
    ordered_object(&fields)
}

/// An ASCII table in etcdctl's style.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let rule = {
        let mut s = String::from("+");
        for w in &widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s.push('\n');
        s
    };
    let line = |cells: &[String]| {
        let mut s = String::from("|");
        for (w, cell) in widths.iter().zip(cells) {
            let _ = write!(s, " {cell:^w$} |");
        }
        s.push('\n');
        s
    };
    let mut out = rule.clone();
    out.push_str(&line(
        &headers.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    ));
    out.push_str(&rule);
    for row in rows {
        out.push_str(&line(row));
    }
    out.push_str(&rule);
    out
}

fn kv_rows(kvs: &[KeyValue]) -> Vec<Vec<String>> {
    kvs.iter()
        .map(|kv| {
            vec![
                text(&kv.key),
                text(&kv.value),
                kv.create_revision.to_string(),
                kv.mod_revision.to_string(),
                kv.version.to_string(),
            ]
        })
        .collect()
}

/// Options that change how a range is printed in simple format.
#[derive(Clone, Copy, Debug, Default)]
pub struct RangePrint {
    pub keys_only: bool,
    pub count_only: bool,
    pub print_value_only: bool,
}

pub fn range(format: OutputFormat, r: &RangeResponse, how: RangePrint) -> String {
    match format {
        OutputFormat::Json => format!("{}\n", range_json(r)),
        OutputFormat::Table => table(
            &["KEY", "VALUE", "CREATE", "MOD", "VERSION"],
            &kv_rows(&r.kvs),
        ),
        OutputFormat::Simple => {
            if how.count_only {
                return format!("{}\n", r.count);
            }
            let mut out = String::new();
            for kv in &r.kvs {
                if !how.print_value_only {
                    out.push_str(&text(&kv.key));
                    out.push('\n');
                }
                if !how.keys_only {
                    out.push_str(&text(&kv.value));
                    out.push('\n');
                }
            }
            out
        }
    }
}

fn event_json(e: &Event) -> Value {
    let mut map = Map::new();
    put_nonzero(&mut map, "type", json!(e.r#type));
    if let Some(kv) = &e.kv {
        map.insert("kv".to_string(), kv_json(kv));
    }
    if let Some(prev) = &e.prev_kv {
        map.insert("prev_kv".to_string(), kv_json(prev));
    }
    Value::Object(map)
}

/// etcdctl's JSON for one watch response (clientv3's `WatchResponse`: every field present).
pub fn watch_json(r: &WatchResponse) -> Value {
    let events = if r.events.is_empty() {
        Value::Null
    } else {
        Value::Array(r.events.iter().map(event_json).collect())
    };
    json!({
        "Header": header_json(r.header.as_ref()),
        "Events": events,
        "CompactRevision": r.compact_revision,
        "Canceled": r.canceled,
        "Created": r.created,
    })
}

/// A watch response as `etcdctl watch` prints it: per event its type, the previous
/// key-value if any, then the key-value (simple); a progress notification as
/// `progress notify: REV`.
pub fn watch(format: OutputFormat, r: &WatchResponse) -> String {
    let progress = r.events.is_empty() && !r.created && !r.canceled;
    match format {
        OutputFormat::Json => format!("{}\n", watch_json(r)),
        _ if progress => format!(
            "progress notify: {}\n",
            r.header.as_ref().map_or(0, |h| h.revision)
        ),
        _ => {
            let mut out = String::new();
            for e in &r.events {
                let kind = match EventType::try_from(e.r#type) {
                    Ok(EventType::Delete) => "DELETE",
                    _ => "PUT",
                };
                let _ = writeln!(out, "{kind}");
                for kv in e.prev_kv.iter().chain(e.kv.iter()) {
                    let _ = write!(out, "{}\n{}\n", text(&kv.key), text(&kv.value));
                }
            }
            out
        }
    }
}

pub fn put(format: OutputFormat, r: &PutResponse) -> String {
    match format {
        OutputFormat::Json => format!("{}\n", put_json(r)),
        OutputFormat::Table => {
            let mut out = table(&["RESULT"], &[vec!["OK".to_string()]]);
            if let Some(prev) = &r.prev_kv {
                out.push_str(&table(
                    &["KEY", "VALUE", "CREATE", "MOD", "VERSION"],
                    &kv_rows(std::slice::from_ref(prev)),
                ));
            }
            out
        }
        OutputFormat::Simple => {
            let mut out = String::from("OK\n");
            if let Some(prev) = &r.prev_kv {
                let _ = write!(out, "{}\n{}\n", text(&prev.key), text(&prev.value));
            }
            out
        }
    }
}

pub fn delete(format: OutputFormat, r: &DeleteRangeResponse) -> String {
    match format {
        OutputFormat::Json => format!("{}\n", delete_json(r)),
        OutputFormat::Table => {
            let mut out = table(&["DELETED"], &[vec![r.deleted.to_string()]]);
            if !r.prev_kvs.is_empty() {
                out.push_str(&table(
                    &["KEY", "VALUE", "CREATE", "MOD", "VERSION"],
                    &kv_rows(&r.prev_kvs),
                ));
            }
            out
        }
        OutputFormat::Simple => {
            let mut out = format!("{}\n", r.deleted);
            for kv in &r.prev_kvs {
                let _ = write!(out, "{}\n{}\n", text(&kv.key), text(&kv.value));
            }
            out
        }
    }
}

pub fn txn(format: OutputFormat, r: &TxnResponse) -> String {
    if format == OutputFormat::Json {
        return format!("{}\n", txn_json(r));
    }
    let mut out = String::from(if r.succeeded {
        "SUCCESS\n"
    } else {
        "FAILURE\n"
    });
    for op in &r.responses {
        out.push('\n');
        match &op.response {
            Some(Response::ResponseRange(x)) => {
                out.push_str(&range(format, x, RangePrint::default()))
            }
            Some(Response::ResponsePut(x)) => out.push_str(&put(format, x)),
            Some(Response::ResponseDeleteRange(x)) => out.push_str(&delete(format, x)),
            Some(Response::ResponseTxn(x)) => out.push_str(&txn(format, x)),
            None => {}
        }
    }
    out
}

pub fn compact(format: OutputFormat, revision: i64, r: &CompactionResponse) -> String {
    match format {
        OutputFormat::Json => format!("{}\n", json!({ "header": header_json(r.header.as_ref()) })),
        _ => format!("compacted revision {revision}\n"),
    }
}

pub fn hash_kv(format: OutputFormat, rows: &[(String, HashKvResponse)]) -> String {
    match format {
        OutputFormat::Json => {
            let items: Vec<Value> = rows
                .iter()
                .map(|(ep, h)| {
                    json!({ "Endpoint": ep, "HashKV": {
                        "header": header_json(h.header.as_ref()),
                        "hash": h.hash, "compact_revision": h.compact_revision } })
                })
                .collect();
            format!("{}\n", Value::Array(items))
        }
        OutputFormat::Table => table(
            &["ENDPOINT", "HASH", "REVISION", "COMPACT REVISION"],
            &rows
                .iter()
                .map(|(ep, h)| {
                    vec![
                        ep.clone(),
                        h.hash.to_string(),
                        h.header.as_ref().map_or(0, |x| x.revision).to_string(),
                        h.compact_revision.to_string(),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
        OutputFormat::Simple => rows
            .iter()
            .map(|(ep, h)| format!("{ep}, {}, {}\n", h.hash, h.compact_revision))
            .collect(),
    }
}

/// One row per endpoint; errors are listed after the table on stderr by the caller.
pub fn status(format: OutputFormat, rows: &[(String, StatusResponse)]) -> String {
    let cells = |ep: &String, s: &StatusResponse| {
        let member = s.header.as_ref().map_or(0, |h| h.member_id);
        vec![
            ep.clone(),
            format!("{member:x}"),
            s.version.clone(),
            human_bytes(s.db_size),
            (s.leader != 0 && s.leader == member).to_string(),
            s.is_learner.to_string(),
            s.raft_term.to_string(),
            s.raft_index.to_string(),
            s.raft_applied_index.to_string(),
            s.errors.join(", "),
        ]
    };
    match format {
        OutputFormat::Json => format!(
            "{}\n",
            Value::Array(rows.iter().map(|(ep, s)| status_json(ep, s)).collect())
        ),
        OutputFormat::Table => table(
            &[
                "ENDPOINT",
                "ID",
                "VERSION",
                "DB SIZE",
                "IS LEADER",
                "IS LEARNER",
                "RAFT TERM",
                "RAFT INDEX",
                "RAFT APPLIED INDEX",
                "ERRORS",
            ],
            &rows.iter().map(|(ep, s)| cells(ep, s)).collect::<Vec<_>>(),
        ),
        OutputFormat::Simple => rows
            .iter()
            .map(|(ep, s)| format!("{}\n", cells(ep, s).join(", ")))
            .collect(),
    }
}

pub fn members(
    format: OutputFormat,
    members: &[Member],
    header: Option<&ResponseHeader>,
) -> String {
    let cells = |m: &Member| {
        vec![
            format!("{:x}", m.id),
            if m.name.is_empty() {
                "unstarted"
            } else {
                "started"
            }
            .to_string(),
            m.name.clone(),
            m.peer_ur_ls.join(","),
            m.client_ur_ls.join(","),
            m.is_learner.to_string(),
        ]
    };
    match format {
        OutputFormat::Json => format!(
            "{}\n",
            json!({ "header": header_json(header), "members": members.iter().map(member_json).collect::<Vec<_>>() })
        ),
        OutputFormat::Table => table(
            &[
                "ID",
                "STATUS",
                "NAME",
                "PEER ADDRS",
                "CLIENT ADDRS",
                "IS LEARNER",
            ],
            &members.iter().map(cells).collect::<Vec<_>>(),
        ),
        OutputFormat::Simple => members
            .iter()
            .map(|m| format!("{}\n", cells(m).join(", ")))
            .collect(),
    }
}

/// Sizes as etcdctl prints them ("20 kB").
pub fn human_bytes(n: i64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < units.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.0} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_prints_like_etcdctl() {
        let r = WatchResponse {
            header: Some(ResponseHeader {
                revision: 9,
                ..Default::default()
            }),
            events: vec![
                Event {
                    r#type: EventType::Put as i32,
                    kv: Some(kv("a", "2", 8)),
                    prev_kv: Some(kv("a", "1", 7)),
                },
                Event {
                    r#type: EventType::Delete as i32,
                    kv: Some(KeyValue {
                        key: "b".as_bytes().to_vec().into(),
                        mod_revision: 9,
                        ..Default::default()
                    }),
                    prev_kv: None,
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            watch(OutputFormat::Simple, &r),
            "PUT\na\n1\na\n2\nDELETE\nb\n\n"
        );
        let v: Value = serde_json::from_str(&watch(OutputFormat::Json, &r)).unwrap();
        assert_eq!(v["Events"][1]["type"], 1);
        assert_eq!(v["Events"][0]["prev_kv"]["value"], "MQ==");
        assert_eq!(v["Canceled"], false);
        let progress = WatchResponse {
            header: r.header,
            ..Default::default()
        };
        assert_eq!(
            watch(OutputFormat::Simple, &progress),
            "progress notify: 9\n"
        );
    }

    fn kv(key: &str, value: &str, rev: i64) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease: 0,
        }
    }

    #[test]
    fn simple_range_prints_key_then_value() {
        let r = RangeResponse {
            kvs: vec![kv("a", "1", 2), kv("b", "2", 3)],
            count: 2,
            ..Default::default()
        };
        assert_eq!(
            range(OutputFormat::Simple, &r, RangePrint::default()),
            "a\n1\nb\n2\n"
        );
        let keys = RangePrint {
            keys_only: true,
            ..Default::default()
        };
        assert_eq!(range(OutputFormat::Simple, &r, keys), "a\nb\n");
        let count = RangePrint {
            count_only: true,
            ..Default::default()
        };
        assert_eq!(range(OutputFormat::Simple, &r, count), "2\n");
    }

    #[test]
    fn json_matches_etcdctl_shape() {
        let r = RangeResponse {
            header: Some(ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 3,
                raft_term: 4,
            }),
            kvs: vec![kv("k", "v", 3)],
            more: false,
            count: 1,
        };
        let v: Value =
            serde_json::from_str(&range(OutputFormat::Json, &r, RangePrint::default())).unwrap();
        assert_eq!(v["header"]["revision"], 3);
        assert_eq!(v["kvs"][0]["key"], "aw==");
        assert_eq!(v["kvs"][0]["value"], "dg==");
        assert!(
            v.get("more").is_none(),
            "false is omitted like Go's omitempty"
        );
        assert!(v["kvs"][0].get("lease").is_none());
    }

    /// A header as etcd sends it, but with `raft_term` zero: Go's `omitempty` leaves it out.
    fn lease_header() -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: 14841639068965178418,
            member_id: 10276657743932975437,
            revision: 3,
            raft_term: 0,
        })
    }

    const HEADER: &str =
        r#""cluster_id":14841639068965178418,"member_id":10276657743932975437,"revision":3"#;

    #[test]
    fn lease_grant_and_keep_alive_json_flatten_the_header_as_etcdctl() {
        let grant = LeaseGrantResponse {
            header: lease_header(),
            id: 7587899420675806213,
            ttl: 100,
            error: String::new(),
        };
        assert_eq!(
            lease_grant_json(&grant),
            format!(r#"{{{HEADER},"ID":7587899420675806213,"TTL":100,"Error":""}}"#)
        );
        let keep_alive = LeaseKeepAliveResponse {
            header: lease_header(),
            id: 7587899420675806223,
            ttl: 100,
        };
        assert_eq!(
            lease_keep_alive_json(&keep_alive),
            format!(r#"{{{HEADER},"ID":7587899420675806223,"TTL":100}}"#)
        );
        // No header at all: only the lease's own fields, which are never omitted.
        assert_eq!(
            lease_keep_alive_json(&LeaseKeepAliveResponse::default()),
            r#"{"ID":0,"TTL":0}"#
        );
    }

    #[test]
    fn lease_revoke_json_nests_the_header() {
        let r = LeaseRevokeResponse {
            header: lease_header(),
        };
        assert_eq!(
            lease_revoke_json(&r),
            format!(r#"{{"header":{{{HEADER}}}}}"#)
        );
    }

    #[test]
    fn lease_time_to_live_json_has_null_keys_when_there_are_none() {
        let mut r = LeaseTimeToLiveResponse {
            header: lease_header(),
            id: 4660,
            ttl: -1,
            granted_ttl: 0,
            keys: Vec::new(),
        };
        assert_eq!(
            lease_time_to_live_json(&r),
            format!(r#"{{{HEADER},"id":4660,"ttl":-1,"granted-ttl":0,"keys":null}}"#)
        );
        r.ttl = 99;
        r.granted_ttl = 100;
        r.keys = vec![
            "k".as_bytes().to_vec().into(),
            "a/b".as_bytes().to_vec().into(),
        ];
        assert_eq!(
            lease_time_to_live_json(&r),
            format!(r#"{{{HEADER},"id":4660,"ttl":99,"granted-ttl":100,"keys":["aw==","YS9i"]}}"#)
        );
    }

    #[test]
    fn lease_leases_json_lists_ids_and_is_an_empty_array_when_none() {
        let mut r = LeaseLeasesResponse {
            header: lease_header(),
            leases: Vec::new(),
        };
        assert_eq!(
            lease_leases_json(&r),
            format!(r#"{{{HEADER},"leases":[]}}"#)
        );
        r.leases = [7587899420675806213, 7587899420675806215]
            .map(|id| proto::etcdserverpb::LeaseStatus { id })
            .to_vec();
        assert_eq!(
            lease_leases_json(&r),
            format!(
                r#"{{{HEADER},"leases":[{{"id":7587899420675806213}},{{"id":7587899420675806215}}]}}"#
            )
        );
    }

    #[test]
    fn table_pads_every_cell() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()]]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(
            lines
                .iter()
                .all(|l| l.chars().count() == lines[0].chars().count()),
            "{t}"
        );
    }

    #[test]
    fn sizes_are_human_readable() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(20_480), "20 kB");
        assert_eq!(human_bytes(3_000_000), "3 MB");
    }
}
