"""One session of python-etcd3 (the `etcd3` gRPC client library from PyPI) against one member.
Prints a transcript, one JSON object per step, that the Rust test compares between raftkv and
a real etcd 3.4 given the same session.

Watch is the centre of it (iterator and callback watches, prefix watches with prev_kv, a watch
from a past revision, watch_once with its timeout, cancel, a watch from a compacted revision),
with the KV, transaction, lease and lock calls the library's users make around it.

Only what a library user sees is recorded: return values, keys and values, revisions, and the
class of errors. Member and lease ids, terms and raft indexes differ between any two clusters
and are left out.

Usage: python etcd3_grpc_session.py HOST PORT
"""

import json
import sys
import threading

import etcd3
from etcd3 import events, exceptions

host, port = sys.argv[1], int(sys.argv[2])
client = etcd3.client(host=host, port=port, timeout=10)
WAIT = 10  # seconds any single wait for a watch event may take


def record(step, value):
    print(json.dumps({"step": step, "value": value}, sort_keys=True), flush=True)


def text(b):
    return b.decode("utf-8") if isinstance(b, bytes) else b


def meta(m):
    return {
        "key": text(m.key),
        "create_revision": m.create_revision,
        "mod_revision": m.mod_revision,
        "version": m.version,
        "lease_attached": m.lease_id != 0,
    }


def event(e):
    """A watch event as plain JSON: its kind, the key-value and the previous one."""
    out = {
        "type": "PUT" if isinstance(e, events.PutEvent) else "DELETE",
        "key": text(e.key),
        "value": text(e.value),
        "mod_revision": e.mod_revision,
        "version": e.version,
    }
    if e._event.HasField("prev_kv"):
        out["prev"] = [text(e.prev_value), e.prev_mod_revision]
    return out


def take(iterator, n):
    """The next `n` events of an iterator watch, each wait bounded by the client timeout."""
    got = []
    for e in iterator:
        got.append(event(e))
        if len(got) == n:
            break
    return got


# --- KV and transactions around the watches -------------------------------------------
client.put("/app/config/a", "1")
client.put("/app/config/b", "2")
value, m = client.get("/app/config/a")
record("get", [text(value), meta(m)])
record("get_prefix", [[text(v), meta(m)] for v, m in client.get_prefix("/app/config/")])
record("put_if_not_exists_existing", client.put_if_not_exists("/app/config/a", "9"))
record("put_if_not_exists_new", client.put_if_not_exists("/app/config/c", "3"))
record("replace_wrong", client.replace("/app/config/a", "0", "10"))
record("replace_right", client.replace("/app/config/a", "1", "10"))
ok, responses = client.transaction(
    compare=[client.transactions.value("/app/config/b") == "2"],
    success=[client.transactions.put("/app/config/b", "20"), client.transactions.get("/app/config/a")],
    failure=[],
)
record("txn", [ok, [[text(v), meta(m)] for v, m in responses[1]]])
start = client.get_response("/app/config/a").header.revision

# --- An iterator watch on a prefix with prev_kv ---------------------------------------
it, cancel = client.watch_prefix("/app/config/", prev_kv=True)
client.put("/app/config/a", "11")
client.delete("/app/config/c")
with client.lock("unrelated", ttl=5):
    pass
client.put("/app/config/d", "4")
record("prefix_watch", take(it, 3))
cancel()

# --- A watch from a past revision replays history -------------------------------------
it, cancel = client.watch_prefix("/app/config/", start_revision=start + 1)
record("history_watch", take(it, 3))
cancel()

# --- Callback watches, delivered on the library's thread ------------------------------
seen = []
done = threading.Event()


def on_event(response):
    if isinstance(response, Exception):
        seen.append({"error": type(response).__name__})
        done.set()
        return
    for e in response.events:
        seen.append(event(e))
    if len(seen) >= 2:
        done.set()


watch_id = client.add_watch_callback("/svc/leader", on_event, prev_kv=True)
client.put("/svc/leader", "node-1")
client.put("/svc/leader", "node-2")
record("callback_watch", [done.wait(WAIT), seen])
client.cancel_watch(watch_id)
client.put("/svc/leader", "node-3")
record("callback_after_cancel", len(seen))

# --- watch_once: an event, and a timeout when nothing happens --------------------------
def put_later():
    client.put("/once/key", "v")


# The watch starts at the revision after the marker's, so the put is seen even when it lands
# before the watch is created (a slow machine).
marker = client.put("/once/marker", "m").header.revision
threading.Timer(0.3, put_later).start()
record("watch_once", event(client.watch_once("/once/key", timeout=WAIT, start_revision=marker + 1)))
try:
    client.watch_once("/once/quiet", timeout=0.5)
    record("watch_once_quiet", "no timeout")
except exceptions.WatchTimedOut:
    record("watch_once_quiet", "WatchTimedOut")

# --- A watch from a compacted revision -------------------------------------------------
head = client.put("/app/config/e", "5").header.revision
client.compact(head, physical=True)
compacted = []
compacted_done = threading.Event()


def on_compacted(response):
    if isinstance(response, exceptions.RevisionCompactedError):
        compacted.append({"error": "RevisionCompactedError", "revision": response.compacted_revision})
    elif isinstance(response, Exception):
        compacted.append({"error": type(response).__name__})
    else:
        compacted.extend(event(e) for e in response.events)
    compacted_done.set()


try:
    client.add_watch_callback("/app/config/", on_compacted, range_end="/app/config0", start_revision=start)
    record("compacted_watch", [compacted_done.wait(WAIT), compacted])
except exceptions.RevisionCompactedError as e:
    record("compacted_watch", ["raised", e.compacted_revision])

# --- Leases and a lease-bound key seen by a watch --------------------------------------
lease = client.lease(ttl=5)
record("lease_ttl", lease.granted_ttl)
client.put("/session/worker", "alive", lease=lease)
it, cancel = client.watch("/session/worker", prev_kv=True)
lease.revoke()
record("lease_revoke_event", take(it, 1))
cancel()
record("lease_key_after_revoke", text(client.get("/session/worker")[0]))

# --- The library's lock recipe ---------------------------------------------------------
first = client.lock("job", ttl=10)
record("lock_first", first.acquire(timeout=5))
second = client.lock("job", ttl=10)
record("lock_second_while_held", second.acquire(timeout=1))
record("lock_is_acquired", first.is_acquired())
first.release()
record("lock_second_after_release", second.acquire(timeout=5))
second.release()

client.close()
