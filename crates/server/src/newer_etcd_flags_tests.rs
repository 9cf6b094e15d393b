//! Every server flag of etcd 3.5 and 3.6 parses, and each flag they added is in the class
//! the module documentation gives it.

use std::time::Duration;

use clap::Parser;

use crate::args::{LogFormat, ServerArgs};
use crate::config::Config;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ServerArgs,
}

/// Every flag etcd 3.6 registers (`embed.Config.AddFlags` plus `etcdmain`'s own:
/// `--config-file`, `--discovery-fallback`, `--initial-cluster-state`, `--v2-deprecation`,
/// `--version`) and the ones etcd 3.5 has that 3.6 dropped (`--enable-v2`,
/// `--experimental-enable-v2v3`, the v2 proxy's, `--experimental-max-learners`), each
/// with a value etcd takes.
const ETCD_35_36_FLAGS: &[&str] = &[
    "--data-dir=d",
    "--wal-dir=",
    "--listen-peer-urls=http://localhost:2380",
    "--listen-client-urls=http://localhost:2379",
    "--listen-client-http-urls=",
    "--listen-metrics-urls=",
    "--max-snapshots=5",
    "--max-wals=5",
    "--name=default",
    "--snapshot-count=10000",
    "--heartbeat-interval=100",
    "--election-timeout=1000",
    "--initial-election-tick-advance=true",
    "--quota-backend-bytes=0",
    "--backend-bbolt-freelist-type=map",
    "--backend-batch-interval=10ms",
    "--backend-batch-limit=0",
    "--max-txn-ops=128",
    "--max-request-bytes=1572864",
    "--grpc-keepalive-min-time=5s",
    "--grpc-keepalive-interval=2h",
    "--grpc-keepalive-timeout=20s",
    "--socket-reuse-port=false",
    "--socket-reuse-address=false",
    "--max-concurrent-streams=4294967295",
    "--raft-read-timeout=5s",
    "--raft-write-timeout=5s",
    "--initial-advertise-peer-urls=http://localhost:2380",
    "--advertise-client-urls=http://localhost:2379",
    "--discovery=",
    "--discovery-endpoints=",
    "--discovery-token=",
    "--discovery-dial-timeout=2s",
    "--discovery-request-timeout=5s",
    "--discovery-keepalive-time=2s",
    "--discovery-keepalive-timeout=6s",
    "--discovery-insecure-transport=true",
    "--discovery-insecure-skip-tls-verify=false",
    "--discovery-cert=",
    "--discovery-key=",
    "--discovery-cacert=",
    "--discovery-user=",
    "--discovery-password=",
    "--discovery-proxy=",
    "--discovery-srv=",
    "--discovery-srv-name=",
    "--discovery-fallback=exit",
    "--initial-cluster=default=http://localhost:2380",
    "--initial-cluster-token=etcd-cluster",
    "--initial-cluster-state=new",
    "--strict-reconfig-check=true",
    "--pre-vote=true",
    "--cert-file=",
    "--key-file=",
    "--client-cert-file=",
    "--client-key-file=",
    "--client-cert-auth=false",
    "--client-crl-file=",
    "--client-cert-allowed-hostname=",
    "--trusted-ca-file=",
    "--auto-tls=false",
    "--peer-cert-file=",
    "--peer-key-file=",
    "--peer-client-cert-file=",
    "--peer-client-key-file=",
    "--peer-client-cert-auth=false",
    "--peer-trusted-ca-file=",
    "--peer-auto-tls=false",
    "--self-signed-cert-validity=1",
    "--peer-crl-file=",
    "--peer-cert-allowed-cn=",
    "--peer-cert-allowed-hostname=",
    "--cipher-suites=",
    "--experimental-peer-skip-client-san-verification=false",
    "--peer-skip-client-san-verification=false",
    "--tls-min-version=TLS1.2",
    "--tls-max-version=",
    "--cors=*",
    "--host-whitelist=*",
    "--logger=zap",
    "--log-outputs=default",
    "--log-level=info",
    "--log-format=json",
    "--enable-log-rotation=false",
    r#"--log-rotation-config-json={"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, "compress": false}"#,
    "--auto-compaction-retention=0",
    "--auto-compaction-mode=periodic",
    "--enable-pprof=false",
    "--metrics=basic",
    "--experimental-enable-distributed-tracing=false",
    "--enable-distributed-tracing=false",
    "--experimental-distributed-tracing-address=localhost:4317",
    "--distributed-tracing-address=localhost:4317",
    "--experimental-distributed-tracing-service-name=etcd",
    "--distributed-tracing-service-name=etcd",
    "--experimental-distributed-tracing-instance-id=",
    "--distributed-tracing-instance-id=",
    "--experimental-distributed-tracing-sampling-rate=0",
    "--distributed-tracing-sampling-rate=0",
    "--auth-token=simple",
    "--bcrypt-cost=10",
    "--auth-token-ttl=300",
    "--enable-grpc-gateway=true",
    "--experimental-initial-corrupt-check=false",
    "--experimental-corrupt-check-time=0s",
    "--corrupt-check-time=0s",
    "--experimental-compact-hash-check-enabled=false",
    "--experimental-compact-hash-check-time=1m",
    "--compact-hash-check-time=1m",
    "--experimental-enable-lease-checkpoint=false",
    "--experimental-enable-lease-checkpoint-persist=false",
    "--experimental-compaction-batch-limit=0",
    "--compaction-batch-limit=0",
    "--experimental-compaction-sleep-interval=10ms",
    "--compaction-sleep-interval=10ms",
    "--experimental-watch-progress-notify-interval=10m",
    "--watch-progress-notify-interval=10m",
    "--downgrade-check-time=5s",
    "--experimental-downgrade-check-time=5s",
    "--experimental-warning-apply-duration=100ms",
    "--warning-apply-duration=100ms",
    "--warning-unary-request-duration=300ms",
    "--experimental-warning-unary-request-duration=300ms",
    "--experimental-memory-mlock=false",
    "--memory-mlock=false",
    "--experimental-txn-mode-write-with-shared-buffer=true",
    "--experimental-stop-grpc-service-on-defrag=false",
    "--experimental-bootstrap-defrag-threshold-megabytes=0",
    "--bootstrap-defrag-threshold-megabytes=0",
    "--max-learners=1",
    "--experimental-max-learners=1",
    "--experimental-snapshot-catchup-entries=5000",
    "--snapshot-catchup-entries=5000",
    "--unsafe-no-fsync=false",
    "--force-new-cluster=false",
    "--feature-gates=InitialCorruptCheck=false",
    "--config-file=",
    "--v2-deprecation=write-only",
    "--version",
    // etcd 3.5 only.
    "--enable-v2=false",
    "--experimental-enable-v2v3=",
    "--proxy=off",
    "--proxy-failure-wait=5000",
    "--proxy-refresh-interval=30000",
    "--proxy-dial-timeout=1000",
    "--proxy-write-timeout=5000",
    "--proxy-read-timeout=0",
];

fn args(extra: &[&str]) -> ServerArgs {
    let mut v = vec!["raftkv"];
    v.extend_from_slice(extra);
    match Cli::try_parse_from(v) {
        Ok(cli) => cli.args,
        Err(e) => panic!("{extra:?}: {e}"),
    }
}

fn config(extra: &[&str]) -> anyhow::Result<Config> {
    let c = Config::from_args(&args(extra))?;
    crate::tls::setup_for(&c, false)?;
    Ok(c)
}

#[test]
fn every_etcd_35_and_36_flag_is_accepted() {
    for flag in ETCD_35_36_FLAGS {
        args(&[flag]);
    }
    // Each flag's ETCD_* twin exists (adopt_etcd_env maps RAFTKV_X to ETCD_X).
    use clap::CommandFactory as _;
    let cmd = Cli::command();
    for flag in ETCD_35_36_FLAGS.iter().filter(|f| **f != "--version") {
        let name = flag.trim_start_matches("--").split('=').next().unwrap();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(name))
            .unwrap_or_else(|| panic!("--{name} is not a flag of its own"));
        let want = format!("RAFTKV_{}", name.to_uppercase().replace('-', "_"));
        assert_eq!(
            arg.get_env().and_then(|e| e.to_str()),
            Some(want.as_str()),
            "--{name}"
        );
    }
}

/// A flag in the "ignored, said once" class: accepted, and the start-up notes name it.
fn ignored(flag: &str, named: &str) {
    let c = config(&[flag]).unwrap_or_else(|e| panic!("{flag}: {e:#}"));
    assert!(
        c.notes.iter().any(|n| n.contains(named)),
        "{flag}: no note naming {named}: {:?}",
        c.notes
    );
}

fn refused(flags: &[&str], says: &str) {
    match config(flags) {
        Ok(_) => panic!("{flags:?} was accepted"),
        Err(e) => assert!(format!("{e:#}").contains(says), "{flags:?}: {e:#}"),
    }
}

#[test]
fn implemented_flags_have_their_effect() {
    let secs = |s| Some(Duration::from_secs(s));
    let quiet = |c: &Config| c.notes.iter().all(|n| !n.contains("ignored"));
    for (flags, interval) in [
        (&["--corrupt-check-time=5s"][..], secs(5)),
        (&["--experimental-corrupt-check-time=7s"], secs(7)),
        (&["--corrupt-check-time=0"], None),
        (&["--feature-gates=CompactHashCheck=true"], secs(60)),
        (
            &[
                "--experimental-compact-hash-check-enabled",
                "--experimental-compact-hash-check-time=30s",
            ],
            secs(30),
        ),
        (
            &[
                "--feature-gates=CompactHashCheck=true",
                "--compact-hash-check-time=2m",
                "--corrupt-check-time=90s",
            ],
            secs(90),
        ),
        // The period alone does not turn the check on, as in etcd.
        (&["--compact-hash-check-time=2m"], None),
    ] {
        let c = config(flags).unwrap();
        assert_eq!(c.corrupt_check_interval, interval, "{flags:?}");
        assert!(quiet(&c), "{flags:?}: {:?}", c.notes);
    }
    let c = config(&["--feature-gates=CompactHashCheck=true"]).unwrap();
    assert!(c.notes.iter().any(|n| n.starts_with("CompactHashCheck")));

    for flags in [
        &["--feature-gates=InitialCorruptCheck=true"][..],
        &["--experimental-initial-corrupt-check"],
        &["--feature-gates=AllAlpha=true"],
    ] {
        assert!(config(flags).unwrap().initial_corrupt_check, "{flags:?}");
    }
    assert!(!config(&[]).unwrap().initial_corrupt_check);
    assert!(
        !config(&["--feature-gates=AllAlpha=true,InitialCorruptCheck=false"])
            .unwrap()
            .initial_corrupt_check
    );

    assert_eq!(config(&[]).unwrap().max_learners, 1);
    assert_eq!(config(&["--max-learners=3"]).unwrap().max_learners, 3);
    assert_eq!(
        config(&["--experimental-max-learners=2"])
            .unwrap()
            .max_learners,
        2
    );
    assert_eq!(
        config(&["--log-format=console"]).unwrap().log.format,
        LogFormat::Text
    );
    for flag in [
        "--watch-progress-notify-interval=5s",
        "--experimental-watch-progress-notify-interval=5s",
    ] {
        assert_eq!(
            config(&[flag]).unwrap().watch_progress_interval,
            Duration::from_secs(5)
        );
    }
    assert_eq!(
        config(&[]).unwrap().watch_progress_interval,
        Duration::from_secs(600)
    );
    for flag in [
        "--peer-skip-client-san-verification",
        "--experimental-peer-skip-client-san-verification=true",
        "--peer-client-cert-file=",
        "--tls-min-version=TLS1.3",
        "--tls-max-version=TLS1.2",
    ] {
        let c = config(&[flag]).unwrap();
        assert!(quiet(&c), "{flag}: {:?}", c.notes);
    }
}

#[test]
fn tls_versions_follow_the_flags() {
    let versions = |flags: &[&str]| {
        crate::tls::protocol_versions(&args(flags).tls)
            .map(|v| v.iter().map(|p| p.version).collect::<Vec<_>>())
    };
    use rustls::ProtocolVersion::{TLSv1_2, TLSv1_3};
    assert_eq!(versions(&[]).unwrap(), [TLSv1_2, TLSv1_3]);
    assert_eq!(versions(&["--tls-min-version=TLS1.3"]).unwrap(), [TLSv1_3]);
    assert_eq!(versions(&["--tls-max-version=TLS1.2"]).unwrap(), [TLSv1_2]);
    let err = |flags: &[&str]| versions(flags).unwrap_err().to_string();
    assert_eq!(
        err(&["--tls-min-version=TLS1.3", "--tls-max-version=TLS1.2"]),
        "min version (TLS1.3) is greater than max version (TLS1.2)"
    );
    assert_eq!(
        err(&["--tls-min-version=TLS1.1"]),
        r#"unexpected TLS version "TLS1.1" (must be one of: TLS1.2, TLS1.3)"#
    );
    assert_eq!(
        err(&[
            "--tls-min-version=TLS1.3",
            "--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        ]),
        "cipher suites cannot be configured when only TLS1.3 is enabled"
    );
}

#[test]
fn ignored_flags_say_so_once() {
    for (flag, named) in [
        (
            "--snapshot-catchup-entries=100",
            "--snapshot-catchup-entries",
        ),
        (
            "--experimental-snapshot-catchup-entries=100",
            "--snapshot-catchup-entries",
        ),
        ("--compaction-batch-limit=10", "--compaction-batch-limit"),
        (
            "--compaction-sleep-interval=1ms",
            "--compaction-sleep-interval",
        ),
        (
            "--experimental-compaction-sleep-interval=1ms",
            "--compaction-sleep-interval",
        ),
        ("--warning-apply-duration=1s", "--warning-apply-duration"),
        (
            "--warning-unary-request-duration=1s",
            "--warning-unary-request-duration",
        ),
        (
            "--experimental-warning-unary-request-duration=1s",
            "--warning-unary-request-duration",
        ),
        (
            "--bootstrap-defrag-threshold-megabytes=10",
            "--bootstrap-defrag-threshold-megabytes",
        ),
        (
            "--experimental-bootstrap-defrag-threshold-megabytes=10",
            "--bootstrap-defrag-threshold-megabytes",
        ),
        ("--memory-mlock", "--memory-mlock"),
        ("--experimental-memory-mlock", "--memory-mlock"),
        ("--downgrade-check-time=1s", "--downgrade-check-time"),
        (
            "--experimental-downgrade-check-time=1s",
            "--downgrade-check-time",
        ),
        (
            "--enable-distributed-tracing",
            "--enable-distributed-tracing",
        ),
        (
            "--experimental-enable-distributed-tracing",
            "--enable-distributed-tracing",
        ),
        (
            "--distributed-tracing-address=x:1",
            "--distributed-tracing-*",
        ),
        ("--socket-reuse-port", "--socket-reuse-port"),
        ("--socket-reuse-address", "--socket-reuse-address"),
        ("--raft-read-timeout=10s", "--raft-read-timeout"),
        ("--raft-write-timeout=10s", "--raft-write-timeout"),
        ("--enable-log-rotation", "--enable-log-rotation"),
        ("--v2-deprecation=gone", "--v2-deprecation"),
        (
            "--backend-bbolt-freelist-type=array",
            "--backend-bbolt-freelist-type",
        ),
        ("--discovery-dial-timeout=1s", "--discovery-*"),
        ("--client-cert-file=/c.crt", "--client-cert-file"),
        (
            "--experimental-enable-lease-checkpoint",
            "LeaseCheckpoint/LeaseCheckpointPersist",
        ),
        (
            "--feature-gates=LeaseCheckpoint=true,LeaseCheckpointPersist=true",
            "LeaseCheckpoint/LeaseCheckpointPersist",
        ),
        (
            "--feature-gates=StopGRPCServiceOnDefrag=true",
            "StopGRPCServiceOnDefrag",
        ),
        (
            "--experimental-stop-grpc-service-on-defrag",
            "StopGRPCServiceOnDefrag",
        ),
        (
            "--experimental-txn-mode-write-with-shared-buffer=false",
            "TxnModeWriteWithSharedBuffer",
        ),
        (
            "--feature-gates=SetMemberLocalAddr=true",
            "SetMemberLocalAddr",
        ),
    ] {
        ignored(flag, named);
    }
    // Nothing given, nothing said.
    assert!(config(&[]).unwrap().notes.is_empty());
}

#[test]
fn refused_flags_and_etcd_36_conflicts() {
    refused(
        &["--discovery-endpoints=http://127.0.0.1:1"],
        "--discovery-endpoints",
    );
    refused(&["--discovery-token=t"], "--discovery-token");
    refused(
        &["--listen-client-http-urls=http://127.0.0.1:1"],
        "--listen-client-http-urls is not supported",
    );
    refused(
        &["--compact-hash-check-time=0"],
        "--compact-hash-check-time must be >0 (set to 0s)",
    );
    refused(
        &["--max-learners=-1"],
        "--max-learners must not be negative",
    );
    refused(&["--raft-read-timeout=soon"], "--raft-read-timeout");
    refused(
        &["--corrupt-check-time=1s", "--experimental-corrupt-check-time=2s"],
        "cannot set --experimental-corrupt-check-time and --corrupt-check-time at the same time, please use --corrupt-check-time only",
    );
    refused(
        &[
            "--watch-progress-notify-interval=1s",
            "--experimental-watch-progress-notify-interval=1s",
        ],
        "cannot set --experimental-watch-progress-notify-interval and --watch-progress-notify-interval at the same time, please use --watch-progress-notify-interval only",
    );
    refused(
        &[
            "--snapshot-catchup-entries=1",
            "--experimental-snapshot-catchup-entries=1",
        ],
        "please use --snapshot-catchup-entries only",
    );
    refused(
        &[
            "--warning-unary-request-duration=1s",
            "--experimental-warning-unary-request-duration=1s",
        ],
        "both --experimental-warning-unary-request-duration and --warning-unary-request-duration flags are set. Use only --warning-unary-request-duration",
    );
    refused(
        &[
            "--feature-gates=InitialCorruptCheck=true",
            "--experimental-initial-corrupt-check=false",
        ],
        "cannot specify both flags: --experimental-initial-corrupt-check=false and --feature-gates=InitialCorruptCheck=true at the same time, please just use --feature-gates=InitialCorruptCheck=true",
    );
    refused(
        &["--experimental-enable-lease-checkpoint-persist"],
        "enabling feature gate LeaseCheckpointPersist requires enabling feature gate LeaseCheckpoint",
    );
}

#[test]
fn bad_feature_gates_are_worded_as_etcd_words_them() {
    use clap::CommandFactory as _;
    let cmd = crate::args::ServerCli::command();
    let first_line = |flag: &str| {
        let e = <crate::args::ServerCli as Parser>::try_parse_from([flag])
            .err()
            .unwrap_or_else(|| panic!("{flag} was accepted"));
        let answer = crate::flag_errors::etcd_answer(&e, &cmd, "raftkv server").unwrap();
        assert_eq!(answer.status, 2);
        answer.text.lines().next().unwrap().to_string()
    };
    assert_eq!(
        first_line("--feature-gates=NoSuchGate=true"),
        r#"invalid value "NoSuchGate=true" for flag -feature-gates: unrecognized feature gate: NoSuchGate"#
    );
    assert_eq!(
        first_line("--feature-gates=InitialCorruptCheck=maybe"),
        r#"invalid value "InitialCorruptCheck=maybe" for flag -feature-gates: invalid value of InitialCorruptCheck=maybe, err: strconv.ParseBool: parsing "maybe": invalid syntax"#
    );
    assert_eq!(
        first_line("--feature-gates=InitialCorruptCheck"),
        r#"invalid value "InitialCorruptCheck" for flag -feature-gates: missing bool value for InitialCorruptCheck"#
    );
}

#[test]
fn the_config_file_takes_the_new_keys() {
    let a = crate::config_file::parse(
        "feature-gates: InitialCorruptCheck=true\nexperimental-snapshot-catch-up-entries: 100\nmax-learners: 2\n",
    )
    .unwrap();
    let c = Config::from_args(&a).unwrap();
    assert!(c.initial_corrupt_check);
    assert_eq!(c.max_learners, 2);
    assert!(c
        .notes
        .iter()
        .any(|n| n.contains("--snapshot-catchup-entries")));
}
