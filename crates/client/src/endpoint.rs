//! Endpoint strings and the gRPC channels behind them.
//!
//! Users write endpoints as etcdctl does (`host:port` or a URL); tonic needs a URL. Every
//! channel gets a dial timeout, because an address that silently drops packets (a partitioned
//! or paused member) otherwise stalls a caller for the kernel's TCP connect timeout, minutes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tonic::transport::{Channel, Endpoint};

use crate::tls::TlsConnector;

/// `host:port` or a URL; returns the URL tonic needs.
pub fn endpoint_url(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

/// Splits a `--endpoints` value (comma-separated, blanks ignored).
pub fn parse_endpoints(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The tonic endpoint for `address` with `dial` as connect timeout. `request_timeout`, when
/// given, bounds every call on the channel (tonic then fails it with `CANCELLED`), which
/// suits callers that never want to wait longer than one deadline for anything.
fn endpoint(address: &str, dial: Duration, request_timeout: Option<Duration>) -> Result<Endpoint> {
    let endpoint = Endpoint::from_shared(endpoint_url(address))
        .with_context(|| format!("invalid endpoint {address:?}"))?
        .connect_timeout(dial)
        .tcp_nodelay(true);
    Ok(match request_timeout {
        Some(limit) => endpoint.timeout(limit),
        None => endpoint,
    })
}

/// A channel that dials on first use and re-dials after the connection breaks: a member that
/// is down when the channel is made (or later restarts) is simply reached by a later call.
/// Must be called inside a tokio runtime.
pub fn lazy_channel(
    address: &str,
    dial: Duration,
    request_timeout: Option<Duration>,
) -> Result<Channel> {
    Ok(endpoint(address, dial, request_timeout)?.connect_lazy())
}

/// [`lazy_channel`] with TLS: with `tls` given, an `https://` endpoint, or a `host:port` one
/// (as etcdctl does once any TLS flag is set), is dialled over TLS; an `https://` endpoint
/// without `tls` is an error naming the flags it needs.
pub fn lazy_channel_tls(
    address: &str,
    dial: Duration,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Channel> {
    match tls {
        Some(config) => {
            let url = if address.contains("://") {
                address.to_string()
            } else {
                format!("https://{address}")
            };
            if !url.starts_with("https://") {
                return Ok(endpoint(address, dial, None)?.connect_lazy());
            }
            Ok(endpoint(&url, dial, None)?
                .connect_with_connector_lazy(TlsConnector::new(config.clone())))
        }
        None if address.starts_with("https://") => {
            anyhow::bail!(
                "endpoint {address} is https://: give --cacert (or --insecure-skip-tls-verify)"
            )
        }
        None => lazy_channel(address, dial, None),
    }
}

/// A channel connected now, so a load generator does not count dialling in its first
/// requests' latency, and a wrong address fails before the run instead of during it.
pub async fn connect(address: &str, dial: Duration) -> Result<Channel> {
    endpoint(address, dial, None)?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", endpoint_url(address)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_split_trimmed_and_made_urls() {
        assert_eq!(
            parse_endpoints(" 127.0.0.1:1, http://h:2 ,,"),
            vec!["127.0.0.1:1".to_string(), "http://h:2".to_string()]
        );
        assert_eq!(endpoint_url("127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(endpoint_url("http://a:1"), "http://a:1");
    }

    #[test]
    fn a_malformed_endpoint_is_an_error_naming_it() {
        let err = endpoint("http://bad host:1", Duration::from_secs(1), None).unwrap_err();
        assert!(err.to_string().contains("bad host"), "{err}");
    }
}
