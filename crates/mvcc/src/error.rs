//! Errors of the store, with the exact gRPC code and message etcd returns for each.
//!
//! etcd's Go client turns a server error back into a typed error by matching the whole
//! message string, so both the code and the text must be byte-for-byte etcd's.

use std::fmt;

/// The gRPC status codes the store can produce. The discriminants are the gRPC wire values,
/// so `tonic::Code::from_i32(code as i32)` converts without a lookup table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Code {
    Unknown = 2,
    InvalidArgument = 3,
    NotFound = 5,
    PermissionDenied = 7,
    FailedPrecondition = 9,
    ResourceExhausted = 8,
    OutOfRange = 11,
    Internal = 13,
    DataLoss = 15,
    Unauthenticated = 16,
}

/// Everything that can go wrong when validating, applying or reading a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MvccError {
    /// A request (or a txn operation or compare) named an empty key.
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a key that does not exist, or an empty `RequestOp`.
    KeyNotFound,
    /// `ignore_value` together with a non-empty value.
    ValueProvided,
    /// `ignore_lease` together with a non-zero lease.
    LeaseProvided,
    /// A txn has more compares or operations in one branch than allowed.
    TooManyOps,
    /// Two writes of one txn branch touch the same key.
    DuplicateKey,
    /// `sort_target` is not one of the enum's values (`sort_order` is never checked, as in
    /// etcd 3.4).
    InvalidSortOption,
    /// The requested revision is below the compaction point.
    Compacted,
    /// The requested revision is above the current revision.
    FutureRevision,
    /// A put, revoke or keep-alive named a lease that does not exist.
    LeaseNotFound,
    /// A NOSPACE alarm is active: the store exceeded `--quota-backend-bytes`. Puts and txns
    /// that put are refused until an operator frees space and disarms the alarm.
    NoSpace,
    /// A CORRUPT alarm is active: every request but alarms is refused.
    Corrupt,
    /// A grant asked for an ID that is in use.
    LeaseExists,
    /// A grant asked for a TTL above [`crate::MAX_LEASE_TTL`].
    LeaseTtlTooLarge,
    /// The Raft entry carried no request. Only a bug in the proposer produces this.
    EmptyRequest,
    /// An internal invariant broke while applying; the store rolled the request back.
    Internal(String),
    /// Refused by the auth store (permissions, users, roles; crate::auth).
    Auth(crate::auth::AuthError),
}

impl MvccError {
    /// The gRPC code and message etcd uses for this error.
    pub fn to_status(&self) -> (Code, String) {
        if let MvccError::Auth(e) = self {
            let (code, message) = e.code_and_message();
            return (Code::from_wire(code), message.to_string());
        }
        let code = self.code();
        let message = match self {
            MvccError::Internal(detail) => format!("etcdserver: mvcc: internal error: {detail}"),
            other => other.static_message().to_string(),
        };
        (code, message)
    }

    /// The gRPC code alone.
    pub fn code(&self) -> Code {
        match self {
            MvccError::EmptyKey
            | MvccError::KeyNotFound
            | MvccError::ValueProvided
            | MvccError::LeaseProvided
            | MvccError::TooManyOps
            | MvccError::DuplicateKey
            | MvccError::InvalidSortOption
            | MvccError::EmptyRequest => Code::InvalidArgument,
            MvccError::Compacted | MvccError::FutureRevision | MvccError::LeaseTtlTooLarge => {
                Code::OutOfRange
            }
            MvccError::LeaseExists => Code::FailedPrecondition,
            MvccError::LeaseNotFound => Code::NotFound,
            MvccError::NoSpace => Code::ResourceExhausted,
            MvccError::Corrupt => Code::DataLoss,
            MvccError::Internal(_) => Code::Internal,
            MvccError::Auth(e) => Code::from_wire(e.code_and_message().0),
        }
    }

    fn static_message(&self) -> &'static str {
        match self {
            MvccError::EmptyKey => "etcdserver: key is not provided",
            // etcd answers an empty RequestOp with the key-not-found error as well.
            MvccError::KeyNotFound | MvccError::EmptyRequest => "etcdserver: key not found",
            MvccError::ValueProvided => "etcdserver: value is provided",
            MvccError::LeaseProvided => "etcdserver: lease is provided",
            MvccError::TooManyOps => "etcdserver: too many operations in txn request",
            MvccError::DuplicateKey => "etcdserver: duplicate key given in txn request",
            MvccError::InvalidSortOption => "etcdserver: invalid sort option",
            MvccError::Compacted => "etcdserver: mvcc: required revision has been compacted",
            MvccError::FutureRevision => "etcdserver: mvcc: required revision is a future revision",
            MvccError::LeaseNotFound => "etcdserver: requested lease not found",
            MvccError::NoSpace => "etcdserver: mvcc: database space exceeded",
            MvccError::Corrupt => "etcdserver: corrupt cluster",
            MvccError::LeaseExists => "etcdserver: lease already exists",
            MvccError::LeaseTtlTooLarge => "etcdserver: too large lease TTL",
            MvccError::Internal(_) => "etcdserver: mvcc: internal error",
            MvccError::Auth(e) => e.code_and_message().1,
        }
    }
}

impl Code {
    /// The code with this gRPC wire value (`Unknown` for one the store never produces).
    pub fn from_wire(value: i32) -> Code {
        match value {
            3 => Code::InvalidArgument,
            5 => Code::NotFound,
            7 => Code::PermissionDenied,
            9 => Code::FailedPrecondition,
            11 => Code::OutOfRange,
            13 => Code::Internal,
            16 => Code::Unauthenticated,
            _ => Code::Unknown,
        }
    }
}

impl fmt::Display for MvccError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_status().1)
    }
}

impl std::error::Error for MvccError {}

#[cfg(feature = "tonic")]
impl From<MvccError> for tonic::Status {
    fn from(err: MvccError) -> Self {
        let (code, message) = err.to_status();
        tonic::Status::new(tonic::Code::from_i32(code as i32), message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_codes_match_etcd() {
        let cases = [
            (
                MvccError::EmptyKey,
                Code::InvalidArgument,
                "etcdserver: key is not provided",
            ),
            (
                MvccError::KeyNotFound,
                Code::InvalidArgument,
                "etcdserver: key not found",
            ),
            (
                MvccError::ValueProvided,
                Code::InvalidArgument,
                "etcdserver: value is provided",
            ),
            (
                MvccError::LeaseProvided,
                Code::InvalidArgument,
                "etcdserver: lease is provided",
            ),
            (
                MvccError::TooManyOps,
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            (
                MvccError::DuplicateKey,
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            (
                MvccError::InvalidSortOption,
                Code::InvalidArgument,
                "etcdserver: invalid sort option",
            ),
            (
                MvccError::Compacted,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                MvccError::FutureRevision,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            (
                MvccError::LeaseNotFound,
                Code::NotFound,
                "etcdserver: requested lease not found",
            ),
            (
                MvccError::NoSpace,
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
            (
                MvccError::Corrupt,
                Code::DataLoss,
                "etcdserver: corrupt cluster",
            ),
            (
                MvccError::LeaseExists,
                Code::FailedPrecondition,
                "etcdserver: lease already exists",
            ),
            (
                MvccError::LeaseTtlTooLarge,
                Code::OutOfRange,
                "etcdserver: too large lease TTL",
            ),
        ];
        for (err, code, message) in cases {
            assert_eq!(err.to_status(), (code, message.to_string()), "{err:?}");
        }
    }

    #[test]
    fn codes_have_grpc_wire_values() {
        assert_eq!(Code::InvalidArgument as i32, 3);
        assert_eq!(Code::NotFound as i32, 5);
        assert_eq!(Code::OutOfRange as i32, 11);
    }
}
