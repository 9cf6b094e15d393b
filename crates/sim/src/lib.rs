//! # sim — the raftkv deterministic cluster simulator
//!
//! Runs N members of the real Raft core (`raft::RaftNode`) in one thread on a virtual-time
//! network that loses, duplicates, delays and reorders messages and can be partitioned
//! (symmetric, one-way, bridge); members crash (losing everything not yet persisted, even
//! in the middle of processing a Ready) and restart from their simulated disk. The
//! simulator plays the node runtime exactly as the Ready contract says, and after every
//! step runs the invariant checkers in [`checkers`].
//!
//! One seeded ChaCha RNG drives every choice, so `RAFTKV_SIM_SEED=<n>` replays a failure bit
//! for bit. See `docs/simulator.md` for how to run sweeps and replays.

mod apply_stage;
pub mod checkers;
pub mod cluster;
pub mod fuzz;
mod lease_shell;
pub mod leases;
pub mod network;
mod runtime;
pub mod state_machine;
pub mod store;
pub mod sweep;

pub use apply_stage::ApplyStageConfig;
pub use checkers::Violation;
pub use cluster::{
    seed_from_env_or, sim_lease_config, CallResult, Cluster, CrashPoint, Sabotage, SimConfig,
    UNITS_PER_TICK,
};
pub use fuzz::{run_seed, FuzzOptions, FuzzReport};
pub use network::NetConfig;
