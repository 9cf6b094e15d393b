//! Who gets an answer to a join question ([`Frame::JoinQuery`]), which comes before any
//! handshake (docs/security.md, "Who may ask to join").
//!
//! An answer names the cluster's id, the joiner's member id and every member's id and peer
//! URLs: enough for an outsider to pose as a member that was just added and has not
//! started, and to be recorded in its place (the pre-claim `raftkv peer admit` undoes). So:
//!
//! * over peer mTLS (the connection presented a certificate the peer CA signed, and that
//!   passed `--peer-cert-allowed-cn`/`-hostname`), whoever holds such a certificate is
//!   answered, as a member would be;
//! * otherwise only a question for the peer URLs of a member added with `member add`
//!   (not a founder) is answered, and only when it comes from an address that one of those
//!   URLs' hosts resolves to: an outsider elsewhere cannot pass for the new member's host.
//!
//! A refusal says nothing about the cluster ([`REFUSED`]); the member logs the details.
//!
//! [`Frame::JoinQuery`]: super::Frame::JoinQuery

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// What the acceptor knows of the connection a join question came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Asker {
    /// The connection's source address (`None` where the listener cannot tell).
    pub source: Option<IpAddr>,
    /// The connection passed peer mTLS: it presented a certificate the peer CA signed.
    pub certified: bool,
}

/// The whole of a refusal, whatever its reason: no ids, no URLs.
pub const REFUSED: &str = "this cluster has no member added with these peer URLs that may ask \
     from this address (add it with `member add` first, and start it on the host its peer \
     URLs name)";

/// How long resolving the hosts of the asked URLs may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether `source` is an address that the host of one of `peer_urls` resolves to (an IP
/// literal is its own address). An IPv4 address seen as IPv6 (`::ffff:a.b.c.d`) counts as
/// the IPv4 one.
pub async fn comes_from_url_host(source: IpAddr, peer_urls: &[String]) -> bool {
    let source = source.to_canonical();
    for raw in peer_urls {
        let Ok(url) = url::Url::parse(raw) else {
            continue;
        };
        let port = url.port_or_known_default().unwrap_or(0);
        let addrs: Vec<IpAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
            Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
            Some(url::Host::Domain(name)) => {
                let lookup = tokio::net::lookup_host((name, port));
                match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                    Ok(Ok(found)) => found.map(|a: SocketAddr| a.ip()).collect(),
                    _ => Vec::new(),
                }
            }
            None => Vec::new(),
        };
        if addrs.iter().any(|a| a.to_canonical() == source) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn the_source_must_be_an_address_of_a_url_host() {
        let two: IpAddr = "127.0.0.2".parse().unwrap();
        let nine: IpAddr = "127.0.0.9".parse().unwrap();
        let asked = urls(&["http://127.0.0.2:2380"]);
        assert!(comes_from_url_host(two, &asked).await);
        assert!(!comes_from_url_host(nine, &asked).await);
        // Any of several URLs; an IPv4 address seen through an IPv6 socket.
        let both = urls(&["http://127.0.0.9:2380", "https://127.0.0.2:2381"]);
        assert!(comes_from_url_host(two, &both).await);
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert!(comes_from_url_host(mapped, &asked).await);
        // A name is resolved; garbage matches nothing.
        let named = urls(&["http://localhost:2380"]);
        let one: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(comes_from_url_host(one, &named).await);
        assert!(!comes_from_url_host(one, &urls(&["not a url", "http://"])).await);
    }
}
