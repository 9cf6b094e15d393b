//! TLS to `https://` client endpoints, with etcdctl's flags: `--cacert` (the CA the server's
//! certificate must chain to), `--cert` / `--key` (our certificate, for mutual TLS) and
//! `--insecure-skip-tls-verify` (encrypt without checking who answers).
//!
//! tonic's own TLS cannot skip verification, so channels to `https://` endpoints dial through
//! [`TlsConnector`]: TCP, then a rustls handshake offering HTTP/2 (ALPN `h2`, which gRPC
//! servers require), the server name taken from the endpoint's host. The PEM readers here are
//! also the server's (`server::tls::files`), so both sides report a bad file the same way.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{anyhow, bail};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::codegen::http::Uri;

/// The TLS flags of a client command (etcdctl's names).
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// `--cacert`: verify servers with this CA bundle.
    pub cacert: Option<PathBuf>,
    /// `--cert`: our certificate, presented when the server asks (mutual TLS).
    pub cert: Option<PathBuf>,
    /// `--key`: the private key of `--cert`.
    pub key: Option<PathBuf>,
    /// `--insecure-skip-tls-verify`: accept any server certificate.
    pub insecure_skip_verify: bool,
}

impl TlsOptions {
    /// Whether any TLS flag was given: etcdctl then dials `host:port` endpoints over TLS.
    pub fn any(&self) -> bool {
        self.cacert.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || self.insecure_skip_verify
    }

    /// The rustls configuration these flags describe; errors name the flag and the file.
    pub fn client_config(&self) -> anyhow::Result<Arc<ClientConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow!("TLS: {e}"))?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        } else {
            let Some(cacert) = &self.cacert else {
                bail!("an https:// endpoint needs --cacert (raftkv has no system trust store) or --insecure-skip-tls-verify");
            };
            builder.with_root_certificates(load_roots("--cacert", cacert)?)
        };
        let mut config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(load_certs("--cert", cert)?, load_key("--key", key)?)
                .map_err(|e| anyhow!("--cert {} / --key {}: {e}", cert.display(), key.display()))?,
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => bail!("--cert needs --key"),
            (None, Some(_)) => bail!("--key needs --cert"),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The contents of a file given by `flag`, or an error naming both.
pub fn read(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow!("{flag} {}: cannot read: {e}", path.display()))
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(flag: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{flag} {}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        bail!("{flag} {}: no certificate in the file", path.display());
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(flag: &str, path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = read(flag, path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| anyhow!("{flag} {}: no PEM private key: {e}", path.display()))
}

/// A trust store of every certificate in a CA file.
pub fn load_roots(flag: &str, path: &Path) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(flag, path)? {
        roots
            .add(cert)
            .map_err(|e| anyhow!("{flag} {}: unusable CA certificate: {e}", path.display()))?;
    }
    Ok(Arc::new(roots))
}

/// Dials `https://` URIs: TCP, then TLS with `config`, the server name from the URI's host.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
}

impl TlsConnector {
    pub fn new(config: Arc<ClientConfig>) -> Self {
        TlsConnector { config }
    }
}

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| anyhow!("endpoint {uri} has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host.clone())
                .map_err(|e| anyhow!("endpoint host {host:?}: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| anyhow!("TLS handshake with {uri}: {e}"))?;
            Ok::<_, Self::Error>(TokioIo::new(tls))
        })
    }
}

/// A verifier that accepts any server certificate (the handshake signature is still checked,
/// so the other end holds the key of what it presented): `--insecure-skip-tls-verify`, and the
/// server's dialler under `--peer-auto-tls`, where etcd does the same. The link is encrypted
/// but neither side knows who is at the other end.
#[derive(Debug)]
pub struct AnyServerCert(pub Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_that_do_not_fit_are_refused_with_the_flag_named() {
        let https_without_ca = TlsOptions::default().client_config().unwrap_err();
        assert!(
            https_without_ca.to_string().contains("--cacert"),
            "{https_without_ca}"
        );
        let half_pair = TlsOptions {
            insecure_skip_verify: true,
            cert: Some("/nonexistent/c.pem".into()),
            ..TlsOptions::default()
        };
        assert_eq!(
            half_pair.client_config().unwrap_err().to_string(),
            "--cert needs --key"
        );
        let missing = TlsOptions {
            cacert: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        let e = missing.client_config().unwrap_err().to_string();
        assert!(
            e.starts_with("--cacert /nonexistent/ca.pem: cannot read"),
            "{e}"
        );
    }
}
