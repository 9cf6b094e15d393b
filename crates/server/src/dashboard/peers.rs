//! The cluster view: this member's status plus every other member's, fetched by this member
//! from the others' `/dashboard/api/status` (`GET /dashboard/api/cluster`).
//!
//! Why the serving member fetches (a proxy) rather than the browser: the browser may reach
//! only the member it was pointed at (a `kubectl port-forward`, a load balancer), while the
//! members always reach each other's advertised client URLs; and one origin needs no CORS.
//! Only `http://` client URLs are fetched: a member whose client URLs are all `https://`
//! shows in the list without live figures (the dashboard does not carry client TLS
//! credentials to dial it).

use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::status::member_status;
use crate::grpc::{ClusterService, Context};

/// How long one peer may take to answer; a slow or dead member must not hold up the page.
pub const PEER_TIMEOUT: Duration = Duration::from_millis(1500);

/// The most a peer's status answer may be (it is a few KiB).
const MAX_ANSWER: u64 = 1 << 20;

/// What `/dashboard/api/cluster` answers.
#[derive(Serialize, Debug)]
pub struct ClusterView {
    /// The member serving this page.
    pub served_by: String,
    pub members: Vec<MemberView>,
}

/// One member of the replicated member list, with its status or why there is none.
#[derive(Serialize, Debug)]
pub struct MemberView {
    pub id: String,
    pub name: String,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
    /// A `/dashboard/api/status` answer (a peer's is passed on as it came).
    pub status: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// This member's view of the whole cluster.
pub async fn cluster_view(ctx: &Context) -> Result<ClusterView, tonic::Status> {
    let members = ClusterService(ctx.clone()).members()?;
    // One task per member, so a dead member costs the page one timeout, not one each.
    let fetches: Vec<_> = members
        .into_iter()
        .map(|m| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let mut view = MemberView {
                    id: format!("{:x}", m.id),
                    name: m.name.clone(),
                    client_urls: m.client_ur_ls.clone(),
                    is_learner: m.is_learner,
                    status: None,
                    error: None,
                };
                if m.id == ctx.node.id {
                    view.status = serde_json::to_value(member_status(&ctx)).ok();
                    return view;
                }
                match peer_status(&m.client_ur_ls).await {
                    Ok(v) => view.status = Some(v),
                    Err(e) => view.error = Some(e),
                }
                view
            })
        })
        .collect();
    let mut views = Vec::with_capacity(fetches.len());
    for f in fetches {
        views.push(
            f.await
                .map_err(|e| tonic::Status::internal(e.to_string()))?,
        );
    }
    Ok(ClusterView {
        served_by: format!("{:x}", ctx.node.id),
        members: views,
    })
}

/// A peer's status from the first of its client URLs that answers.
async fn peer_status(client_urls: &[String]) -> Result<serde_json::Value, String> {
    let plain: Vec<&String> = client_urls
        .iter()
        .filter(|u| u.starts_with("http://"))
        .collect();
    if plain.is_empty() {
        return Err(if client_urls.is_empty() {
            "no client URL known yet (not started, or not heard from)".to_string()
        } else {
            "only https:// client URLs: not fetched by the dashboard".to_string()
        });
    }
    let mut last = String::new();
    for url in plain {
        match tokio::time::timeout(PEER_TIMEOUT, http_get(url, "/dashboard/api/status")).await {
            Ok(Ok(body)) => {
                return serde_json::from_str(&body).map_err(|e| format!("{url}: bad JSON: {e}"))
            }
            Ok(Err(e)) => last = format!("{url}: {e}"),
            Err(_) => last = format!("{url}: no answer within {PEER_TIMEOUT:?}"),
        }
    }
    Err(last)
}

/// A plain HTTP/1.1 GET of `path` on `base` (`http://host:port`); the body of a 200.
async fn http_get(base: &str, path: &str) -> Result<String, String> {
    let url = url::Url::parse(base).map_err(|e| e.to_string())?;
    let host = url.host_str().ok_or("no host")?;
    let port = url.port_or_known_default().ok_or("no port")?;
    let mut stream = TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| e.to_string())?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut raw)
        .await
        .map_err(|e| e.to_string())?;
    parse_response(&raw)
}

/// The body of a `200` answer; chunked bodies are decoded.
fn parse_response(raw: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("truncated answer")?;
    let status_line = head.lines().next().unwrap_or_default();
    match status_line.split_whitespace().nth(1) {
        Some("200") => {}
        Some("404") => {
            return Err("no dashboard there (404: turned off, or an older raftkv)".into())
        }
        _ => return Err(format!("answered {status_line:?}")),
    }
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Ok(body.to_string());
    }
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n").ok_or("truncated chunk")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = after.get(..size).ok_or("truncated chunk")?;
        out.push_str(chunk);
        rest = after.get(size..).unwrap_or("").trim_start_matches("\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_chunked_answers_are_read() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n{\"a\":1}";
        assert_eq!(parse_response(plain).unwrap(), "{\"a\":1}");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), "{\"a\":1}");
    }

    #[test]
    fn refusals_say_why() {
        let off = b"HTTP/1.1 404 Not Found\r\n\r\n404 page not found\n";
        assert!(parse_response(off).unwrap_err().contains("turned off"));
        let broken = b"HTTP/1.1 503 Service Unavailable\r\n\r\n";
        assert!(parse_response(broken).unwrap_err().contains("503"));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
