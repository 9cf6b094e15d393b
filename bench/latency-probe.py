#!/usr/bin/env python3
"""Join RAFTKV_LATENCY_PROBE files (one per member process) into per-request hop timings.

Marks (crates/server/src/node/probe.rs callers): leader rpc_in, node_in, placed (its own
WAL write starts, after the Appends left), tx_append, saved, rx_ack, ack_step, commit,
answered, rpc_out; follower rx_append, f_node, sent (its WAL write starts), saved, ack_sent,
tx_ack. A request is dropped only when one of these is missing for its index.
"""
import sys, glob, os, bisect, statistics
d = sys.argv[1]
procs = []
for f in glob.glob(os.path.join(d, 'probe-*.log')):
    ev = {}
    lists = {}
    for line in open(f):
        p = line.split()
        if len(p) != 3: continue
        e, i, t = p[0], int(p[1]), int(p[2])
        lists.setdefault(e, []).append((t, i))
        ev.setdefault((e, i), t)
    procs.append((f, ev, lists))
leader = [p for p in procs if 'placed' in p[2]]
assert len(leader) == 1, [p[0] for p in procs]
L = leader[0]
fol = [p for p in procs if p is not L]
rpc_in = sorted(t for t, _ in L[2].get('rpc_in', []))
rpc_out = sorted(t for t, _ in L[2].get('rpc_out', []))
node_in = sorted(t for t, _ in L[2].get('node_in', []))
rows = []
skip = int(sys.argv[2]) if len(sys.argv) > 2 else 50
for t_placed, i in sorted(L[2]['placed'])[skip:]:
    ev = L[1]
    k = bisect.bisect_left(rpc_in, t_placed) - 1
    if k < 0: continue
    t0 = rpc_in[k]
    kn = bisect.bisect_left(node_in, t_placed) - 1
    ans = ev.get(('commit', i))
    if ans is None: continue
    ko = bisect.bisect_left(rpc_out, ans)
    if ko >= len(rpc_out): continue
    r = {'node_in': node_in[kn], 'placed': t_placed}
    for e in ['tx_append', 'saved', 'ack_step', 'commit', 'answered']:
        r['L.' + e] = ev.get((e, i))
    acks = sorted(t for t, j in L[2].get('rx_ack', []) if j == i)
    steps = sorted(t for t, j in L[2].get('ack_step', []) if j == i)
    r['L.rx_ack1'] = acks[0] if acks else None
    r['L.ack_step1'] = steps[0] if steps else None
    fts = []
    for f in fol:
        fr = {e: f[1].get((e, i)) for e in ['rx_append', 'f_node', 'sent', 'saved', 'ack_sent', 'tx_ack']}
        fts.append(fr)
    # the follower whose ack came first
    fts = [x for x in fts if x['tx_ack']]
    if not fts: continue
    fts.sort(key=lambda x: x['tx_ack'])
    for e, t in fts[0].items(): r['F.' + e] = t
    r['rpc_out'] = rpc_out[ko]
    if any(v is None for v in r.values()): continue
    rows.append({k: (v - t0) / 1000 for k, v in r.items()})
order = ['node_in', 'L.tx_append', 'F.rx_append', 'F.f_node', 'F.sent', 'F.saved', 'F.ack_sent', 'F.tx_ack',
         'L.rx_ack1', 'L.ack_step1', 'L.commit', 'L.answered', 'rpc_out']
def pct(xs, q):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(q * len(xs)))]
print(f"{len(rows)} requests; times in µs since NodeHandle::propose was called on the leader")
print(f"{'stage':14} {'p50 cum':>8} {'p50 hop':>8} {'p90 hop':>8} {'p99 hop':>8} {'p99 cum':>8}")
prev = None
if not rows:
    sys.exit("no request had every mark; are all three members' probe files in " + d + "?")
ls = [r['L.saved'] - r['placed'] for r in rows]
print(f"(leader's own WAL write+fsync, placed -> L.saved: p50 {pct(ls,.5):.0f} p90 {pct(ls,.9):.0f} p99 {pct(ls,.99):.0f}; runs in parallel)")
for s in order:
    cum = [r[s] for r in rows]
    hop = [r[s] - (r[prev] if prev else 0) for r in rows]
    print(f"{s:14} {pct(cum,.5):8.0f} {pct(hop,.5):8.0f} {pct(hop,.9):8.0f} {pct(hop,.99):8.0f} {pct(cum,.99):8.0f}")
    prev = s
# slowest requests breakdown
print("slowest 5:")
for r in sorted(rows, key=lambda r: -r['rpc_out'])[:5]:
    print('  ' + ' '.join(f"{s.split('.')[-1]}={r[s]:.0f}" for s in order))
