"""manage.py readyourwrites_status: each database's role, position, lag and
the extension's counters.

A follower's lag is how far its replay is behind the leader's position
(bytes) and, in time, 0 when it has replayed all it received and the
leader is no further; "unknown" when it cannot be told.  The routing
counters of a site live in its web processes (readyourwrites.routing_stats()),
not in this command's process: they are not shown."""
import json

from django.core.management.base import BaseCommand
from django.db import connections

from readyourwrites.conf import get_config



class Command(BaseCommand):
    help = "Show each database's role, replay position, lag and the distributed extension's counters."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args, **options):
        config = get_config()
        report = {"databases": {}}
        leader_pos = {}
        for cluster, alias in [(c, a) for c in config.clusters for a in c.aliases()]:
            entry = {"configured_as": "leader" if alias == cluster.leader else "follower"}
            if len(config.clusters) > 1:
                entry["cluster"] = cluster.name
            try:
                connections[alias].close()  # ask over a fresh connection
                with connections[alias].cursor() as cur:
                    # time lag only while replay is behind what was received:
                    # an idle, caught-up follower has none, however old its
                    # last replayed transaction
                    cur.execute("SELECT distributed.replay_position(), pg_is_in_recovery(), "
                                "CASE WHEN NOT pg_is_in_recovery() THEN NULL "
                                "WHEN pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn() THEN 0 "
                                "ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END")
                    pos, in_recovery, lag_s = cur.fetchone()
                    # every column the installed version has (0.2 added
                    # waits_stale_snapshot), in the view's order
                    cur.execute("SELECT * FROM distributed.stats")
                    cols = [c[0] for c in cur.description]
                    entry["stats"] = dict(zip(cols, cur.fetchone()))
                    if entry["stats"].get("wait_time_ms") is not None:
                        entry["stats"]["wait_time_ms"] = round(entry["stats"]["wait_time_ms"], 1)
                entry.update(position=pos, in_recovery=in_recovery,
                             replay_lag_seconds=None if lag_s is None else float(lag_s))
                if alias == cluster.leader:
                    leader_pos[cluster.name] = pos
                    # without it a browser's first write (cookie store), a
                    # key changed without a write, record_under() and writes
                    # behind a transaction pooler are not recorded
                    with connections[alias].cursor() as cur:
                        cur.execute("SELECT current_user, has_function_privilege("
                                    "'distributed.record(text, text)', 'EXECUTE')")
                        entry["user"], entry["can_record"] = cur.fetchone()
            except Exception as e:
                entry["error"] = str(e).strip().splitlines()[0]
            report["databases"][alias] = entry
        for cluster in config.clusters:
            if not leader_pos.get(cluster.name):
                continue
            for alias in cluster.followers:
                entry = report["databases"][alias]
                if entry.get("position"):
                    try:
                        with connections[cluster.leader].cursor() as cur:
                            cur.execute("SELECT pg_wal_lsn_diff(distributed.token_lsn(%s), distributed.token_lsn(%s))",
                                        [leader_pos[cluster.name], entry["position"]])
                            entry["bytes_behind_leader"] = int(cur.fetchone()[0])
                    except Exception:
                        pass  # another timeline: unknown
        if options["json"]:
            self.stdout.write(json.dumps(report, default=str, indent=2))
            return
        for alias, e in report["databases"].items():
            if "error" in e:
                self.stdout.write("%-12s %-8s ERROR %s" % (alias, e["configured_as"], e["error"]))
                continue
            lag = e.get("replay_lag_seconds")
            behind = e.get("bytes_behind_leader")
            if e["configured_as"] == "leader":
                self.stdout.write("%-12s %-8s role=%s position=%s" % (
                    alias, e["configured_as"], e["stats"]["role"], e["position"]))
                if not e.get("can_record", True):
                    self.stdout.write("             record() not granted to %s: GRANT EXECUTE ON FUNCTION "
                                      "distributed.record(text, text) TO %s;" % (e["user"], e["user"]))
            else:
                self.stdout.write("%-12s %-8s role=%s position=%s lag=%s behind=%s" % (
                    alias, e["configured_as"], e["stats"]["role"], e["position"],
                    "unknown" if lag is None else "%.3fs" % lag,
                    "unknown" if behind is None else "%d bytes" % behind))
            self.stdout.write("             " + ", ".join(
                "%s=%s" % (k, v) for k, v in e["stats"].items() if k != "role"))
        self.stdout.write("(routing counters live in the site's processes: readyourwrites.routing_stats())")
