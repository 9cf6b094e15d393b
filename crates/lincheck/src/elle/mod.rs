//! An Elle-style checker for list-append transactions, linear in the size of the history.
//!
//! Workload: each key holds a list; a transaction appends unique elements to keys and reads
//! whole lists (on etcd: read the key with its mod_revision, then a Txn guarded by
//! `mod_revision == r` that puts the extended list). Because every read returns the whole list,
//! the order of versions of each key is visible: the longest read is the version order, every
//! other read must be a prefix of it. From that order the checker infers Adya's dependencies
//! without any search:
//!
//! - ww: the appender of element i → the appender of element i+1;
//! - wr: the appender of the last element a read saw → the reader;
//! - rw: a reader that saw i elements → the appender of element i+1;
//! - rt (optional, for strict serializability / linearizability): a transaction that completed
//!   → every transaction invoked later, through a chain of "barrier" nodes so the edge count
//!   stays linear.
//!
//! Cycles (Tarjan SCC, then one cycle per component) are classified: only ww → G0; ww/wr →
//! G1c; one rw → G-single; more → G2; "realtime" if it needed an rt edge. Non-cycle anomalies:
//! G1a (read of an element whose transaction failed), G1b (read ending in a non-final append of
//! another transaction), lost (an acknowledged append missing from a read that began after the
//! append completed), phantom (a read element no transaction appended), duplicates,
//! incompatible orders (two reads not prefixes of one another) and internal inconsistency
//! (a transaction's read missing its own earlier append).

mod graph;

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use graph::EdgeKind;
use graph::Graph;

use crate::history::INFINITY;

/// One operation inside a transaction. Serialized (JSON lines, see [`crate::jsonl`]) as
/// `{"append":{"key":"k","element":3}}` and `{"read":{"key":"k","list":[1,3]}}` (`list` null or
/// absent when not observed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MicroOp {
    Append {
        key: String,
        element: u64,
    },
    /// `list: None` when the transaction's outcome is not known (its reads were not observed).
    Read {
        key: String,
        #[serde(default)]
        list: Option<Vec<u64>>,
    },
}

/// How a transaction ended (same meaning as in [`crate::Completion`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnStatus {
    /// Committed; its reads are known.
    Ok,
    /// Provably not committed.
    Fail,
    /// May or may not have committed.
    Info,
}

/// One transaction of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Txn {
    pub process: u64,
    pub call: u64,
    /// Completion time; [`INFINITY`] if unknown.
    pub ret: u64,
    pub status: TxnStatus,
    pub ops: Vec<MicroOp>,
}

/// Checker settings.
#[derive(Clone, Copy, Debug)]
pub struct ElleOptions {
    /// Add real-time edges: a transaction that completed before another began must precede it
    /// (strict serializability, what a linearizable store promises).
    pub realtime: bool,
}

impl Default for ElleOptions {
    fn default() -> Self {
        ElleOptions { realtime: true }
    }
}

/// Classes of dependency cycles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CycleKind {
    G0,
    G1c,
    GSingle,
    G2,
}

/// Transaction ids below are indices into the slice given to [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// A dependency cycle; `steps[i].1` is the edge from `steps[i].0` to the next transaction
    /// (the last wraps around). Consecutive rt barrier hops are collapsed into one rt step.
    Cycle {
        kind: CycleKind,
        realtime: bool,
        steps: Vec<(usize, EdgeKind)>,
    },
    /// Aborted read: `reader` saw `element`, appended by `writer`, which failed.
    G1a {
        key: String,
        element: u64,
        writer: usize,
        reader: usize,
    },
    /// Intermediate read: `reader`'s list ends with `element`, which `writer` followed with
    /// another append to the same key.
    G1b {
        key: String,
        element: u64,
        writer: usize,
        reader: usize,
    },
    /// `writer` appended `element` and completed before `reader` began, yet `reader` missed it.
    Lost {
        key: String,
        element: u64,
        writer: usize,
        reader: usize,
    },
    /// `reader` saw an element that no transaction appended.
    Phantom {
        key: String,
        element: u64,
        reader: usize,
    },
    /// An element appended twice, or seen twice in one read.
    Duplicate {
        key: String,
        element: u64,
        txn: usize,
    },
    /// Two reads of `key` where neither is a prefix of the other.
    IncompatibleOrder { key: String, a: usize, b: usize },
    /// `txn` read `key` after appending `element` to it, and did not see it last.
    Internal {
        key: String,
        element: u64,
        txn: usize,
    },
}

impl Anomaly {
    /// Short name, Elle's where one exists.
    pub fn name(&self) -> &'static str {
        match self {
            Anomaly::Cycle { kind, realtime, .. } => match (kind, realtime) {
                (CycleKind::G0, false) => "G0",
                (CycleKind::G0, true) => "G0-realtime",
                (CycleKind::G1c, false) => "G1c",
                (CycleKind::G1c, true) => "G1c-realtime",
                (CycleKind::GSingle, false) => "G-single",
                (CycleKind::GSingle, true) => "G-single-realtime",
                (CycleKind::G2, false) => "G2",
                (CycleKind::G2, true) => "G2-realtime",
            },
            Anomaly::G1a { .. } => "G1a",
            Anomaly::G1b { .. } => "G1b",
            Anomaly::Lost { .. } => "lost",
            Anomaly::Phantom { .. } => "phantom",
            Anomaly::Duplicate { .. } => "duplicate",
            Anomaly::IncompatibleOrder { .. } => "incompatible-order",
            Anomaly::Internal { .. } => "internal",
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.name())?;
        match self {
            Anomaly::Cycle { steps, .. } => {
                for (txn, kind) in steps {
                    write!(f, "T{txn} -{kind}-> ")?;
                }
                write!(f, "T{}", steps.first().map_or(0, |s| s.0))
            }
            Anomaly::G1a { key, element, writer, reader } => {
                write!(f, "T{reader} read {element} of key {key:?}, appended by failed T{writer}")
            }
            Anomaly::G1b { key, element, writer, reader } => write!(
                f,
                "T{reader} read key {key:?} ending at {element}, an intermediate append of T{writer}"
            ),
            Anomaly::Lost { key, element, writer, reader } => write!(
                f,
                "T{writer} appended {element} to key {key:?} and completed; T{reader} began later \
                 and did not see it"
            ),
            Anomaly::Phantom { key, element, reader } => {
                write!(f, "T{reader} read {element} in key {key:?}, never appended")
            }
            Anomaly::Duplicate { key, element, txn } => {
                write!(f, "element {element} of key {key:?} duplicated (T{txn})")
            }
            Anomaly::IncompatibleOrder { key, a, b } => {
                write!(f, "reads of key {key:?} by T{a} and T{b} are not prefixes of each other")
            }
            Anomaly::Internal { key, element, txn } => {
                write!(f, "T{txn} appended {element} to key {key:?}, then read it without it last")
            }
        }
    }
}

/// The checker's findings.
#[derive(Clone, Debug, Default)]
pub struct ElleResult {
    pub anomalies: Vec<Anomaly>,
    pub transactions: usize,
    pub edges: usize,
}

impl ElleResult {
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// One line per anomaly.
    pub fn report(&self) -> String {
        if self.anomalies.is_empty() {
            return format!(
                "{} transactions, {} edges: no anomalies\n",
                self.transactions, self.edges
            );
        }
        let mut s = format!(
            "{} transactions, {} edges: {} anomalies\n",
            self.transactions,
            self.edges,
            self.anomalies.len()
        );
        for a in &self.anomalies {
            s.push_str(&format!("  {a}\n"));
        }
        s
    }
}

/// Encodes a list value as stored in etcd by the list-append workload ("1,5,9"; "" = empty).
pub fn encode_list(list: &[u64]) -> String {
    list.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Decodes [`encode_list`]'s format; `None` if malformed.
pub fn decode_list(text: &str) -> Option<Vec<u64>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(',').map(|e| e.parse().ok()).collect()
}

/// Who appended an element, and whether it was that transaction's last append to the key.
#[derive(Clone, Copy)]
struct Appender {
    txn: usize,
    last_in_txn: bool,
}

/// A committed read of one key.
struct ReadObs<'a> {
    txn: usize,
    list: &'a [u64],
}

/// Checks a list-append history.
pub fn check(txns: &[Txn], options: &ElleOptions) -> ElleResult {
    let mut anomalies = Vec::new();
    let mut appenders: HashMap<(&str, u64), Appender> = HashMap::new();
    let mut appended: HashMap<&str, Vec<u64>> = HashMap::new();
    let mut reads: HashMap<&str, Vec<ReadObs>> = HashMap::new();

    for (t, txn) in txns.iter().enumerate() {
        let mut own: HashMap<&str, u64> = HashMap::new();
        for op in &txn.ops {
            match op {
                MicroOp::Append { key, element } => {
                    if let Some(prev) = own.insert(key, *element) {
                        if let Some(a) = appenders.get_mut(&(key.as_str(), prev)) {
                            a.last_in_txn = false;
                        }
                    }
                    appended.entry(key).or_default().push(*element);
                    let fresh = Appender {
                        txn: t,
                        last_in_txn: true,
                    };
                    if appenders.insert((key, *element), fresh).is_some() {
                        anomalies.push(Anomaly::Duplicate {
                            key: key.clone(),
                            element: *element,
                            txn: t,
                        });
                    }
                }
                MicroOp::Read {
                    key,
                    list: Some(list),
                } if txn.status == TxnStatus::Ok => {
                    if let Some(&mine) = own.get(key.as_str()) {
                        if list.last() != Some(&mine) {
                            anomalies.push(Anomaly::Internal {
                                key: key.clone(),
                                element: mine,
                                txn: t,
                            });
                        }
                    }
                    reads.entry(key).or_default().push(ReadObs { txn: t, list });
                }
                MicroOp::Read { .. } => {}
            }
        }
    }

    // Deterministic output: keys in order.
    let mut keys: Vec<&str> = reads.keys().copied().collect();
    let mut appended_keys: Vec<&str> = appended.keys().copied().collect();
    keys.append(&mut appended_keys);
    keys.sort_unstable();
    keys.dedup();

    let n = txns.len();
    let mut graph = Graph::new(n);
    let in_graph = |t: usize| txns[t].status != TxnStatus::Fail;
    let empty: Vec<ReadObs> = Vec::new();

    for &key in &keys {
        let key_reads = reads.get(key).unwrap_or(&empty);
        // Version order: the longest read; all others must be its prefixes.
        let order: &[u64] = key_reads
            .iter()
            .map(|r| r.list)
            .max_by_key(|l| l.len())
            .unwrap_or(&[]);
        let longest_txn = key_reads
            .iter()
            .find(|r| r.list.len() == order.len())
            .map(|r| r.txn);
        for r in key_reads {
            if r.list != &order[..r.list.len()] {
                anomalies.push(Anomaly::IncompatibleOrder {
                    key: key.to_string(),
                    a: r.txn,
                    b: longest_txn.unwrap_or(r.txn),
                });
            }
            let mut seen = std::collections::HashSet::with_capacity(r.list.len());
            for &e in r.list {
                if !seen.insert(e) {
                    anomalies.push(Anomaly::Duplicate {
                        key: key.to_string(),
                        element: e,
                        txn: r.txn,
                    });
                }
                match appenders.get(&(key, e)) {
                    None => anomalies.push(Anomaly::Phantom {
                        key: key.to_string(),
                        element: e,
                        reader: r.txn,
                    }),
                    Some(a) if txns[a.txn].status == TxnStatus::Fail => {
                        anomalies.push(Anomaly::G1a {
                            key: key.to_string(),
                            element: e,
                            writer: a.txn,
                            reader: r.txn,
                        })
                    }
                    Some(_) => {}
                }
            }
            if let Some(&last) = r.list.last() {
                if let Some(a) = appenders.get(&(key, last)) {
                    if !a.last_in_txn && a.txn != r.txn {
                        anomalies.push(Anomaly::G1b {
                            key: key.to_string(),
                            element: last,
                            writer: a.txn,
                            reader: r.txn,
                        });
                    }
                }
            }
        }

        let writer = |i: usize| {
            appenders
                .get(&(key, order[i]))
                .map(|a| a.txn)
                .filter(|&t| in_graph(t))
        };
        for i in 1..order.len() {
            if let (Some(a), Some(b)) = (writer(i - 1), writer(i)) {
                graph.add(a, b, EdgeKind::WW);
            }
        }
        for r in key_reads {
            if !r.list.is_empty() {
                if let Some(w) = writer(r.list.len() - 1) {
                    graph.add(w, r.txn, EdgeKind::WR);
                }
            }
            if r.list.len() < order.len() && r.list == &order[..r.list.len()] {
                if let Some(w) = writer(r.list.len()) {
                    graph.add(r.txn, w, EdgeKind::RW);
                }
            }
        }

        let elements = appended.get(key).map_or(&[][..], Vec::as_slice);
        lost_elements(
            txns,
            key,
            key_reads,
            order,
            elements,
            &appenders,
            &mut anomalies,
        );
    }

    let barrier_base = n;
    if options.realtime {
        add_realtime_edges(txns, &mut graph, &in_graph);
    }
    let edges = graph.adj.iter().map(Vec::len).sum();
    cycles(&graph, barrier_base, &mut anomalies);
    ElleResult {
        anomalies,
        transactions: n,
        edges,
    }
}

/// Lost elements: an acknowledged append must be in every read of the key that began after
/// the append completed. Per key, the shortest read among those beginning after a time is
/// found by binary search on a suffix minimum, so this is O((appends + reads) log reads).
fn lost_elements(
    txns: &[Txn],
    key: &str,
    key_reads: &[ReadObs],
    order: &[u64],
    elements: &[u64],
    appenders: &HashMap<(&str, u64), Appender>,
    anomalies: &mut Vec<Anomaly>,
) {
    if key_reads.is_empty() {
        return;
    }
    let mut by_call: Vec<&ReadObs> = key_reads.iter().collect();
    by_call.sort_by_key(|r| txns[r.txn].call);
    // suffix_min[i]: index in by_call of the shortest read among by_call[i..].
    let mut suffix_min = vec![0usize; by_call.len()];
    for i in (0..by_call.len()).rev() {
        suffix_min[i] = match suffix_min.get(i + 1) {
            Some(&j) if by_call[j].list.len() < by_call[i].list.len() => j,
            _ => i,
        };
    }
    let position: HashMap<u64, usize> = order.iter().enumerate().map(|(i, &e)| (e, i)).collect();
    let mut acknowledged: Vec<(u64, usize)> = elements
        .iter()
        .filter_map(|e| appenders.get(&(key, *e)).map(|a| (*e, a.txn)))
        .filter(|&(_, t)| txns[t].status == TxnStatus::Ok)
        .collect();
    acknowledged.sort_unstable();
    for (element, writer) in acknowledged {
        let done = txns[writer].ret;
        if done == INFINITY {
            continue;
        }
        let first = by_call.partition_point(|r| txns[r.txn].call <= done);
        let Some(&m) = suffix_min.get(first) else {
            continue;
        };
        let reader = by_call[m];
        let seen = position
            .get(&element)
            .is_some_and(|&p| reader.list.get(p) == Some(&element));
        if !seen {
            anomalies.push(Anomaly::Lost {
                key: key.to_string(),
                element,
                writer,
                reader: reader.txn,
            });
        }
    }
}

/// Real-time order with a linear number of edges: one barrier node per completion, chained in
/// time order; a transaction feeds its barrier, and the last barrier completed before a
/// transaction began feeds that transaction.
fn add_realtime_edges(txns: &[Txn], graph: &mut Graph, in_graph: &dyn Fn(usize) -> bool) {
    let n = txns.len();
    let mut completions: Vec<(u64, usize)> = (0..n)
        .filter(|&t| in_graph(t) && txns[t].ret != INFINITY)
        .map(|t| (txns[t].ret, t))
        .collect();
    completions.sort_unstable();
    let base = graph.adj.len();
    graph.adj.resize(base + completions.len(), Vec::new());
    for (j, &(_, t)) in completions.iter().enumerate() {
        graph.add(t, base + j, EdgeKind::Realtime);
        if j + 1 < completions.len() {
            graph.add(base + j, base + j + 1, EdgeKind::Realtime);
        }
    }
    for t in (0..n).filter(|&t| in_graph(t)) {
        let before = completions.partition_point(|&(c, _)| c < txns[t].call);
        if before > 0 {
            graph.add(base + before - 1, t, EdgeKind::Realtime);
        }
    }
}

/// Finds one cycle per strongly connected component, preferring the mildest edge set that
/// still closes a cycle, and classifies it.
fn cycles(graph: &Graph, barrier_base: usize, anomalies: &mut Vec<Anomaly>) {
    let mut in_component = vec![false; graph.adj.len()];
    let tiers: [&dyn Fn(EdgeKind) -> bool; 4] = [
        &|k| k == EdgeKind::WW,
        &|k| matches!(k, EdgeKind::WW | EdgeKind::WR),
        &|k| k != EdgeKind::Realtime,
        &|_| true,
    ];
    for comp in graph.nontrivial_sccs() {
        for &v in &comp {
            in_component[v] = true;
        }
        let found = tiers
            .iter()
            .find_map(|allowed| graph.find_cycle(&comp, &in_component, allowed));
        for &v in &comp {
            in_component[v] = false;
        }
        let Some(raw) = found else { continue };
        // Collapse barrier hops: keep transactions; an edge into a barrier becomes an rt step.
        let mut steps: Vec<(usize, EdgeKind)> = Vec::new();
        for (node, kind) in raw {
            if node >= barrier_base {
                if let Some(last) = steps.last_mut() {
                    last.1 = EdgeKind::Realtime;
                }
            } else {
                steps.push((node, kind));
            }
        }
        // If the cycle started on a barrier, the last transaction's edge already leads into a
        // barrier, so it is recorded as rt: the wrap-around stays exact.
        let rw = steps.iter().filter(|s| s.1 == EdgeKind::RW).count();
        let wr = steps.iter().any(|s| s.1 == EdgeKind::WR);
        let realtime = steps.iter().any(|s| s.1 == EdgeKind::Realtime);
        let kind = match rw {
            0 if !wr => CycleKind::G0,
            0 => CycleKind::G1c,
            1 => CycleKind::GSingle,
            _ => CycleKind::G2,
        };
        anomalies.push(Anomaly::Cycle {
            kind,
            realtime,
            steps,
        });
    }
}
