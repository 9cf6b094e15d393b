"""One session of the etcd3gw client library (OpenStack's HTTP-only etcd client, from PyPI)
against one member's JSON gateway. Prints a transcript, one JSON object per step, that the
Rust test compares between raftkv and a real etcd 3.4 given the same session.

Only what a library user sees is recorded: return values, decoded keys and values,
revisions, and the class and text of errors. Member and lease ids, terms and raft indexes
differ between any two clusters and are left out or reduced to a shape.

Usage: python etcd3gw_session.py HOST PORT
"""

import json
import sys
import threading

from etcd3gw import exceptions
from etcd3gw.client import Etcd3Client

host, port = sys.argv[1], int(sys.argv[2])
client = Etcd3Client(host=host, port=port, timeout=10)


def record(step, value):
    print(json.dumps({"step": step, "value": value}, sort_keys=True), flush=True)


def text(b):
    return b.decode("utf-8") if isinstance(b, bytes) else b


def kvs(items):
    """(value, metadata) pairs as plain JSON: key, value and the revision fields."""
    out = []
    for value, meta in items:
        out.append({
            "key": text(meta["key"]),
            "value": text(value),
            "create_revision": meta.get("create_revision"),
            "mod_revision": meta.get("mod_revision"),
            "version": meta.get("version"),
            "lease_attached": "lease" in meta,
        })
    return out


def error(call):
    """Runs `call`, which must fail; records what the library raised."""
    try:
        call()
    except exceptions.Etcd3Exception as e:
        detail = e.detail_text
        try:
            detail = json.loads(detail)
        except (TypeError, ValueError):
            pass
        return {"class": type(e).__name__, "detail": detail}
    return {"class": None}


def current_revision():
    return int(client.status()["header"]["revision"])


# Version discovery: the library picks its API path from /version.
record("api_path", client.api_path)
status = client.status()
record("status_version_line", ".".join(status["version"].split(".")[:2]))
record("status_has_leader", status.get("leader", "0") != "0")
members = client.members()
record("members", sorted(
    (m["name"].rsplit("-", 1)[-1], len(m.get("peerURLs", [])), len(m.get("clientURLs", [])))
    for m in members))

# KV: put, get with metadata, create-if-absent, compare-and-swap, prefix, delete.
record("put", client.put("app/k1", "v1"))
record("put", client.put("app/k1", "v2"))
record("get", kvs(client.get("app/k1", metadata=True)))
record("get_missing", client.get("app/nope"))
record("create", client.create("app/k2", "a"))
record("create_again", client.create("app/k2", "b"))
record("replace", client.replace("app/k2", "a", "c"))
record("replace_stale", client.replace("app/k2", "a", "d"))
record("get_values", [text(v) for v in client.get("app/k2")])
client.put("app/k3", "v3")
record("get_prefix", kvs(client.get_prefix("app/")))
record("get_prefix_desc", kvs(client.get_prefix("app/", sort_order="descend", sort_target="key")))
record("get_all", kvs(client.get_all()))
past = current_revision()
record("delete", client.delete("app/k1"))
record("delete_again", client.delete("app/k1"))
record("get_at_past_revision", kvs(client.get("app/k1", metadata=True, revision=past)))
record("count_only", client.post(client.get_url("/kv/range"), json={
    "key": "YXBwLw==", "range_end": "YXBwMA==", "count_only": True}).get("count"))

# A raw transaction with a failure branch.
txn = client.transaction({
    "compare": [{"key": "YXBwL2sy", "result": "EQUAL", "target": "VALUE", "value": "eg=="}],
    "success": [{"request_put": {"key": "YXBwL2sy", "value": "eQ=="}}],
    "failure": [{"request_range": {"key": "YXBwL2sy"}}],
})
record("txn_succeeded", txn.get("succeeded", False))
record("txn_failure_range", [
    (r["response_range"]["kvs"][0]["key"], r["response_range"]["kvs"][0]["value"])
    for r in txn["responses"]])

# Leases: grant, attach, time-to-live with keys, keep-alive, revoke.
lease = client.lease(ttl=60)
record("lease_put", client.put("svc/a", "up", lease=lease))
record("lease_attached", kvs(client.get("svc/a", metadata=True))[0]["lease_attached"])
record("lease_ttl_in_range", 50 <= lease.ttl() <= 60)
record("lease_keys", [text(k) for k in lease.keys()])
record("lease_refresh", lease.refresh())
record("lease_revoke", lease.revoke())
record("lease_key_gone", client.get("svc/a"))
record("lease_ttl_after_revoke", lease.ttl())
record("put_unknown_lease", error(lambda: client.post(
    client.get_url("/kv/put"), json={"key": "eA==", "value": "eQ==", "lease": 12345})))

# The library's lock recipe (lease + create-if-absent transaction).
first = client.lock("resource", ttl=60)
second = client.lock("resource", ttl=60)
record("lock_first", first.acquire())
record("lock_second_while_held", second.acquire())
record("lock_is_acquired", first.is_acquired())
record("lock_release", first.release())
record("lock_second_after_release", second.acquire())
record("lock_second_release", second.release())

# Watch: a streamed watch from the next revision sees a put and a delete in order;
# starting at that revision makes the events replay even if the stream opens late.
start = current_revision() + 1
events, cancel = client.watch_prefix("w/", start_revision=start, prev_kv=True)
client.put("w/a", "1")
client.delete("w/a")
seen = []
done = threading.Event()


def collect():
    for event in events:
        kv = event["kv"]
        seen.append({
            "type": event.get("type", "PUT"),
            "key": text(kv["key"]),
            "value": text(kv.get("value", b"")),
            "mod_revision": kv.get("mod_revision"),
            "prev_value": text(event.get("prev_kv", {}).get("value", b"")) or None,
        })
        if len(seen) == 2:
            done.set()
            return


threading.Thread(target=collect, daemon=True).start()
record("watch_got_two_events", done.wait(timeout=20))
cancel()
record("watch_events", seen)
once = client.watch_once("app/k3", timeout=20, start_revision=1)
record("watch_once_history", {"type": once.get("type", "PUT"), "key": text(once["kv"]["key"]),
                              "value": text(once["kv"]["value"])})

# Errors the library maps to its exceptions.
record("compacted_read", error(lambda: (
    client.post(client.get_url("/kv/compaction"), json={"revision": past, "physical": True}),
    client.get("app/k1", revision=past - 1))))
record("delete_prefix", client.delete_prefix("app/"))
record("final_keys", [m["key"] for _, m in client.get_all()])
