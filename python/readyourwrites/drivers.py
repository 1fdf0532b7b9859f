"""Reading ParameterStatus values from psycopg2 and psycopg 3 connections.

The server pushes these with every reply that changes them, so reading one
costs no round trip.
"""
from typing import Any, Optional

__all__ = ["parameter_status", "raw_connection"]


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
