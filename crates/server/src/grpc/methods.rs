//! Every gRPC method the client port routes, so that a request for any other method gets
//! grpc-go's answer before it reaches tonic (whose generated servers answer an unknown
//! method with an empty `UNIMPLEMENTED` message).
//!
//! The table is etcd's API as compiled in `crates/proto` (including the methods that still
//! answer "Not yet implemented"); a unit test checks it against the `.proto` file, so adding
//! an RPC there without adding it here fails the build's tests rather than silently
//! answering "unknown method".

/// `(service, methods)` for every service the client port serves.
const SERVICES: &[(&str, &[&str])] = &[
    (
        "etcdserverpb.KV",
        &[
            "Range",
            "RangeStream",
            "Put",
            "DeleteRange",
            "Txn",
            "Compact",
        ],
    ),
    ("etcdserverpb.Watch", &["Watch"]),
    (
        "etcdserverpb.Lease",
        &[
            "LeaseGrant",
            "LeaseRevoke",
            "LeaseKeepAlive",
            "LeaseTimeToLive",
            "LeaseLeases",
        ],
    ),
    (
        "etcdserverpb.Cluster",
        &[
            "MemberAdd",
            "MemberRemove",
            "MemberUpdate",
            "MemberList",
            "MemberPromote",
        ],
    ),
    (
        "etcdserverpb.Maintenance",
        &[
            "Alarm",
            "Status",
            "Defragment",
            "Hash",
            "HashKV",
            "Snapshot",
            "MoveLeader",
            "Downgrade",
        ],
    ),
    (
        "etcdserverpb.Auth",
        &[
            "AuthEnable",
            "AuthDisable",
            "AuthStatus",
            "Authenticate",
            "UserAdd",
            "UserGet",
            "UserList",
            "UserDelete",
            "UserChangePassword",
            "UserGrantRole",
            "UserRevokeRole",
            "RoleAdd",
            "RoleGet",
            "RoleList",
            "RoleDelete",
            "RoleGrantPermission",
            "RoleRevokePermission",
        ],
    ),
    ("v3lockpb.Lock", &["Lock", "Unlock"]),
    (
        "v3electionpb.Election",
        &["Campaign", "Proclaim", "Leader", "Observe", "Resign"],
    ),
    ("raftkvpb.Peers", &["AdmitPeer"]),
];

/// What a request path names, split the way grpc-go splits it: an optional leading `/`,
/// then service and method around the *last* `/`.
#[derive(Debug, PartialEq, Eq)]
pub enum MethodLookup<'a> {
    Known,
    /// No `/` after the leading one: grpc-go calls this a malformed method name.
    Malformed,
    UnknownService {
        service: &'a str,
    },
    UnknownMethod {
        service: &'a str,
        method: &'a str,
    },
}

pub fn lookup(path: &str) -> MethodLookup<'_> {
    let name = path.strip_prefix('/').unwrap_or(path);
    let Some((service, method)) = name.rsplit_once('/') else {
        return MethodLookup::Malformed;
    };
    match SERVICES.iter().find(|(s, _)| *s == service) {
        None => MethodLookup::UnknownService { service },
        Some((_, methods)) if methods.contains(&method) => MethodLookup::Known,
        Some(_) => MethodLookup::UnknownMethod { service, method },
    }
}

/// The metric labels of a known method (`crate::metrics`), `None` for any other path.
pub fn labels(path: &str) -> Option<crate::metrics::GrpcLabels> {
    let name = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = name.rsplit_once('/')?;
    let (service, methods) = SERVICES.iter().find(|(s, _)| *s == service)?;
    let method = methods.iter().find(|m| **m == method)?;
    let kind = match *method {
        "Watch" | "LeaseKeepAlive" => "bidi_stream",
        "Snapshot" | "RangeStream" => "server_stream",
        _ => "unary",
    };
    Some(crate::metrics::GrpcLabels {
        kind,
        service,
        method,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The services and RPCs declared in etcd's `.proto` files as this repository compiles
    /// them.
    fn declared_in_proto() -> Vec<(String, Vec<String>)> {
        let files = [
            (
                include_str!("../../../proto/proto/etcdserverpb/rpc.proto"),
                "etcdserverpb",
            ),
            (
                include_str!("../../../proto/proto/v3lockpb/v3lock.proto"),
                "v3lockpb",
            ),
            (
                include_str!("../../../proto/proto/v3electionpb/v3election.proto"),
                "v3electionpb",
            ),
            (
                include_str!("../../../proto/proto/raftkvpb/raftkv.proto"),
                "raftkvpb",
            ),
        ];
        let mut services: Vec<(String, Vec<String>)> = Vec::new();
        for (proto, package) in files {
            declared_in(proto, package, &mut services);
        }
        services
    }

    fn declared_in(proto: &str, package: &str, services: &mut Vec<(String, Vec<String>)>) {
        for line in proto.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                let name = rest.split_whitespace().next().unwrap_or_default();
                services.push((format!("{package}.{name}"), Vec::new()));
            } else if let Some(rest) = line.strip_prefix("rpc ") {
                let name = rest.split('(').next().unwrap_or_default().trim();
                services
                    .last_mut()
                    .expect("an rpc outside a service")
                    .1
                    .push(name.to_string());
            }
        }
    }

    #[test]
    fn labels_name_known_methods_and_their_stream_kinds() {
        let l = labels("/etcdserverpb.KV/Put").unwrap();
        assert_eq!(
            (l.kind, l.service, l.method),
            ("unary", "etcdserverpb.KV", "Put")
        );
        assert_eq!(
            labels("/etcdserverpb.Watch/Watch").unwrap().kind,
            "bidi_stream"
        );
        assert_eq!(
            labels("/etcdserverpb.Maintenance/Snapshot").unwrap().kind,
            "server_stream"
        );
        assert_eq!(labels("/etcdserverpb.KV/Nope"), None);
        assert_eq!(labels("/foo.Bar/Put"), None);
    }

    #[test]
    fn the_table_is_the_proto_files_services() {
        let table: Vec<(String, Vec<String>)> = SERVICES
            .iter()
            .map(|(s, m)| (s.to_string(), m.iter().map(|m| m.to_string()).collect()))
            .collect();
        assert_eq!(table, declared_in_proto());
    }

    #[test]
    fn paths_split_like_grpc_go() {
        assert_eq!(lookup("/etcdserverpb.KV/Range"), MethodLookup::Known);
        assert_eq!(lookup("/etcdserverpb.Auth/UserAdd"), MethodLookup::Known);
        assert_eq!(
            lookup("/etcdserverpb.KV/Nope"),
            MethodLookup::UnknownMethod {
                service: "etcdserverpb.KV",
                method: "Nope"
            }
        );
        // etcd 3.4.23 answers "unknown method  for service etcdserverpb.KV" (empty name).
        assert_eq!(
            lookup("/etcdserverpb.KV/"),
            MethodLookup::UnknownMethod {
                service: "etcdserverpb.KV",
                method: ""
            }
        );
        assert_eq!(
            lookup("/foo.Bar/Baz"),
            MethodLookup::UnknownService { service: "foo.Bar" }
        );
        // The last `/` splits: a method path with a suffix names an unknown service.
        assert_eq!(
            lookup("/etcdserverpb.KV/Range/x"),
            MethodLookup::UnknownService {
                service: "etcdserverpb.KV/Range"
            }
        );
        assert_eq!(lookup("/etcdserverpb.KV"), MethodLookup::Malformed);
        assert_eq!(lookup("/"), MethodLookup::Malformed);
    }
}
