"""Issue 8: every way around the guarantee, each on real servers.

Each test was first run against the code before the redesign (base commit
7966a9c) and seen to fail; the report of issue 8 lists how.  Only the
API the old code had is imported at module level, so that the same file
runs on both; newer API is reached through getattr.
"""
import asyncio
import concurrent.futures
import io
import json
import os
import threading
import time
from unittest import mock, skipUnless

import django
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connections, transaction
from django.test import AsyncClient, Client, override_settings

import readyourwrites
from readyourwrites import acting_for, hash_key, use_leader
from readyourwrites.conf import reset_config
from readyourwrites.state import state
from shop.models import Item

from base import ALIASES, ClusterTestCase, renew_connections, settings_with


def _sign_cookie(token):
    """A token cookie as the middleware signs it (Django's own API)."""
    from django.http import HttpResponse

    r = HttpResponse()
    r.set_signed_cookie("readyourwrites", str(token), salt="readyourwrites")
    return r.cookies["readyourwrites"].value


def _unsign_cookie(value, max_age=None):
    from django.http import HttpRequest

    request = HttpRequest()
    request.COOKIES["readyourwrites"] = value
    value = request.get_signed_cookie("readyourwrites", salt="readyourwrites", max_age=max_age)
    return readyourwrites.parse_token(value.rpartition("|")[2])  # "<browser key>|<token>"


def _cookie_key(value):
    """The browser's key in a token cookie "<key>|<token>"."""
    from django.http import HttpRequest

    request = HttpRequest()
    request.COOKIES["readyourwrites"] = value
    return request.get_signed_cookie("readyourwrites", salt="readyourwrites").rpartition("|")[0]


def _clear_hashes():
    from readyourwrites import context

    for name in ("_hash_cache",):
        getattr(context, name).clear()


class HoleTestCase(ClusterTestCase):
    def read_as(self, raw_key):
        with acting_for(raw_key):
            obj = Item.objects.get(pk=self.pk)
        return obj.value, obj._state.db

    def write(self, client, value):
        r = client.post("/items/%d/" % self.pk, data=json.dumps({"value": value}),
                        content_type="application/json")
        self.assertEqual(r.status_code, 200)

    def read(self, client):
        r = client.get("/items/%d/" % self.pk)
        self.assertEqual(r.status_code, 200)
        return r.json()


# -- 1. a follower that comes back lower -------------------------------------------

class Hole1ServedConnectionReports(HoleTestCase):
    """Two followers behind one alias ("lb"), a new connection for every
    read (CONN_MAX_AGE = 0): each read lands on the other server."""

    def setUp(self):
        super().setUp()
        from proxy import AlternatingProxy

        self.proxy = AlternatingProxy(self.cluster.dir, 5499, [(self.cluster.dir, f.port) for f in self.cluster.followers])
        settings.DATABASES["lb"] = dict(settings.DATABASES["replica1"], PORT="5499", CONN_MAX_AGE=0)

    def tearDown(self):
        connections["lb"].close()
        del connections["lb"]
        del settings.DATABASES["lb"]
        self.proxy.stop()
        super().tearDown()

    def test_two_servers_behind_one_alias(self):
        with settings_with(FOLLOWERS=["lb"]):
            reset_config()
            self.follower("replica1").pause()
            with acting_for("lb-user"):
                Item.objects.filter(pk=self.pk).update(value=51)
            self.cluster.caught_up(self.follower("replica2"))
            got = []
            for _ in range(6):
                connections["lb"].close()  # CONN_MAX_AGE = 0: a new connection per request
                got.append(self.read_as("lb-user"))
            self.assertEqual(len(set(self.proxy.served)), 2, "the proxy did not alternate")
            self.assertEqual([v for v, _ in got], [51] * 6, "a read missed the user's own write: %r" % got)


class Hole1RestartedBehind(HoleTestCase):
    """replica1 restarted from an older copy of itself (as after a crash,
    or a rebuild from an older backup), holding back the write: the position
    its earlier connection reported must not serve the new connection."""

    def test_follower_back_lower_after_a_restart(self):
        import shutil

        node = self.follower("replica1")
        old = node.datadir + ".old"
        with settings_with(FOLLOWERS=["replica1"]):
            reset_config()
            node.stop("fast")
            shutil.rmtree(old, ignore_errors=True)
            shutil.copytree(node.datadir, old, symlinks=True)
            node.start()
            renew_connections("replica1")  # its connections died with the stop
            with acting_for("restart-user"):
                Item.objects.filter(pk=self.pk).update(value=141)
            self.cluster.caught_up(node)
            self.assertEqual(self.read_as("restart-user"), (141, "replica1"))  # learns its position
            node.stop("immediate")
            shutil.rmtree(node.datadir)
            os.rename(old, node.datadir)
            with open(os.path.join(node.datadir, "postgresql.conf"), "a") as f:
                f.write("recovery_min_apply_delay = '1d'\n")  # it stays behind the write
            node.start()
            try:
                lacking = node.sql("SELECT value FROM shop_item WHERE id = %s", (self.pk,), "app")[0][0]
                self.assertEqual(lacking, 0, "the restored follower already has the write")
                renew_connections("replica1")  # a new connection (CONN_MAX_AGE = 0, or a pool's new one)
                self.assertEqual(self.read_as("restart-user")[0], 141, "read the restarted follower's old data")
            finally:
                renew_connections("replica1")
                node.stop("fast")
                with open(os.path.join(node.datadir, "postgresql.conf")) as f:
                    conf = f.read().replace("recovery_min_apply_delay = '1d'\n", "")
                with open(os.path.join(node.datadir, "postgresql.conf"), "w") as f:
                    f.write(conf)
                node.start()
                self.cluster.caught_up(node)


# -- 2. writes that do not pass db_for_write ---------------------------------------

class Hole2WritesAroundTheRouter(HoleTestCase):
    STYLES = ("using_update", "save_using", "atomic_using", "raw_sql")

    def _write(self, style, value):
        if style == "using_update":
            Item.objects.using("default").filter(pk=self.pk).update(value=value)
        elif style == "save_using":
            obj = Item(pk=self.pk, value=value)
            obj.save(using="default")
        elif style == "atomic_using":
            with transaction.atomic(using="default"):
                with connections["default"].cursor() as cur:
                    cur.execute("UPDATE shop_item SET value = %s WHERE id = %s", [value, self.pk])
        else:
            with connections["default"].cursor() as cur:
                cur.execute("UPDATE shop_item SET value = %s WHERE id = %s", [value, self.pk])

    def test_each_write_is_recorded_under_the_requests_key(self):
        for n, style in enumerate(self.STYLES):
            with self.subTest(style=style):
                # an earlier request leaves its key on the saved connection
                with acting_for("earlier-user"):
                    Item.objects.filter(pk=self.pk).update(value=1)
                left = self.on_leader("SELECT distributed.session_token(%s)", (hash_key("earlier-user"),))
                self.pause_all()
                writer = "writer-%s" % style
                value = 60 + n
                with acting_for(writer):
                    Item.objects.get(pk=self.pk)  # a read first: the key is looked up
                    self._write(style, value)
                # another process (here: a fresh context) finds the write
                self.assertEqual(self.read_as(writer)[0], value, "%s: write not under the request's key" % style)
                self.assertEqual(self.on_leader("SELECT distributed.session_token(%s)",
                                                (hash_key("earlier-user"),)), left,
                                 "%s: recorded under the key an earlier request left" % style)
                for f in self.cluster.followers:
                    f.resume()

    def test_django_connection_pool(self):
        """Django 5.1+'s pool with psycopg 3: a pooled connection comes back
        with the key an earlier borrower left on it."""
        import subprocess
        import sys

        import django

        import importlib.util

        if not (importlib.util.find_spec("psycopg") and importlib.util.find_spec("psycopg_pool")):
            self.skipTest("psycopg 3 and psycopg_pool are needed")
        if django.VERSION < (5, 1):
            self.skipTest("Django's connection pool is new in 5.1")
        self.pause_all()
        script = (
            "import django, sys; django.setup()\n"
            "from django.db import connections\n"
            "from readyourwrites import acting_for\n"
            "from shop.models import Item\n"
            "pk = int(sys.argv[1])\n"
            "last = lambda: connections['default'].connection.info.parameter_status('distributed.last_commit')\n"
            "with acting_for('pool-a'):\n"
            "    Item.objects.filter(pk=pk).update(value=1)\n"
            "    a = last()\n"
            "connections['default'].close()  # back to the pool, with its key\n"
            "with acting_for('pool-b'):\n"
            "    Item.objects.get(pk=pk)\n"
            "    raw = connections['default'].connection\n"
            "    Item.objects.using('default').filter(pk=pk).update(value=151)\n"
            "    b = last()\n"
            "connections['default'].close()\n"
            "print('pooled', type(raw).__module__, a.decode() if isinstance(a, bytes) else a)\n"
        )
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="testproject.settings_pool",
                   PYTHONPATH=os.pathsep.join(p for p in __import__("sys").path if p))
        out = subprocess.run([sys.executable, "-c", script, str(self.pk)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.assertEqual(out.returncode, 0, out.stdout)
        self.assertIn("pooled psycopg", out.stdout)
        self.assertEqual(self.read_as("pool-b")[0], 151, "the pooled write was not under its borrower's key")
        token_a = out.stdout.split()[-1]
        self.assertEqual(self.on_leader("SELECT distributed.session_token(%s)", (hash_key("pool-a"),)), token_a,
                         "the next borrower's write was recorded under the key left on the pooled connection")

    def test_a_write_with_no_context_is_not_recorded_under_a_left_key(self):
        with acting_for("left-user"):
            Item.objects.filter(pk=self.pk).update(value=2)
        left = self.on_leader("SELECT distributed.session_token(%s)", (hash_key("left-user"),))
        Item.objects.using("default").filter(pk=self.pk).update(value=3)  # no context
        self.assertEqual(self.on_leader("SELECT distributed.session_token(%s)", (hash_key("left-user"),)), left)


class Hole2SessionPooler(HoleTestCase):
    """pgbouncer in session mode in front of the leader, with one server
    connection and no server_reset_query: a key a client left on the
    server connection is still in force for the next client."""

    def setUp(self):
        super().setUp()
        import subprocess

        self.bdir = os.path.join(self.cluster.dir, "pgbouncer-session")
        os.makedirs(self.bdir, exist_ok=True)
        user = self.cluster.leader.sql("SELECT current_user")[0][0]
        ini = os.path.join(self.bdir, "pgbouncer.ini")
        with open(ini, "w") as f:
            f.write("\n".join([
                "[databases]",
                "app_session = host=%s port=%d dbname=app pool_size=1" % (self.cluster.dir, self.cluster.leader.port),
                "[pgbouncer]", "listen_addr =", "unix_socket_dir = %s" % self.bdir, "listen_port = 6497",
                "auth_type = trust", "auth_file = %s" % os.path.join(self.bdir, "users.txt"),
                "pool_mode = session", "server_reset_query =", "max_client_conn = 50",
                "ignore_startup_parameters = extra_float_digits,options",
                "logfile = %s" % os.path.join(self.bdir, "pgbouncer.log"),
                "pidfile = %s" % os.path.join(self.bdir, "pgbouncer.pid"), ""]))
        with open(os.path.join(self.bdir, "users.txt"), "w") as f:
            f.write('"%s" ""\n' % user)
        subprocess.run(["pgbouncer", "-d", ini], check=True)
        deadline = time.monotonic() + 10
        while not os.path.exists(os.path.join(self.bdir, ".s.PGSQL.6497")):
            self.assertLess(time.monotonic(), deadline, "pgbouncer did not start")
            time.sleep(0.02)
        settings.DATABASES["sess"] = dict(settings.DATABASES["default"], HOST=self.bdir, PORT="6497",
                                          NAME="app_session", CONN_MAX_AGE=0)

    def tearDown(self):
        connections["sess"].close()
        del connections["sess"]
        del settings.DATABASES["sess"]
        with open(os.path.join(self.bdir, "pgbouncer.pid")) as f:
            os.kill(int(f.read().strip()), 15)
        super().tearDown()

    def test_a_key_left_on_a_session_pooled_server_connection(self):
        with settings_with(LEADER="sess", POOLER="session"):
            reset_config()
            with acting_for("sess-a"):
                Item.objects.filter(pk=self.pk).update(value=1)
            connections["sess"].close()  # the server connection goes back, key and all
            left = self.on_leader("SELECT distributed.session_token(%s)", (hash_key("sess-a"),))
            Item.objects.filter(pk=self.pk).update(value=161)  # another client, no key
            connections["sess"].close()
            self.assertEqual(self.on_leader("SELECT distributed.session_token(%s)", (hash_key("sess-a"),)), left,
                             "a write without a key was recorded under the key a client left in the pooler")


# -- 3. the cookie token store ----------------------------------------------------

class Hole3CookieStore(HoleTestCase):
    def _writes_set_the_cookie(self, client, path):
        self.pause_all()
        with settings_with(TOKEN_STORE="cookie"):
            reset_config()
            r = client.post(path)
            self.assertEqual(r.status_code, 200)
            if getattr(r, "streaming", False):
                b"".join(r.streaming_content) if not getattr(r, "is_async", False) else None
            self.assertIn("readyourwrites", r.cookies, "%s set no token cookie" % path)
            got = self.read(client)
            self.assertEqual(got["db"], "default")

    def test_streaming_response_sets_the_cookie(self):
        self._writes_set_the_cookie(Client(), "/holes/stream-write/%d/71/" % self.pk)

    def test_file_response_sets_the_cookie(self):
        self._writes_set_the_cookie(Client(), "/holes/file-write/%d/72/" % self.pk)

    def test_write_the_router_did_not_see_sets_the_cookie(self):
        self._writes_set_the_cookie(Client(), "/holes/raw-write/%d/73/" % self.pk)

    @skipUnless(django.VERSION >= (4, 2), "async streaming responses are new in Django 4.2")
    def test_async_streaming_response_sets_the_cookie(self):
        self.pause_all()
        with settings_with(TOKEN_STORE="cookie"):
            reset_config()
            client = AsyncClient()

            async def flow():
                r = await client.post("/holes/async-stream-write/%d/74/" % self.pk)
                async for _ in r.streaming_content:
                    pass
                return r
            r = asyncio.run(flow())
            self.assertIn("readyourwrites", r.cookies)

    def test_a_request_never_lowers_the_cookie_it_came_with(self):
        """A concurrent request of the same browser already raised the
        cookie: a request that came with it and wrote less leaves it."""

        client = Client()
        with settings_with(TOKEN_STORE="cookie"):
            reset_config()
            r = client.post("/holes/raw-write/%d/76/" % self.pk)
            mine = _unsign_cookie(r.cookies["readyourwrites"].value, max_age=3600)
            higher = readyourwrites.Token(mine.timeline, mine.lsn + 10**6)
            client.cookies["readyourwrites"] = _sign_cookie(higher)
            r = client.post("/holes/raw-write/%d/77/" % self.pk)
            self.assertEqual(r.status_code, 200)
            # what the browser holds after the answer (review L6: not only
            # when the answer set a cookie)
            now = _unsign_cookie(client.cookies["readyourwrites"].value)
            self.assertGreaterEqual(now, higher, "the response lowered the cookie")

    def test_concurrent_requests_of_one_browser_never_lower_what_the_next_sees(self):
        """Two requests of one browser, both writing, came with the same
        cookie: B writes first (the lower token), A writes later and
        answers first, B answers last, so the browser keeps B's cookie,
        the lower one.  The next request must still see A's write, which
        the followers (replay paused after B's write) lack."""

        with settings_with(TOKEN_STORE="cookie"):
            reset_config()
            browser = Client()
            self.write(browser, 1)
            came_with = browser.cookies["readyourwrites"].value
            # a browser's first write is recorded under the key it is given
            self.assertEqual(self.on_leader("SELECT distributed.session_token(%s)",
                                            (hash_key(_cookie_key(came_with)),)),
                             str(_unsign_cookie(came_with)))
            answers = self.race_b_answers_last("lowering", {"readyourwrites": came_with})
            self.assertEqual([answers[n].status_code for n in "AB"], [200, 200])
            low = _unsign_cookie(answers["B"].cookies["readyourwrites"].value)
            high = _unsign_cookie(answers["A"].cookies["readyourwrites"].value)
            self.assertLess(low, high, "the later answer (B) must carry the lower token")
            browser.cookies["readyourwrites"] = answers["B"].cookies["readyourwrites"].value  # the last set wins
            self.assertEqual(self.read(browser), {"value": 3, "db": "default"}, "read around A's write")

    def race_b_answers_last(self, name, cookies):
        """Two writing requests of one browser, both sent with cookies: B
        writes 2 and holds its answer; once B's write is replayed the
        followers pause, A writes 3 and answers; then B answers.  Returns
        {"A": response, "B": response}."""
        from shop import views_holes

        gate = "%s-%d" % (name, self.pk)
        written, release = views_holes.GATES[gate] = (threading.Event(), threading.Event())
        answers = {}

        def post(who, path):
            client = Client()
            for cookie, value in cookies.items():
                client.cookies[cookie] = value
            try:
                answers[who] = client.post(path)
            finally:
                connections.close_all()

        b = threading.Thread(target=post, args=("B", "/holes/write-then-hold/%d/2/%s/" % (self.pk, gate)))
        b.start()
        try:
            self.assertTrue(written.wait(60), "B did not write")
            for f in self.cluster.followers:
                self.cluster.caught_up(f)  # B's write is replayed ...
                f.pause()  # ... A's will not be
            post("A", "/holes/raw-write/%d/3/" % self.pk)
        finally:
            release.set()
            b.join()
            del views_holes.GATES[gate]
        return answers

    def test_a_request_sent_without_the_key_answering_last_keeps_the_browsers_writes(self):
        """Review M2: a browser's first visit reads a page; then two of its
        requests write.  B (the lower token) answers last.  Had the read
        given the browser no key, both came without one, each minted its
        own, and the browser kept B's: the next request's lookup found B's
        write only, not A's, which the followers (paused after B's write)
        lack."""

        # the session map's first use after start-up raises its floor to
        # the end of WAL: not in the middle of this test (run alone)
        self.on_leader("SELECT distributed.session_token('warm-up')")
        with settings_with(TOKEN_STORE="cookie"):
            reset_config()
            browser = Client()
            self.assertEqual(self.read(browser)["value"], 0)  # the first visit: a read
            answers = self.race_b_answers_last("keyless", {c: m.value for c, m in browser.cookies.items()})
            self.assertEqual([answers[n].status_code for n in "AB"], [200, 200])
            for name in "AB":  # the browser keeps the last cookie set
                browser.cookies.update(answers[name].cookies)
            self.assertEqual(self.read(browser), {"value": 3, "db": "default"}, "read around A's write")

    def test_an_old_cookie_is_ignored(self):

        self.pause_all()
        with acting_for("cookie-writer"):
            Item.objects.filter(pk=self.pk).update(value=75)
            token = str(readyourwrites.parse_token(
                connections["default"].connection.info.parameter_status("distributed.last_commit")
                if hasattr(connections["default"].connection, "info")
                else connections["default"].connection.get_parameter_status("distributed.last_commit")))
        with settings_with(TOKEN_STORE="cookie", COOKIE_MAX_AGE=60):
            reset_config()
            client = Client()
            fresh = Client()
            fresh.cookies["readyourwrites"] = _sign_cookie(token)
            self.assertEqual(self.read(fresh)["db"], "default", "a fresh cookie must be honoured")
            with mock.patch("time.time", return_value=time.time() - 3600):
                signed = _sign_cookie(token)
            client.cookies["readyourwrites"] = signed
            got = self.read(client)
            # an hour-old cookie demands nothing: the (paused) followers serve
            self.assertNotEqual(got["db"], "default", "a cookie older than COOKIE_MAX_AGE was honoured")


# -- 4. threads ---------------------------------------------------------------------

class Hole4Threads(HoleTestCase):
    def test_executor_carries_the_requests_context(self):
        carry = getattr(readyourwrites, "carry_context", lambda f: f)
        self.pause_all()

        def read():
            try:
                obj = Item.objects.get(pk=self.pk)
                return obj.value, obj._state.db
            finally:
                connections.close_all()

        with acting_for("thread-user"):
            Item.objects.filter(pk=self.pk).update(value=81)
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                results = [pool.submit(carry(read)).result() for _ in range(3)]
            out = []
            t = threading.Thread(target=carry(lambda: out.append(read())))
            t.start()
            t.join()
        self.assertEqual([v for v, _ in results + out], [81] * 4)


# -- 5. async ------------------------------------------------------------------------

class Hole5Async(HoleTestCase):
    @skipUnless(django.VERSION >= (4, 2), "async streaming responses are new in Django 4.2")
    def test_async_streaming_body_runs_in_the_requests_context(self):
        self.pause_all()
        writer = Client()

        def write_elsewhere():  # another thread: this one's own writes prove nothing
            try:
                self.write(writer, 91)
            finally:
                connections.close_all()
        t = threading.Thread(target=write_elsewhere)
        t.start()
        t.join()
        client = AsyncClient()
        client.cookies = writer.cookies

        async def flow():
            r = await client.get("/holes/async-stream-read/%d/" % self.pk)
            return json.loads(b"".join([c async for c in r.streaming_content]))
        self.assertEqual(asyncio.run(flow())["value"], 91)

    def test_use_leader_on_async_def(self):
        from asgiref.sync import sync_to_async

        @use_leader()
        async def read():
            obj = await sync_to_async(Item.objects.get)(pk=self.pk)
            return obj._state.db
        self.assertEqual(asyncio.run(read()), "default")

    def test_acting_for_on_async_def(self):
        from asgiref.sync import sync_to_async

        self.pause_all()
        with acting_for("async-user"):
            Item.objects.filter(pk=self.pk).update(value=92)

        @acting_for("async-user")
        async def read():
            obj = await sync_to_async(Item.objects.get)(pk=self.pk)
            return obj.value
        self.assertEqual(asyncio.run(read()), 92)


# -- 6. secret rotation --------------------------------------------------------------

class Hole6SecretRotation(HoleTestCase):
    def test_new_process_finds_writes_hashed_under_the_old_secret(self):
        self.pause_all()
        with override_settings(SECRET_KEY="old-secret-" + "x" * 40):
            reset_config()
            _clear_hashes()
            with acting_for("rotating-user"):
                Item.objects.filter(pk=self.pk).update(value=101)
        self.pause_all()
        with override_settings(SECRET_KEY="new-secret-" + "y" * 40,
                               SECRET_KEY_FALLBACKS=["old-secret-" + "x" * 40]):
            reset_config()
            _clear_hashes()
            self.assertEqual(self.read_as("rotating-user")[0], 101)
        _clear_hashes()


# -- 7. writers without a Django session ---------------------------------------------

class Hole7HeaderTokens(HoleTestCase):
    def test_login_through_a_header_token(self):
        name = "api%d" % self.pk
        with use_leader():
            User.objects.create_user(name, password="pw")
        for f in self.cluster.followers:
            self.cluster.caught_up(f)
        self.pause_all()
        with settings_with(SESSION_KEY="auth"):
            reset_config()
            client = Client()
            r = client.post("/api/login/", data=json.dumps({"username": name, "password": "pw"}),
                            content_type="application/json")
            self.assertEqual(r.status_code, 200)
            token = r.json()["token"]
            self.assertNotIn("sessionid", client.cookies)
            r = Client().get("/api/whoami/", HTTP_AUTHORIZATION="Token " + token)
            self.assertEqual(r.status_code, 200, "the token row was read from a follower that lacks it")
            self.assertEqual(r.json()["user"], name)


# -- 8. background tasks --------------------------------------------------------------

def _item_reader(name):
    """A Celery app (in-memory broker) and its task reading one Item on
    whatever database the router picks: (value, alias)."""
    from celery import Celery

    app = Celery(name, broker="memory://", backend="cache+memory://")
    app.conf.update(task_always_eager=False, worker_hijack_root_logger=False)

    @app.task(name="%s.read_item" % name)
    def read_item(pk):
        try:
            obj = Item.objects.get(pk=pk)
            return obj.value, obj._state.db
        finally:
            connections.close_all()

    return app, read_item


class Hole8Celery(HoleTestCase):
    def test_task_sees_what_the_request_that_enqueued_it_wrote(self):
        from celery.contrib.testing.worker import start_worker
        from celery.signals import before_task_publish

        app, read_item = _item_reader("ryw8")

        published = []

        def capture(headers=None, body=None, **kw):
            published.append(json.dumps([headers, body], default=str))
        before_task_publish.connect(capture, weak=False)
        try:
            self.pause_all()
            client = Client()
            self.write(client, 12)
            raw_key = client.cookies["sessionid"].value
            with acting_for(raw_key):
                Item.objects.filter(pk=self.pk).update(value=13)
                pending = [read_item.delay(self.pk) for _ in range(3)]
            with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
                results = [p.get(timeout=30) for p in pending]
        finally:
            before_task_publish.disconnect(capture)
        self.assertEqual([v for v, _ in results], [13] * 3)
        for message in published:
            self.assertNotIn(raw_key, message, "a raw session key went through the broker")
            self.assertNotIn(hash_key(raw_key), message)


    def test_failed_lookup_at_publish_keeps_the_known_tokens(self):
        """Review M1: the key's lookup fails when the task is published;
        the context's own write (followers paused) must still be demanded
        by the task, not dropped with the lookup."""
        from celery.contrib.testing.worker import start_worker
        from django.db import DatabaseError

        app, read_item = _item_reader("ryw8m1")

        self.pause_all()
        client = Client()
        self.write(client, 12)
        raw_key = client.cookies["sessionid"].value
        with acting_for(raw_key):
            Item.objects.filter(pk=self.pk).update(value=13)
            with mock.patch("readyourwrites.leader._query", side_effect=DatabaseError("the leader went away")):
                pending = [read_item.delay(self.pk) for _ in range(3)]
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            results = [p.get(timeout=30) for p in pending]
        self.assertEqual([v for v, _ in results], [13] * 3,
                         "the task read from a follower without the write its publisher had made")


@skipUnless(django.VERSION >= (6, 0), "Django's task framework (django.tasks) is new in 6.0")
class Hole8DjangoTasks(HoleTestCase):
    """readyourwrites.tasks.task with a backend whose worker is a process
    of its own (django-tasks-db's DatabaseBackend and db_worker)."""

    def setUp(self):
        import importlib.util

        if not importlib.util.find_spec("django_tasks_db"):
            self.skipTest("django-tasks-db (a task backend with a worker process) is not installed")
        super().setUp()

    def run_worker(self, ids):
        """Run django-tasks-db's db_worker, a process of its own, until the
        queue is empty; the tasks' results."""
        import subprocess
        import sys

        from django.tasks import default_task_backend

        worker = subprocess.run(
            [sys.executable, "-c", "import django; django.setup(); from django.core.management import call_command; "
             "call_command('db_worker', batch=True, startup_delay=False, interval=0.1)"],
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p)),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        self.assertEqual(worker.returncode, 0, worker.stdout)
        results = [default_task_backend.get_result(i) for i in ids]
        self.assertEqual([str(t.status) for t in results], ["SUCCESSFUL"] * len(ids), worker.stdout)
        return results

    def test_task_enqueued_in_a_transaction_sees_its_commit(self):
        """Review H1: enqueued inside atomic(), the task's row commits with
        the write (the queue on the leader alias, django-tasks-db's
        default), but the token the enqueuing code had to see then was
        from before the write: an earlier write of the same key, which the
        followers hold.  The worker must not take that as proof."""
        from shop.tasks import read_item

        client = Client()
        self.write(client, 12)
        raw_key = client.cookies["sessionid"].value
        for f in self.cluster.followers:
            self.cluster.caught_up(f)  # they hold the key's write of 12
        self.pause_all()
        with mock.patch.dict(os.environ, RYW_TASK_QUEUE_ALIAS="default"):
            with acting_for(raw_key):
                with transaction.atomic():
                    Item.objects.filter(pk=self.pk).update(value=13)
                    ids = [read_item.enqueue(self.pk).id for _ in range(3)]
            results = self.run_worker(ids)
        self.assertEqual([t.return_value[0] for t in results], [13] * 3,
                         "a task enqueued in the transaction read from before its commit")

    def test_task_run_by_a_worker_sees_what_the_enqueuing_request_wrote(self):
        from django_tasks_db.models import DBTaskResult

        self.pause_all()
        client = Client()
        self.write(client, 12)
        raw_key = client.cookies["sessionid"].value
        r = client.post("/holes/write-and-enqueue/%d/13/" % self.pk)
        self.assertEqual(r.status_code, 200)
        ids = r.json()["results"]
        results = self.run_worker(ids)
        self.assertEqual([t.return_value[0] for t in results], [13] * 3,
                         "a task read around the write of the request that enqueued it")
        for row in DBTaskResult.objects.filter(id__in=ids):
            stored = json.dumps(row.args_kwargs)
            self.assertIn("readyourwrites_token", stored)
            self.assertNotIn(raw_key, stored, "a raw session key went into the task queue")
            self.assertNotIn(hash_key(raw_key), stored)


# -- while the key is being found ----------------------------------------------------

class KeyFinding(HoleTestCase):
    def test_finding_the_key_sends_only_that_threads_reads_to_the_leader(self):
        """Review L1: a context shared with another thread (carry_context)
        while one thread runs the key function: only that thread's reads
        (which cannot honour the key they find) go to the leader; the
        other thread's are routed as usual, to a follower."""
        from readyourwrites.context import RoutingContext, activate

        entered, release = threading.Event(), threading.Event()
        finder = []

        def key_function(request):
            if not finder:
                finder.append(threading.get_ident())
                finder.append(Item.objects.get(pk=self.pk)._state.db)  # a read while finding it
                entered.set()
                release.wait(60)
            return "shared-context-key"

        ctx = RoutingContext(request=object(), key_function=key_function)

        def find():
            try:
                with activate(ctx):
                    return ctx.keys()
            finally:
                connections.close_all()

        def read():
            try:
                with activate(ctx):
                    return Item.objects.get(pk=self.pk)._state.db
            finally:
                connections.close_all()

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            found = pool.submit(find)
            try:
                self.assertTrue(entered.wait(60))
                other = pool.submit(read).result(60)
            finally:
                release.set()
            found.result(60)
        self.assertEqual(finder[1], "default", "a read that finds the key must go to the leader")
        self.assertIn(other, ALIASES, "another thread's read went to the leader while a key was being found")

    def test_a_write_while_finding_the_key_is_not_recorded_under_the_previous_key(self):
        """Review L3: a key left in force on the thread's leader connection
        by an earlier context must not record a write the key function
        makes (a session flushed, a key cycled)."""
        from readyourwrites.context import RoutingContext, activate

        with acting_for("the-previous-user"):
            Item.objects.filter(pk=self.pk).update(value=41)
        previous = self.on_leader("SELECT distributed.session_token(%s)", (hash_key("the-previous-user"),))

        def key_function(request):
            Item.objects.filter(pk=self.pk).update(value=42)  # a write while finding the key
            return "the-next-user"

        ctx = RoutingContext(request=object(), key_function=key_function)
        with activate(ctx):
            self.assertTrue(ctx.keys())
        self.assertEqual(self.on_leader("SELECT distributed.session_token(%s)", (hash_key("the-previous-user"),)),
                         previous, "the key function's write was recorded under the previous context's key")


# -- an application role without record() ----------------------------------------------

class RoleWithoutRecord(HoleTestCase):
    """Review M4: the site connects as a plain role, without EXECUTE on
    distributed.record() (not granted to PUBLIC).  The cookie store's
    first write of a browser cannot be recorded under its new key: the
    request still answers, with a warning and record_failed counted, the
    token cookie still carries the write, and readyourwrites_status says
    what to grant."""

    ROLE = "ryw_plain_app"

    def setUp(self):
        super().setUp()
        self.cluster.leader.sql(
            "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN "
            "CREATE ROLE %s LOGIN; END IF; END$$" % (self.ROLE, self.ROLE), dbname="app")
        for sql in ("GRANT ALL ON ALL TABLES IN SCHEMA public TO %s",
                    "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO %s",
                    "REVOKE EXECUTE ON FUNCTION distributed.record(text, text) FROM %s"):
            self.cluster.leader.sql(sql % self.ROLE, dbname="app")
        self.assertFalse(self.on_leader("SELECT has_function_privilege(%s, 'distributed.record(text, text)', "
                                        "'EXECUTE')", (self.ROLE,)))
        self.user = settings.DATABASES["default"].get("USER")
        self._as(self.ROLE)
        for f in self.cluster.followers:
            self.cluster.caught_up(f)  # the role and its grants

    def _as(self, user):
        settings.DATABASES["default"]["USER"] = user
        connections["default"].settings_dict["USER"] = user
        renew_connections("default")

    def tearDown(self):
        self._as(self.user)
        super().tearDown()

    def test_first_write_of_a_browser_degrades_without_an_error(self):
        self.assertEqual(self.on_leader("SELECT 1"), 1)
        with connections["default"].cursor() as cur:
            cur.execute("SELECT current_user")
            self.assertEqual(cur.fetchone()[0], self.ROLE)
        self.pause_all()
        with settings_with(TOKEN_STORE="cookie"):
            reset_config()
            client = Client()
            with self.assertLogs("readyourwrites", "WARNING") as logs:
                self.write(client, 31)
            self.assertIn("grant EXECUTE on distributed.record(text, text)", "\n".join(logs.output))
            self.assertEqual(state.snapshot()["counts"].get("record_failed", 0), 1)
            self.assertEqual(self.read(client), {"value": 31, "db": "default"},
                             "the token cookie still carries the browser's first write")
            out = io.StringIO()
            call_command("readyourwrites_status", stdout=out)
            self.assertIn("record() not granted to %s" % self.ROLE, out.getvalue())


# -- failures and operations ---------------------------------------------------------

class Operations(HoleTestCase):
    def test_follower_back_within_one_cooldown_despite_dead_saved_connections(self):
        """Three threads each hold a saved connection to replica2; it is
        restarted.  The first thread's failure arms the cool-down; the
        others' dead saved connections must not re-arm it."""
        victim = self.follower("replica2")
        pools = [concurrent.futures.ThreadPoolExecutor(1) for _ in range(4)]

        def read():
            obj = Item.objects.get(pk=self.pk)
            return obj._state.db

        def read_and_close():
            try:
                return read()
            finally:
                connections.close_all()

        try:
            with settings_with(FOLLOWERS=["replica2"], COOLDOWN_SECONDS=1):
                reset_config()
                for p in pools[:3]:
                    self.assertEqual(p.submit(read).result(), "replica2")
                # With Django's connection pool (RYW_POOL=1) a connection
                # closed at a request's end waits in the pool, and one
                # replaced by the router must not go back there: either
                # would be lent to the next reader, dead.
                self.assertEqual(pools[3].submit(read_and_close).result(), "replica2")
                victim.stop("immediate")
                victim.start()
                self.cluster.caught_up(victim)
                pools[0].submit(read).result()  # its saved connection is dead: the read runs on the leader
                counts = state.snapshot()["counts"]
                self.assertEqual((counts.get("follower_failures", 0), counts.get("retried_on_leader", 0)), (1, 1))
                time.sleep(1.2)  # the cool-down passes (the follower is back)
                served = [p.submit(read).result() for p in pools[1:3]]
                counts = state.snapshot()["counts"]
                self.assertEqual(counts.get("follower_failures", 0), 1,
                                 "a dead saved connection re-armed the cool-down")
                self.assertEqual(counts.get("retried_on_leader", 0), 1)
                self.assertEqual(served, ["replica2", "replica2"])
        finally:
            for p in pools:
                p.submit(connections.close_all).result()
                p.shutdown()

    def test_leader_connection_closed_under_the_request_is_no_500(self):
        client = Client()
        self.write(client, 1)  # a session
        try:
            r = client.post("/holes/raw-write-lose/%d/111/" % self.pk)
            self.assertEqual(r.status_code, 200)
        finally:
            connections["default"].close()

    def test_status_shows_no_lag_for_an_idle_caught_up_follower(self):
        for f in self.cluster.followers:
            self.cluster.caught_up(f)
        out = io.StringIO()
        call_command("readyourwrites_status", "--json", stdout=out)
        report = json.loads(out.getvalue())
        for alias in ALIASES:
            self.assertEqual(report["databases"][alias]["replay_lag_seconds"], 0, alias)
        self.assertNotIn("process", report, "the command's own counters shown as the site's")
        # with the leader unreachable, how far a follower is behind is
        # unknown: shown as such, not as 0
        out = io.StringIO()
        unreachable = {"PORT": "1"}
        options = settings.DATABASES["default"].get("OPTIONS") or {}
        if options.get("pool"):  # a pool waits its timeout for a connection
            unreachable["OPTIONS"] = dict(options, pool=dict(options["pool"], timeout=1))
        with mock.patch.dict(settings.DATABASES["default"], unreachable):
            renew_connections("default")  # Django's pool keeps the settings it was built with
            del connections["default"]
            try:
                call_command("readyourwrites_status", stdout=out)
            finally:
                renew_connections("default")
                del connections["default"]
        text = out.getvalue()
        self.assertRegex(text, r"default +leader +ERROR")
        self.assertRegex(text, r"replica1 +follower .*behind=unknown")
        self.assertNotIn("behind=0", text)

    def test_system_checks(self):
        from django.core import checks

        mw = list(settings.MIDDLEWARE)
        swapped = [mw[1], mw[0]] + mw[2:]
        with override_settings(MIDDLEWARE=swapped):
            ids = {m.id for m in checks.run_checks(tags=[checks.Tags.compatibility])}
        self.assertIn("readyourwrites.E002", ids)
        rw = dict(settings.READYOURWRITES)
        del rw["FOLLOWERS"]
        with override_settings(READYOURWRITES=rw):
            ids = {m.id for m in checks.run_checks(tags=[checks.Tags.compatibility])}
        self.assertIn("readyourwrites.E001", ids)
        with settings_with(SESSION_KEY="no.such.module.key"):
            ids = {m.id for m in checks.run_checks(tags=[checks.Tags.compatibility])}
        self.assertIn("readyourwrites.E001", ids)
        with settings_with(FOLLOWERS=["nope"]):
            ids = {m.id for m in checks.run_checks(tags=[checks.Tags.compatibility])}
        self.assertIn("readyourwrites.E001", ids)
        reset_config()

    def test_models_of_other_apps_are_left_to_other_routers(self):
        router = readyourwrites.ReadYourWritesRouter()
        with settings_with(APPS=["shop"]):
            reset_config()
            self.assertIsNone(router.db_for_read(User))
            self.assertIsNone(router.db_for_write(User))
            self.assertEqual(router.db_for_write(Item), "default")

    def test_enabled_off_routes_nothing(self):
        router = readyourwrites.ReadYourWritesRouter()
        with settings_with(ENABLED=False):
            reset_config()
            self.assertIsNone(router.db_for_read(Item))
            self.assertIsNone(router.db_for_write(Item))

    def test_current_token_and_use_follower(self):
        self.pause_all()
        with acting_for("api-user"):
            Item.objects.filter(pk=self.pk).update(value=121)
            token = readyourwrites.current_token()
            self.assertEqual(str(token), self.on_leader("SELECT distributed.session_token(%s)",
                                                        (hash_key("api-user"),)))
            with readyourwrites.use_follower():
                obj = Item.objects.get(pk=self.pk)
            self.assertIn(obj._state.db, ALIASES)
            self.assertEqual(Item.objects.get(pk=self.pk)._state.db, "default")

    def test_settings_reread_on_setting_changed(self):
        from readyourwrites.conf import get_config

        get_config()
        with settings_with(POLICY="raise"):
            self.assertEqual(get_config().policy, "raise")
        self.assertEqual(get_config().policy, settings.READYOURWRITES["POLICY"])
