#!/bin/bash
# Write bench/results.md from the raw output of bench/run.sh (called by it;
# also usable on a directory kept with KEEP_WORK=DIR).
#
#   bash bench/report.sh WORKDIR OUT LOAD_BEFORE LOAD_AFTER ELAPSED_S SESSIONS
#        READS THINK_MS DURATION SPIKE_DURATION WAIT_MS PGBENCH_ROUNDS PGBENCH_SECONDS
set -euo pipefail

W=$1 OUT=$2 LOAD_BEFORE=$3 LOAD_AFTER=$4 ELAPSED=$5 SESSIONS=$6 READS=$7
THINK_MS=$8 DURATION=$9 SPIKE_DURATION=${10} WAIT_MS=${11} PGB_ROUNDS=${12} PGB_SECONDS=${13}
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
T=$W/route.tsv

# get SCENARIO STRATEGY COLUMN: one field of route.tsv
#  3 reads/s  4 follower share  5 ideal lo  6 ideal hi  7 stale on followers
#  8 stale on leader  9 p50  10 p99  11 extra RT/read  12 ... first reads
#  13 ... later reads  14 waits reached  15 timed out  16 other  17 errors
#  18 writes/s  19 reads  20 replay lag p50 (the slowest follower's)  21 ... p99
get() { awk -F'\t' -v s="$1" -v t="$2" -v c="$3" '$1 == s && $2 == t { print $c }' "$T"; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
yes_no() { if awk "BEGIN { exit !($1) }"; then echo "met"; else echo "**missed**"; fi; }
pct() { calc "%.1f %%" "100 * $1"; }
of_ideal() { calc "%.1f" "100 * $(get "$1" "$2" 4) / $(get "$1" "$2" 6)"; }
stale() { echo $(( $(get "$1" "$2" 7) + $(get "$1" "$2" 8) )); }

W1=check W2=wait:$WAIT_MS WP=wait-pipe:$WAIT_MS CP=check-pipe
TOKEN_STRATS="$W1 $W2 $CP $WP wait-fn:$WAIT_MS"
SCENARIOS="natural delay spike"

# --- targets --------------------------------------------------------------
token_stale_total=0
token_stale_list=""
token_runs=0
for s in $SCENARIOS; do
    for t in $TOKEN_STRATS; do
        v=$(get "$s" "$t" 7)
        [ -n "$v" ] || continue
        n=$(stale "$s" "$t")
        token_runs=$((token_runs + 1))
        token_stale_total=$((token_stale_total + n))
        [ "$n" -eq 0 ] || token_stale_list="${token_stale_list:+$token_stale_list; }$s/$t: $n"
    done
done

# follower share as a share of the ideal, for the two token strategies of the issue
share_rows=""
share_min=1000
for s in $SCENARIOS; do
    for t in $W1 $W2; do
        r=$(of_ideal "$s" "$t")
        share_rows="${share_rows:+$share_rows; }$s/$t $r %"
        share_min=$(calc "%.1f" "($r < $share_min) ? $r : $share_min")
    done
done

# pgbench (round, with|without, TPS, transactions, leader CPU s): mean TPS,
# the median and range of the with/without ratio of each round's pair, and
# the leader's CPU time per transaction over all rounds
read -r tps_with tps_without ratio_med pair_min pair_max cpu_with cpu_without cpu_med <<<"$(awk -F'\t' '
    function median(a, n,   i, j, t) {
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { tps[$1, $2] = $3; txn[$1, $2] = $4; cpu[$1, $2] = $5; if ($1 > n) n = $1
      if ($2 == "with") { w += $3; cw += $5; tw += $4 } else { o += $3; co += $5; to += $4 } }
    END {
        min = 1e9; max = 0
        for (r = 1; r <= n; r++) {
            q[r] = tps[r, "with"] / tps[r, "without"]; if (q[r] < min) min = q[r]; if (q[r] > max) max = q[r]
            c[r] = (cpu[r, "with"] / txn[r, "with"]) / (cpu[r, "without"] / txn[r, "without"])
        }
        printf "%.1f %.1f %.4f %.4f %.4f %.1f %.1f %.4f\n", w / n, o / n, median(q, n), min, max,
            cw * 1e6 / tw, co * 1e6 / to, median(c, n)
    }' "$W/pgbench.tsv")"
# perf profile (function, inclusive %, self %): the library's share of the
# leader's CPU is its commit callback (inclusive) plus the reporting of the
# changed setting (ReportChangedGUCOptions exits at once when no reported
# setting changed, as happens without the library)
pf() { [ -f "$W/perf.tsv" ] && awk -F'\t' -v f="$1" -v c="$2" '$1 == f { print $c; exit }' "$W/perf.tsv"; }
perf_cb=$(pf DistXactCallback 2 || true)
perf_rep=$(pf ReportChangedGUCOptions 3 || true)
perf_map=$(pf DistRecordKey 2 || true)
perf_guc=$(pf set_config_option 2 || true)
perf_total= perf_headline= perf_measured= perf_verdict=
if [ -n "$perf_cb" ]; then
    perf_total=$(calc "%.2f" "$perf_cb + ${perf_rep:-0}")
    perf_headline="; by a profile of the leader, the library's commit path takes **$perf_total %** of its CPU"
    perf_measured="; profile: $perf_total % of the leader's CPU"
    perf_verdict="$(yes_no "$perf_total <= 2") (profile)"
fi
# a ratio of adjacent runs that varies by more than the target says nothing
tps_resolves=$(awk -v a="$pair_min" -v b="$pair_max" 'BEGIN { print (b - a <= 0.04) ? 1 : 0 }')
cpu_pairs_up=$(awk -F'\t' '{ us[$1, $2] = $5 / $4; if ($1 > n) n = $1 }
    END { for (i = 1; i <= n; i++) k += us[i, "with"] > us[i, "without"]; print k + 0 }' "$W/pgbench.tsv")
if [ -n "$perf_total" ]; then
    perf_verdict_text=$(awk -v t="$perf_total" 'BEGIN { if (t > 2) printf "missed by %.2f points", t - 2; else printf "met, with %.2f points to spare", 2 - t }')
else
    perf_verdict_text="not measured (no perf)"
fi
ratio=$(calc "%.4f" "$tps_with / $tps_without")
overhead=$(calc "%.2f" "100 * (1 - $ratio_med)")
cpu_overhead=$(calc "%.2f" "100 * ($cpu_med - 1)")

read -r _ w1p50 w1p99 wnp50 wnp99 cpu_idle cpu_busy watch_idle watch_busy nwaiters wnfirst <"$W/wake.tsv"


if [ "$tps_resolves" = 1 ]; then
    tps_verdict="$(yes_no "$overhead <= 2") (TPS); $(yes_no "$cpu_overhead <= 2") (CPU)${perf_verdict:+; $perf_verdict}"
else
    # judged on the worst measure: one that cannot resolve the target does
    # not show it met, whatever the profile says
    tps_verdict="**not shown**: the TPS and CPU ratios do not resolve 2 % on this machine${perf_verdict:+ (the profile alone: ${perf_verdict% (profile)})}"
fi

# --- sections written by other commands ---------------------------------------
# OUT is rewritten whole, but two parts of it come from their own commands and
# are carried over from the OUT being replaced: bench/micro.sh's "Replay
# waiters" section (per PostgreSQL major; this run's own wake-up tables, on
# one major, then go in a section of their own) and what follows the latency
# section (bench/commitcost.sh's). bench/latency.sh's section is written
# after this script, by latency_report.
old_micro= old_tail=
if [ -f "$OUT" ]; then
    old_micro=$(awk '/^## Replay waiters$/ { on = 1; print; next } on && /^(## |<!-- latency: begin)/ { exit } on { print }' "$OUT")
    grep -q 'bench/micro.sh' <<<"$old_micro" || old_micro=
    old_tail=$(awk 'f { print } /^<!-- latency: end/ { f = 1 }' "$OUT")
fi

# --- machine --------------------------------------------------------------
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
NPROC=$(nproc)
MEM=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
PGVERSION=$("$("$PG_CONFIG" --bindir)/postgres" --version)
OS="Debian $(cat /etc/debian_version 2>/dev/null || echo '?'), Linux $(uname -r)"
NOW=$(date -u '+%Y-%m-%d %H:%M UTC')

# --- headline figures -----------------------------------------------------
nat_check=$(get natural $W1 4)
nat_t2=$(get natural time:2000 4)
nat_t01=$(get natural time:100 4)
nat_ideal=$(get natural $W1 6)

{
cat <<EOF
# distbench results

Generated by \`bash bench/run.sh\` on $NOW (the run took $ELAPSED s). Every
figure below comes from this one run; regenerate with the same command.

## Machine

| | |
|---|---|
| CPU | $CPU_MODEL, $NPROC cores (\`nproc\`) |
| memory | $MEM |
| OS | $OS |
| PostgreSQL | $PGVERSION |
| load average (1, 5, 15 min) before / after the run | $LOAD_BEFORE / $LOAD_AFTER |
| other processes using ≥ 10 % of a core when the run started | $( [ -s "$W/busy.txt" ] && sed 's/|/\\|/g; s/$/;/' "$W/busy.txt" | paste -sd' ' || echo none) |

One leader and two streaming-replication followers (asynchronous) on this
one host, talking over Unix sockets, with the library preloaded on all
three; distbench runs on the same cores. Settings are PostgreSQL's defaults
except \`max_connections = 600\`, \`shared_buffers = 128MB\`,
\`max_wal_size = 2GB\` (bench/cluster.sh). Servers, client and background
load share two cores, so reads per second measure this box, not what
followers on their own machines would add.

## Headline

- Stale reads: **$token_stale_total** in $token_runs runs of the token strategies (all scenarios), against
  **$(stale natural naive)** of $(get natural naive 19) reads for the naive router under natural lag,
  **$(stale delay naive)** of $(get delay naive 19) under a 50 ms apply delay and **$(stale spike naive)** of $(get spike naive 19) around a 3 s replay pause;
  time pinning with W = 0.1 s read **$(stale spike time:100)** stale values around the pause.
- Follower share under natural lag: token check $(pct "$nat_check"), token wait $(pct "$(get natural "$W2" 4)"),
  against $(pct "$nat_t01") for a 0.1 s window and $(pct "$nat_t2") for the 2 s (Rails) and
  $(pct "$(get natural time:15000 4)") for the 15 s (django-multidb-router) windows; the ideal was $(pct "$nat_ideal").
  Token check served $(of_ideal natural "$W1") % of the ideal.
- Commit overhead of the library with a session key: pgbench TPS ratio with/without,
  median of $PGB_ROUNDS interleaved pairs, **$ratio_med** (the pairs ranged
  $pair_min–$pair_max, so this box resolves no better than that); leader CPU time per
  transaction with/without, median pair ratio **$cpu_med** ($cpu_with µs against $cpu_without µs over all rounds)$perf_headline.
- Wake-up latency: 1 waiter p50 $w1p50 ms, p99 $w1p99 ms; $nwaiters waiters at once p50 $wnp50 ms, p99 $wnp99 ms.
  $nwaiters idle waiters: follower CPU $cpu_busy % of one core (nobody waiting: $cpu_idle %).
$( [ -z "$old_micro" ] || echo "  (PostgreSQL $(sed "s/^postgres (PostgreSQL) //; s/ .*//" <<<"$PGVERSION"), this run. Per major, with 1,000 waiters and idle wake-ups, see
  [Replay waiters](#replay-waiters), from \`bench/micro.sh\`.)")

## Targets

| target (issue 4) | measured | |
|---|---|---|
| zero stale reads, both token strategies, every scenario | $token_stale_total stale reads in $token_runs runs${token_stale_list:+ ($token_stale_list)} | $(yes_no "$token_stale_total == 0") |
| follower share ≥ 95 % of the ideal | lowest $share_min % ($share_rows) | $(yes_no "$share_min >= 95") |
| commit overhead ≤ 2 % | TPS: $overhead % (median pair ratio $ratio_med, pairs $pair_min–$pair_max); CPU per transaction: $cpu_overhead %$perf_measured | $tps_verdict |
| wake-up p50 ≤ 0.5 ms | 1 waiter $w1p50 ms; $nwaiters waiters $wnp50 ms | $(yes_no "$w1p50 <= 0.5") (1); $(yes_no "$wnp50 <= 0.5") ($nwaiters) |
| wake-up p99 ≤ 2 ms | 1 waiter $w1p99 ms; $nwaiters waiters $wnp99 ms | $(yes_no "$w1p99 <= 2") (1); $(yes_no "$wnp99 <= 2") ($nwaiters) |
| ≤ 0.1 extra round trips per read, steady state (natural lag) | token check $(get natural $W1 11), token wait $(get natural "$W2" 11); pipelined: check $(get natural $CP 11), wait $(get natural "$WP" 11) | check $(yes_no "$(get natural $W1 11) <= 0.1"), wait $(yes_no "$(get natural "$W2" 11) <= 0.1"); pipelined wait $(yes_no "$(get natural "$WP" 11) <= 0.1") |

EOF
if [ -f bench/results-notes.md ]; then
    # the discussion of the figures, with @NAME@ placeholders filled in
    sed -e "s|@CHECK_FIRST@|$(get natural $W1 12)|g" \
        -e "s|@CHECK_LATER@|$(get natural $W1 13)|g" \
        -e "s|@CHECK_EXTRA@|$(get natural $W1 11)|g" \
        -e "s|@CP_EXTRA@|$(get natural $CP 11)|g" \
        -e "s|@WP_EXTRA@|$(get natural "$WP" 11)|g" \
        -e "s|@READS@|$READS|g" \
        -e "s|@NAT_LAG50@|$(get natural leader 20)|g" -e "s|@NAT_LAG99@|$(get natural leader 21)|g" \
        -e "s|@DELAY_LAG50@|$(get delay leader 20)|g" \
        -e "s|@WAIT_P99@|$(get natural "$W2" 10)|g" -e "s|@WP_P99@|$(get natural "$WP" 10)|g" \
        -e "s|@CHECK_P99@|$(get natural $W1 10)|g" \
        -e "s|@FN_SHARE@|$(pct "$(get natural wait-fn:$WAIT_MS 4)")|g" \
        -e "s|@FN_TIMEOUTS@|$(get natural wait-fn:$WAIT_MS 15)|g" \
        -e "s|@FN_WAITS@|$(( $(get natural wait-fn:$WAIT_MS 14) + $(get natural wait-fn:$WAIT_MS 15) + $(get natural wait-fn:$WAIT_MS 16) ))|g" \
        -e "s|@FN_LAG50@|$(get natural wait-fn:$WAIT_MS 20)|g" -e "s|@FN_LAG99@|$(get natural wait-fn:$WAIT_MS 21)|g" \
        -e "s|@FN_RPS@|$(get natural wait-fn:$WAIT_MS 3)|g" \
        -e "s|@W2_TIMEOUTS@|$(get natural "$W2" 15)|g" \
        -e "s|@OVERHEAD@|$overhead|g" \
        -e "s|@CPU_OVERHEAD@|$cpu_overhead|g" -e "s|@PERF_TOTAL@|${perf_total:-?}|g" \
        -e "s|@PERF_CB@|${perf_cb:-?}|g" -e "s|@PERF_REP@|${perf_rep:-?}|g" \
        -e "s|@PERF_MAP@|${perf_map:-?}|g" -e "s|@PERF_GUC@|${perf_guc:-?}|g" \
        -e "s|@PAIR_MIN@|$pair_min|g" -e "s|@PAIR_MAX@|$pair_max|g" \
        -e "s|@W1P50@|$w1p50|g" -e "s|@W1P99@|$w1p99|g" \
        -e "s|@WNP50@|$wnp50|g" -e "s|@WNP99@|$wnp99|g" \
        -e "s|@NWAITERS@|$nwaiters|g" -e "s|@WNFIRST@|$wnfirst|g" \
        -e "s|@W1_VERDICT@|$(yes_no "$w1p50 <= 0.5") (p50), $(yes_no "$w1p99 <= 2") (p99)|g" \
        -e "s|@PERF_VERDICT@|$perf_verdict_text|g" \
        -e "s|@CPU_PAIRS_UP@|$cpu_pairs_up|g" -e "s|@PGB_ROUNDS@|$PGB_ROUNDS|g" \
        -e "s|@SHARE_MIN@|$share_min|g" \
        bench/results-notes.md
    echo
fi
cat <<EOF
## Routing strategies

### Workload

$SESSIONS user sessions, each with its own connection to the leader (with its
own \`distributed.session_key\`) and to each follower. A session loops: it
writes its row on the leader (\`UPDATE distbench_rows SET counter = n\`; the
token comes back in the same reply as \`distributed.last_commit\`), reads the
row at once (the redirect after a POST), then reads it $((READS - 1)) more times,
with exponentially distributed think time of mean $THINK_MS ms between
operations. Every read checks **by value** that it sees the session's last
write: a counter below the last value written is a stale read. Each strategy
runs for $DURATION s ($SPIKE_DURATION s in the spike scenario) on the same
cluster and load, one after the other; the followers catch up with the
leader between strategies.

Strategies:

- **leader only**; **random follower** (no pinning, the naive router);
- **time pinning, W**: the leader for W after the session's last write, then
  a random follower (0.1 s; 2 s as Rails' \`database_selector\`; 15 s as
  django-multidb-router's cookie);
- **token check**: a follower known to have replayed the token reads with no
  extra query; otherwise one \`SELECT distributed.is_replayed(token)\` on the
  follower known to be furthest ahead (or on one not heard from for 100 ms),
  and the leader if it says no. "Known" is one per-process cache of each
  follower's highest \`distributed.replay_position\`, which every follower
  reply carries in ParameterStatus (the design's router);
- **token wait, T = $WAIT_MS ms**: the same, but \`CALL distributed.wait_for(token, $WAIT_MS)\`
  (the procedure, which holds no snapshot while it sleeps), and the leader
  if it times out;
- **pipelined** variants (beyond the issue): the check, or the \`CALL\`, and
  the read sent together in one libpq pipeline — one round trip; the read is
  a separate statement whose snapshot is taken after the check or wait
  returned. When the follower has not got the write, its answer is thrown
  away and the read redone on the leader (one extra round trip);
- **token wait, function form** (natural scenario only): \`SELECT distributed.wait(token, $WAIT_MS)\`,
  which holds its query's snapshot while it sleeps — to show what that costs.

### How each figure is measured

- **reads/s**: reads completed within the run, per second.
- **follower share**: reads whose value came from a follower.
- **stale reads**: reads that returned a counter below the session's last
  acknowledged write (counted by value; a value above it would be a checker
  bug and fails the run, as would a query error or a write whose reply
  carried no new token).
- **read p50 / p99**: from the routing decision to the value, including any
  check, wait or leader retry.
- **extra round trips per read**: round trips beyond the read itself (a
  check, a wait, a leader retry after a pipelined probe said no), split into
  the first read after a write and the later ones.
- **ideal share**: the share of reads whose session's write was already on
  some follower when the read was routed — the most any router could send
  to followers without waiting. For the first read after each write it is
  measured directly: at the moment that read is routed, distbench sends the
  same read to every follower on side connections (*shadow reads*) and
  counts it if any of them returned the new value. For the other reads it
  comes from replay positions: every follower reply, and a side connection
  per follower that asks every 1 ms, carries \`distributed.replay_position\`,
  which held at some instant between the query's sending and its reply. A
  read counts as certainly replayed if a reply received before it was
  routed showed a position at or past its token, and as possibly replayed
  unless a query sent after it was routed showed a position below it. The
  two bounds are shown (lower–upper); **share of ideal** divides by the
  upper one. A strategy that waits can exceed 100 %: it sends to a follower
  reads whose write arrived there while it waited.
- **replay lag**: per follower, from the reply carrying a write's token to
  the midpoint between the last reply that did not yet show it replayed and
  the first that did (resolution about 1 ms).

### Scenario 1: natural lag under a heavy write load

Two more connections update 1,000 rows of a 20,000-row table in a loop on
the leader throughout.

$(cat "$W/natural.md")

### Scenario 2: fixed apply delay

\`recovery_min_apply_delay = 50ms\` on follower 1 (ALTER SYSTEM and a reload
before the runs); follower 2 is undelayed. No background writers.

$(cat "$W/delay.md")

### Scenario 3: replay spike

In each strategy's $SPIKE_DURATION s run, replay is paused on both followers
(\`pg_wal_replay_pause()\`) from 3 s to 6 s, then resumed. No background
writers.

$(cat "$W/spike.md")

## Commit overhead

pgbench's simple-update script (\`-N\`: an UPDATE, a SELECT and an INSERT per
transaction), \`-M prepared -c 4 -j 2 -T $PGB_SECONDS\`, scale 5, $PGB_ROUNDS rounds, with
\`PGOPTIONS='-c distributed.session_key=bench'\` in both cases, on the leader
alone (followers stopped), restarted before each run with
\`shared_preload_libraries = 'distributed'\` or \`''\` (checked with \`SHOW\`)
and warmed for 1 s. Rounds alternate the order (with, without; without,
with; ...). The extension's objects exist in the database in both cases;
without the library the session-key setting is an inert placeholder.

| round | with the library: TPS | without: TPS | TPS ratio | with: leader CPU µs per transaction | without | CPU ratio |
|--:|--:|--:|--:|--:|--:|--:|
$(awk -F'\t' '{ tps[$1, $2] = $3; us[$1, $2] = $5 * 1e6 / $4; if ($1 > n) n = $1 }
    END { for (i = 1; i <= n; i++) printf "| %d | %.0f | %.0f | %.4f | %.1f | %.1f | %.4f |\n", i, tps[i, "with"], tps[i, "without"],
          tps[i, "with"] / tps[i, "without"], us[i, "with"], us[i, "without"], us[i, "with"] / us[i, "without"] }' "$W/pgbench.tsv")
| **mean TPS; all rounds' CPU** | **$tps_with** | **$tps_without** | **$ratio** | **$cpu_with** | **$cpu_without** | |
| **median of the pair ratios** | | | **$ratio_med** | | | **$cpu_med** |

The leader's CPU time is read from /proc: the postmaster's own and its
reaped children's (pgbench's backends exit at the end of each run), plus its
live children's, before and after the measured run.

EOF
if [ -n "$perf_total" ]; then
cat <<EOF
A profile (\`perf record -g\` of the leader's processes for 3 s of one more
run with the library) attributes the library's cost per transaction
directly, free of the noise between runs: the commit callback
\`DistXactCallback\` takes **$perf_cb %** of the leader's CPU, including the
session-map update \`DistRecordKey\` ($perf_map %)${perf_guc:+ and \`set_config_option\` ($perf_guc %)}; PostgreSQL's
\`ReportChangedGUCOptions\` takes **$perf_rep %** (self), counted in full
although it runs without the library too (the token goes out as its own
ParameterStatus message before ReadyForQuery; no setting is assigned per
commit). In all: **$perf_total %**.

EOF
fi
if [ -n "$old_micro" ]; then
    wake_heading="## Replay waiters in this run"
else
    wake_heading="## Replay waiters"
fi
cat <<EOF
$wake_heading

Wake-up latency (the method of test/measure_waits.py, in C: bench/micro.c):
replay is paused on follower 1, the leader commits, the waiters call
\`SELECT distributed.wait(token, 60000)\` on the follower and, once all of
them show in \`distributed.waiters\`, replay is resumed. A sample is the
waiter's \`clock_timestamp()\` right after its wait returned minus the
\`clock_timestamp()\` read in the statement that resumed replay, right after
\`pg_wal_replay_resume()\` returned (one server clock). It includes replaying
the pending commit. Per waiter woken, the CPU time of the follower's
processes and their time runnable but waiting for a core (from
/proc/<pid>/schedstat) say what many waiters on few cores can reach. Idle
cost: with replay paused, CPU time (user + system, from /proc) of all the
follower's processes, as a share of one core, and the wake-ups (context
switches) of the replay watcher and of the sleeping waiters.
\`distributed.watch_interval\` is 1 ms. \`bash bench/micro.sh\` runs this
part alone, for several PostgreSQL installations.

$(cat "$W/wake.md")
EOF
if [ -n "$old_micro" ]; then
    echo
    printf '%s\n\n' "$old_micro"
fi
if [ -n "$old_tail" ]; then
    # a place for the latency section, which latency_report fills
    echo "<!-- latency: begin -->"
    echo "<!-- latency: end -->"
    printf '%s\n' "$old_tail"
fi
} >"$OUT.new"
mv "$OUT.new" "$OUT"
