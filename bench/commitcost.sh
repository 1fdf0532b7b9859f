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
#   2. Interleaved pgbench runs, ROUNDS pairs of SECONDS each (order
#      alternating within a pair), leader restarted with and without the
#      library: TPS ratio per pair, and leader CPU per transaction (the
#      postmaster, its live children and its reaped children, from /proc).
#
# The verdict takes the WORST of the three overheads: instructions, the
# median CPU-per-transaction ratio and the median TPS ratio.
#
# Environment: PG_CONFIG (/usr/lib/postgresql/15/bin/pg_config; the library
# must be installed there), ROUNDS (10), RUN_SECONDS (5), CLIENTS (4),
# N1 (200), N2 (1200), SCALE (5), PORT (5490), KEEP=1 keeps the work
# directory.  Prints a markdown section on stdout (progress on stderr).
# Installs valgrind with apt-get if it is missing.  Run as root; servers
# run as postgres.

set -euo pipefail

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
ROUNDS=${ROUNDS:-10}
SECONDS_PER_RUN=${RUN_SECONDS:-5}
CLIENTS=${CLIENTS:-4}
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
for mode in without with; do
    log "callgrind: leader $mode the library"
    a=$(backend_ir "$mode" "$N1")
    b=$(backend_ir "$mode" "$N2")
    IR[$mode]=$(awk -v a="$a" -v b="$b" -v n1="$N1" -v n2="$N2" 'BEGIN { printf "%.0f", (b - a) / (n2 - n1) }')
    log "  $mode: $a instructions for $N1 transactions, $b for $N2: ${IR[$mode]} per transaction"
done
IR_PCT=$(awk -v a="${IR[without]}" -v b="${IR[with]}" 'BEGIN { printf "%+.2f", (b - a) * 100 / a }')

# --------------------------------------------------------------------------
# 2. Interleaved TPS and CPU per transaction
# --------------------------------------------------------------------------
leader_cpu() {  # CPU seconds of the postmaster, its children, its reaped children
    local pm
    pm=$(head -1 "$DATA/postmaster.pid")
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v pm="$pm" -v hz="$(getconf CLK_TCK)" '
        { line = $0; pid = $1; sub(/^.*\) /, "", line); split(line, f, " ")
          if (pid == pm) t += f[12] + f[13] + f[14] + f[15]
          else if (f[2] == pm) t += f[12] + f[13] }
        END { printf "%.2f\n", t / hz }'
}
run_pgbench() {  # run_pgbench with|without round -> appends to pairs.tsv
    local out tps txns cpu0 cpu1
    start "$1"
    PGOPTIONS="-c distributed.session_key=$KEY" \
        as_pg "$PGBIN/pgbench" -n -M prepared -c "$CLIENTS" -j 2 -T 1 "${CONN[@]}" >/dev/null 2>&1
    cpu0=$(leader_cpu)
    out=$(PGOPTIONS="-c distributed.session_key=$KEY" \
        as_pg "$PGBIN/pgbench" -n -M prepared -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" "${CONN[@]}" 2>/dev/null)
    sleep 0.3   # let the postmaster reap the backends
    cpu1=$(leader_cpu)
    stop
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$out")
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    log "  round $2 $1: $tps TPS, $txns transactions, $(awk -v a="$cpu0" -v b="$cpu1" -v n="$txns" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }') us CPU per transaction"
    printf '%s\t%s\t%s\t%s\t%s\n' "$2" "$1" "$tps" "$txns" "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { print b - a }')" >> "$WORK/pairs.tsv"
}
log "interleaved pgbench: $ROUNDS pairs of ${SECONDS_PER_RUN} s, $CLIENTS clients"
: > "$WORK/pairs.tsv"
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then run_pgbench with "$r"; run_pgbench without "$r"
    else run_pgbench without "$r"; run_pgbench with "$r"; fi
done

# per pair: TPS ratio (with/without) and CPU-per-transaction ratio
awk -F'\t' '
    { tps[$1, $2] = $3; us[$1, $2] = $5 * 1e6 / $4; if ($1 > n) n = $1 }
    END { for (r = 1; r <= n; r++)
            printf "%d\t%.1f\t%.1f\t%.4f\t%.1f\t%.1f\t%.4f\n", r,
                tps[r, "with"], tps[r, "without"], tps[r, "with"] / tps[r, "without"],
                us[r, "with"], us[r, "without"], us[r, "with"] / us[r, "without"] }' \
    "$WORK/pairs.tsv" > "$WORK/ratios.tsv"
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
TPS_MED=$(cut -f4 "$WORK/ratios.tsv" | median)
TPS_MIN=$(cut -f4 "$WORK/ratios.tsv" | sort -g | head -1)
TPS_MAX=$(cut -f4 "$WORK/ratios.tsv" | sort -g | tail -1)
CPU_MED=$(cut -f7 "$WORK/ratios.tsv" | median)
CPU_MIN=$(cut -f7 "$WORK/ratios.tsv" | sort -g | head -1)
CPU_MAX=$(cut -f7 "$WORK/ratios.tsv" | sort -g | tail -1)
TPS_PCT=$(awk -v m="$TPS_MED" 'BEGIN { printf "%+.2f", (1 / m - 1) * 100 }')
CPU_PCT=$(awk -v m="$CPU_MED" 'BEGIN { printf "%+.2f", (m - 1) * 100 }')
WORST=$(printf '%s\n%s\n%s\n' "$IR_PCT" "$TPS_PCT" "$CPU_PCT" | sort -g | tail -1)
VERDICT=$(awk -v w="$WORST" 'BEGIN { print (w <= 1.0 ? "met" : "not met") }')

cat <<EOF
### Commit path: leader cost per pgbench transaction

\`bash bench/commitcost.sh\`, $(date -u +%Y-%m-%d), $("$PGBIN/postgres" --version),
pgbench TPC-B-like (\`-M prepared\`), session key set, synchronous_commit = off,
scale $SCALE.

| measure | without library | with library | overhead |
|---|---|---|---|
| instructions per transaction (callgrind, leader backend, $N1 vs $N2 transactions) | ${IR[without]} | ${IR[with]} | ${IR_PCT} % |
| TPS, median of $ROUNDS interleaved pairs ($CLIENTS clients, ${SECONDS_PER_RUN} s) | | | ratio $TPS_MED (pairs $TPS_MIN–$TPS_MAX): ${TPS_PCT} % time per transaction |
| leader CPU per transaction, median pair ratio | | | $CPU_MED (pairs $CPU_MIN–$CPU_MAX): ${CPU_PCT} % |

Target: at most +1 % on the worst of the three. Worst: ${WORST} % — **${VERDICT}**.

<details><summary>pairs (round, TPS with, TPS without, ratio, CPU µs with, CPU µs without, ratio)</summary>

\`\`\`
$(cat "$WORK/ratios.tsv")
\`\`\`
</details>
EOF
