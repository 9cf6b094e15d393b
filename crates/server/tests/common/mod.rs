//! A real cluster of `raftkv-member` processes on 127.0.0.1 with free ports and temporary
//! data dirs (`raftkv_client::local_cluster`, the same launcher the `raftkv` tests and the demo
//! use), plus the raw gRPC stubs these tests need to check the server's wire behaviour, and
//! polling helpers (no sleeps as synchronisation).

#![allow(dead_code)]

pub mod in_process;
pub mod member;

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use proto::etcdserverpb::{PutRequest, RangeRequest, StatusResponse};
use raftkv_client::endpoint::connect;
use raftkv_client::leader::{wait_for_leader, TermLedger};
use raftkv_client::local_cluster::{ClusterSpec, LocalCluster, MemberProgram};
use raftkv_client::{Client, Timeouts};
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_raftkv-member");

/// The members, with the short timings that keep these tests quick.
pub struct Cluster {
    pub local: LocalCluster,
}

impl Cluster {
    /// Start `n` members; `extra` flags go to every member.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let mut spec = ClusterSpec::new(MemberProgram::BareMember(PathBuf::from(BIN)), "m", n);
        spec.token = "server-tests".to_string();
        spec.heartbeat_ms = 50;
        spec.election_ms = 500;
        spec.extra_args = extra.iter().map(|s| s.to_string()).collect();
        Cluster {
            local: LocalCluster::start(spec).expect("cannot start raftkv-member processes"),
        }
    }

    /// `http://127.0.0.1:<client port>` of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        self.local.member(i).client_url()
    }

    /// Member `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.local.member(i).data_dir.clone()
    }

    /// (Re)start member `i` from its data dir.
    pub fn spawn(&mut self, i: usize) {
        self.local.start_member(i).expect("cannot start a member");
    }

    /// SIGKILL member `i` and wait for it to be gone.
    pub fn kill(&mut self, i: usize) {
        if self.local.member(i).is_running() {
            self.local.kill_member(i).expect("cannot kill a member");
        }
    }

    /// SIGTERM member `i` and return its exit status.
    pub fn terminate(&mut self, i: usize) -> ExitStatus {
        self.local
            .stop_member(i, Duration::from_secs(20))
            .expect("cannot stop a member")
            .expect("member did not exit within 20s of SIGTERM")
    }

    /// Waits for member `i` to exit by itself.
    pub fn wait_for_exit(&mut self, i: usize, limit: Duration) -> ExitStatus {
        self.local
            .wait_for_exit(i, limit)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.local.member(i).log_path).unwrap_or_default()
    }

    /// A failover-free client for member `i` alone.
    pub fn client(&self, i: usize) -> Client {
        Client::new(&[self.local.member(i).endpoint()], Timeouts::default()).expect("client")
    }

    pub async fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.channel(i).await)
    }

    pub async fn maintenance(&self, i: usize) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel(i).await)
    }

    async fn channel(&self, i: usize) -> Channel {
        let ep = self.endpoint(i);
        poll("connect", Duration::from_secs(20), || {
            let ep = ep.clone();
            async move { connect(&ep, Duration::from_secs(2)).await.ok() }
        })
        .await
    }

    pub async fn status(&self, i: usize) -> Option<StatusResponse> {
        self.client(i).status().await.ok()
    }

    /// Wait until the running members agree on one leader; return its index.
    pub async fn leader(&self) -> usize {
        let running: Vec<usize> = (0..self.local.len())
            .filter(|&i| self.local.member(i).is_running())
            .collect();
        let endpoints: Vec<String> = running
            .iter()
            .map(|&i| self.local.member(i).endpoint())
            .collect();
        let client = Client::new(&endpoints, Timeouts::default()).expect("client");
        let mut ledger = TermLedger::default();
        match wait_for_leader(&client, &mut ledger, Duration::from_secs(30), |_| true).await {
            Ok(leader) => running[leader.endpoint_index],
            Err(e) => panic!("{e}\n{}", self.local.log_tails(20)),
        }
    }

    pub async fn hash(&self, i: usize) -> Option<u32> {
        self.client(i).hash_kv(0).await.ok().map(|r| r.hash)
    }
}

/// Poll `f` until it yields `Some`, or panic after `limit` naming `what`.
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

pub fn get(key: &str) -> RangeRequest {
    RangeRequest {
        key: key.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

/// Put through member `i`, retrying transient errors (elections); returns the revision.
pub async fn put_retrying(c: &Cluster, i: usize, key: &str, value: &str) -> i64 {
    match c
        .client(i)
        .put_retrying(key, value, Duration::from_secs(30))
        .await
    {
        Ok(r) => r.header.expect("header").revision,
        Err(e) => panic!("put {key} via m-{i} failed: {e}"),
    }
}

/// The value of `key` read through member `i` (linearizable unless `serializable`).
pub async fn value(c: &Cluster, i: usize, key: &str, serializable: bool) -> Option<String> {
    let got = c.client(i).get_str(key, serializable).await.ok()?;
    Some(got.unwrap_or_default())
}
