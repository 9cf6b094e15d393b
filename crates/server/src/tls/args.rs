//! The TLS flags of `raftkv server`, with etcd's names, kept apart from the other flags so
//! that the TLS code owns them. Flattened into [`crate::ServerArgs`].

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
    #[arg(long, env = "RAFTKV_CLIENT_CERT_AUTH", default_value_t = false)]
    pub client_cert_auth: bool,

    /// Path to the client certificate revocation list file (PEM).
    #[arg(long, env = "RAFTKV_CLIENT_CRL_FILE", default_value = "")]
    pub client_crl_file: String,

    /// Client TLS using generated (self-signed) certificates, kept in <data-dir>/fixtures/client.
    #[arg(long, env = "RAFTKV_AUTO_TLS", default_value_t = false)]
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
    #[arg(long, env = "RAFTKV_PEER_CLIENT_CERT_AUTH", default_value_t = false)]
    pub peer_client_cert_auth: bool,

    /// Path to the peer certificate revocation list file (PEM).
    #[arg(long, env = "RAFTKV_PEER_CRL_FILE", default_value = "")]
    pub peer_crl_file: String,

    /// Peer TLS using generated (self-signed) certificates, kept in <data-dir>/fixtures/peer.
    #[arg(long, env = "RAFTKV_PEER_AUTO_TLS", default_value_t = false)]
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
}
