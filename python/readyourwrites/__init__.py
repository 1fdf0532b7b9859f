"""Read-your-writes routing for Django on PostgreSQL followers.

    INSTALLED_APPS = [..., "readyourwrites"]          # system checks, status command
    DATABASE_ROUTERS = ["readyourwrites.ReadYourWritesRouter"]
    MIDDLEWARE = ["readyourwrites.ReadYourWritesMiddleware", ...SessionMiddleware...]
    READYOURWRITES = {"LEADER": "default", "FOLLOWERS": ["replica"], "POLICY": "wait"}

Needs the distributed extension, preloaded, on the leader and followers.
"""
from .api import (acting_for, carry_context, current_token, current_tokens, record_under, use_follower,
                  use_leader)
from .context import hash_key
from .middleware import ReadYourWritesMiddleware
from .router import FollowerNotReady, ReadYourWritesRouter
from .state import state as _state
from .tokens import Token, parse_token

__all__ = [
    "ReadYourWritesRouter",
    "ReadYourWritesMiddleware",
    "FollowerNotReady",
    "acting_for",
    "use_leader",
    "use_follower",
    "carry_context",
    "current_token",
    "current_tokens",
    "record_under",
    "hash_key",
    "routing_stats",
    "Token",
    "parse_token",
]

__version__ = "0.3.0"


def routing_stats() -> dict:
    """This process's routing counts and what it knows of each follower."""
    return _state.snapshot()
