//! Each Elle anomaly class on a hand-made list-append history, a clean history, and the
//! linear-time claim on a large generated history.

use std::time::{Duration, Instant};

use lincheck::elle::{self, Anomaly, CycleKind, ElleOptions, MicroOp, Txn, TxnStatus};

fn app(key: &str, element: u64) -> MicroOp {
    MicroOp::Append {
        key: key.into(),
        element,
    }
}

fn read(key: &str, list: &[u64]) -> MicroOp {
    MicroOp::Read {
        key: key.into(),
        list: Some(list.to_vec()),
    }
}

fn txn(call: u64, ret: u64, ops: Vec<MicroOp>) -> Txn {
    Txn {
        process: call,
        call,
        ret,
        status: TxnStatus::Ok,
        ops,
    }
}

fn names(txns: &[Txn], realtime: bool) -> Vec<&'static str> {
    let r = elle::check(txns, &ElleOptions { realtime });
    let mut v: Vec<_> = r.anomalies.iter().map(Anomaly::name).collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn serial_history_has_no_anomalies() {
    let txns = vec![
        txn(0, 1, vec![read("x", &[]), app("x", 1)]),
        txn(2, 3, vec![app("x", 2), app("y", 1)]),
        txn(4, 5, vec![read("x", &[1, 2]), read("y", &[1])]),
        txn(6, 7, vec![app("y", 2), read("y", &[1, 2])]),
        Txn {
            process: 9,
            call: 8,
            ret: lincheck::INFINITY,
            status: TxnStatus::Info,
            ops: vec![app("x", 3)],
        },
        Txn {
            process: 10,
            call: 8,
            ret: 9,
            status: TxnStatus::Fail,
            ops: vec![app("x", 4)],
        },
        txn(10, 11, vec![read("x", &[1, 2, 3])]),
    ];
    let r = elle::check(&txns, &ElleOptions::default());
    assert!(r.is_valid(), "{}", r.report());
}

#[test]
fn g0_write_cycle() {
    let txns = vec![
        txn(0, 10, vec![app("x", 1), app("y", 2)]),
        txn(0, 10, vec![app("x", 2), app("y", 1)]),
        txn(11, 12, vec![read("x", &[1, 2]), read("y", &[1, 2])]),
    ];
    let r = elle::check(&txns, &ElleOptions::default());
    assert!(
        matches!(
            r.anomalies.as_slice(),
            [Anomaly::Cycle { kind: CycleKind::G0, realtime: false, steps }] if steps.len() == 2
        ),
        "{}",
        r.report()
    );
}

#[test]
fn g1c_circular_information_flow() {
    let txns = vec![
        txn(0, 10, vec![app("x", 1), read("y", &[1])]),
        txn(0, 10, vec![app("y", 1), read("x", &[1])]),
    ];
    assert_eq!(names(&txns, true), vec!["G1c"]);
}

#[test]
fn g_single_read_skew() {
    // T0 misses x=1 yet sees z=5, which T1 wrote together with x=1.
    let txns = vec![
        txn(0, 10, vec![read("x", &[]), read("z", &[5])]),
        txn(0, 10, vec![app("x", 1), app("z", 5)]),
        txn(11, 12, vec![read("x", &[1])]),
    ];
    assert_eq!(names(&txns, true), vec!["G-single"]);
}

#[test]
fn g2_write_skew() {
    let txns = vec![
        txn(0, 10, vec![read("x", &[]), app("y", 1)]),
        txn(0, 10, vec![read("y", &[]), app("x", 1)]),
        txn(11, 12, vec![read("x", &[1]), read("y", &[1])]),
    ];
    assert_eq!(names(&txns, true), vec!["G2"]);
}

#[test]
fn g1a_aborted_read() {
    let txns = vec![
        Txn {
            process: 1,
            call: 0,
            ret: 1,
            status: TxnStatus::Fail,
            ops: vec![app("x", 1)],
        },
        txn(2, 3, vec![read("x", &[1])]),
    ];
    assert_eq!(names(&txns, true), vec!["G1a"]);
}

#[test]
fn g1b_intermediate_read() {
    let txns = vec![
        txn(0, 10, vec![app("x", 1), app("x", 2)]),
        txn(0, 10, vec![read("x", &[1])]),
        txn(11, 12, vec![read("x", &[1, 2])]),
    ];
    // The intermediate read also closes a wr/rw cycle with its writer (T0 -wr-> T1 -rw-> T0).
    assert_eq!(names(&txns, true), vec!["G-single", "G1b"]);
}

#[test]
fn lost_and_realtime_stale_read() {
    // The append completed at 1; a transaction that began at 2 does not see it.
    let txns = vec![
        txn(0, 1, vec![app("x", 1)]),
        txn(2, 3, vec![read("x", &[])]),
        txn(4, 5, vec![read("x", &[1])]),
    ];
    let with_rt = names(&txns, true);
    assert!(
        with_rt.contains(&"lost") && with_rt.contains(&"G-single-realtime"),
        "{with_rt:?}"
    );
    // Without real-time edges the order alone is serializable; "lost" still stands.
    assert_eq!(names(&txns, false), vec!["lost"]);
    // An acknowledged append that a later read never shows at all is lost too.
    let never = vec![
        txn(0, 1, vec![app("x", 1)]),
        txn(1, 2, vec![app("x", 2)]),
        txn(3, 4, vec![read("x", &[2])]),
    ];
    let r = elle::check(&never, &ElleOptions { realtime: false });
    assert!(
        r.anomalies
            .iter()
            .any(|a| matches!(a, Anomaly::Lost { element: 1, .. })),
        "{}",
        r.report()
    );
}

#[test]
fn phantom_duplicate_incompatible_and_internal() {
    let phantom = vec![txn(0, 1, vec![read("x", &[7])])];
    assert_eq!(names(&phantom, true), vec!["phantom"]);
    let dup = vec![
        txn(0, 1, vec![app("x", 1)]),
        txn(2, 3, vec![read("x", &[1, 1])]),
    ];
    assert_eq!(names(&dup, true), vec!["duplicate"]);
    let diverge = vec![
        txn(0, 10, vec![app("x", 1)]),
        txn(0, 10, vec![app("x", 2)]),
        txn(11, 12, vec![read("x", &[1, 2])]),
        txn(11, 12, vec![read("x", &[2, 1])]),
    ];
    assert!(names(&diverge, true).contains(&"incompatible-order"));
    let internal = vec![txn(0, 1, vec![app("x", 1), read("x", &[])])];
    assert!(names(&internal, true).contains(&"internal"));
}

/// A serial list-append history of `n` transactions over `keys` keys, each appending to one key
/// and reading another.
fn serial_history(n: usize, keys: u64) -> Vec<Txn> {
    let mut lists: Vec<Vec<u64>> = vec![Vec::new(); keys as usize];
    (0..n)
        .map(|i| {
            let (w, r) = (i as u64 % keys, (i as u64 * 7 + 3) % keys);
            let e = i as u64;
            lists[w as usize].push(e);
            let seen = lists[r as usize].clone();
            let t = 2 * i as u64;
            txn(
                t,
                t + 1,
                vec![app(&w.to_string(), e), read(&r.to_string(), &seen)],
            )
        })
        .collect()
}

#[test]
fn scales_linearly() {
    // Reads return whole lists, so the input itself grows quadratically with the ops per key;
    // keep lists short (many keys) to measure the checker, not the input.
    let small = serial_history(20_000, 2_000);
    let big = serial_history(80_000, 8_000);
    let time = |txns: &[Txn]| {
        let start = Instant::now();
        let r = elle::check(txns, &ElleOptions::default());
        assert!(r.is_valid(), "{}", r.report());
        start.elapsed()
    };
    let (ts, tb) = (time(&small), time(&big));
    eprintln!("elle: 20k txns {ts:?}, 80k txns {tb:?}");
    assert!(tb < Duration::from_secs(10), "80k transactions took {tb:?}");
    // 4x the input should cost about 4x, far from 16x (quadratic); allow noise on a busy box.
    assert!(
        tb < ts * 10 + Duration::from_millis(200),
        "20k: {ts:?}, 80k: {tb:?}"
    );
}

#[test]
fn list_values_round_trip() {
    assert_eq!(elle::encode_list(&[1, 5, 9]), "1,5,9");
    assert_eq!(elle::decode_list("1,5,9"), Some(vec![1, 5, 9]));
    assert_eq!(elle::decode_list(&elle::encode_list(&[])), Some(vec![]));
    assert_eq!(elle::decode_list("1,x"), None);
    assert_eq!(elle::decode_list("1,,2"), None);
}
