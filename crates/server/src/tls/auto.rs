//! `--auto-tls` / `--peer-auto-tls`: a self-signed certificate generated once into the data
//! dir (`fixtures/client` or `fixtures/peer`, `cert.pem` and `key.pem`, as etcd lays them
//! out) and reused at later starts. The certificate names the hosts of the listen URLs; its
//! key is ECDSA P-256 and it is valid for `--self-signed-cert-validity` years.

use std::io::Write as _;
use std::path::Path;

use anyhow::{anyhow, Context as _};
use tracing::info;

use super::files::KeyPair;

/// The pair in `dir`, generated now unless both files exist. `hosts` are the host parts of
/// the listen URLs (names or IP addresses).
pub fn self_cert(
    dir: &Path,
    hosts: &[String],
    validity_years: u32,
    cert_flag: &'static str,
    key_flag: &'static str,
) -> anyhow::Result<KeyPair> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let pair = KeyPair {
        cert_flag,
        cert: cert.clone(),
        key_flag,
        key: key.clone(),
    };
    if cert.exists() && key.exists() {
        return Ok(pair);
    }
    generate(dir, &cert, &key, hosts, validity_years).with_context(|| {
        format!(
            "cannot generate a self-signed certificate in {}",
            dir.display()
        )
    })?;
    info!(dir = %dir.display(), "generated a self-signed certificate");
    Ok(pair)
}

fn generate(
    dir: &Path,
    cert_path: &Path,
    key_path: &Path,
    hosts: &[String],
    validity_years: u32,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut sans: Vec<String> = hosts.to_vec();
    sans.sort();
    sans.dedup();
    let mut params = rcgen::CertificateParams::new(sans)?;
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "etcd");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - std::time::Duration::from_secs(60);
    params.not_after =
        now + std::time::Duration::from_secs(365 * 24 * 3600 * u64::from(validity_years.max(1)));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write_private(key_path, key.serialize_pem().as_bytes())?;
    std::fs::write(cert_path, cert.pem())
        .map_err(|e| anyhow!("cannot write {}: {e}", cert_path.display()))?;
    Ok(())
}

/// Write a file only its owner can read (a private key).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
