//! A real 3-member cluster of `raftkv-member` processes on 127.0.0.1 with random ports and
//! temporary data dirs, plus polling helpers (no sleeps as synchronisation).

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use proto::etcdserverpb::{HashKvRequest, PutRequest, RangeRequest, StatusRequest, StatusResponse};
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_raftkv-member");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    pub initial_cluster: String,
    pub extra_args: Vec<String>,
}

impl Cluster {
    /// Start `n` members; `extra` flags go to every member.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut members = Vec::new();
        for i in 1..=n {
            members.push(Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: dir.path().join(format!("m{i}.etcd")),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            dir,
            members,
            initial_cluster,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..n {
            c.spawn(i);
        }
        c
    }

    /// (Re)start member `i` from its data dir.
    pub fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .unwrap();
        let child = Command::new(BIN)
            .args(["--name", &m.name])
            .args(["--data-dir", m.data_dir.to_str().unwrap()])
            .args(["--listen-client-urls", &m.endpoint()])
            .args(["--advertise-client-urls", &m.endpoint()])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer_port),
            ])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer_port),
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", "server-tests"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start raftkv-member");
        self.members[i].child = Some(child);
    }

    /// SIGKILL member `i` and wait for it to be gone.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM member `i` and return its exit status.
    pub fn terminate(&mut self, i: usize) -> std::process::ExitStatus {
        let mut c = self.members[i].child.take().expect("member not running");
        unsafe_kill_term(c.id());
        wait_with_deadline(&mut c, Duration::from_secs(20))
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }

    pub async fn kv(&self, i: usize) -> KvClient<Channel> {
        let ep = self.members[i].endpoint();
        poll("connect", Duration::from_secs(20), || {
            let ep = ep.clone();
            async move { KvClient::connect(ep).await.ok() }
        })
        .await
    }

    pub async fn maintenance(&self, i: usize) -> MaintenanceClient<Channel> {
        let ep = self.members[i].endpoint();
        poll("connect", Duration::from_secs(20), || {
            let ep = ep.clone();
            async move { MaintenanceClient::connect(ep).await.ok() }
        })
        .await
    }

    pub async fn status(&self, i: usize) -> Option<StatusResponse> {
        let mut m = MaintenanceClient::connect(self.members[i].endpoint())
            .await
            .ok()?;
        m.status(StatusRequest {})
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// Wait until the running members agree on one leader; return its index.
    pub async fn leader(&self) -> usize {
        poll(
            "a leader agreed by all running members",
            Duration::from_secs(30),
            || async {
                let mut leader = None;
                let mut running = 0;
                for (i, m) in self.members.iter().enumerate() {
                    if m.child.is_none() {
                        continue;
                    }
                    running += 1;
                    let st = self.status(i).await?;
                    if st.leader == 0 || leader.is_some_and(|l| l != st.leader) {
                        return None;
                    }
                    leader = Some(st.leader);
                }
                let id = leader?;
                for (i, _) in self.members.iter().enumerate() {
                    if self.members[i].child.is_some()
                        && self.status(i).await?.header?.member_id == id
                    {
                        return Some(i);
                    }
                }
                let _ = running;
                None
            },
        )
        .await
    }

    pub async fn hash(&self, i: usize) -> Option<u32> {
        let mut m = MaintenanceClient::connect(self.members[i].endpoint())
            .await
            .ok()?;
        m.hash_kv(HashKvRequest { revision: 0 })
            .await
            .ok()
            .map(|r| r.into_inner().hash)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

fn unsafe_kill_term(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

pub fn wait_with_deadline(c: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
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

/// Put through member `i`, retrying transient (UNAVAILABLE) errors; returns the revision.
pub async fn put_retrying(c: &Cluster, i: usize, key: &str, value: &str) -> i64 {
    let kv = c.kv(i).await;
    poll(
        &format!("put {key} via m{}", i + 1),
        Duration::from_secs(30),
        || {
            let mut kv = kv.clone();
            async move {
                match kv.put(put(key, value)).await {
                    Ok(r) => Some(r.into_inner().header.unwrap().revision),
                    Err(s) if s.code() == tonic::Code::Unavailable => None,
                    Err(s) => panic!("put {key} failed: {s:?}"),
                }
            }
        },
    )
    .await
}

/// The value of `key` read through member `i` (linearizable unless `serializable`).
pub async fn value(c: &Cluster, i: usize, key: &str, serializable: bool) -> Option<String> {
    let mut kv = c.kv(i).await;
    let mut req = get(key);
    req.serializable = serializable;
    let r = kv.range(req).await.ok()?.into_inner();
    Some(
        r.kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .unwrap_or_default(),
    )
}
