#!/usr/bin/env bash
# Validate the deployment files without a Kubernetes cluster (none can run here):
#   1. every manifest in deploy/k8s against the schemas of a current Kubernetes version
#      (`kubernetes-validate --strict`, installed from PyPI if missing; unknown fields fail);
#   2. the kustomize-rendered output, the same way, when kubectl or kustomize is present
#      (said loudly when neither is);
#   3. the kustomization lists every manifest in the directory (none forgotten);
#   4. the compose file parses (`docker compose config`), when a compose tool is present;
#   5. the `raftkv server` flags that the StatefulSet and the compose file pass really parse,
#      with `raftkv server --dry-run`, and the subcommand the client Job runs exists;
#   6. the TLS variants, deploy/k8s-tls (kustomize overlay: rendering, schemas, the members'
#      and the Job's Secrets) and compose.tls.yaml: their server flags through the same dry
#      run, against certificates that scripts/gen-certs.sh makes for the occasion (the dry
#      run reads and checks every certificate and key file it is given).
# Needs no cargo: give it the binary with RAFTKV_BIN, or it looks in target*/{release,dist}.
# Env: RAFTKV_K8S_VERSION (default: the newest version kubernetes-validate knows).
# Exit status non-zero on the first failed check; the last line says how many checks passed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
K8S_DIR=deploy/k8s
K8S_TLS_DIR=deploy/k8s-tls
COMPOSE_FILE=deploy/compose/compose.yaml
COMPOSE_TLS_FILE=deploy/compose/compose.tls.yaml

passed=0
ok() { passed=$((passed + 1)); printf 'ok   %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*" >&2; printf '%d passed, 1 failed\n' "$passed"; exit 1; }
note() { printf '==> %s\n' "$*"; }

PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || fail "python3 is needed (kubernetes-validate is a Python tool)"

if ! command -v kubernetes-validate >/dev/null; then
  note "installing kubernetes-validate from PyPI"
  "$PY" -m pip install --quiet --disable-pip-version-check kubernetes-validate >/dev/null ||
    fail "pip could not install kubernetes-validate"
fi
KV=(kubernetes-validate)
command -v kubernetes-validate >/dev/null || KV=("$PY" -m kubernetes_validate)
K8S_VERSION_ARGS=()
if [ -n "${RAFTKV_K8S_VERSION:-}" ]; then K8S_VERSION_ARGS=(-k "$RAFTKV_K8S_VERSION"); fi
note "kubernetes-validate $("${KV[@]}" --version) (${RAFTKV_K8S_VERSION:-its newest Kubernetes version})"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/raftkv-validate.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# 1. Each manifest on its own (the kustomization itself has no Kubernetes schema).
mapfile -t manifests < <(find "$K8S_DIR" -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml | sort)
[ "${#manifests[@]}" -gt 0 ] || fail "no manifests found in $K8S_DIR"
for f in "${manifests[@]}"; do
  out=$("${KV[@]}" --strict --quiet "${K8S_VERSION_ARGS[@]}" "$f" 2>&1) || fail "$f: $out"
  ok "schema: $f"
done

# 2. What `kubectl apply -k` would send.
if command -v kubectl >/dev/null; then RENDER=(kubectl kustomize "$K8S_DIR")
elif command -v kustomize >/dev/null; then RENDER=(kustomize build "$K8S_DIR")
else RENDER=(); fi
if [ "${#RENDER[@]}" -gt 0 ]; then
  "${RENDER[@]}" >"$TMP/rendered.yaml" 2>"$TMP/render.err" || fail "${RENDER[*]}: $(cat "$TMP/render.err")"
  out=$("${KV[@]}" --strict --quiet "${K8S_VERSION_ARGS[@]}" "$TMP/rendered.yaml" 2>&1) || fail "rendered kustomization: $out"
  ok "schema: kustomize output of $K8S_DIR (${RENDER[*]})"
else
  note "NOT CHECKED: kustomize rendering (neither kubectl nor kustomize is installed); each file was validated instead"
fi

# 3 and 5 read YAML; PyYAML comes with kubernetes-validate.
"$PY" - "$K8S_DIR" >"$TMP/extract.out" 2>&1 <<'PYEOF' || fail "manifest inspection: $(cat "$TMP/extract.out")"
import os, sys, shlex, yaml
k8s = sys.argv[1]
kust = yaml.safe_load(open(os.path.join(k8s, "kustomization.yaml")))
listed = set(kust.get("resources", []))
present = {f for f in os.listdir(k8s) if f.endswith(".yaml") and f != "kustomization.yaml"}
if listed != present:
    sys.exit(f"kustomization resources {sorted(listed)} != manifests present {sorted(present)}")
print("KUSTOMIZATION_OK")

def containers_of(kind):
    for f in sorted(present):
        for doc in yaml.safe_load_all(open(os.path.join(k8s, f))):
            if doc and doc.get("kind") == kind:
                yield f, doc["spec"]["template"]["spec"]["containers"]

# Kubernetes expands $(VAR) in args from the container's env; use what pod raftkv-0 in
# namespace "default" would get.
subst = {"POD_NAME": "raftkv-0", "POD_NAMESPACE": "default"}
def expand(arg):
    for k, v in subst.items():
        arg = arg.replace(f"$({k})", v)
    if "$(" in arg:
        sys.exit(f"unexpanded variable in argument {arg!r}")
    return arg

found = False
for f, cs in containers_of("StatefulSet"):
    for c in cs:
        args = [expand(a) for a in c.get("args", [])]
        if args[:1] == ["server"]:
            found = True
            print("SERVER " + shlex.join(args[1:]))
if not found:
    sys.exit("no StatefulSet container runs `raftkv server`")
for f, cs in containers_of("Job"):
    for c in cs:
        args = c.get("args", [])
        print("JOBCMD " + shlex.quote(args[0]))
PYEOF
grep -q KUSTOMIZATION_OK "$TMP/extract.out" && ok "kustomization lists every manifest in $K8S_DIR"

# 4. The compose file.
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then COMPOSE=(docker-compose)
else COMPOSE=(); fi
if [ "${#COMPOSE[@]}" -gt 0 ]; then
  out=$(RAFTKV_IMAGE=raftkv:validate "${COMPOSE[@]}" -p raftkv-validate -f "$COMPOSE_FILE" config -q 2>&1) ||
    fail "$COMPOSE_FILE: $out"
  ok "compose: $COMPOSE_FILE parses (${COMPOSE[*]})"
else
  note "NOT CHECKED: $COMPOSE_FILE (no docker compose / docker-compose installed)"
fi

# 5. The flags, with the real binary.
BIN=${RAFTKV_BIN:-}
if [ -z "$BIN" ]; then
  for cand in "${CARGO_TARGET_DIR:-$ROOT/target}"/{release,dist}/raftkv "$ROOT"/target/{release,dist}/raftkv; do
    if [ -x "$cand" ] && { [ -z "$BIN" ] || [ "$cand" -nt "$BIN" ]; }; then BIN=$cand; fi
  done
fi
[ -n "$BIN" ] && [ -x "$BIN" ] ||
  fail "no raftkv binary to check the manifests' flags with: set RAFTKV_BIN or run 'cargo build --release -p raftkv'"
note "checking flags with $BIN"
# The dry run also checks that the listen addresses (0.0.0.0:2379/2380) can be bound. Run it
# in a network namespace of its own when we can make one, so that whatever listens on the
# host's 2379 (a system etcd, another cluster) cannot fail it.
ISOLATE=()
if unshare -n true 2>/dev/null; then ISOLATE=(unshare -n)
elif unshare -rn true 2>/dev/null; then ISOLATE=(unshare -rn)
else note "no private network namespace available: the dry run binds the host's ports 2379/2380"; fi

while IFS= read -r line; do
  case $line in
    SERVER\ *)
      eval "set -- ${line#SERVER }"
      out=$(env -i PATH="$PATH" "${ISOLATE[@]}" "$BIN" server --dry-run "$@" 2>&1) || fail "StatefulSet flags rejected by 'raftkv server --dry-run': $out"
      ok "StatefulSet server flags parse (raftkv server --dry-run: $(tail -n1 <<<"$out"))" ;;
    JOBCMD\ *)
      eval "set -- ${line#JOBCMD }"
      out=$("$BIN" "$1" --help 2>&1) || fail "the client Job runs 'raftkv $1', which does not exist: $out"
      ok "client Job subcommand 'raftkv $1' exists" ;;
  esac
done <"$TMP/extract.out"

# dry_run_compose LABEL FROM TO COMPOSE_ARGS...: each compose member's flags (from `command`)
# and RAFTKV_* environment through `raftkv server --dry-run`, with path prefix FROM (a mount
# point in the container) rewritten to TO (where the files are on this machine).
dry_run_compose() {
  local label=$1 from=$2 to=$3
  shift 3
  "${COMPOSE[@]}" -p raftkv-validate "$@" config >"$TMP/compose.yaml"
  "$PY" - "$TMP/compose.yaml" "$label" >"$TMP/compose.out" 2>&1 <<'PYEOF' || fail "compose inspection ($label): $(cat "$TMP/compose.out")"
import shlex, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
n = 0
for name, svc in sorted(doc["services"].items()):
    cmd = svc.get("command") or []
    if cmd[:1] != ["server"]:
        continue
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    # The `scale` profile's members (scripts/docker-scale.sh) are checked with the plain
    # variant only (the TLS overlay has no certificates for them); they are no founders.
    if "scale" in (svc.get("profiles") or []):
        if sys.argv[2] == "compose":
            print(shlex.join([name] + [f"{k}={v}" for k, v in sorted(env.items())] + ["--"] + cmd[1:]))
        continue
    n += 1
    print(shlex.join([name] + [f"{k}={v}" for k, v in sorted(env.items())] + ["--"] + cmd[1:]))
if n != 3:
    sys.exit(f"expected 3 compose services running `raftkv server`, found {n}")
PYEOF
  local line svc out envs
  while IFS= read -r line; do
    [ -z "$from" ] || line=${line//"$from"/"$to"}
    eval "set -- $line"
    svc=$1; shift
    envs=()
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    out=$(env -i PATH="$PATH" "${envs[@]}" "${ISOLATE[@]}" "$BIN" server --dry-run "$@" 2>&1) || fail "$label service $svc: flags/env rejected by 'raftkv server --dry-run': $out"
    ok "$label service $svc: server flags and env parse"
  done <"$TMP/compose.out"
}

if [ "${#COMPOSE[@]}" -gt 0 ]; then
  RAFTKV_IMAGE=raftkv:validate dry_run_compose compose "" "" -f "$COMPOSE_FILE"
fi

# 6. The TLS variants, with certificates made for the occasion.
note "generating certificates for the TLS variants (scripts/gen-certs.sh)"
scripts/gen-certs.sh --out "$TMP/certs" >"$TMP/gen-certs.out" 2>&1 || fail "scripts/gen-certs.sh: $(cat "$TMP/gen-certs.out")"
ok "scripts/gen-certs.sh made a CA, 3 member certificates and a client certificate"
if [ "${#RENDER[@]}" -gt 0 ]; then
  TLS_RENDER=("${RENDER[@]:0:${#RENDER[@]}-1}" "$K8S_TLS_DIR")
  "${TLS_RENDER[@]}" >"$TMP/rendered-tls.yaml" 2>"$TMP/render.err" || fail "${TLS_RENDER[*]}: $(cat "$TMP/render.err")"
  out=$("${KV[@]}" --strict --quiet "${K8S_VERSION_ARGS[@]}" "$TMP/rendered-tls.yaml" 2>&1) || fail "rendered $K8S_TLS_DIR: $out"
  ok "schema: kustomize output of $K8S_TLS_DIR (${TLS_RENDER[*]})"
  "$PY" - "$TMP/rendered-tls.yaml" >"$TMP/extract-tls.out" 2>&1 <<'PYEOF' || fail "$K8S_TLS_DIR inspection: $(cat "$TMP/extract-tls.out")"
import shlex, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
def one(kind):
    found = [d for d in docs if d["kind"] == kind]
    if len(found) != 1:
        sys.exit(f"expected one {kind}, found {len(found)}")
    return found[0]["spec"]["template"]["spec"]
def secret_mount(spec, container, secret, path):
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    for m in container.get("volumeMounts", []):
        v = vols.get(m["name"], {})
        if m["mountPath"] == path and v.get("secret", {}).get("secretName") == secret:
            return
    sys.exit(f"container {container['name']} does not mount Secret {secret} at {path}")
subst = {"POD_NAME": "raftkv-0", "POD_NAMESPACE": "default"}
def expand(arg):
    for k, v in subst.items():
        arg = arg.replace(f"$({k})", v)
    if "$(" in arg:
        sys.exit(f"unexpanded variable in argument {arg!r}")
    return arg
sts = one("StatefulSet")
(member,) = sts["containers"]
secret_mount(sts, member, "raftkv-tls-members", "/etc/raftkv/tls")
args = [expand(a) for a in member["args"]]
for flag in ("--client-cert-auth", "--peer-client-cert-auth"):
    if flag not in args:
        sys.exit(f"the TLS StatefulSet does not pass {flag}")
if any("http://" in a for a in args if not a.startswith("--listen-metrics-urls")):
    sys.exit("the TLS StatefulSet still has a plain http:// client or peer URL")
for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
    port = member[probe]["httpGet"]["port"]
    if port != "metrics":
        sys.exit(f"{probe} probes port {port!r}: the kubelet has no client certificate for the mTLS client port")
print("SERVER " + shlex.join(args[1:]))
job = one("Job")
(client,) = job["containers"]
secret_mount(job, client, "raftkv-tls-client", "/etc/raftkv/tls")
jargs = [expand(a) for a in client["args"]]
if not any(a.startswith("--cert=") for a in jargs) or "http://" in " ".join(jargs):
    sys.exit(f"the TLS client Job does not dial https with a client certificate: {jargs}")
print("JOB " + shlex.join(jargs))
PYEOF
  ok "$K8S_TLS_DIR: members mount Secret raftkv-tls-members, the Job raftkv-tls-client; https only; probes on the plain metrics port"
  while IFS= read -r line; do
    case $line in
      SERVER\ *)
        line=${line//\/etc\/raftkv\/tls\//$TMP/certs/members/}
        eval "set -- ${line#SERVER }"
        out=$(env -i PATH="$PATH" "${ISOLATE[@]}" "$BIN" server --dry-run "$@" 2>&1) || fail "$K8S_TLS_DIR StatefulSet flags rejected by 'raftkv server --dry-run': $out"
        ok "$K8S_TLS_DIR StatefulSet server flags and certificate files pass (raftkv server --dry-run: $(tail -n1 <<<"$out"))" ;;
      JOB\ *)
        eval "set -- ${line#JOB }"
        out=$("$BIN" "$1" --help 2>&1) || fail "the TLS client Job runs 'raftkv $1', which does not exist: $out"
        ok "$K8S_TLS_DIR client Job subcommand 'raftkv $1' exists" ;;
    esac
  done <"$TMP/extract-tls.out"
else
  note "NOT CHECKED: $K8S_TLS_DIR (neither kubectl nor kustomize is installed to render the overlay)"
fi
if [ "${#COMPOSE[@]}" -gt 0 ]; then
  out=$(RAFTKV_IMAGE=raftkv:validate RAFTKV_TLS_DIR="$TMP/certs" "${COMPOSE[@]}" -p raftkv-validate -f "$COMPOSE_FILE" -f "$COMPOSE_TLS_FILE" config -q 2>&1) ||
    fail "$COMPOSE_TLS_FILE: $out"
  ok "compose: $COMPOSE_FILE with $COMPOSE_TLS_FILE parses"
  RAFTKV_IMAGE=raftkv:validate RAFTKV_TLS_DIR="$TMP/certs" \
    dry_run_compose "compose TLS" /tls/ "$TMP/certs/members/" -f "$COMPOSE_FILE" -f "$COMPOSE_TLS_FILE"
else
  note "NOT CHECKED: $COMPOSE_TLS_FILE (no docker compose / docker-compose installed)"
fi

printf '%d passed, 0 failed\n' "$passed"
