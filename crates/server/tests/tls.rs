//! TLS on real member processes, with certificates made here (rcgen) and the real etcdctl
//! 3.4 as the client: a three-member cluster with peer mutual TLS served to etcdctl over
//! client mutual TLS; refusals (no client certificate, an outsider on the peer port without
//! a CA-signed certificate, a peer whose CN is not allowed); auto-TLS on both ports;
//! one-line start errors for bad certificate files; rotation of the client certificate
//! without a restart.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftkv_client::local_cluster::free_loopback_ports;
use raftkv_client::tls::TlsOptions;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_raftkv-member");

fn etcdctl_bin() -> String {
    std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "/usr/bin/etcdctl".to_string())
}

/// A test CA that signs leaf certificates into files.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    path: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let path = dir.join(format!("{name}.crt"));
        std::fs::write(&path, cert.pem()).unwrap();
        Ca { cert, key, path }
    }

    /// A leaf for `cn` valid for localhost and 127.0.0.1 (server and client use), written
    /// to `<dir>/<file>.crt` and `.key`. `days` shifts the validity (negative: expired).
    fn leaf(&self, dir: &Path, file: &str, cn: &str, days: i64) -> (PathBuf, PathBuf) {
        self.leaf_with_serial(dir, file, cn, days, None)
    }

    fn leaf_with_serial(
        &self,
        dir: &Path,
        file: &str,
        cn: &str,
        days: i64,
        serial: Option<u64>,
    ) -> (PathBuf, PathBuf) {
        let mut p =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        p.serial_number = serial.map(rcgen::SerialNumber::from);
        p.distinguished_name.push(DnType::CommonName, cn);
        let now = time::OffsetDateTime::now_utc();
        if days < 0 {
            p.not_before = now - time::Duration::days(-days + 10);
            p.not_after = now - time::Duration::days(-days);
        } else {
            p.not_before = now - time::Duration::days(1);
            p.not_after = now + time::Duration::days(days.max(1));
        }
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (
            dir.join(format!("{file}.crt")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

impl Ca {
    /// A CRL revoking `serial`, written to `<dir>/<file>`.
    fn crl(&self, dir: &Path, file: &str, serial: u64) -> PathBuf {
        let now = time::OffsetDateTime::now_utc();
        let crl = rcgen::CertificateRevocationListParams {
            this_update: now - time::Duration::hours(1),
            next_update: now + time::Duration::days(1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(serial),
                revocation_time: now - time::Duration::hours(1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            }],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.cert, &self.key)
        .unwrap();
        let path = dir.join(file);
        std::fs::write(&path, crl.pem().unwrap()).unwrap();
        path
    }
}

/// A member process, SIGKILLed on drop.
struct Member {
    child: Option<Child>,
    log: PathBuf,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    /// The command line it was started with.
    args: Vec<String>,
}

impl Member {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL the process and start it again with the same flags and data dir; its output
    /// is appended to the same log.
    fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let out = File::options().append(true).open(&self.log).unwrap();
        let child = Command::new(BIN)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Start `n` members, client and peer URLs with the given schemes, `extra` flags on each.
fn start_cluster(
    dir: &Path,
    n: usize,
    client_scheme: &str,
    peer_scheme: &str,
    extra: &[String],
) -> Vec<Member> {
    let ports = free_loopback_ports(2 * n).unwrap();
    let initial: Vec<String> = (0..n)
        .map(|i| format!("t{i}={peer_scheme}://127.0.0.1:{}", ports[2 * i + 1]))
        .collect();
    (0..n)
        .map(|i| {
            let (cp, pp) = (ports[2 * i], ports[2 * i + 1]);
            let data_dir = dir.join(format!("t{i}.data"));
            let log = dir.join(format!("t{i}.log"));
            // "both": an http:// and an https:// URL on the same port.
            let curl = match client_scheme {
                "both" => format!("http://127.0.0.1:{cp},https://127.0.0.1:{cp}"),
                scheme => format!("{scheme}://127.0.0.1:{cp}"),
            };
            let purl = format!("{peer_scheme}://127.0.0.1:{pp}");
            let mut args = vec![
                format!("--name=t{i}"),
                format!("--data-dir={}", data_dir.display()),
                format!("--listen-client-urls={curl}"),
                format!("--advertise-client-urls={curl}"),
                format!("--listen-peer-urls={purl}"),
                format!("--initial-advertise-peer-urls={purl}"),
                format!("--initial-cluster={}", initial.join(",")),
                "--initial-cluster-token=tls-tests".to_string(),
                "--heartbeat-interval=50".to_string(),
                "--election-timeout=500".to_string(),
            ];
            args.extend(extra.iter().cloned());
            let out = File::create(&log).unwrap();
            let child = Command::new(BIN)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap();
            Member {
                child: Some(child),
                log,
                client_port: cp,
                peer_port: pp,
                data_dir,
                args,
            }
        })
        .collect()
}

fn etcdctl(args: &[String]) -> Output {
    Command::new(etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .args(["--dial-timeout=2s", "--command-timeout=5s"])
        .args(args)
        .output()
        .expect("cannot run etcdctl")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Retry `f` until it returns `Some`, or panic after `limit` with `what` and `detail()`.
fn poll<T>(
    what: &str,
    limit: Duration,
    detail: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}\n{}", detail());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn logs(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| {
            let l = m.log();
            let tail: Vec<&str> = l.lines().rev().take(15).collect();
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        })
        .collect::<Vec<_>>()
        .join("\n----\n")
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Mutual TLS on both ports with one member certificate `cert`/`key` signed by `ca`.
fn mutual_tls_flags(cert: &Path, key: &Path, ca: &Path) -> Vec<String> {
    vec![
        format!("--cert-file={}", s(cert)),
        format!("--key-file={}", s(key)),
        format!("--trusted-ca-file={}", s(ca)),
        "--client-cert-auth".into(),
        format!("--peer-cert-file={}", s(cert)),
        format!("--peer-key-file={}", s(key)),
        format!("--peer-trusted-ca-file={}", s(ca)),
        "--peer-client-cert-auth".into(),
    ]
}

/// etcdctl's TLS flags for a client certificate.
fn mtls_flags(ca: &Path, cert: &Path, key: &Path) -> Vec<String> {
    vec![
        format!("--cacert={}", s(ca)),
        format!("--cert={}", s(cert)),
        format!("--key={}", s(key)),
    ]
}

/// A rustls client config trusting `ca`, presenting `cert`/`key` if given.
fn rustls_client(ca: Option<&Path>, cert_key: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            builder.with_root_certificates(roots)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(server::tls::verify::AnyServerCert(
                provider,
            ))),
    };
    let cfg = match cert_key {
        Some((c, k)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(c)
                    .unwrap()
                    .map(|c| c.unwrap())
                    .collect(),
                rustls::pki_types::PrivateKeyDer::from_pem_file(k).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(cfg)
}

/// Connect over TLS to `port`, send `payload`, and return what the server answers (or
/// the error). A server that refuses the handshake ends up in `Err`.
async fn tls_exchange(
    port: u16,
    cfg: Arc<rustls::ClientConfig>,
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tls.write_all(payload).await.map_err(|e| e.to_string())?;
    tls.flush().await.map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut got)).await {
        Ok(Ok(_)) => Ok(got),
        Ok(Err(e)) if got.is_empty() => Err(e.to_string()),
        Ok(Err(_)) => Ok(got),
        Err(_) => Ok(got),
    }
}

/// A Hello frame as member `from` of `cluster` would send to member `to`.
fn forged_hello(cluster: u64, from: u64, to: u64) -> Vec<u8> {
    use server::transport::codec;
    let mut buf = bytes::BytesMut::new();
    codec::encode(
        &codec::Frame::Hello(codec::Hello {
            version: codec::PROTOCOL_VERSION,
            cluster_id: cluster,
            from,
            to,
            incarnation: 42,
            name: "outsider".into(),
            client_urls: vec![],
        }),
        &mut buf,
    );
    buf.to_vec()
}

/// The header of a `endpoint status -w json` answer: (cluster id, member id, revision).
fn status(flags: &[String], port: u16) -> Option<(u64, u64, i64)> {
    let mut a = flags.to_vec();
    a.push(format!("--endpoints=https://127.0.0.1:{port}"));
    a.extend([
        "endpoint".into(),
        "status".into(),
        "-w".into(),
        "json".into(),
    ]);
    let o = etcdctl(&a);
    if !o.status.success() {
        return None;
    }
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let num = |k: &str| -> Option<i128> {
        let i = out.find(&format!("\"{k}\":"))? + k.len() + 3;
        let rest = &out[i..];
        let end = rest.find(|c: char| !c.is_ascii_digit() && c != '-')?;
        rest[..end].parse().ok()
    };
    Some((
        num("cluster_id")? as u64,
        num("member_id")? as u64,
        num("revision")? as i64,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_mtls_cluster_serves_etcdctl_over_client_mtls_and_refuses_outsiders() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "ca");
    let other_ca = Ca::new(d, "other-ca");
    let (srv_c, srv_k) = ca.leaf(d, "server", "member", 365);
    let (cli_c, cli_k) = ca.leaf(d, "client", "root", 365);
    let (rogue_c, rogue_k) = other_ca.leaf(d, "rogue", "member", 365);
    let mut extra = mutual_tls_flags(&srv_c, &srv_k, &ca.path);
    extra.push("--peer-cert-allowed-cn=member".into());
    let members = start_cluster(d, 3, "https", "https", &extra);
    let eps = members
        .iter()
        .map(|m| format!("https://127.0.0.1:{}", m.client_port))
        .collect::<Vec<_>>()
        .join(",");
    let flags = mtls_flags(&ca.path, &cli_c, &cli_k);

    // The cluster forms over peer mTLS and etcdctl writes and reads over client mTLS.
    let mut put = flags.clone();
    put.extend([
        format!("--endpoints={eps}"),
        "put".into(),
        "k".into(),
        "v1".into(),
    ]);
    poll(
        "a put over mutual TLS",
        Duration::from_secs(30),
        || logs(&members),
        || etcdctl(&put).status.success().then_some(()),
    );
    for m in &members {
        let mut get = flags.clone();
        get.extend([
            format!("--endpoints=https://127.0.0.1:{}", m.client_port),
            "get".into(),
            "k".into(),
            "--print-value-only".into(),
        ]);
        let o = etcdctl(&get);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "v1",
            "{}",
            text(&o)
        );
        // The health endpoint follows the client port's scheme.
        let mut health = flags.clone();
        health.extend([
            format!("--endpoints=https://127.0.0.1:{}", m.client_port),
            "endpoint".into(),
            "health".into(),
        ]);
        let o = etcdctl(&health);
        assert!(o.status.success(), "{}", text(&o));
    }

    // No client certificate, or one from another CA: refused.
    for bad in [
        vec![format!("--cacert={}", s(&ca.path))],
        mtls_flags(&ca.path, &rogue_c, &rogue_k),
    ] {
        let mut get = bad.clone();
        get.extend([
            format!("--endpoints=https://127.0.0.1:{}", members[0].client_port),
            "get".into(),
            "k".into(),
        ]);
        let o = etcdctl(&get);
        assert!(
            !o.status.success(),
            "accepted without a valid client cert: {}",
            text(&o)
        );
    }
    // Plaintext to the TLS client port gets no gRPC answer.
    let mut plain = vec![format!(
        "--endpoints=http://127.0.0.1:{}",
        members[0].client_port
    )];
    plain.extend(["get".into(), "k".into()]);
    let o = etcdctl(&plain);
    assert!(!o.status.success(), "plaintext accepted: {}", text(&o));

    // An outsider on the peer port, without a certificate or with one from another CA,
    // cannot complete the handshake; the member's state does not change.
    let (cluster_id, member_id, rev) =
        status(&flags, members[0].client_port).expect("endpoint status");
    let peer_ids: Vec<u64> = (1..3)
        .map(|i| status(&flags, members[i].client_port).unwrap().1)
        .collect();
    let hello = forged_hello(cluster_id, peer_ids[0], member_id);
    let peers_file = std::fs::read(members[0].data_dir.join("raftkv.peers")).unwrap_or_default();
    for cfg in [
        rustls_client(Some(&ca.path), None),
        rustls_client(Some(&ca.path), Some((&rogue_c, &rogue_k))),
    ] {
        let r = tls_exchange(members[0].peer_port, cfg, &hello).await;
        assert!(
            r.as_ref().map_or(true, |b| b.is_empty()),
            "an outsider got a handshake reply: {r:?}"
        );
    }
    // A CA-signed certificate whose CN is not the allowed one is refused too.
    let (cn_c, cn_k) = ca.leaf(d, "wrong-cn", "intruder", 365);
    let r = tls_exchange(
        members[0].peer_port,
        rustls_client(Some(&ca.path), Some((&cn_c, &cn_k))),
        &hello,
    )
    .await;
    assert!(
        r.as_ref().map_or(true, |b| b.is_empty()),
        "wrong CN admitted: {r:?}"
    );
    assert!(
        members[0].log().contains("is not the allowed \"member\""),
        "{}",
        members[0].log()
    );
    let after = status(&flags, members[0].client_port).unwrap();
    assert_eq!(
        after,
        (cluster_id, member_id, rev),
        "the member's state changed"
    );
    assert_eq!(
        std::fs::read(members[0].data_dir.join("raftkv.peers")).unwrap_or_default(),
        peers_file,
        "the outsider's incarnation was recorded"
    );
    // The real members still replicate.
    let mut put2 = flags.clone();
    put2.extend([
        format!("--endpoints={eps}"),
        "put".into(),
        "k".into(),
        "v2".into(),
    ]);
    let o = etcdctl(&put2);
    assert!(o.status.success(), "{}", text(&o));

    // raftkv's own client layer (what `raftkv --cacert --cert --key` uses) over client mTLS.
    let endpoints = vec![format!("https://127.0.0.1:{}", members[1].client_port)];
    let mtls = TlsOptions {
        cacert: Some(ca.path.clone()),
        cert: Some(cli_c.clone()),
        key: Some(cli_k.clone()),
        insecure_skip_verify: false,
    };
    assert_eq!(raftkv_value(&endpoints, &mtls, "k").await.unwrap(), "v2");
    for (refused, why) in [
        (
            TlsOptions {
                cert: None,
                key: None,
                ..mtls.clone()
            },
            "no client certificate",
        ),
        (
            TlsOptions {
                cert: Some(rogue_c.clone()),
                key: Some(rogue_k.clone()),
                ..mtls.clone()
            },
            "another CA's certificate",
        ),
        (
            TlsOptions {
                cacert: Some(other_ca.path.clone()),
                ..mtls.clone()
            },
            "a server not signed by --cacert",
        ),
    ] {
        let got = raftkv_value(&endpoints, &refused, "k").await;
        assert!(got.is_err(), "raftkv client accepted with {why}: {got:?}");
    }
    let none = raftkv_value(&endpoints, &TlsOptions::default(), "k")
        .await
        .unwrap_err();
    assert!(none.contains("--cacert"), "{none}");
}

/// `key`'s value read through raftkv's client layer with `tls`, or the error as text.
async fn raftkv_value(endpoints: &[String], tls: &TlsOptions, key: &str) -> Result<String, String> {
    let timeouts = raftkv_client::Timeouts {
        dial: Duration::from_secs(2),
        call: Duration::from_secs(5),
    };
    let client =
        raftkv_client::Client::with_tls(endpoints, timeouts, tls).map_err(|e| e.to_string())?;
    let got = client
        .get_str(key, false)
        .await
        .map_err(|e| e.to_string())?;
    Ok(got.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_tls_on_both_ports_forms_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let members = start_cluster(
        dir.path(),
        3,
        "https",
        "https",
        &["--auto-tls".into(), "--peer-auto-tls".into()],
    );
    let eps = members
        .iter()
        .map(|m| format!("https://127.0.0.1:{}", m.client_port))
        .collect::<Vec<_>>()
        .join(",");
    // etcdctl 3.4 skips verification only with both flags (as etcd's e2e suite gives them).
    let put = vec![
        "--insecure-transport=false".to_string(),
        "--insecure-skip-tls-verify".to_string(),
        format!("--endpoints={eps}"),
        "put".into(),
        "a".into(),
        "1".into(),
    ];
    poll(
        "a put over auto TLS",
        Duration::from_secs(30),
        || logs(&members),
        || etcdctl(&put).status.success().then_some(()),
    );
    for m in &members {
        for sub in ["client", "peer"] {
            for f in ["cert.pem", "key.pem"] {
                let p = m.data_dir.join("fixtures").join(sub).join(f);
                assert!(p.exists(), "{} missing", p.display());
            }
        }
        let o = etcdctl(&[
            "--insecure-transport=false".to_string(),
            "--insecure-skip-tls-verify".to_string(),
            format!("--endpoints=https://127.0.0.1:{}", m.client_port),
            "get".into(),
            "a".into(),
            "--print-value-only".into(),
        ]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "1",
            "{}",
            text(&o)
        );
    }
    // Without skipping verification etcdctl refuses the self-signed certificate.
    let o = etcdctl(&[
        format!("--endpoints=https://127.0.0.1:{}", members[0].client_port),
        "get".into(),
        "a".into(),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    // So does raftkv's client layer, which reads with --insecure-skip-tls-verify.
    let endpoints = vec![format!("https://127.0.0.1:{}", members[0].client_port)];
    let skip = TlsOptions {
        insecure_skip_verify: true,
        ..TlsOptions::default()
    };
    assert_eq!(raftkv_value(&endpoints, &skip, "a").await.unwrap(), "1");
    // Verification trusts exactly --cacert: the member's own self-signed certificate
    // passes, another member's does not.
    let trusting = |member: &Member| TlsOptions {
        cacert: Some(member.data_dir.join("fixtures/client/cert.pem")),
        ..TlsOptions::default()
    };
    assert_eq!(
        raftkv_value(&endpoints, &trusting(&members[0]), "a")
            .await
            .unwrap(),
        "1"
    );
    let got = raftkv_value(&endpoints, &trusting(&members[1]), "a").await;
    assert!(
        got.is_err(),
        "a certificate not signed by --cacert passed verification: {got:?}"
    );
}

/// Run a single member with `extra` flags and return its exit output (it must fail fast).
fn failing_start(dir: &Path, extra: &[String]) -> String {
    let ports = free_loopback_ports(2).unwrap();
    let out = Command::new(BIN)
        .args([
            "--name=solo".to_string(),
            format!("--data-dir={}", dir.join("solo.data").display()),
            format!("--listen-client-urls=https://127.0.0.1:{}", ports[0]),
            format!("--advertise-client-urls=https://127.0.0.1:{}", ports[0]),
            format!("--listen-peer-urls=http://127.0.0.1:{}", ports[1]),
            format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{}",
                ports[1]
            ),
            format!("--initial-cluster=solo=http://127.0.0.1:{}", ports[1]),
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(!out.status.success(), "started with {extra:?}");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn bad_certificate_files_stop_the_start_with_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "ca");
    let (good_c, good_k) = ca.leaf(d, "good", "member", 365);
    let (_, other_k) = ca.leaf(d, "other", "member", 365);
    let (old_c, old_k) = ca.leaf(d, "expired", "member", -2);
    let junk = d.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let missing = d.join("missing.crt");
    let cases: Vec<(Vec<String>, String, &str)> = vec![
        (
            vec![
                format!("--cert-file={}", s(&missing)),
                format!("--key-file={}", s(&good_k)),
            ],
            s(&missing),
            "cannot read",
        ),
        (
            vec![
                format!("--cert-file={}", s(&old_c)),
                format!("--key-file={}", s(&old_k)),
            ],
            s(&old_c),
            "expired",
        ),
        (
            vec![
                format!("--cert-file={}", s(&good_c)),
                format!("--key-file={}", s(&other_k)),
            ],
            s(&other_k),
            "does not match",
        ),
        (
            vec![
                format!("--cert-file={}", s(&junk)),
                format!("--key-file={}", s(&good_k)),
            ],
            s(&junk),
            "no certificate",
        ),
        (
            vec![],
            "--cert-file, --key-file".to_string(),
            "must be provided for client url",
        ),
    ];
    for (flags, names, says) in cases {
        let err = failing_start(d, &flags);
        // The log lines before it aside, the error is one line.
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("raftkv-member:"))
            .collect();
        assert_eq!(lines.len(), 1, "not one error line: {err}");
        assert!(
            lines[0].contains(&names) && lines[0].contains(says),
            "{flags:?}: {err}"
        );
    }
}

/// The leaf certificate a TLS server on `port` presents.
async fn served_cert(port: u16, ca: &Path, client: (&Path, &Path)) -> Option<Vec<u8>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let tls = tokio_rustls::TlsConnector::from(rustls_client(Some(ca), Some(client)))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .ok()?;
    Some(tls.get_ref().1.peer_certificates()?.first()?.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_client_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "ca");
    let (c1, k1) = ca.leaf(d, "first", "member", 365);
    let (cli_c, cli_k) = ca.leaf(d, "client", "root", 365);
    let (live_c, live_k) = (d.join("live.crt"), d.join("live.key"));
    std::fs::copy(&c1, &live_c).unwrap();
    std::fs::copy(&k1, &live_k).unwrap();
    let members = start_cluster(
        d,
        1,
        "https",
        "http",
        &[
            format!("--cert-file={}", s(&live_c)),
            format!("--key-file={}", s(&live_k)),
            format!("--trusted-ca-file={}", s(&ca.path)),
            "--client-cert-auth".into(),
        ],
    );
    let port = members[0].client_port;
    let first = std::fs::read(&c1).unwrap();
    let first_cert = first_der(&first);
    let mut got = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.is_none() && Instant::now() < deadline {
        got = served_cert(port, &ca.path, (&cli_c, &cli_k)).await;
        if got.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(got, Some(first_cert), "{}", members[0].log());

    // Rotate: the new pair replaces the files in place (key first, as a rotation script
    // would; the member keeps the old pair while the two do not match).
    let (c2, k2) = ca.leaf(d, "second", "member", 365);
    std::fs::copy(&k2, &live_k).unwrap();
    std::fs::copy(&c2, &live_c).unwrap();
    let second_der = first_der(&std::fs::read(&c2).unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = served_cert(port, &ca.path, (&cli_c, &cli_k)).await;
        if now.as_ref() == Some(&second_der) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still serving the old certificate\n{}",
            members[0].log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(members[0].log().contains("reloaded the TLS certificate"));
    // etcdctl works across the rotation.
    let mut put = mtls_flags(&ca.path, &cli_c, &cli_k);
    put.extend([
        format!("--endpoints=https://127.0.0.1:{port}"),
        "put".into(),
        "r".into(),
        "1".into(),
    ]);
    let o = etcdctl(&put);
    assert!(o.status.success(), "{}", text(&o));
}

/// The first certificate of a PEM buffer, DER.
fn first_der(pem: &[u8]) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[test]
fn one_port_serves_plain_and_tls_and_a_revoked_client_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "ca");
    let (srv_c, srv_k) = ca.leaf(d, "server", "member", 365);
    let (ok_c, ok_k) = ca.leaf_with_serial(d, "client-ok", "root", 365, Some(1001));
    let (rev_c, rev_k) = ca.leaf_with_serial(d, "client-revoked", "root", 365, Some(1002));
    let crl = ca.crl(d, "revoked.crl", 1002);
    let members = start_cluster(
        d,
        1,
        "both",
        "http",
        &[
            format!("--cert-file={}", s(&srv_c)),
            format!("--key-file={}", s(&srv_k)),
            format!("--trusted-ca-file={}", s(&ca.path)),
            "--client-cert-auth".into(),
            format!("--client-crl-file={}", s(&crl)),
        ],
    );
    let port = members[0].client_port;
    // Plain HTTP/2 on the shared port.
    let plain = vec![
        format!("--endpoints=http://127.0.0.1:{port}"),
        "put".to_string(),
        "p".into(),
        "1".into(),
    ];
    poll(
        "a plain put on the shared port",
        Duration::from_secs(20),
        || logs(&members),
        || etcdctl(&plain).status.success().then_some(()),
    );
    // TLS on the same port, with a valid client certificate.
    let mut tls = mtls_flags(&ca.path, &ok_c, &ok_k);
    tls.extend([
        format!("--endpoints=https://127.0.0.1:{port}"),
        "get".into(),
        "p".into(),
        "--print-value-only".into(),
    ]);
    let o = etcdctl(&tls);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "1",
        "{}",
        text(&o)
    );
    // A certificate the CRL revokes is refused.
    let mut revoked = mtls_flags(&ca.path, &rev_c, &rev_k);
    revoked.extend([
        format!("--endpoints=https://127.0.0.1:{port}"),
        "get".into(),
        "p".into(),
    ]);
    let o = etcdctl(&revoked);
    assert!(
        !o.status.success(),
        "a revoked certificate was accepted: {}",
        text(&o)
    );
}

/// The start-up corruption check asks its peers over the peer connections (peer mutual
/// TLS here), as etcd 3.4 asks its peers' peer URLs through its peer transport: so it
/// compares with every peer although the client URLs are `https://` with client-cert-auth
/// and authentication is on, where asking the client URLs (the only way before) skipped
/// every peer.
#[test]
fn the_initial_corruption_check_compares_every_peer_over_peer_tls_with_auth_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "ca");
    let (srv_c, srv_k) = ca.leaf(d, "server", "member", 365);
    let (cli_c, cli_k) = ca.leaf(d, "client", "root", 365);
    let mut extra = mutual_tls_flags(&srv_c, &srv_k, &ca.path);
    extra.push("--experimental-initial-corrupt-check".into());
    let mut members = start_cluster(d, 3, "https", "https", &extra);
    let eps = members
        .iter()
        .map(|m| format!("https://127.0.0.1:{}", m.client_port))
        .collect::<Vec<_>>()
        .join(",");
    let ctl = |args: &[&str]| {
        let mut a = mtls_flags(&ca.path, &cli_c, &cli_k);
        a.push(format!("--endpoints={eps}"));
        a.extend(args.iter().map(|x| x.to_string()));
        etcdctl(&a)
    };
    poll(
        "a put over mutual TLS",
        Duration::from_secs(30),
        || logs(&members),
        || ctl(&["put", "k0", "v0"]).status.success().then_some(()),
    );
    // Authentication on: the client certificate's CN (root) is the user.
    for args in [
        &["user", "add", "root:secret"][..],
        &["auth", "enable"],
        &["put", "k1", "v1"],
    ] {
        let o = ctl(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }
    let victim = 2;
    members[victim].restart();
    let log = poll(
        "the check to finish",
        Duration::from_secs(40),
        || logs(&members),
        || {
            let l = members[victim].log();
            l.contains("initial corruption checking passed; no corruption")
                .then_some(l)
        },
    );
    assert!(log.contains("starting initial corruption check"), "{log}");
    // Both peers compared: none skipped, no request failed.
    assert_eq!(
        log.matches("skipped the corruption check").count(),
        0,
        "{log}"
    );
    assert_eq!(log.matches("failed hash kv request").count(), 0, "{log}");
    let o = ctl(&["get", "k1", "--print-value-only"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "v1",
        "{}",
        text(&o)
    );
}
