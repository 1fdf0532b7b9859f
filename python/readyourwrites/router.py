"""The database router.

Reads go to a follower that is proven to hold the current context's writes:

1. inside a transaction on the leader, or under use_leader(): the leader;
2. no token to honour (no key, no write): any usable follower, in turn;
3. a follower whose replay position, as last reported to this process, is
   at or past the token: that follower, with no query at all;
4. otherwise one question to the most promising follower
   (distributed.is_replayed, or CALL distributed.wait_for for POLICY "wait");
5. otherwise the policy: the leader, or FollowerNotReady.

Writes go to the leader, which is told the session key first (only when the
key in force there, which the server reports in ParameterStatus, differs).

Tokens of the context's own writes are captured as the writes commit: an
execute wrapper on the leader connection sees the token arrive with an
autocommit statement's reply, and an on_commit hook sees it after a
transaction; a read also compares the leader connection's last reported
commit with what it was when the context began.
"""
import asyncio
import itertools
import logging
import threading
from typing import Any, Iterable, List, Optional

from django.db import DatabaseError, connections, transaction
from django.db.backends.signals import connection_created

from .conf import get_config
from .context import RoutingContext, current, leader_commit
from .drivers import parameter_status, raw_connection
from .state import state
from .tokens import Token, parse_token

logger = logging.getLogger("readyourwrites")

__all__ = ["ReadYourWritesRouter", "FollowerNotReady", "context_token"]

_rotation = itertools.count()
_thread = threading.local()  # .own: the last token of this thread's writes


class FollowerNotReady(Exception):
    """POLICY "raise": no follower was proven to hold the token in time."""

    def __init__(self, token: Token, followers: List[str]):
        self.token = token
        self.followers = followers
        super().__init__(
            "no follower has replayed %s (asked: %s); POLICY is 'raise'"
            % (token, ", ".join(followers) or "none usable")
        )


def _in_event_loop() -> bool:
    """Is an event loop running in this thread?  Then no query may run here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _note_commit(token: Optional[Token]) -> None:
    """A commit of this thread's leader connection reported token."""
    if token is None:
        return
    state.saw_leader_at(token)
    ctx = current()
    if ctx is not None:
        ctx.wrote = True
        ctx.raise_token(token)
    own = getattr(_thread, "own", None)
    if own is None or token > own:
        _thread.own = token


def refresh_own(ctx: Optional[RoutingContext]) -> Optional[str]:
    """Take any commit the leader connection reported since the context
    began (or since last looked) as the context's own: no query.  Catches
    commits the wrappers cannot see, such as a transaction opened after the
    write was routed (Model.save) or raw SQL."""
    reported = leader_commit()
    if ctx is not None and reported is not None and reported != ctx.baseline:
        ctx.baseline = reported
        _note_commit(parse_token(reported))
    return reported


def _capture_after_commit() -> None:
    _note_commit(parse_token(leader_commit()))


def own_token(config: Any) -> Optional[Token]:
    """Ask the leader for a token at or past this context's writes, for when
    no ParameterStatus arrived (a proxy that drops it).

    On a direct connection: the connection's own last commit.  Behind a
    transaction pooler the next statement may run on another server
    connection, so: the leader's current WAL insert position, which is at
    or past every commit that has returned (even an asynchronous one).
    """
    state.count("token_queries")
    with connections[config.leader].cursor() as cur:
        if config.pooler == "transaction":
            cur.execute("SELECT distributed.token_timeline(distributed.replay_position())::text"
                        " || ':' || pg_catalog.pg_current_wal_insert_lsn()::text")
        else:
            cur.execute("SELECT distributed.last_commit()")
        return parse_token(cur.fetchone()[0])


def _own_writes(ctx: RoutingContext) -> None:
    """Bring ctx.token up to the context's own commits: from what the
    leader connection reported (no query), or, when nothing was reported
    after a write (a proxy that drops ParameterStatus), by asking."""
    reported = refresh_own(ctx)
    if ctx.wrote and ctx.token is None and reported is None:
        ctx.raise_token(own_token(get_config()))


def context_token(ctx: Optional[RoutingContext]) -> Optional[Token]:
    """The highest token the current code must see, looking the key up at
    most once per key and context."""
    config = get_config()
    if ctx is None:
        # no request or task context: honour this thread's own writes
        tokens = [getattr(_thread, "own", None), parse_token(leader_commit())]
        tokens = [t for t in tokens if t is not None]
        return max(tokens) if tokens else None
    _own_writes(ctx)
    key = ctx.key()
    if key and config.token_store == "leader" and key not in ctx.looked_up:
        with connections[config.leader].cursor() as cur:
            cur.execute("SELECT distributed.session_token(%s)", [key])
            found = parse_token(cur.fetchone()[0])
        state.count("lookups")
        state.saw_leader_at(found)
        ctx.looked_up[key] = found
        ctx.keys_used.add(key)
        ctx.raise_token(found)
    return ctx.token


def finish_context(ctx: Optional[RoutingContext]) -> None:
    """At the end of a request or task, record under their keys the writes
    the leader could not record as they committed: writes outside a
    transaction behind a transaction pooler, and writes made before the
    session key changed without a write under the new key (a login with a
    cache or cookie session engine).  Needs EXECUTE on distributed.record.
    Leaves ctx.token at the context's own writes.  Never raises: the writes
    have committed, and the response must go out."""
    if ctx is None:
        return
    config = get_config()
    if ctx.wrote and not _in_event_loop():
        try:
            _own_writes(ctx)
        except DatabaseError as e:
            logger.warning("could not learn the token of the context's writes (%s)", e)
    if config.token_store != "leader":
        return
    try:
        final = ctx.key()
    except Exception:
        final = None
    keys = set(ctx.unrecorded)
    if final and ctx.token is not None and final not in ctx.keys_used:
        keys.add(final)
    ctx.unrecorded = set()
    if not keys or ctx.token is None:
        return
    if _in_event_loop():
        logger.warning("cannot record %d key(s) from an event loop; use acting_for in sync code", len(keys))
        state.count("record_skipped")
        return
    try:
        with connections[config.leader].cursor() as cur:
            for key in sorted(keys):
                cur.execute("SELECT distributed.record(%s, %s)", [key, str(ctx.token)])
                ctx.keys_used.add(key)
        state.count("records", len(keys))
    except DatabaseError as e:
        logger.warning("could not record the session's writes under its key (%s); "
                       "grant EXECUTE on distributed.record(text, text) to this role", e)
        state.count("record_failed")


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
        state.count("writes")
        if _in_event_loop():
            return config.leader  # no query here; the write itself runs elsewhere
        conn = connections[config.leader]
        _watch_leader(config.leader)
        if ctx is not None:
            ctx.wrote = True
        if conn.in_atomic_block and not any(
                entry[1] is _capture_after_commit for entry in conn.run_on_commit):
            transaction.on_commit(_capture_after_commit, using=config.leader)
        if config.token_store == "leader":
            key = ctx.key() if ctx is not None else None
            if not _ensure_key(config, key or ""):
                ctx.unrecorded.add(key)
            elif key:
                ctx.keys_used.add(key)
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
        leader = connections[config.leader]
        if leader.in_atomic_block or (leader.connection is not None and not leader.autocommit):
            return config.leader  # a transaction stays on one database
        if _in_event_loop():
            state.count("fallback_event_loop")
            return config.leader  # no query may run on the loop; the leader is always right

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
            alias = self._connect_first(_rotated(usable), config)
            return alias or config.leader

        proven = [a for a in usable if _position(a) is not None and _position(a).covers(token)]
        if proven:
            alias = self._connect_first(_rotated(proven), config)
            if alias is not None:
                state.count("proven_by_cache")
                return alias

        # One question to the most promising follower that answers.  One that
        # already said "not yet" to this token (in any request of this
        # process) is asked again only after the others: its position is
        # fresh news, the others' may be stale.
        refused = state.refused(token)
        ranked = sorted((a for a in usable if state.is_up(a)),
                        key=lambda a: _rank(_position(a), token, a in refused), reverse=True)
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
        """Followers not in a cool-down and not over a lag limit.  Connects
        only to those whose lag must be looked at again."""
        usable = []
        for alias in config.followers:
            if not state.is_up(alias):
                continue
            lagging = state.lagging(alias, config.max_lag_seconds, config.max_lag_bytes)
            if lagging and state.report_age(alias) < config.cooldown_seconds:
                continue  # over a lag limit; look again after the cool-down
            if lagging:
                # its last report is old: ask where it is now (one query per
                # cool-down per lagging follower)
                if self._connect_first([alias], config) is None:
                    continue
                try:
                    with connections[alias].cursor() as cur:
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
    def _connect_first(aliases: Iterable[str], config: Any) -> Optional[str]:
        """The first follower that is (or can be) connected; the others that
        fail are skipped for the cool-down."""
        for alias in aliases:
            conn = connections[alias]
            if _raw_broken(conn):
                conn.close()  # broken earlier: reconnect rather than fail the read
            try:
                conn.ensure_connection()
            except DatabaseError as e:
                state.mark_down(alias, e, config.cooldown_seconds)
                continue
            _watch_follower(alias)
            return alias
        return None

    def _ask(self, alias: str, token: Token, config: Any) -> str:
        """'reached', 'not yet' (any other answer), or 'failed'.

        A wait uses the procedure, which holds no snapshot while it sleeps:
        a snapshot held on a follower under write load makes replay wait
        for it (a recovery conflict), the very replay being waited for.
        The procedure reports what is not "reached" as an error, told apart
        by SQLSTATE.
        """
        if self._connect_first([alias], config) is None:
            return "failed"
        wait = config.policy == "wait" and config.wait_ms > 0
        conn = connections[alias]
        conn._readyourwrites_probing = True  # never re-run this on the leader
        try:
            with conn.cursor() as cur:
                answer = None
                if wait and not conn.in_atomic_block:
                    try:
                        cur.execute("CALL distributed.wait_for(%s, %s)", [str(token), config.wait_ms])
                        answer = "reached"
                    except DatabaseError as e:
                        code = _sqlstate(e)
                        if code == "25001":
                            answer = None  # a snapshot is held (isolation): use the function
                        elif code in _WAIT_SQLSTATES:
                            answer = _WAIT_SQLSTATES[code]
                        else:
                            raise
                if answer is None and wait:
                    cur.execute("SELECT distributed.wait(%s, %s)", [str(token), config.wait_ms])
                    answer = cur.fetchone()[0]
                elif answer is None:
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


def _rotated(aliases: List[str]) -> List[str]:
    """The aliases in turn, starting at a rotating point (spreads reads)."""
    k = next(_rotation) % len(aliases)
    return aliases[k:] + aliases[:k]


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
    """Make the leader record this context's commits under key ('' for
    none); False when that cannot be done before the write (see
    finish_context).

    The server reports distributed.session_key in ParameterStatus, so this
    costs a query only when the key in force is not the one wanted (a key
    left on a reused connection by another context is cleared).  Inside a
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
        return not key
    reported = parameter_status(raw_connection(conn), "distributed.session_key")
    if reported == key or (not key and not reported):
        return True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_catalog.set_config('distributed.session_key', %s, %s)", [key, local])
    state.count("key_sets")
    return True


# -- connections: capture tokens, learn positions, survive a follower's death --

def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    """A new connection to a follower restarts what this process knows of it:
    a follower can only be restarted or rebuilt (from an older backup,
    perhaps) by dropping its connections.  The server reports its replay
    position in the connection's start-up, except that a pooler may report
    one it cached earlier: then it is forgotten instead."""
    try:
        config = get_config()
    except Exception:
        return
    if connection.alias == config.leader:
        _watch_leader(connection.alias)
    elif connection.alias in config.followers:
        _watch_follower(connection.alias)
        reported = None
        if config.pooler is None:
            reported = parse_token(parameter_status(raw_connection(connection), "distributed.replay_position"))
        state.new_connection(connection.alias, reported)


connection_created.connect(_on_connection_created, dispatch_uid="readyourwrites.connection_created")


def _watch_leader(alias: str) -> None:
    conn = connections[alias]
    if not getattr(conn, "_readyourwrites_watched", False):
        conn.execute_wrappers.insert(0, _LeaderWrapper())
        conn._readyourwrites_watched = True


def _watch_follower(alias: str) -> None:
    conn = connections[alias]
    if not getattr(conn, "_readyourwrites_watched", False):
        # first, so that a user's execute_wrapper() block cannot remove it
        conn.execute_wrappers.insert(0, _FollowerWrapper(alias))
        conn._readyourwrites_watched = True


class _LeaderWrapper:
    """Runs around every query on the leader connection: a commit's token
    arrives in ParameterStatus with the reply of the statement that
    committed (an autocommit write, or a COMMIT sent as SQL)."""

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        before = leader_commit()
        result = execute(sql, params, many, context)
        after = leader_commit()
        if after is not None and after != before:
            _note_commit(parse_token(after))
        return result


def _raw_broken(conn: Any) -> bool:
    """Does the driver say the connection is closed or broken?"""
    raw = raw_connection(conn)
    return raw is not None and bool(getattr(raw, "closed", False) or getattr(raw, "broken", False))


def _broken(error: Exception, conn: Any) -> bool:
    """Did the connection itself fail (rather than the query)?"""
    from django.db import DataError, IntegrityError, NotSupportedError, ProgrammingError

    if _raw_broken(conn):
        return True
    code = _sqlstate(error)
    if code is not None:
        # the server answered: only a connection exception or a shutdown
        # means the connection is gone (a cancelled query, 57014, does not)
        return code.startswith("08") or code in ("57P01", "57P02", "57P03")
    # no SQLSTATE: the client's own errors are not the connection's;
    # psycopg2 reports a lost server as OperationalError or DatabaseError
    return not isinstance(error, (ProgrammingError, DataError, IntegrityError, NotSupportedError))


class _FollowerWrapper:
    """Runs around every query on a follower connection.

    After a query: the follower's replay position arrives in ParameterStatus
    with the reply.  If the follower dies under an autocommit read, or
    recovery cancels the read (40001), run the same read on the leader, so
    that the request does not fail; a dead follower is skipped for the
    cool-down.  Never for the router's own questions to a follower.
    """

    def __init__(self, alias: str):
        self.alias = alias

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        conn = connections[self.alias]
        try:
            result = execute(sql, params, many, context)
        except DatabaseError as e:
            if conn.in_atomic_block or getattr(conn, "_readyourwrites_probing", False):
                raise
            conflict = _sqlstate(e) == "40001"
            if not conflict and not _broken(e, conn):
                raise
            config = get_config()
            if conflict:
                state.count("recovery_conflicts")
            else:
                state.mark_down(self.alias, e, config.cooldown_seconds)
            state.count("retried_on_leader")
            leader = connections[config.leader]
            leader.ensure_connection()
            wrapper = context["cursor"]
            with leader.wrap_database_errors:
                wrapper.cursor = leader.create_cursor()
                if many:
                    return wrapper.cursor.executemany(sql, params)
                if params is None:
                    return wrapper.cursor.execute(sql)
                return wrapper.cursor.execute(sql, params)
        state.saw_follower_at(self.alias, parse_token(
            parameter_status(raw_connection(conn), "distributed.replay_position")))
        return result
