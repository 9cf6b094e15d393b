//! `unix://` and `unixs://` client URLs: the client port on a unix domain socket.
//!
//! etcd takes the socket path as everything after `scheme://` (Go's `url.Host + url.Path`),
//! so `unix://localhost:2379` is a socket file named `localhost:2379` in the working
//! directory (the form etcd's own e2e suite uses) and `unix:///run/etcd.sock` an absolute
//! path. Both forms are accepted here; etcd 3.4 itself refuses the second one for
//! `--listen-client-urls` ("URL address does not have the form host:port"), so accepting it
//! is a widening, not a difference in meaning.
//!
//! A socket serves exactly what a TCP client port serves (gRPC, the HTTP endpoints and the
//! JSON gateway); `unixs://` adds TLS with the client TLS flags, as `https://` does. One
//! path cannot be both `unix://` and `unixs://`: telling TLS from plain on one socket
//! needs to peek at the first byte, which tokio offers for TCP only.
//!
//! A socket file left behind by a member that was killed would make every restart fail
//! with "address in use", which is what etcd 3.4 does for client sockets (its peer sockets
//! remove the old file first). raftkv removes such a file, but only when it is provably
//! stale: it is a socket and nothing accepts a connection on it. A live socket (another
//! member still running) or a file that is not a socket stays, and start-up stops with an
//! error saying which. On a clean shutdown the member removes its sockets, as Go's
//! listener does when etcd closes it.

use std::io;
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use futures_util::Stream;
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info};

/// `Some((scheme, path))` when `raw` is a `unix://` or `unixs://` URL. The path is the
/// rest of the URL up to a query or fragment; an empty one is refused by the callers'
/// `check_path`.
pub fn split_url(raw: &str) -> Option<(&'static str, PathBuf)> {
    let (scheme, rest) = if let Some(rest) = raw.strip_prefix("unix://") {
        ("unix", rest)
    } else if let Some(rest) = raw.strip_prefix("unixs://") {
        ("unixs", rest)
    } else {
        return None;
    };
    let path = rest.split(['?', '#']).next().unwrap_or_default();
    Some((scheme, PathBuf::from(path)))
}

/// Whether a listen URL is served with TLS.
pub fn is_secure(url: &str) -> bool {
    url.starts_with("unixs://")
}

/// The errors every socket path can have before anything is touched.
fn check_path(url: &str, path: &Path) -> anyhow::Result<()> {
    if path.as_os_str().is_empty() {
        bail!("--listen-client-urls: {url:?} names no socket path");
    }
    // sockaddr_un's sun_path is 108 bytes including the terminating NUL.
    if path.as_os_str().len() > 107 {
        bail!(
            "cannot listen on {url}: the socket path is {} bytes long; unix sockets take at most 107",
            path.as_os_str().len()
        );
    }
    Ok(())
}

/// What is at a socket path before we bind it.
enum Existing {
    Nothing,
    /// A socket file nobody accepts connections on.
    Stale,
}

/// Look at what is at `path`: nothing, a stale socket, or an error for a live socket or
/// a file that is not a socket.
fn existing(url: &str, path: &Path) -> anyhow::Result<Existing> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Nothing),
        Err(e) => return Err(e).with_context(|| format!("cannot listen on {url}")),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "cannot listen on {url}: {} exists and is not a socket",
            path.display()
        );
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => bail!(
            "cannot listen on {url}: another process is serving {} (address already in use)",
            path.display()
        ),
        Err(_) => Ok(Existing::Stale),
    }
}

/// The dry run's check: the socket could be bound now. A stale socket counts as bindable
/// (the real start removes it); nothing is removed here.
pub fn check_bindable(url: &str, path: &Path) -> anyhow::Result<()> {
    check_path(url, path)?;
    match existing(url, path)? {
        Existing::Stale => Ok(()),
        Existing::Nothing => {
            let l = std::os::unix::net::UnixListener::bind(path)
                .with_context(|| format!("cannot listen on {url}"))?;
            drop(l);
            let _ = std::fs::remove_file(path);
            Ok(())
        }
    }
}

/// The file of a bound client socket; removed when this is dropped (the member's clean
/// shutdown), as long as it is still our socket.
pub struct SocketFile {
    path: PathBuf,
    /// The inode we created, so a file some later process put at the path is left alone.
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt as _;
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Bind the socket of `url` at `path`, first removing a stale socket file there.
pub fn bind(url: &str, path: &Path) -> anyhow::Result<(UnixListener, SocketFile)> {
    use std::os::unix::fs::MetadataExt as _;
    check_path(url, path)?;
    if let Existing::Stale = existing(url, path)? {
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
        info!(path = %path.display(), "removed a stale unix socket left by an earlier process");
    }
    let listener = UnixListener::bind(path).with_context(|| format!("cannot listen on {url}"))?;
    let ino = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot listen on {url}"))?
        .ino();
    let file = SocketFile {
        path: path.to_path_buf(),
        ino,
    };
    Ok((listener, file))
}

/// The accepted connections of a plain socket, as a stream for tonic's server. A failed
/// accept (out of descriptors) is logged and retried, not fatal: the TCP listener does
/// the same.
pub fn incoming(listener: &UnixListener) -> impl Stream<Item = io::Result<UnixStream>> + '_ {
    futures_util::stream::unfold(listener, |l| async move {
        loop {
            match l.accept().await {
                Ok((stream, _)) => return Some((Ok(stream), l)),
                Err(e) => {
                    debug!(error = %e, "accepting a unix socket connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_is_everything_after_the_scheme_as_in_etcd() {
        assert_eq!(
            split_url("unix:///run/e.sock"),
            Some(("unix", PathBuf::from("/run/e.sock")))
        );
        assert_eq!(
            split_url("unix://localhost:2379"),
            Some(("unix", PathBuf::from("localhost:2379")))
        );
        assert_eq!(
            split_url("unixs://a.sock?x=1"),
            Some(("unixs", PathBuf::from("a.sock")))
        );
        assert_eq!(split_url("http://a:1"), None);
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_or_a_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let url = format!("unix://{}", path.display());
        // Stale: bound once and closed without removing the file.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let bound = bind(&url, &path).unwrap();
        // Live: a second member on the same path is refused.
        let e = bind(&url, &path).err().unwrap();
        assert!(format!("{e:#}").contains("already in use"), "{e:#}");
        drop(bound);
        assert!(!path.exists(), "the socket outlived its listener");
        std::fs::write(&path, b"data").unwrap();
        let e = bind(&url, &path).err().unwrap();
        assert!(format!("{e:#}").contains("is not a socket"), "{e:#}");
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }
}
