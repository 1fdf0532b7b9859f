"""Wake-up latency and idle cost of replay waiters, on a real follower.

Run as: bash test/with-cluster.sh test/measure_waits.py

Latency: replay is paused, the leader commits, N sessions wait on the
follower for that token, replay is resumed; each sample is the waiter's
clock_timestamp() after the wait returned minus the clock_timestamp() taken
right after pg_wal_replay_resume() returned (the same server clock).  It
includes replaying the one pending commit.

Idle cost: 200 sessions wait while replay is paused; the CPU time (user +
system, from /proc) of every process of the follower over 10 s, as a share
of one core, against the same 10 s with nobody waiting.

This is a measurement, not a test: it asserts nothing about speed.
"""
import os
import statistics
import sys
import threading
import time

import psycopg2

sockdir, lport, fport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def connect(port):
    conn = psycopg2.connect(host=sockdir, port=port, user="postgres", dbname="postgres")
    conn.autocommit = True
    return conn


leader = connect(lport)
lc = leader.cursor()
lc.execute("CREATE EXTENSION distributed")
lc.execute("CREATE TABLE m (x int)")
follower = connect(fport)
fc = follower.cursor()
while True:
    fc.execute("SELECT to_regclass('public.m') IS NOT NULL")
    if fc.fetchone()[0]:
        break
    time.sleep(0.05)


def pause():
    fc.execute("SELECT pg_wal_replay_pause()")
    while True:
        fc.execute("SELECT pg_get_wal_replay_pause_state()")
        if fc.fetchone()[0] == "paused":
            return
        time.sleep(0.005)


def wait_for_waiters(n):
    while True:
        fc.execute("SELECT count(*) FROM distributed.waiters")
        if fc.fetchone()[0] >= n:
            return
        time.sleep(0.005)


pool = [connect(fport) for _ in range(200)]


def round_(n):
    pause()
    lc.execute("INSERT INTO m VALUES (1)")
    token = leader.get_parameter_status("distributed.last_commit")
    out = [None] * n

    def run(i):
        cur = pool[i].cursor()
        cur.execute("SELECT distributed.wait(%s, 60000), clock_timestamp()", (token,))
        out[i] = cur.fetchone()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    wait_for_waiters(n)
    time.sleep(0.05)
    fc.execute("SELECT pg_wal_replay_resume()")
    fc.execute("SELECT clock_timestamp()")
    resumed = fc.fetchone()[0]
    for t in threads:
        t.join()
    assert all(r[0] == "reached" for r in out), out
    return [max(0.0, (r[1] - resumed).total_seconds() * 1000) for r in out]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def report(name, xs):
    print("%-22s samples %5d   p50 %.3f ms   p99 %.3f ms   max %.3f ms   mean %.3f ms"
          % (name, len(xs), pct(xs, 50), pct(xs, 99), max(xs), statistics.mean(xs)))


print("wake-up latency (resume of replay -> waiter returns), watch_interval 1 ms")
one = []
for _ in range(50):
    one += round_(1)
report("1 waiter", one)
many = []
for _ in range(10):
    many += round_(200)
report("200 waiters", many)

fc.execute("SELECT pg_backend_pid()")
fc.execute("SELECT setting FROM pg_settings WHERE name = 'data_directory'")
datadir = fc.fetchone()[0]
with open(os.path.join(datadir, "postmaster.pid")) as f:
    postmaster = int(f.readline())


def follower_cpu_seconds():
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid = int(fields[1])
        if int(pid) == postmaster or ppid == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def cpu_share(seconds):
    c0, t0 = follower_cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    c1, t1 = follower_cpu_seconds(), time.monotonic()
    return (c1 - c0) / (t1 - t0) * 100


pause()
print("\nfollower CPU, replay paused, over 10 s (share of one core)")
print("  nobody waiting:     %.2f %%" % cpu_share(10))
lc.execute("INSERT INTO m VALUES (2)")
token = leader.get_parameter_status("distributed.last_commit")
threads = [threading.Thread(target=lambda c=c: c.cursor().execute(
    "SELECT distributed.wait(%s, 60000)", (token,))) for c in pool]
for t in threads:
    t.start()
wait_for_waiters(200)
print("  200 waiters asleep: %.2f %%" % cpu_share(10))
fc.execute("SELECT pg_wal_replay_resume()")
for t in threads:
    t.join()
fc.execute("SELECT waits_started, waits_reached, waits_timed_out, waits_cancelled FROM distributed.stats")
print("\nfollower counters (started, reached, timed out, cancelled):", fc.fetchone())
