//! Working inside a member's network namespace: calling its client API from a thread that
//! joined the namespace, and reading its TCP sockets to know (without sleeping) that a
//! client's connection has reached it.

use crate::exec::run;
use std::fs::File;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

/// Runs `body` to completion on a new thread that has joined `pid`'s network namespace, on a
/// single-threaded runtime of its own: every socket the body opens (127.0.0.1 included) is
/// the member's, so the member is reached the same way whether it is connected to its
/// network, cut off, or paused. The namespace is per thread, which is why the body gets a
/// thread and a runtime to itself and must not hand work to other threads.
pub fn in_netns<T, Fut>(pid: u32, body: impl FnOnce() -> Fut + Send) -> Result<T, String>
where
    T: Send,
    Fut: Future<Output = T>,
{
    let path = format!("/proc/{pid}/ns/net");
    let netns = File::open(&path).map_err(|e| format!("cannot open {path}: {e}"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: setns(2) with a namespace fd we own; it changes only this thread.
                if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let err = std::io::Error::last_os_error();
                    return Err(format!(
                        "cannot enter the network namespace of {pid}: {err}"
                    ));
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot build a runtime: {e}"))?;
                Ok(runtime.block_on(body()))
            })
            .join()
            .map_err(|_| "the thread in the member's namespace panicked".to_string())?
    })
}

/// Number of ESTABLISHED IPv4 TCP connections touching `port` in `pid`'s network namespace.
pub fn established_on_port(pid: u32, port: u16) -> Result<usize, String> {
    let out = run(
        Command::new("nsenter").args(["-t", &pid.to_string(), "-n", "cat", "/proc/net/tcp"]),
        Duration::from_secs(5),
    )
    .into_result("read /proc/net/tcp")?;
    Ok(count_established(&out, port))
}

/// Counts ESTABLISHED (state 01) sockets whose local or remote port is `port` in the text of
/// /proc/net/tcp.
pub fn count_established(proc_net_tcp: &str, port: u16) -> usize {
    let hex_port = format!(":{port:04X}");
    proc_net_tcp
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[3] == "01" && (f[1].ends_with(&hex_port) || f[2].ends_with(&hex_port))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_run_in_a_namespace_reaches_that_namespaces_loopback() {
        // Our own namespace: the listener below is on its loopback, so the body reaches it
        // only if it runs (to completion, with its result returned) where it was sent.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reached = in_netns(std::process::id(), || async move {
            std::net::TcpStream::connect(addr).map(|s| s.peer_addr().unwrap())
        })
        .unwrap();
        assert_eq!(reached.unwrap(), addr);
        let gone = in_netns(u32::MAX, || async {});
        assert!(gone.unwrap_err().contains("/proc/4294967295/ns/net"));
    }

    #[test]
    fn counts_only_established_sockets_on_the_port() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue\n\
   0: 00000000:094B 00000000:0000 0A 00000000:00000000\n\
   1: 0100007F:094B 0100007F:C350 01 00000000:00000000\n\
   2: 0100007F:C350 0100007F:094B 01 00000000:00000000\n\
   3: 0100007F:094C 0100007F:C351 01 00000000:00000000\n\
   4: 0100007F:C352 0100007F:094B 06 00000000:00000000\n";
        // The listener (0A), the peer-port socket and the TIME_WAIT one (06) do not count.
        assert_eq!(count_established(text, 2379), 2);
        assert_eq!(count_established(text, 2380), 1);
        assert_eq!(count_established("header only\n", 2379), 0);
    }
}
