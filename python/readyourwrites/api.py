"""What application code calls: contexts, scopes and the current token.

acting_for, use_leader and use_follower are context managers and
decorators.  They decorate plain and async functions (an async function's
scope is opened inside its coroutine); a generator is refused at
decoration time: its body would run after the scope closed.
"""
import contextvars
import functools
import inspect
from typing import Any, Callable, Dict, Optional

from .conf import get_config
from .context import RoutingContext, _current, activate, current, hash_key, hash_keys
from .leader import finish_context, needed_or_known, needed_token
from .tokens import Token, parse_token

__all__ = ["acting_for", "use_leader", "use_follower", "carry_context", "current_token", "current_tokens",
           "record_under"]


class _Scope:
    """Base: a re-entrant context manager that also decorates sync and
    async functions (each call gets a fresh instance)."""

    def _fresh(self) -> "_Scope":
        raise NotImplementedError

    def __call__(self, func: Callable) -> Callable:
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise TypeError("%s cannot decorate %s: a generator's body runs after the decorator "
                            "returns; use 'with' inside it" % (type(self).__name__, func.__name__))
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_inner(*args: Any, **kwargs: Any) -> Any:
                scope = self._fresh()
                scope.__enter__()
                try:
                    return await func(*args, **kwargs)
                finally:
                    await scope._aexit()
            return async_inner

        @functools.wraps(func)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return func(*args, **kwargs)
        return inner

    async def _aexit(self) -> None:
        self.__exit__(None, None, None)

    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(self, *exc: Any) -> None:
        await self._aexit()


class acting_for(_Scope):
    """Route the block's reads for one user: a background job, a command, a task.

        with acting_for(user_key):             # raw key: hashed before sending
            ...
        @acting_for(session_key, token=token)  # also demand a known token
        async def task(...): ...

    `token` is a Token or its text (the default cluster's: conf.Config.default), or a dict
    {cluster name: token} (what current_tokens() returns).
    `hashed=True` passes a key already hashed with hash_key().
    """

    def __init__(self, key: Optional[str] = None, *, token: Any = None, hashed: bool = False):
        self.keys = None if not key else ((key,) if hashed else hash_keys(key))
        if token is not None and not isinstance(token, dict):
            token = {None: token}
        self.token = {name: _token(t) for name, t in (token or {}).items() if t is not None}
        self._stack: list = []

    def _fresh(self) -> "acting_for":
        fresh = acting_for(token=self.token)
        fresh.keys = self.keys
        return fresh

    def __enter__(self) -> RoutingContext:
        parent = _current.get()
        ctx = RoutingContext(fixed_keys=self.keys or ()).inherit(parent)
        if self.token:
            default = get_config().default.name
            for name, token in self.token.items():
                ctx.demand(name or default, token)
        self._stack.append((_current.set(ctx), ctx, parent))
        return ctx

    def __exit__(self, *exc: Any) -> None:
        reset, ctx, parent = self._stack.pop()
        try:
            finish_context(ctx)
        finally:
            _current.reset(reset)
            ctx.hand_back(parent)

    async def _aexit(self) -> None:
        from asgiref.sync import sync_to_async

        reset, ctx, parent = self._stack.pop()
        try:
            await sync_to_async(finish_context, thread_sensitive=True)(ctx)
        finally:
            _current.reset(reset)
            ctx.hand_back(parent)


class _Depth(_Scope):
    attr = ""

    def __init__(self) -> None:
        self._stack: list = []

    def _fresh(self) -> "_Depth":
        return type(self)()

    def __enter__(self) -> None:
        ctx = _current.get()
        reset = None
        if ctx is None:
            ctx = RoutingContext()
            reset = _current.set(ctx)
        setattr(ctx, self.attr, getattr(ctx, self.attr) + 1)
        self._stack.append((ctx, reset))

    def __exit__(self, *exc: Any) -> None:
        ctx, reset = self._stack.pop()
        setattr(ctx, self.attr, getattr(ctx, self.attr) - 1)
        if reset is not None:
            _current.reset(reset)


class use_leader(_Depth):
    """Send every read in the block to the leader."""

    attr = "leader_depth"


class use_follower(_Depth):
    """Send the block's reads to any usable follower, without honouring
    tokens: for reads where staleness is acceptable (listings, counts,
    reports).  use_leader wins where both are open."""

    attr = "follower_depth"


def carry_context(func: Callable) -> Callable:
    """Run func, later and in another thread, inside the current context:

        pool.submit(carry_context(render_part), request, n)
        threading.Thread(target=carry_context(work)).start()

    The thread reads the request's writes and its own writes count as the
    request's.  (A thread has its own database connections; close them
    when it ends, e.g. django.db.connections.close_all().)"""
    snapshot = contextvars.copy_context()

    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        return snapshot.copy().run(func, *args, **kwargs)
    return inner


def _token(token: Any) -> Token:
    if isinstance(token, str):
        parsed = parse_token(token)
        if parsed is None:
            raise ValueError("not a token: %r (expected '<timeline>:<lsn>')" % token)
        return parsed
    return token


def current_token(cluster: Optional[str] = None) -> Optional[Token]:
    """The highest token the current code must see on cluster (default:
    the default cluster, conf.Config.default; its own writes included); None when there is none.  May
    look the key up on the leader."""
    config = get_config()
    c = config.cluster(cluster) if cluster is not None else config.default
    if c is None:
        raise ValueError("no cluster named %r in READYOURWRITES" % cluster)
    return needed_token(current(), c)


def current_tokens() -> Dict[str, Token]:
    """current_token() of every cluster that has one: {name: token}.
    A cluster whose leader fails the key lookup gets what the context
    already knows there (its own writes, tokens it was given): one
    leader's failure does not drop the other clusters' tokens."""
    found = {}
    ctx = current()
    for c in get_config().clusters:
        token, _ = needed_or_known(ctx, c, "fallback_lookup_failed")
        if token is not None:
            found[c.name] = token
    return found


def record_under(raw_key: str) -> None:
    """Also record the current context's writes under raw_key when it ends:
    a login that issues an API token records the writes under the key its
    next (header-authenticated) request will have."""
    ctx = current()
    if ctx is None:
        raise RuntimeError("record_under() needs a request or acting_for() context")
    ctx.also_record.add(hash_key(raw_key))


__all__ += ["activate"]
