#!/usr/bin/env bash
# A real one-node Corosync + Pacemaker cluster (in its own network and mount
# namespaces; no systemd needed) running ha-node as a promotable clone
# through contrib/pacemaker/ha-node:
#   promoted at start; a commit; forced demote (target-role Unpromoted) ->
#   the node is NONE and the promotion score is set; forced promote -> primary
#   again, the commit still there; kill -9 of ha-node -> Pacemaker notices
#   (monitor), recovers and promotes it again; the time that takes.
# Installs the agent as /usr/lib/ocf/resource.d/confd-ha/ha-node for the run
# (removed afterwards). usage: pcmk-test.sh (root; exit 77 = skipped)
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${BIN:-$ROOT/target/release}
HA_NODE=${HA_NODE:-$BIN/ha-node}
NS=pcmk$$
W=$(mktemp -d /tmp/ha-pcmk-test.XXXXXX)
RA_DIR=/usr/lib/ocf/resource.d/confd-ha
FAILS=0
skip() { echo "#### SKIPPED: Pacemaker cluster test: $* ####"; rm -rf "$W"; exit 77; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
say() { printf '\033[1m== %s\033[0m\n' "$*"; }
[ "$(id -u)" = 0 ] || skip "needs root"
for c in corosync pacemakerd cibadmin crm_resource crm_attribute crm_mon; do
    command -v $c >/dev/null || skip "$c not installed (apt-get install pacemaker corosync)"
done
[ -d /usr/lib/ocf/lib/heartbeat ] || skip "resource-agents not installed"
ip netns add $NS 2>/dev/null || skip "cannot create a network namespace"
[ -e $RA_DIR/ha-node ] && [ ! -e $RA_DIR/.ha-node-test ] && { ip netns del $NS; skip "$RA_DIR/ha-node exists (not ours)"; }

inns() { ip netns exec $NS "$@"; }
cleanup() {
    inns crm_resource -r hn-clone --meta -p target-role -v Stopped >/dev/null 2>&1
    sleep 2
    [ -n "${PCMK:-}" ] && kill "$PCMK" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "${PCMK:-0}" 2>/dev/null || break; sleep 0.2; done
    ip netns pids $NS 2>/dev/null | xargs -r kill -9 2>/dev/null
    sleep 0.3
    ip netns del $NS 2>/dev/null
    rm -rf $RA_DIR "$W"
}
trap cleanup EXIT
mkdir -p $RA_DIR && cp contrib/pacemaker/ha-node $RA_DIR/ha-node && touch $RA_DIR/.ha-node-test
inns ip link set lo up
mkdir -p "$W/cib" "$W/pengine" "$W/corosync" "$W/log" "$W/node"
chown -R hacluster:haclient "$W/cib" "$W/pengine" "$W/log"
echo pcmk-test-token >"$W/token"; chmod 600 "$W/token"
cat >"$W/corosync.conf" <<END
totem {
    version: 2
    cluster_name: hatest
    transport: knet
    crypto_cipher: none
    crypto_hash: none
}
nodelist {
    node {
        ring0_addr: 127.0.0.1
        name: pnode1
        nodeid: 1
    }
}
quorum {
    provider: corosync_votequorum
}
logging {
    to_stderr: yes
    to_syslog: no
}
END
# Pacemaker's state directories are bind-mounted from $W in the daemons'
# own mount namespace (ip netns exec gives each command one).
inns sh -c "mount --bind '$W/corosync' /var/lib/corosync && mount --bind '$W/cib' /var/lib/pacemaker/cib && \
    mount --bind '$W/pengine' /var/lib/pacemaker/pengine && corosync -f -c '$W/corosync.conf' & \
    sleep 2; PCMK_logfile='$W/log/pacemaker.log' exec /usr/sbin/pacemakerd -f" >"$W/daemons.log" 2>&1 &
PCMK=$!

wait_for() { local s=$1; shift; local end=$(( $(date +%s) + s ))
    while [ "$(date +%s)" -le $end ]; do "$@" && return 0; sleep 0.2; done; return 1; }
online() { inns crm_mon -1 2>/dev/null | grep -q "Online: \[ pnode1 \]"; }
hstate() { "$BIN/ha-ctl" -u "$W/node/ipc.sock" stats 2>/dev/null | awk '$1=="state"{print $2}'; }
promoted_in_cluster() { inns crm_mon -1 2>/dev/null | grep -Eq "(Promoted|Masters): \[ pnode1 \]"; }
unpromoted_in_cluster() { inns crm_mon -1 2>/dev/null | grep -Eq "(Unpromoted|Slaves)( \(target-role\))?(: \[ | )pnode1"; }
is() { [ "$(hstate)" = "$1" ]; }

say "Corosync + Pacemaker (one node, namespace $NS)"
wait_for 90 online || { fail "the cluster did not come up"; tail -20 "$W/daemons.log"; exit 1; }
inns crm_attribute -t crm_config -n stonith-enabled -v false
inns crm_attribute -t crm_config -n no-quorum-policy -v ignore
# The node listens on a Unix socket for clients (the agent's own IPC is TCP on loopback).
inns cibadmin -C -o resources -X "
<clone id='hn-clone'>
  <meta_attributes id='hn-clone-meta'>
    <nvpair id='hn-c-1' name='promotable' value='true'/>
    <nvpair id='hn-c-2' name='promoted-max' value='1'/>
    <nvpair id='hn-c-3' name='notify' value='true'/>
  </meta_attributes>
  <primitive id='hn' class='ocf' provider='confd-ha' type='ha-node'>
    <instance_attributes id='hn-ia'>
      <nvpair id='hn-a1' name='binary' value='$HA_NODE'/>
      <nvpair id='hn-a2' name='ctl' value='$BIN/ha-ctl'/>
      <nvpair id='hn-a3' name='data_dir' value='$W/node/data'/>
      <nvpair id='hn-a4' name='ipc_addr' value='127.0.0.1:4565'/>
      <nvpair id='hn-a5' name='ha_addr' value='127.0.0.1:4570'/>
      <nvpair id='hn-a6' name='token_file' value='$W/token'/>
      <nvpair id='hn-a7' name='addresses' value='pnode1=127.0.0.1'/>
      <nvpair id='hn-a8' name='extra_args' value='--ipc-path $W/node/ipc.sock'/>
      <nvpair id='hn-a9' name='tick_timeout' value='300ms'/>
    </instance_attributes>
    <operations>
      <op id='hn-m1' name='monitor' interval='2s' role='Promoted' timeout='20s'/>
      <op id='hn-m2' name='monitor' interval='3s' role='Unpromoted' timeout='20s'/>
    </operations>
  </primitive>
</clone>" || fail "cibadmin could not create the resource"

wait_for 90 is 3 && wait_for 30 promoted_in_cluster && echo "promoted: ha-node is primary (state 3)" || fail "never promoted (state $(hstate))"
# ha-ctl from the host reaches the node through its Unix socket (same filesystem).
"$BIN/ha-ctl" -u "$W/node/ipc.sock" set /test/a one || fail "commit on the promoted node failed"

say "forced demote (target-role Unpromoted)"
inns crm_resource -r hn-clone --meta -p target-role -v Unpromoted >/dev/null
wait_for 60 is 1 && wait_for 30 unpromoted_in_cluster && echo "demoted: ha-node is NONE, Pacemaker shows it Unpromoted" || { fail "demote: state $(hstate)"; inns crm_mon -1; }
score=$(inns crm_attribute -N pnode1 -n master-hn -l reboot -G -q 2>/dev/null)
[ "$score" = 1000 ] && echo "promotion score $score (no lag)" || fail "promotion score '$score', want 1000"

say "forced promote (target-role Promoted)"
inns crm_resource -r hn-clone --meta -p target-role -v Promoted >/dev/null
wait_for 60 is 3 && wait_for 30 promoted_in_cluster && echo "promoted again" || fail "promote: state $(hstate)"
[ "$("$BIN/ha-ctl" -u "$W/node/ipc.sock" get /test/a 2>/dev/null)" = one ] && echo "the commit survived demote/promote" || fail "/test/a lost"

say "kill -9 ha-node: Pacemaker recovers and promotes it again"
pid=$(cat /run/resource-agents/ha-node-hn*.pid 2>/dev/null | head -1)
[ -n "$pid" ] || pid=$(pgrep -f -- "--data-dir $W/node/data" | head -1)
t0=$(date +%s.%N)
kill -9 "$pid"
wait_for 10 sh -c "! kill -0 $pid 2>/dev/null"
wait_for 120 is 3 || fail "not promoted again after kill -9 (state $(hstate))"
t1=$(date +%s.%N)
echo "recovered: kill -9 -> primary again in $(awk -v a="$t1" -v b="$t0" 'BEGIN{printf "%d", (a-b)*1000}') ms (monitor interval 2s)"
[ "$("$BIN/ha-ctl" -u "$W/node/ipc.sock" get /test/a 2>/dev/null)" = one ] || fail "/test/a lost after the restart"
inns crm_mon -1 2>/dev/null | sed -n '/Full List of Resources/,$p;/Failed Resource Actions/,$p' | head -12

if [ $FAILS = 0 ]; then echo "Pacemaker cluster test: all passed"; exit 0; fi
echo "Pacemaker cluster test: $FAILS failure(s)"; tail -30 "$W/daemons.log"; grep -i "ha-node\|hn_" "$W/log/pacemaker.log" | tail -30; exit 1
