//! Who a request acts as (etcd's `AuthInfoFromCtx` and `AuthInfoFromTLS`).

use std::time::Instant;

use mvcc::auth::AuthError;
use mvcc::MvccError;
use proto::raftkvpb::RequestAuth;
use tonic::{Request, Status};

use super::tokens::simple_token_index;
use crate::grpc::Context;

/// The identity `request` acts as, with the auth revision its rights are judged at:
/// `None` when auth is disabled or the request names nobody (then every permission check
/// answers `user name is empty`). A token that is unknown, expired or forged is an error
/// (`invalid auth token`), whatever else the request carries — even while auth is
/// disabled, as etcd checks any token it is given (disabling auth invalidates every simple
/// token, so a client still holding one is told, rather than silently acting as nobody).
pub async fn who<T>(ctx: &Context, request: &Request<T>) -> Result<Option<RequestAuth>, Status> {
    let (enabled, revision) = auth_state(ctx)?;
    let token = request
        .metadata()
        .get("token")
        .or_else(|| request.metadata().get("authorization"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(token) = token {
        let auth = from_token(ctx, &token, revision).await?;
        return Ok(enabled.then_some(auth));
    }
    if !enabled {
        return Ok(None);
    }
    if ctx.auth.client_cert_auth {
        let cn = request
            .extensions()
            .get::<crate::tls::client_port::ClientConnInfo>()
            .and_then(|info| info.common_name.clone());
        if let Some(cn) = cn {
            return Ok(Some(RequestAuth {
                username: cn,
                auth_revision: revision,
            }));
        }
    }
    Ok(None)
}

fn auth_state(ctx: &Context) -> Result<(bool, u64), Status> {
    let sm = ctx.state()?;
    let auth = sm.store.auth();
    Ok((auth.is_enabled(), auth.revision()))
}

fn invalid_token() -> Status {
    Status::from(MvccError::Auth(AuthError::InvalidAuthToken))
}

async fn from_token(ctx: &Context, token: &str, revision: u64) -> Result<RequestAuth, Status> {
    if let Some(jwt) = &ctx.auth.jwt {
        let (username, auth_revision) = jwt.verify(token).ok_or_else(invalid_token)?;
        return Ok(RequestAuth {
            username,
            auth_revision,
        });
    }
    // A simple token acts at the current revision: its rights are always today's.
    let lookup = || ctx.auth.simple.user_of(token, Instant::now());
    let user = match lookup() {
        Some(u) => Some(u),
        // Issued by an entry this member has not applied yet: catch up, then look again.
        None if simple_token_index(token).is_some_and(|i| i > ctx.node.status.applied()) => {
            ctx.node.read_barrier().await?;
            lookup()
        }
        None => None,
    };
    let username = user.ok_or_else(invalid_token)?;
    Ok(RequestAuth {
        username,
        auth_revision: revision,
    })
}

/// The check of etcd 3.4's maintenance service (HashKV, Defragment, Snapshot, MoveLeader):
/// an administrator when auth is enabled. etcd 3.4 answers with the auth package's own
/// error, code `Unknown` and text `auth: ...`, and so do we.
pub async fn admin_for_maintenance<T>(ctx: &Context, request: &Request<T>) -> Result<(), Status> {
    let who = who(ctx, request).await?;
    let sm = ctx.state()?;
    sm.store.auth().check_admin(who.as_ref()).map_err(|e| {
        let raw = match e {
            AuthError::UserEmpty => "auth: user name is empty",
            AuthError::UserNotFound => "auth: user not found",
            _ => "auth: permission denied",
        };
        Status::unknown(raw)
    })
}

/// etcd's `checkMembershipOperationPermission` (MemberAdd, MemberRemove, MemberUpdate,
/// MemberPromote) and the admin check of the lease and alarm paths: an administrator when
/// auth is enabled, refused with etcd's gRPC errors (`user name is empty`, `user name not
/// found`, `permission denied`). For the services that implement those calls.
pub async fn require_admin<T>(ctx: &Context, request: &Request<T>) -> Result<(), Status> {
    let who = who(ctx, request).await?;
    let sm = ctx.state()?;
    sm.store
        .auth()
        .check_admin(who.as_ref())
        .map_err(|e| Status::from(MvccError::Auth(e)))
}
