//! The web dashboard in a real headless browser (Debian's Chromium, installed through
//! `scripts/ensure-packages.sh` when missing; the test fails, not skips, without it).
//!
//! A 3-member cluster; the test writes keys, points Chromium at a follower's `/dashboard`
//! and checks the rendered DOM names the current leader (name and id), shows a key and its
//! value, that key's history back to its creation, another key's history stopping at a
//! compaction, and watch events for writes made while the page is open, with no console
//! message at all (the page logs nothing, so any message is an error, a failed load or an
//! uncaught exception). A screenshot goes to
//! `target/artifacts/dashboard.png`. The console check is proven on a page with a
//! deliberate error, and `--enable-dashboard=false` is checked to answer 404.
//! Bounded: every wait polls with a deadline, and Chromium is killed past its own.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// One Chromium run may take this long (start, load, virtual time, dump).
const CHROMIUM_LIMIT: Duration = Duration::from_secs(30);

fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn ensure_chromium() {
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/ensure-packages.sh"))
        .arg("chromium:chromium")
        .status()
        .expect("run scripts/ensure-packages.sh");
    assert!(status.success(), "cannot install Debian's chromium package");
}

/// What one headless Chromium run printed.
struct Run {
    stdout: String,
    stderr: String,
}

impl Run {
    /// The page's console messages. Chromium logs every console call and uncaught error
    /// as `...:INFO:CONSOLE:<line>] "message", source: url (line)` with
    /// `--enable-logging=stderr`.
    fn console(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.contains(":CONSOLE"))
            .collect()
    }
}

/// Run headless Chromium on `url` with `extra` arguments (the action: `--dump-dom`,
/// `--screenshot=...`), giving the page `budget_ms` of virtual time to run its scripts.
fn chromium(url: &str, budget_ms: u32, extra: &[String]) -> Run {
    let profile = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let stdout_path = out_dir.path().join("stdout");
    let stderr_path = out_dir.path().join("stderr");
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + CHROMIUM_LIMIT;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish within {CHROMIUM_LIMIT:?}; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Run {
        stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
    }
}

/// GET `path` on a member's client URL (`http://host:port`): status code and body.
fn http_get(base: &str, path: &str) -> Option<(u16, String)> {
    let addr = base.strip_prefix("http://")?;
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let dir = target.join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The detection the dashboard test relies on, on a page with a deliberate error (and on
/// the same page without it): an uncaught exception must show up, a clean page must not.
#[test]
fn console_check_catches_a_script_error() {
    ensure_chromium();
    let dir = tempfile::tempdir().unwrap();
    let page = |script: &str| {
        format!(
            "<!doctype html><html><head><link rel=\"icon\" href=\"data:,\"></head><body>\
             <p id=\"p\">before</p><script>{script}</script></body></html>"
        )
    };
    let bad = dir.path().join("bad.html");
    std::fs::write(
        &bad,
        page("document.getElementById('p').textContent = 'after'; notAFunction();"),
    )
    .unwrap();
    let good = dir.path().join("good.html");
    std::fs::write(
        &good,
        page("document.getElementById('p').textContent = 'after';"),
    )
    .unwrap();

    let run = chromium(
        &format!("file://{}", bad.display()),
        1000,
        &["--dump-dom".into()],
    );
    assert!(
        run.stdout.contains("after"),
        "page did not run: {}",
        run.stdout
    );
    let console = run.console();
    assert!(
        console.iter().any(|l| l.contains("notAFunction")),
        "the deliberate error went unnoticed; stderr:\n{}",
        run.stderr
    );

    let run = chromium(
        &format!("file://{}", good.display()),
        1000,
        &["--dump-dom".into()],
    );
    assert!(
        run.stdout.contains("after"),
        "page did not run: {}",
        run.stdout
    );
    assert!(run.console().is_empty(), "{:?}", run.console());
}

/// The DOM from the first of repeated loads of `page` that contains every `wanted` text
/// (the page may need a refresh or two while the cluster settles), failing at once on any
/// console message and after 40 s without every text.
fn until_shown(page: &str, wanted: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let run = tokio::task::block_in_place(|| chromium(page, 4000, &["--dump-dom".into()]));
        let console = run.console();
        assert!(
            console.is_empty(),
            "the dashboard logged to the console:\n{}",
            console.join("\n")
        );
        let missing: Vec<&&str> = wanted
            .iter()
            .filter(|w| !run.stdout.contains(**w))
            .collect();
        if missing.is_empty() {
            return run.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard never showed {missing:?}; DOM:\n{}\nstderr:\n{}",
            run.stdout,
            run.stderr
        );
    }
}

/// The part of `dom` from the element with `attr` to the end of its table.
fn section<'a>(dom: &'a str, attr: &str) -> &'a str {
    let start = dom
        .find(attr)
        .unwrap_or_else(|| panic!("no {attr} in {dom}"));
    let rest = &dom[start..];
    &rest[..rest.find("</table>").unwrap_or(rest.len())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_leader_and_a_fresh_key() {
    ensure_chromium();
    let c = Cluster::start(3, &[]);
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let leader_id = c
        .status(leader)
        .await
        .and_then(|s| s.header)
        .expect("leader status")
        .member_id;
    let leader_name = c.local.member(leader).name.clone();
    // `dashboard/old`: two versions, then a compaction at the second, so its history
    // must stop there. `dashboard/greeting`: three versions after it, the last one `value`,
    // so its history must walk back to its creation.
    let mut kv = c.kv(follower).await;
    kv.put(put("dashboard/old", "old-one")).await.expect("put");
    let old_two = kv.put(put("dashboard/old", "old-two")).await.expect("put");
    let compact_at = old_two.into_inner().header.unwrap().revision;
    kv.compact(proto::etcdserverpb::CompactionRequest {
        revision: compact_at,
        physical: true,
    })
    .await
    .expect("compact");
    let key = "dashboard/greeting";
    let value = format!("hello-from-the-test-{}", std::process::id());
    for v in ["greeting-one", "greeting-two", value.as_str()] {
        kv.put(put(key, v)).await.expect("put");
    }

    // The JSON the page reads: the leader reports both followers' replication; the
    // follower's cluster view holds every member's status.
    let leader_url = c.endpoint(leader);
    let leader_status: serde_json::Value =
        poll("leader's progress", Duration::from_secs(10), || {
            let url = leader_url.clone();
            async move {
                let (code, body) = http_get(&url, "/dashboard/api/status")?;
                let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                (code == 200 && v["progress"].as_array()?.len() == 2).then_some(v)
            }
        })
        .await;
    assert_eq!(leader_status["role"], "leader");
    assert_eq!(leader_status["leader"], format!("{leader_id:x}"));
    assert!(leader_status["latency"]["count"].as_u64().unwrap() > 0);
    let follower_url = c.endpoint(follower);
    let view: serde_json::Value = poll(
        "the follower's cluster view",
        Duration::from_secs(10),
        || {
            let url = follower_url.clone();
            async move {
                let (code, body) = http_get(&url, "/dashboard/api/cluster")?;
                let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                let members = v["members"].as_array()?;
                (code == 200
                    && members.len() == 3
                    && members.iter().all(|m| m["status"].is_object()))
                .then_some(v)
            }
        },
    )
    .await;
    let roles: Vec<&str> = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["status"]["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "leader").count(),
        1,
        "{roles:?}"
    );

    // The page, in the browser, while another key is written every 50 ms for the watch
    // tail to show.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = writing.clone();
        let mut kv = c.kv(leader).await;
        tokio::spawn(async move {
            let mut n = 0;
            while writing.load(Ordering::Relaxed) {
                n += 1;
                let _ = kv.put(put("dashboard/tail", &format!("tick-{n}"))).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let page = format!(
        "{follower_url}/dashboard?prefix=dashboard/greeting&history={key}&watch=dashboard/tail"
    );
    let leader_line = format!("Leader: {leader_name} ({leader_id:x})");
    let wanted = [
        leader_line.as_str(),
        key,
        &value,
        // History, newest first, back to the creation.
        "greeting-two",
        "greeting-one",
        "Created at revision",
        // The watch tail.
        "<td class=\"key\">dashboard/tail</td>",
    ];
    let dom = until_shown(&page, &wanted);
    // The screenshot while the writes go on, so it shows live rates and the tail.
    let shot = artifacts_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let run = tokio::task::block_in_place(|| {
        chromium(
            &page,
            4000,
            &[
                format!("--screenshot={}", shot.display()),
                "--window-size=1400,1000".into(),
                "--hide-scrollbars".into(),
            ],
        )
    });
    assert!(run.console().is_empty(), "{:?}", run.console());
    let png = std::fs::read(&shot)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}\n{}", shot.display(), run.stderr));
    assert!(png.len() > 1000, "screenshot is {} bytes", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    writing.store(false, Ordering::Relaxed);
    writer.await.unwrap();
    let history = section(&dom, "id=\"history\"");
    let order: Vec<usize> = [value.as_str(), "greeting-two", "greeting-one"]
        .iter()
        .map(|v| {
            history
                .find(v)
                .unwrap_or_else(|| panic!("{v} not in {history}"))
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "history order: {history}"
    );

    // A history stops at the compaction.
    let compacted = until_shown(
        &format!("{follower_url}/dashboard?prefix=dashboard/old&history=dashboard/old"),
        &["old-two", "Older revisions are compacted"],
    );
    assert!(
        !section(&compacted, "id=\"history\"").contains("old-one"),
        "{compacted}"
    );
    // Every member has a row with its role, the leader's highlighted.
    assert_eq!(dom.matches("<tr class=\"is-leader\"").count(), 1, "{dom}");
    for i in 0..3 {
        assert!(dom.contains(&c.local.member(i).name), "{dom}");
    }
    assert!(!dom.contains("unreachable"), "{dom}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_off_answers_404() {
    let c = Cluster::start(1, &["--enable-dashboard=false"]);
    c.leader().await;
    let url = c.endpoint(0);
    for path in ["/dashboard", "/dashboard/app.js", "/dashboard/api/status"] {
        let (code, body) = http_get(&url, path).expect("answer");
        assert_eq!(code, 404, "{path}: {body}");
    }
    // The rest of the client URL is unchanged.
    let (code, _) = http_get(&url, "/health").expect("answer");
    assert_eq!(code, 200);
}
