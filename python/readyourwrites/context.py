"""Per-request and per-task routing state, in a contextvar.  No queries.

A context knows whose writes the current code must see (its session key),
and for each cluster the highest token it must see (from the token store,
explicit arguments, the key's lookup, and its own commits) and which keys
its own commits were recorded under.  Async views and tasks get their own context; sync
code run through sync_to_async shares its caller's, and carry_context()
hands it to a thread.  A context opened inside another inherits what the
outer one must see and hands its own writes back when it ends.
"""
import contextlib
import threading
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, Optional, Set, Tuple

from django.utils.crypto import salted_hmac

from .tokens import Token

__all__ = ["RoutingContext", "ClusterPart", "current", "activate", "hash_key", "hash_keys"]

_SALT = "readyourwrites.session-key"
_hash_cache: Dict[Tuple[str, Any], str] = {}


def _hash(raw: str, secret: Any) -> str:
    hashed = _hash_cache.get((raw, secret))
    if hashed is None:
        hashed = salted_hmac(_SALT, raw, secret=secret, algorithm="sha256").hexdigest()
        if len(_hash_cache) > 10000:
            _hash_cache.clear()
        _hash_cache[(raw, secret)] = hashed
    return hashed


def hash_keys(raw: str) -> Tuple[str, ...]:
    """The keyed hashes of a raw key: under the current secret first, then
    under each fallback secret of a rotation in progress."""
    from .conf import get_config

    return tuple(dict.fromkeys(_hash(raw, s) for s in get_config().key_secrets()))


def hash_key(raw: str) -> str:
    """The keyed hash sent to the server in place of a raw session key.

    HMAC-SHA256 under READYOURWRITES["KEY_SECRET"] (default: SECRET_KEY):
    the server and its monitoring views never see a raw key (design
    invariant 7).  Lookups also try SECRET_KEY_FALLBACKS, so a rolling
    deploy that rotates the secret keeps finding writes.
    """
    return hash_keys(raw)[0]


def forget_hashes() -> None:
    _hash_cache.clear()


@dataclass
class ClusterPart:
    """What a context must see on one cluster: tokens of different leaders
    are positions in different WAL streams and are never compared."""

    token: Optional[Token] = None  # at least this must be visible
    cookie: Optional[Token] = None  # what the request's token cookie said
    own: Optional[Token] = None  # the highest commit of the context's own
    keys_written: Dict[str, Token] = field(default_factory=dict)  # key in force -> highest own commit under it
    keys_looked_up: Dict[str, Optional[Token]] = field(default_factory=dict)
    routed_write: bool = False  # a statement ran on this cluster's leader (its token may have to be asked)


@dataclass
class RoutingContext:
    request: Any = None
    key_function: Optional[Callable[[Any], Optional[str]]] = None
    fixed_keys: Optional[Tuple[str, ...]] = None  # already hashed, current first
    browser_key: Optional[str] = None  # TOKEN_STORE "cookie": the browser's random key (raw), all clusters
    key_came: bool = False  # TOKEN_STORE "cookie": the request came with the key's own cookie
    parts: Dict[str, ClusterPart] = field(default_factory=dict)  # by cluster name
    also_record: Set[str] = field(default_factory=set)  # hashed keys named by record_under()
    leader_depth: int = 0
    follower_depth: int = 0
    _resolving: Set[int] = field(default_factory=set, repr=False)  # threads finding the key now
    _lock: Any = field(default_factory=threading.Lock, repr=False)

    @property
    def _in_key(self) -> bool:
        """Is this thread finding the context's key (in the key function)?"""
        return threading.get_ident() in self._resolving

    def part(self, cluster: str) -> ClusterPart:
        p = self.parts.get(cluster)
        if p is None:
            with self._lock:
                p = self.parts.setdefault(cluster, ClusterPart())
        return p

    def tokens(self) -> Dict[str, Token]:
        """The token to see on each cluster that has one."""
        return {name: p.token for name, p in list(self.parts.items()) if p.token is not None}

    def keys(self) -> Tuple[str, ...]:
        """The hashed session key (and its fallback hashes), computed when
        asked: a login changes it.

        What the key function reads (SESSION_KEY "user" loads the session
        and the user) cannot honour the key it is finding: those reads go
        to the leader (route_read asks _in_key), or a follower that lacks
        the login's session would log the user out.  Only the thread
        finding the key is affected: a context carried into other threads
        is shared, so nothing shared (leader_depth) changes meanwhile."""
        if self.fixed_keys is not None:
            return self.fixed_keys
        if self.key_function is None or self.request is None or self._in_key:
            return ()  # re-entered: finding the key itself read the database
        me = threading.get_ident()
        with self._lock:
            self._resolving.add(me)
        try:
            raw = self.key_function(self.request)
        finally:
            with self._lock:
                self._resolving.discard(me)
        return hash_keys(str(raw)) if raw else ()

    def key(self) -> Optional[str]:
        keys = self.keys()
        return keys[0] if keys else None

    def demand(self, cluster: str, token: Optional[Token]) -> None:
        """The context must see at least token on cluster."""
        if token is not None:
            p = self.part(cluster)
            with self._lock:
                if p.token is None or token > p.token:
                    p.token = token

    def committed(self, cluster: str, token: Token, key: Optional[str]) -> None:
        """A commit of the context's own on cluster's leader, made with key
        in force.  Called only by leader.observe()."""
        self.demand(cluster, token)
        p = self.part(cluster)
        with self._lock:
            if p.own is None or token > p.own:
                p.own = token
            if key and (key not in p.keys_written or token > p.keys_written[key]):
                p.keys_written[key] = token

    def inherit(self, parent: Optional["RoutingContext"]) -> "RoutingContext":
        if parent is not None:
            for name, token in parent.tokens().items():
                self.demand(name, token)
            self.leader_depth += parent.leader_depth
            self.follower_depth += parent.follower_depth
        return self

    def hand_back(self, parent: Optional["RoutingContext"]) -> None:
        if parent is None:
            return
        for name, p in list(self.parts.items()):
            if p.own is None:
                continue
            parent.demand(name, p.own)
            q = parent.part(name)
            with parent._lock:
                if q.own is None or p.own > q.own:
                    q.own = p.own


_current: ContextVar[Optional[RoutingContext]] = ContextVar("readyourwrites_context", default=None)
_thread = threading.local()  # .own: cluster -> this thread's last commit outside any context


def current() -> Optional[RoutingContext]:
    return _current.get()


def thread_own(cluster: Optional[str] = None) -> Any:
    """This thread's last commit on cluster outside any context; with no
    cluster named, every cluster's (a dict)."""
    own = getattr(_thread, "own", None) or {}
    return dict(own) if cluster is None else own.get(cluster)


def set_thread_own(cluster: str, token: Token) -> None:
    own = getattr(_thread, "own", None)
    if own is None:
        own = _thread.own = {}
    if cluster not in own or token > own[cluster]:
        own[cluster] = token


@contextlib.contextmanager
def activate(ctx: Optional[RoutingContext]) -> Iterator[Optional[RoutingContext]]:
    reset = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(reset)
