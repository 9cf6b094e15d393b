//! A member really runs on the injection points it is given (`server::Hooks`).
//!
//! Why: the Jepsen harness's faults (crates/jepsen, module `faults`) reach a member only
//! through these points. If the server quietly stopped consulting one of them, the harness
//! would go on "injecting" a fault that never happens and its runs would prove less than they
//! claim. The faults themselves are tested in crates/jepsen; the stale-read point is proven
//! there end to end by the negative control (tests/broken_build.rs), which must be caught.

mod common;

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use proto::etcdserverpb::kv_client::KvClient;
use server::config::Config;
use server::{Hooks, ServerArgs};
use storage::{FileSystem, FsFile, RealFs};
use tokio_util::sync::CancellationToken;

use common::{poll, put};

/// The real filesystem, with a record of the files opened for writing and a count of fsyncs.
#[derive(Debug, Default)]
struct ObservedFs {
    written: Mutex<Vec<PathBuf>>,
    syncs: Arc<AtomicU64>,
}

struct ObservedFile {
    inner: Box<dyn FsFile>,
    syncs: Arc<AtomicU64>,
}

impl FsFile for ObservedFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.inner.sync_data()?;
        self.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn extend_zeroed(&mut self, len: u64) -> io::Result<()> {
        self.inner.extend_zeroed(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

impl ObservedFs {
    fn observe(&self, path: &Path, inner: Box<dyn FsFile>) -> Box<dyn FsFile> {
        self.written.lock().unwrap().push(path.to_path_buf());
        Box::new(ObservedFile {
            inner,
            syncs: self.syncs.clone(),
        })
    }
}

impl FileSystem for ObservedFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        RealFs.create_dir_all(dir)
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        RealFs.list_dir(dir)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        RealFs.exists(path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        RealFs.read(path)
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        RealFs.open_read(path)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(self.observe(path, RealFs.create(path)?))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(self.observe(path, RealFs.open_append(path)?))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        RealFs.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealFs.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        RealFs.lock(path)
    }
}

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    args: ServerArgs,
}

fn free_port() -> u16 {
    raftkv_client::local_cluster::free_loopback_ports(1).unwrap()[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_writes_through_the_given_filesystem_and_ticks_by_the_given_interval() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("solo.etcd");
    let client = format!("http://127.0.0.1:{}", free_port());
    let peer = format!("http://127.0.0.1:{}", free_port());
    let flags = Flags::parse_from([
        "member",
        "--name=solo",
        &format!("--data-dir={}", data_dir.display()),
        &format!("--listen-client-urls={client}"),
        &format!("--advertise-client-urls={client}"),
        &format!("--listen-peer-urls={peer}"),
        &format!("--initial-advertise-peer-urls={peer}"),
        &format!("--initial-cluster=solo={peer}"),
        "--heartbeat-interval=100",
        "--election-timeout=1000",
    ]);
    let config = Config::from_args(&flags.args).unwrap();
    let configured_tick = config.tick;

    let fs = Arc::new(ObservedFs::default());
    let asked: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let hooks = Hooks {
        file_system: fs.clone(),
        tick_interval: {
            let asked = asked.clone();
            Arc::new(move |configured| {
                asked.lock().unwrap().push(configured);
                configured
            })
        },
        skip_read_index: false,
        watch_sabotage: server::WatchSabotage::None,
        applies: server::transport::codec::FEATURE_LEASE_KEEP_ALIVES,
    };
    let shutdown = CancellationToken::new();
    let member = tokio::spawn(server::server::serve(config, hooks, shutdown.clone()));

    let kv = poll("the client port", Duration::from_secs(10), || {
        let client = client.clone();
        async move { KvClient::connect(client).await.ok() }
    })
    .await;
    let put_ok = |key: &'static str| {
        let kv = kv.clone();
        poll("an acknowledged put", Duration::from_secs(30), move || {
            let mut kv = kv.clone();
            async move {
                match kv.put(put(key, "v")).await {
                    Ok(_) => Some(()),
                    Err(s) if s.code() == tonic::Code::Unavailable => None,
                    Err(s) => panic!("put {key} failed: {s:?}"),
                }
            }
        })
    };
    // The first put waits out the election (which the tick hook drives); the second is
    // proposed to a settled leader, so the fsync that makes it durable happens after this load.
    put_ok("first").await;
    let syncs_before = fs.syncs.load(Ordering::SeqCst);
    put_ok("second").await;
    assert!(
        fs.syncs.load(Ordering::SeqCst) > syncs_before,
        "a put was acknowledged without an fsync through the given filesystem"
    );
    let written = fs.written.lock().unwrap().clone();
    assert!(
        written.iter().any(|p| p.starts_with(&data_dir)),
        "the storage opened no file through the given filesystem: {written:?}"
    );

    let asked = asked.lock().unwrap().clone();
    assert!(
        !asked.is_empty(),
        "the node thread never asked the hook for its tick interval"
    );
    assert!(
        asked.iter().all(|&t| t == configured_tick),
        "the hook must be asked with the configured tick {configured_tick:?}: {asked:?}"
    );

    shutdown.cancel();
    member.await.unwrap().unwrap();
}
