//! Auth tokens: etcd's `simple` tokens and `jwt` tokens.
//!
//! **Simple** tokens are `<16 random letters>.<log index>`. The member that checks the
//! password picks the random prefix and replicates it in an `AuthenticateRecord`; every
//! member, when it applies that entry, learns the token (`<prefix>.<index of the entry>`), so
//! a client may use it on any member. A member that has not applied that index yet waits
//! for it (the index is in the token). A token expires after `--auth-token-ttl` without use
//! on that member, and all of a user's tokens go when the user is deleted or its password
//! changes; disabling auth forgets them all. Tokens are kept only in memory, as etcd keeps
//! them: after a restart clients authenticate again.
//!
//! **JWT** tokens carry the user name and the auth revision they were issued at, signed
//! with the key given by `--auth-token jwt,...` (claims `username`, `revision`, `exp`, as
//! etcd's). Any member with the public key can check one without the log.
//!
//! A token is a secret: none is ever logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::SecureRandom;

use super::args::TokenSpec;

/// Letters a simple token prefix is made of (etcd uses the same alphabet, 16 of them).
const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const PREFIX_LEN: usize = 16;

/// A fresh random prefix for a simple token, from the operating system's CSPRNG.
pub fn simple_token_prefix() -> String {
    let mut raw = [0u8; PREFIX_LEN];
    // SystemRandom only fails if the OS has no randomness at all; a token from a fixed
    // pattern would be guessable, so refuse to go on rather than fall back.
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .expect("the operating system's random number generator failed");
    raw.iter()
        .map(|b| LETTERS[usize::from(*b) % LETTERS.len()] as char)
        .collect()
}

/// The log index a simple token was issued at (its suffix), if it has one.
pub fn simple_token_index(token: &str) -> Option<u64> {
    token.rsplit_once('.').and_then(|(_, i)| i.parse().ok())
}

struct Issued {
    user: String,
    last_used: Instant,
}

/// The simple tokens this member knows.
pub struct SimpleTokens {
    ttl: Duration,
    tokens: Mutex<HashMap<String, Issued>>,
}

impl Default for SimpleTokens {
    fn default() -> Self {
        SimpleTokens::new(Duration::from_secs(300))
    }
}

impl SimpleTokens {
    pub fn new(ttl: Duration) -> Self {
        SimpleTokens {
            ttl,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, HashMap<String, Issued>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Learns a token (applying an `AuthenticateRecord`). Expired tokens are dropped here
    /// too, so the table holds at most the tokens used within one TTL.
    pub fn assign(&self, token: String, user: String, now: Instant) {
        let ttl = self.ttl;
        let mut tokens = self.locked();
        tokens.retain(|_, t| now.duration_since(t.last_used) < ttl);
        tokens.insert(
            token,
            Issued {
                user,
                last_used: now,
            },
        );
    }

    /// The user of a live token; using it restarts its TTL.
    pub fn user_of(&self, token: &str, now: Instant) -> Option<String> {
        let mut tokens = self.locked();
        let live = match tokens.get_mut(token) {
            Some(t) if now.duration_since(t.last_used) < self.ttl => {
                t.last_used = now;
                Some(t.user.clone())
            }
            Some(_) => None,
            None => return None,
        };
        if live.is_none() {
            tokens.remove(token);
        }
        live
    }

    /// Forgets every token of `user` (deleted, or its password changed).
    pub fn invalidate_user(&self, user: &str) {
        self.locked().retain(|_, t| t.user != user);
    }

    /// Forgets every token (auth disabled).
    pub fn clear(&self) {
        self.locked().clear();
    }
}

/// etcd's JWT claims.
#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

/// Signs and checks `jwt` tokens.
pub struct JwtTokens {
    algorithm: Algorithm,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    ttl: Duration,
}

impl JwtTokens {
    /// Loads the keys named by `--auth-token jwt,...`.
    pub fn from_spec(spec: &TokenSpec) -> anyhow::Result<JwtTokens> {
        let TokenSpec::Jwt {
            pub_key,
            priv_key,
            sign_method,
            ttl,
        } = spec
        else {
            anyhow::bail!("not a jwt token spec");
        };
        let algorithm: Algorithm = sign_method
            .parse()
            .map_err(|_| anyhow::anyhow!("--auth-token: unknown sign-method {sign_method:?}"))?;
        let read = |path: &str| {
            std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("--auth-token: cannot read {path}: {e}"))
        };
        let bad_key = |path: &str, e: jsonwebtoken::errors::Error| {
            anyhow::anyhow!("--auth-token: {path} is not a {sign_method} key: {e}")
        };
        use Algorithm::*;
        let (encoding, decoding) = match algorithm {
            HS256 | HS384 | HS512 => {
                // A shared secret: etcd reads it from priv-key (or pub-key).
                let path = priv_key
                    .as_deref()
                    .or(pub_key.as_deref())
                    .unwrap_or_default();
                let secret = read(path)?;
                (
                    Some(EncodingKey::from_secret(&secret)),
                    DecodingKey::from_secret(&secret),
                )
            }
            _ => {
                let Some(pub_path) = pub_key.as_deref() else {
                    anyhow::bail!("--auth-token: {sign_method} needs pub-key=<file>");
                };
                let pem = read(pub_path)?;
                let decoding = match algorithm {
                    RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
                        DecodingKey::from_rsa_pem(&pem)
                    }
                    ES256 | ES384 => DecodingKey::from_ec_pem(&pem),
                    _ => DecodingKey::from_ed_pem(&pem),
                }
                .map_err(|e| bad_key(pub_path, e))?;
                let encoding = match priv_key.as_deref() {
                    None => None,
                    Some(path) => {
                        let pem = read(path)?;
                        Some(
                            match algorithm {
                                RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
                                    EncodingKey::from_rsa_pem(&pem)
                                }
                                ES256 | ES384 => EncodingKey::from_ec_pem(&pem),
                                _ => EncodingKey::from_ed_pem(&pem),
                            }
                            .map_err(|e| bad_key(path, e))?,
                        )
                    }
                };
                (encoding, decoding)
            }
        };
        Ok(JwtTokens {
            algorithm,
            encoding,
            decoding,
            ttl: *ttl,
        })
    }

    /// A token for `user` at auth revision `revision`; `None` when this member has only
    /// the public key (it can check tokens but not issue them).
    pub fn sign(&self, user: &str, revision: u64) -> Option<String> {
        let key = self.encoding.as_ref()?;
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(self.ttl)
            .as_secs();
        let claims = Claims {
            username: user.to_string(),
            revision,
            exp,
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key).ok()
    }

    /// The user and auth revision of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Option<(String, u64)> {
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = 0;
        validation.required_spec_claims = ["exp".to_string()].into_iter().collect();
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).ok()?;
        Some((data.claims.username, data.claims.revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_tokens_expire_after_the_ttl_without_use_and_use_extends_them() {
        let tokens = SimpleTokens::new(Duration::from_secs(10));
        let t0 = Instant::now();
        tokens.assign("abc.5".into(), "alice".into(), t0);
        assert_eq!(
            tokens
                .user_of("abc.5", t0 + Duration::from_secs(9))
                .as_deref(),
            Some("alice")
        );
        // Used at 9 s, so alive until 19 s.
        assert!(tokens
            .user_of("abc.5", t0 + Duration::from_secs(18))
            .is_some());
        assert!(tokens
            .user_of("abc.5", t0 + Duration::from_secs(29))
            .is_none());
        assert!(
            tokens.user_of("abc.5", t0).is_none(),
            "an expired token is forgotten"
        );
        assert!(tokens.user_of("nope.1", t0).is_none());
    }

    #[test]
    fn deleting_a_user_or_disabling_auth_forgets_tokens() {
        let tokens = SimpleTokens::default();
        let now = Instant::now();
        tokens.assign("a.1".into(), "alice".into(), now);
        tokens.assign("b.2".into(), "bob".into(), now);
        tokens.invalidate_user("alice");
        assert!(tokens.user_of("a.1", now).is_none());
        assert!(tokens.user_of("b.2", now).is_some());
        tokens.clear();
        assert!(tokens.user_of("b.2", now).is_none());
    }

    #[test]
    fn prefixes_are_random_letters_and_indexes_parse() {
        let a = simple_token_prefix();
        assert_eq!(a.len(), PREFIX_LEN);
        assert!(a.bytes().all(|b| b.is_ascii_alphabetic()));
        assert_ne!(a, simple_token_prefix());
        assert_eq!(simple_token_index("abc.42"), Some(42));
        assert_eq!(simple_token_index("abc"), None);
    }

    #[test]
    fn jwt_round_trip_and_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"a shared secret of some length").unwrap();
        let spec = TokenSpec::Jwt {
            pub_key: None,
            priv_key: Some(secret.display().to_string()),
            sign_method: "HS256".into(),
            ttl: Duration::from_secs(60),
        };
        let jwt = JwtTokens::from_spec(&spec).unwrap();
        let token = jwt.sign("alice", 7).unwrap();
        assert_eq!(jwt.verify(&token), Some(("alice".to_string(), 7)));
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(jwt.verify(&forged), None);
        let expired = JwtTokens {
            ttl: Duration::ZERO,
            ..JwtTokens::from_spec(&spec).unwrap()
        };
        let old = expired.sign("alice", 7).unwrap();
        // exp = now: with no leeway, a token is invalid from its exp second on, so wait
        // (bounded) until the clock has passed it.
        let deadline = Instant::now() + Duration::from_secs(3);
        while jwt.verify(&old).is_some() {
            assert!(
                Instant::now() < deadline,
                "an expired jwt was still accepted"
            );
            std::thread::yield_now();
        }
    }
}
