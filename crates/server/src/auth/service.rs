//! `etcdserverpb.Auth`: every method, with etcd 3.4's checks and errors.
//!
//! Changes (enable, disable, users, roles, permissions) go through the log and are checked
//! for administrator rights when applied. Reads of the auth state (status, get, list) are
//! served from the local store after a read barrier, with the same checks etcd applies to
//! them: lists need an administrator, a user may read itself and the roles it holds.

use mvcc::auth::{AuthApplied, AuthError, AuthStore};
use mvcc::{MvccError, Response as Applied};
use proto::etcdserverpb::auth_server::Auth;
use proto::etcdserverpb::*;
use proto::raftkvpb::{internal_request::Request as Internal, AuthenticateRecord, RequestAuth};
use tonic::{Request, Response, Status};

use super::identity::who;
use super::tokens::simple_token_prefix;
use crate::grpc::{propose, Context};

pub struct AuthService(pub Context);

fn auth_status(e: AuthError) -> Status {
    Status::from(MvccError::Auth(e))
}

/// How often `Authenticate` re-checks a password when the auth store changed between the
/// check and the apply (etcd loops until they agree).
const AUTHENTICATE_ATTEMPTS: usize = 3;

impl AuthService {
    /// Replicates one auth change as `who`; returns etcd's empty response header.
    async fn change(
        &self,
        request: Internal,
        who: Option<RequestAuth>,
    ) -> Result<Option<ResponseHeader>, Status> {
        match propose(&self.0, request, who).await? {
            Applied::Auth(_) => Ok(Some(self.0.header(0))),
            _ => Err(Status::internal(
                "etcdserver: unexpected apply result for auth",
            )),
        }
    }

    /// Who `request` acts as, then the change.
    async fn change_as<T>(
        &self,
        request: &Request<T>,
        change: Internal,
    ) -> Result<Option<ResponseHeader>, Status> {
        let who = who(&self.0, request).await?;
        self.change(change, who).await
    }

    /// A linearizable read of the auth state, as `who`.
    async fn read<T, R>(
        &self,
        request: &Request<T>,
        read: impl FnOnce(&AuthStore, Option<&RequestAuth>) -> Result<R, AuthError>,
    ) -> Result<R, Status> {
        let who = who(&self.0, request).await?;
        if !self.0.skip_read_index {
            self.0.node.read_barrier().await?;
        }
        let sm = self.0.state()?;
        read(sm.store.auth(), who.as_ref()).map_err(auth_status)
    }

    async fn hash(&self, password: String) -> Result<String, Status> {
        let cost = self.0.auth.bcrypt_cost;
        tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
            .await
            .map_err(|_| Status::internal("etcdserver: password hashing failed"))?
            .map_err(|_| Status::internal("etcdserver: password hashing failed"))
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let header = self
            .change_as(&request, Internal::AuthEnable(AuthEnableRequest {}))
            .await?;
        Ok(Response::new(AuthEnableResponse { header }))
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let header = self
            .change_as(&request, Internal::AuthDisable(AuthDisableRequest {}))
            .await?;
        Ok(Response::new(AuthDisableResponse { header }))
    }

    /// Open to everyone in etcd 3.4.
    async fn auth_status(
        &self,
        request: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        let (enabled, auth_revision) = self
            .read(&request, |a, _| Ok((a.is_enabled(), a.revision())))
            .await?;
        Ok(Response::new(AuthStatusResponse {
            header: Some(self.0.header(0)),
            enabled,
            auth_revision,
        }))
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let req = request.into_inner();
        for _ in 0..AUTHENTICATE_ATTEMPTS {
            if !self.0.skip_read_index {
                self.0.node.read_barrier().await?;
            }
            let (hash, revision) = {
                let sm = self.0.state()?;
                let auth = sm.store.auth();
                (
                    auth.password_hash(&req.name).map(str::to_string),
                    auth.revision(),
                )
            };
            let hash = hash.map_err(auth_status)?;
            let verified = &self.0.auth.verified;
            if !verified.contains(&req.name, &hash, &req.password) {
                let (password, stored) = (req.password.clone(), hash.clone());
                let matches =
                    tokio::task::spawn_blocking(move || bcrypt::verify(password, &stored))
                        .await
                        .map_err(|_| Status::internal("etcdserver: password check failed"))?
                        .unwrap_or(false);
                if !matches {
                    return Err(auth_status(AuthError::AuthFailed));
                }
                verified.insert(&req.name, &hash, &req.password);
            }
            let record = AuthenticateRecord {
                name: req.name.clone(),
                token_prefix: simple_token_prefix(),
                auth_revision: revision,
            };
            let applied = match propose(&self.0, Internal::Authenticate(record), None).await {
                Err(s) if s.message() == AuthError::AuthOldRevision.to_string() => continue,
                other => other?,
            };
            let Applied::Auth(AuthApplied::Authenticated { name, token }) = applied else {
                return Err(Status::internal(
                    "etcdserver: unexpected apply result for authenticate",
                ));
            };
            let token = match &self.0.auth.jwt {
                None => token,
                Some(jwt) => jwt.sign(&name, revision).ok_or_else(|| {
                    Status::failed_precondition(
                        "etcdserver: this member has no jwt signing key (priv-key)",
                    )
                })?,
            };
            return Ok(Response::new(AuthenticateResponse {
                header: Some(self.0.header(0)),
                token,
            }));
        }
        Err(auth_status(AuthError::AuthOldRevision))
    }

    async fn user_add(
        &self,
        request: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let who = who(&self.0, &request).await?;
        let mut req = request.into_inner();
        let no_password = req.options.as_ref().is_some_and(|o| o.no_password);
        // Only the hash enters the log; a client-supplied hash is never trusted.
        req.hashed_password = if no_password || req.name.is_empty() {
            String::new()
        } else {
            self.hash(std::mem::take(&mut req.password)).await?
        };
        req.password = String::new();
        let header = self.change(Internal::UserAdd(req), who).await?;
        Ok(Response::new(AuthUserAddResponse { header }))
    }

    async fn user_get(
        &self,
        request: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let name = request.get_ref().name.clone();
        let roles = self
            .read(&request, |a, who| {
                if let Err(e) = a.check_admin(who) {
                    if who.is_none_or(|w| w.username != name) {
                        return Err(e);
                    }
                }
                a.user_roles(&name)
            })
            .await?;
        Ok(Response::new(AuthUserGetResponse {
            header: Some(self.0.header(0)),
            roles,
        }))
    }

    async fn user_list(
        &self,
        request: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        let users = self
            .read(&request, |a, who| {
                a.check_admin(who)?;
                Ok(a.user_names())
            })
            .await?;
        Ok(Response::new(AuthUserListResponse {
            header: Some(self.0.header(0)),
            users,
        }))
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let change = Internal::UserDelete(request.get_ref().clone());
        let header = self.change_as(&request, change).await?;
        Ok(Response::new(AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let who = who(&self.0, &request).await?;
        let mut req = request.into_inner();
        req.hashed_password = self.hash(std::mem::take(&mut req.password)).await?;
        let header = self.change(Internal::UserChangePassword(req), who).await?;
        Ok(Response::new(AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let change = Internal::UserGrantRole(request.get_ref().clone());
        let header = self.change_as(&request, change).await?;
        Ok(Response::new(AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let change = Internal::UserRevokeRole(request.get_ref().clone());
        let header = self.change_as(&request, change).await?;
        Ok(Response::new(AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(
        &self,
        request: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let change = Internal::RoleAdd(request.get_ref().clone());
        let header = self.change_as(&request, change).await?;
        Ok(Response::new(AuthRoleAddResponse { header }))
    }

    async fn role_get(
        &self,
        request: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let role = request.get_ref().role.clone();
        let perm = self
            .read(&request, |a, who| {
                if let Err(e) = a.check_admin(who) {
                    if !who.is_some_and(|w| a.has_role(&w.username, &role)) {
                        return Err(e);
                    }
                }
                a.role(&role).map(<[_]>::to_vec)
            })
            .await?;
        Ok(Response::new(AuthRoleGetResponse {
            header: Some(self.0.header(0)),
            perm,
        }))
    }

    async fn role_list(
        &self,
        request: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        let roles = self
            .read(&request, |a, who| {
                a.check_admin(who)?;
                Ok(a.role_names())
            })
            .await?;
        Ok(Response::new(AuthRoleListResponse {
            header: Some(self.0.header(0)),
            roles,
        }))
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let change = Internal::RoleDelete(request.get_ref().clone());
        let header = self.change_as(&request, change).await?;
        Ok(Response::new(AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let change = Internal::RoleGrantPermission(request.get_ref().clone());
        let header = self.change_as(&request, change).await?;
        Ok(Response::new(AuthRoleGrantPermissionResponse { header }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let change = Internal::RoleRevokePermission(request.get_ref().clone());
        let header = self.change_as(&request, change).await?;
        Ok(Response::new(AuthRoleRevokePermissionResponse { header }))
    }
}
