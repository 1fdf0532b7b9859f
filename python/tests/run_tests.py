"""Run the router's tests against a real leader and two followers.

    /usr/bin/python3 python/tests/run_tests.py     # as an unprivileged user

Starts the servers in a scratch directory (Unix sockets only), creates the
site's database and migrates it on the leader, runs the tests, and stops the
servers.  Prints "django: N passed, M failed" last.
"""
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

from cluster import Cluster  # noqa: E402


def start_site(cluster):
    cluster.leader.sql("CREATE DATABASE app")
    cluster.leader.sql("CREATE EXTENSION distributed", dbname="app")
    os.environ["RYW_SOCKET"] = cluster.dir
    os.environ["RYW_PORTS"] = ",".join(str(n.port) for n in [cluster.leader] + cluster.followers)
    os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", database="default", verbosity=0)
    for f in cluster.followers:
        cluster.caught_up(f)


def main() -> int:
    cluster = Cluster(followers=2)
    try:
        start_site(cluster)
        import test_router

        test_router.CLUSTER = cluster
        only = os.environ.get("ONLY")  # e.g. ONLY=Policies.test_raise
        loader = unittest.defaultTestLoader
        suite = loader.loadTestsFromName(only, test_router) if only else loader.loadTestsFromModule(test_router)
        result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
        failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
        skipped = len(result.skipped)
        passed = result.testsRun - failed - skipped
        print("django: %d passed, %d failed" % (passed, failed + skipped))
        return 0 if failed == 0 and skipped == 0 else 1
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
