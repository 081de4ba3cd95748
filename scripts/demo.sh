#!/usr/bin/env bash
# make demo: a local three-node cluster on loopback, driven through the
# library (ha-ctl is a thin CLI over it), with mutual TLS between the nodes
# (a throw-away CA and node certificates made with openssl). Prints each
# step and what the library returned.
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
NODE=$BIN/ha-node
CTL=$BIN/ha-ctl
export HA_CTL_TOKEN=demo-secret
HA_PORT=${DEMO_HA_PORT:-14570}
IPC_PORT=${DEMO_IPC_PORT:-14565}
TICK=${DEMO_TICK:-300ms}
WORK=$(mktemp -d /tmp/ha-demo.XXXXXX)
declare -A PID

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ip_of() { echo "127.0.0.$1"; }

# Runs ha-ctl against node N, printing the command and what came back.
ctl() {
    local n=$1; shift
    printf '  $ ha-ctl -a %s -p %s %s\n' "$(ip_of "$n")" "$IPC_PORT" "$*"
    local out rc
    out=$("$CTL" -a "$(ip_of "$n")" -p "$IPC_PORT" "$@" 2>&1); rc=$?
    if [ -n "$out" ]; then printf '%s\n' "$out" | sed 's/^/    /'; fi
    printf '    -> %s\n' "$([ $rc = 0 ] && echo CONFD_OK || echo "CONFD_ERR (exit $rc)")"
    return $rc
}

# A throw-away CA, and for each node a key and a certificate that names its
# HA address (IP SAN) and serves as TLS server and client certificate.
make_certs() {
    local d=$WORK/tls
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj "/CN=ha-node demo CA" -keyout "$d/ca-key.pem" -out "$d/ca.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        2>/dev/null || return 1
    for n in 1 2 3; do
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=n$n" \
            -keyout "$d/n$n-key.pem" -out "$d/n$n.csr" 2>/dev/null || return 1
        printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n' \
            "$(ip_of "$n")" >"$d/n$n.ext"
        openssl x509 -req -in "$d/n$n.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" -CAcreateserial \
            -days 1 -extfile "$d/n$n.ext" -out "$d/n$n.pem" 2>/dev/null || return 1
    done
}

start_node() {
    local n=$1
    mkdir -p "$WORK/n$n"
    "$NODE" --ipc-addr "$(ip_of "$n"):$IPC_PORT" --ha-addr "$(ip_of "$n"):$HA_PORT" \
        --data-dir "$WORK/n$n/data" --tick-timeout "$TICK" \
        --ha-tls-ca "$WORK/tls/ca.pem" --ha-tls-cert "$WORK/tls/n$n.pem" \
        --ha-tls-key "$WORK/tls/n$n-key.pem" 2>>"$WORK/n$n/log" &
    PID[$n]=$!
    # Ready when the IPC port accepts connections.
    for _ in $(seq 1 100); do
        if "$CTL" -a "$(ip_of "$n")" -p "$IPC_PORT" txid >/dev/null 2>&1; then
            echo "  node n$n up: ipc $(ip_of "$n"):$IPC_PORT, ha $(ip_of "$n"):$HA_PORT, pid ${PID[$n]}"
            return 0
        fi
        sleep 0.05
    done
    echo "node n$n did not start; its log:"; cat "$WORK/n$n/log"; exit 1
}

# Polls node N until its state is $2 (at most ~5 s).
wait_state() {
    local n=$1 want=$2
    for _ in $(seq 1 100); do
        if "$CTL" -a "$(ip_of "$n")" -p "$IPC_PORT" status 2>/dev/null | grep -q "^state: $want\$"; then
            return 0
        fi
        sleep 0.05
    done
    echo "  node n$n never reached state $want"; return 1
}

copies() { "$CTL" -a "$(ip_of "$1")" -p "$IPC_PORT" stats 2>/dev/null | awk '$1=="full_copies_received"{print $2}'; }

# Polls node N until it has received at least one full copy (at most ~10 s):
# an async join reports SECONDARY at once (as ConfD), before its copy is in.
wait_copied() {
    local n=$1
    for _ in $(seq 1 200); do
        [ "$(copies "$n")" -ge 1 ] 2>/dev/null && return 0
        sleep 0.05
    done
    echo "  node n$n never finished its full copy"; return 1
}

cleanup() {
    [ -n "${WATCH:-}" ] && kill "$WATCH" 2>/dev/null
    for p in "${PID[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

[ -x "$NODE" ] && [ -x "$CTL" ] || { echo "build first: cargo build --release --workspace"; exit 1; }
command -v openssl >/dev/null || { echo "the demo makes its certificates with openssl: apt-get install openssl"; exit 1; }
make_certs || { echo "openssl could not make the demo certificates"; exit 1; }

bold "1. Three ha-node processes on 127.0.0.1-3 (HA port $HA_PORT, tick $TICK); all start in NONE"
echo "  mutual TLS on the HA port: a throw-away CA and one certificate per node in $WORK/tls"
for n in 1 2 3; do start_node $n; done
ctl 1 status

bold "2. n1 becomes primary and gets its first configuration"
ctl 1 primary n1
ctl 1 set /system/hostname demo-router

bold "3. n2 joins synchronously, n3 asynchronously; both need a full copy of n1's store"
# Watch n2's HA events in the background (printed at step 6).
"$CTL" -a "$(ip_of 2)" -p "$IPC_PORT" watch >"$WORK/n2-events" 2>&1 &
WATCH=$!
ctl 2 secondary n2 n1 "$(ip_of 1)"
ctl 3 secondary n3 n1 "$(ip_of 1)" --async
wait_state 3 secondary && wait_copied 3
ctl 1 status
echo "  full copies received: n2 $(copies 2), n3 $(copies 3)"

bold "4. A commit on the primary is on both secondaries when it returns"
ctl 1 set /servers/server{www}/port 8080 --type uint16
ctl 2 get /system/hostname
ctl 3 get /servers/server{www}/port
ctl 3 list /servers

bold "5. A write on a secondary is refused"
ctl 2 set /system/hostname rogue

bold "6. Failover: kill -9 of the primary n1; the secondaries notice and go to NONE"
kill -9 "${PID[1]}"; wait "${PID[1]}" 2>/dev/null; unset 'PID[1]'
wait_state 2 none && wait_state 3 none
ctl 2 status
echo "  HA events seen on n2 (ha-ctl watch):"
sed 's/^/    /' "$WORK/n2-events"

bold "7. The HA framework promotes n2; n3 re-joins it without a full copy (same transaction id)"
before=$(copies 3)
ctl 2 primary n2
ctl 3 secondary n3 n2 "$(ip_of 2)"
after=$(copies 3)
echo "  full copies received by n3: before $before, after $after"

bold "8. n1 restarts from its data directory and re-joins as a secondary, without a full copy"
start_node 1
ctl 1 get /system/hostname
ctl 1 secondary n1 n2 "$(ip_of 2)"
echo "  full copies received by n1 since its restart: $(copies 1)"
ctl 2 status

bold "9. A commit on the new primary reaches both"
ctl 2 set /system/hostname demo-router-2
ctl 1 get /system/hostname
ctl 3 get /system/hostname
ctl 2 txid

bold "Done; stopping the cluster"
