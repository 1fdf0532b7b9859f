"""What every router test starts from: both followers replaying and caught
up, this process knowing nothing of them, and a fresh row to write."""
import itertools
import unittest

from readyourwrites import use_leader
from readyourwrites.conf import reset_config
from readyourwrites.state import state


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
