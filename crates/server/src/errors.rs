//! Errors a client request can meet inside the server (not in the state machine), with
//! etcd's exact gRPC codes and messages: the Go client recognises errors by their text, and
//! retries only `UNAVAILABLE`, so transient conditions must keep that code.

use tonic::{Code, Status};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: request is too large")]
    TooLarge,
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    #[error("etcdserver: server stopped")]
    Stopped,
    /// Compacting the member's storage (Defragment) failed.
    #[error("{0}")]
    Storage(String),
    /// MoveLeader sent to a member that does not lead.
    #[error("etcdserver: not leader")]
    NotLeader,
    /// MoveLeader to a member that is not a voter of the cluster.
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// MoveLeader's target did not take over in time.
    #[error("etcdserver: request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
}

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Status {
        let code = match e {
            ServerError::TooLarge => Code::InvalidArgument,
            ServerError::TooManyRequests => Code::ResourceExhausted,
            ServerError::Storage(_) => Code::Internal,
            ServerError::NotLeader | ServerError::BadLeaderTransferee => Code::FailedPrecondition,
            ServerError::LeaderTransferTimeout => Code::DeadlineExceeded,
            _ => Code::Unavailable,
        };
        Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_leader_errors_are_etcds() {
        let s = Status::from(ServerError::NotLeader);
        assert_eq!(
            (s.code(), s.message()),
            (Code::FailedPrecondition, "etcdserver: not leader")
        );
        let s = Status::from(ServerError::BadLeaderTransferee);
        assert_eq!(
            (s.code(), s.message()),
            (
                Code::FailedPrecondition,
                "etcdserver: bad leader transferee"
            )
        );
        let s = Status::from(ServerError::LeaderTransferTimeout);
        assert_eq!(
            (s.code(), s.message()),
            (
                Code::DeadlineExceeded,
                "etcdserver: request timed out, leader transfer took too long"
            )
        );
    }

    #[test]
    fn codes_and_messages_are_etcds() {
        let s = Status::from(ServerError::NoLeader);
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unavailable, "etcdserver: no leader")
        );
        let s = Status::from(ServerError::TooLarge);
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, "etcdserver: request is too large")
        );
        let s = Status::from(ServerError::Timeout);
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unavailable, "etcdserver: request timed out")
        );
        let s = Status::from(ServerError::LeaderChanged);
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unavailable, "etcdserver: leader changed")
        );
    }
}
