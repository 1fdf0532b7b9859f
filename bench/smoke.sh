#!/bin/bash
# A tiny run of distbench, for the test command: build it, start a leader
# and one follower (as user postgres, scratch directory, Unix sockets), run
# every routing strategy for a second each under a 50 ms apply delay, and a
# few rounds of the wake-up measurement, then stop the servers.  Then the
# latency scenario in small: latproxy in front of both servers (which also
# listen on 127.0.0.1), the new strategies and anchors through it.
#
#   bash bench/smoke.sh          # as root, from the repository root; the
#                                # extension must already be installed
#
# Fails if the tool fails, if leader-only or any token strategy reads a
# stale value, or if the checker does not see the stale reads that the
# naive strategy must make under the delay, or if the proxy does not add at
# least the configured latency (a lower bound only) or carries nothing.
# Prints "bench: N passed, M failed".
set -uo pipefail

cd "$(dirname "$0")/.."
. bench/cluster.sh
BASE_PORT=${SMOKE_PORT:-$(pick_base_port)}   # its servers also listen on 127.0.0.1

passed=0
failed=0
result() {  # result OK|FAIL description
    if [ "$1" = OK ]; then
        passed=$((passed + 1)); echo "ok - $2"
    else
        failed=$((failed + 1)); echo "not ok - $2"
    fi
}
PROXY_PID=
finish() {
    [ -z "$PROXY_PID" ] || { kill -TERM "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null; }
    cluster_stop
    echo
    echo "bench: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}
trap finish EXIT
trap 'exit 1' INT TERM

if make -s -C bench PG_CONFIG="$PG_CONFIG" >/tmp/distbench-smoke-build.$$ 2>&1; then
    result OK "distbench builds with -Wall -Wextra -Werror"
else
    cat /tmp/distbench-smoke-build.$$
    result FAIL "distbench builds with -Wall -Wextra -Werror"
fi
rm -f /tmp/distbench-smoke-build.$$
[ -x bench/distbench ] || exit 1

if CLUSTER_TCP=1 cluster_start 1 >/dev/null; then
    result OK "leader and follower started in $CLUSTER_DIR"
else
    result FAIL "leader and follower started"
    exit 1
fi

out=$(mktemp)
bench/distbench route --leader "$LEADER" --follower "${FOLLOWERS[0]}" \
    --scenario delay --delay-ms 50 --delay-on 1 \
    --sessions 8 --reads 3 --think-ms 20 --duration 1 \
    --strategies leader,naive,time:100,check,wait:100,wait-fn:100,check-pipe,wait-pipe:100 \
    --expect-stale naive --checks >"$out"
status=$?
grep -E '^(ok|not ok) ' "$out" | sed -E 's/^(ok|not ok) [0-9]+ -/\1 -/'
passed=$((passed + $(grep -c '^ok ' "$out")))
failed=$((failed + $(grep -c '^not ok ' "$out")))
if [ "$status" -eq 0 ]; then
    result OK "distbench route exits 0"
else
    result FAIL "distbench route exits 0 (status $status)"
fi

if bench/distbench wake --leader "$LEADER" --follower "${FOLLOWERS[0]}" \
    --rounds-one 3 --rounds-many 2 --waiters 10 --cpu-seconds 0.2 --markdown "$out.wake" \
    && grep -q 'wake-up latency, 10 waiters' "$out.wake"; then
    result OK "distbench wake measures wake-up latency and idle CPU"
else
    result FAIL "distbench wake measures wake-up latency and idle CPU"
fi

# The latency scenario in small: the leader 20 ms away, the follower 2 ms,
# follower 1 replaying 50 ms late.
LP=$((BASE_PORT + 20)) FP=$((BASE_PORT + 21))
bench/latproxy "$LP:$BASE_PORT:10" "$FP:$((BASE_PORT + 1)):1" >"$out.proxy-ready" 2>"$out.proxy" &
PROXY_PID=$!
for _ in $(seq 1 100); do grep -q ready "$out.proxy-ready" 2>/dev/null && break; sleep 0.05; done
bench/distbench route --leader "host=127.0.0.1 port=$LP user=postgres dbname=postgres" \
    --follower "host=127.0.0.1 port=$FP user=postgres dbname=postgres" \
    --scenario latency --latency-table --delay-ms 50 --delay-on 1 \
    --sessions 6 --reads 3 --think-ms 20 --duration 1 \
    --strategies leader,naive,wait-pipe:100,wait-one:100,gitlab,maxscale:100,waitfor:100 \
    --expect-stale naive --checks --tsv "$out.tsv" --markdown "$out.md" >"$out" 2>"$out.log"
status=$?
kill -TERM "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null; PROXY_PID=
grep -E '^(ok|not ok) ' "$out" | sed -E 's/^(ok|not ok) [0-9]+ -/\1 -/'
passed=$((passed + $(grep -c '^ok ' "$out")))
failed=$((failed + $(grep -c '^not ok ' "$out")))
if [ "$status" -eq 0 ]; then
    result OK "distbench route through latproxy exits 0"
else
    sed 's/^/# /' "$out.log" | tail -20
    result FAIL "distbench route through latproxy exits 0 (status $status)"
fi
rtt() { sed -n "s/.*round trip (SELECT 1, median of 21): $1 \([0-9.]*\) ms/\1/p" "$out.log"; }
rl=$(rtt leader) rf=$(rtt "follower 1")
if [ -n "$rl" ] && awk -v x="$rl" 'BEGIN { exit !(x >= 18) }'; then
    result OK "latproxy adds the leader's 20 ms round trip (measured $rl ms, at least 18)"
else
    result FAIL "latproxy adds the leader's 20 ms round trip (measured '${rl}' ms, at least 18)"
fi
if [ -n "$rf" ] && awk -v x="$rf" 'BEGIN { exit !(x >= 1.8) }'; then
    result OK "latproxy adds the follower's 2 ms round trip (measured $rf ms, at least 1.8)"
else
    result FAIL "latproxy adds the follower's 2 ms round trip (measured '${rf}' ms, at least 1.8)"
fi
lp50=$(awk -F'\t' '$2 == "leader" { print $9 }' "$out.tsv")
if [ -n "$lp50" ] && awk -v x="$lp50" 'BEGIN { exit !(x >= 18) }'; then
    result OK "leader-only reads through latproxy take its round trip (p50 $lp50 ms)"
else
    result FAIL "leader-only reads through latproxy take its round trip (p50 '${lp50}' ms)"
fi
# every session's connections went through the proxy, both ways
counts_ok=1
for port in "$LP" "$FP"; do
    c=$(sed -n "s/^latproxy: port $port -> .*: \([0-9]*\) connections, \([0-9]*\) chunks.*/\1 \2/p" "$out.proxy")
    read -r nc nk <<<"${c:-0 0}"
    [ "$nc" -ge 7 ] && [ "$nk" -gt 0 ] || counts_ok=0
done
if [ "$counts_ok" = 1 ]; then
    result OK "latproxy carried every session's connections ($(awk '/connections/ { printf "%sport %s: %s connections, %s chunks", n++ ? "; " : "", $3, $10, $12 }' "$out.proxy"))"
else
    cat "$out.proxy"
    result FAIL "latproxy carried every session's connections"
fi
wo=$(awk -F'\t' '$2 == "wait-one:100" { print $14 " reached, " $28 " refused" }' "$out.tsv")
echo "# wait-one (CALL and read in one message): $wo"
rm -f "$out" "$out.wake" "$out.tsv" "$out.md" "$out.log" "$out.proxy" "$out.proxy-ready"
