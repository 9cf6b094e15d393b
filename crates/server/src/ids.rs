//! Member and cluster IDs.
//!
//! Like etcd, a member's ID is derived from what identifies it in the initial
//! configuration (its name, its sorted peer URLs and the cluster token), and the cluster's
//! ID from the sorted member IDs and the token. Every member computes the same IDs from
//! the same `--initial-cluster`, so no coordination is needed at bootstrap; the IDs are
//! then persisted in the data dir so a restart never depends on the flags again.
//!
//! The hash is FNV-1a over a length-prefixed encoding (so `("ab","c")` and `("a","bc")`
//! differ) followed by a 64-bit finaliser that spreads the bits. It is part of the on-disk
//! format: changing it changes every ID.

/// A 64-bit FNV-1a hasher over length-prefixed fields.
struct IdHasher(u64);

impl IdHasher {
    fn new() -> IdHasher {
        IdHasher(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, data: &[u8]) {
        for b in (data.len() as u64).to_le_bytes().iter().chain(data) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// splitmix64's finaliser; never returns 0 (0 means "nobody" in the core).
    fn finish(self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        if z == 0 {
            1
        } else {
            z
        }
    }
}

/// The ID of the member called `name` with `peer_urls` in the cluster made with `token`.
pub fn member_id(name: &str, peer_urls: &[String], token: &str) -> u64 {
    let mut urls: Vec<&String> = peer_urls.iter().collect();
    urls.sort();
    let mut h = IdHasher::new();
    h.bytes(b"raftkv-member");
    h.bytes(name.as_bytes());
    for u in urls {
        h.bytes(u.as_bytes());
    }
    h.bytes(token.as_bytes());
    h.finish()
}

/// The ID of the cluster whose initial members are `member_ids`, made with `token`.
pub fn cluster_id(member_ids: &[u64], token: &str) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = IdHasher::new();
    h.bytes(b"raftkv-cluster");
    for id in ids {
        h.bytes(&id.to_be_bytes());
    }
    h.bytes(token.as_bytes());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn member_id_ignores_url_order_but_not_token_or_name() {
        let a = member_id("m1", &urls(&["http://a:1", "http://b:2"]), "t");
        let b = member_id("m1", &urls(&["http://b:2", "http://a:1"]), "t");
        assert_eq!(a, b);
        assert_ne!(
            a,
            member_id("m1", &urls(&["http://a:1", "http://b:2"]), "t2")
        );
        assert_ne!(
            a,
            member_id("m2", &urls(&["http://a:1", "http://b:2"]), "t")
        );
        assert_ne!(a, 0);
    }

    #[test]
    fn field_boundaries_matter() {
        assert_ne!(
            member_id("ab", &urls(&["c"]), "t"),
            member_id("a", &urls(&["bc"]), "t")
        );
    }

    #[test]
    fn cluster_id_ignores_member_order() {
        assert_eq!(cluster_id(&[3, 1, 2], "t"), cluster_id(&[1, 2, 3], "t"));
        assert_ne!(cluster_id(&[1, 2, 3], "t"), cluster_id(&[1, 2, 4], "t"));
        assert_ne!(cluster_id(&[1, 2, 3], "t"), cluster_id(&[1, 2, 3], "u"));
    }
}

#[cfg(test)]
mod pinned {
    /// IDs are persisted in data dirs and compared across members built at different
    /// times: the derivation must never change silently.
    #[test]
    fn derivation_is_pinned() {
        let id = super::member_id("m1", &["http://127.0.0.1:2380".to_string()], "etcd-cluster");
        assert_eq!(format!("{id:016x}"), "da0b888cd9eebdaf");
    }
}
