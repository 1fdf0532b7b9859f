#!/bin/bash
# Run the extension's C under Valgrind memcheck: the pg_regress suite (and
# the isolation specs, and optionally the fuzzer) on a temporary instance
# whose every server process -- postmaster, backends, the replay watcher,
# parallel workers -- runs under memcheck, with an unoptimised (-O0 -g)
# build of the extension from this tree.
#
#   bash test/fuzz/memcheck.sh                 # as root (re-runs as postgres) or as a user
#   FUZZ=1 bash test/fuzz/memcheck.sh          # also the fuzzer, with fewer calls
#   KEEP=1 bash test/fuzz/memcheck.sh          # keep the scratch directory
#
# Nothing is installed system-wide.  The PostgreSQL 15 installation is
# copied into a scratch directory (PostgreSQL finds its share and lib
# directories relative to its binaries, so the copy is self-contained), the
# extension is built there and installed into the copy, and the copy's
# "postgres" becomes a wrapper that runs the real binary under valgrind
# (initdb's bootstrap, single-user mode and -V/-C queries run without it).
#
# The Debian server binary is not built with USE_VALGRIND: memcheck sees
# malloc-level heap errors, uninitialised values (also inside palloc'd
# memory) and invalid accesses outside allocated blocks, but not overruns
# between palloc chunks of one memory context block.
#
# Prints every error whose stack has a frame in the extension, a count of
# the others, and "memcheck: N errors in distributed, M elsewhere".  Exits
# non-zero if a suite failed or the extension has an error.
set -euo pipefail

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
RUN_AS=${RUN_AS:-postgres}
HERE=$(cd "$(dirname "$0")" && pwd)
TREE=$(cd "$HERE/../.." && pwd)

if [ "$(id -u)" = 0 ]; then
    # initdb refuses root: copy the tree where the user can write, rerun
    SCRATCH=$(mktemp -d /tmp/distributed-memcheck.XXXXXX)
    tar -C "$TREE" --exclude=.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
        --exclude=tmp_check --exclude=tmp_check_iso --exclude=results --exclude=output_iso \
        -cf - . | (mkdir "$SCRATCH/src" && tar -C "$SCRATCH/src" -xf -)
    chown -R "$RUN_AS": "$SCRATCH"
    rc=0
    runuser -u "$RUN_AS" -- env MEMCHECK_SCRATCH="$SCRATCH" PG_CONFIG="$PG_CONFIG" \
        FUZZ="${FUZZ:-}" KEEP="${KEEP:-}" bash "$SCRATCH/src/test/fuzz/memcheck.sh" || rc=$?
    [ -n "${KEEP:-}" ] || rm -rf "$SCRATCH"
    exit $rc
fi

if [ -n "${MEMCHECK_SCRATCH:-}" ]; then
    SCRATCH=$MEMCHECK_SCRATCH
    SRC=$SCRATCH/src
else
    SCRATCH=$(mktemp -d /tmp/distributed-memcheck.XXXXXX)
    SRC=$SCRATCH/src
    mkdir "$SRC"
    tar -C "$TREE" --exclude=.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
        --exclude=tmp_check --exclude=tmp_check_iso --exclude=results --exclude=output_iso \
        -cf - . | tar -C "$SRC" -xf -
    [ -n "${KEEP:-}" ] || trap 'rm -rf "$SCRATCH"' EXIT
fi
command -v valgrind >/dev/null || { echo "memcheck: valgrind is not installed (apt-get install valgrind)"; exit 2; }
T0=$(date +%s)

echo "== a private copy of the PostgreSQL installation in $SCRATCH/pg"
BINDIR=$("$PG_CONFIG" --bindir)          # /usr/lib/postgresql/15/bin
PKGLIB=$("$PG_CONFIG" --pkglibdir)       # /usr/lib/postgresql/15/lib
SHARE=$("$PG_CONFIG" --sharedir)         # /usr/share/postgresql/15
PG=$SCRATCH/pg
mkdir -p "$PG$(dirname "$BINDIR")" "$PG$(dirname "$SHARE")"
cp -a "$(dirname "$BINDIR")/." "$PG$(dirname "$BINDIR")/"
cp -a "$SHARE" "$PG$(dirname "$SHARE")/"
CBIN=$PG$BINDIR
CPG_CONFIG=$CBIN/pg_config
[ "$("$CPG_CONFIG" --bindir)" = "$CBIN" ] || { echo "memcheck: the copy is not relocatable"; exit 2; }

echo "== building the extension with -O0 -g3 (in the scratch copy) and installing it into the copy"
make -s -C "$SRC" PG_CONFIG="$PG_CONFIG" COPT='-O0 -g3 -fno-omit-frame-pointer' clean all >/dev/null
cp "$SRC/distributed.so" "$("$CPG_CONFIG" --pkglibdir)/distributed.so"
rm -rf "$("$CPG_CONFIG" --pkglibdir)/bitcode/distributed" "$("$CPG_CONFIG" --pkglibdir)/bitcode/distributed.index.bc"
cp "$SRC"/distributed.control "$SRC"/distributed--*.sql "$("$CPG_CONFIG" --sharedir)/extension/"

VGLOG=$SCRATCH/valgrind
mkdir -p "$VGLOG"
SUPP=$SCRATCH/memcheck.supp
# Our own suppressions for what an uninstrumented server does on purpose:
# structs with padding bytes written to disk or sockets, and CRCs over them.
cat > "$SUPP" <<'SUPP'
{
   padding_written_to_wal
   Memcheck:Param
   write(buf)
   ...
   fun:XLogWrite
}
{
   padding_written_to_wal_pwrite
   Memcheck:Param
   pwrite64(buf)
   ...
   fun:XLogWrite
}
{
   padding_written_to_wal_flush
   Memcheck:Param
   pwrite64(buf)
   ...
   fun:XLogFlush
}
{
   padding_written_to_wal_bgflush
   Memcheck:Param
   pwrite64(buf)
   ...
   fun:XLogBackgroundFlush
}
{
   padding_relcache_init_file_phase3
   Memcheck:Param
   write(buf)
   ...
   fun:RelationCacheInitializePhase3
}
{
   padding_in_wal_crc
   Memcheck:Value8
   fun:pg_comp_crc32c*
   ...
   fun:XLogInsert
}
{
   padding_in_wal_crc_cond
   Memcheck:Cond
   fun:pg_comp_crc32c*
   ...
   fun:XLogInsert
}
{
   padding_pgstat_files
   Memcheck:Param
   write(buf)
   ...
   fun:pgstat_write_statsfile
}
{
   padding_relcache_init_file
   Memcheck:Param
   write(buf)
   ...
   fun:write_relcache_init_file
}
{
   padding_twophase_file
   Memcheck:Param
   write(buf)
   ...
   fun:EndPrepare
}
{
   padding_twophase_crc
   Memcheck:Value8
   fun:pg_comp_crc32c*
   fun:EndPrepare
}
{
   padding_control_file
   Memcheck:Param
   write(buf)
   ...
   fun:WriteControlFile
}
{
   padding_control_file_update
   Memcheck:Param
   pwrite64(buf)
   ...
   fun:UpdateControlFile
}
{
   atomic_u64_init_reads_old_value
   Memcheck:Cond
   fun:pg_atomic_exchange_u64_impl
}
SUPP

mv "$CBIN/postgres" "$CBIN/postgres.real"
cat > "$CBIN/postgres" <<WRAP
#!/bin/bash
# run the server under valgrind memcheck (see test/fuzz/memcheck.sh)
real="\$(dirname "\$0")/postgres.real"
for a in "\$@"; do
    case "\$a" in
        --boot|--single|-V|--version|-C|--describe-config) exec "\$real" "\$@" ;;
    esac
done
exec valgrind --quiet --trace-children=yes --track-origins=yes --num-callers=40 \\
    --leak-check=no --error-limit=no --gen-suppressions=all \\
    --suppressions="$SUPP" --log-file="$VGLOG/%p.log" "\$real" "\$@"
WRAP
chmod +x "$CBIN/postgres"

CONF=$SCRATCH/memcheck.conf
cat "$SRC/test/regress.conf" > "$CONF"
printf '%s\n' "jit = off" >> "$CONF"

export PGCTLTIMEOUT=900
status=0
REGRESS=$(sed -n 's/^REGRESS *= *//p' "$SRC/Makefile")
ISOLATION=$(sed -n 's/^ISOLATION *= *//p' "$SRC/Makefile")
if [ -z "$ISOLATION" ] && ls "$SRC"/specs/*.spec >/dev/null 2>&1; then
    ISOLATION=$(cd "$SRC/specs" && ls *.spec | sed 's/\.spec$//' | tr '\n' ' ')
fi
PGXS_TEST=$("$CPG_CONFIG" --pkglibdir)/pgxs/src/test

echo "== pg_regress under valgrind: $REGRESS"
t=$(date +%s)
(cd "$SRC" && "$PGXS_TEST/regress/pg_regress" --temp-instance="$SCRATCH/tmp_regress" \
    --temp-config="$CONF" --bindir="$CBIN" --inputdir=. --outputdir="$SCRATCH/out_regress" \
    --dbname=contrib_regression $REGRESS) || status=1
echo "   ($(( $(date +%s) - t )) s)"
[ -f "$SCRATCH/out_regress/regression.diffs" ] && cat "$SCRATCH/out_regress/regression.diffs"

if [ -n "$ISOLATION" ]; then
    echo "== pg_isolation_regress under valgrind: $ISOLATION"
    t=$(date +%s)
    (cd "$SRC" && "$PGXS_TEST/isolation/pg_isolation_regress" --temp-instance="$SCRATCH/tmp_iso" \
        --temp-config="$CONF" --bindir="$CBIN" --inputdir=. --outputdir="$SCRATCH/out_iso" \
        --dbname=isolation_regression $ISOLATION) || status=1
    echo "   ($(( $(date +%s) - t )) s)"
    [ -f "$SCRATCH/out_iso/regression.diffs" ] && cat "$SCRATCH/out_iso/regression.diffs"
fi

if [ -n "${FUZZ:-}" ]; then
    echo "== the fuzzer under valgrind (fewer calls, slow calls allowed)"
    t=$(date +%s)
    /usr/bin/python3 "$SRC/test/fuzz/fuzz.py" --pg-config "$CPG_CONFIG" --readme "$SRC/README.md" \
        --calls "${FUZZ_CALLS:-1500}" --time "${FUZZ_TIME:-240}" --slow 60 \
        --seed "${FUZZ_SEED:-20241121}" | grep -E '^fuzz: ' || status=1
    echo "   ($(( $(date +%s) - t )) s)"
fi

echo "== valgrind reports ($(ls "$VGLOG" | wc -l) server processes)"
/usr/bin/python3 - "$VGLOG" <<'PY' || status=1
# An error is the extension's when the innermost frame outside libc and
# valgrind's allocator is in the extension, or when the uninitialised value
# or the block was created by the extension's code.  Errors deeper under
# one of its hooks (the extension's ProcessUtility hook calls the whole
# utility machinery) are PostgreSQL's and are counted separately.
import os, re, sys
d = sys.argv[1]
OURS = re.compile(r'distributed\.so|\b(?:distributed|leader|follower|token|shmem|monitor)\.c:\d+|\bcompat\.h:\d+')
FRAME = re.compile(r'^\s*(?:at|by) 0x[0-9A-F]+: (\S+) \((.*)\)$')
SYSTEM = re.compile(r'vgpreload|/libc\.so|^[a-z0-9_]+\.c:\d+$')   # glibc frames show glibc's sources


def sections(lines):
    """Split an error into (title, frames) sections."""
    out, title, frames = [], lines[0], []
    for l in lines[1:]:
        m = FRAME.match(l)
        if m:
            frames.append(m.groups())
        else:
            out.append((title, frames))
            title, frames = l.strip(), []
    out.append((title, frames))
    return out


def first_app_frame(frames):
    for fn, loc in frames:
        if OURS.search(loc) or OURS.search(fn):
            return True
        if SYSTEM.search(loc) and not OURS.search(loc):
            continue
        if fn in ('malloc', 'calloc', 'realloc', 'free', 'palloc', 'palloc0', 'repalloc',
                  'MemoryContextAlloc', 'MemoryContextAllocZero', 'MemoryContextAllocExtended'):
            continue
        return False
    return False


ours, under_hook, other, procs = [], 0, {}, 0
for name in sorted(os.listdir(d)):
    procs += 1
    cur = []
    for line in open(os.path.join(d, name), errors='replace').read().splitlines() + ['']:
        body = re.sub(r'^==\d+== ?', '', line)
        if line.startswith('==') and body.strip():
            cur.append(body)
            continue
        if cur and not cur[0].startswith(('Warning: set address range perms', 'Memcheck,',
                                          'Copyright', 'Using Valgrind', 'Command:')):
            secs = sections(cur)
            mine = first_app_frame(secs[0][1])
            for title, frames in secs[1:]:
                if 'created by' in title or "alloc'd" in title or "free'd" in title:
                    mine = mine or any(OURS.search(loc) for _, loc in frames[:8])
            err = '\n'.join(cur)
            if mine:
                ours.append((name, err))
            else:
                if OURS.search(err):
                    under_hook += 1
                top = [fn for fn, loc in secs[0][1] if not SYSTEM.search(loc)][:3]
                k = cur[0] + ' | ' + ' < '.join(top)
                other[k] = other.get(k, 0) + 1
        cur = []
for name, err in ours:
    print('---- %s\n%s' % (name, err))
if other:
    print('errors in PostgreSQL itself (its binary is not built for valgrind; %d of them with one '
          'of the extension\'s hooks further down the stack):' % under_hook)
    for k, n in sorted(other.items(), key=lambda kv: -kv[1])[:15]:
        print('  %4d x %s' % (n, k[:250]))
print('memcheck: %d errors in distributed, %d elsewhere (%d server processes)'
      % (len(ours), sum(other.values()), procs))
sys.exit(1 if ours else 0)
PY
echo "memcheck: total $(( $(date +%s) - T0 )) s; logs in $VGLOG$([ -n "${KEEP:-}" ] || echo ' (removed at exit; KEEP=1 keeps them)')"
exit $status
