//! Harness for raftkv's fault tests on real containers (issue 5).
//!
//! Each test builds its own 3-member cluster from the `raftkv` image with `docker run`
//! (or the compose file), under names that carry a per-run id, and tears everything down on
//! drop, also when the test fails. The host reaches a member through the member's own
//! network namespace (`nsenter -n` + a client on 127.0.0.1), so it works the same whether
//! the member is connected, disconnected or paused, and no traffic leaves the containers'
//! private networks.
//!
//! Prerequisites (missing ones fail the tests loudly): Docker, root (for nsenter), `etcdctl`,
//! and the image named by `RAFTKV_IMAGE` (tests-docker/run.sh builds it).

pub mod cluster;
pub mod compose;
pub mod docker;
pub mod etcd;
pub mod exec;
pub mod netns;
pub mod report;
pub mod wait;

/// The image under test, from `RAFTKV_IMAGE`; panics with instructions if unset or absent.
pub fn image_under_test() -> String {
    let image = std::env::var("RAFTKV_IMAGE").unwrap_or_else(|_| {
        panic!("RAFTKV_IMAGE is not set: run tests-docker/run.sh, which builds the image first")
    });
    if let Err(e) = docker::docker(&["image", "inspect", "--format", "{{.Id}}", &image]) {
        panic!("image {image} is not present ({e}); run scripts/docker-build.sh");
    }
    image
}

/// A short id, unique per test process and test, used in every resource name so that
/// concurrent or leftover runs never collide and cleanup removes only our own resources.
pub fn unique_prefix(test: &str) -> String {
    let run = std::env::var("RAFTKV_DOCKER_RUN_ID").unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{}{:x}", std::process::id(), nanos % 0xfff)
    });
    format!("rkvt-{run}-{test}")
}

/// The label every resource of this run carries, so run.sh's trap can sweep them.
pub fn run_label() -> String {
    format!(
        "raftkv-docker-test={}",
        std::env::var("RAFTKV_DOCKER_RUN_ID").unwrap_or_else(|_| "adhoc".into())
    )
}

/// The repository's root: `RAFTKV_REPO_ROOT` (run.sh sets it) or, failing that, the parent
/// of this crate as it was when compiled. Read at run time because a test binary may be
/// reused from a build of another checkout with identical sources.
pub fn repo_root() -> std::path::PathBuf {
    match std::env::var_os("RAFTKV_REPO_ROOT") {
        Some(root) => root.into(),
        None => std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}
