//! etcd's authentication flags: `--auth-token`, `--auth-token-ttl`, `--bcrypt-cost`.

use std::time::Duration;

/// The authentication flags, as etcd spells them.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct AuthArgs {
    /// How `Authenticate` tokens are made: `simple` (random, kept by the members, expire
    /// after --auth-token-ttl without use) or
    /// `jwt,pub-key=<file>,priv-key=<file>,sign-method=<alg>[,ttl=<duration>]`.
    #[arg(long, env = "RAFTKV_AUTH_TOKEN", default_value = "simple")]
    pub auth_token: String,

    /// Seconds a simple token lives after its last use.
    #[arg(long, env = "RAFTKV_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub auth_token_ttl: u64,

    /// bcrypt cost of stored password hashes (4-31).
    #[arg(long, env = "RAFTKV_BCRYPT_COST", default_value_t = 10)]
    pub bcrypt_cost: u32,
}

impl Default for AuthArgs {
    fn default() -> Self {
        AuthArgs {
            auth_token: "simple".into(),
            auth_token_ttl: 300,
            bcrypt_cost: 10,
        }
    }
}

/// `--auth-token`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSpec {
    Simple,
    Jwt {
        pub_key: Option<String>,
        priv_key: Option<String>,
        sign_method: String,
        ttl: Duration,
    },
}

impl AuthArgs {
    /// Checks the flags; errors are one line naming the flag, as etcd's.
    pub fn token_spec(&self) -> anyhow::Result<TokenSpec> {
        if !(4..=31).contains(&self.bcrypt_cost) {
            anyhow::bail!(
                "--bcrypt-cost={}: must be between 4 and 31",
                self.bcrypt_cost
            );
        }
        let mut parts = self.auth_token.split(',');
        match parts.next().unwrap_or_default() {
            "simple" => Ok(TokenSpec::Simple),
            "jwt" => {
                let (mut pub_key, mut priv_key, mut method) = (None, None, None);
                let mut ttl = Duration::from_secs(300);
                for opt in parts {
                    let (k, v) = opt.split_once('=').ok_or_else(|| {
                        anyhow::anyhow!("--auth-token: option {opt:?} is not key=value")
                    })?;
                    match k {
                        "pub-key" => pub_key = Some(v.to_string()),
                        "priv-key" => priv_key = Some(v.to_string()),
                        "sign-method" => method = Some(v.to_string()),
                        "ttl" => {
                            ttl = crate::compat_args::parse_go_duration("--auth-token ttl", v)?
                        }
                        other => anyhow::bail!("--auth-token: unknown jwt option {other:?}"),
                    }
                }
                let sign_method = method
                    .ok_or_else(|| anyhow::anyhow!("--auth-token: jwt needs sign-method=<alg>"))?;
                if pub_key.is_none() && priv_key.is_none() {
                    anyhow::bail!("--auth-token: jwt needs pub-key=<file> and/or priv-key=<file>");
                }
                Ok(TokenSpec::Jwt {
                    pub_key,
                    priv_key,
                    sign_method,
                    ttl,
                })
            }
            other => anyhow::bail!("--auth-token: unknown token type {other:?} (simple or jwt)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(token: &str) -> anyhow::Result<TokenSpec> {
        AuthArgs {
            auth_token: token.into(),
            ..Default::default()
        }
        .token_spec()
    }

    #[test]
    fn etcds_token_syntax() {
        assert_eq!(spec("simple").unwrap(), TokenSpec::Simple);
        assert_eq!(
            spec("jwt,pub-key=a.pub,priv-key=a.key,sign-method=RS256,ttl=1h").unwrap(),
            TokenSpec::Jwt {
                pub_key: Some("a.pub".into()),
                priv_key: Some("a.key".into()),
                sign_method: "RS256".into(),
                ttl: Duration::from_secs(3600),
            }
        );
        assert!(spec("jwt,pub-key=a.pub").is_err());
        assert!(spec("jwt,sign-method=RS256").is_err());
        assert!(spec("jwt,pub-key=a,sign-method=RS256,color=red").is_err());
        assert!(spec("opaque").is_err());
        let bad_cost = AuthArgs {
            bcrypt_cost: 3,
            ..Default::default()
        };
        assert!(bad_cost.token_spec().is_err());
    }
}
