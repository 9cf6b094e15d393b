//! No early expiry: a lease is revoked by an expiry no earlier than the TTL promised by the
//! last keep-alive (or grant) a client had acknowledged, counted from that answer (when the
//! client received it: the simulator answers at the member's apply), in virtual time (one
//! unit is one ms, the drivers' and lease clocks' scale; the simulator's members share one
//! clock, so there is no skew to allow for). The promise is what the member answered
//! (`Cluster::observe_lease_ack`: the TTL less how late it answered, beyond the leaders'
//! expiry grace). "Revoked" is the moment the expiry entry is first applied anywhere, the
//! earliest any client can see the lease gone.
//!
//! Both orders are checked: an expiry that takes effect too soon after an acknowledged
//! renewal, and an acknowledgement (a member that applied the renewal late) whose promise
//! reaches past an expiry that already took effect.

use std::collections::BTreeMap;

use super::Violation;

const NAME: &str = "lease-no-early-expiry";

#[derive(Debug, Default)]
pub struct LeaseTiming {
    /// Per lease: the latest acknowledgement and the TTL it promised (both in units).
    acked: BTreeMap<i64, (u64, u64)>,
    /// Per lease: when its expiry took effect.
    expired_at: BTreeMap<i64, u64>,
}

impl LeaseTiming {
    /// A client was told, at `at`, that lease `id` runs `ttl` from then.
    pub fn observe_ack(&mut self, id: i64, ttl: u64, at: u64) -> Result<(), Violation> {
        if let Some(&gone) = self.expired_at.get(&id) {
            if gone < at + ttl {
                return Err(Violation::new(
                    NAME,
                    format!(
                        "lease {id}: a renewal for {ttl} was acknowledged at {at}, but its expiry took effect at {gone}"
                    ),
                ));
            }
        }
        let e = self.acked.entry(id).or_insert((at, ttl));
        if at + ttl >= e.0 + e.1 {
            *e = (at, ttl);
        }
        Ok(())
    }

    /// An expiry that revokes lease `id` was first applied at `at`.
    pub fn observe_expiry(&mut self, id: i64, at: u64) -> Result<(), Violation> {
        self.expired_at.insert(id, at);
        match self.acked.get(&id) {
            Some(&(acked, ttl)) if at < acked + ttl => Err(Violation::new(
                NAME,
                format!(
                    "lease {id} expired at {at}, {} before the TTL {ttl} acknowledged at {acked} ran out",
                    acked + ttl - at
                ),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_before_the_acknowledged_ttl_ran_out_is_caught() {
        let mut c = LeaseTiming::default();
        c.observe_ack(1, 100, 0).unwrap();
        c.observe_ack(1, 100, 50).unwrap();
        c.observe_expiry(1, 149).unwrap_err();
        let mut c = LeaseTiming::default();
        c.observe_ack(1, 100, 50).unwrap();
        c.observe_expiry(1, 150).unwrap();
    }

    #[test]
    fn a_late_acknowledgement_of_an_expired_lease_is_caught() {
        let mut c = LeaseTiming::default();
        c.observe_ack(2, 100, 0).unwrap();
        c.observe_expiry(2, 120).unwrap();
        c.observe_ack(2, 100, 30).unwrap_err();
    }
}
