//! Which errors may be retried, and where.
//!
//! Three different questions, answered once for every caller:
//!
//! * **Try another endpoint?** ([`try_next_endpoint`]) Only on `UNAVAILABLE`: the member could
//!   not be reached, has no leader, or is shutting down. Every member accepts every request
//!   (followers forward to the leader), so the client never has to look for the leader
//!   itself; it moves on only when a member cannot serve at all. Any other error is the
//!   cluster's answer and goes back to the caller unchanged, with etcd's code and message.
//! * **Try again later?** ([`is_transient`]) `UNAVAILABLE` and `DEADLINE_EXCEEDED` say "not
//!   now" (an election is in progress, a quorum is being restored). Retrying them is right for
//!   reads and for writes whose duplicate the caller tolerates, not for every write: a request
//!   that timed out may still have been applied.
//! * **Was it executed?** ([`proves_not_executed`]) What a history checker needs: only errors
//!   raised before anything was proposed prove the request had no effect; everything else
//!   (timeouts, broken connections, `UNAVAILABLE` after sending) leaves the outcome unknown.

use std::future::Future;
use std::time::Duration;

use tonic::{Code, Status};

use crate::client::CallError;

/// Whether a client with several endpoints should send the same request to the next one.
pub fn try_next_endpoint(code: Code) -> bool {
    code == Code::Unavailable
}

/// Whether the cluster may answer the same request later (see the module docs for when a
/// caller may act on that).
pub fn is_transient(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::DeadlineExceeded)
}

/// Whether an error status proves the request had no effect on the cluster.
pub fn proves_not_executed(status: &Status) -> bool {
    match status.code() {
        // Rejected by validation before anything was proposed.
        Code::InvalidArgument
        | Code::OutOfRange
        | Code::FailedPrecondition
        | Code::Unimplemented
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::ResourceExhausted => true,
        // The TCP connection could not even be opened: nothing was sent.
        Code::Unavailable => status.message().contains("tcp connect error"),
        _ => false,
    }
}

/// How long and how often to retry: a fixed pause between attempts (elections take a few
/// hundred milliseconds, so a growing backoff would only add latency) up to an overall limit.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// No new attempt starts after this much time.
    pub limit: Duration,
    /// Pause between a failed attempt and the next.
    pub backoff: Duration,
}

impl RetryPolicy {
    /// Retries transient errors for up to `limit`, every 100 ms.
    pub fn transient_for(limit: Duration) -> Self {
        RetryPolicy {
            limit,
            backoff: Duration::from_millis(100),
        }
    }

    /// Runs `attempt` until it succeeds, fails with an error `retry_if` rejects, or the limit
    /// passes (then the last error is returned).
    pub async fn run<T, F, Fut>(
        &self,
        retry_if: impl Fn(&CallError) -> bool,
        mut attempt: F,
    ) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        // tokio's clock (the real one outside tests) so paused-time tests see the limit.
        let deadline = tokio::time::Instant::now() + self.limit;
        loop {
            match attempt().await {
                Err(e) if retry_if(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(self.backoff).await;
                }
                outcome => return outcome,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: Code, message: &str) -> CallError {
        CallError {
            endpoint: "e".into(),
            status: Status::new(code, message),
        }
    }

    #[test]
    fn only_unavailable_moves_to_the_next_endpoint() {
        assert!(try_next_endpoint(Code::Unavailable));
        for code in [Code::DeadlineExceeded, Code::InvalidArgument, Code::Unknown] {
            assert!(!try_next_endpoint(code), "{code:?}");
        }
    }

    #[test]
    fn execution_is_disproved_only_before_sending_or_by_validation() {
        assert!(proves_not_executed(&Status::invalid_argument(
            "too many ops"
        )));
        assert!(proves_not_executed(&Status::unavailable(
            "tcp connect error: refused"
        )));
        assert!(!proves_not_executed(&Status::unavailable("no leader")));
        assert!(!proves_not_executed(&Status::deadline_exceeded("late")));
        assert!(!proves_not_executed(&Status::unknown("broken pipe")));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_until_success() {
        let mut calls = 0;
        let policy = RetryPolicy::transient_for(Duration::from_secs(5));
        let out = policy
            .run(
                |e| is_transient(e.code()),
                || {
                    calls += 1;
                    let n = calls;
                    async move {
                        if n < 3 {
                            Err(error(Code::Unavailable, "election"))
                        } else {
                            Ok(n)
                        }
                    }
                },
            )
            .await;
        assert_eq!(out.unwrap(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_once_on_an_answer_and_after_the_limit_on_transients() {
        let policy = RetryPolicy::transient_for(Duration::from_secs(1));
        let answer: Result<(), _> = policy
            .run(
                |e| is_transient(e.code()),
                || async { Err(error(Code::InvalidArgument, "bad")) },
            )
            .await;
        assert_eq!(answer.unwrap_err().code(), Code::InvalidArgument);
        let started = tokio::time::Instant::now();
        let late: Result<(), _> = policy
            .run(
                |e| is_transient(e.code()),
                || async { Err(error(Code::Unavailable, "no leader")) },
            )
            .await;
        assert_eq!(late.unwrap_err().code(), Code::Unavailable);
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
