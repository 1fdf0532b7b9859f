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

    @classmethod
    def attach(cls, sockdir: str, ports: List[int]) -> "Cluster":
        """The cluster another process started, to pause and query it."""
        self = cls.__new__(cls)
        self.dir = sockdir
        self.leader = Node("leader", os.path.join(sockdir, "leader"), sockdir, ports[0])
        self.followers = [Node("follower%d" % i, os.path.join(sockdir, "follower%d" % i), sockdir, p)
                          for i, p in enumerate(ports[1:], start=1)]
        return self

    def caught_up(self, follower: Node) -> None:
        """Wait until follower has replayed everything the leader wrote so far."""
        lsn = self.leader.sql("SELECT pg_current_wal_insert_lsn()")[0][0]
        follower.poll("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", args=(lsn,))

    def stop(self) -> None:
        for node in self.followers + [self.leader]:
            node.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class PgBouncer:
    """Debian's pgbouncer in transaction mode in front of every node.

    Databases: app_leader, app_follower1, ... (each the node's "app").
    """

    @classmethod
    def attach(cls, directory: str, port: int) -> "PgBouncer":
        self = cls.__new__(cls)
        self.dir, self.port = directory, port
        return self

    def __init__(self, cluster: Cluster, port: int = 6490, pool_size: int = 2,
                 pool_sizes: Optional[Dict[str, int]] = None):
        self.dir = os.path.join(cluster.dir, "pgbouncer")
        os.makedirs(self.dir, exist_ok=True)
        self.port = port
        user = _whoami()
        lines = ["[databases]"]
        for node in [cluster.leader] + cluster.followers:
            name = "app_" + node.name
            extra = ""
            if pool_sizes and name in pool_sizes:
                extra = " pool_size=%d" % pool_sizes[name]
            lines.append("%s = host=%s port=%d dbname=app%s" % (name, node.sockdir, node.port, extra))
        lines += [
            "[pgbouncer]",
            "listen_addr =",
            "unix_socket_dir = %s" % self.dir,
            "listen_port = %d" % port,
            "auth_type = trust",
            "auth_file = %s" % os.path.join(self.dir, "users.txt"),
            "admin_users = %s" % user,
            "pool_mode = transaction",
            "default_pool_size = %d" % pool_size,
            "max_client_conn = 200",
            "ignore_startup_parameters = extra_float_digits,options",
            "logfile = %s" % os.path.join(self.dir, "pgbouncer.log"),
            "pidfile = %s" % os.path.join(self.dir, "pgbouncer.pid"),
        ]
        with open(os.path.join(self.dir, "pgbouncer.ini"), "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(self.dir, "users.txt"), "w") as f:
            f.write('"%s" ""\n' % user)
        subprocess.run(["pgbouncer", "-d", os.path.join(self.dir, "pgbouncer.ini")], check=True)
        deadline = time.monotonic() + 10
        while not os.path.exists(os.path.join(self.dir, ".s.PGSQL.%d" % port)):
            if time.monotonic() > deadline:
                raise RuntimeError("pgbouncer did not start")
            time.sleep(0.02)

    def connect(self, dbname: str):
        conn = psycopg2.connect(host=self.dir, port=self.port, dbname=dbname, user=_whoami())
        conn.autocommit = True
        return conn

    def pools(self) -> Dict[str, dict]:
        """SHOW POOLS from the admin console, by database."""
        conn = self.connect("pgbouncer")
        try:
            cur = conn.cursor()
            cur.execute("SHOW POOLS")
            cols = [d[0] for d in cur.description]
            return {row[0]: dict(zip(cols, row)) for row in cur.fetchall()}
        finally:
            conn.close()

    def stop(self) -> None:
        try:
            with open(os.path.join(self.dir, "pgbouncer.pid")) as f:
                os.kill(int(f.read().strip()), 15)
        except (OSError, ValueError):
            pass
