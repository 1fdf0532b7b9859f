"""Per-request and per-task routing context, in contextvars.

A context knows whose writes the current code must see (the session key)
and the highest token it must see (from the token store, from explicit
arguments, and from its own writes).  Async views and tasks get their own
context; sync code run through sync_to_async shares its caller's.
"""
import contextlib
import functools
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, Optional

from django.utils.crypto import salted_hmac

from .tokens import Token

__all__ = ["RoutingContext", "current", "acting_for", "use_leader", "hash_key"]

_SALT = "readyourwrites.session-key"
_hash_cache: Dict[str, str] = {}


def hash_key(raw: str) -> str:
    """The keyed hash sent to the server in place of a raw session key.

    HMAC-SHA256 under a key derived from SECRET_KEY: the server and its
    monitoring views never see a raw key, and the hash is useless without
    the secret (design invariant 7).
    """
    hashed = _hash_cache.get(raw)
    if hashed is None:
        hashed = salted_hmac(_SALT, raw, algorithm="sha256").hexdigest()
        if len(_hash_cache) > 10000:
            _hash_cache.clear()
        _hash_cache[raw] = hashed
    return hashed


@dataclass
class RoutingContext:
    request: Any = None
    key_function: Optional[Callable[[Any], Optional[str]]] = None
    fixed_key: Optional[str] = None  # already hashed
    token: Optional[Token] = None  # at least this must be visible
    looked_up: Dict[str, Optional[Token]] = field(default_factory=dict)
    wrote: bool = False
    unrecorded: set = field(default_factory=set)  # keys whose writes the leader could not record
    leader_depth: int = 0

    def key(self) -> Optional[str]:
        """The hashed session key, computed when asked: a login changes it."""
        if self.fixed_key is not None:
            return self.fixed_key
        if self.key_function is None or self.request is None:
            return None
        raw = self.key_function(self.request)
        return hash_key(str(raw)) if raw else None

    def raise_token(self, token: Optional[Token]) -> None:
        if token is not None and (self.token is None or token > self.token):
            self.token = token


_current: ContextVar[Optional[RoutingContext]] = ContextVar("readyourwrites_context", default=None)


def current() -> Optional[RoutingContext]:
    return _current.get()


@contextlib.contextmanager
def _activated(ctx: RoutingContext) -> Iterator[RoutingContext]:
    reset = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(reset)


class acting_for(contextlib.ContextDecorator):
    """Route the block's reads for one user: a background job, a command, a task.

        with acting_for(user_key):             # raw key: hashed before sending
            ...
        @acting_for(session_key, token=token)  # also demand a known token
        def task(...): ...

    `hashed=True` passes a key already hashed with hash_key().
    """

    def __init__(self, key: Optional[str] = None, *, token: Any = None, hashed: bool = False):
        from .tokens import parse_token

        self.key = key if (hashed or not key) else hash_key(key)
        self.token = parse_token(token) if isinstance(token, str) else token
        self._stack: list = []

    def __enter__(self) -> RoutingContext:
        ctx = RoutingContext(fixed_key=self.key, token=self.token)
        self._stack.append(_current.set(ctx))
        return ctx

    def __exit__(self, *exc: Any) -> None:
        from .router import finish_context

        try:
            finish_context(_current.get())
        finally:
            _current.reset(self._stack.pop())

    def _recreate_cm(self) -> "acting_for":
        # a decorated function may run in several threads at once
        return acting_for(self.key, token=self.token, hashed=True)


class use_leader(contextlib.ContextDecorator):
    """Send every read in the block to the leader."""

    def __enter__(self) -> None:
        ctx = _current.get()
        if ctx is None:
            ctx = RoutingContext()
            self._reset = _current.set(ctx)
        else:
            self._reset = None
        ctx.leader_depth += 1
        self._ctx = ctx

    def __exit__(self, *exc: Any) -> None:
        self._ctx.leader_depth -= 1
        if self._reset is not None:
            _current.reset(self._reset)

    def _recreate_cm(self) -> "use_leader":
        return use_leader()


def request_context(request: Any, key_function: Callable[[Any], Optional[str]]) -> RoutingContext:
    return RoutingContext(request=request, key_function=key_function)


activate = _activated
