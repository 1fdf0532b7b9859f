"""Zero extra round trips: the wait travels with the read (issue 11, part 1).

With POLICY "wait", the first read after a write goes to a follower whose
position is not yet known to cover the token as ONE round trip: CALL
distributed.wait_for and the read in one message (psycopg2, psycopg 3's
client-side binding cursor) or one pipeline (psycopg 3 with server-side
binding).  Replay is paused on the follower; what reaches the follower is
counted at the driver (an execute wrapper inside the router's own).
"""
import threading
import time

from django.db import connections, transaction

from readyourwrites.conf import reset_config
from readyourwrites.router import reads_moved_to_leader
from readyourwrites.state import state
from shop.models import Item

from base import ClusterTestCase, renew_connections, settings_with

CLUSTER = None  # set by run_tests.py


def is_psycopg3():
    from django.db.backends.postgresql import base

    return getattr(base, "is_psycopg3", False)


class Trips:
    """Every statement sent on one connection of this thread: (sql, pipelined)."""

    def __init__(self, alias):
        self.alias = alias
        self.seen = []

    def __call__(self, execute, sql, params, many, context):
        raw = connections[self.alias].connection
        self.seen.append((sql, getattr(raw, "_pipeline", None) is not None))
        return execute(sql, params, many, context)

    def round_trips(self):
        """Statements sent alone, plus one per pipeline of statements."""
        alone = [s for s, p in self.seen if not p]
        piped = [s for s, p in self.seen if p]
        return len(alone) + (1 if piped else 0) if len(piped) <= 2 else None

    def calls_alone(self):
        return [s for s, p in self.seen if not p and s.lstrip().upper().startswith("CALL")
                and ";" not in s]


class ZeroRoundTrips(ClusterTestCase):
    follower_alias = "replica1"

    def setUp(self):
        super().setUp()
        self.node = CLUSTER.followers[0]
        # a connection that has reported a position from before the write
        connections[self.follower_alias].close()

    def tearDown(self):
        connections[self.follower_alias].close()
        super().tearDown()

    def write_behind(self, value):
        """Pause replay, then write value: the follower lacks it."""
        # The follower connection opens and reports a position at or past
        # everything written so far: read on it directly (routed, a read
        # could wait first: a connection from Django's pool reports the
        # position of its last reply, perhaps from an earlier test).
        Item.objects.using(self.follower_alias).get(pk=self.pk)
        self.node.pause()
        Item.objects.filter(pk=self.pk).update(value=value)

    def resume_when_waited_on(self, delay=0.3):
        def go():
            self.node.poll("SELECT count(*) = 1 FROM distributed.waiters", dbname="app")
            time.sleep(delay)  # the wait really sleeps before replay resumes
            self.node.resume()

        t = threading.Thread(target=go)
        t.start()
        return t

    def read_counted(self):
        trips = Trips(self.follower_alias)
        moved = reads_moved_to_leader()
        with connections[self.follower_alias].execute_wrapper(trips):
            obj = Item.objects.get(pk=self.pk)
        if reads_moved_to_leader() > moved:
            obj._state.db = "default"  # the instance names the follower it was routed to
        return obj, trips

    def test_first_read_after_a_write_is_one_round_trip(self):
        with settings_with(POLICY="wait", WAIT_MS=30000, FOLLOWERS=[self.follower_alias]):
            reset_config()
            self.write_behind(2)
            t = self.resume_when_waited_on()
            obj, trips = self.read_counted()
            t.join()
            self.assertEqual((obj.value, obj._state.db), (2, self.follower_alias))
            self.assertEqual(len(trips.seen), 1 if not trips.seen[0][1] else 2, trips.seen)
            self.assertEqual(trips.round_trips(), 1, trips.seen)
            self.assertEqual(trips.calls_alone(), [], "the wait went in a round trip of its own")
            self.assertIn("distributed.wait_for", trips.seen[0][0])
            counts = state.snapshot()["counts"]
            self.assertEqual(counts.get("extra_round_trips", 0), 0, counts)
            self.assertEqual(counts.get("waits_combined"), 1, counts)
            self.assertEqual(counts.get("waits_reached"), 1, counts)

            # the next read is proven by what the connection reported: no wait
            obj, trips = self.read_counted()
            self.assertEqual((obj.value, obj._state.db), (2, self.follower_alias))
            self.assertEqual(len(trips.seen), 1, trips.seen)
            self.assertNotIn("wait_for", trips.seen[0][0])
            self.assertEqual(state.snapshot()["counts"].get("waits_combined"), 1)

    def test_timed_out_wait_reads_the_leader_never_stale(self):
        with settings_with(POLICY="wait", WAIT_MS=200, FOLLOWERS=[self.follower_alias]):
            reset_config()
            self.write_behind(3)
            obj, trips = self.read_counted()
            self.assertEqual((obj.value, obj._state.db), (3, "default"))
            self.assertEqual(trips.round_trips(), 1, trips.seen)
            self.assertEqual(trips.calls_alone(), [])
            counts = state.snapshot()["counts"]
            self.assertEqual(counts.get("wait_timeout"), 1, counts)
            self.assertEqual(counts.get("extra_round_trips"), 1, counts)  # the leader's
            self.assertEqual(counts.get("follower_failures", 0), 0, counts)
            self.assertEqual(counts.get("retried_on_leader", 0), 0, counts)
            # the follower still lags: the next read waits again, and is right again
            obj, trips = self.read_counted()
            self.assertEqual((obj.value, obj._state.db), (3, "default"))

    def test_percent_signs_and_raw_sql_survive_the_combined_form(self):
        with settings_with(POLICY="wait", WAIT_MS=30000, FOLLOWERS=[self.follower_alias]):
            reset_config()
            self.write_behind(4)
            t = self.resume_when_waited_on(delay=0)
            rows = list(Item.objects.raw("SELECT id, value, '100%%' AS note FROM shop_item WHERE id = %s",
                                         [self.pk]))
            t.join()
            self.assertEqual([(r.value, r.note, r._state.db) for r in rows], [(4, "100%", self.follower_alias)])

    def test_named_parameters_survive_the_combined_form(self):
        with settings_with(POLICY="wait", WAIT_MS=30000, FOLLOWERS=[self.follower_alias]):
            reset_config()
            self.write_behind(9)
            t = self.resume_when_waited_on(delay=0)
            rows = list(Item.objects.raw("SELECT id, value FROM shop_item WHERE id = %(pk)s", {"pk": self.pk}))
            t.join()
            self.assertEqual([(r.value, r._state.db) for r in rows], [(9, self.follower_alias)])
            self.assertEqual(state.snapshot()["counts"].get("waits_combined"), 1)

    def test_the_reads_own_statement_timeout_is_not_a_missed_wait(self):
        """57014 also comes from the read's own statement_timeout: that is
        the read's error, raised as before, not a wait to move to the leader."""
        from django.db import OperationalError

        with settings_with(POLICY="wait", WAIT_MS=30000, FOLLOWERS=[self.follower_alias]):
            reset_config()
            self.write_behind(8)
            with connections[self.follower_alias].cursor() as cur:
                cur.execute("SET statement_timeout = 500")
            t = self.resume_when_waited_on(delay=0)
            moved = reads_moved_to_leader()
            try:
                with self.assertRaises(OperationalError) as raised:
                    list(Item.objects.raw("SELECT id, value FROM shop_item, pg_sleep(30) WHERE id = %s",
                                          [self.pk]))
            finally:
                # a pooled connection keeps its settings for its next borrower
                with connections[self.follower_alias].cursor() as cur:
                    cur.execute("RESET statement_timeout")
            t.join()
            self.assertIn("statement timeout", str(raised.exception))
            self.assertEqual(reads_moved_to_leader(), moved)
            counts = state.snapshot()["counts"]
            self.assertEqual(counts.get("waits_combined"), 1, counts)
            self.assertEqual(counts.get("wait_timeout", 0), 0, counts)

    def test_server_side_cursor_waits_separately(self):
        """.iterator() declares a server-side cursor, which cannot follow a
        CALL in one message: the old path (a wait, then the read)."""
        with settings_with(POLICY="wait", WAIT_MS=200, FOLLOWERS=[self.follower_alias]):
            reset_config()
            self.write_behind(5)
            moved = reads_moved_to_leader()
            got = [o.value for o in Item.objects.filter(pk=self.pk).iterator()]
            self.assertEqual(got, [5])
            self.assertEqual(reads_moved_to_leader() - moved, 1)
            counts = state.snapshot()["counts"]
            self.assertEqual((counts.get("waits_separate"), counts.get("waits_combined", 0)), (1, 0), counts)
            self.assertEqual(counts.get("wait_timeout"), 1, counts)

    def test_read_in_a_follower_transaction_is_not_combined(self):
        """A block on the follower: the CALL is never put inside it."""
        with settings_with(POLICY="wait", WAIT_MS=30000, FOLLOWERS=[self.follower_alias]):
            reset_config()
            self.write_behind(6)
            t = self.resume_when_waited_on(delay=0)
            trips = Trips(self.follower_alias)
            with transaction.atomic(using=self.follower_alias):
                with connections[self.follower_alias].execute_wrapper(trips):
                    obj = Item.objects.get(pk=self.pk)
            t.join()
            self.assertEqual((obj.value, obj._state.db), (6, self.follower_alias))
            self.assertFalse([s for s, _ in trips.seen if "wait_for" in s and ";" in s], trips.seen)
            self.assertEqual(state.snapshot()["counts"].get("waits_combined", 0), 0)

    if is_psycopg3():
        def test_psycopg3_server_side_binding_uses_one_pipeline(self):
            conn = connections[self.follower_alias]
            options = conn.settings_dict.setdefault("OPTIONS", {})
            options["server_side_binding"] = True
            try:
                renew_connections(self.follower_alias)  # a pool is built from the settings once
                with settings_with(POLICY="wait", WAIT_MS=30000, FOLLOWERS=[self.follower_alias]):
                    reset_config()
                    self.write_behind(7)
                    import psycopg

                    self.assertNotIsInstance(conn.connection.cursor(), psycopg.ClientCursor)
                    t = self.resume_when_waited_on()
                    obj, trips = self.read_counted()
                    t.join()
                    self.assertEqual((obj.value, obj._state.db), (7, self.follower_alias))
                    self.assertEqual([p for _, p in trips.seen], [True, True], trips.seen)
                    self.assertEqual(trips.round_trips(), 1, trips.seen)
                    self.assertEqual(state.snapshot()["counts"].get("extra_round_trips", 0), 0)
            finally:
                options.pop("server_side_binding", None)
                renew_connections(self.follower_alias)
