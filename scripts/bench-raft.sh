# HA Raft mode beside etcd 3.4 (issue 13, "Performance"): sourced by scripts/bench-peers.sh,
# which provides $LOAD (build/bench/peers_load), $WORK, $ALL, $RELEASE, PIDS, say, die,
# free_port, wait_tcp, bench, rec, $ROUNDS, $LAT_N, $TPUT_S and $QUICK.
#
# Both systems: 3 members on loopback in one run, election timeout 1000 ms and heartbeat
# interval 100 ms (etcd's defaults, set explicitly on both), one ~100-byte value per
# transaction through each system's client (libconfd_ha's cha_* data API on the leader;
# etcd's v3 JSON gateway on its leader). Interleaved rounds of: one client (p50/p99), then
# 8 and 32 clients for $TPUT_S s each (throughput, and the p50/p99 of every commit made).
# Then failover, $RAFT_FO_REPS times each, interleaved: peers_load kills the leader with
# SIGKILL and commits on the surviving members in turn (each try cut after 250 ms) until
# one commit succeeds; the time from the kill to that reply is the failover time. The
# killed member is restarted and the cluster made whole before the next measurement.
#
# raft_bench writes its section to $WORK/RAFT.md; splice_raft puts it into a results file
# between the markers (replacing an older one), so BENCH_ONLY=raft rewrites only it.

RAFT_ET_MS=1000
RAFT_HB_MS=100
RAFT_FO_REPS=${BENCH_RAFT_FAILOVERS:-$([ "$QUICK" = 1 ] && echo 2 || echo 5)}
RAFT_BEGIN='<!-- raft:begin: written by make bench-peers (BENCH_ONLY=raft rewrites only this section) -->'
RAFT_END='<!-- raft:end -->'

# ---- ha-node in mode = "raft": 127.0.0.11-13 ----
RA_IPC=$(free_port); RA_PORT=$(free_port)
RA_PID=("" "" "" "")
ra_ip() { echo "127.0.0.$(( 10 + $1 ))"; }
ra_addr() { echo "$(ra_ip "$1"):$RA_PORT"; }
ra_q() { local i=$1; shift; timeout 5 "$RELEASE/ha-ctl" -a "$(ra_ip "$i")" -p "$RA_IPC" "$@" 2>/dev/null; }
ra_field() { # I FIELD: one field of node I's raft status (empty if no answer)
    ra_q "$1" raft status --json | python3 -c 'import json,sys
try: v=json.load(sys.stdin).get(sys.argv[1])
except Exception: v=""
print("" if v is None else v)' "$2"
}
ra_start() { # I
    local i=$1 k seeds=""
    for k in 1 2 3; do [ "$k" = "$i" ] || seeds+="${seeds:+, }\"$(ra_addr "$k")\""; done
    mkdir -p "$WORK/raft/$i"
    cat >"$WORK/raft/$i.toml" <<EOF
ipc-addr = "$(ra_ip "$i"):$RA_IPC"
data-dir = "$WORK/raft/$i/data"
log-level = "warn"
mode = "raft"

[raft]
cluster-name = "bench"
node-address = "$(ra_addr "$i")"
seed-nodes = [$seeds]
election-timeout = "${RAFT_ET_MS}ms"
heartbeat-interval = "${RAFT_HB_MS}ms"
token-file = "$WORK/raft/token"
EOF
    "$RELEASE/ha-node" --config "$WORK/raft/$i.toml" 2>>"$WORK/raft/$i.log" &
    RA_PID[$i]=$!; PIDS+=($!)
    wait_tcp "$(ra_ip "$i")" "$RA_IPC" "${RA_PID[$i]}" || { cat "$WORK/raft/$i.log" >&2; die "raft node $i did not start"; }
}
ra_leader() { local i; for i in 1 2 3; do [ "$(ra_field "$i" role)" = leader ] && { echo "$i"; return 0; }; done; return 1; }
# Until one leader, the other two its followers, all three at the same applied index.
ra_whole() {
    local _ l a b c
    for _ in $(seq 1 600); do
        if l=$(ra_leader); then
            a=$(ra_field 1 applied_index); b=$(ra_field 2 applied_index); c=$(ra_field 3 applied_index)
            [ -n "$a" ] && [ "$a" = "$b" ] && [ "$b" = "$c" ] && return 0
        fi
        sleep 0.1
    done
    die "the raft cluster did not become whole (logs in $WORK/raft)"
}
ra_setup() {
    mkdir -p "$WORK/raft"
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/raft/token"; echo >>"$WORK/raft/token"
    ra_start 1; ra_start 2; ra_start 3
    ra_q 1 raft create-cluster "$(ra_addr 2)" "$(ra_addr 3)" >/dev/null || die "raft create-cluster failed"
    ra_whole
}

# ---- etcd: 3 members on 127.0.0.1 ----
declare -A EB_CLIENT EB_PEER EB_PID
EB_CLUSTER=""
eb_start() { # K
    local k=$1
    etcd --name "b$k" --data-dir "$WORK/etcd-raft/$k" \
        --listen-client-urls "http://127.0.0.1:${EB_CLIENT[$k]}" --advertise-client-urls "http://127.0.0.1:${EB_CLIENT[$k]}" \
        --listen-peer-urls "http://127.0.0.1:${EB_PEER[$k]}" --initial-advertise-peer-urls "http://127.0.0.1:${EB_PEER[$k]}" \
        --initial-cluster "$EB_CLUSTER" --initial-cluster-state new --initial-cluster-token bench-raft \
        --heartbeat-interval "$RAFT_HB_MS" --election-timeout "$RAFT_ET_MS" \
        --log-level error --logger zap 2>>"$WORK/etcd-raft/$k.log" &
    EB_PID[$k]=$!; PIDS+=($!)
}
eb_leader() {
    local k
    for k in 1 2 3; do
        if python3 -c 'import json,sys,urllib.request as u; d=json.load(u.urlopen(u.Request(sys.argv[1], data=b"{}"), timeout=2)); sys.exit(0 if d.get("leader")==d["header"]["member_id"] else 1)' \
            "http://127.0.0.1:${EB_CLIENT[$k]}/v3/maintenance/status" 2>/dev/null; then echo "$k"; return 0; fi
    done
    return 1
}
# Until every member answers a commit.
eb_whole() {
    local k _
    for k in 1 2 3; do
        for _ in $(seq 1 300); do timeout 5 "$LOAD" --sys etcd --addr "127.0.0.1:${EB_CLIENT[$k]}" lat 1 >/dev/null 2>&1 && break; sleep 0.1; done
        timeout 10 "$LOAD" --sys etcd --addr "127.0.0.1:${EB_CLIENT[$k]}" lat 1 >/dev/null 2>&1 || die "etcd member $k does not commit"
    done
    eb_leader >/dev/null || die "etcd has no leader"
}
eb_setup() {
    local k
    mkdir -p "$WORK/etcd-raft"
    for k in 1 2 3; do EB_CLIENT[$k]=$(free_port); EB_PEER[$k]=$(free_port); EB_CLUSTER+="${EB_CLUSTER:+,}b$k=http://127.0.0.1:${EB_PEER[$k]}"; done
    for k in 1 2 3; do eb_start "$k"; done
    eb_whole
}

# ---- per system: leader address, all member pids, the others' addresses, restart ----
rs_addr() { case $1 in raft) echo "$(ra_ip "$(ra_leader)"):$RA_IPC";; etcd) echo "127.0.0.1:${EB_CLIENT[$(eb_leader)]}";; esac; }
rs_sys() { case $1 in raft) echo ha;; *) echo "$1";; esac; }  # peers_load's --sys
rs_cpu() { case $1 in raft) echo "${RA_PID[1]},${RA_PID[2]},${RA_PID[3]}";; etcd) echo "${EB_PID[1]},${EB_PID[2]},${EB_PID[3]}";; esac; }

raft_failover() { # SYS REP
    local s=$1 l k pid others=""
    case $s in
    raft) l=$(ra_leader) || die "raft: no leader"; pid=${RA_PID[$l]}
          for k in 1 2 3; do [ "$k" = "$l" ] || others+="${others:+,}$(ra_ip "$k"):$RA_IPC"; done ;;
    etcd) l=$(eb_leader) || die "etcd: no leader"; pid=${EB_PID[$l]}
          for k in 1 2 3; do [ "$k" = "$l" ] || others+="${others:+,}127.0.0.1:${EB_CLIENT[$k]}"; done ;;
    esac
    bench --sys "$(rs_sys "$s")" --addr 127.0.0.1:1 --name "$s.fo$2" failover "$pid" "$others" 30000 \
        || die "$s: no commit after the leader was killed"
    wait "$pid" 2>/dev/null || true
    case $s in
    raft) ra_start "$l"; ra_whole ;;
    etcd) eb_start "$l"; eb_whole ;;
    esac
}

raft_bench() {
    local r j s a c cl k
    say "HA Raft mode beside etcd, 3 members each (work dir $WORK)"
    ra_setup; eb_setup
    local sys=(raft etcd)
    for r in $(seq 1 "$ROUNDS"); do
        say "raft vs etcd: round $r of $ROUNDS"
        for j in 0 1; do
            s=${sys[$(( (j + r) % 2 ))]}
            a=$(rs_addr "$s"); c=$(rs_cpu "$s")
            bench --sys "$(rs_sys "$s")" --addr "$a" --name "$s.m3" --samples "$WORK/lat.$s.m3" lat "$LAT_N"
            for cl in 8 32; do
                bench --sys "$(rs_sys "$s")" --addr "$a" --cpu-pids "$c" --name "$s.m3.r$r" tput "$cl" "$TPUT_S"
            done
            printf '   %-5s p50 %s us  tput8 %s/s  tput32 %s/s\n' "$s" \
                "$(awk -v k="$s.m3.lat.p50" '$2==k {v=$3} END {print v}' "$ALL")" \
                "$(awk -v k="$s.m3.r$r.tput8" '$2==k {v=$3} END {print v}' "$ALL")" \
                "$(awk -v k="$s.m3.r$r.tput32" '$2==k {v=$3} END {print v}' "$ALL")" >&2
        done
    done
    for k in $(seq 1 "$RAFT_FO_REPS"); do
        say "raft vs etcd: failover $k of $RAFT_FO_REPS"
        for j in 0 1; do raft_failover "${sys[$(( (j + k) % 2 ))]}" "$k"; done
        printf '   failover: raft %s ms, etcd %s ms\n' \
            "$(awk -v k="raft.fo$k.failover" '$2==k {v=$3} END {print v}' "$ALL")" \
            "$(awk -v k="etcd.fo$k.failover" '$2==k {v=$3} END {print v}' "$ALL")" >&2
    done
    raft_report >"$WORK/RAFT.md"
}

# ---- the section ----
rb_pctl() { [ -s "$1" ] || { echo n/a; return; }; sort -n "$1" | awk -v p="$2" '{v[NR]=$1} END {i=int((NR-1)*p+0.5)+1; print v[i]}'; }
rb_med() { awk -v re="$1" '$1=="BENCH" && $2 ~ re {print $3}' "$ALL" | sort -n | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]; else print "n/a"}'; }
rb_max() { awk -v re="$1" '$1=="BENCH" && $2 ~ re {if ($3>m) m=$3; n++} END {if (n) print m; else print "n/a"}' "$ALL"; }
rb_all() { awk -v re="$1" '$1=="BENCH" && $2 ~ re {printf "%s%.0f", (n++ ? ", " : ""), $3} END {if (!n) print "n/a"}' "$ALL"; }
rb_ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a=="n/a" || b=="n/a" || b+0==0) print "–"; else printf "%.2fx", a/b}'; }
rb_goal() { # LABEL VALUE OP LIMIT  (VALUE like 0.53x)
    local v=${2%x}
    if [ "$v" = "–" ]; then echo "- $1: not measured"; return; fi
    if awk -v v="$v" -v l="$4" -v op="$3" 'BEGIN {exit !((op=="le" && v<=l) || (op=="ge" && v>=l))}'; then
        echo "- $1: $2 — met"
    else
        echo "- $1: $2 — **missed**"
    fi
}
raft_report() {
    local s cl
    declare -A P50 P99 T CPU
    for s in raft etcd; do
        P50[$s,1]=$(rb_pctl "$WORK/lat.$s.m3" 0.5); P99[$s,1]=$(rb_pctl "$WORK/lat.$s.m3" 0.99)
        for cl in 8 32; do
            P50[$s,$cl]=$(rb_med "^$s[.]m3[.]r[0-9]+[.]lat$cl[.]p50\$"); P99[$s,$cl]=$(rb_med "^$s[.]m3[.]r[0-9]+[.]lat$cl[.]p99\$")
            T[$s,$cl]=$(rb_med "^$s[.]m3[.]r[0-9]+[.]tput$cl\$"); CPU[$s,$cl]=$(rb_med "^$s[.]m3[.]r[0-9]+[.]cpu$cl\$")
        done
        FO_MED[$s]=$(rb_med "^$s[.]fo[0-9]+[.]failover\$"); FO_MAX[$s]=$(rb_max "^$s[.]fo[0-9]+[.]failover\$")
    done
    echo "$RAFT_BEGIN"
    echo "## HA Raft mode beside etcd 3.4 (3 members each)"
    echo
    echo "Issue 13, \"Performance\". Same run, same machine: ha-node $("$RELEASE/ha-node" --version 2>&1 | head -1 | awk '{print $NF}') ($(git rev-parse --short HEAD 2>/dev/null || echo unknown)) in \`mode = \"raft\"\`"
    echo "and etcd $(etcd --version | awk 'NR==1 {print $3}'), 3 members each on loopback, election timeout ${RAFT_ET_MS} ms and heartbeat"
    echo "interval ${RAFT_HB_MS} ms on both (etcd's defaults); date $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end;"
    echo "$ROUNDS interleaved round(s) of: $LAT_N single-client commits, then 8 and 32 clients for ${TPUT_S} s each;"
    echo "then $RAFT_FO_REPS failovers per system, interleaved."
    echo
    echo "A commit returns when: **ha-node Raft** (libconfd_ha \`cha_txn_commit\` on the leader) a majority"
    echo "has the entry durable in its Raft log and the leader has applied it to its store;"
    echo "**etcd** (v3 JSON gateway \`POST /v3/kv/put\` on the leader) a majority has fsync'ed it to its"
    echo "WAL and the leader has applied it. Failover: SIGKILL of the leader, then commits on the two"
    echo "other members in turn (each try cut after 250 ms; a member that is not leader refuses —"
    echo "ha-node — or forwards and waits — etcd) until one returns; kill → that reply."
    echo
    echo "| figure | ha-node Raft | etcd | ha-node / etcd |"
    echo "|---|---:|---:|---:|"
    echo "| commit p50, 1 client (µs) | ${P50[raft,1]} | ${P50[etcd,1]} | $(rb_ratio "${P50[raft,1]}" "${P50[etcd,1]}") |"
    echo "| commit p99, 1 client (µs) | ${P99[raft,1]} | ${P99[etcd,1]} | $(rb_ratio "${P99[raft,1]}" "${P99[etcd,1]}") |"
    for cl in 8 32; do
        echo "| commit p50, $cl clients (µs) | ${P50[raft,$cl]} | ${P50[etcd,$cl]} | $(rb_ratio "${P50[raft,$cl]}" "${P50[etcd,$cl]}") |"
        echo "| commit p99, $cl clients (µs) | ${P99[raft,$cl]} | ${P99[etcd,$cl]} | $(rb_ratio "${P99[raft,$cl]}" "${P99[etcd,$cl]}") |"
        echo "| throughput, $cl clients (commits/s) | ${T[raft,$cl]} | ${T[etcd,$cl]} | $(rb_ratio "${T[raft,$cl]}" "${T[etcd,$cl]}") |"
        echo "| server CPU per commit, $cl clients (µs, 3 members) | ${CPU[raft,$cl]} | ${CPU[etcd,$cl]} | $(rb_ratio "${CPU[raft,$cl]}" "${CPU[etcd,$cl]}") |"
    done
    echo "| failover, median (ms) | ${FO_MED[raft]} | ${FO_MED[etcd]} | $(rb_ratio "${FO_MED[raft]}" "${FO_MED[etcd]}") |"
    echo "| failover, worst (ms) | ${FO_MAX[raft]} | ${FO_MAX[etcd]} | $(rb_ratio "${FO_MAX[raft]}" "${FO_MAX[etcd]}") |"
    echo
    echo "Failover times, each (ms): ha-node Raft $(rb_all '^raft[.]fo[0-9]+[.]failover$'); etcd $(rb_all '^etcd[.]fo[0-9]+[.]failover$')."
    echo
    echo "Goals of issue 13 (a benchmark, not a test; medians over the rounds):"
    echo
    for cl in 8 32; do
        rb_goal "commit p50 at $cl clients ≤ 0.7x etcd's" "$(rb_ratio "${P50[raft,$cl]}" "${P50[etcd,$cl]}")" le 0.7
        rb_goal "throughput at $cl clients ≥ 1.5x etcd's" "$(rb_ratio "${T[raft,$cl]}" "${T[etcd,$cl]}")" ge 1.5
    done
    local lim=$(( RAFT_ET_MS + 100 ))
    if [ "${FO_MED[raft]}" = n/a ]; then echo "- failover ≤ election timeout + 100 ms ($lim ms): not measured"
    else
        echo "- failover ≤ election timeout + 100 ms ($lim ms): median ${FO_MED[raft]} ms, worst ${FO_MAX[raft]} ms — $(awk -v m="${FO_MED[raft]}" -v w="${FO_MAX[raft]}" -v l="$lim" 'BEGIN {if (w<=l) print "met"; else if (m<=l) print "**missed** by the worst"; else print "**missed**"}') (etcd: median ${FO_MED[etcd]} ms)"
    fi
    echo
    echo '```'
    grep -E '^BENCH (raft|etcd)[.](m3|fo)' "$ALL" | sed 's/^BENCH //'
    echo '```'
    echo "$RAFT_END"
}
declare -A FO_MED FO_MAX

# Puts $WORK/RAFT.md into FILE between the markers (replacing an older section, else at the end).
splice_raft() {
    local f=$1
    mkdir -p "$(dirname "$f")"
    [ -f "$f" ] || : >"$f"
    python3 - "$f" "$WORK/RAFT.md" "$RAFT_BEGIN" "$RAFT_END" <<'EOF'
import sys
path, sec, begin, end = sys.argv[1:5]
text = open(path).read()
new = open(sec).read().rstrip("\n") + "\n"
i, j = text.find(begin), text.find(end)
if i >= 0 and j > i:
    text = text[:i] + new + text[j + len(end):].lstrip("\n")
else:
    text = text.rstrip("\n") + ("\n\n" if text.strip() else "") + new
open(path, "w").write(text)
EOF
}
