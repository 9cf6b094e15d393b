//! Member and cluster IDs, derived exactly as etcd derives them.
//!
//! A member's ID is the first 8 bytes (big-endian) of the SHA-1 of its sorted peer URLs
//! concatenated, followed by the cluster token; the cluster's ID is the first 8 bytes of the
//! SHA-1 of the sorted member IDs, each as 8 big-endian bytes. The member's name takes no
//! part, as in etcd. Every member computes the same IDs from the same `--initial-cluster`,
//! so no coordination is needed at bootstrap, and `etcdctl member list` shows the IDs a real
//! etcd started with the same flags would show (tools and tests that compare IDs, or golden
//! `-w protobuf` output, see no difference). The IDs are persisted in the data dir, so a
//! restart never depends on the flags again; data dirs written by raftkv builds that used
//! the earlier FNV-based derivation record other IDs and are refused at open.

use sha1::{Digest, Sha1};

/// The first 8 bytes of a SHA-1 digest as a big-endian integer (etcd's `types.ID`).
fn first_u64(digest: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

/// The ID of the member with `peer_urls` in the cluster made with `token`.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls: Vec<&String> = peer_urls.iter().collect();
    urls.sort();
    let mut h = Sha1::new();
    for u in urls {
        h.update(u.as_bytes());
    }
    h.update(token.as_bytes());
    first_u64(&h.finalize())
}

/// The ID of the cluster whose initial members are `member_ids`.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    first_u64(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn member_id_ignores_url_order_but_not_token() {
        let a = member_id(&urls(&["http://a:1", "http://b:2"]), "t");
        let b = member_id(&urls(&["http://b:2", "http://a:1"]), "t");
        assert_eq!(a, b);
        assert_ne!(a, member_id(&urls(&["http://a:1", "http://b:2"]), "t2"));
        assert_ne!(a, member_id(&urls(&["http://a:1"]), "t"));
    }

    #[test]
    fn cluster_id_ignores_member_order() {
        assert_eq!(cluster_id(&[3, 1, 2]), cluster_id(&[1, 2, 3]));
        assert_ne!(cluster_id(&[1, 2, 3]), cluster_id(&[1, 2, 4]));
    }

    /// The IDs etcd 3.4.23 printed (`etcdctl member list -w json`) for
    /// `--initial-advertise-peer-urls http://localhost:20991 --initial-cluster-token new`.
    #[test]
    fn same_ids_as_etcd_single_member() {
        let m = member_id(&urls(&["http://localhost:20991"]), "new");
        assert_eq!(m, 2_053_338_372_559_917_437);
        assert_eq!(cluster_id(&[m]), 8_296_169_460_758_498_163);
    }

    /// The IDs etcd 3.4.23 printed for a three-member cluster started with
    /// `--initial-cluster a=http://127.0.0.1:24102,b=http://127.0.0.1:24104,c=http://127.0.0.1:24106
    /// --initial-cluster-token idcheck`.
    #[test]
    fn same_ids_as_etcd_three_members() {
        let ids: Vec<u64> = [24102, 24104, 24106]
            .iter()
            .map(|p| member_id(&[format!("http://127.0.0.1:{p}")], "idcheck"))
            .collect();
        assert_eq!(
            ids,
            [
                4_851_245_173_159_349_647,
                13_484_832_908_482_245_625,
                14_928_023_831_787_147_453
            ]
        );
        assert_eq!(cluster_id(&ids), 3_267_665_626_863_423_527);
    }
}
