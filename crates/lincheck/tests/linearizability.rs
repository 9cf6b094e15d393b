//! Hand-made histories with known verdicts, for each model, plus the witness and budget paths.

use std::time::Duration;

use lincheck::models::etcd::{etcd_model, EtcdInput, EtcdOutput};
use lincheck::models::kv::{KvInput, KvModel, KvOutput};
use lincheck::models::register::{RegisterInput as RI, RegisterModel, RegisterOutput as RO};
use lincheck::{check, report, CheckOptions, Completion, History, Operation, Verdict, WindowRole};

fn opts() -> CheckOptions {
    CheckOptions {
        budget: Duration::from_secs(10),
        minimise: true,
    }
}

/// Builds a register history from (process, call, ret, input, completion) rows.
fn register(rows: &[(u64, u64, u64, RI, Completion<RO>)]) -> Vec<Operation<RI, RO>> {
    let mut events: Vec<(u64, bool, usize)> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        events.push((r.1, false, i));
        events.push((r.2, true, i));
    }
    events.sort();
    let mut h = History::new();
    let mut ids = vec![None; rows.len()];
    for (t, is_ret, i) in events {
        let (p, _, _, input, completion) = &rows[i];
        if is_ret {
            h.complete(ids[i].unwrap(), t, completion.clone()).unwrap();
        } else {
            ids[i] = Some(h.invoke(t, *p, "r", input.clone()).unwrap());
        }
    }
    h.into_operations()
}

fn verdict(rows: &[(u64, u64, u64, RI, Completion<RO>)]) -> Verdict {
    check(&RegisterModel, &register(rows), &opts()).verdict
}

use Completion::{Fail, Ok as Done, Unknown};

#[test]
fn concurrent_write_and_reads_are_linearizable() {
    let rows = [
        (1, 0, 10, RI::Write(1), Done(RO::Write)),
        (2, 1, 3, RI::Read, Done(RO::Read(Some(1)))),
        (3, 2, 4, RI::Read, Done(RO::Read(None))),
        (
            4,
            11,
            12,
            RI::Cas {
                expected: 1,
                new: 2,
            },
            Done(RO::Cas(true)),
        ),
        (
            5,
            13,
            14,
            RI::Cas {
                expected: 1,
                new: 3,
            },
            Done(RO::Cas(false)),
        ),
        (6, 15, 16, RI::Read, Done(RO::Read(Some(2)))),
    ];
    assert_eq!(verdict(&rows), Verdict::Linearizable);
}

#[test]
fn stale_read_is_caught() {
    let rows = [
        (1, 0, 1, RI::Write(1), Done(RO::Write)),
        (1, 2, 3, RI::Write(2), Done(RO::Write)),
        (2, 4, 5, RI::Read, Done(RO::Read(Some(1)))),
    ];
    assert_eq!(verdict(&rows), Verdict::NotLinearizable);
}

#[test]
fn lost_write_is_caught() {
    let rows = [
        (1, 0, 1, RI::Write(1), Done(RO::Write)),
        (2, 2, 3, RI::Read, Done(RO::Read(None))),
    ];
    assert_eq!(verdict(&rows), Verdict::NotLinearizable);
}

#[test]
fn read_of_a_never_written_value_is_caught() {
    let rows = [
        (1, 0, 5, RI::Write(1), Done(RO::Write)),
        (2, 1, 6, RI::Read, Done(RO::Read(Some(7)))),
    ];
    assert_eq!(verdict(&rows), Verdict::NotLinearizable);
}

#[test]
fn write_visible_then_invisible_is_caught() {
    // While the write is still in flight, one read sees it and a later read does not.
    let rows = [
        (1, 0, 10, RI::Write(1), Done(RO::Write)),
        (2, 1, 2, RI::Read, Done(RO::Read(Some(1)))),
        (3, 3, 4, RI::Read, Done(RO::Read(None))),
    ];
    assert_eq!(verdict(&rows), Verdict::NotLinearizable);
    // Same reads in the other order are fine.
    let rows = [
        (1, 0, 10, RI::Write(1), Done(RO::Write)),
        (2, 1, 2, RI::Read, Done(RO::Read(None))),
        (3, 3, 4, RI::Read, Done(RO::Read(Some(1)))),
    ];
    assert_eq!(verdict(&rows), Verdict::Linearizable);
}

#[test]
fn indeterminate_write_that_must_have_happened() {
    // The write timed out, yet a later read sees its value: it did happen.
    let rows = [
        (1, 0, 1, RI::Write(1), Done(RO::Write)),
        (2, 2, 3, RI::Write(2), Unknown),
        (3, 10, 11, RI::Read, Done(RO::Read(Some(2)))),
        (4, 12, 13, RI::Read, Done(RO::Read(Some(2)))),
    ];
    assert_eq!(verdict(&rows), Verdict::Linearizable);
    // Had the same write *failed* (proven not executed), reading 2 is impossible.
    let rows = [
        (1, 0, 1, RI::Write(1), Done(RO::Write)),
        (2, 2, 3, RI::Write(2), Fail),
        (3, 10, 11, RI::Read, Done(RO::Read(Some(2)))),
    ];
    assert_eq!(verdict(&rows), Verdict::NotLinearizable);
}

#[test]
fn indeterminate_write_that_must_not_have_happened() {
    // The write timed out and every later read still sees the old value: it never took effect
    // (or takes effect after everything), which is allowed.
    let rows = [
        (1, 0, 1, RI::Write(1), Done(RO::Write)),
        (2, 2, 3, RI::Write(2), Unknown),
        (3, 10, 11, RI::Read, Done(RO::Read(Some(1)))),
        (
            4,
            12,
            13,
            RI::Cas {
                expected: 1,
                new: 3,
            },
            Done(RO::Cas(true)),
        ),
        (5, 14, 15, RI::Read, Done(RO::Read(Some(3)))),
    ];
    assert_eq!(verdict(&rows), Verdict::Linearizable);
    // But it cannot take effect twice: once seen and overwritten, it cannot reappear.
    let rows = [
        (2, 2, 3, RI::Write(2), Unknown),
        (3, 10, 11, RI::Read, Done(RO::Read(Some(2)))),
        (4, 12, 13, RI::Write(5), Done(RO::Write)),
        (5, 14, 15, RI::Read, Done(RO::Read(Some(2)))),
    ];
    assert_eq!(verdict(&rows), Verdict::NotLinearizable);
}

#[test]
fn budget_exhaustion_yields_unknown_not_a_guess() {
    // Twelve concurrent writes, then a read of a value nobody wrote: proving this illegal means
    // exploring every (subset, last write) configuration, ~25k of them.
    let mut rows: Vec<(u64, u64, u64, RI, Completion<RO>)> = (0..12)
        .map(|i| (i, i, 100, RI::Write(i as i64), Done(RO::Write)))
        .collect();
    rows.push((99, 101, 102, RI::Read, Done(RO::Read(Some(999)))));
    let ops = register(&rows);
    let tiny = CheckOptions {
        budget: Duration::ZERO,
        minimise: false,
    };
    let r = check(&RegisterModel, &ops, &tiny);
    assert_eq!(r.verdict, Verdict::Unknown);
    assert_eq!(r.unknown_keys, vec!["r".to_string()]);
    assert!(r.violation.is_none());
    // With time, the real answer.
    assert_eq!(
        check(&RegisterModel, &ops, &opts()).verdict,
        Verdict::NotLinearizable
    );
}

#[test]
fn witness_is_the_shortest_failing_cut_and_names_the_blocking_op() {
    // A long healthy prefix, then a stale read.
    let mut rows = Vec::new();
    for i in 0..50u64 {
        rows.push((1, 4 * i, 4 * i + 1, RI::Write(i as i64), Done(RO::Write)));
        rows.push((
            2,
            4 * i + 2,
            4 * i + 3,
            RI::Read,
            Done(RO::Read(Some(i as i64))),
        ));
    }
    rows.push((3, 300, 301, RI::Read, Done(RO::Read(Some(10)))));
    for i in 0..20u64 {
        rows.push((
            1,
            400 + 2 * i,
            401 + 2 * i,
            RI::Write(100 + i as i64),
            Done(RO::Write),
        ));
    }
    let r = check(&RegisterModel, &register(&rows), &opts());
    assert_eq!(r.verdict, Verdict::NotLinearizable);
    let v = r.violation.expect("a violation carries a witness");
    assert_eq!(v.cut_time, 301, "cut right after the stale read completes");
    assert_eq!(v.state_after_prefix, "49");
    let blocking: Vec<_> = v
        .window
        .iter()
        .filter(|o| o.role == WindowRole::Blocking)
        .collect();
    assert_eq!(blocking.len(), 1);
    assert_eq!(blocking[0].call, 300);
    assert!(blocking[0].description.contains("read -> 10"));
    let text = report::text(&v);
    assert!(
        text.contains("BLOCKING") && text.contains("[     300,      301]"),
        "{text}"
    );
    let svg = report::svg(&v);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<rect").count(), v.window.len());
    let dir = std::env::temp_dir().join(format!("lincheck-svg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.svg");
    report::write_svg(&v, &path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), svg);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn kv_op(
    p: u64,
    key: &str,
    call: u64,
    ret: u64,
    i: KvInput,
    o: KvOutput,
) -> Operation<KvInput, KvOutput> {
    Operation {
        process: p,
        key: key.into(),
        input: i,
        output: Some(o),
        call,
        ret,
    }
}

#[test]
fn kv_model_is_checked_per_key() {
    let ok = vec![
        kv_op(1, "a", 0, 1, KvInput::Put("x".into()), KvOutput::Put),
        kv_op(2, "b", 0, 1, KvInput::Append("y".into()), KvOutput::Append),
        kv_op(1, "a", 2, 5, KvInput::Append("z".into()), KvOutput::Append),
        kv_op(2, "a", 3, 4, KvInput::Get, KvOutput::Get("xz".into())),
        kv_op(3, "b", 3, 4, KvInput::Get, KvOutput::Get("y".into())),
        kv_op(3, "c", 5, 6, KvInput::Get, KvOutput::Get(String::new())),
    ];
    let r = check(&KvModel, &ok, &opts());
    assert_eq!((r.verdict, r.partitions), (Verdict::Linearizable, 3));
    let mut bad = ok.clone();
    bad.push(kv_op(
        3,
        "b",
        7,
        8,
        KvInput::Get,
        KvOutput::Get("yy".into()),
    ));
    let r = check(&KvModel, &bad, &opts());
    assert_eq!(r.verdict, Verdict::NotLinearizable);
    assert_eq!(r.violation.unwrap().key, "b");
}

fn etcd_op(
    call: u64,
    ret: u64,
    i: EtcdInput,
    o: Option<EtcdOutput>,
) -> Operation<EtcdInput, EtcdOutput> {
    let ret = if o.is_some() { ret } else { lincheck::INFINITY };
    Operation {
        process: call,
        key: "k".into(),
        input: i,
        output: o,
        call,
        ret,
    }
}

fn get(value: Option<&str>, mod_revision: u64, revision: u64) -> Option<EtcdOutput> {
    Some(EtcdOutput::Get {
        value: value.map(String::from),
        mod_revision,
        revision,
    })
}

fn put(v: &str) -> EtcdInput {
    EtcdInput::Put { value: v.into() }
}

#[test]
fn etcd_model_checks_values_and_revisions() {
    let m = etcd_model();
    let base = vec![
        etcd_op(0, 1, EtcdInput::Get, get(None, 0, 1)),
        etcd_op(2, 3, put("a"), Some(EtcdOutput::Put { revision: 5 })),
        etcd_op(4, 5, EtcdInput::Get, get(Some("a"), 5, 7)),
        etcd_op(
            6,
            7,
            EtcdInput::CasModRevision {
                expected: 5,
                new: Some("b".into()),
            },
            Some(EtcdOutput::Txn {
                succeeded: true,
                revision: 8,
            }),
        ),
        etcd_op(
            8,
            9,
            EtcdInput::CasValue {
                expected: Some("a".into()),
                new: "c".into(),
            },
            Some(EtcdOutput::Txn {
                succeeded: false,
                revision: 8,
            }),
        ),
        etcd_op(
            10,
            11,
            EtcdInput::Delete,
            Some(EtcdOutput::Delete {
                deleted: true,
                revision: 9,
            }),
        ),
        etcd_op(12, 13, EtcdInput::Get, get(None, 0, 9)),
    ];
    assert_eq!(check(&m, &base, &opts()).verdict, Verdict::Linearizable);

    // Right value, wrong mod_revision.
    let mut bad = base.clone();
    bad[2] = etcd_op(4, 5, EtcdInput::Get, get(Some("a"), 4, 7));
    assert_eq!(check(&m, &bad, &opts()).verdict, Verdict::NotLinearizable);
    // A later write cannot get an older revision.
    let mut bad = base.clone();
    bad[5] = etcd_op(
        10,
        11,
        EtcdInput::Delete,
        Some(EtcdOutput::Delete {
            deleted: true,
            revision: 8,
        }),
    );
    assert_eq!(check(&m, &bad, &opts()).verdict, Verdict::NotLinearizable);
    // The revision-guarded CAS cannot succeed against a revision that is not current.
    let mut bad = base.clone();
    bad[3] = etcd_op(
        6,
        7,
        EtcdInput::CasModRevision {
            expected: 4,
            new: Some("b".into()),
        },
        Some(EtcdOutput::Txn {
            succeeded: true,
            revision: 8,
        }),
    );
    assert_eq!(check(&m, &bad, &opts()).verdict, Verdict::NotLinearizable);
    // A read's header revision cannot predate the value it returns.
    let mut bad = base.clone();
    bad[2] = etcd_op(4, 5, EtcdInput::Get, get(Some("a"), 5, 3));
    assert_eq!(check(&m, &bad, &opts()).verdict, Verdict::NotLinearizable);
}

#[test]
fn etcd_indeterminate_writes_get_their_revision_from_later_reads() {
    let m = etcd_model();
    let ops = vec![
        etcd_op(0, 1, put("a"), Some(EtcdOutput::Put { revision: 3 })),
        // Timed out: its revision is unknown, only "after 3".
        etcd_op(2, 0, put("b"), None),
        etcd_op(10, 11, EtcdInput::Get, get(Some("b"), 6, 6)),
        // The revision-guarded CAS on the revision the read revealed succeeds...
        etcd_op(
            12,
            13,
            EtcdInput::CasModRevision {
                expected: 6,
                new: Some("c".into()),
            },
            Some(EtcdOutput::Txn {
                succeeded: true,
                revision: 9,
            }),
        ),
        etcd_op(14, 15, EtcdInput::Get, get(Some("c"), 9, 9)),
    ];
    assert_eq!(check(&m, &ops, &opts()).verdict, Verdict::Linearizable);
    // ...and an indeterminate revision-guarded CAS may go either way.
    let mut either = ops[..2].to_vec();
    either.push(etcd_op(
        3,
        0,
        EtcdInput::CasModRevision {
            expected: 5,
            new: Some("d".into()),
        },
        None,
    ));
    let mut took = either.clone();
    took.push(etcd_op(20, 21, EtcdInput::Get, get(Some("d"), 8, 8)));
    assert_eq!(check(&m, &took, &opts()).verdict, Verdict::Linearizable);
    either.push(etcd_op(20, 21, EtcdInput::Get, get(Some("b"), 5, 8)));
    assert_eq!(check(&m, &either, &opts()).verdict, Verdict::Linearizable);
    // But a read of "b" at a revision not after 3 is impossible.
    let mut bad = ops[..2].to_vec();
    bad.push(etcd_op(10, 11, EtcdInput::Get, get(Some("b"), 3, 6)));
    assert_eq!(check(&m, &bad, &opts()).verdict, Verdict::NotLinearizable);
}

#[test]
fn etcd_revisions_must_follow_real_time_across_keys() {
    use lincheck::models::etcd::{revision_anomalies, RevisionAnomaly};
    let on = |key: &str, call: u64, ret: u64, i: EtcdInput, o: EtcdOutput| Operation {
        process: call,
        key: key.into(),
        input: i,
        output: Some(o),
        call,
        ret,
    };
    let ok = vec![
        on("a", 0, 1, put("x"), EtcdOutput::Put { revision: 2 }),
        on("b", 2, 3, put("y"), EtcdOutput::Put { revision: 3 }),
        on(
            "a",
            2,
            5,
            EtcdInput::Get,
            EtcdOutput::Get {
                value: Some("x".into()),
                mod_revision: 2,
                revision: 3,
            },
        ),
        on(
            "c",
            6,
            7,
            EtcdInput::Get,
            EtcdOutput::Get {
                value: None,
                mod_revision: 0,
                revision: 3,
            },
        ),
    ];
    assert_eq!(revision_anomalies(&ok), vec![]);
    // Each key on its own is fine, but a read on key c began after revision 3 was acknowledged
    // on key b and reports revision 2: a stale read across keys.
    let mut stale = ok.clone();
    stale[3] = on(
        "c",
        6,
        7,
        EtcdInput::Get,
        EtcdOutput::Get {
            value: None,
            mod_revision: 0,
            revision: 2,
        },
    );
    assert_eq!(
        check(&etcd_model(), &stale, &opts()).verdict,
        Verdict::Linearizable
    );
    assert!(matches!(
        revision_anomalies(&stale).as_slice(),
        [RevisionAnomaly::RevisionWentBack {
            earlier: 1,
            later: 3,
            ..
        }]
    ));
    // Two writes on different keys cannot share a revision.
    let mut dup = ok.clone();
    dup[1] = on("b", 2, 3, put("y"), EtcdOutput::Put { revision: 2 });
    assert!(revision_anomalies(&dup).iter().any(|a| matches!(
        a,
        RevisionAnomaly::DuplicateWriteRevision { revision: 2, .. }
    )));
}
