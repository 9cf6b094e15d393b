//! The leader's lease duties: deciding, on this member's lease clock ([`Lessor`]), which
//! leases ran out and which remaining times to record in the log, and placing those
//! decisions in the log itself.
//!
//! Why in the driver: the decision is a rule around the Raft core (who may decide, after
//! which barrier, in which term), so it lives where both the server and the simulator run
//! it. The lessor itself is kept by apply (the shell's state machine sets it); the shell
//! lends it to [`Driver::lease_duties`] between rounds, so the driver reads it without
//! owning it, and the shell encodes each decision as its own log entry.
//!
//! The rule (docs/lease.md, "Expiry: who decides, and when"):
//!
//! * only a leader decides, and every decision names the term it leads in (apply ignores a
//!   decision carried by an entry of another term);
//! * every `scan_interval`, a leader whose clock says some lease ran out asks for a **read
//!   barrier** (a ReadIndex round of its own). Once a quorum confirmed it still leads in
//!   that term and it applied everything committed before the barrier (every renewal that
//!   got into the log first), it expires the leases whose deadline had passed by its clock
//!   *when it asked*: each expiry is backed by a barrier started after the lease ran out.
//!   The next barrier waits until that decision's leases left the lease clock (applied)
//!   or were renewed since, for no longer than an election timeout or a change of term;
//! * every `checkpoint_scan`, a leader records the remaining time of the leases whose
//!   remaining time the log last recorded `checkpoint_interval` or longer ago. A
//!   checkpoint only ever brings a deadline forward, and apply skips one for a lease
//!   renewed since, so it needs no barrier;
//! * a lease is expired only once its deadline passed by [`LeaseConfig::expiry_grace`]
//!   as well: the grace is what lets a member that answers a renewal a little late still
//!   promise the full TTL from its answer ([`promised_ttl`]).

use std::time::Duration;

use bytes::Bytes;
use raft::{Index, Role, Term};

use crate::driver::Driver;
use crate::lessor::{LeaseAt, Lessor};

/// How much longer than its deadline the leader lets a lease run before expiring it
/// (etcd's default has none). Why: a member answers a keep-alive after the renewal was
/// applied, and every leader started the renewed TTL no earlier than when the member took
/// the call; with the grace, an answer up to this late may still promise the full TTL
/// counted from the answer, as etcd answers, instead of one whole second less (TTLs are
/// whole seconds on the wire). Costs at most this much on the upper bound (TTL + 1 s).
pub const EXPIRY_GRACE: Duration = Duration::from_millis(500);

/// The TTL a member may promise, counted from its answer, for a renewal of a lease
/// granted `ttl` that it took `lag` before answering: every leader's deadline for the
/// lease is at least "took + `ttl`", and it expires the lease only `grace` after that, so
/// `ttl + grace - lag` is sound; never more than `ttl` (what etcd answers). Zero when the
/// answer is so late that nothing can be promised.
pub fn promised_ttl(ttl: Duration, grace: Duration, lag: Duration) -> Duration {
    (ttl + grace).saturating_sub(lag).min(ttl)
}

/// The first byte of the lease barrier's ReadIndex contexts (the client reads use `R`).
pub(crate) const CTX_TAG: u8 = b'L';

/// When and how much the leader decides.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// How often the leader looks for expired leases (etcd: 500 ms).
    pub scan_interval: Duration,
    /// How often the leader looks for leases due a checkpoint.
    pub checkpoint_scan: Duration,
    /// A lease's remaining time is recorded in the log once it was last recorded this long
    /// ago (docs/lease.md: the bound on expiry after a restart).
    pub checkpoint_interval: Duration,
    /// Leases per expiry or checkpoint entry. 10,000: a decision costs a barrier, a
    /// commit and an apply on every member whatever its size, and with a million leases
    /// run out together 1,000 per entry revoked about 20,000 a second on this project's
    /// 2-core machine (bench/RESULTS.md, "A million leases running out together"). An
    /// expiry entry of 10,000 is ~140 KB, a checkpoint entry ~220 KB; either applies in
    /// well under a heartbeat interval.
    pub max_batch: usize,
    /// A lease is expired once its deadline passed by this much ([`EXPIRY_GRACE`]).
    pub expiry_grace: Duration,
    /// Test-only sabotage (the simulator's checker self-tests): decide on any member,
    /// follower included, at once on its own clock, without a read barrier, and forward a
    /// follower's decision to the leader. Never set outside such tests.
    pub unsafe_expire_without_barrier: bool,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            scan_interval: Duration::from_millis(100),
            checkpoint_scan: Duration::from_secs(1),
            checkpoint_interval: Duration::from_secs(5),
            max_batch: 10_000,
            expiry_grace: EXPIRY_GRACE,
            unsafe_expire_without_barrier: false,
        }
    }
}

/// The barrier a decision rests on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Barrier {
    /// The lease clock's time when the barrier was asked for: every lease expired by the
    /// decision had run out by then.
    pub asked_at: Duration,
    /// The commit index the quorum confirmed; the member had applied it when it decided.
    pub index: Index,
}

/// One decision, to be encoded by the shell and placed in the log by the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// These leases ran out (each named with the renewals seen, the apply-side guard).
    Expire {
        term: Term,
        leases: Vec<LeaseAt>,
        /// `None` only under [`LeaseConfig::unsafe_expire_without_barrier`].
        barrier: Option<Barrier>,
    },
    /// At most this much was left on each lease.
    Checkpoint {
        term: Term,
        leases: Vec<(LeaseAt, Duration)>,
    },
}

impl LeaseDecision {
    pub fn term(&self) -> Term {
        match self {
            LeaseDecision::Expire { term, .. } | LeaseDecision::Checkpoint { term, .. } => *term,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    /// A lease barrier is out: its context, the term it was asked in, when (driver time),
    /// and the lease clock's time then.
    Asked {
        ctx: u64,
        term: Term,
        since: Duration,
        clock: Duration,
    },
    /// Confirmed at `index`; decide once it is applied.
    Confirmed {
        term: Term,
        index: Index,
        clock: Duration,
    },
}

/// The driver's lease bookkeeping.
#[derive(Debug)]
pub(crate) struct LeaseKeeper {
    pub(crate) cfg: LeaseConfig,
    state: State,
    /// The leases of this leader's last expiry decision, until its entry is applied here
    /// (each is gone from the lease clock, or renewed since, which makes the decision
    /// stale). No barrier is asked meanwhile: one confirmed before that apply would find
    /// the same leases run out and decide them again, an entry that revokes nothing. With
    /// many leases run out together every other decision was such a duplicate.
    /// Forgotten on a change of term and after an election timeout: a decision that is
    /// lost or refused at apply (a stale one) must not hold the next one up for ever; the
    /// worst that forgetting it early costs is a duplicate.
    pending: Vec<LeaseAt>,
    /// The term and driver time of that decision.
    pending_at: (Term, Duration),
    next_scan: Duration,
    next_checkpoint: Duration,
    next_ctx: u64,
}

impl LeaseKeeper {
    pub(crate) fn new(cfg: LeaseConfig, now: Duration) -> LeaseKeeper {
        LeaseKeeper {
            next_scan: now,
            next_checkpoint: now + cfg.checkpoint_scan,
            cfg,
            state: State::Idle,
            pending: Vec::new(),
            pending_at: (0, now),
            next_ctx: 0,
        }
    }
}

pub(crate) fn encode_ctx(ctx: u64) -> Bytes {
    let mut b = Vec::with_capacity(9);
    b.push(CTX_TAG);
    b.extend_from_slice(&ctx.to_be_bytes());
    Bytes::from(b)
}

pub(crate) fn decode_ctx(b: &[u8]) -> Option<u64> {
    match b {
        [CTX_TAG, rest @ ..] => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

impl Driver {
    /// Whether [`Driver::lease_duties`] has anything to do now; cheap, so the shell can
    /// ask every round and lend its lessor only when it says yes.
    pub fn lease_duties_due(&self) -> bool {
        let k = &self.leases;
        if k.cfg.unsafe_expire_without_barrier {
            return self.now >= k.next_scan || self.now >= k.next_checkpoint;
        }
        if self.role != Role::Leader {
            return k.state != State::Idle;
        }
        match k.state {
            State::Confirmed { index, .. } => index <= self.applied,
            State::Asked { since, .. } => self.now >= since + self.barrier_retry_after(),
            State::Idle => self.now >= k.next_scan || self.now >= k.next_checkpoint,
        }
    }

    /// The lease duties, between rounds: `lessor` is this member's lease clock as the
    /// applied state set it, `clock` its time now. Decides as the module documentation
    /// says, places each decision in the log (as `encode` makes it) and returns them.
    /// A decision is only ever placed in this member's own log, while it leads in the
    /// decision's term; a member that lost leadership meanwhile drops it.
    pub fn lease_duties(
        &mut self,
        lessor: &Lessor,
        clock: Duration,
        encode: impl Fn(&LeaseDecision) -> Bytes,
    ) -> Vec<LeaseDecision> {
        let decisions = self.decide_leases(lessor, clock);
        for d in &decisions {
            self.propose_internal(encode(d));
        }
        decisions
    }

    fn barrier_retry_after(&self) -> Duration {
        (self.cfg.election_timeout / 2).max(3 * self.tick_interval())
    }

    fn decide_leases(&mut self, lessor: &Lessor, clock: Duration) -> Vec<LeaseDecision> {
        let now = self.now;
        let term = self.raft.status().hard_state.term;
        let max = self.leases.cfg.max_batch;
        let mut out = Vec::new();
        if self.leases.cfg.unsafe_expire_without_barrier {
            if now >= self.leases.next_scan {
                self.leases.next_scan = now + self.leases.cfg.scan_interval;
                let leases =
                    lessor.expired(clock.saturating_sub(self.leases.cfg.expiry_grace), max);
                if !leases.is_empty() {
                    out.push(LeaseDecision::Expire {
                        term,
                        leases,
                        barrier: None,
                    });
                }
            }
            self.checkpoint_duty(lessor, clock, term, &mut out);
            return out;
        }
        if self.role != Role::Leader {
            self.leases.state = State::Idle;
            self.leases.pending.clear();
            return out;
        }
        match self.leases.state {
            State::Confirmed {
                term: asked,
                index,
                clock: asked_at,
            } if index <= self.applied => {
                self.leases.state = State::Idle;
                if asked == term {
                    let by = asked_at.saturating_sub(self.leases.cfg.expiry_grace);
                    let leases = lessor.expired(by, max);
                    // A full batch: there may be more, look again at once.
                    self.leases.next_scan = if leases.len() == max {
                        now
                    } else {
                        now + self.leases.cfg.scan_interval
                    };
                    if !leases.is_empty() {
                        self.leases.pending.clone_from(&leases);
                        self.leases.pending_at = (term, now);
                        out.push(LeaseDecision::Expire {
                            term,
                            leases,
                            barrier: Some(Barrier { asked_at, index }),
                        });
                    }
                }
            }
            State::Asked { since, .. } if now >= since + self.barrier_retry_after() => {
                // Probably lost to a leader change or the network: ask again.
                self.leases.state = State::Idle;
            }
            State::Confirmed { term: asked, .. } | State::Asked { term: asked, .. }
                if asked != term =>
            {
                self.leases.state = State::Idle;
            }
            _ => {}
        }
        let (pending_term, pending_since) = self.leases.pending_at;
        if pending_term != term || now >= pending_since + self.cfg.election_timeout {
            self.leases.pending.clear();
        }
        // Stops at the first lease still waiting: called every round while it waits.
        if !self
            .leases
            .pending
            .iter()
            .any(|at| lessor.renewals(at.id) == Some(at.renewals))
        {
            self.leases.pending.clear();
        }
        if self.leases.state == State::Idle
            && self.leases.pending.is_empty()
            && now >= self.leases.next_scan
            && lessor.any_expired(clock.saturating_sub(self.leases.cfg.expiry_grace))
        {
            self.leases.next_scan = now + self.leases.cfg.scan_interval;
            let ctx = self.leases.next_ctx;
            self.leases.next_ctx += 1;
            if self.raft.read_index(encode_ctx(ctx)).is_ok() {
                self.leases.state = State::Asked {
                    ctx,
                    term,
                    since: now,
                    clock,
                };
            }
        }
        self.checkpoint_duty(lessor, clock, term, &mut out);
        out
    }

    fn checkpoint_duty(
        &mut self,
        lessor: &Lessor,
        clock: Duration,
        term: Term,
        out: &mut Vec<LeaseDecision>,
    ) {
        let k = &mut self.leases;
        if self.now < k.next_checkpoint {
            return;
        }
        k.next_checkpoint = self.now + k.cfg.checkpoint_scan;
        let leases = lessor.due_checkpoints(clock, k.cfg.checkpoint_interval, k.cfg.max_batch);
        if !leases.is_empty() {
            out.push(LeaseDecision::Checkpoint { term, leases });
        }
    }

    /// A lease barrier's read state: confirmed at `index` if it is the one asked for.
    pub(crate) fn on_lease_read_state(&mut self, ctx: u64, index: Index) {
        if let State::Asked {
            ctx: asked,
            term,
            clock,
            ..
        } = self.leases.state
        {
            if asked == ctx {
                self.leases.state = State::Confirmed { term, index, clock };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_late_answer_promises_the_ttl_less_what_the_grace_does_not_cover() {
        let (ttl, grace) = (ms(2000), ms(500));
        assert_eq!(promised_ttl(ttl, grace, ms(0)), ttl);
        assert_eq!(promised_ttl(ttl, grace, ms(500)), ttl, "within the grace");
        assert_eq!(promised_ttl(ttl, grace, ms(501)), ms(1999));
        assert_eq!(promised_ttl(ttl, grace, ms(2400)), ms(100));
        assert_eq!(promised_ttl(ttl, grace, ms(2500)), ms(0));
        assert_eq!(promised_ttl(ttl, grace, ms(9000)), ms(0));
        assert_eq!(promised_ttl(ttl, Duration::ZERO, ms(1)), ms(1999));
    }
}
