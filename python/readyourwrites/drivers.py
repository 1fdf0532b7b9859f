"""Everything that depends on the database driver, in one place.

psycopg2 and psycopg 3 differ in how they expose ParameterStatus values,
error codes and a broken connection; the router only calls these
functions.  The server pushes ParameterStatus with every reply that
changes a value, so reading one costs no round trip.
"""
from typing import Any, Optional

__all__ = ["parameter_status", "raw_connection", "raw_closed", "sqlstate", "connection_lost",
           "run_elsewhere", "WAIT_ANSWERS"]

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
