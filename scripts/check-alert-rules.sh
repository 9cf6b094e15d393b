#!/usr/bin/env bash
# Check raftkv's alert rules (deploy/monitoring):
#   1. promtool check rules on the rules file;
#   2. promtool test rules: each alert fires on the series meant to fire it, and only there;
#   3. the PrometheusRule manifest's spec holds exactly the rules file's groups, and promtool
#      accepts them too.
# Installs Debian's prometheus package (for promtool) if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-packages.sh promtool:prometheus python3:python3
python3 -c 'import yaml' 2>/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-yaml >/dev/null
DIR=deploy/monitoring
promtool check rules "$DIR/raftkv-alerts.yaml"
(cd "$DIR" && promtool test rules raftkv-alerts.test.yaml)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/raftkv-rules.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
python3 - "$DIR/prometheus-rule.yaml" "$DIR/raftkv-alerts.yaml" "$TMP/from-manifest.yaml" <<'PY'
import sys, yaml
manifest = yaml.safe_load(open(sys.argv[1]))
rules = yaml.safe_load(open(sys.argv[2]))
assert manifest["apiVersion"] == "monitoring.coreos.com/v1", manifest["apiVersion"]
assert manifest["kind"] == "PrometheusRule", manifest["kind"]
if manifest["spec"] != rules:
    sys.exit("prometheus-rule.yaml's spec differs from raftkv-alerts.yaml")
yaml.safe_dump(manifest["spec"], open(sys.argv[3], "w"))
PY
promtool check rules "$TMP/from-manifest.yaml"
echo "alert rules: 3 checks passed"
