#!/usr/bin/env bash
# ocf-tester (Debian's resource-agents) on contrib/pacemaker/ha-node: every
# action against a real ha-node, outside a cluster. (root; exit 77 = skipped)
set -u
cd "$(dirname "$0")/../.."
BIN=${BIN:-$PWD/target/release}
command -v ocf-tester >/dev/null || { echo "#### SKIPPED: ocf-tester not installed (apt-get install resource-agents) ####"; exit 77; }
command -v xmllint >/dev/null || { echo "#### SKIPPED: xmllint not installed (apt-get install libxml2-utils) ####"; exit 77; }
[ "$(id -u)" = 0 ] || { echo "#### SKIPPED: ocf-tester needs root ####"; exit 77; }
D=$(mktemp -d /tmp/ha-ocf-test.XXXXXX)
trap '[ -f "$D/pid" ] && kill "$(cat "$D/pid")" 2>/dev/null; rm -rf "$D"' EXIT
echo ocf-test-token >"$D/token"; chmod 600 "$D/token"
# A port of its own for this run.
port=$((20000 + $$ % 20000))
out=$(ocf-tester -n hn \
    -o binary="${HA_NODE:-$BIN/ha-node}" -o ctl="$BIN/ha-ctl" -o data_dir="$D/data" \
    -o ipc_addr=127.0.0.1:$port -o ha_addr=127.0.0.1:$((port + 1)) -o token_file="$D/token" \
    -o addresses="$(uname -n)=127.0.0.1" -o pidfile="$D/pid" "$PWD/contrib/pacemaker/ha-node" 2>&1)
rc=$?
echo "$out"
if [ $rc = 0 ] && echo "$out" | grep -q "passed all tests"; then echo "ocf-tester: passed"; exit 0; fi
echo "ocf-tester: FAILED"; exit 1
