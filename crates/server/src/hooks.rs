//! Injection points: the few places where a test harness may swap in other behaviour.
//!
//! Why they exist: some faults cannot be made from outside the process on one shared kernel
//! (a member whose clock runs faster or slower than the others, a SIGKILL that loses the
//! writes that were never fsynced), and the Jepsen harness must prove it can catch a broken
//! build (reads served without ReadIndex). The *faults* themselves are not here: they live in
//! the harness (`crates/jepsen`, module `faults`), whose own member binary passes them to
//! [`crate::run_with_hooks`]. This crate only knows how to accept them, so no binary that
//! does not link the harness can ever carry fault code — there is no cargo feature to flip
//! and no environment variable that switches anything on. `raftkv`, `raftkv-member` and the
//! container image run with [`Hooks::default`], which is the real behaviour.

use std::sync::Arc;
use std::time::Duration;

use storage::{FileSystem, RealFs};

/// Maps the configured tick interval to the one the node thread waits for before the next
/// Raft tick. Called once per tick, so an implementation can change its answer while the
/// member runs (a clock that drifts).
pub type TickInterval = Arc<dyn Fn(Duration) -> Duration + Send + Sync>;

/// What a member is built from, beyond its flags. The default is the production member.
#[derive(Clone)]
pub struct Hooks {
    /// The filesystem the storage (WAL, snapshots, metadata) runs on.
    pub file_system: Arc<dyn FileSystem>,
    /// The node thread's tick interval, given the configured one.
    pub tick_interval: TickInterval,
    /// Serve linearizable Range requests from the local state machine without the ReadIndex
    /// barrier. Breaks linearizability on purpose: only the harness's negative control sets it.
    pub skip_read_index: bool,
    /// Damage watch responses on purpose: only the harness's negative control for its watch
    /// checker sets it.
    pub watch_sabotage: WatchSabotage,
    /// The log entries this member tells its peers it applies beyond version 1
    /// (`transport::codec::FEATURE_LEASE_KEEP_ALIVES`). A test clears a bit to stand in
    /// for a build from before that entry, in a cluster being upgraded one member at a time.
    pub applies: u64,
}

/// A deliberately broken watch, for showing that the harness's watch checker catches it.
/// Deterministic by revision, so every stream of the member breaks the same way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WatchSabotage {
    /// The real behaviour.
    #[default]
    None,
    /// Events whose revision is a multiple of 7 lose their `prev_kv`.
    DropPrevKv,
    /// Events whose revision is a multiple of 7 are not delivered.
    DropEvent,
    /// Every 7th progress request a stream answers gets no answer.
    DropProgress,
}

impl WatchSabotage {
    /// Applies the sabotage to one selected event; `None` drops it.
    pub fn apply(self, mut e: proto::mvccpb::Event) -> Option<proto::mvccpb::Event> {
        let hit = e.kv.as_ref().is_some_and(|kv| kv.mod_revision % 7 == 0);
        match self {
            WatchSabotage::None => Some(e),
            _ if !hit => Some(e),
            WatchSabotage::DropPrevKv => {
                e.prev_kv = None;
                Some(e)
            }
            WatchSabotage::DropEvent => None,
            WatchSabotage::DropProgress => Some(e),
        }
    }

    /// Whether the `nth` answer (from 1) a stream gives to progress requests is sent.
    pub fn answers_progress(self, nth: u64) -> bool {
        !(self == WatchSabotage::DropProgress && nth.is_multiple_of(7))
    }
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            file_system: Arc::new(RealFs),
            tick_interval: Arc::new(|configured| configured),
            skip_read_index: false,
            watch_sabotage: WatchSabotage::None,
            applies: crate::transport::codec::FEATURE_LEASE_KEEP_ALIVES,
        }
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("file_system", &self.file_system)
            .field("tick_interval", &"<fn>")
            .field("skip_read_index", &self.skip_read_index)
            .field("watch_sabotage", &self.watch_sabotage)
            .field("applies", &format_args!("{:#x}", self.applies))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_production_member() {
        let hooks = Hooks::default();
        assert!(!hooks.skip_read_index);
        assert_eq!(hooks.watch_sabotage, WatchSabotage::None);
        let tick = Duration::from_millis(10);
        assert_eq!((hooks.tick_interval)(tick), tick);
        assert_eq!(format!("{:?}", hooks.file_system), format!("{RealFs:?}"));
    }
}
