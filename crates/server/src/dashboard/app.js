// raftkv dashboard. Plain JavaScript, no libraries: the page must work offline, from the
// binary alone. Data sources (all on this origin):
//   GET  /dashboard/api/cluster  every member's status, gathered by the serving member
//   POST /v3/kv/range            keys and revision history (the JSON gateway)
//   POST /v3/watch               the live watch tail (a streamed answer, one JSON per line)
"use strict";

const REFRESH_MS = 1000;
/** Rates and latency percentiles are taken over at least this much history. */
const WINDOW_MS = 5000;
const KEY_LIMIT = 200;
const HISTORY_LIMIT = 50;
const WATCH_ROWS = 200;

const $ = (id) => document.getElementById(id);

// ---------- small helpers ----------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "title") node.title = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  }
  return node;
}

function num(v) {
  return el("td", { class: "num" }, v == null ? "–" : v);
}

function showError(context, err) {
  const list = $("errors");
  const text = `${new Date().toLocaleTimeString()} ${context}: ${err && err.message ? err.message : err}`;
  list.prepend(el("li", {}, text));
  while (list.children.length > 5) list.lastChild.remove();
}

function clearErrors(context) {
  for (const li of Array.from($("errors").children)) {
    if (li.textContent.includes(` ${context}: `)) li.remove();
  }
}

function bytesToB64(bytes) {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

function b64(text) {
  return bytesToB64(new TextEncoder().encode(text));
}

function unb64(s) {
  if (!s) return "";
  const bin = atob(s);
  const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  return new TextDecoder("utf-8").decode(bytes);
}

/** etcd's prefix range end: the prefix with its last byte below 0xff incremented. */
function prefixRange(prefix) {
  const bytes = new TextEncoder().encode(prefix);
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i] < 0xff) {
      const end = bytes.slice(0, i + 1);
      end[i] += 1;
      return { key: bytesToB64(bytes), range_end: bytesToB64(end) };
    }
  }
  // Empty (or all 0xff): every key from the prefix on; "\0" means "no upper bound".
  const zero = bytesToB64(new Uint8Array([0]));
  return { key: bytes.length ? bytesToB64(bytes) : zero, range_end: zero };
}

function authHeaders() {
  const token = $("token").value.trim();
  return token ? { Authorization: token } : {};
}

/** A unary gateway call; throws with etcd's message on an error answer. */
async function gateway(path, body) {
  const resp = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...authHeaders() },
    body: JSON.stringify(body),
  });
  const answer = await resp.json();
  if (!resp.ok || answer.error) {
    const err = new Error(answer.message || answer.error || resp.statusText);
    err.code = answer.code;
    throw err;
  }
  return answer;
}

// ---------- members ----------

/** Per member id: recent samples {t, total, buckets} for rates and windowed percentiles. */
const samples = new Map();

/** Prometheus' histogram_quantile over cumulative buckets [[le|null, count], ...]. */
function quantile(buckets, q) {
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lowerLe = 0;
  let lowerCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (le == null) return lowerLe * 1000;
      const inside = count - lowerCount;
      if (inside <= 0) return le * 1000;
      return (lowerLe + ((le - lowerLe) * (rank - lowerCount)) / inside) * 1000;
    }
    lowerLe = le == null ? lowerLe : le;
    lowerCount = count;
  }
  return lowerLe * 1000;
}

/** Rate and percentiles of one member over the window (since start when the window is idle). */
function windowed(id, status, now) {
  const sample = { t: now, total: status.requests.total, buckets: status.latency.buckets };
  let history = samples.get(id) || [];
  // A restarted member starts its counters again: start its history again too.
  if (history.length && history[history.length - 1].total > sample.total) history = [];
  history.push(sample);
  while (history.length > 2 && now - history[1].t >= WINDOW_MS) history.shift();
  samples.set(id, history);
  const first = history[0];
  const seconds = (now - first.t) / 1000;
  const rate = seconds > 0 ? (sample.total - first.total) / seconds : null;
  let buckets = sample.buckets.map(([le, c], i) => [le, c - ((first.buckets[i] || [le, 0])[1])]);
  let sinceStart = false;
  if (!buckets.length || buckets[buckets.length - 1][1] <= 0) {
    buckets = sample.buckets;
    sinceStart = true;
  }
  const fmt = (q) => {
    const v = quantile(buckets, q);
    return v == null ? null : v.toFixed(v < 10 ? 2 : 1) + (sinceStart ? "*" : "");
  };
  return { rate: rate == null ? null : rate.toFixed(1), p50: fmt(0.5), p90: fmt(0.9), p99: fmt(0.99) };
}

function renderMembers(view) {
  const now = performance.now();
  const members = view.members;
  const byId = new Map(members.map((m) => [m.id, m]));
  const self = byId.get(view.served_by);
  const leaderId = self && self.status ? self.status.leader : null;
  const leader = leaderId ? byId.get(leaderId) : null;
  const leaderStatus = leader && leader.status ? leader.status : null;
  const lagOf = new Map((leaderStatus ? leaderStatus.progress : []).map((p) => [p.id, p.lag]));

  $("served-by").textContent = `served by ${self ? self.name || self.id : view.served_by}` +
    (self && self.status ? ` · cluster ${self.status.cluster_id} · raftkv ${self.status.version}` : "");
  const leaderText = leaderId
    ? `Leader: ${leader && leader.name ? leader.name : "?"} (${leaderId})` +
      (self && self.status ? `, term ${self.status.term}` : "")
    : "Leader: none";
  $("leader").textContent = leaderText;
  $("leader").dataset.leaderId = leaderId || "";

  const body = $("members").tBodies[0];
  const rows = members.map((m) => {
    const s = m.status;
    const isLeader = m.id === leaderId;
    const cls = (isLeader ? "is-leader" : "") + (s ? "" : " unreachable");
    if (!s) {
      samples.delete(m.id);
      return el("tr", { class: cls.trim(), "data-id": m.id },
        el("td", {}, m.name || "(unstarted)"), el("td", { class: "id" }, m.id),
        el("td", { colspan: "12", title: m.error || "" }, m.error || "no status"));
    }
    const w = windowed(m.id, s, now);
    const lag = isLeader ? 0 : lagOf.has(m.id) ? lagOf.get(m.id) : null;
    const role = s.role + (m.is_learner ? " (learner)" : "");
    return el("tr", { class: cls.trim(), "data-id": m.id },
      el("td", {}, m.name || s.name), el("td", { class: "id" }, m.id),
      el("td", { class: `role-${s.role}` }, role), num(s.term), num(s.commit), num(s.applied),
      num(lag), num(s.leader_changes), num(w.rate), num(w.p50), num(w.p90), num(w.p99),
      num(s.revision), num(s.keys));
  });
  body.replaceChildren(...rows);
  const unreachable = members.filter((m) => !m.status).length;
  $("members-note").textContent =
    `${members.length} members` + (unreachable ? `, ${unreachable} without status` : "") +
    ` · updated ${new Date().toLocaleTimeString()}` +
    " · lag from the leader's view; * = percentile since start (no calls in the last few seconds)";
}

let refreshing = false;

async function refreshMembers() {
  if (refreshing) return;
  refreshing = true;
  try {
    const resp = await fetch("/dashboard/api/cluster", { cache: "no-store" });
    if (!resp.ok) throw new Error(`${resp.status} ${await resp.text()}`);
    renderMembers(await resp.json());
    clearErrors("members");
  } catch (err) {
    showError("members", err);
  } finally {
    refreshing = false;
  }
}

// ---------- keys and history ----------

async function listKeys(prefix) {
  const range = prefixRange(prefix);
  const answer = await gateway("/v3/kv/range", { ...range, limit: KEY_LIMIT });
  const kvs = answer.kvs || [];
  const body = $("keys").tBodies[0];
  body.replaceChildren(...kvs.map((kv) => {
    const key = unb64(kv.key);
    const show = el("button", { class: "link", type: "button" }, "history");
    show.addEventListener("click", () => {
      showHistory(kv.key, key, Number(kv.mod_revision)).catch((e) => showError("history", e));
    });
    return el("tr", {},
      el("td", { class: "key" }, key), el("td", { class: "value" }, unb64(kv.value)),
      num(kv.mod_revision), num(kv.version), el("td", {}, show));
  }));
  const count = Number(answer.count || 0);
  $("key-summary").textContent =
    `${count} key${count === 1 ? "" : "s"}` + (answer.more ? `, first ${kvs.length} shown` : "") +
    ` at revision ${answer.header ? answer.header.revision : "?"}`;
  clearErrors("keys");
}

/**
 * A key's versions, newest first: read the key at its mod revision, then at one revision
 * before that, and so on, until it did not exist (before its creation or a delete) or the
 * revision was compacted away.
 */
async function showHistory(keyB64, keyText, fromRevision) {
  $("history-key").textContent = keyText;
  const body = $("history").tBodies[0];
  body.replaceChildren();
  let note = "";
  let revision = fromRevision;
  // Revisions below the compaction point are gone; stop there rather than ask for one (the
  // error answer would also be logged by the browser as a failed load).
  const status = await (await fetch("/dashboard/api/status", { cache: "no-store" })).json();
  const compacted = Number(status.compact_revision || 0);
  for (let i = 0; i < HISTORY_LIMIT && revision > 0; i++) {
    if (revision < compacted) {
      note = `Older revisions are compacted (compacted up to revision ${compacted}).`;
      break;
    }
    let answer;
    try {
      answer = await gateway("/v3/kv/range", { key: keyB64, revision });
    } catch (err) {
      if (err.code === 11) {
        note = `Older revisions are compacted (asked for ${revision}).`;
        break;
      }
      throw err;
    }
    const kv = (answer.kvs || [])[0];
    if (!kv) {
      note = `The key did not exist at revision ${revision} (before its creation or after a delete).`;
      break;
    }
    body.append(el("tr", {}, num(kv.mod_revision), num(kv.create_revision), num(kv.version),
      el("td", { class: "value" }, unb64(kv.value))));
    if (Number(kv.version) === 1) {
      note = `Created at revision ${kv.create_revision}.`;
      break;
    }
    revision = Number(kv.mod_revision) - 1;
  }
  if (!note) note = `Showing the latest ${HISTORY_LIMIT} versions.`;
  $("history-note").textContent = note;
  clearErrors("history");
}

/** The history of a key named in text (the `?history=` parameter). */
async function historyOf(keyText) {
  const answer = await gateway("/v3/kv/range", { key: b64(keyText) });
  const kv = (answer.kvs || [])[0];
  if (!kv) {
    $("history-key").textContent = keyText;
    $("history-note").textContent = "No such key.";
    return;
  }
  await showHistory(kv.key, keyText, Number(kv.mod_revision));
}

// ---------- watch tail ----------

let watching = null;

function addWatchEvent(revision, ev) {
  const kv = ev.kv || {};
  const body = $("watch").tBodies[0];
  body.prepend(el("tr", {}, num(kv.mod_revision || revision), el("td", {}, ev.type || "PUT"),
    el("td", { class: "key" }, unb64(kv.key)), el("td", { class: "value" }, unb64(kv.value))));
  while (body.rows.length > WATCH_ROWS) body.lastChild.remove();
}

async function runWatch(prefix, controller) {
  const resp = await fetch("/v3/watch", {
    method: "POST",
    headers: { "Content-Type": "application/json", ...authHeaders() },
    body: JSON.stringify({ create_request: prefixRange(prefix) }),
    signal: controller.signal,
  });
  if (!resp.ok || !resp.body) throw new Error(`${resp.status} ${resp.statusText}`);
  $("watch-state").textContent = `watching ${prefix ? `"${prefix}"` : "every key"}`;
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl).trim();
      buffer = buffer.slice(nl + 1);
      if (!line) continue;
      const message = JSON.parse(line);
      if (message.error) throw new Error(message.error.message || JSON.stringify(message.error));
      const result = message.result || {};
      if (result.canceled) throw new Error(result.cancel_reason || "watch canceled by the server");
      const revision = result.header ? result.header.revision : "";
      for (const ev of result.events || []) addWatchEvent(revision, ev);
    }
  }
  throw new Error("the server ended the watch");
}

function stopWatch(state) {
  if (watching) watching.abort();
  watching = null;
  $("watch-toggle").textContent = "Start";
  $("watch-state").textContent = state;
}

function toggleWatch() {
  if (watching) {
    stopWatch("stopped");
    return;
  }
  const controller = new AbortController();
  watching = controller;
  $("watch-toggle").textContent = "Stop";
  $("watch-state").textContent = "connecting…";
  runWatch($("watch-prefix").value, controller).catch((err) => {
    if (controller.signal.aborted) return;
    showError("watch", err);
    if (watching === controller) stopWatch("stopped (error)");
  });
}

// ---------- start ----------

function start() {
  const params = new URLSearchParams(location.search);
  $("prefix").value = params.get("prefix") || "";
  $("watch-prefix").value = params.get("watch") || "";

  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    listKeys($("prefix").value).catch((err) => showError("keys", err));
  });
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    listKeys($("prefix").value).catch((err) => showError("keys", err));
  });
  $("watch-form").addEventListener("submit", (e) => {
    e.preventDefault();
    toggleWatch();
  });

  refreshMembers();
  listKeys($("prefix").value).catch((err) => showError("keys", err));
  if (params.has("history")) {
    historyOf(params.get("history")).catch((err) => showError("history", err));
  }
  if (params.has("watch")) toggleWatch();
  setInterval(() => {
    if ($("live").checked) refreshMembers();
  }, REFRESH_MS);
}

start();
