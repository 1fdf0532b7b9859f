#!/bin/bash
# The full benchmark, in one command: build distbench, start a leader and two
# followers with the extension (as user postgres, scratch directory, Unix
# sockets), run every routing strategy under three lag scenarios, the
# wake-up and idle-waiter measurements and the commit-overhead pgbench
# runs, the latency scenario (bench/latency.sh: through a latency-injecting
# proxy, with the anchors), write bench/results.md and its figures in
# bench/figures/, and stop everything.  About 12 minutes on 2 cores.
#
#   bash bench/run.sh            # as root, from anywhere; the extension must
#                                # be installed (make install, or test/check.sh)
#
# Knobs (environment): SESSIONS (100), READS (5 per write), THINK_MS (50),
# DURATION (8 s per strategy), PGBENCH_ROUNDS (10 alternations),
# PGBENCH_SECONDS (3), OUT (bench/results.md); KEEP_WORK=DIR keeps the raw
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
PGBENCH_ROUNDS=${PGBENCH_ROUNDS:-10}
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

echo "== commit overhead: pgbench with and without the library, interleaved"
cluster_stop_node follower2
cluster_stop_node follower1
PGB_CONN=(-h "$CLUSTER_DIR" -p "$BASE_PORT" -U postgres postgres)
as_pg "$PGBIN/pgbench" -i -q -s 5 "${PGB_CONN[@]}" >/dev/null 2>&1
# CPU seconds used by the leader: the postmaster, its live children, and
# (cutime, cstime) the children it has reaped, such as pgbench's backends
leader_cpu() {
    local pm
    pm=$(head -1 "$CLUSTER_DIR/leader/postmaster.pid")
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v pm="$pm" -v hz="$(getconf CLK_TCK)" '
        { line = $0; pid = $1; sub(/^.*\) /, "", line); split(line, f, " ")
          if (pid == pm) t += f[12] + f[13] + f[14] + f[15]
          else if (f[2] == pm) t += f[12] + f[13] }
        END { printf "%.2f\n", t / hz }'
}
pgbench_run() {  # pgbench_run with|without round
    local libs=distributed out tps txns cpu0 cpu1
    [ "$1" = with ] || libs=
    cluster_restart_leader "-c shared_preload_libraries=$libs"
    [ "$(as_pg "$PGBIN/psql" -XAt "${PGB_CONN[@]}" -c 'SHOW shared_preload_libraries')" = "$libs" ] \
        || { echo "shared_preload_libraries is not '$libs'" >&2; exit 1; }
    # warm the buffer cache, then measure
    PGOPTIONS='-c distributed.session_key=bench' \
        as_pg "$PGBIN/pgbench" -n -N -M prepared -c 4 -j 2 -T 1 "${PGB_CONN[@]}" >/dev/null 2>&1
    cpu0=$(leader_cpu)
    out=$(PGOPTIONS='-c distributed.session_key=bench' \
        as_pg "$PGBIN/pgbench" -n -N -M prepared -c 4 -j 2 -T "$PGBENCH_SECONDS" "${PGB_CONN[@]}" 2>/dev/null)
    sleep 0.2   # let the postmaster reap the backends
    cpu1=$(leader_cpu)
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$out")
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    echo "   round $2 $1 library: $tps TPS, $txns transactions, leader CPU $(calc_us "$cpu0" "$cpu1" "$txns") us per transaction"
    printf '%s\t%s\t%s\t%s\t%s\n' "$2" "$1" "$tps" "$txns" "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { print b - a }')" \
        >> "$WORK/pgbench.tsv"
}
calc_us() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }'; }
for r in $(seq 1 "$PGBENCH_ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then
        pgbench_run with "$r"; pgbench_run without "$r"
    else
        pgbench_run without "$r"; pgbench_run with "$r"
    fi
done
# Where the leader's CPU goes with the library: a profile of its processes
# during one more run with the library (skipped without perf).
if command -v perf >/dev/null 2>&1; then
    echo "   profiling one more run with the library (perf)"
    cluster_restart_leader "-c shared_preload_libraries=distributed"
    PGOPTIONS='-c distributed.session_key=bench' \
        as_pg "$PGBIN/pgbench" -n -N -M prepared -c 4 -j 2 -T 5 "${PGB_CONN[@]}" >/dev/null 2>&1 &
    bench_pid=$!
    sleep 1
    pids=$(pgrep -P "$(head -1 "$CLUSTER_DIR/leader/postmaster.pid")" | paste -sd, || true)
    if [ -n "$pids" ] && perf record -F 2999 -g -p "$pids" -o "$WORK/perf.data" -- sleep 3 >/dev/null 2>&1; then
        # children (inclusive) and self shares of the functions of interest
        perf report -i "$WORK/perf.data" --children --sort symbol -g none 2>/dev/null \
            | awk '$3 == "[.]" { gsub("%", "", $1); gsub("%", "", $2); print $4 "\t" $1 "\t" $2 }' \
            | grep -E '^(DistXactCallback|ReportChangedGUCOptions|DistRecordKey|set_config_option|DistFormatToken|CommitTransactionCommand)\b' \
            > "$WORK/perf.tsv" || true
        rm -f "$WORK/perf.data"
    fi
    wait "$bench_pid" || true
fi
cluster_stop

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
