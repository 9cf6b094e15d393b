//! The raftkv JSON-lines formats through the command: files written the way the harness will.

use std::path::PathBuf;

use lincheck::cli;
use lincheck::elle::MicroOp;
use lincheck::jsonl::{to_line, Event, TxnEvent};
use lincheck::models::etcd::{EtcdInput, EtcdOutput};
use lincheck::Verdict;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("lincheck-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn write(&self, name: &str, lines: &[String]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type E = Event<EtcdInput, EtcdOutput>;

fn etcd_history(stale: bool) -> Vec<String> {
    let get = |revision: u64, value: Option<&str>, mod_revision| EtcdOutput::Get {
        value: value.map(String::from),
        mod_revision,
        revision,
    };
    let events: Vec<E> = vec![
        Event::Invoke {
            time: 10,
            process: 1,
            key: "k".into(),
            input: EtcdInput::Put { value: "v1".into() },
        },
        Event::Ok {
            time: 20,
            process: 1,
            output: EtcdOutput::Put { revision: 2 },
        },
        Event::Nemesis {
            time: 25,
            fault: "isolate leader".into(),
        },
        Event::Invoke {
            time: 30,
            process: 1,
            key: "k".into(),
            input: EtcdInput::Put { value: "v2".into() },
        },
        Event::Ok {
            time: 40,
            process: 1,
            output: EtcdOutput::Put { revision: 3 },
        },
        Event::Invoke {
            time: 50,
            process: 2,
            key: "k".into(),
            input: EtcdInput::Get,
        },
        Event::Ok {
            time: 60,
            process: 2,
            output: if stale {
                get(2, Some("v1"), 2)
            } else {
                get(3, Some("v2"), 3)
            },
        },
        Event::Invoke {
            time: 70,
            process: 3,
            key: "k".into(),
            input: EtcdInput::Put { value: "v3".into() },
        },
        Event::Info {
            time: 90,
            process: 3,
            error: "deadline exceeded".into(),
        },
    ];
    events.iter().map(to_line).collect()
}

#[test]
fn etcd_jsonl_histories_get_verdicts_and_reports() {
    let dir = TempDir::new("etcd");
    let good = dir.write("good.jsonl", &etcd_history(false));
    let bad = dir.write("bad.jsonl", &etcd_history(true));
    let mut out = Vec::new();
    let verdicts = cli::run("etcd-jsonl", &[good, bad], &mut out).unwrap();
    assert_eq!(verdicts[0].verdict, Verdict::Linearizable);
    assert_eq!(verdicts[1].verdict, Verdict::NotLinearizable);
    let printed = String::from_utf8(out).unwrap();
    assert!(
        printed.contains("good.jsonl linearizable")
            && printed.contains("bad.jsonl not-linearizable")
    );
    let report = verdicts[1].report();
    assert!(
        report.contains("BLOCKING") && report.contains("revision order"),
        "{report}"
    );
}

fn append_history(lost: bool) -> Vec<String> {
    let app = |key: &str, element| MicroOp::Append {
        key: key.into(),
        element,
    };
    let read = |key: &str, list: Option<Vec<u64>>| MicroOp::Read {
        key: key.into(),
        list,
    };
    let events = [
        TxnEvent::Invoke {
            time: 1,
            process: 0,
            ops: vec![app("a", 1), read("b", None)],
        },
        TxnEvent::Ok {
            time: 5,
            process: 0,
            ops: vec![app("a", 1), read("b", Some(vec![]))],
        },
        TxnEvent::Invoke {
            time: 6,
            process: 1,
            ops: vec![read("a", None), app("b", 7)],
        },
        TxnEvent::Ok {
            time: 9,
            process: 1,
            ops: vec![
                read("a", Some(if lost { vec![] } else { vec![1] })),
                app("b", 7),
            ],
        },
        TxnEvent::Invoke {
            time: 10,
            process: 2,
            ops: vec![read("a", None), read("b", None)],
        },
        TxnEvent::Ok {
            time: 12,
            process: 2,
            ops: vec![read("a", Some(vec![1])), read("b", Some(vec![7]))],
        },
    ];
    events.iter().map(to_line).collect()
}

#[test]
fn append_jsonl_histories_get_anomaly_lists() {
    let dir = TempDir::new("append");
    let good = dir.write("good.jsonl", &append_history(false));
    let bad = dir.write("bad.jsonl", &append_history(true));
    let mut out = Vec::new();
    let code = cli::main(
        [
            "--format".to_string(),
            "append-jsonl".to_string(),
            good.display().to_string(),
            bad.display().to_string(),
        ],
        &mut out,
    )
    .unwrap();
    assert_eq!(code, 1);
    let printed = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = printed.lines().collect();
    assert!(lines[0].ends_with("good.jsonl valid"), "{printed}");
    assert!(
        lines[1].contains("bad.jsonl invalid:") && lines[1].contains("lost"),
        "{printed}"
    );
}
