//! A cache of passwords already checked against a stored bcrypt hash.
//!
//! bcrypt is slow on purpose (tens to hundreds of milliseconds at the default cost), and
//! etcd's clients authenticate at every connection: etcdctl with `--user` pays it for every
//! command. As etcd does since etcd#9713, a member remembers which (user, stored hash,
//! password) triples it has verified, so the next `Authenticate` with the same password
//! skips bcrypt. What is remembered is an HMAC-SHA256 of the password under a key drawn at
//! start and never stored, not the password; an entry is worthless once the user's hash
//! changes (new password, user re-created), because the stored hash is part of the entry.

use std::collections::HashSet;
use std::sync::Mutex;

use ring::hmac;
use ring::rand::SystemRandom;

/// Entries kept at most; the cache starts over when full (it is only a shortcut).
const MAX_ENTRIES: usize = 4096;

pub struct VerifiedPasswords {
    key: hmac::Key,
    seen: Mutex<HashSet<(String, String, Vec<u8>)>>,
}

impl Default for VerifiedPasswords {
    fn default() -> Self {
        VerifiedPasswords::new()
    }
}

impl VerifiedPasswords {
    pub fn new() -> Self {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .expect("the operating system's random number generator failed");
        VerifiedPasswords {
            key,
            seen: Mutex::new(HashSet::new()),
        }
    }

    fn entry(&self, user: &str, hash: &str, password: &str) -> (String, String, Vec<u8>) {
        let mac = hmac::sign(&self.key, password.as_bytes());
        (user.to_string(), hash.to_string(), mac.as_ref().to_vec())
    }

    /// Whether this password was verified against this hash before.
    pub fn contains(&self, user: &str, hash: &str, password: &str) -> bool {
        let entry = self.entry(user, hash, password);
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&entry)
    }

    /// Records a successful bcrypt verification.
    pub fn insert(&self, user: &str, hash: &str, password: &str) {
        let entry = self.entry(user, hash, password);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_ENTRIES {
            seen.clear();
        }
        seen.insert(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_user_hash_and_password_hit() {
        let cache = VerifiedPasswords::new();
        cache.insert("alice", "$2b$04$hash1", "pw");
        assert!(cache.contains("alice", "$2b$04$hash1", "pw"));
        assert!(!cache.contains("alice", "$2b$04$hash1", "pw2"));
        assert!(
            !cache.contains("alice", "$2b$04$hash2", "pw"),
            "a new hash invalidates"
        );
        assert!(!cache.contains("bob", "$2b$04$hash1", "pw"));
    }
}
