#!/usr/bin/env bash
# make bench-peers: ha-node side by side with PostgreSQL 15, Redis 7 and etcd 3.4 on this
# machine (issue 11, item 5). Writes bench/PEERS.md.
#
# Every system runs on loopback, one process per node, with 0, 1 or 2 replicas:
#   ha-node     primary + secondaries (sync replication, the default), IPs 127.0.0.1-3
#   PostgreSQL  synchronous_commit=on, synchronous_standby_names = 'FIRST n (s1, s2)'
#               (and, for the latency figure only, synchronous_commit=remote_apply)
#   Redis       appendonly yes + appendfsync always on every node; SET then WAIT n 0
#   etcd        clusters of 1, 2 and 3 members (the nearest equivalent: 2 members =
#               the leader waits for its one follower; 3 members = for 1 of 2 followers)
# One ~100-byte value per transaction, written by build/bench/peers_load (bench/peers_load.c)
# through each system's own client: libconfd_ha's cha_* data API, libpq, hiredis, and
# etcd's v3 JSON gateway (etcd has no C client).
#
# Rounds are interleaved slice by slice (round r: for n in 0 1 2: for each system, in an
# order rotated per round), so that noise from the machine falls on all systems alike.
# The floors (4 KiB rewrite + fdatasync on the same file system, 100-byte loopback TCP
# ping-pong) are measured in every round.
#
# Knobs (environment):
#   BENCH_PEERS_QUICK=1   a short run (1 round, fewer commits, 1 s per throughput figure)
#   BENCH_PEERS_ROUNDS    rounds (default 3; quick 1)
#   BENCH_PEERS_COPY_MIB  store size for the full copies and re-joins (default 100)
#   BENCH_PEERS_1G=1      also the 1 GiB full copies (off by default: filling three
#                         systems with 1 GiB takes several minutes on this machine)
#   BENCH_PEERS_KEEP=1    keep the work directory (logs, data) at the end
#   BENCH_PEERS_OUT       results file (default bench/PEERS.md)
#   BENCH_SKIP_BUILD=1    use what target/release holds
#   BENCH_PEERS_ONLY=rejoin  only the re-joins of ha-node and PostgreSQL (no Redis, etcd,
#                         latency or throughput; PEERS.md is not written, the figures are
#                         printed), at each store size of BENCH_PEERS_REJOIN_MIBS
#                         (default "$BENCH_PEERS_COPY_MIB"; e.g. "100 1024")
#   BENCH_ONLY=raft       only HA Raft mode beside etcd (scripts/bench-raft.sh, issue 13): rewrites
#                         only that section of the results file (a few minutes; quick: ~1 min)
#   BENCH_RAFT_FAILOVERS  failovers per system in that part (default 5; quick 2)
# Needs root (apt-get for missing packages; PostgreSQL runs as user postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RELEASE=$ROOT/target/release
OUT=${BENCH_PEERS_OUT:-$ROOT/bench/PEERS.md}
QUICK=${BENCH_PEERS_QUICK:-0}
if [ "$QUICK" = 1 ]; then
    ROUNDS=${BENCH_PEERS_ROUNDS:-1}; LAT_N=200; TPUT_S=1; REJOIN_REPS=1
else
    ROUNDS=${BENCH_PEERS_ROUNDS:-3}; LAT_N=500; TPUT_S=3; REJOIN_REPS=3
fi
BIG=${BENCH_PEERS_1G:-0}
ONLY=${BENCH_PEERS_ONLY:-}
BIG_MIB=${BENCH_PEERS_BIG_MIB:-1024}   # (only to try the 1 GiB path quickly)
COPY_MIB=${BENCH_PEERS_COPY_MIB:-100}
VAL_KIB=64
MISSED=1000
PGBIN=/usr/lib/postgresql/15/bin
TOKEN=bench-token
T_START=$(date +%s)

say() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }
die() { echo "bench-peers: $*" >&2; exit 1; }

# ---- packages ----
ONLY=${BENCH_ONLY:-}
case $ONLY in ''|raft) ;; *) die "BENCH_ONLY=$ONLY: only 'raft' is known";; esac
need=()
command -v etcd >/dev/null || need+=(etcd-server)
if [ -z "$ONLY" ]; then
    command -v redis-server >/dev/null || need+=(redis-server)
    [ -x "$PGBIN/postgres" ] || need+=(postgresql)
fi
[ -f /usr/include/hiredis/hiredis.h ] || need+=(libhiredis-dev)
[ -f /usr/include/postgresql/libpq-fe.h ] || need+=(libpq-dev)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    [ "$(id -u)" = 0 ] || die "run as root to install ${need[*]} (or install them first)"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${need[@]}" >&2
fi
if [ -z "$ONLY" ]; then
    [ "$(id -u)" = 0 ] || die "run as root (PostgreSQL is started as user postgres)"
    id postgres >/dev/null 2>&1 || die "no user postgres (install postgresql)"
fi

# ---- build ----
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    say "build (release)"
    cargo build --release --workspace >&2
    ln -sf libconfd_ha.so "$RELEASE/libconfd_ha.so.0"
fi
mkdir -p "$ROOT/build/bench"
LOAD=$ROOT/build/bench/peers_load
${CC:-cc} -O2 -std=gnu11 -Wall -Wextra -Werror -I"$ROOT/include" -I/usr/include/postgresql \
    "$ROOT/bench/peers_load.c" -o "$LOAD" -L"$RELEASE" -lconfd_ha -lhiredis -lpq -lpthread \
    -Wl,-rpath,"$RELEASE"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ha-peers.XXXXXX")
chmod 755 "$WORK"
ALL=$WORK/all          # every BENCH line
PIDS=()                # every server process started (ha-node, redis, etcd), by pid

cleanup() {
    local rc=$? p d
    trap - EXIT INT TERM
    for d in "$WORK"/pg/*/; do
        [ -f "$d/postmaster.pid" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" stop -m immediate >/dev/null 2>&1 || true
    done
    for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${BENCH_PEERS_KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
wait_tcp() { # HOST PORT PID
    local i
    for i in $(seq 1 1200); do
        kill -0 "$3" 2>/dev/null || return 1
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
bench() { "$LOAD" "$@" | tee -a "$ALL" >/dev/null; }
rec() { echo "BENCH $1 $2 $3" >>"$ALL"; }

# ================= HA Raft mode beside etcd (issue 13): scripts/bench-raft.sh =================
# shellcheck source=bench-raft.sh
. "$ROOT/scripts/bench-raft.sh"
if [ "$ONLY" = raft ]; then
    raft_bench
    splice_raft "$OUT"
    say "written the Raft section of ${OUT#$ROOT/}"
    sed -n '/^## HA Raft mode/,/^```/p' "$OUT" | grep -v '^```' >&2
    exit 0
fi

# ================= ha-node =================
HA_IPC=$(free_port); HA_PORT=$(free_port)
HA_PID=("" "" "")
HA_ROLE=(none none none)
ha_ip() { echo "127.0.0.$(( $1 + 1 ))"; }
ha_start() { # I
    local i=$1 ip; ip=$(ha_ip "$1")
    mkdir -p "$WORK/ha/$i"
    "$RELEASE/ha-node" --ipc-addr "$ip:$HA_IPC" --ha-addr "$ip:$HA_PORT" --data-dir "$WORK/ha/$i/data" \
        --log-level warn 2>>"$WORK/ha/$i/log" &
    HA_PID[$i]=$!; PIDS+=($!)
    wait_tcp "$ip" "$HA_IPC" "${HA_PID[$i]}" || { cat "$WORK/ha/$i/log" >&2; die "ha-node $i did not start"; }
    HA_ROLE[$i]=none
}
ha_stop() { kill -TERM "${HA_PID[$1]}"; wait "${HA_PID[$1]}" 2>/dev/null || true; HA_PID[$1]=""; HA_ROLE[$1]=down; }
ha_ctl() { local i=$1; shift; "$RELEASE/ha-ctl" -a "$(ha_ip "$i")" -p "$HA_IPC" -t "$TOKEN" "$@" >/dev/null; }
ha_secondary() { ha_ctl "$1" secondary "s$1" p 127.0.0.1; HA_ROLE[$1]=secondary; }
ha_setup() {
    ha_start 0; ha_start 1; ha_start 2
    ha_ctl 0 primary p; HA_ROLE[0]=primary
}
ha_config() { # N: secondaries 1..N attached, the others in NONE
    local i
    for i in 1 2; do
        if [ "$i" -le "$1" ]; then
            [ "${HA_ROLE[$i]}" = secondary ] || ha_secondary "$i"
        elif [ "${HA_ROLE[$i]}" = secondary ]; then
            ha_ctl "$i" none; HA_ROLE[$i]=none
        fi
    done
    HA_CPU=${HA_PID[0]}; for i in 1 2; do [ "$i" -gt "$1" ] || HA_CPU+=",${HA_PID[$i]}"; done
}
ha_addr() { echo "127.0.0.1:$HA_IPC"; }

# ================= PostgreSQL =================
PG_PORT=("$(free_port)" "$(free_port)" "$(free_port)")
pg() { runuser -u postgres -- "$@"; }
pgsql() { pg "$PGBIN/psql" -h 127.0.0.1 -p "${PG_PORT[0]}" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAtc "$1"; }
pg_running() { [ -f "$WORK/pg/$1/postmaster.pid" ]; }
pg_pid() { head -1 "$WORK/pg/$1/postmaster.pid"; }
pg_start() { pg "$PGBIN/pg_ctl" -D "$WORK/pg/$1" -l "$WORK/pg/$1.log" start ${2:-} >/dev/null; }
pg_stop() { pg "$PGBIN/pg_ctl" -D "$WORK/pg/$1" stop -m fast >/dev/null; }
pg_clone() { # I: a new standby sI from a base backup
    rm -rf "$WORK/pg/$1"
    pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "${PG_PORT[0]}" -U postgres -D "$WORK/pg/$1" -X stream -c fast -R
    {
        echo "port = ${PG_PORT[$1]}"
        echo "cluster_name = 's$1'"
        echo "primary_conninfo = 'host=127.0.0.1 port=${PG_PORT[0]} user=postgres application_name=s$1'"
    } | pg tee -a "$WORK/pg/$1/postgresql.auto.conf" >/dev/null
}
pg_setup() {
    mkdir -p "$WORK/pg"; chown postgres: "$WORK/pg"
    pg "$PGBIN/initdb" -D "$WORK/pg/0" -U postgres --auth=trust >/dev/null
    cat >>"$WORK/pg/0/postgresql.conf" <<EOF
port = ${PG_PORT[0]}
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK/pg'
fsync = on
synchronous_commit = on
wal_level = replica
max_wal_senders = 10
wal_keep_size = '4GB'
hot_standby = on
max_connections = 100
EOF
    pg_start 0
    pgsql "CREATE TABLE kv (k int PRIMARY KEY, v bytea);
           INSERT INTO kv SELECT g, '' FROM generate_series(0, 999) g;
           CREATE TABLE blob (k int PRIMARY KEY, v bytea);
           ALTER TABLE blob ALTER COLUMN v SET STORAGE EXTERNAL;"
    pg_clone 1; pg_clone 2
}
pg_config() { # N
    local i names
    for i in 1 2; do
        if [ "$i" -le "$1" ]; then pg_running "$i" || pg_start "$i"
        elif pg_running "$i"; then pg_stop "$i"; fi
    done
    if [ "$1" = 0 ]; then names=''; else names="FIRST $1 (s1, s2)"; fi
    pgsql "ALTER SYSTEM SET synchronous_standby_names = '$names'" >/dev/null
    pgsql "SELECT pg_reload_conf()" >/dev/null
    for i in $(seq 1 "$1"); do "$LOAD" --addr "127.0.0.1:${PG_PORT[0]}" wait-pg "s$i"; done
    # until the primary lists them as synchronous
    for _ in $(seq 1 600); do
        [ "$(pgsql "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync','quorum')")" -ge "$1" ] && break
        sleep 0.05
    done
    PG_CPU=$(pg_pid 0); for i in 1 2; do [ "$i" -gt "$1" ] || PG_CPU+=",$(pg_pid "$i")"; done
}
pg_addr() { echo "127.0.0.1:${PG_PORT[0]}"; }

# ================= Redis =================
RD_PORT=("$(free_port)" "$(free_port)" "$(free_port)")
RD_PID=("" "" "")
rcli() { local i=$1; shift; redis-cli -h 127.0.0.1 -p "${RD_PORT[$i]}" "$@" >/dev/null; }
rd_start() { # I [replicaof args]
    local i=$1; shift
    mkdir -p "$WORK/redis/$i"
    redis-server --port "${RD_PORT[$i]}" --bind 127.0.0.1 --protected-mode no --daemonize no \
        --dir "$WORK/redis/$i" --appendonly yes --appendfsync always --save '' \
        --repl-diskless-sync-delay 0 --logfile "$WORK/redis/$i.log" "$@" &
    RD_PID[$i]=$!; PIDS+=($!)
    wait_tcp 127.0.0.1 "${RD_PORT[$i]}" "${RD_PID[$i]}" || die "redis $i did not start"
}
# Until replica I has no AOF rewrite running or scheduled: after a full sync a replica
# rewrites its AOF from the loaded data, and only then has it durable (it also refuses to
# shut down before: "Writing initial AOF, can't exit").
rd_durable() {
    local info
    for _ in $(seq 1 6000); do
        info=$(redis-cli -h 127.0.0.1 -p "${RD_PORT[$1]}" info persistence | tr -d '\r')
        if echo "$info" | grep -q '^aof_rewrite_in_progress:0' && echo "$info" | grep -q '^aof_rewrite_scheduled:0' \
            && echo "$info" | grep -q '^loading:0'; then return 0; fi
        sleep 0.005
    done
    die "redis $1: AOF rewrite did not finish"
}
rd_stop() { rd_durable "$1"; kill -TERM "${RD_PID[$1]}"; wait "${RD_PID[$1]}" 2>/dev/null || true; RD_PID[$1]=""; }
rd_setup() { rd_start 0; rd_start 1; rd_start 2; }
rd_config() { # N
    local i
    for i in 1 2; do
        if [ "$i" -le "$1" ]; then rcli "$i" replicaof 127.0.0.1 "${RD_PORT[0]}"
        else rcli "$i" replicaof no one; fi
    done
    "$LOAD" --addr "127.0.0.1:${RD_PORT[0]}" wait-redis "$1"
    RD_CPU=${RD_PID[0]}; for i in 1 2; do [ "$i" -gt "$1" ] || RD_CPU+=",${RD_PID[$i]}"; done
}
rd_addr() { echo "127.0.0.1:${RD_PORT[0]}"; }

# ================= etcd: clusters of 1, 2, 3 members =================
declare -A ET_CLIENT ET_PID
et_setup() {
    local m k ic peers
    mkdir -p "$WORK/etcd"
    for m in 1 2 3; do
        ic=""; declare -A peers=()
        for k in $(seq 1 "$m"); do peers[$k]=$(free_port); ET_CLIENT[$m,$k]=$(free_port); ic+="${ic:+,}e$k=http://127.0.0.1:${peers[$k]}"; done
        for k in $(seq 1 "$m"); do
            etcd --name "e$k" --data-dir "$WORK/etcd/$m/$k" \
                --listen-client-urls "http://127.0.0.1:${ET_CLIENT[$m,$k]}" --advertise-client-urls "http://127.0.0.1:${ET_CLIENT[$m,$k]}" \
                --listen-peer-urls "http://127.0.0.1:${peers[$k]}" --initial-advertise-peer-urls "http://127.0.0.1:${peers[$k]}" \
                --initial-cluster "$ic" --initial-cluster-state new --initial-cluster-token "bench$m" \
                --log-level error --logger zap 2>>"$WORK/etcd/$m.$k.log" &
            ET_PID[$m,$k]=$!; PIDS+=($!)
        done
        unset peers
    done
    for m in 1 2 3; do
        for _ in $(seq 1 300); do "$LOAD" --sys etcd --addr "127.0.0.1:${ET_CLIENT[$m,1]}" lat 1 >/dev/null 2>&1 && break; sleep 0.1; done
        "$LOAD" --sys etcd --addr "127.0.0.1:${ET_CLIENT[$m,1]}" lat 1 >/dev/null || die "etcd cluster of $m did not start"
    done
}
ET_M=1
et_config() { # N: the cluster of N+1 members, through its leader
    local k m=$(( $1 + 1 )) st
    ET_M=$m; ET_LEADER=1; ET_CPU=""
    for k in $(seq 1 "$m"); do
        ET_CPU+="${ET_CPU:+,}${ET_PID[$m,$k]}"
        if python3 -c 'import json,sys,urllib.request as u; d=json.load(u.urlopen(u.Request(sys.argv[1], data=b"{}"), timeout=5)); sys.exit(0 if d.get("leader")==d["header"]["member_id"] else 1)' \
            "http://127.0.0.1:${ET_CLIENT[$m,$k]}/v3/maintenance/status" 2>/dev/null; then ET_LEADER=$k; fi
    done
}
et_addr() { echo "127.0.0.1:${ET_CLIENT[$ET_M,$ET_LEADER]}"; }

# ================= setup =================
say "starting ha-node, PostgreSQL, Redis, etcd (work dir $WORK)"
if [ "$ONLY" = rejoin ]; then ha_setup; pg_setup; else ha_setup; pg_setup; rd_setup; et_setup; fi
sync
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
SYSTEMS=(ha pg redis etcd)

cpu_of() { case $1 in ha) echo "$HA_CPU";; pg) echo "$PG_CPU";; redis) echo "$RD_CPU";; etcd) echo "$ET_CPU";; esac; }
addr_of() { case $1 in ha) ha_addr;; pg) pg_addr;; redis) rd_addr;; etcd) et_addr;; esac; }
config() { case $1 in ha) ha_config "$2";; pg) pg_config "$2";; redis) rd_config "$2";; etcd) et_config "$2";; esac; }

# ================= 1. commit latency and throughput, interleaved =================
[ "$ONLY" = rejoin ] && ROUNDS=0
for r in $(seq 1 "$ROUNDS"); do
    say "round $r of $ROUNDS: floors, then 0/1/2 replicas x (ha pg redis etcd)"
    bench --name floor.r$r floor-fsync "$WORK" 500
    bench --name floor.r$r floor-rtt 2000
    for n in 0 1 2; do
        for j in 0 1 2 3; do
            s=${SYSTEMS[$(( (j + r) % 4 ))]}
            config "$s" "$n"
            a=$(addr_of "$s"); c=$(cpu_of "$s")
            bench --sys "$s" --addr "$a" --replicas "$n" --name "$s.n$n" --samples "$WORK/lat.$s.n$n" lat "$LAT_N"
            if [ "$s" = pg ] && [ "$n" -gt 0 ]; then
                PGOPTIONS="-c synchronous_commit=remote_apply" \
                    bench --sys pg --addr "$a" --name "pga.n$n" --samples "$WORK/lat.pga.n$n" lat "$LAT_N"
            fi
            for cl in 1 8 32; do
                bench --sys "$s" --addr "$a" --replicas "$n" --cpu-pids "$c" --name "$s.n$n.r$r" tput "$cl" "$TPUT_S"
            done
            printf '   %-5s n=%d  p50 %s us  tput8 %s/s\n' "$s" "$n" \
                "$(awk -v k="$s.n$n.lat.p50" '$2==k {v=$3} END {print v}' "$ALL")" \
                "$(awk -v k="$s.n$n.r$r.tput8" '$2==k {v=$3} END {print v}' "$ALL")" >&2
        done
    done
done

# ================= 2. full copy, re-join =================
# ha-node: fill the primary (no secondary attached); full copy = besecondary of a node with
# an empty data directory, until it returns. PostgreSQL: pg_basebackup -X stream -c fast.
# Redis: a replica with an empty data directory, REPLICAOF until it is online at the
# primary's offset.
fill() { # SYS MIB [FIRST KEY]
    config "$1" 0
    bench --sys "$1" --addr "$(addr_of "$1")" --name "$1.fill$2" fill "$2" "$VAL_KIB" "${3:-0}"
}
full_copy() { # SYS TAG
    local t0
    case $1 in
    ha)
        ha_stop 1; rm -rf "$WORK/ha/1/data"; ha_start 1
        t0=$(now_ms); ha_secondary 1; rec "ha.copy.$2" $(( $(now_ms) - t0 )) ms
        ha_ctl 1 none; HA_ROLE[1]=none ;;
    pg)
        rm -rf "$WORK/pg/copy"
        t0=$(now_ms)
        pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "${PG_PORT[0]}" -U postgres -D "$WORK/pg/copy" -X stream -c fast
        rec "pg.copy.$2" $(( $(now_ms) - t0 )) ms
        rm -rf "$WORK/pg/copy" ;;
    redis)
        rd_stop 1; rm -rf "$WORK/redis/1"; rd_start 1
        t0=$(now_ms)
        rcli 1 replicaof 127.0.0.1 "${RD_PORT[0]}"; "$LOAD" --addr "$(rd_addr)" wait-redis 1; rd_durable 1
        rec "redis.copy.$2" $(( $(now_ms) - t0 )) ms
        rcli 1 replicaof no one ;;
    esac
}
# Re-join: replica 1 in sync, stopped cleanly, MISSED commits on the primary (none for
# "same"), then from starting its process until it has everything the primary has.
rejoin() { # SYS MISSED TAG
    local t0
    config "$1" 1
    case $1 in
    ha) ha_stop 1 ;;
    pg) pg_stop 1; pgsql "ALTER SYSTEM SET synchronous_standby_names = ''" >/dev/null; pgsql "SELECT pg_reload_conf()" >/dev/null ;;
    redis) rd_stop 1 ;;
    esac
    [ "$2" = 0 ] || "$LOAD" --sys "$1" --addr "$(addr_of "$1")" --replicas 0 --name "$1.missed" lat "$2" >/dev/null
    sleep 0.2
    t0=$(now_ms)
    case $1 in
    ha) ha_start 1; ha_secondary 1 ;;
    pg) pg_start 1 -W; "$LOAD" --addr "$(pg_addr)" wait-pg s1 ;;
    redis) rd_start 1 --replicaof 127.0.0.1 "${RD_PORT[0]}"; "$LOAD" --addr "$(rd_addr)" wait-redis 1; rd_durable 1 ;;
    esac
    rec "$1.rejoin.$3" $(( $(now_ms) - t0 )) ms
}
if [ "$ONLY" = rejoin ]; then
    # Re-joins only, at growing store sizes: each size is filled on top of the last one.
    med() { awk -v re="$1" '$1=="BENCH" && $2 ~ re {print $3}' "$ALL" | sort -n | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]; else print "n/a"}'; }
    have=0
    for mib in ${BENCH_PEERS_REJOIN_MIBS:-$COPY_MIB}; do
        for s in ha pg; do
            say "$s: fill to $mib MiB"
            fill "$s" $(( mib - have )) $(( have * 1024 / VAL_KIB ))
        done
        have=$mib
        for k in $(seq 1 "$REJOIN_REPS"); do
            for s in ha pg; do
                rejoin "$s" "$MISSED" "missed.${mib}m"
                rejoin "$s" 0 "same.${mib}m"
            done
        done
        printf '%s MiB store, median of %s (ms): ha-node missed %s same %s | PostgreSQL missed %s same %s\n' \
            "$mib" "$REJOIN_REPS" \
            "$(med "^ha[.]rejoin[.]missed[.]${mib}m\$")" "$(med "^ha[.]rejoin[.]same[.]${mib}m\$")" \
            "$(med "^pg[.]rejoin[.]missed[.]${mib}m\$")" "$(med "^pg[.]rejoin[.]same[.]${mib}m\$")"
    done
    echo "all samples:"; grep 'rejoin' "$ALL"
    exit 0
fi
for s in ha pg redis; do
    say "$s: fill to $COPY_MIB MiB, full copy, re-join ($REJOIN_REPS x)"
    fill "$s" "$COPY_MIB"
    full_copy "$s" 100m
done
for k in $(seq 1 "$REJOIN_REPS"); do
    for s in ha pg redis; do
        rejoin "$s" "$MISSED" missed
        rejoin "$s" 0 same
    done
done
# Redis: was the re-join a partial resync (PSYNC) or a full one?
RD_PARTIAL=$(grep -c 'Partial resynchronization request from .* accepted' "$WORK/redis/0.log" || true)
RD_FULL=$(grep -c 'Starting BGSAVE for SYNC\|Starting diskless\|Full resync requested' "$WORK/redis/0.log" || true)
if [ "$BIG" = 1 ]; then
    for s in ha pg redis; do
        say "$s: fill to 1 GiB, full copy"
        fill "$s" $(( BIG_MIB - COPY_MIB )) $(( COPY_MIB * 1024 / VAL_KIB ))
        full_copy "$s" 1g
    done
fi
raft_bench
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(( $(date +%s) - T_START ))

# ================= figures =================
pctl() { # FILE P -> the P-th percentile of the samples (µs)
    [ -s "$1" ] || { echo n/a; return; }
    sort -n "$1" | awk -v p="$2" '{v[NR]=$1} END {i=int((NR-1)*p+0.5)+1; print v[i]}'
}
# mean over rounds of a per-round figure: SYS N FIG
mean() { awk -v re="^$1[.]n$2[.]r[0-9]+[.]$3\$" '$1=="BENCH" && $2 ~ re {s+=$3; n++} END {if (n) printf "%.1f", s/n; else print "n/a"}' "$ALL"; }
cpu8() { # server CPU µs per commit at 8 clients over all rounds
    awk -v re="^$1[.]n$2[.]r[0-9]+[.]" '$1=="BENCH" && $2 ~ re {if ($2 ~ /[.]cpus8$/) c+=$3; if ($2 ~ /[.]commits8$/) m+=$3} END {if (m) printf "%.1f", c*1e6/m; else print "n/a"}' "$ALL"
}
v() { awk -v k="$1" '$1=="BENCH" && $2==k {s+=$3; n++} END {if (n) printf "%.1f", s/n; else print "n/a"}' "$ALL"; }
med() { awk -v re="$1" '$1=="BENCH" && $2 ~ re {print $3}' "$ALL" | sort -n | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]; else print "n/a"}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a=="n/a" || b=="n/a" || b+0==0) print "–"; else printf "%.2fx", a/b}'; }
f1() { [ "$1" = n/a ] && echo n/a || printf '%.0f' "$1"; }

declare -A P50 P99 T1 T8 T32 C8
for s in ha pg pga redis etcd; do
    for n in 0 1 2; do
        P50[$s,$n]=$(pctl "$WORK/lat.$s.n$n" 0.5); P99[$s,$n]=$(pctl "$WORK/lat.$s.n$n" 0.99)
        T1[$s,$n]=$(mean "$s" "$n" tput1); T8[$s,$n]=$(mean "$s" "$n" tput8); T32[$s,$n]=$(mean "$s" "$n" tput32)
        C8[$s,$n]=$(cpu8 "$s" "$n")
    done
done
FS50=$(med '^floor[.]r[0-9]+[.]fsync4k[.]p50$'); FS99=$(med '^floor[.]r[0-9]+[.]fsync4k[.]p99$')
RT50=$(med '^floor[.]r[0-9]+[.]rtt[.]p50$'); RT99=$(med '^floor[.]r[0-9]+[.]rtt[.]p99$')
RJM_ha=$(med '^ha[.]rejoin[.]missed$'); RJS_ha=$(med '^ha[.]rejoin[.]same$'); CP_ha=$(med '^ha[.]copy[.]100m$'); CPG_ha=$(med '^ha[.]copy[.]1g$')
RJM_pg=$(med '^pg[.]rejoin[.]missed$'); RJS_pg=$(med '^pg[.]rejoin[.]same$'); CP_pg=$(med '^pg[.]copy[.]100m$'); CPG_pg=$(med '^pg[.]copy[.]1g$')
RJM_redis=$(med '^redis[.]rejoin[.]missed$'); RJS_redis=$(med '^redis[.]rejoin[.]same$'); CP_redis=$(med '^redis[.]copy[.]100m$'); CPG_redis=$(med '^redis[.]copy[.]1g$')

row3() { # LABEL ARR N  -> ratios ha/pg, ha/redis, ha/etcd
    local -n A=$2
    echo "| $1 | $(ratio "${A[ha,$3]}" "${A[pg,$3]}") | $(ratio "${A[ha,$3]}" "${A[redis,$3]}") | $(ratio "${A[ha,$3]}" "${A[etcd,$3]}") |"
}
CPU=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
{
echo "# ha-node beside PostgreSQL, Redis and etcd"
echo
echo "Written by \`make bench-peers\` (scripts/bench-peers.sh, bench/peers_load.c); do not edit by hand."
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')$([ "$QUICK" = 1 ] && echo ' — **quick run** (BENCH_PEERS_QUICK=1)')"
echo "- machine: $(nproc) CPUs ($CPU), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -sr), file system $(df -T "$WORK" | awk 'NR==2 {print $2}')"
echo "- load average at start / end: $LOAD_BEFORE / $LOAD_AFTER — other work on the machine skews every figure; the rounds are interleaved so that it skews all systems alike"
echo "- versions: ha-node $("$RELEASE/ha-node" --version 2>&1 | head -1 | awk '{print $NF}') ($(git rev-parse --short HEAD 2>/dev/null || echo unknown)), PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), Redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'), etcd $(etcd --version | awk 'NR==1 {print $3}')"
echo "- rounds: $ROUNDS, each: $LAT_N single-client commits per system and replica count, then ${TPUT_S} s at 1, 8 and 32 clients; total time ${ELAPSED} s"
echo
echo "## Workload and acknowledgement points"
echo
echo "One transaction = one ~100-byte value written to one of 1000 keys, over loopback TCP, from"
echo "bench/peers_load.c through each system's own client. A commit returns to the client when:"
echo
echo "- **ha-node** (libconfd_ha \`cha_txn_set\` + \`cha_txn_commit\`, sync replication): the primary's"
echo "  store has it durable (fdatasync) and every connected secondary has acknowledged it durable."
echo "- **PostgreSQL** (libpq, prepared \`UPDATE kv SET v = \$2 WHERE k = \$1\`, autocommit):"
echo "  \`synchronous_commit=on\`: the primary's WAL is flushed and the first n standbys"
echo "  (\`synchronous_standby_names = 'FIRST n (s1, s2)'\`) have flushed it. *remote_apply*"
echo "  (latency only): the standbys have also replayed it."
echo "- **Redis** (hiredis, \`SET\` then \`WAIT n 0\`; \`appendonly yes\`, \`appendfsync always\` on every"
echo "  node): SET returns after the primary's AOF fsync; WAIT returns when n replicas have"
echo "  acknowledged the replication offset — received and applied, **not** necessarily fsync'ed"
echo "  on the replica (its own appendfsync always runs, but the ack does not wait for it)."
echo "- **etcd** (v3 JSON gateway \`POST /v3/kv/put\`, keep-alive HTTP/1.1): raft commit (a majority"
echo "  has fsync'ed the entry to its WAL) and applied on the leader. \"1 replica\" = a cluster of"
echo "  2 members (the leader waits for its one follower: like sync to 1); \"2 replicas\" = 3"
echo "  members (the leader waits for the **first of two** followers: weaker than sync to 2)."
echo "  The gateway costs etcd CPU and latency per request that a gRPC client would not pay."
echo
echo "Floors, same run, median over rounds: 4 KiB rewrite + fdatasync on the same file system"
echo "p50 $(f1 "$FS50") µs / p99 $(f1 "$FS99") µs; loopback TCP ping-pong of 100 bytes p50 $(f1 "$RT50") µs / p99 $(f1 "$RT99") µs."
echo
echo "On this VM an fdatasync takes either ~0.1 ms or about one 4 ms timer tick depending on how"
echo "busy the machine is (bench/RESULTS.md), so single-client latencies of *every* system swing"
echo "between those modes from slice to slice on a loaded machine; the interleaving spreads that"
echo "over all systems, but a cell of a short or loaded run can still be off by a factor of"
echo "several. Compare ratios from runs with several rounds, and read each against the floors."
echo
echo "## Ratios ha-node / peer"
echo
echo "For times > 1 means ha-node is slower; for throughput < 1 means lower; for CPU > 1 means more."
echo
echo "| figure | vs PostgreSQL (sync commit on) | vs Redis (AOF always, WAIT n) | vs etcd (1/2/3 members) |"
echo "|---|---:|---:|---:|"
row3 "commit p50, no replica" P50 0
row3 "commit p50, sync to 1 replica" P50 1
row3 "commit p50, sync to 2 replicas" P50 2
row3 "commit p99, no replica" P99 0
row3 "commit p99, sync to 1 replica" P99 1
row3 "commit p99, sync to 2 replicas" P99 2
for n in 0 1 2; do row3 "throughput, 1 client, $n replicas" T1 $n; done
for n in 0 1 2; do row3 "throughput, 8 clients, $n replicas" T8 $n; done
for n in 0 1 2; do row3 "throughput, 32 clients, $n replicas" T32 $n; done
for n in 0 1 2; do row3 "server CPU per commit (8 clients), $n replicas" C8 $n; done
echo "| commit p50 vs PostgreSQL remote_apply, 1 / 2 replicas | $(ratio "${P50[ha,1]}" "${P50[pga,1]}") / $(ratio "${P50[ha,2]}" "${P50[pga,2]}") | | |"
echo "| re-join after $MISSED commits missed ($COPY_MIB MiB store) | $(ratio "$RJM_ha" "$RJM_pg") | $(ratio "$RJM_ha" "$RJM_redis") | – |"
echo "| re-join after a restart, nothing missed | $(ratio "$RJS_ha" "$RJS_pg") | $(ratio "$RJS_ha" "$RJS_redis") | – |"
echo "| full copy, $COPY_MIB MiB | $(ratio "$CP_ha" "$CP_pg") | $(ratio "$CP_ha" "$CP_redis") | – |"
echo "| full copy, $BIG_MIB MiB | $(ratio "$CPG_ha" "$CPG_pg") | $(ratio "$CPG_ha" "$CPG_redis") | – |"
echo
echo "Commit p50 with no replica against the 4 KiB fdatasync floor: $(ratio "${P50[ha,0]}" "$FS50")."
echo
echo "Goals of issue 11 (a benchmark, not a test; same run):"
echo
goal() { # TEXT A B OP LIMIT
    local r; r=$(awk -v a="$2" -v b="$3" 'BEGIN {if (a=="n/a" || b=="n/a" || b+0==0) print "n/a"; else printf "%.2f", a/b}')
    if [ "$r" = n/a ]; then echo "- $1: not measured"; return; fi
    if awk -v x="$r" -v l="$5" -v op="$4" 'BEGIN {exit !((op=="<=") ? x<=l : x>=l)}'; then echo "- $1: ${r}x — met"; else echo "- $1: ${r}x — **missed**"; fi
}
for n in 1 2; do
    goal "commit p50, sync to $n, ≤ 0.9x PostgreSQL" "${P50[ha,$n]}" "${P50[pg,$n]}" '<=' 0.9
    goal "commit p50, sync to $n, ≤ 0.9x Redis" "${P50[ha,$n]}" "${P50[redis,$n]}" '<=' 0.9
done
for c in 8 32; do
    for n in 1 2; do
        A=T$c; eval "x=\${$A[ha,$n]}; yp=\${$A[pg,$n]}; yr=\${$A[redis,$n]}"
        goal "throughput, $c clients, $n replicas, ≥ 1.1x PostgreSQL" "$x" "$yp" '>=' 1.1
        goal "throughput, $c clients, $n replicas, ≥ 1.1x Redis" "$x" "$yr" '>=' 1.1
    done
done
goal "re-join after $MISSED missed commits ≤ 2x PostgreSQL's standby catch-up" "$RJM_ha" "$RJM_pg" '<=' 2
goal "commit p50, no replica, ≤ 1.3x the 4 KiB fdatasync floor" "${P50[ha,0]}" "$FS50" '<=' 1.3
echo
echo "## Absolute figures"
echo
echo "Latency: one client, $(( LAT_N * ROUNDS )) commits per cell (pooled over rounds), µs. Throughput: commits/s,"
echo "mean over rounds. CPU: user + system time of every server process of the system (the"
echo "primary and the attached replicas, with their child processes: PostgreSQL's backends,"
echo "walsenders, walreceivers...) from /proc/PID/stat, during the 8-client runs, per commit."
echo
echo "| system | replicas | p50 µs | p99 µs | 1 client /s | 8 clients /s | 32 clients /s | CPU µs/commit (8 clients) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for s in ha pg redis etcd; do
    for n in 0 1 2; do
        echo "| $s | $n | $(f1 "${P50[$s,$n]}") | $(f1 "${P99[$s,$n]}") | $(f1 "${T1[$s,$n]}") | $(f1 "${T8[$s,$n]}") | $(f1 "${T32[$s,$n]}") | $(f1 "${C8[$s,$n]}") |"
    done
done
for n in 1 2; do echo "| pg remote_apply | $n | $(f1 "${P50[pga,$n]}") | $(f1 "${P99[pga,$n]}") | | | | |"; done
echo
echo "Re-join and full copy (ms; median of $REJOIN_REPS re-joins):"
echo
echo "| figure | ha-node | PostgreSQL | Redis |"
echo "|---|---:|---:|---:|"
echo "| re-join after $MISSED commits missed | $RJM_ha | $RJM_pg | $RJM_redis |"
echo "| re-join after a restart, nothing missed | $RJS_ha | $RJS_pg | $RJS_redis |"
echo "| full copy, $COPY_MIB MiB | $CP_ha | $CP_pg | $CP_redis |"
echo "| full copy, $BIG_MIB MiB | $CPG_ha | $CPG_pg | $CPG_redis |"
echo
echo "- Stores: filled with ${VAL_KIB} KiB incompressible values to $COPY_MIB MiB (PostgreSQL: a bytea column"
echo "  with STORAGE EXTERNAL, no TOAST compression) before the copies and re-joins."
echo "- Re-join: replica 1 in sync, stopped cleanly (ha-node SIGTERM, \`pg_ctl stop -m fast\`, Redis"
echo "  SIGTERM once no AOF rewrite runs), $MISSED commits on the primary (or none), then timed from starting the replica's"
echo "  process until it has everything: ha-node until \`ha-ctl secondary\` (besecondary, waiting)"
echo "  returns; PostgreSQL until the primary's pg_stat_replication shows s1 streaming with"
echo "  replay_lsn at the primary's WAL position (WAL catch-up); Redis until the primary lists the"
echo "  replica online at its replication offset and no AOF rewrite runs on it (restarted with"
echo "  --replicaof). Redis on its"
echo "  primary's log over the whole run: $RD_PARTIAL partial resyncs accepted, $RD_FULL full syncs."
echo "  ha-node sends a secondary whose last transaction is in its transaction log only the"
echo "  transactions it missed (catch-up); a full copy only when the histories diverged or it fell out of the log."
echo "- Full copy: ha-node: besecondary of a node with an empty data directory until it returns"
echo "  (the secondary has the copy durable); PostgreSQL: \`pg_basebackup -X stream -c fast\` until it"
echo "  exits (the copy fsync'ed); Redis: REPLICAOF of an empty replica until the primary lists it"
echo "  online at its offset **and** the replica's AOF rewrite after the sync has finished (before"
echo "  that the copy is not durable on the replica; diskless sync, delay 0). Redis re-joins are"
echo "  timed to the same point."
[ "$BIG" = 1 ] || echo "- 1 GiB full copies: not run (BENCH_PEERS_1G=1 runs them; filling three systems to 1 GiB takes minutes)."
echo
echo "## Raw figures"
echo
echo '```'
grep '^BENCH' "$ALL" | sed 's/^BENCH //'
echo '```'
} >"$WORK/PEERS.md"
mkdir -p "$(dirname "$OUT")"
cp "$WORK/PEERS.md" "$OUT"
splice_raft "$OUT"
say "written ${OUT#$ROOT/}"
sed -n '/^## Ratios/,/^## Absolute/p' "$OUT" | grep -v '^## Absolute' >&2
