//! What the driver's integration tests share: the core of a test member and a driver
//! configuration that does nothing on its own (no snapshots by count, default leases).

use std::time::Duration;

use node::DriverConfig;
use raft::{ConfState, HardState, InitialState, RaftNode};

/// One driver tick.
pub const TICK: Duration = Duration::from_millis(10);

/// The core of member `id` of a new cluster of `voters`, with nothing stored yet.
pub fn member(id: u64, voters: Vec<u64>) -> RaftNode {
    let initial = InitialState {
        hard_state: HardState::default(),
        conf_state: ConfState {
            voters,
            learners: vec![],
        },
        snapshot: None,
        entries: vec![],
        applied: 0,
    };
    RaftNode::new(raft::Config::new(id), initial).expect("core")
}

/// A configuration at the tests' time scale; a test overrides what it is about.
pub fn config() -> DriverConfig {
    DriverConfig {
        tick_interval: TICK,
        max_catch_up_ticks: 10,
        election_timeout: Duration::from_millis(100),
        request_timeout: Duration::from_secs(5),
        snapshot_count: 0,
        snapshot_size_floor: u64::MAX,
        max_apply_gap: 5000,
        forward_id_base: 1 << 40,
        promote_check_interval: Duration::from_millis(100),
        unsafe_promote_unsynced: false,
        lease: node::LeaseConfig::default(),
    }
}
