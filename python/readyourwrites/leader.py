"""The leader connections: the one place a commit's token enters a context.

The extension reports every commit's token in the ParameterStatus value
distributed.last_commit, with the reply that committed.  observe() reads
it (no query) and hands a new one to the current context, together with
the session key that was in force for that commit.  It runs around every
statement on the leader connection (an execute wrapper), after every
commit of an atomic block (on_commit), before a read is routed and when a
context ends: however a write was issued (router, .using(), save(using=),
atomic(using=), raw SQL), its token arrives here.

The same wrapper puts the current context's key in force before every
statement, so every commit is recorded under the right key by the server,
and a key left on a saved or pooled connection by an earlier request is
replaced (or cleared) before it can record this one's writes.

With several clusters each leader connection is watched the same way; a
token is taken into the context's part for the leader's cluster.
"""
import logging
import threading
import time
import weakref
from typing import Any, Dict, Optional, Set, Tuple

from django.db import connections, transaction

from .conf import get_config
from .context import RoutingContext, current, set_thread_own, thread_own
from . import drivers
from .drivers import raw_connection
from .state import state
from .tokens import Token, parse_token

logger = logging.getLogger("readyourwrites")

__all__ = ["observe", "needed_token", "needed_or_known", "finish_context", "watch_leader", "token_to_carry",
           "leader_position"]

_internal = threading.local()  # .on: the router's own statement; the wrapper stays out of it


class _Watch:
    """What the router knows of one (thread's) leader connection."""

    __slots__ = ("raw", "last_seen", "key", "verified", "__weakref__")

    def __init__(self) -> None:
        self.raw: Any = None
        self.verified: Any = None  # the raw connection whose key report is trusted
        self.last_seen: Optional[str] = None  # last distributed.last_commit taken
        self.key = ""  # the key in force for the statement that runs now


_watches: "weakref.WeakKeyDictionary[Any, _Watch]" = weakref.WeakKeyDictionary()


def watch_leader(conn: Any) -> _Watch:
    w = _watches.get(conn)
    if w is None:
        w = _watches[conn] = _Watch()
        # first, so that a user's execute_wrapper() block cannot remove it
        conn.execute_wrappers.insert(0, _LeaderWrapper(conn.alias))
    return w


def _leader(cluster: Any) -> Any:
    return connections[cluster.leader]


def observe(conn: Any = None) -> Optional[Token]:
    """Take a commit the leader connection reported since last looked:
    the only place a commit's token enters a context.  No query.  With
    no connection named, every cluster's leader connection (of this
    thread) is looked at."""
    config = get_config()
    if conn is None:
        for cluster in config.clusters:
            observe(_leader(cluster))
        return None
    cluster = config.cluster_of(conn.alias)
    if cluster is None or cluster.leader != conn.alias:
        return None  # watched under other settings: not a leader now, its tokens belong nowhere
    w = watch_leader(conn)
    raw = raw_connection(conn)
    if raw is None:
        return None
    reported = drivers.parameter_status(raw, "distributed.last_commit")
    if raw is not w.raw:
        # a new (or pooled) connection: what it reports now is not ours
        w.raw, w.last_seen = raw, reported
        return None
    if not reported or reported == w.last_seen:
        return None
    w.last_seen = reported
    token = parse_token(reported)
    if token is None:
        return None
    state.saw_leader_at(cluster.name, token)
    ctx = current()
    if ctx is not None:
        ctx.committed(cluster.name, token, w.key)
    else:
        set_thread_own(cluster.name, token)
    return token


def _after_commit() -> None:
    observe()


def _ensure_key(conn: Any, w: _Watch, ctx: Optional[RoutingContext]) -> None:
    """Put the context's key (or none) in force before a statement.  Costs
    a query only when the key the server reports in force differs.  In a
    transaction the key is set for it only (it lapses with a rollback);
    behind a transaction pooler only that is sound, so outside one no key
    is set there and finish_context() records the writes instead."""
    # While the key is being found (the key function loads the session,
    # which may flush or cycle it) no key is in force: not the one being
    # found, and not one an earlier context left on this connection, which
    # would record this write under another user's key.
    wanted = "" if ctx is None or ctx._in_key else (ctx.key() or "")
    local = bool(conn.in_atomic_block)
    reported = drivers.parameter_status(raw_connection(conn), "distributed.session_key") or ""
    if get_config().pooler == "transaction" and not local:
        w.key = ""
        return
    if w.verified is not w.raw and get_config().pooler == "session":
        # a session pooler hands out a server connection with whatever an
        # earlier client left in force, and the start-up report it replays
        # need not say so: set the key once per connection
        reported = None
    if reported == wanted:
        w.key = wanted
        return
    _internal.on = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_catalog.set_config('distributed.session_key', %s, %s)", [wanted, local])
    finally:
        _internal.on = False
    w.key = wanted
    w.verified = w.raw
    state.count("key_sets")


class _LeaderWrapper:
    def __init__(self, alias: str):
        self.alias = alias

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if getattr(_internal, "on", False):
            return execute(sql, params, many, context)
        conn = context["connection"]
        w = watch_leader(conn)
        observe(conn)
        config = get_config()
        if config.enabled:
            ctx = current()
            cluster = config.cluster_of(self.alias)
            if ctx is not None and cluster is not None:
                # a statement on this leader, however it was routed (a user
                # router that answered db_for_write first, .using()): where
                # no ParameterStatus arrives, its token must be asked
                ctx.part(cluster.name).routed_write = True
            _ensure_key(conn, w, ctx)
        try:
            return execute(sql, params, many, context)
        finally:
            observe(conn)
            if conn.in_atomic_block and not any(e[1] is _after_commit for e in conn.run_on_commit):
                transaction.on_commit(_after_commit, using=self.alias)


def _query(cluster: Any, sql: str, params: Any) -> Any:
    conn = _leader(cluster)
    _internal.on = True
    try:
        with conn.cursor() as cur:
            started = time.monotonic()
            cur.execute(sql, params)
            state.saw_leader_rtt(cluster.name, (time.monotonic() - started) * 1000.0)  # a round trip, measured
            return cur.fetchone()
    finally:
        _internal.on = False
        observe(conn)


def _own_token_asked(config: Any, cluster: Any) -> Optional[Token]:
    """The token of the context's writes when no ParameterStatus arrives
    (a proxy that drops it): on a direct connection, its own last commit;
    behind a transaction pooler, the leader's WAL insert position, which is
    at or past every commit that has returned."""
    state.count("token_queries")
    if config.pooler == "transaction":
        return leader_position(cluster)
    row = _query(cluster, "SELECT distributed.last_commit()", [])
    return parse_token(row[0])


def leader_position(cluster: Any = None) -> Optional[Token]:
    """cluster's leader's WAL insert position (default: the first
    cluster's), as a token: at or past every commit that has returned.
    One query."""
    cluster = cluster if cluster is not None else get_config().default
    row = _query(cluster, "SELECT distributed.token_timeline(distributed.replay_position())::text"
                 " || ':' || pg_catalog.pg_current_wal_insert_lsn()::text", [])
    return parse_token(row[0])


def _highest(*tokens: Optional[Token]) -> Optional[Token]:
    known = [t for t in tokens if t is not None]
    return max(known) if known else None


def token_to_carry() -> Tuple[Dict[str, Token], Set[str]]:
    """What a task enqueued (a message published) now must see: per
    cluster, the token, and the clusters whose leader's position the
    worker must also demand when the task starts.  It must for a cluster
    whose leader connection is inside a transaction here: its writes
    commit after this, perhaps with the task's row, and no token names them
    yet.  And for a cluster whose key lookup fails: the key's writes there
    are unknown, but every token already known (the cookie's, the
    context's own commits, the thread's) is still carried."""
    ctx = current()
    tokens: Dict[str, Token] = {}
    at_start: Set[str] = set()
    for cluster in get_config().clusters:
        token, failed = needed_or_known(ctx, cluster, "carry_lookup_failed")
        token = _highest(token, thread_own(cluster.name))
        if failed or leader_in_transaction(cluster):
            at_start.add(cluster.name)
        if token is not None:
            tokens[cluster.name] = token
    return tokens, at_start


def needed_or_known(ctx: Optional[RoutingContext], cluster: Any, counter: str) -> Tuple[Optional[Token], bool]:
    """needed_token(ctx, cluster), and False; or, when cluster's leader
    fails the key lookup, what is already known here (the context's token
    there, its own writes included; with no context, the thread's last
    commit), and True, counted under counter.  One leader's failure must
    not drop what is known of the others."""
    try:
        return needed_token(ctx, cluster), False
    except Exception as e:  # a DatabaseError, or InterfaceError on a closed connection
        logger.warning("token lookup on %s failed (%s); using the tokens known here", cluster.leader, e)
        state.count(counter)
        if ctx is None:
            return thread_own(cluster.name), True
        part = ctx.parts.get(cluster.name)
        return (part.token if part is not None else None), True


def leader_in_transaction(cluster: Any = None) -> bool:
    """Is this thread's connection to cluster's leader (default: any
    cluster's) inside an atomic block?"""
    clusters = [cluster] if cluster is not None else get_config().clusters
    return any(_leader(c).in_atomic_block for c in clusters)


def needed_token(ctx: Optional[RoutingContext], cluster: Any = None) -> Optional[Token]:
    """The highest token the current code must see on cluster (default:
    the first): its own commits there, and its key's last write on that
    cluster's leader (looked up once per key, cluster and context, under
    every hash of a secret rotation; the highest answer wins)."""
    config = get_config()
    cluster = cluster if cluster is not None else config.default
    observe(_leader(cluster))
    if ctx is None:
        return thread_own(cluster.name)
    part = ctx.part(cluster.name)
    if part.routed_write and part.own is None and \
            drivers.parameter_status(raw_connection(_leader(cluster)), "distributed.last_commit") is None:
        token = _own_token_asked(config, cluster)
        if token is not None:
            ctx.committed(cluster.name, token, None)
    # (with TOKEN_STORE "cookie" the keys are the browser's own key)
    keys = [k for k in ctx.keys() if k not in part.keys_looked_up]
    if keys:
        row = _query(cluster, "SELECT array_agg(distributed.session_token(k)::text) "
                     "FROM unnest(%s::text[]) AS k", [keys])
        found = [parse_token(t) for t in (row[0] or [])]
        state.count("lookups")
        for k, t in zip(keys, found):
            part.keys_looked_up[k] = t
            state.saw_leader_at(cluster.name, t)
            ctx.demand(cluster.name, t)
    return part.token


def record_under(ctx: RoutingContext) -> None:
    """Record the context's writes under the keys the server could not
    record them under as they committed: the final key when its last
    recorded commit is below the context's own (a write behind a
    transaction pooler outside a transaction, a login that changed the key
    after the write), and keys named by readyourwrites.record_under()."""
    if all(p.own is None for p in list(ctx.parts.values())):
        return  # wrote nothing
    wanted = set(ctx.also_record)
    final = ctx.key()  # the key function runs once, not once per cluster
    if final:
        wanted.add(final)
    for cluster in get_config().clusters:
        part = ctx.parts.get(cluster.name)
        own = part.own if part is not None else None
        if own is None:
            continue  # no write on this cluster
        keys = sorted(k for k in wanted if not (k in part.keys_written and part.keys_written[k] >= own))
        if not keys:
            continue
        try:
            _query(cluster, "SELECT count(distributed.record(k, %s)) FROM unnest(%s::text[]) AS k",
                   [str(own), keys])
            state.count("records", len(keys))
            for k in keys:
                part.keys_written[k] = own
        except Exception as e:
            logger.warning("could not record the context's writes under its key on %s (%s); "
                           "grant EXECUTE on distributed.record(text, text) to this role", cluster.leader, e)
            state.count("record_failed")


def finish_context(ctx: Optional[RoutingContext], in_loop: bool = False) -> None:
    """At the end of a request or task: take the last commits and record
    them under keys the server could not.  Never raises: the writes have
    committed, and the response must go out."""
    if ctx is None or not get_config().enabled:
        return
    if in_loop:
        if any(p.own is not None and (ctx.also_record or p.routed_write) for p in list(ctx.parts.values())):
            state.count("record_skipped")
        return
    try:
        observe()
        record_under(ctx)
    except Exception as e:  # a closed connection, a failed session load: never a 500
        logger.warning("could not finish the routing context (%s)", e)
        state.count("finish_failed")

