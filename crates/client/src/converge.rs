//! Waiting until replicas hold the same data, seen through etcd's `HashKV`.
//!
//! `HashKV` fingerprints a member's whole key history up to a revision, so equal hashes at
//! one revision mean the members applied the same writes: the check the demo and the tests
//! use to see a restarted member catch up.

use std::time::{Duration, Instant};

use crate::client::Client;

/// The hash every member agreed on, and the revision it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Converged {
    pub revision: i64,
    pub hash: u32,
}

/// Polls until every `(name, client)` reports the same `HashKV` (hash and compact revision)
/// at the first one's current revision, or fails after `limit` with the last reason.
pub async fn wait_for_equal_hashes(
    members: &[(String, Client)],
    limit: Duration,
) -> Result<Converged, String> {
    let deadline = Instant::now() + limit;
    let (first_name, reference) = members.first().ok_or("no member to compare")?;
    let revision = reference
        .hash_kv(0)
        .await
        .map_err(|e| format!("HashKV on {first_name} failed: {e}"))?
        .header
        .map_or(0, |h| h.revision);
    let mut last = String::new();
    loop {
        let mut hashes = Vec::new();
        for (name, client) in members {
            match client.hash_kv(revision).await {
                Ok(h) => hashes.push((name.clone(), h.hash, h.compact_revision)),
                Err(e) => {
                    last = format!("{name}: {}", e.message());
                    break;
                }
            }
        }
        if hashes.len() == members.len() {
            if hashes
                .iter()
                .all(|h| (h.1, h.2) == (hashes[0].1, hashes[0].2))
            {
                return Ok(Converged {
                    revision,
                    hash: hashes[0].1,
                });
            }
            last = format!("hashes differ: {hashes:?}");
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "replicas did not converge at revision {revision} within {limit:?}: {last}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
