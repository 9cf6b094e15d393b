//! `raftkv cluster`: a local 3-member cluster in the foreground, to play with `etcdctl` or
//! the client commands. Ctrl-C (or SIGTERM) stops every member cleanly.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};

use raftkv_client::client::{Client, Timeouts};
use raftkv_client::leader::{wait_for_leader, TermLedger};
use raftkv_client::local_cluster::{free_loopback_ports, ClusterSpec, LocalCluster, MemberProgram};

/// etcd's conventional local ports (its Procfile): clients 2379/22379/32379, peers +1.
const CONVENTIONAL_PORTS: [(u16, u16); 3] = [(2379, 2380), (22379, 22380), (32379, 32380)];

pub async fn run(data_dir: Option<PathBuf>, free_ports: bool) -> Result<()> {
    let mut spec = ClusterSpec::new(MemberProgram::current_raftkv()?, "infra", 3);
    spec.data_root = data_dir;
    spec.token = "raftkv-local-cluster".to_string();
    if !free_ports {
        let busy: Vec<u16> = CONVENTIONAL_PORTS
            .iter()
            .flat_map(|&(c, p)| [c, p])
            .filter(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_err())
            .collect();
        if !busy.is_empty() {
            bail!(
                "ports {busy:?} are in use on 127.0.0.1; stop what uses them or pass --free-ports"
            );
        }
        spec.ports = Some(CONVENTIONAL_PORTS.to_vec());
    } else {
        // Validate early that free ports exist at all (clear error instead of a spawn failure).
        free_loopback_ports(1)?;
    }
    let mut cluster = LocalCluster::start(spec)?;
    let endpoints = cluster.endpoints().join(",");
    println!(
        "raftkv cluster: 3 members on 127.0.0.1, data and logs in {}",
        cluster.data_root().display()
    );
    for m in cluster.members() {
        println!(
            "  {:<8} client {}  peer {}  log {}",
            m.name,
            m.client_url(),
            m.peer_url(),
            m.log_path.display()
        );
    }
    {
        // Scoped: the client's connections must be closed before the members are asked to
        // stop, or a member's graceful shutdown may wait for them.
        let client = Client::new(&cluster.endpoints(), Timeouts::default())?;
        let mut ledger = TermLedger::default();
        let waiting = wait_for_leader(&client, &mut ledger, Duration::from_secs(30), |_| true);
        tokio::select! {
            leader = waiting => match leader {
                Ok(l) => println!("leader: {} (term {})", cluster.member(l.endpoint_index).name, l.term),
                Err(e) => println!("warning: {e}"),
            },
            _ = shutdown_signal() => return stop(&mut cluster),
        }
    }
    println!("\ntry:\n  ETCDCTL_API=3 etcdctl --endpoints={endpoints} put hello world");
    println!("  raftkv --endpoints={endpoints} get hello");
    println!("  raftkv --endpoints={endpoints} status -w table");
    println!("Ctrl-C stops the cluster.");
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = shutdown_signal() => return stop(&mut cluster),
            _ = ticker.tick() => {
                if let Err(e) = cluster.check_alive() {
                    eprintln!("{e}");
                }
            }
        }
    }
}

fn stop(cluster: &mut LocalCluster) -> Result<()> {
    println!("\nstopping the members...");
    let killed = cluster.stop_all(Duration::from_secs(10))?;
    if killed.is_empty() {
        println!("all members stopped cleanly");
    } else {
        println!("had to SIGKILL: {}", killed.join(", "));
    }
    Ok(())
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
