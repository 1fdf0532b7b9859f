"""The router against a real leader and two real followers.

Lag is made by pausing a follower's replay; each test resumes both and
waits for them to catch up before it starts.  "replica1" is the first
follower, "replica2" the second.
"""
import asyncio
import io
import json
import os
import subprocess
import sys
import threading
import time
import unittest

from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connections, transaction
from django.test import AsyncClient, Client, override_settings
from django.test.utils import CaptureQueriesContext

import readyourwrites
from readyourwrites import FollowerNotReady, acting_for, hash_key, use_leader
from readyourwrites.conf import reset_config
from readyourwrites.drivers import parameter_status
from readyourwrites.state import state
from shop.models import Item

from base import ClusterTestCase

CLUSTER = None  # set by run_tests.py
ALIASES = ("replica1", "replica2")


def settings_with(**changes):
    from django.conf import settings

    merged = dict(settings.READYOURWRITES)
    merged.update(changes)
    return override_settings(READYOURWRITES=merged)


class RouterTestCase(ClusterTestCase):
    # helpers
    def follower(self, alias):
        return CLUSTER.followers[ALIASES.index(alias)]

    def write(self, client, value, pk=None):
        r = client.post("/items/%d/" % (pk or self.pk), data=json.dumps({"value": value}),
                        content_type="application/json")
        self.assertEqual(r.status_code, 200)

    def read(self, client, pk=None):
        r = client.get("/items/%d/" % (pk or self.pk))
        self.assertEqual(r.status_code, 200)
        return r.json()

    def stats(self, alias):
        node = CLUSTER.leader if alias == "default" else self.follower(alias)
        return dict(zip(
            ("checks", "waits"),
            node.sql("SELECT checks_safe + checks_unsafe, waits_started FROM distributed.stats", dbname="app")[0]))


class ReadYourWrites(RouterTestCase):
    def test_paused_follower_is_never_chosen_and_caught_up_one_is(self):
        client = Client()
        self.write(client, 1)
        self.follower("replica1").pause()
        served = []
        for value in range(2, 7):
            self.write(client, value)
            CLUSTER.caught_up(self.follower("replica2"))
            for _ in range(4):
                got = self.read(client)
                self.assertEqual(got["value"], value, "a read missed the user's own write")
                served.append(got["db"])
        self.assertNotIn("replica1", served)
        self.assertIn("replica2", served)
        # the follower really is behind: the write is not there
        on_paused = self.follower("replica1").sql("SELECT value FROM shop_item WHERE id = %s", (self.pk,), "app")
        self.assertEqual(on_paused[0][0], 1)

    def test_user_without_recent_write_still_reads_from_followers(self):
        self.follower("replica1").pause()
        writer = Client()
        self.write(writer, 5)
        reader = Client()  # no session: no key, no token to honour
        served = {self.read(reader)["db"] for _ in range(6)}
        self.assertEqual(served, {"replica1", "replica2"})

    def test_across_processes_with_the_same_key(self):
        self.follower("replica1").pause()
        script = (
            "import django, sys; django.setup()\n"
            "from readyourwrites import acting_for\n"
            "from shop.models import Item\n"
            "with acting_for('user-42'):\n"
            "    Item.objects.filter(pk=%d).update(value=77)\n" % self.pk
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        subprocess.run([sys.executable, "-c", script], check=True, env=env)
        CLUSTER.caught_up(self.follower("replica2"))
        served = []
        for _ in range(5):
            with acting_for("user-42"):
                obj = Item.objects.get(pk=self.pk)
            self.assertEqual(obj.value, 77)
            served.append(obj._state.db)
        self.assertNotIn("replica1", served)
        self.assertIn("replica2", served)

    def test_login_then_next_request_finds_its_session_with_every_follower_paused(self):
        name = "user%d" % self.pk
        with use_leader():
            User.objects.create_user(name, password="pw")
        for f in CLUSTER.followers:
            CLUSTER.caught_up(f)
            f.pause()
        client = Client()
        r = client.post("/login/", {"username": name, "password": "pw"})
        self.assertEqual(r.status_code, 200)
        session_key = client.cookies["sessionid"].value
        # the followers really lack the session: a plain replica read would log the user out
        for f in CLUSTER.followers:
            self.assertEqual(
                f.sql("SELECT count(*) FROM django_session WHERE session_key = %s", (session_key,), "app")[0][0], 0)
        self.assertEqual(client.get("/whoami/").json()["user"], name)
        # and the key the leader recorded is the keyed hash, never the raw key
        keys = [r[0] for r in CLUSTER.leader.sql("SELECT key FROM distributed.sessions", dbname="app")]
        self.assertIn(hash_key(session_key), keys)
        self.assertNotIn(session_key, keys)


class Policies(RouterTestCase):
    def test_leader_fallback(self):
        client = Client()
        self.write(client, 1)
        for f in CLUSTER.followers:
            f.pause()
        self.write(client, 2)
        got = self.read(client)
        self.assertEqual(got, {"value": 2, "db": "default"})
        self.assertGreaterEqual(readyourwrites.routing_stats()["counts"].get("fallback_leader", 0), 1)

    def test_wait_then_read_on_the_follower_that_catches_up(self):
        with settings_with(POLICY="wait", WAIT_MS=30000):
            reset_config()
            client = Client()
            self.write(client, 1)
            for f in CLUSTER.followers:
                f.pause()
            self.write(client, 2)
            resumed = []

            def resume_the_awaited_follower():
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    for alias in ALIASES:
                        node = self.follower(alias)
                        if node.sql("SELECT count(*) FROM distributed.waiters", dbname="app")[0][0]:
                            resumed.append(alias)
                            node.resume()
                            return
                    time.sleep(0.01)

            t = threading.Thread(target=resume_the_awaited_follower)
            t.start()
            got = self.read(client)
            t.join()
            self.assertEqual(len(resumed), 1, "no wait was seen on a follower")
            self.assertEqual(got, {"value": 2, "db": resumed[0]})
            self.assertEqual(readyourwrites.routing_stats()["counts"].get("waits_reached"), 1)

    def test_wait_times_out_to_the_leader(self):
        with settings_with(POLICY="wait", WAIT_MS=100):
            reset_config()
            client = Client()
            self.write(client, 1)
            for f in CLUSTER.followers:
                f.pause()
            self.write(client, 2)
            self.assertEqual(self.read(client), {"value": 2, "db": "default"})
            counts = readyourwrites.routing_stats()["counts"]
            self.assertEqual(counts.get("wait_timeout"), 1)
            # a timed-out wait (57014 from CALL wait_for) is an answer, not a
            # broken follower: it is neither skipped nor re-run on the leader
            self.assertEqual(counts.get("follower_failures", 0), 0)
            self.assertEqual(counts.get("retried_on_leader", 0), 0)

    def test_raise(self):
        with settings_with(POLICY="raise"):
            reset_config()
            client = Client()
            self.write(client, 1)
            for f in CLUSTER.followers:
                f.pause()
            self.write(client, 2)
            with self.assertRaises(FollowerNotReady) as cm:
                self.read(client)
            self.assertIn("no follower has replayed", str(cm.exception))


class Contexts(RouterTestCase):
    def test_async_view(self):
        client = AsyncClient()

        async def flow():
            await client.post("/items/%d/" % self.pk, data=json.dumps({"value": 1}),
                              content_type="application/json")
            self.follower("replica1").pause()
            await client.post("/items/%d/" % self.pk, data=json.dumps({"value": 2}),
                              content_type="application/json")
            return [(await client.get("/async/items/%d/" % self.pk)).json() for _ in range(4)]

        for got in asyncio.run(flow()):
            self.assertEqual(got["value"], 2)
            self.assertNotEqual(got["db"], "replica1")

    def test_atomic_block_stays_on_the_leader(self):
        with acting_for("atomic-user"):
            with transaction.atomic():
                self.assertEqual(Item.objects.get(pk=self.pk)._state.db, "default")
                Item.objects.filter(pk=self.pk).update(value=3)
                self.assertEqual(Item.objects.get(pk=self.pk)._state.db, "default")
                # the key was set for this transaction only: the server says so
                raw = connections["default"].connection
                self.assertEqual(parameter_status(raw, "distributed.session_key"), hash_key("atomic-user"))
            self.assertEqual(parameter_status(connections["default"].connection, "distributed.session_key"), "")
        token = parameter_status(connections["default"].connection, "distributed.last_commit")
        recorded = CLUSTER.leader.sql("SELECT distributed.session_token(%s)", (hash_key("atomic-user"),), "app")
        self.assertEqual(recorded[0][0], token)

    def test_use_leader(self):
        with use_leader():
            self.assertEqual(Item.objects.get(pk=self.pk)._state.db, "default")
        self.assertIn(Item.objects.get(pk=self.pk)._state.db, ALIASES)

    def test_task_with_a_users_key(self):
        client = Client()
        self.write(client, 1)
        self.follower("replica1").pause()
        self.write(client, 9)
        raw_key = client.cookies["sessionid"].value
        seen = []

        @acting_for(raw_key)
        def task():
            for _ in range(4):
                obj = Item.objects.get(pk=self.pk)
                seen.append((obj.value, obj._state.db))
            connections.close_all()

        t = threading.Thread(target=task)
        t.start()
        t.join()
        self.assertEqual(len(seen), 4)
        for value, db in seen:
            self.assertEqual(value, 9)
            self.assertNotEqual(db, "replica1")


class TokenPaths(RouterTestCase):
    def test_cookie_store_protects_a_user_without_a_session(self):
        with settings_with(TOKEN_STORE="cookie"):
            reset_config()
            client = Client()
            # a view that writes without touching the session
            self.follower("replica1").pause()
            r = client.post("/items/%d/" % self.pk, data=json.dumps({"value": 21}),
                            content_type="application/json")
            self.assertEqual(r.status_code, 200)
            self.assertIn("readyourwrites", client.cookies)
            # drop the session cookie: only the token cookie remains
            del client.cookies["sessionid"]
            CLUSTER.caught_up(self.follower("replica2"))
            served = []
            for _ in range(4):
                got = self.read(client)
                self.assertEqual(got["value"], 21)
                served.append(got["db"])
            self.assertNotIn("replica1", served)
            # one lookup per request, under the browser's key (what a
            # concurrent request of the browser wrote is not in the cookie)
            self.assertEqual(readyourwrites.routing_stats()["counts"].get("lookups", 0), 4)

    def test_token_from_the_function_when_a_proxy_drops_parameter_status(self):
        from unittest import mock

        import psycopg2

        from readyourwrites import drivers

        real = drivers.parameter_status

        def dropping(raw, name):  # a proxy that passes no ParameterStatus
            return None if name == "distributed.last_commit" else real(raw, name)

        self.follower("replica1").pause()
        with mock.patch.object(drivers, "parameter_status", dropping):
            with acting_for(None):
                ctx = readyourwrites.context.current()
                Item.objects.filter(pk=self.pk).update(value=31)
                CLUSTER.caught_up(self.follower("replica2"))
                for _ in range(3):
                    obj = Item.objects.get(pk=self.pk)
                    self.assertEqual(obj.value, 31)
                    self.assertNotEqual(obj._state.db, "replica1")
                self.assertGreaterEqual(readyourwrites.routing_stats()["counts"].get("token_queries", 0), 1)
                self.assertEqual(str(ctx.part("default").token), real(connections["default"].connection, "distributed.last_commit"))

    def test_a_new_connection_replaces_what_was_known_of_a_follower(self):
        Item.objects.using("replica1").get(pk=self.pk)  # learn its position
        real = state.follower("replica1").position
        self.assertIsNotNone(real)
        # as if this process had seen a follower far ahead (a follower since
        # rebuilt from an older backup would leave exactly that behind)
        state.saw_follower_at("replica1", readyourwrites.Token(real.timeline, real.lsn + 10**9))
        connections["replica1"].close()
        Item.objects.using("replica1").get(pk=self.pk)
        self.assertLessEqual(state.follower("replica1").position.lsn, real.lsn + 10**6)


class ReviewFindings(RouterTestCase):
    """Paths to a stale read found in review, each pinned by a test."""

    def test_writes_that_bypass_the_router_are_still_the_contexts_own(self):
        self.follower("replica1").pause()
        self.follower("replica2").pause()
        with acting_for("bypass-user"):
            Item.objects.get(pk=self.pk)  # the key's token is looked up first
            with connections["default"].cursor() as cur:
                cur.execute("UPDATE shop_item SET value = 41 WHERE id = %s", [self.pk])
            self.assertEqual(Item.objects.get(pk=self.pk).value, 41)
            Item.objects.using("default").filter(pk=self.pk).update(value=42)
            self.assertEqual(Item.objects.get(pk=self.pk).value, 42)

    def test_own_write_survives_the_leader_connection_closing(self):
        self.follower("replica1").pause()
        self.follower("replica2").pause()
        Item.objects.filter(pk=self.pk).update(value=43)  # no context at all
        connections["default"].close()
        self.assertEqual(Item.objects.get(pk=self.pk).value, 43)

    def test_nested_contexts_see_each_others_writes(self):
        self.follower("replica1").pause()
        self.follower("replica2").pause()
        with acting_for("outer-user"):
            Item.objects.filter(pk=self.pk).update(value=44)
            with acting_for("inner-user"):
                self.assertEqual(Item.objects.get(pk=self.pk).value, 44)
                Item.objects.filter(pk=self.pk).update(value=45)
            self.assertEqual(Item.objects.get(pk=self.pk).value, 45)
        with use_leader():
            with acting_for("inner-user"):
                self.assertEqual(Item.objects.get(pk=self.pk)._state.db, "default")

    def test_manual_transaction_stays_on_the_leader(self):
        transaction.set_autocommit(False)
        try:
            Item.objects.filter(pk=self.pk).update(value=46)
            obj = Item.objects.get(pk=self.pk)
            self.assertEqual((obj.value, obj._state.db), (46, "default"))
            transaction.commit()
        finally:
            transaction.set_autocommit(True)

    def test_a_key_left_on_the_connection_is_cleared_before_a_write_without_one(self):
        with acting_for("key-a"):
            Item.objects.filter(pk=self.pk).update(value=47)
        raw = connections["default"].connection
        self.assertEqual(parameter_status(raw, "distributed.session_key"), hash_key("key-a"))
        before = CLUSTER.leader.sql("SELECT distributed.session_token(%s)", (hash_key("key-a"),), "app")[0][0]
        with acting_for(None):
            Item.objects.filter(pk=self.pk).update(value=48)
        self.assertEqual(parameter_status(raw, "distributed.session_key"), "")
        after = CLUSTER.leader.sql("SELECT distributed.session_token(%s)", (hash_key("key-a"),), "app")[0][0]
        self.assertEqual(before, after, "a write without a key was recorded under another context's key")

    def test_a_lower_report_replaces_a_higher_one(self):
        state.saw_follower_at("replica1", readyourwrites.Token(1, 5000))
        state.saw_follower_at("replica1", readyourwrites.Token(1, 4000))
        self.assertEqual(state.follower("replica1").position, readyourwrites.Token(1, 4000))
        state.saw_follower_at("replica1", readyourwrites.Token(0 + 1, 6000))
        state.saw_follower_at("replica1", readyourwrites.Token(2, 100))
        state.saw_follower_at("replica1", readyourwrites.Token(1, 9000))  # late, older timeline
        self.assertEqual(state.follower("replica1").position, readyourwrites.Token(2, 100))

    def test_user_keys_do_not_recurse_through_the_session(self):
        """SESSION_KEY "user": finding the key loads the session and the
        user, reads that cannot honour the key they are finding.  They go
        to the leader; on a follower they read around the login's own
        session write.  (This test was flaky: the user row and the login's
        session reached the followers only as fast as replication went.
        Now the followers have the user and lack the session, always.)"""
        name = "ukey%d" % self.pk
        with use_leader():
            User.objects.create_user(name, password="pw")
        for f in CLUSTER.followers:
            CLUSTER.caught_up(f)
            f.pause()
        with settings_with(SESSION_KEY="user"):
            reset_config()
            client = Client()
            self.assertEqual(client.post("/login/", {"username": name, "password": "pw"}).status_code, 200)
            session_key = client.cookies["sessionid"].value
            for f in CLUSTER.followers:
                self.assertEqual(f.sql("SELECT count(*) FROM django_session WHERE session_key = %s",
                                       (session_key,), "app")[0][0], 0)
            self.assertEqual(client.get("/whoami/").json()["user"], name, "logged out by a follower")

    def test_misuse_is_refused(self):
        with self.assertRaises(ValueError):
            acting_for("k", token="garbage")
        with self.assertRaises(TypeError):
            @acting_for("k")
            def job():
                yield 1
        with self.assertRaises(TypeError):
            @use_leader()
            async def agen():
                yield 1

    def test_a_client_side_error_does_not_mark_a_follower_down(self):
        from django.db import ProgrammingError

        with self.assertRaises(Exception):
            list(Item.objects.raw("SELECT * FROM shop_item WHERE id = %s", [object()]))
        self.assertEqual(readyourwrites.routing_stats()["counts"].get("follower_failures", 0), 0)
        self.assertEqual(readyourwrites.routing_stats()["counts"].get("retried_on_leader", 0), 0)
        del ProgrammingError


class CeleryTask(RouterTestCase):
    def test_celery_task_carries_the_users_key(self):
        """A real Celery worker (in-memory broker, worker thread) runs a task
        for a user; the task reads that user's fresh write."""
        from celery import Celery
        from celery.contrib.testing.worker import start_worker

        app = Celery("ryw", broker="memory://", backend="cache+memory://")
        app.conf.update(task_always_eager=False, worker_hijack_root_logger=False)

        @app.task(name="ryw.read_item")
        def read_item(raw_key, pk):
            with acting_for(raw_key):
                obj = Item.objects.get(pk=pk)
                result = (obj.value, obj._state.db)
            connections.close_all()
            return result

        client = Client()
        self.write(client, 1)
        self.follower("replica1").pause()
        self.write(client, 12)
        raw_key = client.cookies["sessionid"].value
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            results = [read_item.delay(raw_key, self.pk).get(timeout=30) for _ in range(4)]
        for value, db in results:
            self.assertEqual(value, 12)
            self.assertNotEqual(db, "replica1")


class Failures(RouterTestCase):
    def test_follower_stopped_mid_run(self):
        reader = Client()
        served = []
        victim = self.follower("replica2")
        try:
            for i in range(30):
                if i == 10:
                    victim.stop("immediate")
                got = self.read(reader)  # raises if a request fails
                served.append(got["db"])
            self.assertIn("replica2", served[:10])
            # the one read that found replica2 dead ran on the leader instead
            # (the view reports it as the leader's: reads_moved_to_leader());
            # after that replica2 is skipped
            after = served[10:]
            retried = readyourwrites.routing_stats()["counts"].get("retried_on_leader", 0)
            self.assertNotIn("replica2", after)
            self.assertLessEqual(retried, 1)
            self.assertIn("replica1", after)
            self.assertTrue(readyourwrites.routing_stats()["followers"]["replica2"]["down"])
        finally:
            victim.start()
            CLUSTER.caught_up(victim)
            connections["replica2"].close()  # for code that uses it directly
        # after the cool-down it is used again
        time.sleep(reset_config() or 2.1)
        served = [self.read(reader)["db"] for _ in range(6)]
        self.assertIn("replica2", served)


class Health(RouterTestCase):
    def test_lagging_follower_is_not_chosen(self):
        with settings_with(MAX_LAG_BYTES=1):
            reset_config()
            reader = Client()
            self.assertEqual({self.read(reader)["db"] for _ in range(4)}, {"replica1", "replica2"})
            self.follower("replica1").pause()
            writer = Client()
            self.write(writer, 1)
            self.read(writer)  # the writer's request shows this process the leader's position
            CLUSTER.caught_up(self.follower("replica2"))
            served = [self.read(reader)["db"] for _ in range(6)]
            # replica1 is asked at most once more (its reply shows it behind)
            self.assertLessEqual(served.count("replica1"), 1)
            self.assertEqual(served[-4:], ["replica2"] * 4)

    def test_no_usable_follower_is_logged_once(self):
        with settings_with(MAX_LAG_BYTES=1):
            reset_config()
            reader = Client()
            for _ in range(4):
                self.read(reader)
            for f in CLUSTER.followers:
                f.pause()
            writer = Client()
            with self.assertLogs("readyourwrites", "WARNING") as logs:
                self.write(writer, 1)
                self.read(writer)  # shows this process the leader's new position
                # each follower answers at most once more, showing it is behind
                served = [self.read(reader)["db"] for _ in range(7)]
            self.assertEqual(served[-5:], ["default"] * 5)
            self.assertEqual(sum("no follower is usable" in m for m in logs.output), 1, logs.output)


class Costs(RouterTestCase):
    def test_no_extra_query_when_a_follower_is_known_caught_up(self):
        with acting_for("cost-user"):
            Item.objects.filter(pk=self.pk).update(value=4)
            for f in CLUSTER.followers:
                CLUSTER.caught_up(f)
            Item.objects.get(pk=self.pk)  # learns the key's token and a follower's position
            before = {a: self.stats(a) for a in ALIASES}
            captures = {a: CaptureQueriesContext(connections[a]) for a in ("default",) + ALIASES}
            for c in captures.values():
                c.__enter__()
            for _ in range(5):
                self.assertEqual(Item.objects.get(pk=self.pk).value, 4)
            for c in captures.values():
                c.__exit__(None, None, None)
            total = sum(len(c.captured_queries) for c in captures.values())
            self.assertEqual(total, 5, "expected exactly one query per read: %r" % {
                a: [q["sql"] for q in c.captured_queries] for a, c in captures.items()})
            self.assertEqual(len(captures["default"].captured_queries), 0)
        after = {a: self.stats(a) for a in ALIASES}
        self.assertEqual(before, after, "a follower was asked a check or wait")

    def test_one_lookup_per_request_with_a_key(self):
        client = Client()
        self.write(client, 1)
        CLUSTER.leader.sql("SELECT distributed.reset_stats()", dbname="app")
        before = readyourwrites.routing_stats()["counts"].get("lookups", 0)
        self.read(client)
        self.assertEqual(readyourwrites.routing_stats()["counts"].get("lookups", 0) - before, 1)


class Plumbing(RouterTestCase):
    def test_psycopg3_parameter_status(self):
        try:
            import psycopg
        except ImportError:
            self.skipTest("psycopg 3 is not installed")
        c3 = psycopg.connect(host=CLUSTER.dir, port=CLUSTER.leader.port, dbname="app", autocommit=True)
        c3.execute("UPDATE shop_item SET value = 5 WHERE id = %s", (self.pk,))
        reported = parameter_status(c3, "distributed.last_commit")
        self.assertEqual(reported, c3.execute("SELECT distributed.last_commit()").fetchone()[0])
        c3.close()

    def test_psycopg2_parameter_status(self):
        c2 = CLUSTER.leader.connect("app")
        with c2.cursor() as cur:
            cur.execute("UPDATE shop_item SET value = 6 WHERE id = %s", (self.pk,))
            reported = parameter_status(c2, "distributed.last_commit")
            cur.execute("SELECT distributed.last_commit()")
            self.assertEqual(reported, cur.fetchone()[0])
        c2.close()

    def test_wait_outcomes_are_told_apart_by_sqlstate(self):
        """The extension's SQLSTATEs for a wait that cannot reach its token
        map to distinct answers (design invariant 8): a server that is not
        a standby is not "promoted", and a token the follower has not
        replayed yet times out."""
        import psycopg2

        from readyourwrites import drivers

        def answer(node, token):
            conn = node.connect("app")
            try:
                with conn.cursor() as cur:
                    cur.execute("CALL distributed.wait_for(%s, 0)", [token])
                return "reached"
            except psycopg2.DatabaseError as e:
                return drivers.WAIT_ANSWERS.get(drivers.sqlstate(e), "unmapped " + str(drivers.sqlstate(e)))
            finally:
                conn.close()

        self.assertEqual(answer(CLUSTER.leader, "1:FFFFFFFF/0"), "not_in_recovery")
        CLUSTER.followers[0].pause()
        self.assertEqual(answer(CLUSTER.followers[0], "1:FFFFFFFF/0"), "timeout")

    def test_combined_wait_takes_every_code_the_extension_raises(self):
        """A token check inside the wait can refuse with 55U04 (history file
        missing or corrupt) or 55U05 (token before its timeline's start),
        raised outside DistRaiseWaitResult: the one-round-trip path must
        still take them as the wait's answer (the read moves to the leader),
        and a 57014 raised by anything but the wait stays the read's own."""
        import psycopg2

        from readyourwrites import drivers

        def error(code):
            conn = CLUSTER.followers[0].connect("app")
            try:
                with conn.cursor() as cur:
                    cur.execute("DO $$ BEGIN RAISE EXCEPTION 'refused' USING ERRCODE = '%s'; END $$" % code)
            except psycopg2.DatabaseError as e:
                return e
            finally:
                conn.close()
            self.fail("no error raised")

        for code in ("55U01", "55U02", "55U03", "55U04", "55U05"):
            self.assertEqual(drivers.wait_refused(error(code)), drivers.WAIT_ANSWERS[code], code)
        self.assertIsNone(drivers.wait_refused(error("57014")))

    def test_migrations_only_on_the_leader_and_relations_allowed(self):
        router = readyourwrites.ReadYourWritesRouter()
        self.assertFalse(router.allow_migrate("replica1", "shop"))
        self.assertIsNone(router.allow_migrate("default", "shop"))
        a = Item.objects.using("default").get(pk=self.pk)
        b = Item.objects.using("replica2").get(pk=self.pk)
        self.assertTrue(router.allow_relation(a, b))

    def test_status_command(self):
        Item.objects.get(pk=self.pk)
        out = io.StringIO()
        call_command("readyourwrites_status", stdout=out)
        text = out.getvalue()
        self.assertIn("role=leader", text)
        self.assertEqual(text.count("role=follower"), 2)
        self.assertNotIn("this process", text)  # not the site's counters
        out = io.StringIO()
        call_command("readyourwrites_status", "--json", stdout=out)
        report = json.loads(out.getvalue())
        self.assertEqual(report["databases"]["replica1"]["stats"]["role"], "follower")

    def test_status_shows_every_counter_of_the_extension(self):
        with connections["replica1"].cursor() as cur:
            cur.execute("SELECT * FROM distributed.stats")
            columns = [c[0] for c in cur.description]
        self.assertIn("waits_stale_snapshot", columns)
        out = io.StringIO()
        call_command("readyourwrites_status", "--json", stdout=out)
        report = json.loads(out.getvalue())
        for alias in ("default", "replica1", "replica2"):
            self.assertEqual(list(report["databases"][alias]["stats"]), columns)
        out = io.StringIO()
        call_command("readyourwrites_status", stdout=out)
        self.assertEqual(out.getvalue().count("waits_stale_snapshot="), 3)


if __name__ == "__main__":
    unittest.main()
