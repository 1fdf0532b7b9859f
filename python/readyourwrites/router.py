"""The database router.

Reads go to a follower that is proven to hold the current context's writes:

1. inside a transaction on the leader, or under use_leader(): the leader;
2. no token to honour (no key, no write): any usable follower, in turn;
3. a follower whose replay position, as last seen by this process, is at or
   past the token: that follower, with no query at all;
4. otherwise one question to the most advanced follower
   (distributed.is_replayed, or distributed.wait for POLICY "wait");
5. otherwise the policy: the leader, or FollowerNotReady.

Writes go to the leader, which is told the session key first (only when the
key in force there, which the server reports in ParameterStatus, differs).
"""
import itertools
import logging
from typing import Any, List, Optional

from django.db import DatabaseError, connections
from django.db.backends.signals import connection_created

from .conf import get_config
from .context import RoutingContext, current
from .drivers import parameter_status, raw_connection
from .state import state
from .tokens import Token, parse_token

logger = logging.getLogger("readyourwrites")

__all__ = ["ReadYourWritesRouter", "FollowerNotReady", "context_token"]

_rotation = itertools.count()


class FollowerNotReady(Exception):
    """POLICY "raise": no follower was proven to hold the token in time."""

    def __init__(self, token: Token, followers: List[str]):
        self.token = token
        self.followers = followers
        super().__init__(
            "no follower has replayed %s (asked: %s); POLICY is 'raise'"
            % (token, ", ".join(followers) or "none usable")
        )


def _leader_token(alias: str) -> Optional[Token]:
    """The token of the last commit on this thread's leader connection, as
    the server reported it (no query)."""
    return parse_token(parameter_status(raw_connection(connections[alias]), "distributed.last_commit"))


def own_token(config: Any) -> Optional[Token]:
    """The token of this context's writes on the leader.

    From ParameterStatus when it arrives.  A proxy that drops it leaves two
    ways to ask: the connection's own last commit, or, behind a transaction
    pooler (where the next statement may run on another server connection),
    the leader's flushed position, which is at or past every commit that
    has returned.
    """
    token = _leader_token(config.leader)
    if token is not None:
        return token
    state.count("token_queries")
    with connections[config.leader].cursor() as cur:
        if config.pooler == "transaction":
            cur.execute("SELECT distributed.replay_position()")
        else:
            cur.execute("SELECT distributed.last_commit()")
        return parse_token(cur.fetchone()[0])


def finish_context(ctx: Optional[RoutingContext]) -> None:
    """At the end of a request or task: record the writes that the leader
    could not record under their key as they committed (behind a transaction
    pooler, a write outside a transaction runs without the key)."""
    if ctx is None or not ctx.unrecorded:
        return
    config = get_config()
    token = own_token(config)
    keys, ctx.unrecorded = sorted(ctx.unrecorded), set()
    if token is None:
        return
    with connections[config.leader].cursor() as cur:
        for key in keys:
            cur.execute("SELECT distributed.record(%s, %s)", [key, str(token)])
    state.count("records", len(keys))


def context_token(ctx: Optional[RoutingContext]) -> Optional[Token]:
    """The highest token the current code must see, looking it up at most
    once per key and context."""
    config = get_config()
    if ctx is None:
        # no request or task context: honour this thread's own writes
        return _leader_token(config.leader)
    if ctx.wrote:
        own = own_token(config)
        state.saw_leader_at(own)
        ctx.raise_token(own)
    key = ctx.key()
    if key and config.token_store == "leader" and key not in ctx.looked_up:
        with connections[config.leader].cursor() as cur:
            cur.execute("SELECT distributed.session_token(%s)", [key])
            found = parse_token(cur.fetchone()[0])
        state.count("lookups")
        state.saw_leader_at(found)
        ctx.looked_up[key] = found
        ctx.raise_token(found)
    return ctx.token


class ReadYourWritesRouter:
    """DATABASE_ROUTERS = ["readyourwrites.ReadYourWritesRouter"]"""

    # -- Django router API -------------------------------------------------
    def db_for_read(self, model: Any, **hints: Any) -> str:
        alias = self._route_read()
        state.count("reads:" + alias)
        return alias

    def db_for_write(self, model: Any, **hints: Any) -> str:
        config = get_config()
        ctx = current()
        if ctx is not None:
            ctx.wrote = True
            key = ctx.key()
            if key and not _ensure_key(config, key):
                ctx.unrecorded.add(key)
        state.count("writes")
        return config.leader

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> Optional[bool]:
        config = get_config()
        ours = {config.leader, *config.followers}
        if obj1._state.db in ours and obj2._state.db in ours:
            return True
        return None

    def allow_migrate(self, db: str, app_label: str, model_name: Any = None, **hints: Any) -> Optional[bool]:
        config = get_config()
        if db in config.followers:
            return False  # followers replay the leader's schema
        return None

    # -- reads ---------------------------------------------------------------
    def _route_read(self) -> str:
        config = get_config()
        ctx = current()
        if ctx is not None and ctx.leader_depth > 0:
            return config.leader
        if connections[config.leader].in_atomic_block:
            return config.leader  # a transaction stays on one database

        usable = self._usable(config)
        state.note_usable(usable)
        if not usable:
            state.count("fallback_no_follower")
            return config.leader

        try:
            token = context_token(ctx)
        except DatabaseError as e:
            logger.warning("token lookup on the leader failed (%s); reading from the leader", e)
            state.count("fallback_lookup_failed")
            return config.leader

        if token is None:
            return self._pick(usable, config)

        proven = [a for a in usable if _position(a) is not None and _position(a).covers(token)]
        if proven:
            state.count("proven_by_cache")
            return self._pick(proven, config)

        # One question to the most promising follower that answers.  One that
        # already said "not yet" to this token (in any request of this
        # process) is asked again only after the others: its position is
        # fresh news, the others' may be stale.
        refused = state.refused(token)
        ranked = sorted(usable, key=lambda a: _rank(_position(a), token, a in refused), reverse=True)
        for alias in ranked:
            outcome = self._ask(alias, token, config)
            if outcome == "reached":
                return alias
            if outcome != "failed":
                state.refuse(token, alias)
                break  # it answered: not there yet; ask no further
        if config.policy == "raise":
            state.count("raised")
            raise FollowerNotReady(token, ranked)
        state.count("fallback_leader")
        return config.leader

    def _usable(self, config: Any) -> List[str]:
        usable = []
        for alias in config.followers:
            if not state.is_up(alias):
                continue
            lagging = state.lagging(alias, config.max_lag_seconds, config.max_lag_bytes)
            if lagging and state.report_age(alias) < config.cooldown_seconds:
                continue  # over a lag limit; look again after the cool-down
            conn = connections[alias]
            raw = raw_connection(conn)
            if raw is not None and getattr(raw, "closed", False):
                conn.close()  # broken earlier: reconnect rather than fail the read
            try:
                conn.ensure_connection()
            except Exception as e:
                state.mark_down(alias, e, config.cooldown_seconds)
                continue
            _watch(alias)
            if lagging:
                # its last report is old: ask where it is now (one query per
                # cool-down per lagging follower)
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT distributed.replay_position()")
                        state.saw_follower_at(alias, parse_token(cur.fetchone()[0]))
                except DatabaseError as e:
                    state.mark_down(alias, e, config.cooldown_seconds)
                    continue
                state.count("lag_probes")
                if state.lagging(alias, config.max_lag_seconds, config.max_lag_bytes):
                    continue
            usable.append(alias)
        return usable

    @staticmethod
    def _pick(aliases: List[str], config: Any) -> str:
        return aliases[next(_rotation) % len(aliases)]

    def _ask(self, alias: str, token: Token, config: Any) -> str:
        """'reached', 'not yet' (any other answer), or 'failed'.

        A wait uses the procedure, which holds no snapshot while it sleeps:
        a snapshot held on a follower under write load makes replay wait
        for it (a recovery conflict), the very replay being waited for.
        The procedure reports what is not "reached" as an error, told apart
        by SQLSTATE.
        """
        wait = config.policy == "wait" and config.wait_ms > 0
        conn = connections[alias]
        conn._readyourwrites_probing = True  # never re-run this on the leader
        try:
            with conn.cursor() as cur:
                if wait and not conn.in_atomic_block:
                    try:
                        cur.execute("CALL distributed.wait_for(%s, %s)", [str(token), config.wait_ms])
                        answer = "reached"
                    except DatabaseError as e:
                        answer = _WAIT_SQLSTATES.get(_sqlstate(e))
                        if answer is None:
                            raise
                elif wait:
                    cur.execute("SELECT distributed.wait(%s, %s)", [str(token), config.wait_ms])
                    answer = cur.fetchone()[0]
                else:
                    cur.execute("SELECT distributed.is_replayed(%s)", [str(token)])
                    answer = "reached" if cur.fetchone()[0] else "timeout"
        except DatabaseError as e:
            if conn.in_atomic_block:
                raise
            state.mark_down(alias, e, config.cooldown_seconds)
            return "failed"
        finally:
            conn._readyourwrites_probing = False
        if answer in ("promoted", "not_in_recovery"):
            # it is no follower any more: stop sending it reads for a while
            state.mark_down(alias, RuntimeError("%s is not in recovery" % alias), config.cooldown_seconds)
        state.count("waits" if wait else "checks")
        if answer == "reached":
            state.count("waits_reached" if wait else "checks_safe")
            state.saw_follower_at(alias, token)
            return "reached"
        state.count("wait_" + answer if wait else "checks_unsafe")
        return answer


# what CALL distributed.wait_for() reports by SQLSTATE (design invariant 8)
_WAIT_SQLSTATES = {"57014": "timeout", "55000": "promoted", "55U01": "unreachable"}


def _sqlstate(error: Exception) -> Optional[str]:
    cause = error.__cause__
    return getattr(cause, "pgcode", None) or getattr(cause, "sqlstate", None)


def _position(alias: str) -> Optional[Token]:
    return state.follower(alias).position


def _rank(pos: Optional[Token], token: Token, refused: bool) -> tuple:
    """Higher is asked first: not yet refused; then unknown (it may be
    anywhere); then on the token's timeline, furthest along."""
    if pos is None:
        return (not refused, 2, 0)
    return (not refused, 1 if pos.timeline == token.timeline else 0, pos.lsn)


def _ensure_key(config: Any, key: str) -> bool:
    """Make the leader record this context's commits under key; False when
    that cannot be done before the write (see finish_context).

    The server reports distributed.session_key in ParameterStatus, so this
    costs a query only when the key in force is not already ours.  Inside a
    transaction the key is set for that transaction only (it lapses with a
    rollback, and the report says so); outside, for the connection.  Behind
    a transaction pooler only the former is sound: a connection-wide key
    would stay on a server connection that other clients then use, and the
    next statement may run on another server connection without it.
    """
    conn = connections[config.leader]
    conn.ensure_connection()
    local = bool(conn.in_atomic_block)
    if config.pooler == "transaction" and not local:
        return False
    if parameter_status(raw_connection(conn), "distributed.session_key") == key:
        return True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_catalog.set_config('distributed.session_key', %s, %s)", [key, local])
    state.count("key_sets")
    return True


# -- follower connections: learn positions, survive a follower's death ------

def _broken(error: Exception, conn: Any) -> bool:
    """Did the connection itself fail (rather than the query)?"""
    from django.db import InterfaceError, OperationalError

    raw = raw_connection(conn)
    if raw is not None and (getattr(raw, "closed", False) or getattr(raw, "broken", False)):
        return True
    code = _sqlstate(error)
    if code is not None:
        # the server answered: only a connection exception or a shutdown
        # means the connection is gone (a cancelled query, 57014, does not)
        return code.startswith("08") or code in ("57P01", "57P02", "57P03")
    # psycopg2 reports a lost server as an OperationalError or a plain
    # DatabaseError, without an SQLSTATE
    return isinstance(error, (OperationalError, InterfaceError)) or error.__cause__ is not None


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Every new connection to a follower restarts what this process knows
    of it: replay positions only grow on one server's timeline, and a
    follower can only be restarted or rebuilt by dropping its connections.
    The server reports its replay position in the connection's start-up."""
    try:
        config = get_config()
    except Exception:
        return
    if connection.alias in config.followers:
        state.new_connection(connection.alias, parse_token(
            parameter_status(raw_connection(connection), "distributed.replay_position")))


connection_created.connect(_on_connection_created, dispatch_uid="readyourwrites.connection_created")


def _watch(alias: str) -> None:
    conn = connections[alias]
    if getattr(conn, "_readyourwrites_watched", False):
        return
    conn.execute_wrappers.append(_FollowerWrapper(alias))
    conn._readyourwrites_watched = True


class _FollowerWrapper:
    """Runs around every query on a follower connection.

    After a query: the follower's replay position arrives in ParameterStatus
    with the reply; keep the highest.  If the follower dies under an
    autocommit read, mark it down and run the same read on the leader, so
    that the request does not fail.
    """

    def __init__(self, alias: str):
        self.alias = alias

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        conn = connections[self.alias]
        try:
            result = execute(sql, params, many, context)
        except DatabaseError as e:
            if conn.in_atomic_block or getattr(conn, "_readyourwrites_probing", False) or not _broken(e, conn):
                raise
            config = get_config()
            state.mark_down(self.alias, e, config.cooldown_seconds)
            state.count("retried_on_leader")
            leader = connections[config.leader]
            leader.ensure_connection()
            wrapper = context["cursor"]
            wrapper.cursor = leader.connection.cursor()
            with leader.wrap_database_errors:
                if many:
                    return wrapper.cursor.executemany(sql, params)
                if params is None:
                    return wrapper.cursor.execute(sql)
                return wrapper.cursor.execute(sql, params)
        state.saw_follower_at(self.alias, parse_token(
            parameter_status(raw_connection(conn), "distributed.replay_position")))
        return result
