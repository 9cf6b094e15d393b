//! The compose cluster of deploy/compose/compose.yaml (with compose.tls.yaml on top for the
//! TLS variant) under a unique project name, torn down (containers, network, volumes) on drop.

use crate::docker::{container_pid, docker};
use crate::etcd::ClientTls;
use crate::exec::{run, Output};
use crate::{image_under_test, unique_prefix};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

pub struct ComposeProject {
    pub project: String,
    pub image: String,
    /// compose.yaml, then the overrides.
    files: Vec<PathBuf>,
    /// The TLS variant's certificate directory (`RAFTKV_TLS_DIR`), when it runs.
    tls_dir: Option<PathBuf>,
    /// What the host presents to the members of the TLS variant.
    pub client_tls: Option<ClientTls>,
    tool: Vec<String>,
    /// Container id of each service, looked up once per service.
    containers: Mutex<HashMap<String, String>>,
}

/// `docker compose` (v2) if present, else `docker-compose` (1.x).
fn compose_tool() -> Vec<String> {
    let v2 = run(
        Command::new("docker").args(["compose", "version"]),
        Duration::from_secs(10),
    );
    if v2.success() {
        return vec!["docker".into(), "compose".into()];
    }
    let v1 = run(
        Command::new("docker-compose").arg("version"),
        Duration::from_secs(10),
    );
    assert!(
        v1.success(),
        "neither `docker compose` nor `docker-compose` is installed"
    );
    vec!["docker-compose".into()]
}

impl ComposeProject {
    pub fn new(test: &str) -> ComposeProject {
        Self::with_files(test, &["compose.yaml"], None)
    }

    /// The TLS variant (compose.yaml + compose.tls.yaml), its certificates in `certs` (the
    /// `--out` directory of scripts/gen-certs.sh).
    pub fn with_tls(test: &str, certs: &std::path::Path) -> ComposeProject {
        Self::with_files(test, &["compose.yaml", "compose.tls.yaml"], Some(certs))
    }

    fn with_files(test: &str, names: &[&str], tls_dir: Option<&std::path::Path>) -> ComposeProject {
        crate::docker::require_environment();
        let dir = crate::repo_root().join("deploy/compose");
        let files: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
        for file in &files {
            assert!(file.exists(), "{} is missing", file.display());
        }
        ComposeProject {
            project: unique_prefix(test),
            image: image_under_test(),
            files,
            tls_dir: tls_dir.map(std::path::Path::to_path_buf),
            client_tls: tls_dir.map(ClientTls::from_gen_certs_dir),
            tool: compose_tool(),
            containers: Mutex::new(HashMap::new()),
        }
    }

    /// `<compose> -p <project> -f <file> <args>`, bounded by `limit`.
    pub fn run(&self, args: &[&str], limit: Duration) -> Output {
        let mut cmd = Command::new(&self.tool[0]);
        cmd.args(&self.tool[1..]).args(["-p", &self.project]);
        for file in &self.files {
            cmd.arg("-f").arg(file);
        }
        cmd.args(args)
            .env("RAFTKV_IMAGE", &self.image)
            .env("RAFTKV_CLUSTER_TOKEN", &self.project);
        if let Some(dir) = &self.tls_dir {
            cmd.env("RAFTKV_TLS_DIR", dir);
        }
        run(&mut cmd, limit)
    }

    /// PID of a service's container (for nsenter).
    pub fn service_pid(&self, service: &str) -> Result<u32, String> {
        let cached = self
            .containers
            .lock()
            .map_err(|e| e.to_string())?
            .get(service)
            .cloned();
        let id = match cached {
            Some(id) => id,
            None => {
                // Compose labels its containers; asking the docker CLI is fast, unlike
                // docker-compose 1.x itself (about a second per invocation).
                let project = format!("label=com.docker.compose.project={}", self.project);
                let svc = format!("label=com.docker.compose.service={service}");
                let out = docker(&["ps", "-q", "--filter", &project, "--filter", &svc])?;
                let id = out.lines().next().unwrap_or("").trim().to_string();
                if id.is_empty() {
                    return Err(format!("service {service} has no running container"));
                }
                self.containers
                    .lock()
                    .map_err(|e| e.to_string())?
                    .insert(service.to_string(), id.clone());
                id
            }
        };
        container_pid(&id)
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let out = self.run(&["logs", "--tail", "40"], Duration::from_secs(30));
            eprintln!("---- compose logs ----\n{}{}", out.stdout, out.stderr);
        }
        let out = self.run(
            &[
                "--profile",
                "client",
                "--profile",
                "scale",
                "down",
                "-v",
                "--remove-orphans",
                "-t",
                "10",
            ],
            Duration::from_secs(120),
        );
        if !out.success() {
            eprintln!("compose down failed: {}", out.stderr);
        }
    }
}
