#!/usr/bin/env bash
# A real three-node Corosync + Pacemaker cluster, each node in its own
# network namespace (and, for Pacemaker's and ha-node's state, its own bind
# mounts), running ha-node as a promotable clone through
# contrib/pacemaker/ha-node with --min-secondaries 1. A client commits to the
# primary all the time. The promoted node crashes (kill -9 of everything in its
# namespace: corosync, Pacemaker, ha-node); the check: another node is
# promoted, the third re-joins it, every acknowledged commit is on the new
# primary, and how long that took. (root; exit 77 = skipped)
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${BIN:-$ROOT/target/release}
HA_NODE=${HA_NODE:-$BIN/ha-node}
P=pc$$
NET=10.78.0
W=$(mktemp -d /tmp/ha-pcmk3-test.XXXXXX)
RA_DIR=/usr/lib/ocf/resource.d/confd-ha
TOKEN_MS=${TOKEN_MS:-1000}        # corosync token timeout
FAILS=0
skip() { echo "#### SKIPPED: Pacemaker 3-node test: $* ####"; rm -rf "$W"; exit 77; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
say() { printf '\033[1m== %s\033[0m\n' "$*"; }
now() { date +%s.%N; }
[ "$(id -u)" = 0 ] || skip "needs root"
for c in corosync pacemakerd cibadmin crm_mon; do command -v $c >/dev/null || skip "$c not installed"; done
[ -d /usr/lib/ocf/lib/heartbeat ] || skip "resource-agents not installed"
"$HA_NODE" --help 2>&1 | grep -q -- --min-secondaries || skip "this ha-node has no --min-secondaries"
ip netns add ${P}c 2>/dev/null || skip "cannot create network namespaces"
[ -e $RA_DIR/ha-node ] && [ ! -e $RA_DIR/.ha-node-test ] && { ip netns del ${P}c; skip "$RA_DIR/ha-node exists (not ours)"; }

inns() { local ns=$1; shift; ip netns exec "$P$ns" "$@"; }
cleanup() {
    touch "$W/stop-writer"
    for n in 1 2 3; do ip netns pids ${P}n$n 2>/dev/null | xargs -r kill -9 2>/dev/null; done
    sleep 0.3
    for ns in n1 n2 n3 c; do ip netns del $P$ns 2>/dev/null; done
    [ -n "${KEEP:-}" ] && { rm -rf $RA_DIR; echo "kept $W"; return; }
    rm -rf $RA_DIR "$W"
}
trap cleanup EXIT
mkdir -p $RA_DIR && cp contrib/pacemaker/ha-node $RA_DIR/ha-node && touch $RA_DIR/.ha-node-test
echo pcmk3-test-token >"$W/token"; chmod 600 "$W/token"
mkdir -p "$W/data" "$W/run"
inns c ip link add br0 type bridge; inns c ip link set br0 up; inns c ip addr add $NET.254/24 dev br0
for n in 1 2 3; do
    ip netns add ${P}n$n
    ip link add ${P}v$n type veth peer name eth0 netns ${P}n$n
    ip link set ${P}v$n netns ${P}c
    inns c ip link set ${P}v$n master br0 up
    inns n$n ip link set lo up; inns n$n ip addr add $NET.$n/24 dev eth0; inns n$n ip link set eth0 up
done
cat >"$W/corosync.conf" <<END
totem {
    version: 2
    cluster_name: hatest3
    transport: knet
    crypto_cipher: none
    crypto_hash: none
    token: $TOKEN_MS
}
nodelist {
    node {
        ring0_addr: $NET.1
        name: pnode1
        nodeid: 1
    }
    node {
        ring0_addr: $NET.2
        name: pnode2
        nodeid: 2
    }
    node {
        ring0_addr: $NET.3
        name: pnode3
        nodeid: 3
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
for n in 1 2 3; do
    d=$W/n$n; mkdir -p "$d/cib" "$d/pengine" "$d/corosync" "$d/data" "$d/run" "$d/slash-run"
    chown hacluster:haclient "$d/cib" "$d/pengine"
    # Each node's Pacemaker and ha-node state lives in $W/nN, bind-mounted in
    # the node's own mount namespace (ip netns exec gives each command one);
    # /run too (corosync's lock file is /run/corosync.pid).
    inns n$n sh -c "mount --bind '$d/corosync' /var/lib/corosync && mount --bind '$d/cib' /var/lib/pacemaker/cib && \
        mount --bind '$d/pengine' /var/lib/pacemaker/pengine && mount --bind '$d/data' '$W/data' && \
        mount --bind '$d/run' '$W/run' && mount --bind '$d/slash-run' /run && { corosync -f -c '$W/corosync.conf' & sleep 2; \
        PCMK_logfile='$d/pacemaker.log' exec /usr/sbin/pacemakerd -f; }" >"$d/daemons.log" 2>&1 &
done

wait_for() { local s=$1; shift; local end=$(( $(date +%s) + s ))
    while [ "$(date +%s)" -le $end ]; do "$@" && return 0; sleep 0.2; done; return 1; }
online3() { inns n1 crm_mon -1 2>/dev/null | grep -q "Online: \[ pnode1 pnode2 pnode3 \]"; }
st() { inns c "$BIN/ha-ctl" -a $NET.$1 -p 4565 stats 2>/dev/null | awk '$1=="state"{print $2}'; }
seq_of() { inns c "$BIN/ha-ctl" -a $NET.$1 -p 4565 stats 2>/dev/null | awk '$1=="seq"{print $2}'; }
primary_id() { local n c=0 id=""; for n in "$@"; do [ "$(st $n)" = 3 ] && { c=$((c + 1)); id=$n; }; done; [ $c = 1 ] && echo $id; }
has_primary() { [ -n "$(primary_id 1 2 3)" ]; }
all_joined() { local p; p=$(primary_id 1 2 3); [ -n "$p" ] || return 1
    for n in 1 2 3; do [ $n = $p ] || [ "$(st $n)" = 2 ] || return 1; done; }

say "Corosync + Pacemaker, 3 nodes in network namespaces ($NET.1-3), corosync token ${TOKEN_MS} ms"
wait_for 120 online3 || { fail "the cluster did not come up"; inns n1 crm_mon -1; exit 1; }
inns n1 crm_attribute -t crm_config -n stonith-enabled -v false
inns n1 cibadmin -C -o resources -X "
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
      <nvpair id='hn-a3' name='data_dir' value='$W/data'/>
      <nvpair id='hn-a4' name='ipc_addr' value='0.0.0.0:4565'/>
      <nvpair id='hn-a5' name='ha_addr' value='0.0.0.0:4570'/>
      <nvpair id='hn-a6' name='token_file' value='$W/token'/>
      <nvpair id='hn-a7' name='addresses' value='pnode1=$NET.1 pnode2=$NET.2 pnode3=$NET.3'/>
      <nvpair id='hn-a8' name='pidfile' value='$W/run/hn.pid'/>
      <nvpair id='hn-a9' name='tick_timeout' value='300ms'/>
      <nvpair id='hn-a10' name='min_secondaries' value='1'/>
    </instance_attributes>
    <operations>
      <op id='hn-m1' name='monitor' interval='2s' role='Promoted' timeout='20s'/>
      <op id='hn-m2' name='monitor' interval='3s' role='Unpromoted' timeout='20s'/>
    </operations>
  </primitive>
</clone>" || fail "cibadmin could not create the resource"
wait_for 120 all_joined || { fail "no primary with two secondaries"; for n in 1 2 3; do echo "n$n state $(st $n)"; done; inns n1 crm_mon -1; }
M=$(primary_id 1 2 3)
echo "pnode$M promoted; the two others are its secondaries"

# The writer: commits to whichever node says it is primary.
writer() {
    local i=0 p
    while [ ! -e "$W/stop-writer" ]; do
        i=$((i + 1)); p=$(primary_id 1 2 3)
        if [ -n "$p" ] && inns c "$BIN/ha-ctl" -a $NET.$p -p 4565 set "/test/k$i" "$i" >/dev/null 2>&1; then
            echo "$i $(now) ok $p"
        else echo "$i $(now) err ${p:--}"; sleep 0.05; fi
    done >"$W/writes"
}
score_of() { inns n1 crm_attribute -N pnode$1 -n master-hn -l reboot -G -q 2>/dev/null; }
scores_set() { for n in 1 2 3; do
    if [ $n = $M ]; then [ "$(score_of $n)" = 1001 ] || return 1; else [ "$(score_of $n)" = 1000 ] || return 1; fi; done; }
wait_for 30 scores_set && echo "promotion scores: pnode1 $(score_of 1), pnode2 $(score_of 2), pnode3 $(score_of 3) (promoted 1001; in-sync secondaries 1000)" \
    || fail "promotion scores $(score_of 1) $(score_of 2) $(score_of 3)"
writer & wpid=$!
wait_for 30 grep -q ok "$W/writes" || fail "no commit succeeded"
sleep 2
say "crash pnode$M (kill -9 corosync, Pacemaker and ha-node)"
t0=$(now)
ip netns pids ${P}n$M | xargs -r kill -9
others=""; for n in 1 2 3; do [ $n = $M ] || others="$others $n"; done
new_primary() { [ -n "$(primary_id $others)" ]; }
wait_for 120 new_primary || fail "no other node promoted"
N=$(primary_id $others)
O=""; for n in $others; do [ $n = "$N" ] || O=$n; done
rejoined() { [ "$(st $O)" = 2 ]; }
wait_for 60 rejoined || fail "pnode$O did not re-join pnode$N"
ok_after() { awk -v t="$t0" -v p="$N" '$2>t && $3=="ok" && $4==p {f=1} END{exit !f}' "$W/writes"; }
wait_for 60 ok_after
touch "$W/stop-writer"; wait $wpid
after=$(awk -v t="$t0" -v p="$N" '$2>t && $3=="ok" && $4==p {print $2; exit}' "$W/writes")
[ -n "$after" ] && echo "failover (node crash, token ${TOKEN_MS} ms): $(awk -v a="$after" -v b="$t0" 'BEGIN{printf "%d", (a-b)*1000}') ms from the crash to the first commit acknowledged by the new primary pnode$N; pnode$O re-joined it" \
    || fail "no commit on pnode$N after the failover"
acked=$(awk '$3=="ok"{print $1}' "$W/writes"); lost=0
for i in $acked; do
    [ "$(inns c "$BIN/ha-ctl" -a $NET.$N -p 4565 get "/test/k$i" 2>/dev/null)" = "$i" ] || lost=$((lost + 1))
done
[ $lost = 0 ] && echo "no acknowledged commit lost: all $(echo $acked | wc -w) on pnode$N (seq $(seq_of $N))" || fail "$lost acknowledged commits lost"
if [ $FAILS = 0 ]; then echo "Pacemaker 3-node test: all passed"; exit 0; fi
echo "Pacemaker 3-node test: $FAILS failure(s)"
for n in 1 2 3; do echo "--- pnode$n"; grep -i "ha-node(hn)" "$W/n$n/pacemaker.log" | tail -12; done
exit 1
