//! Leases in the simulated state machine: the entries (grant, keep-alive, revoke, the
//! leader's expiry and checkpoint decisions), their text encoding, and the replicated
//! lease table they build, with the store's apply rules (`mvcc::lease`): a grant of an
//! existing id is refused; a keep-alive resets the recorded remaining time to the TTL and
//! counts a renewal (a batch of keep-alives does so for each id in order, as the store's
//! `LeaseKeepAlives`); a decision holds only under `node::lessor::decision_holds` (its term,
//! no renewal since) — the very function the store calls.
//!
//! Time never enters here, as in the store: each member's lease clock (`node::Lessor`) is
//! fed with the [`LeaseChange`]s an apply makes, at the simulator's virtual time.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use node::lessor::{decision_holds, LeaseAt};
use node::LeaseDecision;
use raft::{NodeId, Term};

const PREFIX: &str = "lease ";

/// One lease entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseEntry {
    Grant {
        id: i64,
        ttl_ms: u64,
    },
    KeepAlive {
        id: i64,
    },
    /// Several keep-alives in one entry (the server's `LeaseKeepAlives`).
    KeepAlives {
        ids: Vec<i64>,
    },
    Revoke {
        id: i64,
    },
    Expire {
        term: Term,
        leases: Vec<LeaseAt>,
    },
    Checkpoint {
        term: Term,
        leases: Vec<(LeaseAt, u64)>,
    },
}

/// A client's lease call: `nonce` makes every payload unique (the client-call checker and
/// the commit-point index key on payloads).
pub fn client_entry(entry: &LeaseEntry, nonce: u64) -> Bytes {
    let body = match entry {
        LeaseEntry::Grant { id, ttl_ms } => format!("grant {id} {ttl_ms}"),
        LeaseEntry::KeepAlive { id } => format!("keep {id}"),
        LeaseEntry::KeepAlives { ids } => {
            let list: Vec<String> = ids.iter().map(i64::to_string).collect();
            format!("keeps {}", list.join(";"))
        }
        LeaseEntry::Revoke { id } => format!("revoke {id}"),
        other => unreachable!("not a client entry: {other:?}"),
    };
    Bytes::from(format!("{PREFIX}{body} #c{nonce}"))
}

/// A driver's decision, tagged with its proposer and a per-run sequence number (unique).
pub fn decision_entry(d: &LeaseDecision, proposer: NodeId, seq: u64) -> Bytes {
    let body = match d {
        LeaseDecision::Expire { term, leases, .. } => {
            let list: Vec<String> = leases
                .iter()
                .map(|a| format!("{}/{}", a.id, a.renewals))
                .collect();
            format!("expire {term} {}", list.join(";"))
        }
        LeaseDecision::Checkpoint { term, leases } => {
            let list: Vec<String> = leases
                .iter()
                .map(|(a, left)| format!("{}/{}/{}", a.id, a.renewals, left.as_millis()))
                .collect();
            format!("cp {term} {}", list.join(";"))
        }
    };
    Bytes::from(format!("{PREFIX}{body} #n{proposer}s{seq}"))
}

/// The lease entry in `data`, if it is one.
pub fn decode(data: &[u8]) -> Option<LeaseEntry> {
    let text = std::str::from_utf8(data).ok()?.strip_prefix(PREFIX)?;
    let (body, _tag) = text.rsplit_once(" #")?;
    let mut parts = body.split(' ');
    let kind = parts.next()?;
    let num = |s: Option<&str>| s?.parse::<i64>().ok();
    let list = |s: Option<&str>| -> Option<Vec<Vec<u64>>> {
        let s = s.unwrap_or("");
        if s.is_empty() {
            return Some(Vec::new());
        }
        s.split(';')
            .map(|item| item.split('/').map(|n| n.parse().ok()).collect())
            .collect()
    };
    let at = |v: &[u64]| LeaseAt {
        id: v[0] as i64,
        renewals: v[1],
    };
    Some(match kind {
        "grant" => LeaseEntry::Grant {
            id: num(parts.next())?,
            ttl_ms: num(parts.next())? as u64,
        },
        "keep" => LeaseEntry::KeepAlive {
            id: num(parts.next())?,
        },
        "keeps" => {
            let ids = match parts.next().unwrap_or("") {
                "" => Vec::new(),
                list => list
                    .split(';')
                    .map(|n| n.parse().ok())
                    .collect::<Option<Vec<i64>>>()?,
            };
            LeaseEntry::KeepAlives { ids }
        }
        "revoke" => LeaseEntry::Revoke {
            id: num(parts.next())?,
        },
        "expire" => {
            let term = num(parts.next())? as Term;
            let items = list(parts.next())?;
            if items.iter().any(|v| v.len() != 2) {
                return None;
            }
            LeaseEntry::Expire {
                term,
                leases: items.iter().map(|v| at(&v[..])).collect(),
            }
        }
        "cp" => {
            let term = num(parts.next())? as Term;
            let items = list(parts.next())?;
            if items.iter().any(|v| v.len() != 3) {
                return None;
            }
            LeaseEntry::Checkpoint {
                term,
                leases: items.iter().map(|v| (at(&v[..]), v[2])).collect(),
            }
        }
        _ => return None,
    })
}

/// One replicated lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimLease {
    pub ttl_ms: u64,
    /// What was left at the last checkpoint or renewal.
    pub remaining_ms: u64,
    pub renewals: u64,
}

/// What an apply did to one lease: the input of each member's lease clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseChange {
    Renewed {
        id: i64,
        renewals: u64,
        ttl_ms: u64,
    },
    Checkpointed {
        id: i64,
        renewals: u64,
        remaining_ms: u64,
    },
    Removed {
        id: i64,
    },
}

/// The outcome of applying one lease entry (identical on every member).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseApplied {
    pub changes: Vec<LeaseChange>,
    /// Grant refused (exists) / keep-alive or revoke of an unknown lease.
    pub refused: bool,
    /// Leases an expiry revoked, and how many it named that the guard refused.
    pub expired: Vec<i64>,
    pub stale_expiries: usize,
    /// Checkpoints recorded.
    pub checkpoints: usize,
}

/// Every lease, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseTable {
    by_id: BTreeMap<i64, SimLease>,
}

impl LeaseTable {
    pub fn get(&self, id: i64) -> Option<&SimLease> {
        self.by_id.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (i64, &SimLease)> {
        self.by_id.iter().map(|(id, l)| (*id, l))
    }

    /// Applies `data` (an entry of term `entry_term`); `None` when it is no lease entry.
    pub fn apply(&mut self, data: &[u8], entry_term: Term) -> Option<LeaseApplied> {
        let entry = decode(data)?;
        let mut out = LeaseApplied::default();
        match entry {
            LeaseEntry::Grant { id, ttl_ms } => match self.by_id.entry(id) {
                std::collections::btree_map::Entry::Occupied(_) => out.refused = true,
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(SimLease {
                        ttl_ms,
                        remaining_ms: ttl_ms,
                        renewals: 0,
                    });
                    out.changes.push(LeaseChange::Renewed {
                        id,
                        renewals: 0,
                        ttl_ms,
                    });
                }
            },
            LeaseEntry::KeepAlive { id } => {
                let renewed = self.renew(id, &mut out);
                out.refused = !renewed;
            }
            // An unknown id is answered alone; the batch as a whole is not refused.
            LeaseEntry::KeepAlives { ids } => {
                for id in ids {
                    self.renew(id, &mut out);
                }
            }
            LeaseEntry::Revoke { id } => {
                if self.by_id.remove(&id).is_some() {
                    out.changes.push(LeaseChange::Removed { id });
                } else {
                    out.refused = true;
                }
            }
            LeaseEntry::Expire { term, leases } => {
                for at in leases {
                    let holds = self
                        .by_id
                        .get(&at.id)
                        .is_some_and(|l| decision_holds(term, entry_term, at.renewals, l.renewals));
                    if holds {
                        self.by_id.remove(&at.id);
                        out.changes.push(LeaseChange::Removed { id: at.id });
                        out.expired.push(at.id);
                    } else {
                        out.stale_expiries += 1;
                    }
                }
            }
            LeaseEntry::Checkpoint { term, leases } => {
                for (at, remaining_ms) in leases {
                    let Some(l) = self.by_id.get_mut(&at.id) else {
                        continue;
                    };
                    if !decision_holds(term, entry_term, at.renewals, l.renewals) {
                        continue;
                    }
                    l.remaining_ms = remaining_ms.min(l.ttl_ms);
                    out.changes.push(LeaseChange::Checkpointed {
                        id: at.id,
                        renewals: l.renewals,
                        remaining_ms: l.remaining_ms,
                    });
                    out.checkpoints += 1;
                }
            }
        }
        Some(out)
    }

    /// One renewal of lease `id`, if it exists.
    fn renew(&mut self, id: i64, out: &mut LeaseApplied) -> bool {
        let Some(l) = self.by_id.get_mut(&id) else {
            return false;
        };
        l.renewals += 1;
        l.remaining_ms = l.ttl_ms;
        out.changes.push(LeaseChange::Renewed {
            id,
            renewals: l.renewals,
            ttl_ms: l.ttl_ms,
        });
        true
    }

    /// The lease clock's starting point after a restore: each lease's recorded remaining
    /// time (or, `fresh_ttl`, its full TTL: the sabotage of a lessor that ignores
    /// checkpoints), and its TTL.
    pub fn clock_state(&self, fresh_ttl: bool) -> Vec<(LeaseAt, Duration, Duration)> {
        self.by_id
            .iter()
            .map(|(&id, l)| {
                let left = if fresh_ttl { l.ttl_ms } else { l.remaining_ms };
                (
                    LeaseAt {
                        id,
                        renewals: l.renewals,
                    },
                    Duration::from_millis(left),
                    Duration::from_millis(l.ttl_ms),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let at = LeaseAt { id: 4, renewals: 2 };
        for e in [
            LeaseEntry::Grant { id: 4, ttl_ms: 500 },
            LeaseEntry::KeepAlive { id: 4 },
            LeaseEntry::KeepAlives {
                ids: vec![4, -2, 4],
            },
            LeaseEntry::Revoke { id: 4 },
        ] {
            assert_eq!(decode(&client_entry(&e, 9)), Some(e));
        }
        let d = LeaseDecision::Expire {
            term: 3,
            leases: vec![at, LeaseAt { id: 5, renewals: 0 }],
            barrier: None,
        };
        assert_eq!(
            decode(&decision_entry(&d, 2, 7)),
            Some(LeaseEntry::Expire {
                term: 3,
                leases: vec![at, LeaseAt { id: 5, renewals: 0 }]
            })
        );
        let d = LeaseDecision::Checkpoint {
            term: 3,
            leases: vec![(at, Duration::from_millis(120))],
        };
        assert_eq!(
            decode(&decision_entry(&d, 2, 8)),
            Some(LeaseEntry::Checkpoint {
                term: 3,
                leases: vec![(at, 120)]
            })
        );
        assert_eq!(decode(b"op-3"), None);
    }

    #[test]
    fn apply_follows_the_stores_rules() {
        let mut t = LeaseTable::default();
        let grant = client_entry(&LeaseEntry::Grant { id: 1, ttl_ms: 100 }, 1);
        assert!(!t.apply(&grant, 1).unwrap().refused);
        assert!(t.apply(&grant, 1).unwrap().refused, "exists");
        let keep = client_entry(&LeaseEntry::KeepAlive { id: 1 }, 2);
        t.apply(&keep, 1);
        assert_eq!(t.get(1).unwrap().renewals, 1);
        let at = |renewals| LeaseAt { id: 1, renewals };
        // A checkpoint of another term, or of an older renewal, changes nothing.
        let cp = |term, renewals, seq| {
            decision_entry(
                &LeaseDecision::Checkpoint {
                    term,
                    leases: vec![(at(renewals), Duration::from_millis(40))],
                },
                1,
                seq,
            )
        };
        assert_eq!(t.apply(&cp(1, 1, 1), 2).unwrap().checkpoints, 0);
        assert_eq!(t.apply(&cp(2, 0, 2), 2).unwrap().checkpoints, 0);
        assert_eq!(t.apply(&cp(2, 1, 3), 2).unwrap().checkpoints, 1);
        assert_eq!(t.get(1).unwrap().remaining_ms, 40);
        let expire = |term, renewals, seq| {
            decision_entry(
                &LeaseDecision::Expire {
                    term,
                    leases: vec![at(renewals)],
                    barrier: None,
                },
                1,
                seq,
            )
        };
        let stale = t.apply(&expire(2, 0, 4), 2).unwrap();
        assert_eq!((stale.expired.len(), stale.stale_expiries), (0, 1));
        let stale = t.apply(&expire(1, 1, 5), 2).unwrap();
        assert_eq!((stale.expired.len(), stale.stale_expiries), (0, 1));
        let done = t.apply(&expire(2, 1, 6), 2).unwrap();
        assert_eq!(done.expired, vec![1]);
        assert!(t.get(1).is_none());
        assert!(t.apply(&keep, 2).unwrap().refused, "gone");
    }

    #[test]
    fn a_batch_renews_each_lease_it_knows() {
        let mut t = LeaseTable::default();
        for id in [1, 2] {
            t.apply(&client_entry(&LeaseEntry::Grant { id, ttl_ms: 100 }, 1), 1);
        }
        let batch = client_entry(
            &LeaseEntry::KeepAlives {
                ids: vec![2, 7, 1, 2],
            },
            2,
        );
        let out = t.apply(&batch, 1).unwrap();
        assert!(!out.refused);
        let renewed = |id, renewals| LeaseChange::Renewed {
            id,
            renewals,
            ttl_ms: 100,
        };
        assert_eq!(
            out.changes,
            vec![renewed(2, 1), renewed(1, 1), renewed(2, 2)]
        );
    }
}
