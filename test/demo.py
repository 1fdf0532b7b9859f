"""The flow of distributed on a real leader and follower, narrated.

Run by test/demo.sh as: demo.py SOCKET_DIR LEADER_PORT FOLLOWER_PORT
"""
import sys
import threading
import time

import psycopg2

sockdir, lport, fport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def connect(port):
    conn = psycopg2.connect(host=sockdir, port=port, user="postgres", dbname="postgres")
    conn.autocommit = True
    return conn


def show(cur, sql, args=None):
    cur.execute(sql, args)
    cols = [d[0] for d in cur.description]
    rows = cur.fetchall()
    print("   " + " | ".join(cols))
    for r in rows:
        print("   " + " | ".join("" if v is None else str(v) for v in r))


def step(text):
    print("\n-- " + text)


leader = connect(lport)
lc = leader.cursor()
lc.execute("CREATE EXTENSION distributed")
lc.execute("CREATE TABLE profile (user_id int PRIMARY KEY, bio text)")
lc.execute("INSERT INTO profile VALUES (1, 'hello')")

follower = connect(fport)
fc = follower.cursor()
# the follower learns of the extension by replaying it; poll only for this
# set-up step, before its functions exist there
deadline = time.monotonic() + 30
while True:
    fc.execute("SELECT to_regclass('public.profile') IS NOT NULL")
    if fc.fetchone()[0]:
        break
    if time.monotonic() > deadline:
        sys.exit("the follower did not replay the set-up within 30 s")
    time.sleep(0.05)

step("1. a write on the leader under a session key yields its token, pushed in ParameterStatus")
lc.execute("SET distributed.session_key = 'user-1'")
lc.execute("UPDATE profile SET bio = 'first edit' WHERE user_id = 1")
t1 = leader.get_parameter_status("distributed.last_commit")
print("   ParameterStatus distributed.last_commit =", t1)
show(lc, "SELECT distributed.last_commit(), distributed.session_token('user-1')")

step("2. the follower reports its replay position in ParameterStatus too")
fc.execute("SELECT 1")
print("   ParameterStatus distributed.replay_position =",
      follower.get_parameter_status("distributed.replay_position"))
show(fc, "SELECT distributed.is_replayed(%s) AS safe, bio FROM profile WHERE user_id = 1", (t1,))

step("3. hold the follower back (pg_wal_replay_pause) and write again")
fc.execute("SELECT pg_wal_replay_pause()")
while True:
    fc.execute("SELECT pg_get_wal_replay_pause_state()")
    if fc.fetchone()[0] == "paused":
        break
    time.sleep(0.01)
lc.execute("UPDATE profile SET bio = 'second edit' WHERE user_id = 1")
t2 = leader.get_parameter_status("distributed.last_commit")
print("   new token", t2)
step("   the follower is not safe for it, and indeed still shows the old bio")
show(fc, "SELECT distributed.is_replayed(%s) AS safe, distributed.wait(%s, 200) AS wait_200ms, bio "
         "FROM profile WHERE user_id = 1", (t2, t2))
step("   any process can look the user's token up on the leader, by key")
other = connect(lport)
show(other.cursor(), "SELECT distributed.session_token('user-1') AS token_for_user_1")

step("4. a waiter on the follower sleeps until replay reaches the token")
result = {}


def waiter():
    conn = connect(fport)
    started = time.monotonic()
    conn.cursor().execute("CALL distributed.wait_for(%s, 30000)", (t2,))
    result["returned"] = time.monotonic()
    result["waited"] = result["returned"] - started
    conn.close()


th = threading.Thread(target=waiter)
th.start()
while True:
    fc.execute("SELECT count(*) FROM distributed.waiters")
    if fc.fetchone()[0] == 1:
        break
    time.sleep(0.01)
show(fc, "SELECT w.pid, w.token, a.wait_event_type, a.wait_event, a.backend_xmin "
         "FROM distributed.waiters w JOIN pg_stat_activity a USING (pid)")
time.sleep(0.5)
resumed = time.monotonic()
fc.execute("SELECT pg_wal_replay_resume()")
th.join()
print("   resumed replay; the waiter returned %.1f ms later (it had waited %.0f ms)"
      % ((result["returned"] - resumed) * 1000, result["waited"] * 1000))
show(fc, "SELECT distributed.is_replayed(%s) AS safe, bio FROM profile WHERE user_id = 1", (t2,))

step("5. monitoring: the leader's session map and both servers' counters")
show(lc, "SELECT key, token, last_write FROM distributed.sessions")
cols = ("role, entries, evictions, floor, commits_recorded, checks_safe, checks_unsafe, "
        "waits_started, waits_reached, waits_timed_out, round(wait_time_ms::numeric, 1) AS wait_time_ms")
print("   leader:")
show(lc, "SELECT " + cols + " FROM distributed.stats")
print("   follower:")
show(fc, "SELECT " + cols + " FROM distributed.stats")

step("6. after a logout, forget the key: its position moves into the floor")
show(lc, "SELECT distributed.forget('user-1') AS forgotten, distributed.session_token('user-1') AS answer_now")
