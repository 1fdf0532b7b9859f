"""A real leader and followers with the distributed extension, for tests.

Started as the current (unprivileged) user in a scratch directory, on Unix
sockets only, and stopped by stop().  Lag is made by pausing replay or by
recovery_min_apply_delay, never by hoping.
"""
import os
import shutil
import subprocess
import tempfile
import time
from typing import Dict, List, Optional

import psycopg2

BIN = os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin")


def _run(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Node:
    def __init__(self, name: str, datadir: str, sockdir: str, port: int):
        self.name, self.datadir, self.sockdir, self.port = name, datadir, sockdir, port

    def connect(self, dbname: str = "postgres"):
        conn = psycopg2.connect(host=self.sockdir, port=self.port, dbname=dbname, user=os.environ.get("PGUSER", _whoami()))
        conn.autocommit = True
        return conn

    def sql(self, query: str, args=None, dbname: str = "postgres"):
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(query, args)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    def start(self) -> None:
        _run(os.path.join(BIN, "pg_ctl"), "-D", self.datadir, "-l", self.datadir + ".log", "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        subprocess.run([os.path.join(BIN, "pg_ctl"), "-D", self.datadir, "-m", mode, "-w", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    # -- replay control (followers) ------------------------------------------
    def pause(self) -> None:
        self.sql("SELECT pg_wal_replay_pause()")
        self.poll("SELECT pg_get_wal_replay_pause_state() = 'paused'")

    def resume(self) -> None:
        self.sql("SELECT pg_wal_replay_resume()")

    def poll(self, query: str, timeout: float = 60.0, args=None, dbname: str = "postgres") -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.sql(query, args, dbname)[0][0]:
                return
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for: %s on %s" % (query, self.name))
            time.sleep(0.02)


def _whoami() -> str:
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name


class Cluster:
    def __init__(self, followers: int = 2, base_port: int = 5460, conf: Optional[Dict[str, str]] = None):
        self.dir = tempfile.mkdtemp(prefix="distributed-django.")
        self.leader = Node("leader", os.path.join(self.dir, "leader"), self.dir, base_port)
        _run(os.path.join(BIN, "initdb"), "-D", self.leader.datadir, "-A", "trust", "-U", _whoami())
        settings = {
            "listen_addresses": "''",
            "unix_socket_directories": "'%s'" % self.dir,
            "port": str(base_port),
            "shared_preload_libraries": "'distributed'",
            "wal_level": "replica",
            "max_connections": "200",
            "fsync": "off",
            "log_min_messages": "warning",
        }
        settings.update(conf or {})
        with open(os.path.join(self.leader.datadir, "postgresql.conf"), "a") as f:
            for k, v in settings.items():
                f.write("%s = %s\n" % (k, v))
        self.leader.start()
        self.followers: List[Node] = []
        for i in range(followers):
            name = "follower%d" % (i + 1)
            node = Node(name, os.path.join(self.dir, name), self.dir, base_port + 1 + i)
            _run(os.path.join(BIN, "pg_basebackup"), "-h", self.dir, "-p", str(base_port),
                 "-U", _whoami(), "-D", node.datadir, "-R")
            with open(os.path.join(node.datadir, "postgresql.conf"), "a") as f:
                f.write("port = %d\n" % node.port)
            node.start()
            self.followers.append(node)

    def caught_up(self, follower: Node) -> None:
        """Wait until follower has replayed everything the leader wrote so far."""
        lsn = self.leader.sql("SELECT pg_current_wal_insert_lsn()")[0][0]
        follower.poll("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", args=(lsn,))

    def stop(self) -> None:
        for node in self.followers + [self.leader]:
            node.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
