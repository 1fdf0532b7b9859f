#!/bin/bash
# wakecost.sh - instructions a woken waiter's backend executes per wait,
# deterministic where wake-up latency is not.
#
#   sudo bash bench/wakecost.sh [PG_CONFIG]
#
# A leader and one follower; the follower runs under valgrind (callgrind,
# every process it forks profiled to a file of its own).  distbench wake
# (bench/micro.c) runs rounds of W waiters woken at once, first R1 rounds
# and then, on a fresh follower, R2 rounds; the waiters' backends write
# their profiles when they exit.  Per woken statement = (instructions of
# the W backends after R2 rounds - after R1) / (W x (R2 - R1)), so
# connection set-up and the first statement's planning cancel out.
#
# The same for --floor: the waiters' statement blocks on an advisory lock
# that the control session releases, so that PostgreSQL wakes them (no
# extension in the path): the floor of one statement woken from a sleep.
# The extension's wait is also measured with the library's functions
# broken out (callgrind_annotate, inclusive), to see what is ours.
#
# Environment: W (20), R1 (5), R2 (25); PG_CONFIG or the argument, and
# BASE_PORT, as bench/cluster.sh reads them.
# Prints a markdown table on stdout (progress on stderr).  Run as root;
# servers run as postgres.  Installs valgrind with apt-get if missing.
set -euo pipefail

cd "$(dirname "$0")/.."
PG_CONFIG=${1:-${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}}
W=${W:-20}
R1=${R1:-5}
R2=${R2:-25}

if ! command -v valgrind >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi
make -s -C bench PG_CONFIG="$PG_CONFIG"

log() { echo "wakecost: $*" >&2; }

# The leader and follower of bench/cluster.sh; the follower, stopped, is
# the copy every measured run starts from, under valgrind.
. bench/cluster.sh
FPID=
stop_follower() {
    [ -n "$FPID" ] || return 0
    as_pg "$PGBIN/pg_ctl" -D "$WORK/follower" -m fast -w -t 600 stop >/dev/null 2>&1 || true
    wait "$FPID" 2>/dev/null || true
    FPID=
}
trap 'stop_follower; cluster_stop' EXIT
cluster_start 1 >/dev/null
WORK=$CLUSTER_DIR
FOLLOWER=${FOLLOWERS[0]}
FPORT=$((BASE_PORT + 1))
# plain conninfo: see bench/micro.sh on relocatable builds' libpq
echo "primary_conninfo = 'host=$WORK port=$BASE_PORT user=postgres'" \
    >> "$WORK/follower1/postgresql.auto.conf"
cluster_stop_node follower1
mv "$WORK/follower1" "$WORK/pristine"

start_follower() {  # a fresh copy of the standby, under callgrind
    rm -rf "$WORK/follower" "$WORK"/cg.*
    cp -a "$WORK/pristine" "$WORK/follower"
    as_pg env -C "$WORK" valgrind --quiet --tool=callgrind --cache-sim=no \
        --callgrind-out-file="$WORK/cg.%p" \
        "$PGBIN/postgres" -D "$WORK/follower" >"$WORK/follower.log" 2>&1 &
    FPID=$!
    for _ in $(seq 1 900); do
        as_pg "$PGBIN/pg_isready" -q -h "$WORK" -p "$FPORT" && return 0
        sleep 0.2
    done
    log "the follower did not start"; exit 1
}
settle() {  # until every listed pid has written its profile
    local pid
    for _ in $(seq 1 600); do
        local missing=0
        for pid in $(cat "$WORK/pids"); do
            [ -s "$WORK/cg.$pid" ] || missing=1
        done
        [ "$missing" = 0 ] && { sleep 1; return 0; }
        sleep 0.5
    done
    log "profiles missing"; exit 1
}
library_self() {  # instructions in the library's own functions (self cost)
    callgrind_annotate --threshold=100 "$1" 2>/dev/null \
        | awk '$0 ~ /[?:](Dist[A-Z]|distributed_)/ { gsub(/,/, "", $1); t += $1 } END { printf "%.0f\n", t }'
}
waiters_ir() {  # waiters_ir ROUNDS [--floor] -> instructions of the W waiters: all, the library's own
    start_follower
    as_pg bench/distbench wake --leader "$LEADER" --follower "$FOLLOWER" \
        --waiters "$W" --rounds-one 0 --rounds-many "$1" --cpu-seconds 0 \
        --pids "$WORK/pids" ${2:-} >/dev/null 2>"$WORK/distbench.log" \
        || { log "distbench failed: $(cat "$WORK/distbench.log")"; exit 1; }
    settle
    local total=0 ours=0 pid ir
    for pid in $(cat "$WORK/pids"); do
        ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$WORK/cg.$pid")
        total=$((total + ir))
        ours=$((ours + $(library_self "$WORK/cg.$pid")))
    done
    [ "$1" = "$R2" ] && [ -z "${2:-}" ] && cp "$WORK/cg.$(head -1 "$WORK/pids")" "$WORK/profile.ext"
    stop_follower
    echo "$total $ours"
}
chmod 755 bench/distbench 2>/dev/null || true

declare -A PER OURS
for mode in ext floor; do
    flag=
    [ "$mode" = floor ] && flag=--floor
    log "$mode: $W waiters, $R1 rounds"
    read -r a a_ours <<<"$(waiters_ir "$R1" $flag)"
    log "$mode: $W waiters, $R2 rounds"
    read -r b b_ours <<<"$(waiters_ir "$R2" $flag)"
    per() { awk -v a="$1" -v b="$2" -v w="$W" -v r1="$R1" -v r2="$R2" \
        'BEGIN { printf "%.0f", (b - a) / (w * (r2 - r1)) }'; }
    PER[$mode]=$(per "$a" "$b")
    OURS[$mode]=$(per "$a_ours" "$b_ours")
    log "  $mode: $a, $b instructions: ${PER[$mode]} per woken statement, ${OURS[$mode]} in the library's own functions"
done

# the library's functions in one waiter's profile (R2 rounds), inclusive
ours=$(callgrind_annotate --inclusive=yes --threshold=100 "$WORK/profile.ext" 2>/dev/null \
    | awk -v n="$R2" '$0 ~ /distributed\.so|Dist[A-Z]|distributed_/ {
        gsub(/,/, "", $1); name = $0; sub(/^[^ ]+ +(\([^)]*\) +)?/, "", name)
        sub(/ \[.*$/, "", name); printf "%s\t%.0f\n", name, $1 / n }' | head -25)

cat <<EOF
| per woken statement, $("$PGBIN/postgres" --version | sed 's/^postgres (PostgreSQL) //') ($W waiters woken at once, rounds $R1 vs $R2) | instructions |
|---|---|
| \`SELECT distributed.wait(token, 60000)\`, woken by the replay watcher | ${PER[ext]} |
| of which in the library's own functions (self cost: not the server or libc functions they call) | ${OURS[ext]} |
| floor: a statement woken from an advisory lock (\`--floor\`, no extension) | ${PER[floor]} |
| difference | $((PER[ext] - PER[floor])) |

<details><summary>the library's functions, inclusive instructions per woken wait (one waiter's profile)</summary>

\`\`\`
$ours
\`\`\`
</details>
EOF
