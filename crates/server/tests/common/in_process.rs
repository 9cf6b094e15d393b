//! Configurations for a cluster of three members run inside the test process
//! (`server::server::serve`), for tests that must reach what only the process has: its
//! runtimes, its hooks. Free loopback ports below the ephemeral range; member `i` is named
//! `m{i}` and keeps its data under `dir/m{i}`.

use std::path::Path;

use clap::Parser;
use server::config::Config;
use server::ServerArgs;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    args: ServerArgs,
}

/// The three members' client URLs and configurations, with the given Raft timing.
pub fn three_members(
    dir: &Path,
    heartbeat_ms: u64,
    election_ms: u64,
) -> (Vec<String>, Vec<Config>) {
    let ports = raftkv_client::local_cluster::free_loopback_ports(6).unwrap();
    let name = |i: usize| format!("m{i}");
    let client_url = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
    let peer_url = |i: usize| format!("http://127.0.0.1:{}", ports[3 + i]);
    let initial = (0..3)
        .map(|i| format!("{}={}", name(i), peer_url(i)))
        .collect::<Vec<_>>()
        .join(",");
    let configs = (0..3)
        .map(|i| {
            let flags = Flags::parse_from([
                "member".to_string(),
                format!("--name={}", name(i)),
                format!("--data-dir={}", dir.join(name(i)).display()),
                format!("--listen-client-urls={}", client_url(i)),
                format!("--advertise-client-urls={}", client_url(i)),
                format!("--listen-peer-urls={}", peer_url(i)),
                format!("--initial-advertise-peer-urls={}", peer_url(i)),
                format!("--initial-cluster={initial}"),
                format!("--heartbeat-interval={heartbeat_ms}"),
                format!("--election-timeout={election_ms}"),
            ]);
            Config::from_args(&flags.args).unwrap()
        })
        .collect();
    ((0..3).map(client_url).collect(), configs)
}
