#!/usr/bin/env bash
# make demo-raft: HA Raft mode (issue 13) with three ha-node processes: create-cluster,
# commits, kill -9 of the leader and a new leader within the election timeout, commits go
# on, the old leader restarts and catches up, a handover back, and a minority partition
# that refuses writes. Each step prints what the library said (ha-ctl status: the node
# state of the data API, as confd_ha_get_status sees it; the Python availability-group
# API's get_node_state()), what Raft said (ha-ctl raft status) and the events that arrived
# since the step before (HA events from `ha-ctl watch`, NODE_ROLE_CHANGED from the Python
# availability-group API, per node).
#
# Network: as root (and with iproute2), each node runs in its own network namespace on a
# bridge, and the partition cuts the leader off from the other two nodes (its clients
# still reach it); otherwise the nodes run on 127.0.0.1-3 and the "partition" is a SIGSTOP
# of the other two nodes. The demo says which. DEMO_RAFT_NET=loopback forces loopback.
#
# Knobs: DEMO_RAFT_ELECTION_MS (default 1000), DEMO_RAFT_HEARTBEAT_MS (default 100),
#        DEMO_RAFT_KEEP=1 (keep the work directory: configs, logs, event files).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${BIN:-$ROOT/target/release}
NODE=$BIN/ha-node
CTL=$BIN/ha-ctl
ET_MS=${DEMO_RAFT_ELECTION_MS:-1000}
HB_MS=${DEMO_RAFT_HEARTBEAT_MS:-100}
IPC_PORT=14565
RAFT_PORT=14570
WORK=$(mktemp -d /tmp/ha-demo-raft.XXXXXX)
export CONFD_HA_LIBRARY=$BIN/libconfd_ha.so LIBCONFD_HA=$BIN/libconfd_ha.so PYTHONPATH=$ROOT/python
declare -A PID WATCH AGW OFF
NS_TAG="hdr$$"
NOWHERE_MAC=02:00:5e:00:de:ad

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# ---- the network: namespaces on a bridge (root), else loopback ----
NETNS=0
if [ "$(id -u)" = 0 ] && [ "${DEMO_RAFT_NET:-}" != loopback ] && command -v ip >/dev/null; then
    NETNS=1
    SUBNET="10.251.$(( $$ % 250 ))"
    ip link add "${NS_TAG}b" type bridge 2>/dev/null && ip link set "${NS_TAG}b" up \
        && ip addr add "$SUBNET.1/24" dev "${NS_TAG}b" || NETNS=0
    if [ $NETNS = 1 ]; then
        for n in 1 2 3; do
            ip netns add "${NS_TAG}n$n" \
                && ip link add "${NS_TAG}v$n" type veth peer name eth0 netns "${NS_TAG}n$n" \
                && ip link set "${NS_TAG}v$n" master "${NS_TAG}b" up \
                && ip netns exec "${NS_TAG}n$n" ip addr add "$SUBNET.$(( n + 1 ))/24" dev eth0 \
                && ip netns exec "${NS_TAG}n$n" ip link set eth0 up \
                && ip netns exec "${NS_TAG}n$n" ip link set lo up || NETNS=0
        done
    fi
    # The bridge must carry traffic between namespaces (a host firewall may filter it).
    if [ $NETNS = 1 ] && ! ip netns exec "${NS_TAG}n1" timeout 3 bash -c "exec 3<>/dev/tcp/$SUBNET.3/9" 2>&1 | grep -q refused; then
        NETNS=0
    fi
fi
ip_of() { if [ $NETNS = 1 ]; then echo "$SUBNET.$(( $1 + 1 ))"; else echo "127.0.0.$1"; fi; }
# Replaces the (sub)shell by the command, in node N's namespace: `( exec_in N CMD ) &` makes
# $! the command's own pid (ip netns exec execs too).
exec_in() { local n=$1; shift; if [ $NETNS = 1 ]; then exec ip netns exec "${NS_TAG}n$n" "$@"; else exec "$@"; fi; }
# Stops a background loop and the command it is running (by pid, never by name).
stop_pid() { local p=$1 kids; kids=$(pgrep -P "$p"); kill "$p" 2>/dev/null; [ -n "$kids" ] && kill $kids 2>/dev/null; return 0; }
addr_of() { echo "$(ip_of "$1"):$RAFT_PORT"; }
# A cannot send to B (a neighbour entry pinned to a MAC address nobody has).
block() { ip netns exec "${NS_TAG}n$1" ip neigh replace "$(ip_of "$2")" lladdr $NOWHERE_MAC dev eth0 nud permanent; }
unblock() { ip netns exec "${NS_TAG}n$1" ip neigh del "$(ip_of "$2")" dev eth0 2>/dev/null || true; }

cleanup() {
    local p
    for p in "${AGW[@]}" "${WATCH[@]}"; do stop_pid "$p"; done
    for p in "${PID[@]}"; do kill -CONT "$p" 2>/dev/null; kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [ $NETNS = 1 ]; then
        for n in 1 2 3; do ip netns del "${NS_TAG}n$n" 2>/dev/null; done
        ip link del "${NS_TAG}b" 2>/dev/null
    fi
    if [ "${DEMO_RAFT_KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -x "$NODE" ] && [ -x "$CTL" ] || { echo "build first: cargo build --release --workspace"; exit 1; }

# ---- talking to the nodes ----
# ha-ctl against node N, printing the command and what came back.
ctl() {
    local n=$1; shift
    printf '  $ ha-ctl -a %s -p %s %s\n' "$(ip_of "$n")" "$IPC_PORT" "$*"
    local out rc
    out=$(timeout 20 "$CTL" -a "$(ip_of "$n")" -p "$IPC_PORT" "$@" 2>&1); rc=$?
    if [ -n "$out" ]; then printf '%s\n' "$out" | sed 's/^/    /'; fi
    printf '    -> %s\n' "$([ $rc = 0 ] && echo CONFD_OK || echo "CONFD_ERR (exit $rc)")"
    return $rc
}
q() { local n=$1; shift; timeout 3 "$CTL" -a "$(ip_of "$n")" -p "$IPC_PORT" "$@" 2>/dev/null; }
# One field of node N's raft status (empty if it does not answer).
rfield() {
    q "$1" raft status --json | python3 -c 'import json,sys
try: v=json.load(sys.stdin).get(sys.argv[1])
except Exception: v=""
print("" if v is None else v)' "$2"
}
# The node number whose address is $1.
node_of() { local n; for n in 1 2 3; do [ "$(addr_of $n)" = "$1" ] && echo $n; done; }
# Waits (polling every 20 ms, at most $3 ms) until node $1 says role $2; prints the elapsed ms.
wait_role() {
    local n=$1 want=$2 lim=${3:-20000} t0; t0=$(now_ms)
    while [ $(( $(now_ms) - t0 )) -lt "$lim" ]; do
        [ "$(rfield "$n" role)" = "$want" ] && { echo $(( $(now_ms) - t0 )); return 0; }
        sleep 0.02
    done
    echo "never"; return 1
}
# Waits (at most $2 ms) until node $1 answers and no longer says leader; prints the elapsed ms.
wait_not_leader() {
    local n=$1 lim=$2 t0 r; t0=$(now_ms)
    while [ $(( $(now_ms) - t0 )) -lt "$lim" ]; do
        r=$(rfield "$n" role)
        [ -n "$r" ] && [ "$r" != leader ] && { echo $(( $(now_ms) - t0 )); return 0; }
        sleep 0.02
    done
    echo "never (still leader after $lim)"; return 1
}
# Waits until one of the nodes in $@ says leader; prints "NODE MS" (ms since $T0).
wait_any_leader() {
    local n
    while [ $(( $(now_ms) - T0 )) -lt 30000 ]; do
        for n in "$@"; do
            [ "$(rfield "$n" role)" = leader ] && { echo "$n $(( $(now_ms) - T0 ))"; return 0; }
        done
        sleep 0.02
    done
    echo "none never"; return 1
}

# What the library, Raft and the Python availability-group API say about node N.
show() {
    local n=$1
    echo "  n$n ($(addr_of "$n")):"
    q "$n" raft status --json | python3 -c 'import json,sys
try: s=json.load(sys.stdin)
except Exception: print("    raft status: no answer"); sys.exit()
f=", ".join("%s idx %s lag %s/%sms %s" % (x["node"], x["index"], x["lag_entries"], x["lag_ms"], x["state"]) for x in s.get("followers") or [])
print("    raft status: role %s, term %s, leader %s, applied %s/%s%s" % (s["role"], s["term"], s["leader"], s["applied_index"], s["current_index"], ("; followers: " + f) if f else ""))'
    local st; st=$(q "$n" status)
    if [ -n "$st" ]; then printf '%s\n' "$st" | head -4 | sed 's/^/    library (ha-ctl status): /'; else echo "    library: no answer"; fi
    python3 - "$(ip_of "$n")" "$IPC_PORT" <<'EOF' 2>/dev/null || echo "    python get_node_state(): no answer"
import sys
from confd_ha import availability_group as ag
s = ag.get_node_state(address=sys.argv[1], port=int(sys.argv[2]))
p = s.primary.address if s.primary else None
hb = s.last_heartbeat_time.strftime("%H:%M:%S.%f")[:-3] if s.last_heartbeat_time else None
print("    python get_node_state(): node_role %s, primary %s, last heartbeat %s" % (s.node_role.value, p, hb))
EOF
}

# Background: HA events (ha-ctl watch) and NODE_ROLE_CHANGED (Python) of node N, to files.
watch_node() {
    local n=$1
    ( while :; do "$CTL" -a "$(ip_of "$n")" -p "$IPC_PORT" watch 2>/dev/null; sleep 0.1; done ) \
        >>"$WORK/n$n.ha-events" &
    WATCH[$n]=$!
    python3 -u - "$(ip_of "$n")" "$IPC_PORT" >>"$WORK/n$n.ag-events" 2>/dev/null <<'EOF' &
import sys, time, datetime
from confd_ha import availability_group as ag
def cb(ev, **kw):
    t = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
    prev = ev.previous.value if ev.previous else None
    print("%s NODE_ROLE_CHANGED %s -> %s" % (t, prev, ev.new.value), flush=True)
while True:
    try:
        sid = ag.subscribe(ag.EventId.NODE_ROLE_CHANGED, cb, address=sys.argv[1], port=int(sys.argv[2]))
    except Exception:
        time.sleep(0.1); continue
    while ag.subscription_error(sid) is None:
        time.sleep(0.1)
    ag.unsubscribe(sid)
EOF
    AGW[$n]=$!
}
# The events each node's watchers got since the last call.
events() {
    local n f k new
    for n in 1 2 3; do
        for f in ha ag; do
            k="$n.$f"; new=$(tail -c +$(( ${OFF[$k]:-0} + 1 )) "$WORK/n$n.$f-events" 2>/dev/null)
            OFF[$k]=$(stat -c %s "$WORK/n$n.$f-events" 2>/dev/null || echo 0)
            [ -n "$new" ] && printf '%s\n' "$new" | sed "s/^/  n$n $( [ $f = ha ] && echo 'HA event' || echo 'AG event'): /"
        done
    done
    return 0
}

start_node() {
    local n=$1 seeds="" k
    for k in 1 2 3; do [ "$k" = "$n" ] || seeds+="${seeds:+, }\"$(addr_of "$k")\""; done
    mkdir -p "$WORK/n$n"
    cat >"$WORK/n$n.toml" <<EOF
ipc-addr = "$(ip_of "$n"):$IPC_PORT"
data-dir = "$WORK/n$n/data"
mode = "raft"

[raft]
cluster-name = "demo"
node-address = "$(addr_of "$n")"
seed-nodes = [$seeds]
election-timeout = "${ET_MS}ms"
heartbeat-interval = "${HB_MS}ms"
token-file = "$WORK/token"
EOF
    ( exec_in "$n" "$NODE" --config "$WORK/n$n.toml" 2>>"$WORK/n$n/log" ) &
    PID[$n]=$!
    for _ in $(seq 1 200); do
        if q "$n" txid >/dev/null; then
            echo "  n$n up: ipc $(ip_of "$n"):$IPC_PORT, raft $(addr_of "$n"), pid ${PID[$n]}"
            watch_node "$n"
            return 0
        fi
        sleep 0.05
    done
    echo "n$n did not start; its log:"; cat "$WORK/n$n/log"; exit 1
}
stop_watchers() { stop_pid "${WATCH[$1]}"; stop_pid "${AGW[$1]}"; wait "${WATCH[$1]}" "${AGW[$1]}" 2>/dev/null; }

head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/token"; echo >>"$WORK/token"

if [ $NETNS = 1 ]; then NETDESC="network namespaces ${NS_TAG}n1..3 on bridge ${NS_TAG}b ($SUBNET.0/24); the partition is a real one (neighbour entries pinned to nowhere)"
else NETDESC="loopback 127.0.0.1-3 (not root, or DEMO_RAFT_NET=loopback): the partition is simulated by SIGSTOP of the other two nodes"; fi

bold "1. Three ha-node processes in mode = \"raft\" (election-timeout ${ET_MS} ms, heartbeat-interval ${HB_MS} ms)"
echo "  network: $NETDESC"
for n in 1 2 3; do start_node "$n"; done
sleep 0.3
show 1

bold "2. create-cluster on n1, naming n2 and n3: n1 is the first leader"
ctl 1 raft create-cluster "$(addr_of 2)" "$(addr_of 3)" || exit 1
for n in 2 3; do wait_role "$n" follower >/dev/null; done
for n in 1 2 3; do show "$n"; done
sleep 0.5; events

bold "3. Commits on the leader are on the followers when they return; a follower refuses writes"
ctl 1 set /system/hostname demo-raft
ctl 1 set /servers/server{www}/port 8080 --type uint16
ctl 2 get /system/hostname
ctl 3 get /servers/server{www}/port
ctl 2 set /system/hostname rogue

bold "4. kill -9 of the leader n1: n2 or n3 becomes leader"
stop_watchers 1
kill -9 "${PID[1]}"; wait "${PID[1]}" 2>/dev/null; T0=$(now_ms)
read -r L MS < <(wait_any_leader 2 3)
echo "  n$L is leader ${MS} ms after the kill: $([ "$MS" -le $(( ET_MS + 100 )) ] && echo within || echo MORE than) election-timeout + 100 ms ($(( ET_MS + 100 )) ms)"
echo "  (a follower stands after hearing nothing for the election timeout plus a random extra"
echo "  of up to one more, as raft-rs randomises it)"
F=$(( L == 2 ? 3 : 2 ))
show "$L"; show "$F"
sleep 0.5; events

bold "5. Commits go on, on the new leader n$L"
ctl "$L" set /system/hostname demo-raft-2
ctl "$F" get /system/hostname

bold "6. n1 restarts from its data directory and catches up by itself (nothing to run)"
start_node 1
wait_role 1 follower >/dev/null
for _ in $(seq 1 200); do [ "$(rfield 1 applied_index)" = "$(rfield "$L" applied_index)" ] && break; sleep 0.05; done
ctl 1 get /system/hostname
show 1; show "$L"
sleep 0.5; events

bold "7. handover back to n1"
ctl "$L" raft handover "$(addr_of 1)"
echo "  n1 leader after $(wait_role 1 leader) ms"
for n in 1 2 3; do show "$n"; done
ctl 1 set /system/hostname demo-raft-3
sleep 0.5; events

bold "8. A minority partition refuses writes"
if [ $NETNS = 1 ]; then
    echo "  (network namespaces: n1 is cut off from n2 and n3 both ways; clients still reach all three)"
    for k in 2 3; do block 1 "$k"; block "$k" 1; done
else
    echo "  (loopback: SIGSTOP of n2 and n3 leaves n1 a minority of one)"
    stop_watchers 2; stop_watchers 3
    kill -STOP "${PID[2]}" "${PID[3]}"
fi
T0=$(now_ms)
echo "  n1 stops being leader $(wait_not_leader 1 "$(( ET_MS * 5 ))") ms after the cut (election-timeout ${ET_MS} ms)"
show 1
ctl 1 set /system/hostname split-brain-attempt
if [ $NETNS = 1 ]; then
    read -r L MS < <(wait_any_leader 2 3)
    echo "  the majority side elected n$L, ${MS} ms after the cut"
    ctl "$L" set /system/hostname majority-side
fi
sleep 0.5; events

bold "9. The partition heals: one leader, the same data everywhere"
if [ $NETNS = 1 ]; then
    for k in 2 3; do unblock 1 "$k"; unblock "$k" 1; done
else
    kill -CONT "${PID[2]}" "${PID[3]}"; watch_node 2; watch_node 3
fi
T0=$(now_ms); read -r L MS < <(wait_any_leader 1 2 3)
for _ in $(seq 1 200); do
    a=$(rfield 1 applied_index); b=$(rfield 2 applied_index); c=$(rfield 3 applied_index)
    [ -n "$a" ] && [ "$a" = "$b" ] && [ "$b" = "$c" ] && [ "$(rfield "$L" role)" = leader ] && break
    sleep 0.05
done
for n in 1 2 3; do ctl "$n" get /system/hostname; done
for n in 1 2 3; do show "$n"; done
sleep 0.5; events

bold "Done; stopping the cluster"
