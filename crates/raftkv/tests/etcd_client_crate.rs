//! The `etcd-client` crate (a widely used Rust etcd client) against the cluster: the basics a
//! Rust application does — put, get (single, prefix, with revision), delete, and a
//! compare-and-swap transaction — must work unchanged.

mod common;

use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};

#[test]
fn etcd_client_crate_basics() {
    let cluster = common::start_cluster("ecc");
    let endpoints = cluster.endpoints();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let limit = Duration::from_secs(90);
        let run = tokio::time::timeout(limit, basics(&endpoints, &cluster));
        assert!(
            run.await.is_ok(),
            "etcd-client basics did not finish within {limit:?}"
        );
    });
}

async fn connect_when_ready(
    endpoints: &[String],
    cluster: &raftkv_client::local_cluster::LocalCluster,
) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            // Every member must answer on its own first: the balanced client below sends
            // each request to any endpoint, and a member still binding its port refuses it.
            for ep in endpoints {
                let mut one = Client::connect([ep], None).await?;
                // A linearizable read succeeds only once there is a leader.
                one.get("ready-probe", None).await?;
            }
            Client::connect(endpoints, None).await
        };
        match attempt.await {
            Ok(client) => return client,
            Err(e) => assert!(
                Instant::now() < deadline,
                "cluster never became ready for etcd-client: {e}\n{}",
                cluster.log_tails(20)
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn basics(endpoints: &[String], cluster: &raftkv_client::local_cluster::LocalCluster) {
    let mut client = connect_when_ready(endpoints, cluster).await;

    let put = client.put("crate/a", "1", None).await.expect("put");
    let first_rev = put.header().expect("header").revision();
    client.put("crate/b", "2", None).await.expect("put");
    let prev = client
        .put("crate/a", "10", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put with prev kv");
    assert_eq!(prev.prev_key().expect("prev kv").value_str().unwrap(), "1");

    let got = client.get("crate/a", None).await.expect("get");
    let kv = &got.kvs()[0];
    assert_eq!(kv.value_str().unwrap(), "10");
    assert_eq!(kv.version(), 2);
    assert_eq!(kv.create_revision(), first_rev);

    let old = client
        .get("crate/a", Some(GetOptions::new().with_revision(first_rev)))
        .await
        .expect("get at old revision");
    assert_eq!(old.kvs()[0].value_str().unwrap(), "1");

    let all = client
        .get("crate/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("prefix get");
    let keys: Vec<&str> = all.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
    assert_eq!(keys, ["crate/a", "crate/b"]);
    assert_eq!(all.count(), 2);

    // Compare-and-swap: succeeds when the value matches, then fails on the stale value.
    let cas = |expected: &'static str, new: &'static str| {
        Txn::new()
            .when([Compare::value("crate/a", CompareOp::Equal, expected)])
            .and_then([TxnOp::put("crate/a", new, None)])
            .or_else([TxnOp::get("crate/a", None)])
    };
    let ok = client.txn(cas("10", "11")).await.expect("txn");
    assert!(ok.succeeded());
    let stale = client.txn(cas("10", "12")).await.expect("txn");
    assert!(!stale.succeeded());
    match &stale.op_responses()[0] {
        TxnOpResponse::Get(get) => assert_eq!(get.kvs()[0].value_str().unwrap(), "11"),
        other => panic!("expected the failure branch's get, got {other:?}"),
    }

    let deleted = client
        .delete(
            "crate/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .expect("delete");
    assert_eq!(deleted.deleted(), 2);
    assert_eq!(deleted.prev_kvs().len(), 2);
    assert_eq!(
        client
            .get("crate/", Some(GetOptions::new().with_prefix()))
            .await
            .expect("get")
            .count(),
        0
    );

    // An etcd error arrives with etcd's message.
    let err = client
        .put("", "v", None)
        .await
        .expect_err("empty key must fail");
    assert!(
        err.to_string().contains("etcdserver: key is not provided"),
        "{err}"
    );
}
