"""Several clusters and region-aware follower choice, on real servers.

Two leaders and three followers: "users" is the runner's cluster (leader
"default", followers "replica1", "replica2"; the site's own apps), "orders"
is started here (leader "orders", follower "orders_r1"; the auth app, whose
Group model is a small table to write).  Lag is made by pausing replay.
Assertions are on which alias served a read and on routing_stats().
"""
import contextvars
import threading
from types import SimpleNamespace
from unittest import mock

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.checks import run_checks
from django.db import connections, router as django_router
from django.http import JsonResponse
from django.test import Client, override_settings
from django.urls import path

import readyourwrites
from readyourwrites import acting_for, carry_context, drivers, use_leader
from readyourwrites import state as state_module
from readyourwrites.conf import reset_config
from readyourwrites.state import state

from base import ClusterTestCase
from cluster import Cluster

CLUSTER = None  # the runner's cluster: "users"
ORDERS = None  # started by setUpModule


def _alias_settings(port):
    """A DATABASES entry for the orders servers: a copy of the (already
    configured) default entry on another socket and port.  Django's
    connection handler reads DATABASES lazily, per alias."""
    entry = dict(settings.DATABASES["default"])
    entry.update(HOST=ORDERS.dir, PORT=str(port))
    entry["OPTIONS"] = dict(entry.get("OPTIONS") or {})
    entry["TEST"] = dict(entry.get("TEST") or {})
    return entry


def setUpModule():
    global ORDERS
    from django.core.management import call_command

    ORDERS = Cluster(followers=1, base_port=5470)
    ORDERS.leader.sql("CREATE DATABASE app")
    ORDERS.leader.sql("CREATE EXTENSION distributed", dbname="app")
    # the session map's first use after start-up raises its floor (the
    # answer for unknown keys) to the end of WAL: use it now, not in the
    # first test, where the floor would be above a paused follower
    ORDERS.leader.sql("SELECT distributed.session_token('start-up')", dbname="app")
    settings.DATABASES["orders"] = _alias_settings(ORDERS.leader.port)
    settings.DATABASES["orders_r1"] = _alias_settings(ORDERS.followers[0].port)
    call_command("migrate", database="orders", verbosity=0)
    connections["orders"].close()  # the next one is opened under the cluster settings, and watched
    ORDERS.caught_up(ORDERS.followers[0])


def tearDownModule():
    connections["orders"].close()
    connections["orders_r1"].close()
    if ORDERS is not None:
        ORDERS.stop()


# -- the settings under test ---------------------------------------------------

def clusters(**extra):
    rw = {
        "CLUSTERS": {
            "users": {"LEADER": "default", "FOLLOWERS": ["replica1", "replica2"]},  # every other app
            "orders": {"LEADER": "orders", "FOLLOWERS": ["orders_r1"], "APPS": ["auth"]},
        },
        "POLICY": "leader",
        "SESSION_KEY": "session",
        "COOLDOWN_SECONDS": 2,
    }
    rw.update(extra)
    return rw


_shard = contextvars.ContextVar("shard", default=None)


class ShardRouter:
    """A user's own router: Items of the "orders" shard live on the orders
    leader.  It names the leader for writes only; the read-your-writes
    router picks the follower of that cluster."""

    def db_for_write(self, model, **hints):
        from shop.models import Item

        if model is Item and _shard.get() == "orders":
            return "orders"
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        # the shard's tables on the orders leader: the read-your-writes
        # router keeps shop's tables on its own cluster's leader only
        if db == "orders" and app_label == "shop":
            return True
        return None


class RelationRouter:
    """A user's router placed first that allows the relation between the
    clusters (a foreign key without a constraint: db_constraint=False)."""

    def allow_relation(self, obj1, obj2, **hints):
        return True


class LeaderRouter:
    """A user's router placed first that routes Item's writes itself."""

    def db_for_write(self, model, **hints):
        from shop.models import Item

        return "default" if model is Item else None


def fake_clock(now):
    """state.py's clock, set by hand: replay rates measured over
    seconds that need not pass (now is a one-item list)."""
    return mock.patch.object(state_module, "time", SimpleNamespace(monotonic=lambda: now[0]))


# -- a small site: a view that writes to both clusters, one that reads both ----

def _write_both(request, pk, value):
    from shop.models import Item

    if request.session.session_key is None:
        request.session["seen"] = True  # a session (a write on users), once
    which = request.GET.get("to", "both")
    if which in ("both", "users"):
        Item.objects.filter(pk=pk).update(value=value)
    if which in ("both", "orders"):
        Group.objects.filter(pk=pk).update(name="%d/g%d" % (pk, value))
    return JsonResponse({"ok": True})


def _read_both(request, pk):
    from shop.models import Item

    item = Item.objects.get(pk=pk)
    group = Group.objects.get(pk=pk)
    return JsonResponse({"item": item.value, "item_db": item._state.db,
                         "group": group.name, "group_db": group._state.db})


urlpatterns = [
    path("both/<int:pk>/<int:value>/", _write_both),
    path("read/<int:pk>/", _read_both),
]


class ClustersTestCase(ClusterTestCase):
    @staticmethod
    def rw_settings():
        return clusters()

    def setUp(self):
        super().setUp()
        self.orders_r1 = ORDERS.followers[0]
        self.orders_r1.resume()
        overridden = override_settings(READYOURWRITES=self.rw_settings(), ROOT_URLCONF="test_clusters")
        overridden.enable()
        self.addCleanup(overridden.disable)
        with use_leader():
            Group.objects.using("orders").create(pk=self.pk, name=self.g(0))
        ORDERS.caught_up(self.orders_r1)
        state.reset()

    def tearDown(self):
        self.orders_r1.resume()
        super().tearDown()

    def g(self, value):
        return "%d/g%d" % (self.pk, value)

    def settle(self):
        for f in self.cluster.followers:
            self.cluster.caught_up(f)
        ORDERS.caught_up(self.orders_r1)

    def pause_all(self):
        for f in self.cluster.followers + [self.orders_r1]:
            f.pause()

    def count(self, name):
        return readyourwrites.routing_stats()["counts"].get(name, 0)


class Clusters(ClustersTestCase):
    def test_write_to_one_cluster_read_the_other_while_it_lags(self):
        """Writing users must not force orders reads to the orders leader
        (the users token means nothing there), and the users read sees
        the write although every follower is paused."""
        from shop.models import Item

        self.pause_all()
        with acting_for("alice") as ctx:
            Item.objects.filter(pk=self.pk).update(value=7)
            group = Group.objects.get(pk=self.pk)
            item = Item.objects.get(pk=self.pk)
            self.assertEqual(group._state.db, "orders_r1")
            self.assertEqual(group.name, self.g(0))
            self.assertEqual(item.value, 7)
            self.assertEqual(item._state.db, "default")
            # the users write is the context's own; on orders it has none
            # (its token there is at most the session map's floor)
            tokens = readyourwrites.current_tokens()
            self.assertEqual(tokens["users"], ctx.part("users").own)
            self.assertIsNone(ctx.part("orders").own)
        self.assertEqual(self.count("reads:orders_r1"), 1)
        self.assertEqual(self.count("reads:orders"), 0)

    def test_request_writing_to_both_sees_both(self):
        client = Client()
        client.get("/both/%d/1/" % self.pk)  # a session
        self.settle()
        self.pause_all()
        client.get("/both/%d/5/" % self.pk)
        got = client.get("/read/%d/" % self.pk).json()
        self.assertEqual((got["item"], got["group"]), (5, self.g(5)))
        self.assertEqual((got["item_db"], got["group_db"]), ("default", "orders"))
        # and a reader without the session reads the followers
        other = Client().get("/read/%d/" % self.pk).json()
        self.assertIn(other["item_db"], ("replica1", "replica2"))
        self.assertEqual(other["group_db"], "orders_r1")
        self.assertEqual(other["group"], self.g(1))

    def test_request_writing_one_cluster_keeps_the_other_followers(self):
        client = Client()
        client.get("/both/%d/1/" % self.pk)
        self.settle()
        for f in self.cluster.followers:
            f.pause()  # users lags; orders replays
        client.get("/both/%d/2/?to=users" % self.pk)
        got = client.get("/read/%d/" % self.pk).json()
        self.assertEqual(got["item"], 2)
        self.assertEqual(got["item_db"], "default")
        self.assertEqual(got["group_db"], "orders_r1")  # its own older write is replayed there

    def test_cookie_store_is_per_cluster(self):
        with override_settings(READYOURWRITES=clusters(TOKEN_STORE="cookie")):
            client = Client()
            self.pause_all()
            client.get("/both/%d/3/?to=users" % self.pk)
            first = client.cookies["readyourwrites"].value
            client.get("/both/%d/4/?to=orders" % self.pk)
            second = client.cookies["readyourwrites"].value
            self.assertNotEqual(first, second)
            # the signed cookie itself holds both clusters' tokens (the
            # browser's key alone would find them on the leaders too)
            from django.test import RequestFactory

            from readyourwrites.conf import get_config
            from readyourwrites.middleware import _read_cookie

            request = RequestFactory().get("/")
            request.COOKIES["readyourwrites"] = second
            key, tokens = _read_cookie(request, get_config())
            self.assertTrue(key)
            self.assertEqual(set(tokens), {"users", "orders"})
            got = client.get("/read/%d/" % self.pk).json()
            # the orders write did not drop the users token from the cookie
            self.assertEqual((got["item"], got["group"]), (3, self.g(4)))
            self.assertEqual((got["item_db"], got["group_db"]), ("default", "orders"))
            fresh = Client().get("/read/%d/" % self.pk).json()
            self.assertIn(fresh["item_db"], ("replica1", "replica2"))
            self.assertEqual(fresh["group_db"], "orders_r1")

    def test_carry_context_carries_both_clusters(self):
        from shop.models import Item

        self.pause_all()
        out = {}

        def read():
            try:
                out["item"] = Item.objects.get(pk=self.pk).value
                out["group"] = Group.objects.get(pk=self.pk).name
            finally:
                connections.close_all()

        with acting_for("bob"):
            Item.objects.filter(pk=self.pk).update(value=8)
            Group.objects.filter(pk=self.pk).update(name=self.g(8))
            t = threading.Thread(target=carry_context(read))
            t.start()
            t.join()
        self.assertEqual(out, {"item": 8, "group": self.g(8)})

    def test_celery_header_carries_both_clusters(self):
        """The publish hook signs both clusters' tokens into the header; the
        task's context demands both."""
        from types import SimpleNamespace

        from readyourwrites import celery as ryw_celery
        from shop.models import Item

        self.pause_all()
        headers = {}
        with acting_for("carol"):
            Item.objects.filter(pk=self.pk).update(value=9)
            Group.objects.filter(pk=self.pk).update(name=self.g(9))
            ryw_celery._on_publish(headers=headers)
        task = SimpleNamespace(request=SimpleNamespace(headers=headers))
        ryw_celery._on_prerun(task_id="t1", task=task)
        try:
            item = Item.objects.get(pk=self.pk)
            group = Group.objects.get(pk=self.pk)
        finally:
            ryw_celery._on_postrun(task_id="t1")
        self.assertEqual((item.value, group.name), (9, self.g(9)))
        self.assertEqual((item._state.db, group._state.db), ("default", "orders"))

    def test_celery_worker_sees_both_clusters(self):
        """A real worker (in-memory broker, worker thread) runs a task
        published inside a context that wrote both clusters; the task has
        no key of its own: only the header's tokens protect its reads."""
        from celery import Celery
        from celery.contrib.testing.worker import start_worker
        from shop.models import Item

        app = Celery("ryw-clusters", broker="memory://", backend="cache+memory://")
        app.conf.update(task_always_eager=False, worker_hijack_root_logger=False)

        @app.task(name="ryw.read_both")
        def read_both(pk):
            try:
                item, group = Item.objects.get(pk=pk), Group.objects.get(pk=pk)
                return [item.value, item._state.db, group.name, group._state.db]
            finally:
                connections.close_all()

        self.pause_all()
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            with acting_for("kim"):
                Item.objects.filter(pk=self.pk).update(value=31)
                Group.objects.filter(pk=self.pk).update(name=self.g(31))
                result = read_both.delay(self.pk)
            got = result.get(timeout=30)
        self.assertEqual(got, [31, "default", self.g(31), "orders"])

    def test_user_router_names_the_cluster(self):
        """The user's router sends the orders shard's Items to the orders
        leader; reads of them go to the orders follower, not to users'."""
        from shop.models import Item

        routers = ["test_clusters.ShardRouter", "readyourwrites.ReadYourWritesRouter"]
        with override_settings(DATABASE_ROUTERS=routers):
            token = _shard.set("orders")
            try:
                Item.objects.create(pk=self.pk, value=21)
                ORDERS.caught_up(self.orders_r1)
                got = Item.objects.get(pk=self.pk)
                self.assertEqual((got.value, got._state.db), (21, "orders_r1"))
                self.orders_r1.pause()
                with acting_for("dave"):
                    Item.objects.filter(pk=self.pk).update(value=22)
                    got = Item.objects.get(pk=self.pk)
                    self.assertEqual((got.value, got._state.db), (22, "orders"))
            finally:
                _shard.reset(token)
            got = Item.objects.get(pk=self.pk)  # the users shard's row: untouched
            self.assertEqual(got.value, 0)
            self.assertIn(got._state.db, ("replica1", "replica2"))

    def test_status_command_shows_every_cluster(self):
        import io
        import json

        from django.core.management import call_command

        out = io.StringIO()
        call_command("readyourwrites_status", "--json", stdout=out)
        dbs = json.loads(out.getvalue())["databases"]
        self.assertEqual({a: (e["configured_as"], e.get("cluster")) for a, e in dbs.items()},
                         {"default": ("leader", "users"), "replica1": ("follower", "users"),
                          "replica2": ("follower", "users"), "orders": ("leader", "orders"),
                          "orders_r1": ("follower", "orders")})
        self.assertIn("bytes_behind_leader", dbs["orders_r1"])
        self.assertFalse(dbs["orders_r1"]["stats"]["role"] == dbs["orders"]["stats"]["role"])

    def test_flat_settings_are_one_cluster(self):
        with override_settings(READYOURWRITES={"LEADER": "default", "FOLLOWERS": ["replica1", "replica2"]}):
            reset_config()
            from readyourwrites.conf import get_config

            config = get_config()
            self.assertEqual([c.name for c in config.clusters], ["default"])
            self.assertEqual(config.clusters[0].leader, "default")
            self.assertEqual(tuple(config.clusters[0].followers), ("replica1", "replica2"))
            self.assertIsNone(config.clusters[0].apps)
            self.assertIs(config.cluster_of_app("auth"), config.clusters[0])
            self.assertIs(config.default, config.clusters[0])
            # and it routes: auth's reads go to its followers, not to the orders servers
            self.assertIn(django_router.db_for_read(Group), ("replica1", "replica2"))


class CrossCluster(ClustersTestCase):
    """A relation between the clusters: ApiToken (shop, users) has a
    foreign key to User (auth, orders).  The users leader holds a copy of
    the user under another name, for its foreign key constraint: a read
    served by the wrong cluster shows that name."""

    def setUp(self):
        super().setUp()
        from django.contrib.auth.models import User
        from shop.models import ApiToken

        self.uid = 10**6 + self.pk
        self.key = "k%d" % self.uid
        with use_leader():
            User.objects.using("orders").create(pk=self.uid, username="u%d" % self.uid)
            User.objects.using("default").create(pk=self.uid, username="copy%d" % self.uid)

        def drop():
            with use_leader():
                ApiToken.objects.using("default").filter(user_id=self.uid).delete()
                ApiToken.objects.using("orders").filter(user_id=self.uid).delete()
                User.objects.using("orders").filter(pk=self.uid).delete()
                User.objects.using("default").filter(pk=self.uid).delete()
        self.addCleanup(drop)
        self.settle()

    def test_related_access_is_routed_by_the_model_read(self):
        from django.contrib.auth.models import User
        from shop.models import ApiToken, Item

        user = User.objects.get(pk=self.uid)
        self.assertEqual(user._state.db, "orders_r1")
        # no relation between the clusters' objects unless a router of the
        # user's allows it: no foreign key constraint can hold it
        self.assertFalse(django_router.allow_relation(user, Item.objects.using("replica1").get(pk=self.pk)))
        self.assertTrue(django_router.allow_relation(Item.objects.using("default").get(pk=self.pk),
                                                     Item.objects.using("replica1").get(pk=self.pk)))
        self.pause_all()
        routers = ["test_clusters.RelationRouter", "readyourwrites.ReadYourWritesRouter"]
        with override_settings(DATABASE_ROUTERS=routers), acting_for("lena"):
            ApiToken.objects.create(user_id=self.uid, key=self.key)
            # the reverse relation from an orders object reads users' table,
            # on users' leader (its own write; the followers are paused)
            tokens = [(t.key, t._state.db) for t in user.apitoken_set.all()]
            self.assertEqual(tokens, [(self.key, "default")])
            token = ApiToken.objects.get(key=self.key)
            self.assertEqual(token._state.db, "default")
            # the forward relation from a users object reads orders' table
            owner = token.user
            self.assertEqual((owner.username, owner._state.db), ("u%d" % self.uid, "orders_r1"))
            # a related write (user.apitoken_set.create()) goes to the model's leader
            self.assertEqual(django_router.db_for_write(ApiToken, instance=user), "default")
            self.assertEqual(django_router.db_for_write(User, instance=token), "orders")

    def test_apps_migrate_only_on_their_clusters_leader(self):
        self.assertFalse(django_router.allow_migrate("orders", "shop"))
        self.assertFalse(django_router.allow_migrate("default", "auth"))
        self.assertTrue(django_router.allow_migrate("orders", "auth"))
        self.assertTrue(django_router.allow_migrate("default", "shop"))
        self.assertFalse(django_router.allow_migrate("orders_r1", "auth"))
        # a user router placed first decides for the models it routes
        routers = ["test_clusters.ShardRouter", "readyourwrites.ReadYourWritesRouter"]
        with override_settings(DATABASE_ROUTERS=routers):
            self.assertTrue(django_router.allow_migrate("orders", "shop"))
            self.assertFalse(django_router.allow_migrate("default", "auth"))

    def test_token_taken_when_a_user_router_routes_the_write(self):
        """A user router placed first answers db_for_write, so this
        router is never asked; behind a proxy that drops ParameterStatus
        the token must still be asked (and for .using() too)."""
        from shop.models import Item

        real = drivers.parameter_status

        def dropping(raw, name):
            return None if name == "distributed.last_commit" else real(raw, name)

        self.pause_all()
        routers = ["test_clusters.LeaderRouter", "readyourwrites.ReadYourWritesRouter"]
        with override_settings(DATABASE_ROUTERS=routers), mock.patch.object(drivers, "parameter_status", dropping):
            with acting_for(None):
                Item.objects.filter(pk=self.pk).update(value=14)
                Group.objects.using("orders").filter(pk=self.pk).update(name=self.g(14))
                item = Item.objects.get(pk=self.pk)
                group = Group.objects.get(pk=self.pk)
        self.assertEqual((item.value, item._state.db), (14, "default"))
        self.assertEqual((group.name, group._state.db), (self.g(14), "orders"))
        self.assertGreaterEqual(self.count("token_queries"), 2)

    def test_current_tokens_keeps_the_others_when_one_lookup_fails(self):
        """The orders leader fails the key lookup: current_tokens() still
        answers users' token, and orders' own write for orders."""
        from django.db import DatabaseError

        from readyourwrites import leader as leader_module
        from shop.models import Item

        real = leader_module._query

        def failing(cluster, sql, params):
            if cluster.name == "orders" and "session_token" in sql:
                raise DatabaseError("the orders leader is gone")
            return real(cluster, sql, params)

        self.pause_all()
        with acting_for("olga") as ctx:
            Item.objects.filter(pk=self.pk).update(value=17)
            Group.objects.filter(pk=self.pk).update(name=self.g(17))
            with mock.patch.object(leader_module, "_query", failing):
                tokens = readyourwrites.current_tokens()
            self.assertEqual(tokens, {"users": ctx.part("users").token, "orders": ctx.part("orders").own})
        self.assertIsNotNone(tokens["orders"])
        self.assertEqual(self.count("fallback_lookup_failed"), 1)

    def test_a_bare_token_is_the_default_leaders(self):
        """CLUSTERS names orders first: a token without a cluster's name
        (a cookie, Celery header or task argument written under the flat
        settings, whose leader was "default") is still users'."""
        from shop.models import Item

        self.pause_all()
        with acting_for(None) as ctx:
            Item.objects.filter(pk=self.pk).update(value=15)
            token = ctx.part("users").own
        self.assertIsNotNone(token)
        rw = clusters()
        rw["CLUSTERS"] = dict(reversed(list(rw["CLUSTERS"].items())))
        with override_settings(READYOURWRITES=rw):
            reset_config()
            from readyourwrites.conf import get_config

            self.assertEqual([c.name for c in get_config().clusters], ["orders", "users"])
            with acting_for(token=str(token)):
                got = Item.objects.get(pk=self.pk)
                group = Group.objects.get(pk=self.pk)
        self.assertEqual((got.value, got._state.db), (15, "default"))
        self.assertEqual(group._state.db, "orders_r1")


class Checks(ClustersTestCase):
    def check_ids(self, rw):
        with override_settings(READYOURWRITES=rw):
            reset_config()
            # every check, as manage.py check and migrate run them: Django's
            # own model checks ask the router too, and must not crash on
            # the settings the router's checks are reporting
            return {e.id for e in run_checks(databases=list(settings.DATABASES))
                    if e.id.startswith("readyourwrites.")}

    def test_unknown_alias(self):
        rw = clusters()
        rw["CLUSTERS"]["orders"]["FOLLOWERS"] = ["orders_r9"]
        self.assertIn("readyourwrites.E001", self.check_ids(rw))

    def test_alias_in_two_clusters(self):
        rw = clusters()
        rw["CLUSTERS"]["orders"]["FOLLOWERS"] = ["orders_r1", "replica2"]
        self.assertIn("readyourwrites.E003", self.check_ids(rw))

    def test_app_in_two_clusters(self):
        rw = clusters()
        rw["CLUSTERS"]["users"]["APPS"] = ["shop", "auth"]
        self.assertIn("readyourwrites.E004", self.check_ids(rw))

    def test_good_settings_pass(self):
        self.assertFalse({"readyourwrites.E001", "readyourwrites.E003", "readyourwrites.E004"}
                         & self.check_ids(clusters(REGION="eu")))


def regions(**extra):
    """users: this process and replica1 in "eu", replica2 and the leader in
    "us" (40 ms away)."""
    rw = clusters(POLICY="wait", WAIT_MS=2000, REGION="eu", **extra)
    rw["CLUSTERS"]["users"] = {
        "LEADER": "default", "LEADER_RTT_MS": 40,
        "FOLLOWERS": {"replica1": {"REGION": "eu"}, "replica2": {"REGION": "us", "RTT_MS": 30}},
    }
    return rw


class Regions(ClustersTestCase):
    rw_settings = staticmethod(regions)

    def report(self, alias):
        """Make alias's connection report its replay position (any reply does)."""
        with connections[alias].cursor() as cur:
            cur.execute("SELECT 1")

    def test_covering_follower_in_our_region_first(self):
        from shop.models import Item

        with acting_for("erin"):
            Item.objects.filter(pk=self.pk).update(value=1)
            for f in self.cluster.followers:
                self.cluster.caught_up(f)
            self.report("replica1")
            self.report("replica2")
            served = [Item.objects.get(pk=self.pk)._state.db for _ in range(6)]
        self.assertEqual(served, ["replica1"] * 6)
        self.assertEqual(self.count("waits_deferred"), 0)

    def test_reads_without_a_token_stay_in_our_region(self):
        from shop.models import Item

        served = {Item.objects.get(pk=self.pk)._state.db for _ in range(6)}
        self.assertEqual(served, {"replica1"})

    def test_remote_follower_that_covers_beats_the_leader(self):
        """The local follower is paused; the remote one reported the
        token and is nearer than the leader."""
        from shop.models import Item

        local, remote = self.cluster.followers
        local.pause()
        with acting_for("frank"):
            Item.objects.filter(pk=self.pk).update(value=2)
            self.cluster.caught_up(remote)
            self.report("replica2")
            got = Item.objects.get(pk=self.pk)
        self.assertEqual((got.value, got._state.db), (2, "replica2"))
        self.assertEqual(self.count("waits_deferred"), 0)
        self.assertEqual(self.count("extra_round_trips"), 0)

    def test_unknown_replay_rate_goes_to_the_leader_without_waiting(self):
        """Local follower paused, remote not known to cover: with no
        replay rate to predict a catch-up, no wait is bet on (the leader
        round trip is the known cost)."""
        from shop.models import Item

        local, remote = self.cluster.followers
        local.pause()
        remote.pause()
        with acting_for("gina"):
            Item.objects.filter(pk=self.pk).update(value=3)
            got = Item.objects.get(pk=self.pk)
        self.assertEqual((got.value, got._state.db), (3, "default"))
        self.assertEqual(self.count("waits_deferred"), 0)
        self.assertEqual(self.count("waits"), 0)
        self.assertEqual(self.count("leader_nearer"), 1)

    def test_predicted_catch_up_waits_on_the_local_follower(self):
        """The local follower replayed 16 MB in a second (a replay rate);
        the next small write is predicted to replay long before a leader
        round trip: the read waits there, with the read."""
        from shop.models import Item

        now = [1000.0]
        with fake_clock(now):
            self.report("replica1")
            with use_leader():
                Item.objects.filter(pk=self.pk).update(note="x")
            self.cluster.leader.sql("SELECT pg_switch_wal()")  # 16 MB further on
            self.cluster.caught_up(self.cluster.followers[0])
            now[0] += 1
            self.report("replica1")
            self.assertGreater(state.replay_rate("replica1"), 10**6)
            with acting_for("hugo"):
                Item.objects.filter(pk=self.pk).update(value=4)
                got = Item.objects.get(pk=self.pk)
        self.assertEqual(got.value, 4)
        self.assertEqual(got._state.db, "replica1")
        self.assertEqual(self.count("waits_deferred"), 1)
        self.assertEqual(self.count("leader_nearer"), 0)

    def test_paused_follower_rate_decays_to_the_leader(self):
        """Once a follower stops advancing, its rate is measured up to now:
        it falls, and a later read stops betting on it.  (Measured up to
        its last report, the rate would stay 16 MB/s and the read would
        wait on the paused follower.)"""
        from shop.models import Item

        now = [1000.0]
        with fake_clock(now):
            self.report("replica1")
            with use_leader():
                Item.objects.filter(pk=self.pk).update(note="y")
            self.cluster.leader.sql("SELECT pg_switch_wal()")
            self.cluster.caught_up(self.cluster.followers[0])
            now[0] += 1
            self.report("replica1")  # 16 MB in a second
            self.assertGreater(state.replay_rate("replica1"), 10**6)
            for f in self.cluster.followers:
                f.pause()
            now[0] += 10 * 3600  # ten hours without a report
            self.assertLess(state.replay_rate("replica1"), 1000)
            with acting_for("ida"):
                Item.objects.filter(pk=self.pk).update(value=5)
                got = Item.objects.get(pk=self.pk)
        self.assertEqual((got.value, got._state.db), (5, "default"))
        self.assertEqual(self.count("waits_deferred"), 0)
        self.assertEqual(self.count("leader_nearer"), 1)

    def test_rate_is_of_the_last_seconds_under_frequent_reports(self):
        """Replies come faster than the sampling interval (a busy site):
        the rate is still of the last RATE_SECONDS, not of the process's
        lifetime; a follower paused for 12 s of replies has no rate left."""
        from shop.models import Item

        now = [1000.0]
        with fake_clock(now):
            self.report("replica1")
            with use_leader():
                Item.objects.filter(pk=self.pk).update(note="m1")
            self.cluster.leader.sql("SELECT pg_switch_wal()")
            self.cluster.caught_up(self.cluster.followers[0])
            now[0] += 10
            self.report("replica1")  # 16 MB in ten seconds
            self.assertIsNotNone(state.replay_rate("replica1"))
            for f in self.cluster.followers:
                f.pause()
            for _ in range(600):  # 12 s of replies 20 ms apart, replaying nothing
                now[0] += 0.02
                self.report("replica1")
            self.assertIsNone(state.replay_rate("replica1"))
            with acting_for("mona"):
                Item.objects.filter(pk=self.pk).update(value=13)
                got = Item.objects.get(pk=self.pk)
        self.assertEqual((got.value, got._state.db), (13, "default"))
        self.assertEqual(self.count("waits_deferred"), 0)

    def test_an_idle_connections_old_report_is_no_rate_sample(self):
        """This thread's connection last reported a position 16 MB ago;
        another thread's fresh reply reported the new one.  Choosing this
        connection (its old report) must not restart the rate from the old
        position stamped now: the next reply would make it ~1000x."""
        from shop.models import Item

        now = [1000.0]
        with fake_clock(now):
            self.report("replica1")  # this thread: the old position, then idle
            with use_leader():
                Item.objects.filter(pk=self.pk).update(note="m2")
            self.cluster.leader.sql("SELECT pg_switch_wal()")
            self.cluster.caught_up(self.cluster.followers[0])
            now[0] += 10

            def other():
                try:
                    self.report("replica1")
                finally:
                    connections.close_all()

            t = threading.Thread(target=other)
            t.start()
            t.join()
            before = state.replay_rate("replica1")
            self.assertIsNotNone(before)  # 16 MB in ten seconds
            now[0] += 0.001
            self.assertEqual(Item.objects.get(pk=self.pk)._state.db, "replica1")  # no token: the nearest
            now[0] += 0.001
            after = state.replay_rate("replica1")
        self.assertLess(after, 2 * before)

    def test_raise_takes_a_covering_follower_farther_than_the_leader(self):
        """POLICY "raise" is never turned into an error by the cost model:
        a follower that has the write is taken, however far."""
        from shop.models import Item

        rw = regions()
        rw["POLICY"] = "raise"
        rw["CLUSTERS"]["users"]["LEADER_RTT_MS"] = 20  # replica2 (30 ms) is farther than the leader
        with override_settings(READYOURWRITES=rw):
            reset_config()
            local, remote = self.cluster.followers
            local.pause()
            with acting_for("lars"):
                Item.objects.filter(pk=self.pk).update(value=12)
                self.cluster.caught_up(remote)
                self.report("replica2")
                got = Item.objects.get(pk=self.pk)
        self.assertEqual((got.value, got._state.db), (12, "replica2"))
        self.assertEqual(self.count("raised"), 0)

    def test_a_follower_farther_than_the_leader_is_not_connected(self):
        """With a token to honour and the leader nearer than replica2, the
        read goes to the leader without opening a connection to replica2
        (a cross-region connect per read with CONN_MAX_AGE 0)."""
        from shop.models import Item

        rw = regions()
        rw["CLUSTERS"]["users"]["LEADER_RTT_MS"] = 20
        with override_settings(READYOURWRITES=rw):
            reset_config()
            connections["replica2"].close()
            self.cluster.followers[0].pause()
            with acting_for("nils"):
                Item.objects.filter(pk=self.pk).update(value=16)
                got = Item.objects.get(pk=self.pk)
            self.assertIsNone(connections["replica2"].connection)
        self.assertEqual((got.value, got._state.db), (16, "default"))

    def test_leader_round_trip_measured_when_the_settings_do_not_say(self):
        """REGION set, no LEADER_RTT_MS or LEADER_REGION: the key lookup
        the read makes anyway measures the leader's round trip, and the
        cost model uses it (no rate known: the leader, with no wait)."""
        from shop.models import Item

        rw = regions()
        del rw["CLUSTERS"]["users"]["LEADER_RTT_MS"]
        with override_settings(READYOURWRITES=rw):
            reset_config()
            for f in self.cluster.followers:
                f.pause()
            with acting_for("jan"):
                Item.objects.filter(pk=self.pk).update(value=6)
                got = Item.objects.get(pk=self.pk)
            self.assertEqual((got.value, got._state.db), (6, "default"))
            self.assertIsNotNone(readyourwrites.routing_stats()["leaders"]["users"]["rtt_ms"])
            self.assertEqual(self.count("leader_nearer"), 1)
            self.assertEqual(self.count("waits_deferred"), 0)
