//! A real gRPC client library from PyPI: python-etcd3 (`etcd3`, pinned below with the
//! protobuf and tenacity versions it works with). The same session
//! (`tests/python/etcd3_grpc_session.py`: prefix watches with `prev_kv` as iterators and
//! callbacks, a watch replaying history, `watch_once` and its timeout, cancel, a watch from a
//! compacted revision, a lease revoked under a watch, the library's lock recipe, and the KV
//! and transaction helpers around them) runs against a 3-member raftkv cluster and a
//! 3-member etcd 3.4 cluster, through a follower; the transcripts must be equal.
//!
//! Needs `python3` with `venv` and PyPI; a missing one is a failure, not a skip.

mod common;

use raftkv_client::local_cluster::{LocalCluster, MemberProgram};

/// The library, and the versions of its dependencies it runs with: python-etcd3 0.12 ships
/// protobuf code generated for protobuf 3, and its lock recipe calls tenacity's pre-8
/// wait signature.
const PACKAGES: &[&str] = &["etcd3==0.12.0", "protobuf==3.20.3", "tenacity==6.3.1"];

/// The session against a follower of `cluster` (every member answers with a leader first).
fn session_on_follower(python: &std::path::Path, cluster: &LocalCluster) -> Vec<String> {
    let endpoints = cluster.endpoints();
    let rt = common::runtime();
    let statuses = rt.block_on(common::statuses(&endpoints));
    let follower = statuses
        .iter()
        .position(|(id, leader)| id != leader)
        .expect("a follower");
    common::python_session(python, "etcd3_grpc_session.py", &endpoints[follower])
}

#[test]
fn python_etcd3_sees_raftkv_as_it_sees_etcd() {
    let python = common::python_venv("venv-etcd3", PACKAGES, "etcd3");

    let raftkv = common::start_cluster_of(common::raftkv_program(), "pyg-raftkv", Vec::new());
    let ours = session_on_follower(&python, &raftkv);
    drop(raftkv);

    let etcd = common::start_cluster_of(
        MemberProgram::Etcd(common::etcd_binary()),
        "pyg-etcd",
        Vec::new(),
    );
    let theirs = session_on_follower(&python, &etcd);
    drop(etcd);

    // The watches delivered what the session asked for (so that equal transcripts cannot
    // mean "both failed the same way").
    let step = |name| common::python_step(&ours, name);
    assert_eq!(step("prefix_watch").as_array().map(Vec::len), Some(3));
    assert_eq!(step("history_watch").as_array().map(Vec::len), Some(3));
    assert_eq!(step("callback_watch")[0], true);
    assert_eq!(step("callback_after_cancel"), 2);
    assert_eq!(step("watch_once_quiet"), "WatchTimedOut");
    assert_eq!(
        step("compacted_watch")[1][0]["error"],
        "RevisionCompactedError"
    );
    assert_eq!(step("lease_revoke_event")[0]["type"], "DELETE");
    assert_eq!(step("lock_second_while_held"), false);
    assert_eq!(step("lock_second_after_release"), true);

    common::assert_same_transcripts(&ours, &theirs);
}
