//! The TLS flags of `raftkv server`, with etcd's names, kept apart from the other flags so
//! that the TLS code owns them. Flattened into [`crate::ServerArgs`].
//!
//! The switches behave like Go's boolean flags, as etcd's command lines expect: `--flag`,
//! `--flag=true` and `--flag=false` all work, and a repeated switch is not an error (etcd's
//! own e2e suite passes `--client-cert-auth` twice when it also gives a CRL).

use clap::Args;

/// etcd's default `--self-signed-cert-validity`: one year.
pub const DEFAULT_SELF_SIGNED_CERT_VALIDITY_YEARS: u32 = 1;

/// Client-port and peer-port TLS, as etcd 3.4 spells it.
#[derive(Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// Path to the client server TLS certificate file (PEM, leaf first).
    #[arg(long, env = "RAFTKV_CERT_FILE", default_value = "")]
    pub cert_file: String,

    /// Path to the client server TLS key file (PEM).
    #[arg(long, env = "RAFTKV_KEY_FILE", default_value = "")]
    pub key_file: String,

    /// Path to the client server TLS trusted CA certificate file (PEM).
    #[arg(long, env = "RAFTKV_TRUSTED_CA_FILE", default_value = "")]
    pub trusted_ca_file: String,

    /// Require client certificates signed by --trusted-ca-file on the client port.
    #[arg(long, env = "RAFTKV_CLIENT_CERT_AUTH", default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", overrides_with = "client_cert_auth")]
    pub client_cert_auth: bool,

    /// Path to the client certificate revocation list file (PEM).
    #[arg(long, env = "RAFTKV_CLIENT_CRL_FILE", default_value = "")]
    pub client_crl_file: String,

    /// Client TLS using generated (self-signed) certificates, kept in <data-dir>/fixtures/client.
    #[arg(long, env = "RAFTKV_AUTO_TLS", default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", overrides_with = "auto_tls")]
    pub auto_tls: bool,

    /// Path to the peer server TLS certificate file (also our client certificate when dialling peers).
    #[arg(long, env = "RAFTKV_PEER_CERT_FILE", default_value = "")]
    pub peer_cert_file: String,

    /// Path to the peer server TLS key file.
    #[arg(long, env = "RAFTKV_PEER_KEY_FILE", default_value = "")]
    pub peer_key_file: String,

    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "RAFTKV_PEER_TRUSTED_CA_FILE", default_value = "")]
    pub peer_trusted_ca_file: String,

    /// Require peers to present certificates signed by --peer-trusted-ca-file.
    #[arg(long, env = "RAFTKV_PEER_CLIENT_CERT_AUTH", default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", overrides_with = "peer_client_cert_auth")]
    pub peer_client_cert_auth: bool,

    /// Path to the peer certificate revocation list file (PEM).
    #[arg(long, env = "RAFTKV_PEER_CRL_FILE", default_value = "")]
    pub peer_crl_file: String,

    /// Peer TLS using generated (self-signed) certificates, kept in <data-dir>/fixtures/peer.
    #[arg(long, env = "RAFTKV_PEER_AUTO_TLS", default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", overrides_with = "peer_auto_tls")]
    pub peer_auto_tls: bool,

    /// Only accept peer connections whose client certificate has this common name.
    #[arg(long, env = "RAFTKV_PEER_CERT_ALLOWED_CN", default_value = "")]
    pub peer_cert_allowed_cn: String,

    /// Only accept peer connections whose client certificate is valid for this host name.
    #[arg(long, env = "RAFTKV_PEER_CERT_ALLOWED_HOSTNAME", default_value = "")]
    pub peer_cert_allowed_hostname: String,

    /// Validity of the certificates --auto-tls and --peer-auto-tls generate, in years.
    #[arg(long, env = "RAFTKV_SELF_SIGNED_CERT_VALIDITY", default_value_t = DEFAULT_SELF_SIGNED_CERT_VALIDITY_YEARS)]
    pub self_signed_cert_validity: u32,

    /// Comma-separated TLS 1.2 cipher suites (Go's names, e.g.
    /// TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256) allowed on the client and peer ports.
    /// TLS 1.3 suites are always on, as in etcd.
    #[arg(long, env = "RAFTKV_CIPHER_SUITES", default_value = "")]
    pub cipher_suites: String,

    /// Lowest TLS version accepted or offered on the client and peer ports: "TLS1.2" (etcd's
    /// default) or "TLS1.3" (etcd 3.5).
    #[arg(long, env = "RAFTKV_TLS_MIN_VERSION", default_value = "TLS1.2")]
    pub tls_min_version: String,

    /// Highest TLS version: "TLS1.2", "TLS1.3", or empty for the highest there is (etcd 3.5).
    #[arg(long, env = "RAFTKV_TLS_MAX_VERSION", default_value = "")]
    pub tls_max_version: String,

    /// Only accept client certificates valid for one of these comma-separated host names
    /// (checked on the certificate's SANs; needs --client-cert-auth).
    #[arg(long, env = "RAFTKV_CLIENT_CERT_ALLOWED_HOSTNAME", default_value = "")]
    pub client_cert_allowed_hostname: String,

    /// The certificate etcd presents when it dials its own client port (its gRPC gateway).
    /// Ignored: raftkv's gateway calls the service in process and never dials.
    #[arg(long, env = "RAFTKV_CLIENT_CERT_FILE", default_value = "")]
    pub client_cert_file: String,

    /// Key of --client-cert-file. Ignored with it.
    #[arg(long, env = "RAFTKV_CLIENT_KEY_FILE", default_value = "")]
    pub client_key_file: String,

    /// The certificate this member presents when it dials its peers (default:
    /// --peer-cert-file), for a peer server certificate not made for client use.
    #[arg(long, env = "RAFTKV_PEER_CLIENT_CERT_FILE", default_value = "")]
    pub peer_client_cert_file: String,

    /// Key of --peer-client-cert-file.
    #[arg(long, env = "RAFTKV_PEER_CLIENT_KEY_FILE", default_value = "")]
    pub peer_client_key_file: String,
}

impl TlsArgs {
    /// One start-up line per TLS flag that is accepted but changes nothing here.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.client_cert_file.is_empty() || !self.client_key_file.is_empty() {
            notes.push("--client-cert-file/--client-key-file are ignored: they are the certificate etcd presents to its own client port, which raftkv never dials (its gateway calls the service in process)".to_string());
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        tls: TlsArgs,
    }

    #[test]
    fn switches_parse_like_go_booleans() {
        let p = |a: &[&str]| {
            let mut v = vec!["x"];
            v.extend_from_slice(a);
            Cli::try_parse_from(v).map(|c| c.tls)
        };
        assert!(p(&["--client-cert-auth"]).unwrap().client_cert_auth);
        assert!(
            p(&["--client-cert-auth", "--client-cert-auth"])
                .unwrap()
                .client_cert_auth
        );
        assert!(!p(&["--peer-auto-tls=false"]).unwrap().peer_auto_tls);
        assert!(
            p(&["--auto-tls=true", "--peer-client-cert-auth"])
                .unwrap()
                .auto_tls
        );
        assert!(p(&["--auto-tls=maybe"]).is_err());
        let d = p(&[]).unwrap();
        assert!(!d.client_cert_auth && !d.auto_tls && !d.peer_auto_tls);
        assert_eq!(d.self_signed_cert_validity, 1);
    }
}
