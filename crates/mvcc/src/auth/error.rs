//! Errors of the auth store, with etcd 3.4's gRPC codes and texts (`rpctypes`), checked
//! against a real etcd 3.4 with etcdctl.

use std::fmt;

use crate::error::Code;

/// Everything the auth store can refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    RootUserNotExist,
    RootRoleNotExist,
    UserAlreadyExist,
    UserEmpty,
    UserNotFound,
    RoleAlreadyExist,
    RoleNotFound,
    RoleEmpty,
    AuthFailed,
    /// `Authenticate` with a password for a user created with `--no-password`. etcd 3.4
    /// answers this one with its internal error, code `Unknown`.
    NoPasswordUser,
    PermissionDenied,
    RoleNotGranted,
    PermissionNotGranted,
    AuthNotEnabled,
    InvalidAuthToken,
    /// Deleting `root`, its `root` role, or the `root` role itself while auth is enabled.
    InvalidAuthMgmt,
    /// The request was checked against an older auth revision than the store's.
    AuthOldRevision,
}

impl AuthError {
    /// The gRPC code (wire value) and message etcd answers with.
    pub fn code_and_message(self) -> (i32, &'static str) {
        use AuthError::*;
        let precondition = Code::FailedPrecondition as i32;
        let invalid = Code::InvalidArgument as i32;
        match self {
            RootUserNotExist => (precondition, "etcdserver: root user does not exist"),
            RootRoleNotExist => (
                precondition,
                "etcdserver: root user does not have root role",
            ),
            UserAlreadyExist => (precondition, "etcdserver: user name already exists"),
            UserEmpty => (invalid, "etcdserver: user name is empty"),
            UserNotFound => (precondition, "etcdserver: user name not found"),
            RoleAlreadyExist => (precondition, "etcdserver: role name already exists"),
            RoleNotFound => (precondition, "etcdserver: role name not found"),
            RoleEmpty => (invalid, "etcdserver: role name is empty"),
            AuthFailed => (
                invalid,
                "etcdserver: authentication failed, invalid user ID or password",
            ),
            NoPasswordUser => (
                Code::Unknown as i32,
                "auth: authentication failed, password was given for no password user",
            ),
            PermissionDenied => (
                Code::PermissionDenied as i32,
                "etcdserver: permission denied",
            ),
            RoleNotGranted => (precondition, "etcdserver: role is not granted to the user"),
            PermissionNotGranted => (
                precondition,
                "etcdserver: permission is not granted to the role",
            ),
            AuthNotEnabled => (precondition, "etcdserver: authentication is not enabled"),
            InvalidAuthToken => (
                Code::Unauthenticated as i32,
                "etcdserver: invalid auth token",
            ),
            InvalidAuthMgmt => (invalid, "etcdserver: invalid auth management"),
            AuthOldRevision => (invalid, "etcdserver: revision of auth store is old"),
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code_and_message().1)
    }
}

impl std::error::Error for AuthError {}
