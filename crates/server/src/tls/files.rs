//! Reading certificates, keys, CA bundles and CRLs from disk, with one-line errors that name
//! the flag and the file (missing, unreadable, not PEM, expired, not yet valid, key not
//! matching the certificate), and a certificate resolver that picks up a rotated pair
//! without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::{anyhow, bail};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::sign::CertifiedKey;
use tracing::{info, warn};

// The file and PEM readers are the client layer's, so `raftkv` client commands and the server
// report a bad certificate, key or CA file in the same words.
use raftkv_client::tls::read;
pub use raftkv_client::tls::{load_certs, load_key, load_roots};

/// Every CRL of a PEM file, or the one CRL of a DER file (etcd reads both; its own test
/// fixtures are DER).
pub fn load_crls(
    flag: &str,
    path: &Path,
) -> anyhow::Result<Vec<CertificateRevocationListDer<'static>>> {
    let bytes = read(flag, path)?;
    // A DER CRL is an ASN.1 SEQUENCE; a PEM file starts with text.
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{flag} {}: not a PEM or DER CRL file: {e}", path.display()))?;
    if crls.is_empty() {
        bail!("{flag} {}: no CRL in the file", path.display());
    }
    Ok(crls)
}

/// Refuse a certificate outside its validity period (a member serving an expired
/// certificate only produces handshake failures on every client, far from the cause).
pub fn check_validity(flag: &str, path: &Path, cert: &CertificateDer<'_>) -> anyhow::Result<()> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| {
        anyhow!(
            "{flag} {}: cannot parse the certificate: {e}",
            path.display()
        )
    })?;
    let validity = parsed.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > validity.not_after {
        bail!(
            "{flag} {}: the certificate expired on {}",
            path.display(),
            validity.not_after
        );
    }
    if now < validity.not_before {
        bail!(
            "{flag} {}: the certificate is not valid before {}",
            path.display(),
            validity.not_before
        );
    }
    Ok(())
}

/// A certificate file and its key file, as given by two flags.
#[derive(Clone, Debug)]
pub struct KeyPair {
    pub cert_flag: &'static str,
    pub cert: PathBuf,
    pub key_flag: &'static str,
    pub key: PathBuf,
}

impl KeyPair {
    /// Load and check the pair: readable, PEM, the leaf within its validity, the key
    /// matching the leaf.
    pub fn load(&self, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
        let chain = load_certs(self.cert_flag, &self.cert)?;
        check_validity(self.cert_flag, &self.cert, &chain[0])?;
        let key = load_key(self.key_flag, &self.key)?;
        let signing = provider.key_provider.load_private_key(key).map_err(|e| {
            anyhow!(
                "{} {}: unusable private key: {e}",
                self.key_flag,
                self.key.display()
            )
        })?;
        let certified = CertifiedKey::new(chain, signing);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => bail!(
                "{} {} does not match the certificate of {} {}",
                self.key_flag,
                self.key.display(),
                self.cert_flag,
                self.cert.display()
            ),
        }
        Ok(certified)
    }

    /// What tells us the files changed: (modification time, length) of each.
    fn stamp(&self) -> Option<[(SystemTime, u64); 2]> {
        let one = |p: &Path| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        };
        Some([one(&self.cert)?, one(&self.key)?])
    }
}

/// Serves a certificate pair, reloading it when either file changes on disk: each handshake
/// looks at the files' modification times and lengths (two `stat`s) and reloads the pair
/// when they differ from what was loaded. A pair that fails to load (half-written during a
/// rotation, or mismatched) leaves the previous one in service and is tried again at the
/// next handshake; the failure is logged once per change.
#[derive(Debug)]
pub struct ReloadingKeyPair {
    pair: KeyPair,
    provider: Arc<CryptoProvider>,
    current: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: Option<[(SystemTime, u64); 2]>,
    /// The stamp of the files whose load last failed (so it is logged once).
    failed: Option<[(SystemTime, u64); 2]>,
}

impl ReloadingKeyPair {
    /// Load the pair now; any problem is a start-up error.
    pub fn new(pair: KeyPair, provider: Arc<CryptoProvider>) -> anyhow::Result<Self> {
        let stamp = pair.stamp();
        let key = Arc::new(pair.load(&provider)?);
        Ok(ReloadingKeyPair {
            pair,
            provider,
            current: Mutex::new(Loaded {
                key,
                stamp,
                failed: None,
            }),
        })
    }

    /// The pair to use for the next handshake.
    pub fn get(&self) -> Arc<CertifiedKey> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = self.pair.stamp();
        if stamp.is_some() && stamp != cur.stamp && stamp != cur.failed {
            match self.pair.load(&self.provider) {
                Ok(key) => {
                    info!(cert = %self.pair.cert.display(), "reloaded the TLS certificate");
                    cur.key = Arc::new(key);
                    cur.stamp = stamp;
                    cur.failed = None;
                }
                Err(e) => {
                    warn!(error = %e, "cannot reload the TLS certificate; keeping the previous one");
                    cur.failed = stamp;
                }
            }
        }
        cur.key.clone()
    }
}

impl rustls::server::ResolvesServerCert for ReloadingKeyPair {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl rustls::client::ResolvesClientCert for ReloadingKeyPair {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
