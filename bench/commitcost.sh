#!/bin/bash
# commitcost.sh - what the library costs the leader per pgbench transaction.
#
#   sudo bash bench/commitcost.sh
#
# Runs pgbench's TPC-B-like script with a session key set
# (PGOPTIONS=-c distributed.session_key=...) against one leader, (a)
# without the library preloaded and (b) with it, and measures:
#
#   1. Instructions per transaction of the leader backend, under valgrind
#      (callgrind): the backend of a one-client pgbench run of N1 and of N2
#      transactions (same random seed), per transaction = the difference of
#      their instruction totals / (N2 - N1), so connection set-up and the
#      first statements' planning cancel out.  Every run (here and in 2.)
#      starts from the same copy of the data directory.  Deterministic to
#      within a few hundred instructions.  (perf stat -e instructions would do the same, but a
#      VM without a PMU, like this one, has no hardware counters.)
#   2. Paired pgbench runs: two leaders, one with and one without the
#      library, each from its own copy of the same data directory, both
#      started once; ROUNDS pairs, each pair one pgbench of RUN_SECONDS on
#      each leader AT THE SAME TIME, so that whatever else this shared
#      machine does in those seconds falls on both alike (run one after the
#      other, adjacent runs of the same build differed by up to 40 %).
#      Each side's pgbench and backend are pinned to one core (taskset),
#      the two cores swapped every pair: left to the scheduler, four
#      runnable processes on two cores landed differently in every pair,
#      and that decided its ratio more than the library did.  In
#      each run, the CPU time of the leader's pgbench backends
#      (nanoseconds, /proc/<pid>/schedstat) and the transactions they
#      completed (pgbench's per-transaction log, -l) are taken over one
#      window for both, from 0.5 s after the start to 0.5 s before the end:
#      CPU per transaction, and transactions per second.  With one client
#      each (the default) that is the backend that runs the library's
#      commit path; other processes do not count in it.
#
# Each pair gives a ratio with/without; they are reported as the median and
# the interquartile range (Q1-Q3), which is the resolution the paired
# measures have here.  The verdict takes the WORST of the three overheads:
# instructions, the median CPU-per-transaction ratio and the median TPS
# ratio.
#
# Environment: PG_CONFIG (/usr/lib/postgresql/15/bin/pg_config; the library
# must be installed there), ROUNDS (30), RUN_SECONDS (3), CLIENTS (1),
# N1 (200), N2 (1200), SCALE (5), PORT (5490; PORT+1 for the second
# leader), KEEP=1 keeps the work directory, SKIP_CALLGRIND=1 leaves out
# measure 1, SAME=1 preloads the library on both leaders of measure 2 (a
# control: its ratios show the harness's own bias and spread), TSV=FILE
# writes the figures there too, one tab-separated line for bench/report.sh
# (instructions without, with, overhead %; CPU ratio median, Q1, Q3,
# overhead %; TPS ratio median, Q1, Q3, overhead %; worst %; met|not met;
# µs per transaction without, with).  Prints a markdown section on stdout
# (progress on stderr).
# Installs valgrind with apt-get if it is missing.  Run as root; servers
# run as postgres.

set -euo pipefail

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
ROUNDS=${ROUNDS:-30}
SECONDS_PER_RUN=${RUN_SECONDS:-3}
CLIENTS=${CLIENTS:-1}
N1=${N1:-200}
N2=${N2:-1200}
SCALE=${SCALE:-5}
PORT=${PORT:-5490}
KEY=3b5d5c3712955042212316173ccf37be800ec5f0e1a7b4d0b3c6a5b8e8f0d2c1
PGBIN=$("$PG_CONFIG" --bindir)

if [ "$(id -u)" -ne 0 ]; then
    echo "commitcost: run as root (servers run as postgres; valgrind may need installing)" >&2
    exit 1
fi
if ! command -v valgrind >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi
if [ ! -e "$("$PG_CONFIG" --pkglibdir)/distributed.so" ]; then
    echo "commitcost: distributed.so is not installed for $PG_CONFIG" >&2
    exit 1
fi

log() { echo "commitcost: $*" >&2; }
as_pg() { runuser -u postgres -- "$@"; }

WORK=$(mktemp -d /tmp/commitcost.XXXXXX)
chown postgres: "$WORK"
DATA=$WORK/data
CONN=(-h "$WORK" -p "$PORT" -U postgres postgres)

cleanup() {
    as_pg "$PGBIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
    for d in "$WORK"/run-*; do
        [ -d "$d" ] && as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
    done
    # a postmaster under valgrind is stopped the same way; wait for it
    [ "${KEEP:-0}" = 1 ] && log "work directory kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

as_pg "$PGBIN/initdb" -D "$DATA" -A trust -U postgres >/dev/null
cat >> "$DATA/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$WORK'
port = $PORT
shared_buffers = 128MB
max_wal_size = 2GB
autovacuum = off
# CPU-bound commits, so that TPS follows CPU rather than fsync latency
synchronous_commit = off
CONF

# Every run starts from the same copy of the data directory: pgbench's
# updates leave dead tuples behind (autovacuum is off), and a later run on
# a more bloated table would cost more, with or without the library.
restore() {
    [ -d "$WORK/pristine" ] || return 0
    rm -rf "$DATA"
    cp -a "$WORK/pristine" "$DATA"
}
start() {  # start "with"|"without" [valgrind]
    local libs=distributed
    [ "$1" = with ] || libs=
    restore
    if [ "${2:-}" = valgrind ]; then
        as_pg env -C "$WORK" valgrind --quiet --tool=callgrind --cache-sim=no \
            --callgrind-out-file="$WORK/cg.$1.%p" \
            "$PGBIN/postgres" -D "$DATA" -c "shared_preload_libraries=$libs" \
            >"$WORK/valgrind-$1.log" 2>&1 &
        for _ in $(seq 1 600); do
            as_pg "$PGBIN/pg_isready" -q -h "$WORK" -p "$PORT" && break
            sleep 0.2
        done
    else
        as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$WORK/server.log" -w \
            -o "-c shared_preload_libraries=$libs" start >/dev/null
    fi
    [ "$(as_pg "$PGBIN/psql" -XAt "${CONN[@]}" -c 'SHOW shared_preload_libraries')" = "$libs" ] \
        || { log "shared_preload_libraries is not '$libs'"; exit 1; }
}
stop() {
    as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w -t 600 stop >/dev/null
}

start with
as_pg "$PGBIN/psql" -XAtq "${CONN[@]}" -c 'CREATE EXTENSION distributed'
as_pg "$PGBIN/pgbench" -i -q -s "$SCALE" "${CONN[@]}" >/dev/null 2>&1
as_pg "$PGBIN/psql" -XAtq "${CONN[@]}" -c 'VACUUM ANALYZE' -c 'CHECKPOINT'
stop
cp -a "$DATA" "$WORK/pristine"

# --------------------------------------------------------------------------
# 1. Instructions per transaction (callgrind)
# --------------------------------------------------------------------------
cg_files() { ls "$WORK" | grep "^cg\.$1\." | sort || true; }
settle() {  # wait until no process has written a profile for 2 s
    local n m
    n=$(cg_files "$1" | wc -l)
    while sleep 2; m=$(cg_files "$1" | wc -l); [ "$m" != "$n" ]; do n=$m; done
}
backend_ir() {  # backend_ir with|without N -> instructions of that run's backend
    local before new
    start "$1" valgrind
    # warm the buffer cache and catalogs outside the measured backend
    PGOPTIONS="-c distributed.session_key=$KEY" \
        as_pg "$PGBIN/pgbench" -n -M prepared -c 1 -t 50 --random-seed=7 "${CONN[@]}" >/dev/null 2>&1
    settle "$1"
    before=$(cg_files "$1")
    PGOPTIONS="-c distributed.session_key=$KEY" \
        as_pg "$PGBIN/pgbench" -n -M prepared -c 1 -t "$2" --random-seed=42 "${CONN[@]}" >"$WORK/pgbench-$1-$2.out" 2>&1 \
        || { log "pgbench failed: $(cat "$WORK/pgbench-$1-$2.out")"; exit 1; }
    # the backend writes its profile when it exits
    settle "$1"
    # two backends are new: pgbench's set-up connection (it reads the
    # scale) and the client's; the client's is the larger
    new=$(comm -13 <(echo "$before") <(cg_files "$1"))
    [ "$(echo "$new" | wc -w)" = 2 ] || { log "expected two new profiles, got:" $new; exit 1; }
    for f in $new; do
        awk '/^(summary|totals):/ { print $2; exit }' "$WORK/$f"
    done | sort -g | tail -1
    stop
    wait
}

declare -A IR
IR_PCT=
[ "${SKIP_CALLGRIND:-0}" = 1 ] && log "callgrind left out (SKIP_CALLGRIND=1)"
for mode in without with; do
    [ "${SKIP_CALLGRIND:-0}" = 1 ] && break
    log "callgrind: leader $mode the library"
    a=$(backend_ir "$mode" "$N1")
    b=$(backend_ir "$mode" "$N2")
    IR[$mode]=$(awk -v a="$a" -v b="$b" -v n1="$N1" -v n2="$N2" 'BEGIN { printf "%.0f", (b - a) / (n2 - n1) }')
    log "  $mode: $a instructions for $N1 transactions, $b for $N2: ${IR[$mode]} per transaction"
done
[ "${SKIP_CALLGRIND:-0}" = 1 ] || \
    IR_PCT=$(awk -v a="${IR[without]}" -v b="${IR[with]}" 'BEGIN { printf "%+.2f", (b - a) * 100 / a }')

# --------------------------------------------------------------------------
# 2. Interleaved TPS and CPU per transaction
# --------------------------------------------------------------------------
# Both leaders from the pristine copy, started once, on PORT and PORT+1.
declare -A RPORT=([with]=$PORT [without]=$((PORT + 1)))
for mode in with without; do
    d=$WORK/run-$mode
    cp -a "$WORK/pristine" "$d"
    libs=distributed
    [ "$mode" = with ] || [ "${SAME:-0}" = 1 ] || libs=
    as_pg "$PGBIN/pg_ctl" -D "$d" -l "$WORK/server-$mode.log" -w \
        -o "-c shared_preload_libraries=$libs -c port=${RPORT[$mode]}" start >/dev/null
    [ "$(as_pg "$PGBIN/psql" -XAt -h "$WORK" -p "${RPORT[$mode]}" -U postgres postgres \
        -c 'SHOW shared_preload_libraries')" = "$libs" ] \
        || { log "shared_preload_libraries is not '$libs'"; exit 1; }
done

backend_ns() {  # backend_ns PID... -> summed nanoseconds on CPU
    local p t=0
    for p in "$@"; do
        t=$((t + $(cut -d' ' -f1 "/proc/$p/schedstat")))
    done
    echo "$t"
}
backends() {  # backends PORT -> the pgbench clients' backend pids
    local pids
    # not pgbench's short set-up connection (which reads the scale)
    for _ in $(seq 1 50); do
        pids=$(as_pg "$PGBIN/psql" -XAt -h "$WORK" -p "$1" -U postgres postgres -c \
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench'
             AND pid <> pg_backend_pid() AND query !~* '^select count'")
        [ "$(echo "$pids" | wc -w)" = "$CLIENTS" ] && { echo $pids; return 0; }
        sleep 0.02
    done
    log "expected $CLIENTS pgbench backends on port $1, got: $pids"; exit 1
}
run_pair() {  # run_pair round -> appends both runs to pairs.tsv
    local r=$1 mode t0 t1 n
    declare -A bench pids c0 c1
    declare -A cpu=([with]=$((r % 2)) [without]=$(((r + 1) % 2)))
    for mode in with without; do
        mkdir -p "$WORK/log-$mode"; chown postgres: "$WORK/log-$mode"
        PGOPTIONS="-c distributed.session_key=$KEY" \
            as_pg env -C "$WORK/log-$mode" taskset -c "${cpu[$mode]}" "$PGBIN/pgbench" -n -M prepared -c "$CLIENTS" \
            -j "$CLIENTS" -T "$SECONDS_PER_RUN" -l -h "$WORK" -p "${RPORT[$mode]}" \
            -U postgres postgres >"$WORK/log-$mode/out" 2>&1 &
        bench[$mode]=$!
    done
    sleep 0.5
    for mode in with without; do
        pids[$mode]=$(backends "${RPORT[$mode]}")
        for p in ${pids[$mode]}; do taskset -p -c "${cpu[$mode]}" "$p" >/dev/null; done
    done
    # the two reads of each sample are microseconds apart; alternate their order
    local order="with without"
    [ $((r % 2)) -eq 0 ] && order="without with"
    t0=$(date +%s.%N)
    for mode in $order; do c0[$mode]=$(backend_ns ${pids[$mode]}); done
    sleep "$(awk -v s="$SECONDS_PER_RUN" 'BEGIN { print s - 1 }')"
    for mode in $order; do c1[$mode]=$(backend_ns ${pids[$mode]}); done
    t1=$(date +%s.%N)
    for mode in with without; do
        wait "${bench[$mode]}" || { log "pgbench failed: $(cat "$WORK/log-$mode/out")"; exit 1; }
        # a log line: client, transaction, latency, script, epoch s, epoch us
        n=$(cat "$WORK/log-$mode"/pgbench_log.* | awk -v a="$t0" -v b="$t1" \
            '{ t = $5 + $6 / 1e6; if (t >= a && t < b) n++ } END { print n + 0 }')
        [ "$n" -gt 0 ] || { log "no transactions in the window"; exit 1; }
        log "  round $r $mode: $(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", n / (b - a) }') TPS, $n transactions, $(awk -v c="$((c1[$mode] - c0[$mode]))" -v n="$n" 'BEGIN { printf "%.2f", c / n / 1000 }') us backend CPU per transaction"
        printf '%s\t%s\t%s\t%s\t%s\n' "$r" "$mode" \
            "$(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN { print n / (b - a) }')" \
            "$n" "$((c1[$mode] - c0[$mode]))" >> "$WORK/pairs.tsv"
        rm -rf "$WORK/log-$mode"
    done
}
log "pgbench on both leaders at once: $ROUNDS pairs of ${SECONDS_PER_RUN} s, $CLIENTS client(s) each"
: > "$WORK/pairs.tsv"
for r in $(seq 1 "$ROUNDS"); do
    run_pair "$r"
done

# per pair: TPS ratio (with/without) and CPU-per-transaction ratio
awk -F'\t' '
    { tps[$1, $2] = $3; us[$1, $2] = $5 / 1000 / $4; if ($1 > n) n = $1 }
    END { for (r = 1; r <= n; r++)
            printf "%d\t%.1f\t%.1f\t%.4f\t%.2f\t%.2f\t%.4f\n", r,
                tps[r, "with"], tps[r, "without"], tps[r, "with"] / tps[r, "without"],
                us[r, "with"], us[r, "without"], us[r, "with"] / us[r, "without"] }' \
    "$WORK/pairs.tsv" > "$WORK/ratios.tsv"
quantile() {  # quantile Q: of the numbers on stdin, interpolated
    sort -g | awk -v q="$1" '{ v[NR] = $1 } END {
        h = (NR - 1) * q + 1; l = int(h); u = (l < NR) ? v[l + 1] : v[l]
        printf "%.4f\n", v[l] + (h - l) * (u - v[l]) }'
}
col() { cut -f"$1" "$WORK/ratios.tsv" | quantile "$2"; }
TPS_MED=$(col 4 0.5); TPS_Q1=$(col 4 0.25); TPS_Q3=$(col 4 0.75)
CPU_MED=$(col 7 0.5); CPU_Q1=$(col 7 0.25); CPU_Q3=$(col 7 0.75)
one() { printf '%.1f' "$1"; }
US_WITH=$(one "$(col 5 0.5)"); US_WITHOUT=$(one "$(col 6 0.5)")
TPS_WITH=$(one "$(col 2 0.5)"); TPS_WITHOUT=$(one "$(col 3 0.5)")
PLURAL=s; [ "$CLIENTS" = 1 ] && PLURAL=
TPS_PCT=$(awk -v m="$TPS_MED" 'BEGIN { printf "%+.2f", (1 / m - 1) * 100 }')
CPU_PCT=$(awk -v m="$CPU_MED" 'BEGIN { printf "%+.2f", (m - 1) * 100 }')
WORST=$(printf '%s\n' $IR_PCT "$TPS_PCT" "$CPU_PCT" | sort -g | tail -1)
VERDICT=$(awk -v w="$WORST" 'BEGIN { print (w <= 1.0 ? "met" : "not met") }')
if [ -n "$IR_PCT" ]; then
    IR_ROW="| instructions per transaction (callgrind, leader backend, $N1 vs $N2 transactions) | ${IR[without]} | ${IR[with]} | ${IR_PCT} % |"
else
    IR_ROW="| instructions per transaction (callgrind) | | | left out (SKIP_CALLGRIND=1) |"
fi

if [ -n "${TSV:-}" ]; then
    printf '%s\t' "${IR[without]:--}" "${IR[with]:--}" "${IR_PCT:--}" "$CPU_MED" "$CPU_Q1" "$CPU_Q3" \
        "$CPU_PCT" "$TPS_MED" "$TPS_Q1" "$TPS_Q3" "$TPS_PCT" "$WORST" "$VERDICT" "$US_WITHOUT" >"$TSV"
    printf '%s\n' "$US_WITH" >>"$TSV"
fi

cat <<EOF
### Commit path: leader cost per pgbench transaction

\`bash bench/commitcost.sh\`, $(date -u '+%Y-%m-%d %H:%M UTC'), $("$PGBIN/postgres" --version),
pgbench TPC-B-like (\`-M prepared\`), session key set, synchronous_commit = off,
scale $SCALE; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg).

| measure | without library | with library | overhead |
|---|---|---|---|
$IR_ROW
| leader backend CPU per transaction ($ROUNDS pairs of ${SECONDS_PER_RUN} s run at the same time, $CLIENTS client$PLURAL; medians) | ${US_WITHOUT} µs | ${US_WITH} µs | pair ratio median $CPU_MED (IQR $CPU_Q1–$CPU_Q3): ${CPU_PCT} % |
| TPS, same runs (medians) | ${TPS_WITHOUT} | ${TPS_WITH} | pair ratio median $TPS_MED (IQR $TPS_Q1–$TPS_Q3): ${TPS_PCT} % time per transaction |

Target: at most +1 % on the worst of the measures. Worst: ${WORST} % — **${VERDICT}**.

<details><summary>pairs (round, TPS with, TPS without, ratio, backend CPU µs per transaction with, without, ratio)</summary>

\`\`\`
$(cat "$WORK/ratios.tsv")
\`\`\`
</details>
EOF
