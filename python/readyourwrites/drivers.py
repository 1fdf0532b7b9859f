"""Everything that depends on the database driver, in one place.

psycopg2 and psycopg 3 differ in how they expose ParameterStatus values,
error codes and a broken connection; the router only calls these
functions.  The server pushes ParameterStatus with every reply that
changes a value, so reading one costs no round trip.
"""
from typing import Any, Optional

import threading

__all__ = ["parameter_status", "raw_connection", "raw_closed", "sqlstate", "connection_lost",
           "run_elsewhere", "WAIT_ANSWERS", "combined_form", "execute_after_wait", "wait_refused",
           "discard_connection", "renew_pool"]

# What CALL distributed.wait_for() reports, by SQLSTATE (design invariant 8).
# The one table to change when the extension's codes change.
WAIT_ANSWERS = {
    "57014": "timeout",
    "55U01": "unreachable",    # the token's timeline is not in this server's history
    "55U02": "promoted",       # the server left recovery while the wait slept
    "55U03": "not_in_recovery",
    "55U04": "unreachable",    # the timeline history file is missing or corrupt
    "55U05": "unreachable",    # a token before the start of its own timeline
}
SNAPSHOT_HELD = "25001"        # wait_for refuses inside a snapshot: use wait()
RECOVERY_CONFLICT = "40001"


def raw_connection(django_connection: Any) -> Any:
    """The DB-API connection under a Django connection, or None if closed."""
    return getattr(django_connection, "connection", None)


def parameter_status(raw: Any, name: str) -> Optional[str]:
    """The last value the server reported for a setting, or None."""
    if raw is None:
        return None
    get = getattr(raw, "get_parameter_status", None)  # psycopg2
    if get is not None:
        try:
            return get(name)
        except Exception:  # a closed connection raises InterfaceError
            return None
    info = getattr(raw, "info", None)  # psycopg 3
    if info is not None and hasattr(info, "parameter_status"):
        try:
            value = info.parameter_status(name)
        except Exception:
            return None
        if isinstance(value, bytes):
            value = value.decode()
        return value
    return None


def raw_closed(django_connection: Any) -> bool:
    """Does the driver say the connection is closed or broken?"""
    raw = raw_connection(django_connection)
    return raw is not None and bool(getattr(raw, "closed", False) or getattr(raw, "broken", False))


def _pool(django_connection: Any) -> Any:
    """Django's connection pool behind an alias (5.1+, psycopg 3,
    OPTIONS["pool"]), or None."""
    try:
        return getattr(django_connection, "pool", None)
    except Exception:  # pool options given to a driver without pools
        return None


def discard_connection(django_connection: Any) -> None:
    """Close a Django connection for good.  Closing one taken from Django's
    pool only hands it back to the pool, which lends it again (to this
    thread or another): a connection to a server that has since restarted
    would fail once more for each borrower.  Closed by the driver first, the
    pool drops it and opens another."""
    raw = raw_connection(django_connection)
    if raw is not None and _pool(django_connection) is not None:
        try:
            raw.close()
        except Exception:
            pass
    django_connection.close()


_renewed: "dict[int, float]" = {}  # id(pool) -> the failure it was renewed after
_renew_lock = threading.Lock()


def renew_pool(django_connection: Any, failed_at: float) -> None:
    """After a server was seen failing (at monotonic time failed_at), every
    connection Django's pool opened to it before may be dead: have the
    pool replace them, once per failure, rather than lend each to a read
    that fails and goes to the leader.  Idle ones are closed now; lent ones
    are dropped when they come back."""
    pool = _pool(django_connection) if failed_at >= 0 else None
    if pool is None:
        return
    with _renew_lock:
        if _renewed.get(id(pool), -1.0) >= failed_at:
            return
        _renewed[id(pool)] = failed_at
    try:
        drain = getattr(pool, "drain", None)  # psycopg_pool 3.2.2+
        if drain is not None:
            drain()
        else:
            pool.check()  # tests each idle connection, replaces the broken ones
    except Exception:
        pass  # a closed pool: the next borrow opens a new one


def sqlstate(error: BaseException) -> Optional[str]:
    """The server's SQLSTATE behind a Django database error, if any."""
    for e in (error, error.__cause__):
        code = getattr(e, "pgcode", None) or getattr(e, "sqlstate", None)
        if code:
            return code
    return None


def connection_lost(error: BaseException, django_connection: Any) -> bool:
    """Did the connection itself fail (rather than the query)?"""
    from django.db import DataError, IntegrityError, NotSupportedError, ProgrammingError

    if raw_closed(django_connection):
        return True
    code = sqlstate(error)
    if code is not None:
        # the server answered: only a connection exception or a shutdown
        # means the connection is gone (a cancelled query, 57014, does not)
        return code.startswith("08") or code in ("57P01", "57P02", "57P03")
    return not isinstance(error, (ProgrammingError, DataError, IntegrityError, NotSupportedError))


def run_elsewhere(target: Any, context: Any, sql: str, params: Any, many: bool) -> Any:
    """Run a statement that failed on one connection on another (the
    leader), through the same Django cursor wrapper, so that the caller
    fetches its rows as if nothing happened."""
    target.ensure_connection()
    wrapper = context["cursor"]
    with target.wrap_database_errors:
        wrapper.cursor = target.create_cursor()
        if many:
            return wrapper.cursor.executemany(sql, params)
        if params is None:
            return wrapper.cursor.execute(sql)
        return wrapper.cursor.execute(sql, params)


# -- the wait and the read in one round trip ------------------------------------

def combined_form(django_connection: Any, context: Any, many: bool) -> Optional[str]:
    """How this statement can be sent behind a CALL distributed.wait_for in
    one round trip: "text" (one simple-query message holding both
    statements: psycopg2, and psycopg 3's client-side binding cursor),
    "pipeline" (psycopg 3 with server-side binding: two statements, one
    Sync), or None where it cannot (executemany; a server-side cursor,
    whose DECLARE cannot follow a CALL in one message; a transaction, where
    the CALL would run inside the user's block)."""
    if many or django_connection.in_atomic_block or not django_connection.get_autocommit():
        return None
    wrapper = context.get("cursor")
    cursor = getattr(wrapper, "cursor", None)
    if cursor is None:
        return None
    module = type(cursor).__module__.split(".")[0]
    if module == "psycopg2":
        return None if getattr(cursor, "name", None) else "text"  # a named cursor is server-side
    try:
        import psycopg
    except ImportError:
        return None
    if isinstance(cursor, psycopg.ServerCursor):
        return None
    if isinstance(cursor, psycopg.ClientCursor):
        return "text"
    if isinstance(cursor, psycopg.Cursor) and psycopg.Pipeline.is_supported():  # libpq 14+
        return "pipeline"
    return None


def _wait_call(token: str, wait_ms: int) -> str:
    # The token comes from parse_token (digits, hex and separators only)
    # and the timeout is an int: written as literals, the CALL leaves the
    # read's own parameters (a list, a dict, or none) untouched.
    if not all(c in "0123456789ABCDEFabcdef:/" for c in token):
        raise ValueError("not a token: %r" % token)
    return "CALL distributed.wait_for('%s', %d)" % (token, int(wait_ms))


def execute_after_wait(form: str, execute: Any, context: Any, token: str, wait_ms: int,
                       sql: str, params: Any) -> Any:
    """Run CALL distributed.wait_for(token, wait_ms) and then the read, in
    one round trip, through the rest of Django's execute wrappers.  The
    procedure sleeps holding no snapshot; the read takes its own after.
    A failed wait raises (and the read does not run)."""
    call = _wait_call(token, wait_ms)
    if form == "text":
        # the CALL's literals hold no %, so the read's SQL keeps its own
        # parameter style (with or without parameters) unchanged
        result = execute(call + "; " + sql, params, False, context)
        cursor = context["cursor"].cursor
        if not type(cursor).__module__.startswith("psycopg2"):
            # psycopg 3 stands on the first statement's result (psycopg2 on
            # the last): step on to the read's
            with context["connection"].wrap_database_errors:
                cursor.nextset()
        return result
    conn = context["connection"]
    raw = raw_connection(conn)
    with conn.wrap_database_errors:
        with raw.pipeline():
            execute(call, None, False, context)
            result = execute(sql, params, False, context)
    return result


def wait_refused(error: BaseException) -> Optional[str]:
    """If the error is CALL distributed.wait_for's answer (a timeout, a
    promotion, a token this server cannot hold...), that answer
    ("timeout", ...); None for any other error, such as the read's own
    statement_timeout (57014 as well, but raised elsewhere in the server,
    hence the check of the raising function for that code alone)."""
    code = sqlstate(error)
    if code not in WAIT_ANSWERS:
        return None
    if code.startswith("55U"):
        return WAIT_ANSWERS[code]  # the extension's own codes: raised by the wait or the token check
    for e in (error, error.__cause__):
        diag = getattr(e, "diag", None)
        if diag is None:
            continue
        where = getattr(diag, "source_function", None)
        if where:
            if isinstance(where, bytes):
                where = where.decode()
            return WAIT_ANSWERS[code] if where == "DistRaiseWaitResult" else None
    return WAIT_ANSWERS[code] if "waiting for replay" in str(error) else None
