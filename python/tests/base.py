"""What every router test starts from: both followers replaying and caught
up, this process knowing nothing of them, and a fresh row to write."""
import itertools
import unittest

from django.conf import settings
from django.db import connections
from django.test import override_settings

from readyourwrites import use_leader
from readyourwrites.conf import reset_config
from readyourwrites.state import state

ALIASES = ("replica1", "replica2")  # the followers, in the cluster's order


def settings_with(**changes):
    """override_settings for some READYOURWRITES entries."""
    merged = dict(settings.READYOURWRITES)
    merged.update(changes)
    return override_settings(READYOURWRITES=merged)


def renew_connections(alias):
    """Close the alias's connection so that its next one is opened with the
    settings of now and reaches the server they name now: with Django's
    connection pool (RYW_POOL=1) also the pool, built once from the
    settings of its day, whose connections may lead to a server since
    restarted (a test's method, not the router's: see
    test_follower_back_within_one_cooldown_despite_dead_saved_connections
    for what the router does about connections of a failed server)."""
    conn = connections[alias]
    conn.close()
    if getattr(conn, "pool", None) is not None:
        conn.close_pool()


class ClusterTestCase(unittest.TestCase):
    cluster = None  # the Cluster, set by the runner on the subclass's module
    ids = itertools.count(1000)

    def setUp(self):
        from shop.models import Item

        for f in self.cluster.followers:
            f.resume()
        for f in self.cluster.followers:
            self.cluster.caught_up(f)
        state.reset()
        reset_config()
        self.pk = next(self.ids)
        with use_leader():
            Item.objects.create(pk=self.pk, value=0)
        for f in self.cluster.followers:
            self.cluster.caught_up(f)

    def tearDown(self):
        for f in self.cluster.followers:
            f.resume()
        reset_config()

    # helpers
    def follower(self, alias):
        return self.cluster.followers[ALIASES.index(alias)]

    def pause_all(self):
        for f in self.cluster.followers:
            f.pause()

    def on_leader(self, sql, args=()):
        return self.cluster.leader.sql(sql, args, "app")[0][0]
