//! The accepted connections of a TLS client listener, as a stream for tonic's server.
//!
//! The accept loop only accepts; each TLS handshake runs in its own task (bounded by a
//! timeout), so a slow or silent client cannot hold up the others. Finished connections
//! go to the server through a channel. With `also_plain` (an `http://` and an `https://`
//! URL on one port) the first byte decides: 0x16 starts a TLS handshake record, anything
//! else is plain HTTP.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How long a client has for its TLS handshake (or to send its first byte on a shared port).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE: u8 = 0x16;

/// A client connection: plain TCP, TLS over TCP, or TLS over a unix socket (`unixs://`;
/// a plain unix socket needs no wrapper and is served as a `UnixStream`).
pub enum ClientConn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    UnixTls(Box<TlsStream<UnixStream>>),
}

/// Accept on `listener` until `shutdown`, yielding connections ready for HTTP.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    also_plain: bool,
    shutdown: CancellationToken,
) -> impl Stream<Item = io::Result<ClientConn>> {
    let (tx, mut rx) = mpsc::channel::<io::Result<ClientConn>>(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.cancelled() => return,
            };
            let (stream, addr) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    debug!(error = %e, "accepting a client connection failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            spawn_handshake(addr.to_string(), tx.clone(), async move {
                if also_plain && !starts_with_tls(&stream).await? {
                    return Ok(ClientConn::Plain(stream));
                }
                let tls = acceptor.accept(stream).await?;
                Ok(ClientConn::Tls(Box::new(tls)))
            });
        }
    });
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// [`incoming`] for a `unixs://` socket (TLS only: see `crate::unix_socket` for why a
/// socket is not shared with plain `unix://`).
pub fn incoming_unix(
    listener: UnixListener,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> impl Stream<Item = io::Result<ClientConn>> {
    let (tx, mut rx) = mpsc::channel::<io::Result<ClientConn>>(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.cancelled() => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    debug!(error = %e, "accepting a client connection failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            spawn_handshake("unix socket".to_string(), tx.clone(), async move {
                let tls = acceptor.accept(stream).await?;
                Ok(ClientConn::UnixTls(Box::new(tls)))
            });
        }
    });
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Run one connection's handshake in its own task, bounded by [`HANDSHAKE_TIMEOUT`], and
/// hand the connection to the server when it succeeds.
fn spawn_handshake(
    addr: String,
    tx: mpsc::Sender<io::Result<ClientConn>>,
    handshake: impl std::future::Future<Output = io::Result<ClientConn>> + Send + 'static,
) {
    tokio::spawn(async move {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(conn)) => {
                let _ = tx.send(Ok(conn)).await;
            }
            Ok(Err(e)) => debug!(%addr, error = %e, "client TLS handshake failed"),
            Err(_) => debug!(%addr, "client TLS handshake timed out"),
        }
    });
}

/// Whether the client's first byte starts a TLS handshake (waits for it).
async fn starts_with_tls(stream: &TcpStream) -> io::Result<bool> {
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await?;
    Ok(n == 1 && first[0] == TLS_HANDSHAKE)
}

impl ClientConn {
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            ClientConn::Plain(s) => Some(s),
            ClientConn::Tls(s) => Some(s.get_ref().0),
            ClientConn::UnixTls(_) => None,
        }
    }
}

/// What a request learns about its connection: the TCP addresses (none on a unix socket) and, on a TLS connection
/// with a verified client certificate, that certificate's common name (the user a request
/// without a token acts as under `--client-cert-auth`, crate::auth::identity).
#[derive(Clone, Debug)]
pub struct ClientConnInfo {
    pub tcp: Option<tonic::transport::server::TcpConnectInfo>,
    pub common_name: Option<String>,
}

impl tonic::transport::server::Connected for ClientConn {
    type ConnectInfo = ClientConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        let certificates = match self {
            ClientConn::Plain(_) => None,
            ClientConn::Tls(s) => s.get_ref().1.peer_certificates(),
            ClientConn::UnixTls(s) => s.get_ref().1.peer_certificates(),
        };
        let common_name = certificates
            .and_then(|chain| chain.first())
            .and_then(|leaf| common_name(leaf));
        ClientConnInfo {
            tcp: self.tcp().map(|s| s.connect_info()),
            common_name,
        }
    }
}

/// The first common name of a certificate's subject.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .find_map(|a| a.as_str().ok().map(str::to_string));
    cn
}

impl AsyncRead for ClientConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientConn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientConn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            ClientConn::UnixTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientConn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientConn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            ClientConn::UnixTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientConn::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientConn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            ClientConn::UnixTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientConn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientConn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            ClientConn::UnixTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientConn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientConn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            ClientConn::UnixTls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientConn::Plain(s) => s.is_write_vectored(),
            ClientConn::Tls(s) => s.is_write_vectored(),
            ClientConn::UnixTls(s) => s.is_write_vectored(),
        }
    }
}
