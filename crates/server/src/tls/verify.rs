//! Certificate checks beyond rustls' own: the peer port's allowed common name or host name
//! (`--peer-cert-allowed-cn` / `--peer-cert-allowed-hostname`), the "verify nothing" server
//! check of `--peer-auto-tls` (etcd's semantics, see `docs/security.md`), and the crypto
//! provider restricted by `--cipher-suites`.

use std::sync::Arc;

use anyhow::bail;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme, SupportedCipherSuite};
use x509_parser::extensions::GeneralName;

/// ring's provider; with `--cipher-suites`, its TLS 1.2 suites cut down to the listed ones
/// (TLS 1.3 suites are not configurable in Go's TLS either, so etcd keeps them all).
pub fn provider(cipher_suites: &str) -> anyhow::Result<Arc<CryptoProvider>> {
    let mut p = rustls::crypto::ring::default_provider();
    let wanted: Vec<&str> = cipher_suites
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if !wanted.is_empty() {
        let name = |s: &SupportedCipherSuite| format!("{:?}", s.suite());
        for w in &wanted {
            // Go names the ChaCha20 suites without the "_SHA256" rustls' names end with.
            let known = p.cipher_suites.iter().any(|s| {
                matches!(s, SupportedCipherSuite::Tls12(_))
                    && (name(s) == *w || name(s) == format!("{w}_SHA256"))
            });
            if !known {
                bail!("--cipher-suites: {w:?} is not a TLS 1.2 cipher suite raftkv supports (ECDHE with AES-GCM or ChaCha20-Poly1305)");
            }
        }
        p.cipher_suites.retain(|s| match s {
            SupportedCipherSuite::Tls13(_) => true,
            SupportedCipherSuite::Tls12(_) => wanted
                .iter()
                .any(|w| name(s) == *w || name(s) == format!("{w}_SHA256")),
        });
    }
    Ok(Arc::new(p))
}

pub use raftkv_client::tls::AnyServerCert;

/// What a peer's client certificate must also satisfy, after the CA check.
#[derive(Clone, Debug)]
pub enum Allowed {
    /// The subject's common name equals this.
    CommonName(String),
    /// The certificate is valid for this host name, or one of this comma-separated list (a
    /// DNS or IP subject alternative name; a `*.` wildcard covers one label).
    Hostname(String),
}

/// A client certificate verifier (the CA check) followed by an [`Allowed`] check.
#[derive(Debug)]
pub struct AllowedPeer {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub allowed: Allowed,
}

impl AllowedPeer {
    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), String> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert)
            .map_err(|e| format!("cannot parse the peer certificate: {e}"))?;
        match &self.allowed {
            Allowed::CommonName(cn) => {
                let got: Vec<&str> = parsed
                    .subject()
                    .iter_common_name()
                    .filter_map(|a| a.as_str().ok())
                    .collect();
                if got.iter().any(|g| g == cn) {
                    Ok(())
                } else {
                    Err(format!(
                        "peer certificate common name {got:?} is not the allowed {cn:?}"
                    ))
                }
            }
            Allowed::Hostname(host) => {
                let names: Vec<String> = parsed
                    .subject_alternative_name()
                    .ok()
                    .flatten()
                    .map(|san| {
                        san.value
                            .general_names
                            .iter()
                            .filter_map(|n| match n {
                                GeneralName::DNSName(d) => Some(d.to_string()),
                                GeneralName::IPAddress(ip) => ip_string(ip),
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                // etcd 3.5 takes a comma-separated list: any one of them will do.
                let allowed = || host.split(',').map(str::trim).filter(|h| !h.is_empty());
                if allowed().any(|h| names.iter().any(|n| host_matches(n, h))) {
                    Ok(())
                } else {
                    Err(format!(
                        "peer certificate is not valid for the allowed host name {host:?} (it names {names:?})"
                    ))
                }
            }
        }
    }
}

fn ip_string(raw: &[u8]) -> Option<String> {
    match raw.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(raw).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(raw).ok()?).to_string()),
        _ => None,
    }
}

/// Whether the certificate name `pattern` covers `host` (case-insensitive; `*.example.com`
/// covers exactly one leading label).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if let Some(rest) = pattern.strip_prefix("*.") {
        return host
            .split_once('.')
            .is_some_and(|(label, tail)| !label.is_empty() && tail == rest);
    }
    pattern == host
}

/// The [`ClientCertVerifier`] methods a wrapping verifier hands to its `inner` verifier
/// unchanged: the wrappers below differ only in `verify_client_cert`.
macro_rules! delegate_to_inner {
    () => {
        fn offer_client_auth(&self) -> bool {
            self.inner.offer_client_auth()
        }

        fn client_auth_mandatory(&self) -> bool {
            self.inner.client_auth_mandatory()
        }

        fn root_hint_subjects(&self) -> &[DistinguishedName] {
            self.inner.root_hint_subjects()
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    };
}

impl ClientCertVerifier for AllowedPeer {
    delegate_to_inner!();

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.check(end_entity).map_err(|why| {
            tracing::warn!(reason = %why, "refusing a peer certificate");
            rustls::Error::General(why)
        })?;
        Ok(verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(host_matches("*.Example.com", "A.example.com."));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "a.b.example.com"));
        assert!(host_matches("127.0.0.1", "127.0.0.1"));
        assert!(!host_matches("localhost", "localhost2"));
    }

    #[test]
    fn allowed_cn_and_hostname_are_checked_on_the_certificate() {
        let mut params =
            rcgen::CertificateParams::new(vec!["m1.example.com".to_string(), "10.0.0.1".into()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "m1");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = cert.der().clone();
        let check = |allowed| {
            AllowedPeer {
                inner: rustls::server::WebPkiClientVerifier::no_client_auth(),
                allowed,
            }
            .check(&der)
        };
        assert!(check(Allowed::CommonName("m1".into())).is_ok());
        assert!(check(Allowed::CommonName("m2".into())).is_err());
        assert!(check(Allowed::Hostname("m1.example.com".into())).is_ok());
        assert!(check(Allowed::Hostname("10.0.0.1".into())).is_ok());
        let e = check(Allowed::Hostname("m2.example.com".into())).unwrap_err();
        assert!(e.contains("m2.example.com"), "{e}");
    }

    fn self_signed_ca(cn: &str) -> CertificateDer<'static> {
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn a_trusted_ca_certificate_may_be_its_own_client_certificate_and_no_other() {
        let ca = self_signed_ca("root");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let now = UnixTime::now();
        assert!(
            inner.verify_client_cert(&ca, &[], now).is_err(),
            "webpki alone refuses a CA certificate as a client certificate"
        );
        let verifier = AnchorAsLeaf {
            inner,
            anchors: vec![ca.clone()],
        };
        assert!(verifier.verify_client_cert(&ca, &[], now).is_ok());
        let stranger = self_signed_ca("root");
        assert!(verifier.verify_client_cert(&stranger, &[], now).is_err());
        let far_future = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1 << 40));
        assert!(verifier.verify_client_cert(&ca, &[], far_future).is_err());
    }

    #[test]
    fn cipher_suites_are_checked_by_name() {
        let p = provider(
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        )
        .unwrap();
        let tls12 = p
            .cipher_suites
            .iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
            .count();
        assert_eq!(tls12, 2);
        assert!(p
            .cipher_suites
            .iter()
            .any(|s| matches!(s, SupportedCipherSuite::Tls13(_))));
        let e = provider("TLS_RSA_WITH_AES_128_CBC_SHA").unwrap_err();
        assert!(
            e.to_string().contains("TLS_RSA_WITH_AES_128_CBC_SHA"),
            "{e}"
        );
        assert_eq!(
            provider("").unwrap().cipher_suites.len(),
            rustls::crypto::ring::default_provider().cipher_suites.len()
        );
    }
}

/// Client certificate check that also accepts a certificate byte-identical to one of the
/// trusted CA certificates, as Go's TLS stack does (a certificate in the root pool verifies
/// by itself). etcd's own tests use one self-signed CA certificate as the CA, the server
/// and the client certificate (`CommonName-root.crt`); webpki alone refuses a CA
/// certificate as a client's end-entity certificate.
#[derive(Debug)]
pub struct AnchorAsLeaf {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub anchors: Vec<CertificateDer<'static>>,
}

impl AnchorAsLeaf {
    fn is_current_anchor(&self, cert: &CertificateDer<'_>, now: UnixTime) -> bool {
        if !self.anchors.iter().any(|a| a.as_ref() == cert.as_ref()) {
            return false;
        }
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else {
            return false;
        };
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let validity = parsed.validity();
        validity.not_before.timestamp() <= now && now <= validity.not_after.timestamp()
    }
}

impl ClientCertVerifier for AnchorAsLeaf {
    delegate_to_inner!();

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Err(_) if self.is_current_anchor(end_entity, now) => {
                Ok(ClientCertVerified::assertion())
            }
            other => other,
        }
    }
}
