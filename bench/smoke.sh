#!/bin/bash
# A tiny run of distbench, for the test command: build it, start a leader
# and one follower (as user postgres, scratch directory, Unix sockets), run
# every routing strategy for a second each under a 50 ms apply delay, and a
# few rounds of the wake-up measurement, then stop the servers.
#
#   bash bench/smoke.sh          # as root, from the repository root; the
#                                # extension must already be installed
#
# Fails if the tool fails, if leader-only or any token strategy reads a
# stale value, or if the checker does not see the stale reads that the
# naive strategy must make under the delay.  Prints "bench: N passed, M failed".
set -uo pipefail

cd "$(dirname "$0")/.."
. bench/cluster.sh
BASE_PORT=${BASE_PORT:-5470}

passed=0
failed=0
result() {  # result OK|FAIL description
    if [ "$1" = OK ]; then
        passed=$((passed + 1)); echo "ok - $2"
    else
        failed=$((failed + 1)); echo "not ok - $2"
    fi
}
finish() {
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

if cluster_start 1 >/dev/null; then
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
rm -f "$out" "$out.wake"
