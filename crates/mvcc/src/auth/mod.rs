//! The auth store: users, roles, key permissions and the enabled flag, as replicated state.
//!
//! It changes only by applying log entries (`InternalRequest` fields 100-111), so every
//! member holds the same users and roles at the same index, and it is part of the store's
//! snapshot (`snapshot.rs`). Passwords arrive already hashed with bcrypt by the member that
//! proposed the change (the salt is random; apply must be deterministic); this module only
//! stores the hash and never sees a password.
//!
//! The **auth revision** grows with every change of users, roles or permissions (and with
//! disabling auth), as etcd's does. A request carries the revision it was checked against
//! (`RequestAuth`); one checked against an older revision than the store's is refused with
//! `AuthOldRevision` when applied, so no request acts on rights that were revoked after it
//! was checked.
//!
//! The `root` user with the `root` role may do everything; auth can only be enabled while
//! that user exists and holds that role, and neither can be removed while auth is enabled.

mod check;
mod error;
pub mod perms;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet};

use proto::authpb::Permission;
use proto::etcdserverpb::{
    AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest, AuthUserAddRequest,
    AuthUserChangePasswordRequest, AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest,
};
use proto::raftkvpb::{AuthenticateRecord, RequestAuth};

pub use check::{check_request, RequestChecker};
pub use error::AuthError;
pub use snapshot::{decode as decode_snapshot, encode as encode_snapshot};

/// The name of the all-powerful user and role.
pub const ROOT: &str = "root";

/// One user. `password_hash` is a bcrypt hash string, empty for a `--no-password` user
/// (who can only act through a client certificate's common name).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    pub password_hash: String,
    pub no_password: bool,
    pub roles: BTreeSet<String>,
}

/// The replicated auth state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthStore {
    pub(crate) enabled: bool,
    pub(crate) revision: u64,
    pub(crate) users: BTreeMap<String, User>,
    /// Role name → its permissions, sorted by key (then range end) as etcd keeps them.
    pub(crate) roles: BTreeMap<String, Vec<Permission>>,
}

impl Default for AuthStore {
    fn default() -> Self {
        Self::new()
    }
}

/// What applying an auth request did, for the server to turn into etcd's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthApplied {
    Enabled,
    Disabled,
    UserAdded,
    UserDeleted,
    PasswordChanged,
    RoleGranted,
    RoleRevoked,
    RoleAdded,
    RoleDeleted,
    PermissionGranted,
    PermissionRevoked,
    /// A password check replicated: every member now knows `name` authenticated. `token`
    /// is the proposer's random prefix; the server's state machine appends the entry's
    /// index to make the simple token (`<prefix>.<index>`).
    Authenticated {
        name: String,
        token: String,
    },
}

impl AuthStore {
    /// A fresh store: auth disabled, no users or roles, revision 1 (as etcd starts; 0 is
    /// the revision of "not authenticated").
    pub fn new() -> Self {
        AuthStore {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// A role's permissions, or `RoleNotFound`.
    pub fn role(&self, name: &str) -> Result<&[Permission], AuthError> {
        self.roles
            .get(name)
            .map(Vec::as_slice)
            .ok_or(AuthError::RoleNotFound)
    }

    /// A user's roles, or `UserNotFound`.
    pub fn user_roles(&self, name: &str) -> Result<Vec<String>, AuthError> {
        self.users
            .get(name)
            .map(|u| u.roles.iter().cloned().collect())
            .ok_or(AuthError::UserNotFound)
    }

    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.contains(role))
    }

    fn commit(&mut self) {
        self.revision += 1;
    }

    pub fn enable(&mut self) -> Result<AuthApplied, AuthError> {
        if self.enabled {
            return Ok(AuthApplied::Enabled);
        }
        let root = self.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
        if !root.roles.contains(ROOT) {
            return Err(AuthError::RootRoleNotExist);
        }
        // etcd does not move the revision when enabling; tokens issued from now on carry
        // the current one.
        self.enabled = true;
        Ok(AuthApplied::Enabled)
    }

    pub fn disable(&mut self) -> AuthApplied {
        if self.enabled {
            self.enabled = false;
            self.commit();
        }
        AuthApplied::Disabled
    }

    pub fn user_add(&mut self, r: &AuthUserAddRequest) -> Result<AuthApplied, AuthError> {
        if r.name.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if self.users.contains_key(&r.name) {
            return Err(AuthError::UserAlreadyExist);
        }
        let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
        let user = User {
            password_hash: if no_password {
                String::new()
            } else {
                r.hashed_password.clone()
            },
            no_password,
            roles: BTreeSet::new(),
        };
        self.users.insert(r.name.clone(), user);
        self.commit();
        Ok(AuthApplied::UserAdded)
    }

    pub fn user_delete(&mut self, name: &str) -> Result<AuthApplied, AuthError> {
        if self.enabled && name == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        self.users.remove(name).ok_or(AuthError::UserNotFound)?;
        self.commit();
        Ok(AuthApplied::UserDeleted)
    }

    pub fn user_change_password(
        &mut self,
        r: &AuthUserChangePasswordRequest,
    ) -> Result<AuthApplied, AuthError> {
        let user = self.users.get_mut(&r.name).ok_or(AuthError::UserNotFound)?;
        user.password_hash = r.hashed_password.clone();
        user.no_password = false;
        self.commit();
        Ok(AuthApplied::PasswordChanged)
    }

    pub fn user_grant_role(
        &mut self,
        r: &AuthUserGrantRoleRequest,
    ) -> Result<AuthApplied, AuthError> {
        if !self.users.contains_key(&r.user) {
            return Err(AuthError::UserNotFound);
        }
        // etcd 3.4 lets `root` be granted before a role of that name exists.
        if r.role != ROOT && !self.roles.contains_key(&r.role) {
            return Err(AuthError::RoleNotFound);
        }
        let user = self.users.get_mut(&r.user).ok_or(AuthError::UserNotFound)?;
        if user.roles.insert(r.role.clone()) {
            self.commit();
        }
        Ok(AuthApplied::RoleGranted)
    }

    pub fn user_revoke_role(
        &mut self,
        r: &AuthUserRevokeRoleRequest,
    ) -> Result<AuthApplied, AuthError> {
        if self.enabled && r.name == ROOT && r.role == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let user = self.users.get_mut(&r.name).ok_or(AuthError::UserNotFound)?;
        if !user.roles.remove(&r.role) {
            return Err(AuthError::RoleNotGranted);
        }
        self.commit();
        Ok(AuthApplied::RoleRevoked)
    }

    pub fn role_add(&mut self, name: &str) -> Result<AuthApplied, AuthError> {
        if name.is_empty() {
            return Err(AuthError::RoleEmpty);
        }
        if self.roles.contains_key(name) {
            return Err(AuthError::RoleAlreadyExist);
        }
        self.roles.insert(name.to_string(), Vec::new());
        self.commit();
        Ok(AuthApplied::RoleAdded)
    }

    /// Deletes a role and takes it away from every user that held it.
    pub fn role_delete(&mut self, name: &str) -> Result<AuthApplied, AuthError> {
        if self.enabled && name == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        self.roles.remove(name).ok_or(AuthError::RoleNotFound)?;
        for user in self.users.values_mut() {
            user.roles.remove(name);
        }
        self.commit();
        Ok(AuthApplied::RoleDeleted)
    }

    /// Grants a permission; one with the same key and range end is replaced (its type
    /// changes), as in etcd.
    pub fn role_grant_permission(
        &mut self,
        r: &AuthRoleGrantPermissionRequest,
    ) -> Result<AuthApplied, AuthError> {
        let perms = self.roles.get_mut(&r.name).ok_or(AuthError::RoleNotFound)?;
        let Some(perm) = &r.perm else {
            return Err(AuthError::PermissionNotGranted);
        };
        let perm = perms::normalised(perm);
        match perms.binary_search_by(|p| {
            (p.key.as_ref(), p.range_end.as_ref())
                .cmp(&(perm.key.as_ref(), perm.range_end.as_ref()))
        }) {
            Ok(i) => perms[i].perm_type = perm.perm_type,
            Err(i) => perms.insert(i, perm),
        }
        self.commit();
        Ok(AuthApplied::PermissionGranted)
    }

    pub fn role_revoke_permission(
        &mut self,
        r: &AuthRoleRevokePermissionRequest,
    ) -> Result<AuthApplied, AuthError> {
        let perms = self.roles.get_mut(&r.role).ok_or(AuthError::RoleNotFound)?;
        let before = perms.len();
        perms.retain(|p| p.key != r.key || p.range_end != r.range_end);
        if perms.len() == before {
            return Err(AuthError::PermissionNotGranted);
        }
        self.commit();
        Ok(AuthApplied::PermissionRevoked)
    }

    /// The replicated half of `Authenticate`: the password was checked by the proposing
    /// member against `auth_revision`; if anything changed since, it must be checked again.
    pub fn authenticate(&self, r: &AuthenticateRecord) -> Result<AuthApplied, AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = self.users.get(&r.name).ok_or(AuthError::AuthFailed)?;
        if user.no_password {
            return Err(AuthError::AuthFailed);
        }
        if r.auth_revision != self.revision {
            return Err(AuthError::AuthOldRevision);
        }
        Ok(AuthApplied::Authenticated {
            name: r.name.clone(),
            token: r.token_prefix.clone(),
        })
    }

    /// Whether `who` may administer (auth management, maintenance): auth disabled, or a
    /// user holding the `root` role.
    pub fn check_admin(&self, who: Option<&RequestAuth>) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let who = who
            .filter(|w| !w.username.is_empty())
            .ok_or(AuthError::UserEmpty)?;
        let user = self
            .users
            .get(&who.username)
            .ok_or(AuthError::UserNotFound)?;
        if !user.roles.contains(ROOT) {
            return Err(AuthError::PermissionDenied);
        }
        Ok(())
    }

    /// The password hash to check an `Authenticate` against: `AuthFailed` for an unknown
    /// user, `NoPasswordUser` for one created without a password.
    pub fn password_hash(&self, name: &str) -> Result<&str, AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = self.users.get(name).ok_or(AuthError::AuthFailed)?;
        if user.no_password {
            return Err(AuthError::NoPasswordUser);
        }
        Ok(&user.password_hash)
    }
}

#[cfg(test)]
mod tests;
