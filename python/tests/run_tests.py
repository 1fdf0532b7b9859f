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

import driver  # noqa: E402
from cluster import Cluster  # noqa: E402

driver.select()  # before Django loads its backend (RYW_DRIVER)


def start_site(cluster):
    cluster.leader.sql("CREATE DATABASE app")
    cluster.leader.sql("CREATE EXTENSION distributed", dbname="app")
    os.environ["RYW_SOCKET"] = cluster.dir
    os.environ["RYW_PORTS"] = ",".join(str(n.port) for n in [cluster.leader] + cluster.followers)
    os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    import django
    from django.core.management import call_command

    django.setup()
    print("environment: Python %s, %s" % (sys.version.split()[0], driver.check()), flush=True)
    call_command("migrate", database="default", verbosity=0)
    for f in cluster.followers:
        cluster.caught_up(f)


def run_suite(module, only=None):
    loader = unittest.defaultTestLoader
    suite = loader.loadTestsFromName(only, module) if only else loader.loadTestsFromModule(module)
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    # A skip (a test for a driver or Django line this environment lacks,
    # which another cell of the matrix runs) is neither a pass nor a failure.
    skipped = len(result.skipped)
    if skipped:
        print("skipped here: %d (%s)" % (skipped, "; ".join(sorted({r for _, r in result.skipped}))))
    return result.testsRun - failed - skipped, failed


def pooler_main() -> int:
    """The pooler suite, in its own process: Django set up behind pgbouncer."""
    from cluster import PgBouncer

    ports = [int(p) for p in os.environ["RYW_PORTS"].split(",")]
    bdir, bport = os.environ["RYW_PGBOUNCER"].rsplit(":", 1)
    os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    import django

    django.setup()
    print("environment: Python %s, %s" % (sys.version.split()[0], driver.check()), flush=True)
    import test_pooler

    import base

    test_pooler.CLUSTER = base.ClusterTestCase.cluster = Cluster.attach(os.environ["RYW_SOCKET"], ports)
    test_pooler.BOUNCER = PgBouncer.attach(bdir, int(bport))
    passed, failed = run_suite(test_pooler, os.environ.get("ONLY_POOLER"))
    print("pooler: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


def main() -> int:
    if "--pooler" in sys.argv:
        return pooler_main()
    import re
    import subprocess

    from cluster import PgBouncer

    cluster = Cluster(followers=2)
    bouncer = None
    try:
        start_site(cluster)
        import test_clusters
        import test_holes
        import test_router
        import test_zero_rtt

        import base

        test_router.CLUSTER = test_zero_rtt.CLUSTER = base.ClusterTestCase.cluster = cluster
        test_clusters.CLUSTER = cluster
        only = os.environ.get("ONLY")  # e.g. ONLY=Policies.test_raise, ONLY=test_holes.Hole4Threads
        passed, failed = 0, 0
        if not os.environ.get("ONLY_POOLER"):
            for module in (test_router, test_holes, test_zero_rtt, test_clusters):
                name = only
                if only and only.split(".")[0] in ("test_router", "test_holes", "test_zero_rtt", "test_clusters"):
                    if only.split(".")[0] != module.__name__:
                        continue
                    name = only.split(".", 1)[1] if "." in only else None
                elif only and module is not test_router:
                    continue
                p, f = run_suite(module, name)
                passed, failed = passed + p, failed + f

        if not only:
            # the same site behind pgbouncer in transaction mode, in a
            # process of its own (Django reads DATABASES once)
            bouncer = PgBouncer(cluster, pool_sizes={"app_follower1": 1})
            env = dict(os.environ, RYW_PGBOUNCER="%s:%d" % (bouncer.dir, bouncer.port))
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--pooler"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            sys.stdout.write(out.stdout)
            m = re.search(r"^pooler: (\d+) passed, (\d+) failed", out.stdout, re.M)
            if m:
                passed, failed = passed + int(m.group(1)), failed + int(m.group(2))
            else:
                failed += 1
        print("django: %d passed, %d failed" % (passed, failed))
        return 0 if failed == 0 else 1
    finally:
        if bouncer is not None:
            bouncer.stop()
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
