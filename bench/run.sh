#!/bin/bash
# The full benchmark, in one command: build distbench, start a leader and two
# followers with the extension (as user postgres, scratch directory, Unix
# sockets), run every routing strategy under three lag scenarios, the
# wake-up and idle-waiter measurements, the commit-path cost
# (bench/commitcost.sh), the latency scenario (bench/latency.sh: through a latency-injecting
# proxy, with the anchors), write bench/results.md and its figures in
# bench/figures/, and stop everything.  About 12 minutes on 2 cores.
#
#   bash bench/run.sh            # as root, from anywhere; the extension must
#                                # be installed (make install, or test/check.sh)
#
# Knobs (environment): SESSIONS (100), READS (5 per write), THINK_MS (50),
# DURATION (8 s per strategy), PGBENCH_ROUNDS (30 pairs) and
# PGBENCH_SECONDS (3 s each) for bench/commitcost.sh, OUT (bench/results.md); KEEP_WORK=DIR keeps the raw
# tables and TSV files there (bench/report.sh DIR ... rebuilds the report).
set -euo pipefail

cd "$(dirname "$0")/.."
. bench/cluster.sh
. bench/latency.sh      # latency_measure, latency_report

SESSIONS=${SESSIONS:-100}
READS=${READS:-5}
THINK_MS=${THINK_MS:-50}
DURATION=${DURATION:-8}
SPIKE_DURATION=${SPIKE_DURATION:-10}
WAIT_MS=${WAIT_MS:-100}
PGBENCH_ROUNDS=${PGBENCH_ROUNDS:-30}
PGBENCH_SECONDS=${PGBENCH_SECONDS:-3}
OUT=${OUT:-bench/results.md}

started=$(date +%s)
bench_begin distbench-run

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
# other busy processes on the machine when the run starts (it may be shared)
ps -eo pcpu=,args= --sort=-pcpu | awk '$1 >= 10 { $1 = $1 "%"; print }' | head -5 \
    | cut -c1-100 > "$WORK/busy.txt" || true
echo "== leader and two followers"
cluster_start 2 >/dev/null
echo "   in $CLUSTER_DIR"

STRATS="leader,naive,time:100,time:2000,time:15000,check,wait:$WAIT_MS,check-pipe,wait-pipe:$WAIT_MS"
COMMON=(--leader "$LEADER" --follower "${FOLLOWERS[0]}" --follower "${FOLLOWERS[1]}"
        --sessions "$SESSIONS" --reads "$READS" --think-ms "$THINK_MS"
        --tsv "$WORK/route.tsv")

echo "== scenario 1: natural lag under a heavy write load"
bench/distbench route "${COMMON[@]}" --scenario natural --duration "$DURATION" \
    --bg-writers 2 --bg-rows 1000 --strategies "$STRATS,wait-fn:$WAIT_MS" \
    --markdown "$WORK/natural.md" || echo "   (consistency checks failed: see the table)"

echo "== scenario 2: 50 ms apply delay on follower 1"
bench/distbench route "${COMMON[@]}" --scenario delay --duration "$DURATION" \
    --delay-ms 50 --delay-on 1 --strategies "$STRATS" \
    --markdown "$WORK/delay.md" || echo "   (consistency checks failed: see the table)"

echo "== scenario 3: replay paused on both followers for 3 s in each run"
bench/distbench route "${COMMON[@]}" --scenario spike --duration "$SPIKE_DURATION" \
    --pause-at 3 --pause-len 3 --pause-on all --strategies "$STRATS" \
    --markdown "$WORK/spike.md" || echo "   (consistency checks failed: see the table)"

echo "== wake-up latency and idle waiters"
bench/distbench wake --leader "$LEADER" --follower "${FOLLOWERS[0]}" \
    --rounds-one 200 --rounds-many 10 --waiters 200 --cpu-seconds 5 \
    --markdown "$WORK/wake.md" --tsv "$WORK/wake.tsv"
# 1,000 waiters at once: 1,000 connections to follower 1 (and as many files)
as_pg "$PGBIN/pg_ctl" -D "$CLUSTER_DIR/follower1" -m fast -w -o "-c max_connections=1100" \
    -l "$CLUSTER_DIR/follower1.log" restart >/dev/null
( ulimit -n "$(ulimit -Hn)"
  bench/distbench wake --leader "$LEADER" --follower "${FOLLOWERS[0]}" \
      --rounds-one 0 --rounds-many 10 --waiters 1000 --cpu-seconds 5 \
      --markdown "$WORK/wake.md" )

cluster_stop

echo "== commit path: pgbench on a leader with and one without the library, at once (bench/commitcost.sh)"
# its own two leaders, from one data directory; the instruction count
# under callgrind beside the paired timings
PG_CONFIG=$PG_CONFIG ROUNDS=$PGBENCH_ROUNDS RUN_SECONDS=$PGBENCH_SECONDS TSV="$WORK/commitcost.tsv" \
    bash bench/commitcost.sh > "$WORK/commitcost.md"

echo "== latency scenario: leader $LEADER_RTT_MS ms, followers $FOLLOWER_RTT_MS ms away (latproxy)"
latency_measure "$WORK"

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(( $(date +%s) - started ))
echo "== writing $OUT (run took ${elapsed} s)"
bash bench/report.sh "$WORK" "$OUT" "$LOAD_BEFORE" "$LOAD_AFTER" "$elapsed" \
    "$SESSIONS" "$READS" "$THINK_MS" "$DURATION" "$SPIKE_DURATION" "$WAIT_MS" \
    "$PGBENCH_ROUNDS" "$PGBENCH_SECONDS"
latency_report "$WORK" "$OUT"
echo "== done: $OUT"
