#!/bin/bash
# The latency scenario, in one command: build distbench and latproxy, start
# a latency-injecting proxy on loopback and a leader and two followers that
# also listen on 127.0.0.1, run every strategy and the anchors through the
# proxy (the leader 40 ms away, the followers 1 ms away, replication as far
# as the leader), then write the section "Under network latency" of
# bench/results.md (only that section: the rest of the file is left as it
# is) and its figures in bench/figures/, drawn with matplotlib from PyPI in
# a virtual environment this command creates (bench/.venv).  About 3 minutes.
#
#   bash bench/latency.sh          # as root, from anywhere; the extension must
#                                  # be installed (PG_BINDIR or PG_CONFIG say where)
#
# Knobs (environment): LEADER_RTT_MS (40), FOLLOWER_RTT_MS (1), REPL_RTT_MS
# (the leader's), LAT_WAIT_MS (20: every wait's timeout), LAG_DELAY_MS (100:
# follower 1's apply delay in the second run, latency-lag), LAT_SESSIONS (50),
# READS (5 per write), THINK_MS (50), LAT_DURATION (8 s per strategy),
# OUT (bench/results.md), VENV (bench/.venv), KEEP_WORK=DIR.
#
# bench/run.sh sources this file and calls latency_measure and
# latency_report itself, so that a full run includes this section.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
. bench/cluster.sh

LEADER_RTT_MS=${LEADER_RTT_MS:-40}
FOLLOWER_RTT_MS=${FOLLOWER_RTT_MS:-1}
REPL_RTT_MS=${REPL_RTT_MS:-$LEADER_RTT_MS}
LAT_WAIT_MS=${LAT_WAIT_MS:-20}
LAT_SESSIONS=${LAT_SESSIONS:-50}
LAT_DURATION=${LAT_DURATION:-8}
LAT_PORT=${LAT_PORT:-$(pick_base_port)}
LAG_DELAY_MS=${LAG_DELAY_MS:-100}
VENV=${VENV:-bench/.venv}
PROXY_PID=

half() { awk -v x="$1" 'BEGIN { printf "%g", x / 2 }'; }
tcp_conninfo() { echo "host=127.0.0.1 port=$1 user=postgres dbname=postgres"; }

# proxy_start MAPPING...: latproxy in the background, once it listens
proxy_start() {
    local out=$1 i
    shift
    bench/latproxy "$@" >"$out.stdout" 2>"$out" &
    PROXY_PID=$!
    for i in $(seq 1 100); do
        grep -q ready "$out.stdout" 2>/dev/null && return 0
        kill -0 "$PROXY_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "latproxy did not start:" >&2
    cat "$out" >&2
    return 1
}

proxy_stop() {
    [ -n "$PROXY_PID" ] || return 0
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
    PROXY_PID=
}

# latency_strategies: this project's, the time windows, and the anchors
latency_strategies() {
    local t=$LAT_WAIT_MS
    echo "leader,time:2000,time:15000,check,wait:$t,check-pipe,wait-pipe:$t,wait-one:$t,gitlab,maxscale:$t,waitfor:$t"
}

# latency_route WORK SCENARIO LEADER_PORT F1_PORT F2_PORT [distbench options]
latency_route() {
    local w=$1 sc=$2 pl=$3 p1=$4 p2=$5 status=0
    shift 5
    bench/distbench route \
        --leader "$(tcp_conninfo "$pl")" \
        --follower "$(tcp_conninfo "$p1")" --follower "$(tcp_conninfo "$p2")" \
        --scenario "$sc" --latency-table \
        --sessions "$LAT_SESSIONS" --reads "${READS:-5}" --think-ms "${THINK_MS:-50}" \
        --duration "$LAT_DURATION" --strategies "$(latency_strategies)" \
        --markdown "$w/$sc.md" --tsv "$w/route.tsv" --raw-tsv "$w/raw.tsv" "$@" \
        2> >(tee -a "$w/latency-log.txt" >&2) || status=$?
    [ "$status" -eq 0 ] || echo "   (consistency checks failed in $sc: see the table)"
}

# latency_measure WORK: run the scenario; leaves latency.md, route.tsv
# (appended), raw.tsv, proxy.txt and latency-env.txt in WORK
latency_measure() {
    local w=$1 lp=$LAT_PORT saved_base=$BASE_PORT
    local leader_port=$((lp)) f1=$((lp + 1)) f2=$((lp + 2))
    local p_leader=$((lp + 20)) p_f1=$((lp + 21)) p_f2=$((lp + 22)) p_repl=$((lp + 30))

    echo "$(cut -d' ' -f1-3 /proc/loadavg)" >"$w/latency-load-before.txt"
    date -u '+%Y-%m-%d %H:%M UTC' >"$w/latency-date.txt"
    ps -eo pcpu=,args= --sort=-pcpu | awk '$1 >= 10 { $1 = $1 "%"; print }' | head -5 \
        | cut -c1-100 >"$w/latency-busy.txt" || true
    proxy_start "$w/proxy.txt" \
        "$p_leader:$leader_port:$(half "$LEADER_RTT_MS")" \
        "$p_f1:$f1:$(half "$FOLLOWER_RTT_MS")" \
        "$p_f2:$f2:$(half "$FOLLOWER_RTT_MS")" \
        "$p_repl:$leader_port:$(half "$REPL_RTT_MS")"
    BASE_PORT=$lp CLUSTER_TCP=1 CLUSTER_REPL_PORT=$p_repl cluster_start 2 >/dev/null
    BASE_PORT=$saved_base
    echo "   leader and two followers in $CLUSTER_DIR, through latproxy (pid $PROXY_PID)"
    # 1: as described; 2: the same with follower 1 replaying 100 ms late
    latency_route "$w" latency "$p_leader" "$p_f1" "$p_f2"
    latency_route "$w" latency-lag "$p_leader" "$p_f1" "$p_f2" \
        --delay-ms "$LAG_DELAY_MS" --delay-on 1
    cluster_stop
    proxy_stop
    echo "$(cut -d' ' -f1-3 /proc/loadavg)" >"$w/latency-load-after.txt"
    return 0
}

# The virtual environment with matplotlib, created on first use.
venv_python() {
    if ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
        if ! /usr/bin/python3 -m venv "$VENV" >&2 2>/dev/null; then
            apt-get install -y python3-venv >&2
            /usr/bin/python3 -m venv "$VENV" >&2
        fi
        "$VENV/bin/pip" install -q matplotlib >&2
    fi
    echo "$VENV/bin/python"
}

# get STRATEGY COLUMN: one field of the latency scenario's line in route.tsv
lat_get() { awk -F'\t' -v s="${LAT_SC:-latency}" -v t="$1" -v c="$2" '$1 == s && $2 == t { print $c }' "$LAT_TSV"; }
lat_calc() { awk "BEGIN { printf \"$1\", $2 }"; }

# latency_report WORK OUT: figures next to OUT, and OUT's latency section
latency_report() {
    local w=$1 out=$2 figdir py section t=$LAT_WAIT_MS
    figdir=$(dirname "$out")/figures
    mkdir -p "$figdir"
    py=$(venv_python)
    "$py" bench/plot.py --tsv "$w/route.tsv" --raw "$w/raw.tsv" --outdir "$figdir"
    LAT_TSV=$w/route.tsv
    section=$w/latency-section.md
    latency_section "$w" >"$section"
    if grep -q '^<!-- latency: begin' "$out" 2>/dev/null; then
        awk -v f="$section" '
            /^<!-- latency: begin/ { while ((getline l < f) > 0) print l; skip = 1; next }
            /^<!-- latency: end/ { skip = 0; next }
            !skip { print }' "$out" >"$out.new"
        mv "$out.new" "$out"
    else
        { echo; cat "$section"; } >>"$out"
    fi
}

latency_section() {
    local w=$1 t=$LAT_WAIT_MS
    local lb la busy rl rf rows
    lb=$(cat "$w/latency-load-before.txt") la=$(cat "$w/latency-load-after.txt")
    busy=$( [ -s "$w/latency-busy.txt" ] && sed 's/|/\\|/g; s/$/;/' "$w/latency-busy.txt" | paste -sd' ' || echo none)
    rl=$(lat_get leader 29) rf=$(lat_get leader 30)
    local wp=wait-pipe:$t wo=wait-one:$t ms=maxscale:$t wf=waitfor:$t
    local lim50
    cat <<EOF
<!-- latency: begin (written by bench/latency.sh; the rest of this file by bench/run.sh) -->
## Under network latency

Generated by \`bash bench/latency.sh\` on $(cat "$w/latency-date.txt" 2>/dev/null || date -u '+%Y-%m-%d %H:%M UTC') (also part of
\`bash bench/run.sh\`). Every figure of this section and its pictures come from that one run.

**Load:** leader, followers, proxy and client share the machine's
cores — load average (1, 5, 15 min) $lb before and $la after the run;
processes using ≥ 10 % of a core at the start: $busy. Latencies below the
proxy's delays are therefore noisy in their tails.

### Set-up

A latency-injecting TCP proxy on loopback (\`bench/latproxy\`, built with
distbench: it holds every chunk read in either direction for a fixed
one-way delay, in order, without limiting throughput; netem is not
available here) stands between distbench and the servers, which listen on
127.0.0.1 for this scenario: the leader **$LEADER_RTT_MS ms** round trip away,
each of the two followers **$FOLLOWER_RTT_MS ms** away, and the followers
stream from the leader through the proxy too, $REPL_RTT_MS ms round trip
(the client and its followers in one place, the leader in another: a
follower cannot be nearer the leader than the client is, less 1 ms).
Measured round trips of \`SELECT 1\` through it: leader $rl ms, follower $rf ms.
$LAT_SESSIONS sessions write then read ${READS:-5} times (mean think time ${THINK_MS:-50} ms),
$LAT_DURATION s per strategy, no background load; every read is checked by value.
Every wait has a $t ms timeout, then the read goes to the leader.

Strategies (\`bench/route.c\` describes each):

- **this project's**: token check; token wait (\`CALL distributed.wait_for\`,
  then the read); the pipelined check and wait (one libpq pipeline, one
  round trip); and **one message**, the goal strategy: when the follower is
  not known to cover the token, \`CALL distributed.wait_for(token, $t); SELECT ...\`
  as one simple-query message, the leader on a timeout;
- **GitLab-style**: after a write, one more leader query for
  \`pg_current_wal_insert_lsn()\`, stick to the leader; each read while stuck
  asks the replicas in random order \`pg_last_wal_replay_lsn() >= lsn\`, reads
  on the first that says yes (and unsticks), else on the leader;
- **MaxScale-universal-style**: before every read, ask the leader for
  \`pg_current_wal_flush_lsn()\`, then wait for it and read on a follower in
  one round trip (MaxScale sends \`MASTER_GTID_WAIT\` and the read together);
  on a timeout the read goes to the leader;
- **WAIT FOR-style** (PostgreSQL 19's \`WAIT FOR LSN\`, not available here,
  emulated with this extension's bare-LSN \`CALL distributed.wait_for(lsn, $t)\`):
  after the commit, ask the leader for \`pg_current_wal_insert_lsn()\`; before a
  read on a follower not yet seen to reach it, wait, then read;
- **time windows** of 2 s (Rails) and 15 s (django-multidb-router), and the
  leader alone.

Columns: **read after write** is what the user waits for: from the reply to
the write (its commit) to the value of the first read after it, including
any position query, probe or wait. The **physical limit** is, per write,
the replay lag on the follower that had it first (from the write's reply to
the midpoint of the observations that bracket its replay) plus one measured
round trip to that follower: no router can show the write from a follower
sooner. **Extra round trips per read** count every query beyond the read
itself (in brackets: those that went to the leader, each
$LEADER_RTT_MS ms); **extra leader round trips per write** are the position
queries after a commit.

#### latency: as described

$(cat "$w/latency.md")

#### latency-lag: the same, with follower 1 replaying $LAG_DELAY_MS ms late

\`recovery_min_apply_delay = ${LAG_DELAY_MS}ms\` on follower 1 (ALTER SYSTEM and a
reload before the runs); follower 2 as before. A router that picks a
follower at random waits on the late one half the time.

$(cat "$w/latency-lag.md")

EOF
    # the figures, as ratios of the pipelined wait (or the one-message wait,
    # once it works and is faster) and of the physical limit
    local best=$wp bestname="pipelined token wait" wo_err lim_lag best_lag
    wo_err=$(lat_get "$wo" 28)
    if [ "${wo_err:-1}" -eq 0 ] && awk -v a="$(lat_get "$wo" 22)" -v b="$(lat_get "$wp" 22)" 'BEGIN { exit !(a <= b) }'; then
        best=$wo bestname="one-message token wait"
    fi
    lim50=$(lat_get "$best" 26)
    lim_lag=$(LAT_SC=latency-lag lat_get "$best" 26)
    best_lag=$(LAT_SC=latency-lag lat_get "$best" 22)
    cat <<EOF
Read-after-write p50 as ratios (lower is better; from the tables above; the
physical limit is the one measured during the $bestname's run of each scenario:
$(lat_calc "%.1f" "$lim50") ms and $(lat_calc "%.1f" "$lim_lag") ms):

| strategy | latency: p50 (ms) | ÷ physical limit | ÷ $bestname | latency-lag: p50 (ms) | ÷ physical limit | ÷ $bestname | extra round trips per read (latency; latency-lag) |
|---|--:|--:|--:|--:|--:|--:|--:|
$(for s in leader time:2000 time:15000 check "wait:$t" check-pipe "$wp" "$wo" gitlab "$ms" "$wf"; do
    v=$(lat_get "$s" 22) v2=$(LAT_SC=latency-lag lat_get "$s" 22)
    [ -n "$v" ] && [ -n "$v2" ] || continue
    printf '| %s | %.1f | %s | %s | %.1f | %s | %s | %s; %s |\n' "$s" "$v" \
        "$(lat_calc "%.1f" "$v / $lim50")" "$(lat_calc "%.2f" "$v / $(lat_get "$best" 22)")" \
        "$v2" "$(lat_calc "%.1f" "$v2 / $lim_lag")" "$(lat_calc "%.2f" "$v2 / $best_lag")" \
        "$(lat_get "$s" 11)" "$(LAT_SC=latency-lag lat_get "$s" 11)"
done)

EOF
    cat <<EOF
The zero-extra-round-trip targets of issue 11 (§1: extra round trips per
read ≤ 0.02, follower share ≥ 95 % of the ideal, no stale read), here at the
level of distbench's own router rather than the Django router's:

| strategy, scenario | extra round trips per read | follower share ÷ ideal | stale reads | |
|---|--:|--:|--:|---|
$(for sc in latency latency-lag; do for s in "$wp" "$wo"; do
    x=$(LAT_SC=$sc lat_get "$s" 11)
    [ -n "$x" ] || continue
    sh=$(LAT_SC=$sc lat_get "$s" 4) hi=$(LAT_SC=$sc lat_get "$s" 6)
    st=$(( $(LAT_SC=$sc lat_get "$s" 7) + $(LAT_SC=$sc lat_get "$s" 8) ))
    of=$(lat_calc "%.1f" "($hi > 0) ? 100 * $sh / $hi : 0")
    v=$(awk -v x="$x" -v o="$of" -v n="$st" 'BEGIN { print (x <= 0.02 && o >= 95 && n == 0) ? "met" : "**missed**" }')
    printf '| %s, %s | %s | %s %% | %s | %s |\n' "$s" "$sc" "$x" "$of" "$st" "$v"
done; done)

EOF
    cat <<EOF
How to read them:

- **Where the leader round trip goes.** The GitLab- and WAIT FOR-style
  routers ask the leader for its position after every commit, so no read
  after a write can come sooner than one leader round trip (read after write
  p50 $(lat_get gitlab 22) and $(lat_get "$wf" 22) ms); the MaxScale-style router asks before every
  read, so every read costs one (all reads p50 $(lat_get "$ms" 9) ms). Time windows send
  every read after a write to the leader. This project's token comes with the
  commit's own reply, so its strategies can read on a follower right away;
  the plain check and wait then spend one follower round trip on the first
  read after a write ($(lat_get check 12) and $(lat_get "wait:$t" 12) extra per first read), and the
  pipelined wait spends none.
- **A late follower** (latency-lag). Routers that pick a follower at random
  (MaxScale-, WAIT FOR-style) wait on the late one half the time, time out
  after $t ms and then pay the leader too: $(LAT_SC=latency-lag lat_get "$ms" 15) and $(LAT_SC=latency-lag lat_get "$wf" 15) timed-out waits. This
  project's router waits on the follower known to be furthest ahead, and
  times out only when it probes the late one to see whether it caught up
  (every 100 ms without news from it): $(LAT_SC=latency-lag lat_get "$wp" 15) for the pipelined wait.
- **GitLab-style stale reads** (latency-lag: $(( $(LAT_SC=latency-lag lat_get gitlab 7) + $(LAT_SC=latency-lag lat_get gitlab 8) ))) are the design's, not the
  checker's: the session sticks to the leader only until one replica has
  caught up; the next requests go to any replica, the late one included.
  With the followers in step (latency) it read no stale value.

EOF
    if [ "${wo_err:-0}" -gt 0 ]; then
        local wo_all="all"
        [ "$(lat_get "$wo" 14)" -eq 0 ] || wo_all="$(lat_get "$wo" 14) reached, and"
        cat <<EOF
**The one-message form fails on this build of the extension**: $wo_all
$wo_err of its \`CALL distributed.wait_for(...); SELECT ...\` messages were
refused (the procedure refuses to run inside the implicit transaction of a
multi-statement message: \`$(grep -m1 'one-message wait failed' "$w/latency-log.txt" | sed 's/.*reading on the leader: //; s/|/\\|/g' | tr -d '\n' | cut -c1-160)\`),
so every one of those reads went to the leader after the refusal (the "waits"
column counts them as errors, the extra round trips column pays for them).
The fix belongs to the extension (issue 9, item 4); once it is installed this
command measures the strategy as intended. The pipelined form (libpq
pipeline, two syncs) is the same round trip and works today.

EOF
    fi
    cat <<EOF
Pictures (from this run):

- [follower share per strategy](figures/follower-share.png)
- [read after write: distribution (CDF)](figures/read-after-write-cdf.png)
- [read after write: box plots](figures/read-after-write-box.png)

![follower share](figures/follower-share.png)
![read after write, CDF](figures/read-after-write-cdf.png)

<!-- latency: end -->
EOF
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    OUT=${OUT:-bench/results.md}
    bench_begin distbench-latency
    echo "== latency scenario: leader $LEADER_RTT_MS ms, followers $FOLLOWER_RTT_MS ms, replication $REPL_RTT_MS ms"
    latency_measure "$WORK"
    echo "== writing the latency section of $OUT and its figures"
    latency_report "$WORK" "$OUT"
    echo "== done: $OUT"
fi
