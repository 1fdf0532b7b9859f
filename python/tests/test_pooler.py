"""The router behind Debian's pgbouncer in transaction mode.

Every database alias points at pgbouncer, which shares a few server
connections among all clients: consecutive statements of one client may run
on different server connections.  POOLER = "transaction" makes the router
set session keys only for the transaction that writes, and record the
writes it made outside a transaction at the end of the request.
"""
import itertools
import json
import threading
import time

from django.db import connections, transaction
from django.test import Client

from readyourwrites import acting_for, hash_key, use_leader
from readyourwrites.drivers import parameter_status
from readyourwrites.state import state
from shop.models import Item

from base import ClusterTestCase

CLUSTER = None  # set by run_tests.py
BOUNCER = None


class PoolerTestCase(ClusterTestCase):
    ids = itertools.count(5000)


class ThroughPgBouncer(PoolerTestCase):
    def test_parameter_status_passes_through(self):
        conn = BOUNCER.connect("app_leader")
        cur = conn.cursor()
        cur.execute("UPDATE shop_item SET value = 1 WHERE id = %s", (self.pk,))
        reported = parameter_status(conn, "distributed.last_commit")
        self.assertRegex(reported or "", r"^\d+:[0-9A-F]+/[0-9A-F]+$")
        # the commit's server connection reported it; it is the leader's
        # newest commit, so at or below the flushed end of WAL
        cur.execute("SELECT distributed.token_lsn(%s) <= pg_current_wal_flush_lsn()", (reported,))
        self.assertTrue(cur.fetchone()[0])
        conn.close()

    def test_read_your_writes_for_many_users_sharing_two_server_connections(self):
        CLUSTER.followers[0].pause()
        users = 6
        errors, stale, served = [], [], []
        lock = threading.Lock()

        def user(n):
            try:
                client = Client()
                pk = self.pk * 10 + n
                with use_leader():
                    Item.objects.update_or_create(pk=pk, defaults={"value": 0})
                for value in range(1, 6):
                    r = client.post("/items/%d/" % pk, data=json.dumps({"value": value}),
                                    content_type="application/json")
                    assert r.status_code == 200, r.content
                    for _ in range(2):
                        got = client.get("/items/%d/" % pk).json()
                        with lock:
                            served.append(got["db"])
                            if got["value"] < value:
                                stale.append((n, value, got))
                # the leader's map holds this user's key at or past the last write
                key = hash_key(client.cookies["sessionid"].value)
                with lock:
                    served.append(("key", key))
            except Exception as e:  # reported below
                errors.append(repr(e))
            finally:
                connections.close_all()

        threads = [threading.Thread(target=user, args=(n,)) for n in range(users)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(stale, [], "a read missed the user's own write")
        reads = [s for s in served if not isinstance(s, tuple)]
        self.assertEqual(len(reads), users * 5 * 2)
        self.assertNotIn("replica1", reads)
        self.assertIn("replica2", reads)
        # every user's key is in the leader's map
        keys = {s[1] for s in served if isinstance(s, tuple)}
        mapped = {r[0] for r in CLUSTER.leader.sql("SELECT key FROM distributed.sessions", dbname="app")}
        self.assertEqual(keys - mapped, set())

    def test_a_key_recorded_at_request_end_covers_the_write(self):
        client = Client()
        r = client.post("/items/%d/" % self.pk, data=json.dumps({"value": 3}), content_type="application/json")
        self.assertEqual(r.status_code, 200)
        key = hash_key(client.cookies["sessionid"].value)
        # recorded by the server (a key set for the write's transaction) or
        # by the router when the request ended
        ok = CLUSTER.leader.sql(
            "SELECT distributed.token_lsn(distributed.session_token(%s)) >= "
            "distributed.token_lsn(%s)", (key, str(_last_token())), "app")[0][0]
        self.assertTrue(ok)

    def test_no_key_is_left_on_server_connections(self):
        client = Client()
        for v in range(1, 4):
            client.post("/items/%d/" % self.pk, data=json.dumps({"value": v}), content_type="application/json")
        with acting_for("pooled-user"):
            with transaction.atomic():
                Item.objects.filter(pk=self.pk).update(value=9)
        conn = BOUNCER.connect("app_leader")
        cur = conn.cursor()
        seen = set()
        for _ in range(10):
            cur.execute("SHOW distributed.session_key")
            seen.add(cur.fetchone()[0])
        conn.close()
        self.assertEqual(seen, {""})

    def test_a_write_in_a_transaction_is_recorded_by_the_server(self):
        with acting_for("txn-user"):
            with transaction.atomic():
                Item.objects.filter(pk=self.pk).update(value=11)
            token = _last_token()
        self.assertEqual(state.snapshot()["counts"].get("records", 0), 0)
        recorded = CLUSTER.leader.sql("SELECT distributed.session_token(%s)", (hash_key("txn-user"),), "app")
        self.assertEqual(recorded[0][0], str(token))

    def test_a_wait_holds_a_server_connection(self):
        """app_follower1 has one server connection: a wait on it holds it,
        and the next client queues in pgbouncer until the wait returns."""
        follower = CLUSTER.followers[0]
        follower.pause()
        lead = BOUNCER.connect("app_leader")
        lead.cursor().execute("UPDATE shop_item SET value = 12 WHERE id = %s", (self.pk,))
        token = parameter_status(lead, "distributed.last_commit")
        lead.close()
        results = {}

        def waiter():
            c = BOUNCER.connect("app_follower1")
            cur = c.cursor()
            cur.execute("SELECT distributed.wait(%s, 60000)", (token,))
            results["wait"] = (cur.fetchone()[0], time.monotonic())
            c.close()

        def other():
            c = BOUNCER.connect("app_follower1")
            cur = c.cursor()
            cur.execute("SELECT 1")
            results["other"] = time.monotonic()
            c.close()

        t1 = threading.Thread(target=waiter)
        t1.start()
        follower.poll("SELECT count(*) = 1 FROM distributed.waiters", dbname="app")
        t2 = threading.Thread(target=other)
        t2.start()
        deadline = time.monotonic() + 30
        while BOUNCER.pools().get("app_follower1", {}).get("cl_waiting", 0) < 1:
            self.assertLess(time.monotonic(), deadline, "the second client never queued")
            time.sleep(0.01)
        self.assertNotIn("other", results)
        follower.resume()
        t1.join()
        t2.join()
        self.assertEqual(results["wait"][0], "reached")
        self.assertGreaterEqual(results["other"], results["wait"][1] - 0.05)


def _last_token():
    """The token of this thread's last commit through pgbouncer, as reported."""
    from readyourwrites import parse_token

    return parse_token(parameter_status(connections["default"].connection, "distributed.last_commit"))
