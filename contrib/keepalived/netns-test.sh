#!/usr/bin/env bash
# Three ha-nodes, each in its own network namespace with a real keepalived
# (VRRP, unicast peers, nopreempt, a track_script over ha-ctl) and
# ha-keepalived (the notify-FIFO handler over libconfd_ha). A client in a
# fourth namespace commits through the virtual IP all the time.
#
# Scenarios (each from a fresh cluster):
#   keepalived  kill -9 the master's keepalived
#   ha-node     kill -9 the master's ha-node
# Each checks: the backup with the highest priority becomes primary, the
# other backup re-joins it, every acknowledged commit is on the new primary,
# and prints the failover time (kill -> first commit acknowledged through
# the VIP again).
#
# usage: netns-test.sh [--demo] [SCENARIO...]     (root; exit 77 = skipped)
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${BIN:-$ROOT/target/release}
HA_NODE=${HA_NODE:-$BIN/ha-node}
HK=${HK:-$ROOT/build/contrib/ha-keepalived}
ADVERT=${ADVERT_INT:-1}          # VRRP advert interval, s
TICK=${TICK:-300ms}               # ha-node tick interval
DEMO=0
if [ "${1:-}" = --demo ]; then DEMO=1; shift; fi
SCENARIOS=${*:-keepalived ha-node}
P=hkt$$                           # namespace / interface prefix (unique per run)
NET=10.77.0
VIP=$NET.100
IPC_PORT=4565
HA_PORT=4570
export HA_CTL_TOKEN=keepalived-test-token

skip() { echo "#### SKIPPED: keepalived netns test: $* ####"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
command -v keepalived >/dev/null || skip "keepalived not installed (apt-get install keepalived)"
command -v ip >/dev/null || skip "ip (iproute2) not installed"
ip netns add "${P}probe" 2>/dev/null || skip "cannot create network namespaces here"
ip netns del "${P}probe"
[ -x "$HA_NODE" ] && [ -x "$BIN/ha-ctl" ] && [ -x "$HK" ] || { echo "build first (make build/contrib/ha-keepalived)"; exit 1; }

MINSEC=""
if "$HA_NODE" --help 2>&1 | grep -q -- --min-secondaries; then MINSEC="--min-secondaries 1"; fi

WORK=$(mktemp -d /tmp/ha-keepalived-test.XXXXXX)
FAILS=0
say() { printf '\033[1m== %s\033[0m\n' "$*"; }
note() { [ $DEMO = 1 ] && printf '   %s\n' "$*"; return 0; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
now() { date +%s.%N; }
inns() { local ns=$1; shift; ip netns exec "$P$ns" "$@"; }
ctl() { local n=$1; shift; inns c "$BIN/ha-ctl" -a "$NET.$n" -p $IPC_PORT "$@"; }
# The node's HA state from its counters (ha-ctl stats: state 1 none, 2 secondary, 3 primary).
state() { inns "n$1" "$BIN/ha-ctl" -a 127.0.0.1 -p $IPC_PORT stats 2>/dev/null |
    awk '$1=="state"{print ($2==1?"none":$2==2?"secondary":$2==3?"primary":"relay")}'; }

declare -A PIDS
net_up() {
    ip netns add "${P}c"
    inns c ip link add br0 type bridge
    inns c ip link set br0 up
    inns c ip addr add $NET.254/24 dev br0
    inns c ip link set lo up
    for n in 1 2 3; do
        ip netns add "${P}n$n"
        ip link add "${P}v$n" type veth peer name eth0 netns "${P}n$n"
        ip link set "${P}v$n" netns "${P}c"
        inns c ip link set "${P}v$n" master br0 up
        inns "n$n" ip link set lo up
        inns "n$n" ip addr add "$NET.$n/24" dev eth0
        inns "n$n" ip link set eth0 up
    done
}
net_down() {
    for ns in n1 n2 n3 c; do ip netns pids "$P$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null; done
    sleep 0.2
    for ns in n1 n2 n3 c; do ip netns del "$P$ns" 2>/dev/null; done
}

start_node() {
    local n=$1 d=$WORK/n$1
    mkdir -p "$d"
    ip netns exec "${P}n$n" "$HA_NODE" --ipc-addr 0.0.0.0:$IPC_PORT --ha-addr "$NET.$n:$HA_PORT" \
        --data-dir "$d/data" --tick-timeout "$TICK" $MINSEC >>"$d/ha-node.log" 2>&1 &
    PIDS[node$n]=$!; disown $!
    for _ in $(seq 1 200); do
        inns "n$n" "$BIN/ha-ctl" -a 127.0.0.1 -p $IPC_PORT txid >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    fail "ha-node n$n did not start"; cat "$d/ha-node.log"
}

start_handler() {
    local n=$1 d=$WORK/n$1 peers=""
    for m in 1 2 3; do [ "$m" = "$n" ] || peers="$peers --peer n$m=$NET.$m:$IPC_PORT"; done
    ip netns exec "${P}n$n" "$HK" --fifo "$d/fifo" --id "n$n" --ipc 127.0.0.1:$IPC_PORT --instance VI_HA \
        --token-file "$WORK/token" --keepalived-pidfile "$d/keepalived.pid" $peers >>"$d/handler.log" 2>&1 &
    PIDS[hk$n]=$!; disown $!
}

start_keepalived() {
    local n=$1 d=$WORK/n$1 prio peers=""
    prio=$((120 - 10 * n))              # n1 110, n2 100, n3 90
    for m in 1 2 3; do [ "$m" = "$n" ] || peers="$peers\\n        $NET.$m"; done
    sed -e "s|@ID@|n$n|g" -e "s|@FIFO@|$d/fifo|g" -e "s|@IFACE@|eth0|g" \
        -e "s|@PRIO@|$prio|g" -e "s|@SRC@|$NET.$n|g" -e "s|@PEERS@|$peers|g" \
        -e "s|@VIP@|$VIP/24|g" -e "s|@ADVERT@|$ADVERT|g" \
        -e "s|@CHECK@|$BIN/ha-ctl -a 127.0.0.1 -p $IPC_PORT txid|g" \
        "$ROOT/contrib/keepalived/keepalived.conf.in" >"$d/keepalived.conf"
    ip netns exec "${P}n$n" keepalived -n -l -D -P -f "$d/keepalived.conf" -p "$d/keepalived.pid" \
        -r "$d/vrrp.pid" >>"$d/keepalived.log" 2>&1 &
    PIDS[ka$n]=$!; disown $!
}

# Polls until the condition command succeeds (deadline $1 s).
wait_for() {
    local secs=$1; shift
    local end=$(( $(date +%s) + secs ))
    while [ "$(date +%s)" -le $end ]; do "$@" && return 0; sleep 0.1; done
    return 1
}
is_state() { [ "$(state "$1")" = "$2" ]; }
vip_on() { inns "n$1" ip -4 addr show dev eth0 | grep -q " $VIP/"; }
secondary_of() { inns "n$1" "$BIN/ha-ctl" -a 127.0.0.1 -p $IPC_PORT stats >/dev/null 2>&1 && \
    [ "$(tail -n 200 "$WORK/n$1/handler.log" | grep -o "node is a secondary of n[0-9]*" | tail -1)" = "node is a secondary of n$2" ] && is_state "$1" secondary; }

one_primary_id() { local n c=0 id=""; for n in 1 2 3; do is_state $n primary && { c=$((c + 1)); id=$n; }; done; [ $c = 1 ] && echo $id; }
one_primary() { [ -n "$(one_primary_id)" ]; }
ok_after() { awk -v t="$1" '$3=="ok" && $2>t {f=1} END{exit !f}' "$WORK/writes"; }

# The writer: commits /test/kI = I through the VIP in a loop; logs
# "I TIME ok|err" for each attempt.
writer() {
    local i=0
    while [ ! -e "$WORK/stop-writer" ]; do
        i=$((i + 1))
        if inns c "$BIN/ha-ctl" -a $VIP -p $IPC_PORT set "/test/k$i" "$i" >/dev/null 2>&1; then
            echo "$i $(now) ok"
        else
            echo "$i $(now) err"; sleep 0.02
        fi
    done >"$WORK/writes"
}

scenario_run() {
    local what=$1
    say "scenario: kill -9 the master's $what"
    rm -f "$WORK/stop-writer"
    echo "$HA_CTL_TOKEN" >"$WORK/token"; chmod 600 "$WORK/token"
    net_up
    for n in 1 2 3; do start_node $n; done
    for n in 1 2 3; do start_handler $n; done
    for n in 1 2 3; do start_keepalived $n; done
    note "3 netns, ha-node + ha-keepalived + keepalived in each (priorities n1 110, n2 100, n3 90; ${MINSEC:-sync mode, no --min-secondaries})"
    # Whoever keepalived elects first is the master M; B1 is the backup with
    # the higher priority (it must win the failover), B2 the other one.
    local M="" B1 B2 t0 after ms
    wait_for 30 one_primary || { fail "no node became primary"; return; }
    M=$(one_primary_id)
    B1=""; for n in 1 2 3; do [ "$n" = "$M" ] && continue; if [ -z "$B1" ]; then B1=$n; else B2=$n; fi; done
    wait_for 30 secondary_of "$B1" "$M" || fail "n$B1 never joined n$M"
    wait_for 30 secondary_of "$B2" "$M" || fail "n$B2 never joined n$M"
    wait_for 10 vip_on "$M" || fail "VIP not on n$M"
    note "n$M primary (VIP $VIP), n$B1 and n$B2 its secondaries; n$B1 has the higher priority"
    writer & local wpid=$!
    wait_for 30 grep -q ok "$WORK/writes" || fail "no commit through the VIP succeeded"
    sleep 1
    if [ "$what" = keepalived ]; then
        # A reload closes and reopens the FIFO: the master must keep its role.
        kill -HUP "$(cat "$WORK/n$M/keepalived.pid")"
        wait_for 10 grep -q "a reload" "$WORK/n$M/handler.log" || fail "ha-keepalived on n$M did not see the reload"
        is_state "$M" primary && ! grep -q "confd_ha_benone" "$WORK/n$M/handler.log" && note "keepalived reloaded on n$M (SIGHUP): n$M stays primary" \
            || fail "n$M lost its role on a keepalived reload"
    fi
    t0=$(now)
    if [ "$what" = keepalived ]; then
        kill -9 "$(cat "$WORK/n$M/vrrp.pid")" "$(cat "$WORK/n$M/keepalived.pid")"
    else
        kill -9 "${PIDS[node$M]}"
    fi
    note "t=0 kill -9 n$M's $what"
    wait_for 60 is_state "$B1" primary || fail "n$B1 never became primary"
    note "n$B1 is primary"
    wait_for 60 secondary_of "$B2" "$B1" || fail "n$B2 never re-joined n$B1"
    note "n$B2 re-joined n$B1"
    wait_for 60 ok_after "$t0"
    sleep 1
    touch "$WORK/stop-writer"; wait $wpid
    # The failover time: from the kill to the first commit acknowledged
    # through the VIP, after the outage, that the new primary has (commits the
    # old master acknowledged before it stepped down count only for the loss
    # check below).
    after=""
    local outage
    outage=$(awk -v t="$t0" '$2>t && $3=="err" {print $2; exit}' "$WORK/writes")
    while read -r i t r; do
        [ "$r" = ok ] || continue
        [ "$(ctl "$B1" get "/test/k$i" 2>/dev/null)" = "$i" ] && { after=$t; break; }
    done < <(awk -v t="${outage:-$t0}" '$2>t' "$WORK/writes")
    if [ -z "$after" ]; then fail "no commit succeeded on n$B1 after the failover"; else
        ms=$(awk -v a="$after" -v b="$t0" 'BEGIN{printf "%d", (a-b)*1000}')
        local oms
        oms=$(awk -v a="$after" -v b="${outage:-$after}" 'BEGIN{printf "%d", (a-b)*1000}')
        echo "failover ($what killed, advert_int ${ADVERT}s): ${ms} ms from kill -9 to the first commit acknowledged by the new primary through the VIP (writes refused for ${oms} ms)"
        echo "$what $ms $oms" >>"${FAILOVER_LOG:-/dev/null}"
    fi
    # No acknowledged commit lost: every acknowledged key is on the new primary.
    local acked lost=0 nacked v
    acked=$(awk '$3=="ok"{print $1}' "$WORK/writes")
    nacked=$(echo "$acked" | wc -w)
    for i in $acked; do
        v=$(ctl "$B1" get "/test/k$i" 2>/dev/null)
        [ "$v" = "$i" ] || { lost=$((lost + 1)); [ $lost -le 5 ] && echo "  lost: /test/k$i (got '$v')"; }
    done
    if [ $lost = 0 ]; then echo "no acknowledged commit lost: all $nacked on the new primary n$B1"
    elif [ -z "$MINSEC" ]; then
        echo "#### WARNING: $lost of $nacked acknowledged commits lost: this ha-node has no --min-secondaries, so"
        echo "#### the old master (NONE, or primary alone) still accepts writes through the VIP it kept ####"
        [ "$what" = keepalived ] || fail "$lost of $nacked acknowledged commits lost"
    else fail "$lost of $nacked acknowledged commits lost"; fi
    # The old master comes back as a backup and joins n$B1 (nopreempt).
    if [ "$what" = keepalived ]; then
        wait_for 20 is_state "$M" none || fail "n$M not NONE after its keepalived died"
        start_keepalived "$M"
    else
        start_node "$M"
    fi
    wait_for 60 secondary_of "$M" "$B1" || fail "n$M did not re-join n$B1 as a secondary"
    wait_for 5 vip_on "$B1" || fail "VIP not on n$B1"
    note "n$M back as a secondary of n$B1; n$B1 keeps the VIP (nopreempt)"
    if [ $DEMO = 1 ]; then
        say "what the handlers logged"
        for n in 1 2 3; do sed "s/^/   n$n: /" "$WORK/n$n/handler.log"; done
    fi
}

scenario() {
    local before=$FAILS
    scenario_run "$1"
    touch "$WORK/stop-writer"
    for n in 1 2 3; do [ -n "${PIDS[ka$n]:-}" ] && kill "${PIDS[ka$n]}" 2>/dev/null; done
    sleep 0.5
    net_down
    wait 2>/dev/null
    if [ $FAILS != $before ]; then
        for n in 1 2 3; do
            echo "--- n$n handler"; tail -20 "$WORK/n$n/handler.log"
            echo "--- n$n keepalived"; tail -15 "$WORK/n$n/keepalived.log"
            echo "--- n$n ha-node"; tail -10 "$WORK/n$n/ha-node.log"
        done
    fi
    rm -rf "$WORK"; mkdir -p "$WORK"
}

trap 'touch "$WORK/stop-writer"; net_down; rm -rf "$WORK" "$WORK".*' EXIT
for s in $SCENARIOS; do scenario "$s"; done
if [ $FAILS = 0 ]; then echo "keepalived netns test: all passed"; exit 0; fi
echo "keepalived netns test: $FAILS failure(s)"; exit 1
