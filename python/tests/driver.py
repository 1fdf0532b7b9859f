"""Which driver Django's postgresql backend uses in a test process.

Every test environment has both psycopg2 and psycopg 3 installed (the router
reads ParameterStatus from either, and one test compares them), and Django
takes psycopg 3 when it can import it.  RYW_DRIVER=psycopg2 makes Django's
backend bind psycopg2 instead: psycopg is hidden while the backend modules
are first imported, then visible again to whoever imports it directly.
Call select() before django.setup(); check() after it says what Django
really uses (and fails the run if it is not what was asked for).
"""
import os
import sys

_BACKEND_MODULES = (
    "django.db.backends.postgresql.psycopg_any",  # Django 4.2+
    "django.db.backends.postgresql.base",
)


def select() -> None:
    if os.environ.get("RYW_DRIVER") != "psycopg2":
        return
    import importlib

    saved = sys.modules.get("psycopg")
    sys.modules["psycopg"] = None  # "import psycopg" raises ImportError
    try:
        for name in _BACKEND_MODULES:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as e:
                if e.name != name:  # a missing module other than the optional one
                    raise
    finally:
        if saved is None:
            del sys.modules["psycopg"]
        else:
            sys.modules["psycopg"] = saved


def check() -> str:
    """Describe the driver Django uses; raise if it is not RYW_DRIVER."""
    import django
    from django.db import connection

    db = connection.Database
    name = db.__name__.split(".")[0]
    want = os.environ.get("RYW_DRIVER")
    if want and want != name:
        raise RuntimeError("RYW_DRIVER=%s but Django's backend uses %s" % (want, name))
    opts = connection.settings_dict.get("OPTIONS", {})
    return "Django %s, %s %s, server_side_binding %s, pool %s" % (
        django.get_version(), name, getattr(db, "__version__", "?").split(" ")[0],
        "on" if opts.get("server_side_binding") else "off", "on" if opts.get("pool") else "off")
