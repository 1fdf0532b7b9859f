#!/bin/bash
# The micro part of the benchmark alone -- wake-up latency of replay
# waiters and the cost of idle ones (bench/micro.c) -- on a fresh leader
# and follower for each PostgreSQL installation named by its pg_config:
#
#   bash bench/micro.sh                                # Debian's PostgreSQL 15
#   bash bench/micro.sh /opt/pg/16/bin/pg_config /opt/pg/17/bin/pg_config
#
# The extension must be installed in each.  Run as root (servers run as
# RUN_AS, default postgres).  Knobs (environment): MANY ("200 1000": the
# waiter counts woken at once), ROUNDS_ONE (200 single-waiter rounds, with
# the first count), ROUNDS_MANY (10), CPU_S (5 s per idle measurement),
# OUT (markdown, appended; default stdout), WAKE_FLAGS (more distbench wake
# options, e.g. --floor: PostgreSQL's own wake-up from an advisory lock).
set -euo pipefail

cd "$(dirname "$0")/.."

configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(/usr/lib/postgresql/15/bin/pg_config)
MANY=${MANY:-"200 1000"}
ROUNDS_ONE=${ROUNDS_ONE:-200}
ROUNDS_MANY=${ROUNDS_MANY:-10}
CPU_S=${CPU_S:-5}
OUT=${OUT:-/dev/stdout}
# 1,000 waiters need 1,000 connections to the follower, and as many files
make -s -C bench PG_CONFIG="${configs[0]}"
ulimit -n "$(ulimit -Hn)"

CLUSTER_DIR=
trap 'cluster_stop' EXIT
trap 'exit 1' INT TERM

for pgc in "${configs[@]}"; do
    PG_CONFIG=$pgc
    . bench/cluster.sh
    cluster_start 1 >/dev/null
    as_pg "$PGBIN/pg_ctl" -D "$CLUSTER_DIR/follower1" -m fast -w \
        -o "-c max_connections=1100" -l "$CLUSTER_DIR/follower1.log" restart >/dev/null
    {
        echo "Run $(date -u '+%Y-%m-%d %H:%M UTC'), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo
    } >>"$OUT"
    first=1
    for n in $MANY; do
        one=0
        [ "$first" = 1 ] && one=$ROUNDS_ONE
        first=0
        bench/distbench wake --leader "$LEADER" --follower "${FOLLOWERS[0]}" \
            --waiters "$n" --rounds-one "$one" --rounds-many "$ROUNDS_MANY" \
            --cpu-seconds "$CPU_S" --markdown "$OUT" ${WAKE_FLAGS:-}
    done
    echo "Load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT"
    echo >>"$OUT"
    cluster_stop
done
