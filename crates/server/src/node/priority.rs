//! The CPU priority of the threads that keep Raft's clock: the node thread and the peer
//! transport's thread (`crate::lib::run_with_hooks` gives the transport a runtime of its own),
//! and of the one that nobody waits for: the snapshot writer ([`lower_snapshot_writer`]).
//!
//! Why: under full load the member's gRPC threads (decoding and copying client requests)
//! and whatever else runs on the machine compete with the node thread for the CPU, and the
//! scheduler shares it evenly among runnable threads. A node thread that waits its turn
//! behind a dozen busy threads runs its round late, and a late round on a leader is a late
//! heartbeat: with 500 clients writing 512 KiB values on a loaded 2-core machine, rounds
//! with 20 ms of work took 1.5–2.2 s of wall-clock time and the followers elected another
//! leader (issue 18). The node thread does little work per request, so a higher priority
//! for it costs the other threads little and keeps Raft's clock on time.

use tracing::{debug, info};

/// How many nice levels above the process's the node thread asks for (each level is ~25 %
/// more CPU share under contention, so 5 levels is about 3× a normal thread's share).
pub const NODE_THREAD_BOOST: i32 = 5;

/// Raise the node thread's priority ([`raise_current_thread`]).
pub fn raise_node_thread() {
    raise_current_thread("node thread");
}

/// Raise the calling thread's priority by [`NODE_THREAD_BOOST`] nice levels if the
/// process may (root, `CAP_SYS_NICE`, or an `RLIMIT_NICE` that allows it); otherwise keep
/// it and say so. Linux applies a nice value to the calling thread alone. `what` names the
/// thread in the log.
pub fn raise_current_thread(what: &str) {
    #[cfg(target_os = "linux")]
    {
        let tid = current_thread();
        let wanted = nice_of(tid) - NODE_THREAD_BOOST;
        match set_nice(tid, wanted) {
            Ok(()) => debug!(nice = wanted, thread = what, "thread priority raised"),
            Err(error) => info!(
                %error,
                thread = what,
                "cannot raise the thread's priority (needs CAP_SYS_NICE or RLIMIT_NICE); \
                 under CPU contention its heartbeats may go out late"
            ),
        }
    }
}

/// How many nice levels below the process's the snapshot writer runs.
pub const SNAPSHOT_WRITER_DROP: i32 = 10;

/// Lower the calling thread (the snapshot writer) to the process's nice value plus
/// [`SNAPSHOT_WRITER_DROP`], at most 19. Why: encoding and writing a large store is seconds
/// of CPU that nobody waits for, and it competed on equal terms with the threads answering
/// requests: with a snapshot every 100,000 puts the put p99 at 100 and 1,000 clients was
/// 0.94–1.61× etcd's, against 0.64–0.74× without snapshots (bench/RESULTS.md, "Snapshots
/// streamed at low priority"). Relative to the process, not to the node thread it is
/// spawned from (which runs raised). Any process may lower a thread; a failure is logged.
pub fn lower_snapshot_writer() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `getpid` takes no arguments and cannot fail.
        let process = nice_of(unsafe { libc::getpid() } as libc::id_t);
        let wanted = (process + SNAPSHOT_WRITER_DROP).min(19);
        if let Err(error) = set_nice(current_thread(), wanted) {
            debug!(%error, "cannot lower the snapshot writer's priority");
        }
    }
}

/// The calling thread's id (Linux applies a nice value to one thread).
#[cfg(target_os = "linux")]
fn current_thread() -> libc::id_t {
    // SAFETY: a plain system call without arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::id_t }
}

/// The nice value of thread (or process) `id`.
#[cfg(target_os = "linux")]
fn nice_of(id: libc::id_t) -> i32 {
    // SAFETY: plain system calls; no memory is shared. errno is reset first because -1 is
    // also a valid priority.
    unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, id)
    }
}

/// Sets thread `tid`'s nice value.
#[cfg(target_os = "linux")]
fn set_nice(tid: libc::id_t, nice: i32) -> std::io::Result<()> {
    // SAFETY: a plain system call; no memory is shared.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
