//! kubeadm's etcd command lines, exactly as kubeadm writes them into its static pod
//! manifest for etcd 3.5 and for etcd 3.6, start a raftkv member that serves etcdctl over
//! mutual TLS, and its initial corruption check runs (the flag in 3.5's spelling, the
//! InitialCorruptCheck feature gate in 3.6's); and the TLS flags etcd 3.5 added that such
//! deployments use are enforced. Certificates come from scripts/gen-certs.sh.

mod common;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::member::Member;
use raftkv_client::local_cluster::free_loopback_ports;

/// Where scripts/gen-certs.sh put one member's and one client's certificates.
struct Certs {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Certs {
    fn generate() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/gen-certs.sh");
        let out = Command::new("bash")
            .arg(&script)
            .args(["--out", dir.path().to_str().unwrap(), "--members", "1"])
            .output()
            .expect("cannot run gen-certs.sh");
        assert!(out.status.success(), "gen-certs.sh: {}", text(&out));
        Certs {
            root: dir.path().to_path_buf(),
            _dir: dir,
        }
    }

    fn path(&self, rel: &str) -> String {
        self.root.join(rel).display().to_string()
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// kubeadm's flags for a first control-plane node (kubeadm's `GetEtcdPodSpec`): the same
/// certificate as server and peer certificate, mutual TLS on both ports, metrics over
/// plain HTTP, plus `version_flags` (what differs between 3.5 and 3.6).
fn kubeadm_line(
    certs: &Certs,
    data_dir: &Path,
    ports: &[u16],
    version_flags: &[&str],
) -> Vec<String> {
    let (client, peer, metrics) = (ports[0], ports[1], ports[2]);
    let name = "node-1";
    let mut line = vec![
        format!("--advertise-client-urls=https://127.0.0.1:{client}"),
        format!("--cert-file={}", certs.path("members/raftkv-0.pem")),
        "--client-cert-auth=true".to_string(),
        format!("--data-dir={}", data_dir.display()),
    ];
    line.extend(version_flags.iter().map(|f| f.to_string()));
    line.extend([
        format!("--initial-advertise-peer-urls=https://127.0.0.1:{peer}"),
        format!("--initial-cluster={name}=https://127.0.0.1:{peer}"),
        format!("--key-file={}", certs.path("members/raftkv-0-key.pem")),
        format!("--listen-client-urls=https://127.0.0.1:{client}"),
        format!("--listen-metrics-urls=http://127.0.0.1:{metrics}"),
        format!("--listen-peer-urls=https://127.0.0.1:{peer}"),
        format!("--name={name}"),
        format!("--peer-cert-file={}", certs.path("members/raftkv-0.pem")),
        "--peer-client-cert-auth=true".to_string(),
        format!("--peer-key-file={}", certs.path("members/raftkv-0-key.pem")),
        format!("--peer-trusted-ca-file={}", certs.path("members/ca.pem")),
        "--snapshot-count=10000".to_string(),
        format!("--trusted-ca-file={}", certs.path("members/ca.pem")),
    ]);
    line
}

/// etcdctl over mutual TLS with the client certificate.
fn etcdctl(certs: &Certs, client_port: u16, args: &[&str]) -> Output {
    Command::new("/usr/bin/etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://127.0.0.1:{client_port}"))
        .arg(format!("--cacert={}", certs.path("client/ca.pem")))
        .arg(format!("--cert={}", certs.path("client/client.pem")))
        .arg(format!("--key={}", certs.path("client/client-key.pem")))
        .args(["--dial-timeout=5s", "--command-timeout=10s"])
        .args(args)
        .output()
        .expect("cannot run etcdctl")
}

/// kubeadm's liveness probe: plain HTTP GET on the metrics URL.
fn probe(port: u16, target: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Start a member with kubeadm's line for one etcd version: it serves etcdctl over mTLS and
/// kubeadm's probe; restarted on its data, it runs the initial corruption check first.
fn kubeadm_member_serves_and_checks(version_flags: &[&str]) {
    let certs = Certs::generate();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("etcd");
    let ports = free_loopback_ports(3).unwrap();
    let line = kubeadm_line(&certs, &data_dir, &ports, version_flags);
    let args: Vec<&str> = line.iter().map(String::as_str).collect();

    let mut m = Member::start(&args, &[], None);
    let log = m.wait_ready();
    // A new member has nothing to compare yet (etcd skips it too), and says so.
    assert!(
        log.contains("skipping the initial corruption check: a new member has no history"),
        "{log}"
    );
    assert!(!log.contains("is ignored"), "{log}");
    let put = etcdctl(&certs, ports[0], &["put", "kubeadm", "line"]);
    assert!(put.status.success(), "put: {}", text(&put));
    let got = etcdctl(&certs, ports[0], &["get", "kubeadm", "--print-value-only"]);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "line\n",
        "{}",
        text(&got)
    );
    // Without a client certificate the client port refuses (mutual TLS is on).
    let anonymous = Command::new("/usr/bin/etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://127.0.0.1:{}", ports[0]))
        .arg(format!("--cacert={}", certs.path("client/ca.pem")))
        .args([
            "--dial-timeout=2s",
            "--command-timeout=3s",
            "get",
            "kubeadm",
        ])
        .output()
        .unwrap();
    assert!(!anonymous.status.success(), "{}", text(&anonymous));
    let health = probe(ports[2], "/health?exclude=NOSPACE&serializable=true");
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains(r#""health":"true""#),
        "{health}"
    );
    assert!(m.terminate().success(), "{}", m.log());

    // The same line on the data it wrote: the check runs before clients are served.
    let mut m = Member::start(&args, &[], None);
    let log = m.wait_ready();
    let started = log
        .find("starting initial corruption check")
        .unwrap_or_else(|| panic!("the initial corruption check did not run:\n{log}"));
    let passed = log
        .find("initial corruption checking passed; no corruption")
        .unwrap_or_else(|| panic!("the initial corruption check did not pass:\n{log}"));
    let ready = log.find("ready to serve client requests").unwrap();
    assert!(started < passed && passed < ready, "{log}");
    let got = etcdctl(&certs, ports[0], &["get", "kubeadm", "--print-value-only"]);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "line\n",
        "{}",
        text(&got)
    );
    drop(data);
}

#[test]
fn kubeadms_etcd_3_5_command_line_starts_a_member() {
    kubeadm_member_serves_and_checks(&[
        "--experimental-initial-corrupt-check=true",
        "--experimental-watch-progress-notify-interval=5s",
    ]);
}

#[test]
fn kubeadms_etcd_3_6_command_line_starts_a_member() {
    kubeadm_member_serves_and_checks(&[
        "--feature-gates=InitialCorruptCheck=true",
        "--watch-progress-notify-interval=5s",
    ]);
}

/// Bad `--feature-gates` values and a gate given with its experimental flag are refused by
/// the real binary, with etcd 3.6's words and exit statuses (2 for a flag's value, as Go's
/// flag package exits; 1 for a configuration etcd rejects after parsing).
#[test]
fn bad_feature_gates_are_refused_in_etcds_words() {
    let run = |args: &[&str]| {
        Command::new(common::BIN)
            .arg("--dry-run")
            .args(args)
            .output()
            .unwrap()
    };
    for (args, status, first) in [
        (
            &["--feature-gates=NoSuchGate=true"][..],
            2,
            r#"invalid value "NoSuchGate=true" for flag -feature-gates: unrecognized feature gate: NoSuchGate"#,
        ),
        (
            &["--feature-gates=InitialCorruptCheck=maybe"],
            2,
            r#"invalid value "InitialCorruptCheck=maybe" for flag -feature-gates: invalid value of InitialCorruptCheck=maybe, err: strconv.ParseBool: parsing "maybe": invalid syntax"#,
        ),
        (
            &[
                "--feature-gates=InitialCorruptCheck=true",
                "--experimental-initial-corrupt-check=true",
            ],
            1,
            "cannot specify both flags: --experimental-initial-corrupt-check=true and --feature-gates=InitialCorruptCheck=true at the same time, please just use --feature-gates=InitialCorruptCheck=true",
        ),
    ] {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{args:?}: {}", text(&out));
        assert!(stderr.contains(first), "{args:?}: {stderr}");
    }
    // The environment too, named as the user wrote it.
    let out = Command::new(common::BIN)
        .arg("--dry-run")
        .env("ETCD_FEATURE_GATES", "Bogus=true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            r#"error verifying flags, invalid value "Bogus=true" for ETCD_FEATURE_GATES: unrecognized feature gate: Bogus."#
        ),
        "{}",
        text(&out)
    );
}

/// `--tls-min-version=TLS1.3` refuses a TLS 1.2 handshake (openssl's client, forced to 1.2)
/// and still serves etcdctl; `--client-cert-allowed-hostname` admits a client certificate
/// valid for that name (the member certificate, which names `localhost`) and refuses one
/// that is not (the client certificate, which names no host).
#[test]
fn tls_min_version_and_allowed_client_hostname_are_enforced() {
    let certs = Certs::generate();
    let data = tempfile::tempdir().unwrap();
    let ports = free_loopback_ports(3).unwrap();
    let mut line = kubeadm_line(&certs, &data.path().join("etcd"), &ports, &[]);
    line.push("--tls-min-version=TLS1.3".to_string());
    line.push("--client-cert-allowed-hostname=localhost".to_string());
    let args: Vec<&str> = line.iter().map(String::as_str).collect();
    let mut m = Member::start(&args, &[], None);
    m.wait_ready();

    let handshake = |version: &str| {
        Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{}", ports[0])])
            .arg(version)
            .args(["-CAfile", &certs.path("members/ca.pem")])
            .args(["-cert", &certs.path("members/raftkv-0.pem")])
            .args(["-key", &certs.path("members/raftkv-0-key.pem")])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("cannot run openssl")
    };
    // A failed handshake never gets to the server's certificate.
    let tls12 = handshake("-tls1_2");
    assert!(
        !tls12.status.success()
            && String::from_utf8_lossy(&tls12.stdout).contains("no peer certificate available"),
        "a TLS 1.2 handshake succeeded: {}",
        text(&tls12)
    );
    let tls13 = handshake("-tls1_3");
    assert!(
        tls13.status.success()
            && String::from_utf8_lossy(&tls13.stdout).contains("TLSv1.3, Cipher is TLS_"),
        "TLS 1.3: {}",
        text(&tls13)
    );

    // The member certificate names localhost: admitted.
    let as_member = Command::new("/usr/bin/etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://127.0.0.1:{}", ports[0]))
        .arg(format!("--cacert={}", certs.path("members/ca.pem")))
        .arg(format!("--cert={}", certs.path("members/raftkv-0.pem")))
        .arg(format!("--key={}", certs.path("members/raftkv-0-key.pem")))
        .args([
            "--dial-timeout=5s",
            "--command-timeout=10s",
            "put",
            "k",
            "v",
        ])
        .output()
        .unwrap();
    assert!(as_member.status.success(), "{}", text(&as_member));
    // The client certificate names no host: refused.
    let as_client = Command::new("/usr/bin/etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://127.0.0.1:{}", ports[0]))
        .arg(format!("--cacert={}", certs.path("client/ca.pem")))
        .arg(format!("--cert={}", certs.path("client/client.pem")))
        .arg(format!("--key={}", certs.path("client/client-key.pem")))
        .args(["--dial-timeout=2s", "--command-timeout=3s", "get", "k"])
        .output()
        .unwrap();
    assert!(!as_client.status.success(), "{}", text(&as_client));
    drop(data);
}

/// `--peer-client-cert-file` is the certificate a member presents when it dials its peers:
/// with every peer port admitting only the common name `root` (`--peer-cert-allowed-cn`),
/// three members whose own certificate is `raftkv-0` form a cluster only by dialling with
/// the `root` client certificate.
#[test]
fn peer_client_cert_file_is_presented_when_dialling_peers() {
    let certs = Certs::generate();
    let ports = free_loopback_ports(6).unwrap();
    let peer = |i: usize| format!("https://127.0.0.1:{}", ports[2 * i + 1]);
    let initial = (0..3)
        .map(|i| format!("m{i}={}", peer(i)))
        .collect::<Vec<_>>()
        .join(",");
    let mut members: Vec<Member> = (0..3)
        .map(|i| {
            let client = format!("http://127.0.0.1:{}", ports[2 * i]);
            let line = vec![
                format!("--name=m{i}"),
                "--data-dir={dir}/data".to_string(),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={}", peer(i)),
                format!("--initial-advertise-peer-urls={}", peer(i)),
                format!("--initial-cluster={initial}"),
                "--heartbeat-interval=50".to_string(),
                "--election-timeout=500".to_string(),
                format!("--peer-cert-file={}", certs.path("members/raftkv-0.pem")),
                format!("--peer-key-file={}", certs.path("members/raftkv-0-key.pem")),
                format!("--peer-trusted-ca-file={}", certs.path("members/ca.pem")),
                "--peer-client-cert-auth".to_string(),
                "--peer-cert-allowed-cn=root".to_string(),
                format!(
                    "--peer-client-cert-file={}",
                    certs.path("client/client.pem")
                ),
                format!(
                    "--peer-client-key-file={}",
                    certs.path("client/client-key.pem")
                ),
            ];
            let args: Vec<&str> = line.iter().map(String::as_str).collect();
            Member::start(&args, &[], None)
        })
        .collect();
    for m in &mut members {
        m.wait_ready();
    }
    let put = Command::new("/usr/bin/etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=http://127.0.0.1:{}", ports[0]))
        .args([
            "--dial-timeout=5s",
            "--command-timeout=10s",
            "put",
            "k",
            "v",
        ])
        .output()
        .unwrap();
    let logs = || {
        members
            .iter()
            .map(|m| m.log())
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    assert!(put.status.success(), "{}\n{}", text(&put), logs());
    let got = Command::new("/usr/bin/etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=http://127.0.0.1:{}", ports[4]))
        .args(["--dial-timeout=5s", "--command-timeout=10s", "get", "k"])
        .args(["--print-value-only", "--consistency=l"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "v\n",
        "{}",
        text(&got)
    );
}
