"""The main job: a small Django site under a write-then-read load.

Starts a leader and two followers, the first held 200 ms behind
(recovery_min_apply_delay), and runs simulated users against the site in
threads: each writes its own counter and reads it back a few times, and a
read that returns less than the user's last write is a stale read.  Runs
the same load with a naive router (any follower, no tokens) as the control,
then with the router under each policy, and prints what happened.

    /usr/bin/python3 python/tests/load.py    # as an unprivileged user
"""
import json
import os
import random
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

from cluster import Cluster  # noqa: E402

USERS = int(os.environ.get("LOAD_USERS", 8))
ROUNDS = int(os.environ.get("LOAD_ROUNDS", 25))
READS = 3
LAG = "200ms"


def run(label, naive=False, **policy):
    from django.conf import settings
    from django.db import connections
    from django.test import Client, override_settings

    import readyourwrites
    from readyourwrites.conf import reset_config
    from readyourwrites.state import state

    conf = dict(settings.READYOURWRITES, **policy)
    with override_settings(READYOURWRITES=conf):
        reset_config()
        state.reset()
        totals = {"reads": 0, "stale": 0, "writes": 0, "by_db": {}, "errors": []}
        lock = threading.Lock()
        followers = conf["FOLLOWERS"]

        def user(n):
            try:
                user_rounds(n)
            except BaseException as e:  # a failed user fails the run
                with lock:
                    totals["errors"].append("user %d: %r" % (n, e))
                raise

        def user_rounds(n):
            client = Client()
            pk = 100000 + n
            for value in range(1, ROUNDS + 1):
                r = client.post("/items/%d/" % pk, data=json.dumps({"value": value}),
                                content_type="application/json")
                assert r.status_code == 200, r.content
                for _ in range(READS):
                    if naive:
                        got = client.get("/naive/%s/items/%d/" % (random.choice(followers), pk)).json()
                    else:
                        got = client.get("/items/%d/" % pk).json()
                    with lock:
                        totals["reads"] += 1
                        totals["by_db"][got["db"]] = totals["by_db"].get(got["db"], 0) + 1
                        if got["value"] < value:
                            totals["stale"] += 1
                with lock:
                    totals["writes"] += 1
            connections.close_all()

        started = time.monotonic()
        threads = [threading.Thread(target=user, args=(n,)) for n in range(USERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        counts = readyourwrites.routing_stats()["counts"]
    reset_config()
    return label, totals, counts, elapsed


def main():
    cluster = Cluster(followers=2, base_port=5470)
    try:
        from run_tests import start_site

        with open(os.path.join(cluster.followers[0].datadir, "postgresql.conf"), "a") as f:
            f.write("recovery_min_apply_delay = '%s'\n" % LAG)
        cluster.followers[0].stop()
        cluster.followers[0].start()
        start_site(cluster)
        from shop.models import Item
        from readyourwrites import use_leader

        with use_leader():
            for n in range(USERS):
                Item.objects.update_or_create(pk=100000 + n, defaults={"value": 0})
        for f in cluster.followers:
            cluster.caught_up(f)

        print("%d simulated users, each %d rounds of one write then %d reads; "
              "replica1 replays %s behind (recovery_min_apply_delay), replica2 streams normally"
              % (USERS, ROUNDS, READS, LAG))
        results = [
            run("naive (any follower)", naive=True),
            run("router, POLICY leader", POLICY="leader"),
            run("router, POLICY wait 20 ms", POLICY="wait", WAIT_MS=20),
            # every wait misses: only the follower held 200 ms behind
            run("wait 20 ms, replica1 only", POLICY="wait", WAIT_MS=20, FOLLOWERS=["replica1"]),
        ]
        print()
        print("%-28s %6s %8s %8s %8s %8s %6s %7s %9s %6s %9s %9s" % (
            "run", "reads", "leader", "replica1", "replica2", "checks", "waits", "waited+", "fallbacks",
            "stale", "extra/rd", "follower%"))
        for label, totals, counts, elapsed in results:
            by = totals["by_db"]
            fallbacks = counts.get("fallback_leader", 0) + counts.get("fallback_no_follower", 0)
            routed = sum(v for k, v in counts.items() if k.startswith("reads:"))
            if any(k in counts for k in ("extra_round_trips", "waits_deferred")):
                extra = counts.get("extra_round_trips", 0)
            else:  # a router from before the count: every question was one
                extra = counts.get("checks", 0) + counts.get("waits", 0) + counts.get("lag_probes", 0)
            on_followers = sum(v for k, v in by.items() if k != "default")
            print("%-28s %6d %8d %8d %8d %8d %6d %7d %9d %6d %9.3f %8.1f%%" % (
                label, totals["reads"], by.get("default", 0), by.get("replica1", 0), by.get("replica2", 0),
                counts.get("checks", 0), counts.get("waits", 0), counts.get("waits_reached", 0),
                fallbacks, totals["stale"], extra / max(routed, 1),
                100.0 * on_followers / max(totals["reads"], 1)))
        if os.environ.get("LOAD_COUNTS"):
            for label, totals, counts, elapsed in results:
                print(label, json.dumps(counts, sort_keys=True))
        print()
        print("checks: reads that asked a follower once; waits: reads that waited on one (waited+: it "
              "caught up in time); fallbacks: reads sent to the leader; stale: a read that missed the "
              "user's own write (detected by value); extra/rd: round trips the router added per read it "
              "routed (the session's reads included); follower%: the page's reads served by a follower "
              "(ideal: 100%, every read can be served by the streaming follower)")
        router_stale = sum(r[1]["stale"] for r in results[1:])
        print("stale reads with the router: %d" % router_stale)
        # every simulated user must have finished every round
        incomplete = 0
        for label, totals, counts, elapsed in results:
            for e in totals["errors"]:
                print("error in %s: %s" % (label, e))
            if totals["reads"] != USERS * ROUNDS * READS or totals["errors"]:
                incomplete += 1
                print("incomplete run %s: %d of %d reads" % (label, totals["reads"], USERS * ROUNDS * READS))
        return 0 if router_stale == 0 and incomplete == 0 else 1
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
