//! Authentication and authorisation on the client port (etcd's `Auth` service and the
//! checks every other service makes).
//!
//! * The users, roles and permissions are replicated state in the mvcc store
//!   (`mvcc::auth`); changes go through the log like writes, and passwords are hashed
//!   with bcrypt (`--bcrypt-cost`) here, before proposing.
//! * [`identity`] finds who a request acts as: the `token` metadata (a simple or JWT
//!   token, `tokens`), else, with `--client-cert-auth`, the common name of the client's
//!   certificate.
//! * Writes carry that identity and the auth revision into the log (`RequestAuth`) and are
//!   checked when applied; reads are checked on the member that serves them.
//! * [`service`] is `etcdserverpb.Auth`.
//!
//! docs/security.md describes the whole.

pub mod args;
pub mod credentials;
pub mod identity;
pub mod service;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

pub use args::{AuthArgs, TokenSpec};
pub use identity::{admin_for_maintenance, require_admin, who};
pub use service::AuthService;
use tokens::{JwtTokens, SimpleTokens};

/// The member's auth settings and token tables.
pub struct Auth {
    pub bcrypt_cost: u32,
    /// Shared with the state machine, which learns simple tokens as it applies them.
    pub simple: Arc<SimpleTokens>,
    /// Set with `--auth-token jwt,...`: tokens are then JWTs.
    pub jwt: Option<JwtTokens>,
    /// `--client-cert-auth`: a request without a token acts as its certificate's CN.
    pub client_cert_auth: bool,
    /// Passwords already checked, so repeated `Authenticate`s skip bcrypt.
    pub verified: credentials::VerifiedPasswords,
}

impl Auth {
    /// From the checked flags. `simple` is the state machine's token table.
    pub fn new(
        args: &AuthArgs,
        simple: Arc<SimpleTokens>,
        client_cert_auth: bool,
    ) -> anyhow::Result<Auth> {
        let spec = args.token_spec()?;
        let jwt = match &spec {
            TokenSpec::Simple => None,
            jwt => Some(JwtTokens::from_spec(jwt)?),
        };
        Ok(Auth {
            bcrypt_cost: args.bcrypt_cost,
            simple,
            jwt,
            client_cert_auth,
            verified: credentials::VerifiedPasswords::new(),
        })
    }

    /// Settings for tests and tools: simple tokens, the lowest bcrypt cost.
    pub fn for_tests() -> Auth {
        Auth {
            bcrypt_cost: 4,
            simple: Arc::new(SimpleTokens::new(Duration::from_secs(300))),
            jwt: None,
            client_cert_auth: false,
            verified: credentials::VerifiedPasswords::new(),
        }
    }
}
