//! Invariant checkers, one per file. Each is fed observations by the cluster after every
//! step and answers with a [`Violation`] the moment an invariant breaks. Each has a test
//! that feeds it a violating trace and sees it fail, so a silent checker cannot hide.

use std::fmt;

pub mod applied_within_commit;
pub mod client_calls;
pub mod committed_entries;
pub mod election_safety;
pub mod leader_completeness;
pub mod lease_decisions;
pub mod lease_liveness;
pub mod lease_timing;
pub mod log_matching;
pub mod monotonic;
pub mod promotion;
pub mod read_index;
pub mod recovery;
pub mod state_machine_safety;

pub use client_calls::ClientCalls;
pub use committed_entries::CommittedLedger;
pub use election_safety::ElectionSafety;
pub use leader_completeness::LeaderCompleteness;
pub use lease_decisions::LeaseDecisions;
pub use lease_liveness::LeaseLiveness;
pub use lease_timing::LeaseTiming;
pub use log_matching::LogMatching;
pub use monotonic::Monotonic;
pub use promotion::PromotionChecker;
pub use read_index::ReadIndexChecker;
pub use state_machine_safety::StateMachineSafety;

/// A broken invariant: which checker saw it and what exactly it saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub checker: &'static str,
    pub detail: String,
}

impl Violation {
    pub fn new(checker: &'static str, detail: impl Into<String>) -> Violation {
        Violation {
            checker,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.checker, self.detail)
    }
}

/// All the stateful checkers of one run.
#[derive(Debug, Default)]
pub struct Checkers {
    pub election: ElectionSafety,
    pub log_matching: LogMatching,
    pub completeness: LeaderCompleteness,
    pub committed: CommittedLedger,
    pub state_machine: StateMachineSafety,
    pub monotonic: Monotonic,
    pub reads: ReadIndexChecker,
    pub clients: ClientCalls,
    pub promotion: PromotionChecker,
    pub lease_timing: LeaseTiming,
    pub lease_decisions: LeaseDecisions,
    /// Set when the liveness phase begins.
    pub lease_liveness: Option<LeaseLiveness>,
}
