//! TLS on the client port and the peer port, with etcd's flags ([`TlsArgs`]), on rustls
//! with the ring provider (no OpenSSL: the image is `FROM scratch`).
//!
//! * Client port: an `https://` listen URL is served over TLS with ALPN `h2` and `http/1.1`,
//!   so gRPC and the HTTP endpoints (health included) follow the URL's scheme. With
//!   `--client-cert-auth` a client must present a certificate signed by `--trusted-ca-file`
//!   (and not revoked by `--client-crl-file`). `--auto-tls` generates a self-signed pair.
//!   An `http://` and an `https://` URL on the same host and port share one listener that
//!   tells the two apart by the first byte (a TLS handshake starts with 0x16), as etcd does.
//! * Peer port: `https://` peer URLs are dialled and accepted over TLS; the dialler presents
//!   `--peer-cert-file` as its client certificate and checks the acceptor's against
//!   `--peer-trusted-ca-file` and the URL's host; with `--peer-client-cert-auth` the acceptor
//!   requires a CA-signed client certificate, optionally with an allowed CN or host name.
//!   `--peer-auto-tls` encrypts without authenticating (etcd's semantics).
//! * Certificates are checked at start (one-line error naming the file) and reloaded from
//!   disk when the files change ([`files::ReloadingKeyPair`]).

mod args;
pub mod auto;
pub mod client_port;
pub mod files;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig, SupportedProtocolVersion};
use tracing::warn;

pub use args::TlsArgs;
use files::{KeyPair, ReloadingKeyPair};

/// The TLS configurations a member serves and dials with.
#[derive(Clone, Default)]
pub struct TlsSetup {
    /// For `https://` client listen URLs.
    pub client: Option<Arc<ServerConfig>>,
    /// For `https://` peer listen URLs.
    pub peer_server: Option<Arc<ServerConfig>>,
    /// For dialling `https://` peer URLs.
    pub peer_client: Option<Arc<ClientConfig>>,
}

/// What [`TlsSetup::new`] needs to know besides the flags.
pub struct Listeners<'a> {
    pub data_dir: &'a Path,
    /// Client listen URLs (`scheme://host:port`) and their hosts.
    pub client: Vec<(&'a str, &'a str)>,
    /// Peer listen URLs and their hosts.
    pub peer: Vec<(&'a str, &'a str)>,
    /// The peer URLs this member dials.
    pub dialled_peer_urls: Vec<&'a str>,
}

/// `https://`, or `unixs://` (a client socket with TLS, crate::unix_socket).
fn is_https(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("unixs://")
}

/// The ALPN protocols of the client port: gRPC needs `h2`; the HTTP endpoints also speak 1.1.
const CLIENT_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];
/// The peer protocol's ALPN name (our framed protocol, not HTTP).
const PEER_ALPN: &[u8] = b"raftkv-peer";

impl TlsSetup {
    /// Check the flags and files and build the configurations. With `generate` false (a dry
    /// run) auto-TLS pairs are not generated and only given files are checked.
    pub fn new(args: &TlsArgs, l: &Listeners<'_>, generate: bool) -> anyhow::Result<TlsSetup> {
        let provider = verify::provider(&args.cipher_suites)?;
        let versions = protocol_versions(args)?;
        let mut setup = TlsSetup::default();

        let client_https: Vec<&(&str, &str)> =
            l.client.iter().filter(|(u, _)| is_https(u)).collect();
        let client_pair = pair(
            ("--cert-file", &args.cert_file),
            ("--key-file", &args.key_file),
        )?;
        if client_pair.is_some() && args.auto_tls {
            warn!("ignoring --auto-tls since --cert-file and --key-file are given");
        }
        if !client_https.is_empty() {
            let pair = match client_pair {
                Some(p) => Some(p),
                None if args.auto_tls && generate => Some(auto::self_cert(
                    &l.data_dir.join("fixtures").join("client"),
                    &hosts(&client_https),
                    args.self_signed_cert_validity,
                    "--auto-tls certificate",
                    "--auto-tls key",
                )?),
                None if args.auto_tls => None,
                None => bail!(
                    "TLS key/cert (--cert-file, --key-file) must be provided for client url {} with HTTPS scheme",
                    client_https[0].0
                ),
            };
            if args.client_cert_auth && args.trusted_ca_file.is_empty() {
                bail!("--client-cert-auth needs --trusted-ca-file (the CA that signs client certificates)");
            }
            if !args.client_cert_allowed_hostname.is_empty() && !args.client_cert_auth {
                bail!("--client-cert-allowed-hostname needs --client-cert-auth (clients are only asked for certificates under it)");
            }
            if let Some(pair) = pair {
                let mut verifier = client_verifier(
                    &provider,
                    args.client_cert_auth,
                    ("--trusted-ca-file", &args.trusted_ca_file),
                    ("--client-crl-file", &args.client_crl_file),
                )?;
                if !args.client_cert_allowed_hostname.is_empty() {
                    verifier = Arc::new(verify::AllowedPeer {
                        inner: verifier,
                        allowed: verify::Allowed::Hostname(
                            args.client_cert_allowed_hostname.clone(),
                        ),
                    });
                }
                let mut cfg = server_config(&provider, &versions, pair, verifier)?;
                cfg.alpn_protocols = CLIENT_ALPN.iter().map(|p| p.to_vec()).collect();
                setup.client = Some(Arc::new(cfg));
            }
        } else if client_pair.is_some() || args.client_cert_auth {
            warn!("client TLS flags are given but no --listen-client-urls is https://; the client port is plain HTTP");
        }

        let peer_https: Vec<&(&str, &str)> = l.peer.iter().filter(|(u, _)| is_https(u)).collect();
        let dials_https = l.dialled_peer_urls.iter().any(|u| is_https(u));
        let peer_pair = pair(
            ("--peer-cert-file", &args.peer_cert_file),
            ("--peer-key-file", &args.peer_key_file),
        )?;
        let peer_client_pair = pair(
            ("--peer-client-cert-file", &args.peer_client_cert_file),
            ("--peer-client-key-file", &args.peer_client_key_file),
        )?;
        if peer_pair.is_some() && args.peer_auto_tls {
            warn!("ignoring --peer-auto-tls since --peer-cert-file and --peer-key-file are given");
        }
        if !args.peer_cert_allowed_cn.is_empty() && !args.peer_cert_allowed_hostname.is_empty() {
            bail!(
                "AllowedCN and AllowedHostname are mutually exclusive (cn={}, hostname={})",
                args.peer_cert_allowed_cn,
                args.peer_cert_allowed_hostname
            );
        }
        if peer_https.is_empty() && !dials_https {
            if peer_pair.is_some() || args.peer_client_cert_auth {
                warn!(
                    "peer TLS flags are given but no peer URL is https://; the peer port is plain"
                );
            }
            return Ok(setup);
        }
        let auto = peer_pair.is_none();
        let pair = match peer_pair {
            Some(p) => Some(p),
            None if args.peer_auto_tls && generate => {
                let all: Vec<&(&str, &str)> = l.peer.iter().collect();
                Some(auto::self_cert(
                    &l.data_dir.join("fixtures").join("peer"),
                    &hosts(&all),
                    args.self_signed_cert_validity,
                    "--peer-auto-tls certificate",
                    "--peer-auto-tls key",
                )?)
            }
            None if args.peer_auto_tls => None,
            None => bail!(
                "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url {} with HTTPS scheme",
                peer_https
                    .first()
                    .map(|(u, _)| *u)
                    .or(l.dialled_peer_urls.iter().copied().find(|u| is_https(u)))
                    .unwrap_or("https://")
            ),
        };
        if args.peer_client_cert_auth && args.peer_trusted_ca_file.is_empty() {
            bail!("--peer-client-cert-auth needs --peer-trusted-ca-file (the CA that signs peer certificates)");
        }
        if (!args.peer_cert_allowed_cn.is_empty() || !args.peer_cert_allowed_hostname.is_empty())
            && !args.peer_client_cert_auth
        {
            bail!("--peer-cert-allowed-cn and --peer-cert-allowed-hostname need --peer-client-cert-auth (peers are only asked for certificates under it)");
        }
        if !auto && args.peer_trusted_ca_file.is_empty() {
            bail!("--peer-cert-file needs --peer-trusted-ca-file: raftkv has no system trust store to check other members' certificates against");
        }
        let Some(pair) = pair else {
            return Ok(setup);
        };
        let reloading = Arc::new(ReloadingKeyPair::new(pair, provider.clone())?);

        // Accepting.
        let mut verifier = client_verifier(
            &provider,
            args.peer_client_cert_auth,
            ("--peer-trusted-ca-file", &args.peer_trusted_ca_file),
            ("--peer-crl-file", &args.peer_crl_file),
        )?;
        let allowed = if !args.peer_cert_allowed_cn.is_empty() {
            Some(verify::Allowed::CommonName(
                args.peer_cert_allowed_cn.clone(),
            ))
        } else if !args.peer_cert_allowed_hostname.is_empty() {
            Some(verify::Allowed::Hostname(
                args.peer_cert_allowed_hostname.clone(),
            ))
        } else {
            None
        };
        if let Some(allowed) = allowed {
            verifier = Arc::new(verify::AllowedPeer {
                inner: verifier,
                allowed,
            });
        }
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(reloading.clone());
        server.alpn_protocols = vec![PEER_ALPN.to_vec()];
        setup.peer_server = Some(Arc::new(server));

        // Dialling: with --peer-client-cert-file's pair when given, else the server's.
        let dialling = match peer_client_pair {
            Some(p) => Arc::new(ReloadingKeyPair::new(p, provider.clone())?),
            None => reloading,
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)?;
        let mut client = if auto {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verify::AnyServerCert(provider.clone())))
                .with_client_cert_resolver(dialling)
        } else {
            let roots = files::load_roots(
                "--peer-trusted-ca-file",
                Path::new(&args.peer_trusted_ca_file),
            )?;
            builder
                .with_root_certificates(roots)
                .with_client_cert_resolver(dialling)
        };
        client.alpn_protocols = vec![PEER_ALPN.to_vec()];
        setup.peer_client = Some(Arc::new(client));
        Ok(setup)
    }
}

/// [`TlsSetup::new`] for a member's configuration.
pub fn setup_for(config: &crate::config::Config, generate: bool) -> anyhow::Result<TlsSetup> {
    let listeners = Listeners {
        data_dir: &config.data_dir,
        client: config
            .listen_client
            .iter()
            .map(|l| (l.url.as_str(), l.host.as_str()))
            .collect(),
        peer: config
            .listen_peer
            .iter()
            .map(|l| (l.url.as_str(), l.host.as_str()))
            .collect(),
        dialled_peer_urls: config
            .peers()
            .flat_map(|m| m.peer_urls.iter().map(String::as_str))
            .collect(),
    };
    TlsSetup::new(&config.tls, &listeners, generate)
}

/// `--tls-min-version` and `--tls-max-version` as the TLS versions to speak, checked as
/// etcd checks them. rustls speaks TLS 1.2 and 1.3 only, which are also the only versions
/// etcd's flags take.
pub fn protocol_versions(args: &TlsArgs) -> anyhow::Result<Vec<&'static SupportedProtocolVersion>> {
    /// Go's `tls.VersionTLS12` / `VersionTLS13` order: `None` is "the highest there is".
    fn version(v: &str) -> anyhow::Result<Option<u8>> {
        match v {
            "" => Ok(None),
            "TLS1.2" => Ok(Some(2)),
            "TLS1.3" => Ok(Some(3)),
            other => bail!("unexpected TLS version {other:?} (must be one of: TLS1.2, TLS1.3)"),
        }
    }
    let min = version(&args.tls_min_version)?.unwrap_or(2);
    let max = version(&args.tls_max_version)?.unwrap_or(3);
    if min > max {
        bail!(
            "min version ({}) is greater than max version ({})",
            args.tls_min_version,
            args.tls_max_version
        );
    }
    if min == 3 && !args.cipher_suites.is_empty() {
        bail!("cipher suites cannot be configured when only TLS1.3 is enabled");
    }
    Ok([(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, p)| p)
        .collect())
}

/// A certificate and key flag pair: both or neither.
fn pair(cert: (&'static str, &str), key: (&'static str, &str)) -> anyhow::Result<Option<KeyPair>> {
    match (cert.1.is_empty(), key.1.is_empty()) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some(KeyPair {
            cert_flag: cert.0,
            cert: PathBuf::from(cert.1),
            key_flag: key.0,
            key: PathBuf::from(key.1),
        })),
        (false, true) => bail!("{} is given without {}", cert.0, key.0),
        (true, false) => bail!("{} is given without {}", key.0, cert.0),
    }
}

/// The distinct hosts of some listen URLs.
fn hosts(urls: &[&(&str, &str)]) -> Vec<String> {
    let mut h: Vec<String> = urls.iter().map(|(_, h)| h.to_string()).collect();
    h.sort();
    h.dedup();
    h
}

/// The check of client certificates: none unless `required`, else signed by the CA file and
/// not revoked by the CRL file (only the leaf is looked up in the CRLs, and a certificate
/// a CRL does not cover passes, as in Go's TLS stack plus etcd's CRL check).
fn client_verifier(
    provider: &Arc<CryptoProvider>,
    required: bool,
    ca: (&str, &str),
    crl: (&str, &str),
) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
    if !required {
        if !crl.1.is_empty() {
            warn!(
                "{} is ignored without client certificate authentication",
                crl.0
            );
        }
        return Ok(WebPkiClientVerifier::no_client_auth());
    }
    let roots = files::load_roots(ca.0, Path::new(ca.1))?;
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    if !crl.1.is_empty() {
        builder = builder
            .with_crls(files::load_crls(crl.0, Path::new(crl.1))?)
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status();
    }
    let inner = builder.build().with_context(|| {
        format!(
            "{} {}: cannot build the client certificate check",
            ca.0, ca.1
        )
    })?;
    Ok(Arc::new(verify::AnchorAsLeaf {
        inner,
        anchors: files::load_certs(ca.0, Path::new(ca.1))?,
    }))
}

fn server_config(
    provider: &Arc<CryptoProvider>,
    versions: &[&'static SupportedProtocolVersion],
    pair: KeyPair,
    verifier: Arc<dyn ClientCertVerifier>,
) -> anyhow::Result<ServerConfig> {
    let resolver = ReloadingKeyPair::new(pair, provider.clone())?;
    Ok(ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(resolver)))
}
