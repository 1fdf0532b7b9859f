"""Settings of the small site the router is tested and demonstrated on.

The runner (run_tests.py, load.py) exports RYW_SOCKET and RYW_PORTS
("leader,follower1,follower2") before Django starts.
"""
import os

SECRET_KEY = "test-secret-key-not-for-production"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "testproject.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "readyourwrites",
    "shop",
]

MIDDLEWARE = [
    "readyourwrites.ReadYourWritesMiddleware",  # before SessionMiddleware
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

_socket = os.environ.get("RYW_SOCKET", "/tmp")
_ports = os.environ.get("RYW_PORTS", "5460,5461,5462").split(",")


def _db(port):
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "app",
        "HOST": _socket,
        "PORT": port,
        "USER": os.environ.get("PGUSER", "postgres"),
        "CONN_MAX_AGE": 60,
    }


DATABASES = {"default": _db(_ports[0])}
for _i, _port in enumerate(_ports[1:], start=1):
    DATABASES["replica%d" % _i] = _db(_port)

# The matrix cell (test/check.sh): which driver (RYW_DRIVER, chosen before
# Django loads its backend, see tests/driver.py) and, with psycopg 3,
# server-side binding (RYW_SERVER_SIDE_BINDING=1) and Django 5.1+'s
# connection pool (RYW_POOL=1; a pool cannot be combined with persistent
# connections, so CONN_MAX_AGE is 0 there).
_ssb = os.environ.get("RYW_SERVER_SIDE_BINDING") == "1"
_pool = os.environ.get("RYW_POOL") == "1"
for _d in DATABASES.values():
    _d["OPTIONS"] = {}
    if _ssb:
        _d["OPTIONS"]["server_side_binding"] = True
    if _pool:
        # Django's test client keeps a thread's connections across requests
        # (it does not close them at request end), so the load's 8 user
        # threads hold 8 per alias at once
        _d["OPTIONS"]["pool"] = {"min_size": 1, "max_size": 16, "timeout": 30}
        _d["CONN_MAX_AGE"] = 0

# Behind pgbouncer in transaction mode (RYW_PGBOUNCER="socketdir:port")
_bouncer = os.environ.get("RYW_PGBOUNCER")
if _bouncer:
    _dir, _bport = _bouncer.rsplit(":", 1)
    for _alias, _name in zip(DATABASES, ["app_leader"] + ["app_follower%d" % i for i in range(1, len(_ports))]):
        DATABASES[_alias].update(HOST=_dir, PORT=_bport, NAME=_name, DISABLE_SERVER_SIDE_CURSORS=True)
        if _ssb:
            # psycopg 3 prepares a statement by name from its fifth run;
            # named prepared statements do not survive transaction pooling
            DATABASES[_alias]["OPTIONS"]["prepare_threshold"] = None

DATABASE_ROUTERS = ["readyourwrites.ReadYourWritesRouter"]
READYOURWRITES = {
    "LEADER": "default",
    "FOLLOWERS": [a for a in DATABASES if a != "default"],
    "POLICY": "leader",
    "SESSION_KEY": "session",
    "COOLDOWN_SECONDS": 2,
    "POOLER": "transaction" if _bouncer else None,
}
# Django's task framework (6.0+) with a backend whose worker is a process
# of its own: django-tasks-db (test/lib/matrix.sh installs it for 6.x).  Its
# queue is read and locked by the worker on the leader, through an alias of
# its own ("tasks": the same database), as a site that keeps its queue apart
# does; the router leaves the queue's app alone (APPS names the others).
import importlib.util  # noqa: E402

import django  # noqa: E402

if django.VERSION >= (6, 0) and importlib.util.find_spec("django_tasks_db"):
    INSTALLED_APPS.append("django_tasks_db")
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    DATABASES["tasks"] = dict(DATABASES["default"], OPTIONS=dict(DATABASES["default"]["OPTIONS"]))
    DATABASE_ROUTERS.insert(0, "testproject.routers.TaskQueueRouter")
    READYOURWRITES["APPS"] = ["auth", "contenttypes", "sessions", "readyourwrites", "shop"]

LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"readyourwrites": {"handlers": ["console"], "level": os.environ.get("RYW_LOG", "ERROR")}},
}
