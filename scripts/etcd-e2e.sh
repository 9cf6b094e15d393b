#!/usr/bin/env bash
# etcd 3.4's own end-to-end suite (go.etcd.io/etcd/tests/e2e, Debian's golang-etcd-server-dev)
# against raftkv in strict mode: the suite starts `raftkv server` with etcd's exact command line
# in place of bin/etcd and drives it with the real etcdctl 3.4. The runner is
# ../shared/etcd-e2e/run.sh (it installs golang-go, golang-etcd-server-dev, etcd-server and
# etcd-client itself, builds the suite with `go test -c`, runs one test per process).
#
# usage: scripts/etcd-e2e.sh            the tests listed below; fails if any of them fails
#        scripts/etcd-e2e.sh --all      every TestCtlV3 test but Migrate (170; counts for docs/testing.md) and
#                                       every TestV3Curl test (26, the JSON gateway) and the
#                                       two TestV3Metrics tests (those two and
#                                       TestV3CurlCipherSuitesValid fail on the version line),
#                                       fails only if a listed test fails
# env:   RAFTKV_BIN (default target/release/raftkv, built if missing), WORK (scratch dir,
#        default /tmp/raftkv-etcd-e2e), ETCD_E2E_RUNNER (default ../shared/etcd-e2e/run.sh)
# The suite binds loopback ports 20000-20014: run one instance at a time on a machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tests expected to pass: every TestCtlV3 test of an area raftkv implements (KV, compaction,
# endpoints, member list, add, remove and update, move-leader, txn, watch, make-mirror; plain, client
# TLS, peer TLS and auto-TLS variants) that passes in strict mode, and the TestV3Curl tests of
# the JSON gateway. Left out: the `*Timeout` variants, which run with
# --dial-timeout=0, for which the suite ignores every command error (they cannot fail), and the
# tests of areas raftkv does not have yet;
# docs/testing.md has the full counts.
EXPECTED=(
  TestCtlV3Compact TestCtlV3CompactPhysical TestCtlV3EndpointHealth TestCtlV3EndpointStatus TestCtlV3EndpointHashKV
  TestCtlV3Put TestCtlV3PutNoTLS TestCtlV3PutClientTLS TestCtlV3PutClientAutoTLS TestCtlV3PutPeerTLS TestCtlV3PutClientTLSFlagByEnv TestCtlV3PutIgnoreValue
  TestCtlV3Get TestCtlV3GetNoTLS TestCtlV3GetClientTLS TestCtlV3GetClientAutoTLS TestCtlV3GetPeerTLS TestCtlV3GetQuorum TestCtlV3GetFormat TestCtlV3GetRev TestCtlV3GetKeysOnly TestCtlV3GetRevokedCRL
  TestCtlV3Del TestCtlV3DelNoTLS TestCtlV3DelClientTLS TestCtlV3DelPeerTLS
  TestCtlV3MemberList TestCtlV3MemberListNoTLS TestCtlV3MemberListClientTLS TestCtlV3MemberListClientAutoTLS TestCtlV3MemberListPeerTLS
  TestCtlV3MemberRemove TestCtlV3MemberRemoveNoTLS TestCtlV3MemberRemoveClientTLS TestCtlV3MemberRemoveClientAutoTLS TestCtlV3MemberRemovePeerTLS
  TestCtlV3MemberAdd TestCtlV3MemberAddNoTLS TestCtlV3MemberAddClientTLS TestCtlV3MemberAddClientAutoTLS TestCtlV3MemberAddPeerTLS TestCtlV3MemberAddForLearner
  TestCtlV3MemberUpdate TestCtlV3MemberUpdateNoTLS TestCtlV3MemberUpdateClientTLS TestCtlV3MemberUpdateClientAutoTLS TestCtlV3MemberUpdatePeerTLS
  TestCtlV3Version TestCtlV3DialWithHTTPScheme
  TestCtlV3TxnInteractiveSuccess TestCtlV3TxnInteractiveSuccessNoTLS TestCtlV3TxnInteractiveSuccessClientTLS TestCtlV3TxnInteractiveSuccessPeerTLS TestCtlV3TxnInteractiveFail
  TestCtlV3Watch TestCtlV3WatchNoTLS TestCtlV3WatchClientTLS TestCtlV3WatchPeerTLS
  TestCtlV3WatchInteractive TestCtlV3WatchInteractiveNoTLS TestCtlV3WatchInteractiveClientTLS TestCtlV3WatchInteractivePeerTLS
  TestCtlV3MakeMirror TestCtlV3MakeMirrorModifyDestPrefix TestCtlV3MakeMirrorNoDestPrefix
  TestCtlV3Alarm TestCtlV3Defrag TestCtlV3SnapshotCorrupt TestCtlV3Snapshot TestCtlV3SnapshotStatusBeforeRestore
  # Auth (users, roles, permissions, simple and JWT tokens, client-certificate CN).
  # TestCtlV3AuthCertCNWithWithConcurrentOperation passes but needs 40+ s of its own 60 s
  # limit on a loaded 2-core machine (100 bcrypt hashes), so it is not listed.
  TestCtlV3AuthEnable TestCtlV3AuthDisable TestCtlV3AuthWriteKey TestCtlV3AuthRoleUpdate
  TestCtlV3AuthUserDeleteDuringOps TestCtlV3AuthRoleRevokeDuringOps TestCtlV3AuthTxn TestCtlV3AuthTxnJWT
  TestCtlV3AuthPrefixPerm TestCtlV3AuthRevokeWithDelete TestCtlV3AuthInvalidMgmt TestCtlV3AuthFromKeyPerm
  TestCtlV3AuthAndWatch TestCtlV3AuthAndWatchJWT TestCtlV3AuthRoleGet TestCtlV3AuthUserGet TestCtlV3AuthRoleList
  TestCtlV3AuthEndpointHealth TestCtlV3AuthJWTExpire TestCtlV3AuthTestCacheReload
  TestCtlV3AuthCertCN TestCtlV3AuthCertCNAndUsername TestCtlV3AuthCertCNAndUsernameNoPassword
  TestCtlV3AuthLeaseTestKeepAlive TestCtlV3AuthLeaseTestTimeToLiveExpired TestCtlV3AuthLeaseGrantLeases
  TestCtlV3AuthLeaseGrantLeasesJWT TestCtlV3AuthLeaseRevoke TestCtlV3AuthMemberAdd TestCtlV3AuthMemberUpdate TestCtlV3AuthMemberRemove
  TestCtlV3AuthDefrag TestCtlV3AuthSnapshot TestCtlV3AuthSnapshotJWT
  TestCtlV3RoleAdd TestCtlV3RoleAddNoTLS TestCtlV3RoleAddClientTLS TestCtlV3RoleAddPeerTLS TestCtlV3RoleGrant
  TestCtlV3UserAdd TestCtlV3UserAddNoTLS TestCtlV3UserAddClientTLS TestCtlV3UserAddPeerTLS TestCtlV3UserAddClientAutoTLS
  TestCtlV3UserList TestCtlV3UserListNoTLS TestCtlV3UserListClientTLS TestCtlV3UserListPeerTLS TestCtlV3UserListClientAutoTLS
  TestCtlV3UserDelete TestCtlV3UserDeleteNoTLS TestCtlV3UserDeleteClientTLS TestCtlV3UserDeletePeerTLS TestCtlV3UserDeleteClientAutoTLS
  TestCtlV3UserPasswd TestCtlV3UserPasswdNoTLS TestCtlV3UserPasswdClientTLS TestCtlV3UserPasswdPeerTLS TestCtlV3UserPasswdClientAutoTLS
  TestCtlV3PutIgnoreLease TestCtlV3Lock TestCtlV3Elect
  TestCtlV3LeaseGrantTimeToLive TestCtlV3LeaseGrantTimeToLiveNoTLS TestCtlV3LeaseGrantTimeToLiveClientTLS TestCtlV3LeaseGrantTimeToLiveClientAutoTLS TestCtlV3LeaseGrantTimeToLivePeerTLS
  TestCtlV3LeaseGrantLeases TestCtlV3LeaseGrantLeasesNoTLS TestCtlV3LeaseGrantLeasesClientTLS TestCtlV3LeaseGrantLeasesClientAutoTLS TestCtlV3LeaseGrantLeasesPeerTLS
  TestCtlV3LeaseTestTimeToLiveExpired TestCtlV3LeaseTestTimeToLiveExpiredNoTLS TestCtlV3LeaseTestTimeToLiveExpiredClientTLS TestCtlV3LeaseTestTimeToLiveExpiredClientAutoTLS TestCtlV3LeaseTestTimeToLiveExpiredPeerTLS
  TestCtlV3LeaseKeepAlive TestCtlV3LeaseKeepAliveNoTLS TestCtlV3LeaseKeepAliveClientTLS TestCtlV3LeaseKeepAliveClientAutoTLS TestCtlV3LeaseKeepAlivePeerTLS
  TestCtlV3LeaseKeepAliveOnce TestCtlV3LeaseKeepAliveOnceNoTLS TestCtlV3LeaseKeepAliveOnceClientTLS TestCtlV3LeaseKeepAliveOnceClientAutoTLS TestCtlV3LeaseKeepAliveOncePeerTLS
  TestCtlV3LeaseRevoke TestCtlV3LeaseRevokeNoTLS TestCtlV3LeaseRevokeClientTLS TestCtlV3LeaseRevokeClientAutoTLS TestCtlV3LeaseRevokePeerTLS
  TestCtlV3MoveLeaderScenarios
  # The JSON gateway with curl (v3_curl*_test.go; docs/gateway.md). Deliberately left out:
  # TestV3CurlCipherSuitesValid, TestV3MetricsInsecure and TestV3MetricsSecure, which require
  # `etcd_server_version{server_version="3.4.23"}` while raftkv reports 3.4.31
  # (docs/operations.md, "Reported version"); they passed until that change.
  TestV3CurlPutGetNoTLS TestV3CurlPutGetAutoTLS TestV3CurlPutGetAllTLS TestV3CurlPutGetPeerTLS TestV3CurlPutGetClientTLS
  TestV3CurlWatch TestV3CurlTxn TestV3CurlAuth TestV3CurlAuthClientTLSCertAuth TestV3CurlCipherSuitesMismatch
  TestV3CurlLeaseGrantNoTLS TestV3CurlLeaseRevokeNoTLS TestV3CurlLeaseLeasesNoTLS TestV3CurlLeaseKeepAliveNoTLS
  TestV3CurlCampaignNoTLS TestV3CurlProclaimMissiongLeaderKeyNoTLS TestV3CurlResignMissiongLeaderKeyNoTLS
  TestV3Curl_MaxStreams_BelowLimit_NoTLS_Small TestV3Curl_MaxStreams_BelowLimit_NoTLS_Medium
  TestV3Curl_MaxStreams_ReachLimit_NoTLS_Small TestV3Curl_MaxStreams_ReachLimit_NoTLS_Medium
  TestV3Curl_MaxStreams_BelowLimit_TLS_Small TestV3Curl_MaxStreams_BelowLimit_TLS_Medium
  TestV3Curl_MaxStreams_ReachLimit_TLS_Small TestV3Curl_MaxStreams_ReachLimit_TLS_Medium
)

RUNNER=${ETCD_E2E_RUNNER:-../shared/etcd-e2e/run.sh}
[ -f "$RUNNER" ] || { echo "etcd-e2e: no runner at $RUNNER (shared/etcd-e2e)" >&2; exit 2; }
export RAFTKV_BIN=${RAFTKV_BIN:-${CARGO_TARGET_DIR:-target}/release/raftkv}
if [ ! -x "$RAFTKV_BIN" ]; then
  cargo build --release -p raftkv
fi
export WORK=${WORK:-/tmp/raftkv-etcd-e2e}

if [ "${1:-}" = "--all" ]; then
  # Lock and Elect are in the list, so they run here too (the runner's default skips them).
  TAG=-all SKIP="${SKIP-Migrate}" RUN="${RUN:-^Test(CtlV3|V3Curl|V3Metrics)}" bash "$RUNNER" strict
  tsv=$WORK/results/strict-all.tsv
else
  ONLY="${EXPECTED[*]}" TAG= bash "$RUNNER" strict
  tsv=$WORK/results/strict.tsv
fi

pass=0 fail=0
for t in "${EXPECTED[@]}"; do
  if grep -q "^$t	pass	" "$tsv"; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "etcd-e2e: $t did not pass; its log: $WORK/logs/strict${1:+-all}/$t.log" >&2
  fi
done
echo "etcd-e2e: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
