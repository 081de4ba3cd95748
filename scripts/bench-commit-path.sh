#!/usr/bin/env bash
# make bench-commit-path: the cost of ha-node's commit path alone (issue 11 item 3).
#
# Three ha-node processes on 127.0.0.1-3 (primary + 0, 1 or 2 sync secondaries), driven by
# bench/peers_load.c; per replica count: one client's commit p50/p99 (LAT_N commits), then
# throughput at 1, 8 and 32 clients (TPUT_S seconds each) with, per node, the context
# switches (every thread's voluntary + involuntary, /proc/PID/task/*/status) and the CPU
# time (/proc/PID/stat utime + stime) per commit. Repeated ROUNDS times; prints BENCH lines
# and a Markdown table of the medians (for bench/RESULTS.md). No root needed.
#
#   ROUNDS=3 LAT_N=500 TPUT_S=3 scripts/bench-commit-path.sh
set -euo pipefail
ROOT=$PWD
RELEASE=$ROOT/target/release
ROUNDS=${ROUNDS:-3}
LAT_N=${LAT_N:-500}
TPUT_S=${TPUT_S:-3}
TOKEN=bench-token
HA_NODE=${HA_NODE:-$RELEASE/ha-node}   # another build to compare: HA_NODE=/path/to/ha-node
say() { echo "== $*" >&2; }
die() { echo "bench-commit-path: $*" >&2; exit 1; }

[ -x "$HA_NODE" ] || die "build first (cargo build --release --workspace)"
ln -sf libconfd_ha.so "$RELEASE/libconfd_ha.so.0"
mkdir -p "$ROOT/build/bench"
LOAD=$ROOT/build/bench/peers_load
${CC:-cc} -O2 -std=gnu11 -Wall -Wextra -Werror -I"$ROOT/include" -I/usr/include/postgresql \
    "$ROOT/bench/peers_load.c" -o "$LOAD" -L"$RELEASE" -lconfd_ha -lhiredis -lpq -lpthread \
    -Wl,-rpath,"$RELEASE"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ha-commit-path.XXXXXX")
ALL=$WORK/all
PIDS=()
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_tcp() { # HOST PORT PID
    local i
    for i in $(seq 1 1200); do
        kill -0 "$3" 2>/dev/null || return 1
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
HA_IPC=$(free_port); HA_PORT=$(free_port)
HA_PID=("" "" "")
HA_ROLE=(none none none)
ha_ip() { echo "127.0.0.$(( $1 + 1 ))"; }
ha_ctl() { local i=$1; shift; "$RELEASE/ha-ctl" -a "$(ha_ip "$i")" -p "$HA_IPC" -t "$TOKEN" "$@" >/dev/null; }
for i in 0 1 2; do
    ip=$(ha_ip "$i"); mkdir -p "$WORK/$i"
    "$HA_NODE" --ipc-addr "$ip:$HA_IPC" --ha-addr "$ip:$HA_PORT" --data-dir "$WORK/$i/data" \
        --log-level warn 2>>"$WORK/$i/log" &
    HA_PID[$i]=$!; PIDS+=($!)
    wait_tcp "$ip" "$HA_IPC" "${HA_PID[$i]}" || { cat "$WORK/$i/log" >&2; die "ha-node $i did not start"; }
done
ha_ctl 0 primary p
config() { # N: secondaries 1..N attached, the others in NONE
    local i
    for i in 1 2; do
        if [ "$i" -le "$1" ]; then
            [ "${HA_ROLE[$i]}" = secondary ] || { ha_ctl "$i" secondary "s$i" p 127.0.0.1; HA_ROLE[$i]=secondary; }
        elif [ "${HA_ROLE[$i]}" = secondary ]; then
            ha_ctl "$i" none; HA_ROLE[$i]=none
        fi
    done
    CPU=${HA_PID[0]}; for i in 1 2; do [ "$i" -gt "$1" ] || CPU+=",${HA_PID[$i]}"; done
}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq 1 "$ROUNDS"); do
    for n in 0 1 2; do
        config "$n"
        say "round $r, $n secondaries"
        "$LOAD" --sys ha --addr "127.0.0.1:$HA_IPC" --name "n$n.r$r" lat "$LAT_N" >>"$ALL"
        for cl in 1 8 32; do
            "$LOAD" --sys ha --addr "127.0.0.1:$HA_IPC" --cpu-pids "$CPU" --name "n$n.r$r" tput "$cl" "$TPUT_S" >>"$ALL"
        done
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
cat "$ALL"
med() { # KEY-SUFFIX N: median over rounds of BENCH n$N.r*.SUFFIX
    awk -v n="$2" -v k="$1" '$1=="BENCH" { split($2, a, "."); if (a[1]=="n" n && substr($2, length(a[1])+length(a[2])+3)==k) print $3 }' "$ALL" |
        sort -g | awk '{ v[NR]=$1 } END { if (NR==0) print "-"; else print v[int((NR+1)/2)] }'
}
echo
echo "load average at start / end: $LOAD_BEFORE / $LOAD_AFTER; rounds $ROUNDS, $LAT_N latency commits, ${TPUT_S} s per throughput cell"
echo
echo "| secondaries | p50 µs | p99 µs | clients | commits/s | CPU µs/commit (primary, s1, s2) | switches/commit (primary, s1, s2) |"
echo "|---:|---:|---:|---:|---:|---|---|"
for n in 0 1 2; do
    for cl in 1 8 32; do
        cpu="$(med "cpu$cl.node0" "$n")"; cs="$(med "cs$cl.node0" "$n")"
        for i in 1 2; do
            [ "$i" -le "$n" ] || continue
            cpu+=", $(med "cpu$cl.node$i" "$n")"; cs+=", $(med "cs$cl.node$i" "$n")"
        done
        echo "| $n | $(med lat.p50 "$n") | $(med lat.p99 "$n") | $cl | $(med "tput$cl" "$n") | $cpu | $cs |"
    done
done
