"""Per-request and per-task routing context, in contextvars.

A context knows whose writes the current code must see (the session key)
and the highest token it must see (from the token store, from explicit
arguments, and from its own writes).  Async views and tasks get their own
context; sync code run through sync_to_async shares its caller's.  A
context opened inside another inherits what the outer one must see, and
hands its own writes back to it when it ends.
"""
import contextlib
import inspect
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, Optional, Set

from django.utils.crypto import salted_hmac

from .tokens import Token, parse_token

__all__ = ["RoutingContext", "current", "acting_for", "use_leader", "hash_key"]

_SALT = "readyourwrites.session-key"
_hash_cache: Dict[str, str] = {}


def hash_key(raw: str) -> str:
    """The keyed hash sent to the server in place of a raw session key.

    HMAC-SHA256 under a key derived from READYOURWRITES["KEY_SECRET"]
    (default: SECRET_KEY): the server and its monitoring views never see a
    raw key, and the hash is useless without the secret (design invariant
    7).  Give KEY_SECRET its own value if SECRET_KEY may be rotated: a new
    secret makes every key new, and new keys answer only the floor.
    """
    hashed = _hash_cache.get(raw)
    if hashed is None:
        from .conf import get_config

        hashed = salted_hmac(_SALT, raw, secret=get_config().key_secret, algorithm="sha256").hexdigest()
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
    unrecorded: Set[str] = field(default_factory=set)  # keys the leader could not record
    keys_used: Set[str] = field(default_factory=set)  # keys written or looked up
    baseline: Optional[str] = None  # the leader connection's last commit at the start
    leader_depth: int = 0
    _in_key: bool = False

    def key(self) -> Optional[str]:
        """The hashed session key, computed when asked: a login changes it."""
        if self.fixed_key is not None:
            return self.fixed_key
        if self.key_function is None or self.request is None or self._in_key:
            return None  # re-entered: resolving the key itself read the database
        self._in_key = True
        try:
            raw = self.key_function(self.request)
        finally:
            self._in_key = False
        return hash_key(str(raw)) if raw else None

    def raise_token(self, token: Optional[Token]) -> None:
        if token is not None and (self.token is None or token > self.token):
            self.token = token

    def inherit(self, parent: Optional["RoutingContext"]) -> "RoutingContext":
        if parent is not None:
            self.raise_token(parent.token)
            self.wrote = self.wrote or parent.wrote
            self.leader_depth += parent.leader_depth
            self.baseline = parent.baseline
        return self

    def hand_back(self, parent: Optional["RoutingContext"]) -> None:
        if parent is not None:
            parent.raise_token(self.token)
            parent.wrote = parent.wrote or self.wrote


_current: ContextVar[Optional[RoutingContext]] = ContextVar("readyourwrites_context", default=None)


def current() -> Optional[RoutingContext]:
    return _current.get()


@contextlib.contextmanager
def activate(ctx: RoutingContext) -> Iterator[RoutingContext]:
    reset = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(reset)


def leader_commit() -> Optional[str]:
    """The last commit token this thread's leader connection reported."""
    from django.db import connections

    from .conf import get_config
    from .drivers import parameter_status, raw_connection

    return parameter_status(raw_connection(connections[get_config().leader]), "distributed.last_commit") or None


class acting_for(contextlib.ContextDecorator):
    """Route the block's reads for one user: a background job, a command, a task.

        with acting_for(user_key):             # raw key: hashed before sending
            ...
        @acting_for(session_key, token=token)  # also demand a known token
        def task(...): ...

    `hashed=True` passes a key already hashed with hash_key().  As a
    decorator it takes plain functions only; in async code use `with`.
    """

    def __init__(self, key: Optional[str] = None, *, token: Any = None, hashed: bool = False):
        self.key = key if (hashed or not key) else hash_key(key)
        if isinstance(token, str):
            parsed = parse_token(token)
            if parsed is None:
                raise ValueError("not a token: %r (expected '<timeline>:<lsn>')" % token)
            token = parsed
        self.token = token
        self._stack: list = []

    def __call__(self, func: Callable) -> Callable:
        if (inspect.iscoroutinefunction(func) or inspect.isgeneratorfunction(func)
                or inspect.isasyncgenfunction(func)):
            raise TypeError("acting_for cannot decorate %s: its body runs after the decorator "
                            "returns; use 'with acting_for(...)' inside it" % getattr(func, "__name__", func))
        return super().__call__(func)

    def __enter__(self) -> RoutingContext:
        parent = _current.get()
        ctx = RoutingContext(fixed_key=self.key, token=self.token).inherit(parent)
        if parent is None:
            ctx.baseline = leader_commit()
        self._stack.append((_current.set(ctx), ctx, parent))
        return ctx

    def __exit__(self, *exc: Any) -> None:
        from .router import finish_context

        reset, ctx, parent = self._stack.pop()
        try:
            finish_context(ctx)
        finally:
            _current.reset(reset)
            ctx.hand_back(parent)

    def _recreate_cm(self) -> "acting_for":
        # a decorated function may run in several threads at once
        return acting_for(self.key, token=self.token, hashed=True)


class use_leader(contextlib.ContextDecorator):
    """Send every read in the block to the leader."""

    def __init__(self) -> None:
        self._stack: list = []

    def __enter__(self) -> None:
        ctx = _current.get()
        reset = None
        if ctx is None:
            ctx = RoutingContext(baseline=leader_commit())
            reset = _current.set(ctx)
        ctx.leader_depth += 1
        self._stack.append((ctx, reset))

    def __exit__(self, *exc: Any) -> None:
        ctx, reset = self._stack.pop()
        ctx.leader_depth -= 1
        if reset is not None:
            _current.reset(reset)

    def _recreate_cm(self) -> "use_leader":
        return use_leader()
