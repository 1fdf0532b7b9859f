"""The database router: route_read() decides every read.

0. The model's cluster: the one of the alias the user's own routers give
   for a write of it (their db_for_write), else the one naming its app in
   APPS, else the one without APPS.  Everything below is that cluster's:
   its leader, its followers, the context's token for it;
1. ENABLED off, or a model no cluster owns: no opinion;
2. inside a transaction on the leader, or under use_leader(): the leader;
3. under use_follower(): any usable follower (staleness accepted);
4. no token to honour (no key, no write): any usable follower, in turn;
5. a follower whose connection -- the one that will serve the read -- has
   itself reported a replay position at or past the token: that follower,
   with no query (a new connection may reach a restarted follower, or
   another server behind the same host name: only its own report counts);
6. POLICY "wait", outside a transaction: the most promising follower
   connection, with the wait sent in the same round trip as the read
   (_FollowerWrapper puts CALL distributed.wait_for in front of it; a
   wait that times out sends the read to the leader);
7. otherwise one question to the most promising follower connection
   (distributed.is_replayed, or CALL distributed.wait_for for POLICY "wait");
8. otherwise the policy: the leader, or FollowerNotReady.

Regions (conf.Config.follower_rtt/leader_rtt): followers are tried nearest
first (rotating among equally near ones), in steps 3 to 7.  When the
leader's round trip is known (from the settings; with REGION set, else as
measured on the router's own key lookups), a follower that covers the token is taken
only if it is no farther than the leader, and a follower behind the token
is waited on (or asked) only if its round trip plus its predicted catch-up
-- the bytes it lacks over the replay rate it has shown (state.py) -- is
less than the leader's round trip; with no rate known, none is predicted
to catch up and the read goes to the leader ("leader_nearer").

Every round trip the router adds to a read is counted as
"extra_round_trips" in routing_stats().

Writes go to the leader; leader.py puts the session key in force and takes
the commit's token.
"""
import asyncio
import itertools
import logging
import threading
import time
import weakref
from typing import Any, List, Optional

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections, router as django_router
from django.db.backends.signals import connection_created

from . import drivers
from .conf import get_config
from .context import current
from .leader import needed_token, watch_leader
from .state import state
from .tokens import Token, parse_token

logger = logging.getLogger("readyourwrites")

__all__ = ["ReadYourWritesRouter", "FollowerNotReady", "route_read"]

_rotation = itertools.count()
_moved = threading.local()


def reads_moved_to_leader() -> int:
    """How many reads this thread routed to a follower were served by the
    leader instead (a wait that timed out with the read, a follower that
    failed under it).  Django's instance._state.db names the follower the
    read was routed to; compare this before and after a read to know."""
    return getattr(_moved, "n", 0)


def _move(alias: str, context: Any, sql: str, params: Any, many: bool) -> Any:
    """Run a read routed to follower alias on its leader instead."""
    _moved.n = getattr(_moved, "n", 0) + 1
    state.count("moved_to_leader")
    config = get_config()
    cluster = config.cluster_of(alias) or config.default
    return drivers.run_elsewhere(connections[cluster.leader], context, sql, params, many)


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


def _user_choice(model: Any, hints: Any) -> Optional[str]:
    """The alias the user's own routers send a write of model to (the
    first with an opinion, asked as django.db.utils.ConnectionRouter asks
    them), or None."""
    for r in django_router.routers:
        if isinstance(r, ReadYourWritesRouter):
            continue
        method = getattr(r, "db_for_write", None)
        if method is not None:
            alias = method(model, **hints)
            if alias:
                return alias
    return None


def _cluster_for(config: Any, model: Any, hints: Any) -> Any:
    """The cluster that owns a read or write of model, or None (no opinion)."""
    chosen = _user_choice(model, hints) if model is not None else None
    if chosen is not None:
        cluster = config.cluster_of(chosen)
    elif model is not None:
        cluster = config.cluster_of_app(model._meta.app_label)
    else:
        cluster = config.default
    instance = hints.get("instance")
    db = getattr(getattr(instance, "_state", None), "db", None)
    if cluster is None or db is None or db in cluster.aliases():
        return cluster
    if model is not None and not isinstance(instance, model) and config.cluster_of(db) is not None:
        # related access (order.user, user.order_set, a prefetch, a related
        # manager's create()) from an object of another cluster: the model
        # read or written is its own cluster's (with no opinion here,
        # Django would use the source object's database)
        return cluster
    return None  # the instance's own database, of another cluster, or none of ours


def _nearest(config: Any, cluster: Any, aliases: List[str]) -> List[str]:
    """Followers by expected round trip, nearest first, rotated among
    equally near ones (with no regions set: all, rotated)."""
    rotated = _rotated(aliases)
    rotated.sort(key=lambda a: config.follower_rtt(cluster, a))
    return rotated


def _predicted_ms(config: Any, cluster: Any, alias: str, token: Token) -> float:
    """Expected cost of a read on alias after it catches up with token:
    its round trip plus the bytes it lacks over its replay rate.  Infinite
    when its position or rate is unknown: no wait is bet on a guess."""
    pos = _reported(alias, config)
    rate = state.replay_rate(alias)
    if pos is None or pos.timeline != token.timeline or not rate:
        return float("inf")
    return config.follower_rtt(cluster, alias) + max(0, token.lsn - pos.lsn) * 1000.0 / rate


def route_read(model: Any = None, **hints: Any) -> Optional[str]:
    """The one function that decides where a read goes (None: no opinion)."""
    config = get_config()
    if not config.enabled:
        return None
    cluster = _cluster_for(config, model, hints)
    if cluster is None:
        return None
    ctx = current()
    if ctx is not None and (ctx.leader_depth > 0 or ctx._in_key):  # _in_key: this thread finds the key
        return cluster.leader
    leader = connections[cluster.leader]
    if leader.in_atomic_block or (leader.connection is not None and not leader.autocommit):
        return cluster.leader  # a transaction stays on one database
    if _in_event_loop():
        state.count("fallback_event_loop")
        return cluster.leader  # no query may run on the loop; the leader is always right
    usable = _usable(config, cluster)
    state.note_usable(cluster.name, usable)
    if not usable:
        state.count("fallback_no_follower")
        return cluster.leader
    if ctx is not None and ctx.follower_depth > 0:
        return _connect_first(_nearest(config, cluster, usable), config) or cluster.leader
    try:
        token = needed_token(ctx, cluster)
    except Exception as e:  # a DatabaseError, or InterfaceError on a closed connection
        logger.warning("token lookup on the leader failed (%s); reading from the leader", e)
        state.count("fallback_lookup_failed")
        return cluster.leader
    if token is None:
        return _connect_first(_nearest(config, cluster, usable), config) or cluster.leader

    # nearest first; among equally near, open connections first: their
    # reports cost nothing
    leader_rtt = config.leader_rtt(cluster)
    if leader_rtt is None and config.region is not None:
        leader_rtt = state.leader_rtt(cluster.name)  # measured on the router's own lookups, if any yet
    ordered = _rotated(usable)
    ordered.sort(key=lambda a: (config.follower_rtt(cluster, a), connections[a].connection is None))
    behind = []
    raise_ = config.policy == "raise"
    for alias in ordered:
        farther = leader_rtt is not None and config.follower_rtt(cluster, alias) > leader_rtt
        if farther and not raise_:
            continue  # the leader is nearer, whatever it has: not even a connection (a round trip)
        if _connect_first([alias], config) is None:
            continue
        pos = _reported(alias, config)
        if pos is not None and pos.covers(token):
            # under "raise" a follower that has the write is the answer,
            # however far: the leader is never read for a token
            state.count("proven_by_report")
            return alias
        behind.append(alias)
    if leader_rtt is not None and config.policy != "raise":
        # only a follower predicted to catch up before a leader round
        # trip would return is worth a wait or a question
        behind = [a for a in behind if _predicted_ms(config, cluster, a, token) < leader_rtt]
        if not behind:
            state.count("leader_nearer")
            return cluster.leader
    # Ask the connection that reported the furthest position (the nearest
    # first); one that already said "not yet" to this token is asked after
    # the others.  A wait is one question (it took its time); checks go on
    # down the list.
    refused = state.refused(token)
    behind.sort(key=lambda a: (-config.follower_rtt(cluster, a), a not in refused)
                + _rank(_reported(a, config), token), reverse=True)
    wait = config.policy == "wait" and config.wait_ms > 0
    if wait and behind:
        # a wait already due on a connection (this read was routed once
        # before: Django asks for a queryset's database more than once)
        for alias in behind:
            due = _watch(alias).pending
            if due is not None and due.covers(token):
                return alias
        alias = behind[0]
        conn = connections[alias]
        if not conn.in_atomic_block and conn.get_autocommit():
            # The read is executed right after this decision, on this
            # thread's connection: the wrapper sends the wait with it.
            _watch(alias).pending = token
            state.count("waits_deferred")
            return alias
    for alias in behind:
        outcome = _ask(alias, token, config)
        if outcome == "reached":
            return alias
        if outcome != "failed":
            state.refuse(token, alias)
            if wait:
                break
    if config.policy == "raise":
        state.count("raised")
        raise FollowerNotReady(token, behind)
    state.count("fallback_leader")
    return cluster.leader


class ReadYourWritesRouter:
    """DATABASE_ROUTERS = ["readyourwrites.ReadYourWritesRouter"]"""

    def db_for_read(self, model: Any, **hints: Any) -> Optional[str]:
        alias = route_read(model, **hints)
        if alias is not None:
            state.count("reads:" + alias)
        return alias

    def db_for_write(self, model: Any, **hints: Any) -> Optional[str]:
        config = get_config()
        if not config.enabled:
            return None
        cluster = _cluster_for(config, model, hints)
        if cluster is None:
            return None
        state.count("writes")
        watch_leader(connections[cluster.leader])
        return cluster.leader

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> Optional[bool]:
        config = get_config()
        cluster = config.cluster_of(obj1._state.db)
        if cluster is not None and obj2._state.db in cluster.aliases():
            return True  # one cluster: one database, replicated
        other = config.cluster_of(obj2._state.db)
        if cluster is not None and other is not None:
            return False  # two clusters: two databases, no foreign key between them
        return None

    def allow_migrate(self, db: str, app_label: str, model_name: Any = None, **hints: Any) -> Optional[bool]:
        try:
            config = get_config()
        except ImproperlyConfigured:
            # Django's own model checks ask this while manage.py check is
            # reporting the bad settings (readyourwrites.E00x); migrate stops
            # on those errors before any migration runs.
            return None
        if db in config.all_followers():
            return False  # followers replay the leader's schema
        cluster = config.cluster_of(db)
        if cluster is None or len(config.clusters) < 2:
            return None
        # an app's tables on the leader of the cluster that owns it only:
        # a table left on another leader would serve a misrouted query
        # stale rows instead of failing it (a user router placed before
        # this one decides for the models it routes elsewhere)
        owner = config.cluster_of_app(app_label)
        if owner is not None and owner.name != cluster.name:
            return False
        return None


# -- follower connections ------------------------------------------------------

class _FollowerWatch:
    __slots__ = ("raw", "opened_at", "proven", "pending", "__weakref__")

    def __init__(self) -> None:
        self.raw: Any = None
        self.opened_at = 0.0
        self.proven: Optional[Token] = None  # a check on this very connection said so
        self.pending: Optional[Token] = None  # the next read must first wait for this


_watches: "weakref.WeakKeyDictionary[Any, _FollowerWatch]" = weakref.WeakKeyDictionary()


def _watch(alias: str) -> _FollowerWatch:
    conn = connections[alias]
    w = _watches.get(conn)
    if w is None:
        w = _watches[conn] = _FollowerWatch()
        conn.execute_wrappers.insert(0, _FollowerWrapper(alias))
    raw = drivers.raw_connection(conn)
    if raw is not w.raw:  # another server, perhaps: nothing is known of it
        w.raw, w.opened_at, w.proven = raw, time.monotonic(), None
        # a wait due on a closed connection is still due: the read has
        # not run, and a new connection knows nothing more
    return w


def _reported(alias: str, config: Any) -> Optional[Token]:
    """The replay position this alias's connection has itself reported (or
    was proven at by a check).  Behind a pooler the start-up report may be
    another server connection's, cached: only checks count there."""
    w = _watch(alias)
    pos = w.proven
    if config.pooler is None:
        rep = parse_token(drivers.parameter_status(w.raw, "distributed.replay_position"))
        if rep is not None and (pos is None or rep.timeline != pos.timeline or rep.lsn > pos.lsn):
            pos = rep
    return pos


def _rotated(aliases: List[str]) -> List[str]:
    k = next(_rotation) % len(aliases)
    return aliases[k:] + aliases[:k]


def _rank(pos: Optional[Token], token: Token) -> tuple:
    if pos is None:
        return (2, 0)
    return (1 if pos.timeline == token.timeline else 0, pos.lsn)


def _usable(config: Any, cluster: Any) -> List[str]:
    """The cluster's followers not in a cool-down and not over a lag limit."""
    usable = []
    for alias in cluster.followers:
        if not state.is_up(alias):
            continue
        lagging = state.lagging(alias, config.max_lag_seconds, config.max_lag_bytes)
        if lagging and state.report_age(alias) < config.cooldown_seconds:
            continue  # over a lag limit; look again after the cool-down
        if lagging:
            if _connect_first([alias], config) is None:
                continue
            me = (threading.get_ident(), alias)
            _probing.add(me)
            try:
                with connections[alias].cursor() as cur:
                    cur.execute("SELECT distributed.replay_position()")
                    state.saw_follower_at(alias, parse_token(cur.fetchone()[0]))
            except DatabaseError as e:
                state.mark_down(alias, e, config.cooldown_seconds)
                continue
            finally:
                _probing.discard(me)
            state.count("lag_probes")
            state.count("extra_round_trips")
            if state.lagging(alias, config.max_lag_seconds, config.max_lag_bytes):
                continue
        usable.append(alias)
    return usable


def _connect_first(aliases: List[str], config: Any) -> Optional[str]:
    """The first follower that is (or can be) connected.  A saved
    connection opened before the follower was last seen failing is
    replaced, not tried: one outage arms the cool-down once, not once per
    thread's dead connection.  A new connection that fails arms it."""
    for alias in aliases:
        conn = connections[alias]
        failed_at = state.follower(alias).down_since
        drivers.renew_pool(conn, failed_at)  # Django's pool: its connections predate the failure
        if conn.connection is not None:
            w = _watch(alias)
            if drivers.raw_closed(conn) or w.opened_at < failed_at:
                drivers.discard_connection(conn)  # not back into a pool, to be lent again
        try:
            conn.ensure_connection()
        except DatabaseError as e:
            state.mark_down(alias, e, config.cooldown_seconds)
            continue
        w = _watch(alias)
        if config.pooler is None:
            # its last report, perhaps an idle connection's old one: a
            # position, not a sample of the replay rate
            state.saw_follower_at(alias, parse_token(drivers.parameter_status(w.raw, "distributed.replay_position")),
                                  sample=False)
        return alias
    return None


_probing = set()  # (thread id, alias) while the router asks a follower


def _ask(alias: str, token: Token, config: Any) -> str:
    """'reached', 'not yet' (any other answer), or 'failed'.

    A wait uses the procedure, which holds no snapshot while it sleeps (a
    held snapshot can make replay wait for it: a recovery conflict)."""
    conn = connections[alias]
    wait = config.policy == "wait" and config.wait_ms > 0
    me = (threading.get_ident(), alias)
    _probing.add(me)
    try:
        with conn.cursor() as cur:
            answer = None
            if wait and not conn.in_atomic_block:
                try:
                    cur.execute("CALL distributed.wait_for(%s, %s)", [str(token), config.wait_ms])
                    answer = "reached"
                except DatabaseError as e:
                    code = drivers.sqlstate(e)
                    if code == drivers.SNAPSHOT_HELD:
                        answer = None
                    elif code in drivers.WAIT_ANSWERS:
                        answer = drivers.WAIT_ANSWERS[code]
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
        _probing.discard(me)
        state.count("extra_round_trips")
    return _answered(alias, token, config, answer, wait)


def _answered(alias: str, token: Token, config: Any, answer: str, wait: bool) -> str:
    """Learn from a follower's answer to a check or a wait for token."""
    if answer in ("promoted", "not_in_recovery"):
        state.mark_down(alias, RuntimeError("%s is not in recovery" % alias), config.cooldown_seconds)
    state.count("waits" if wait else "checks")
    if answer == "reached":
        state.count("waits_reached" if wait else "checks_safe")
        w = _watch(alias)
        if w.proven is None or w.proven.timeline != token.timeline or token.lsn > w.proven.lsn:
            w.proven = token
        state.saw_follower_at(alias, token, sample=False)  # at least there: a bound, not its position
        return "reached"
    state.count("wait_" + answer if wait else "checks_unsafe")
    if answer != "failed":
        state.refuse(token, alias)
    return answer


class _FollowerWrapper:
    """Around every query on a follower connection: learn its replay
    position from the reply; if the follower dies under an autocommit read,
    or recovery cancels the read, run it on the leader instead."""

    def __init__(self, alias: str):
        self.alias = alias

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        conn = context["connection"]
        w = _watches.get(conn)
        probing = (threading.get_ident(), self.alias) in _probing
        if w is not None and w.pending is not None and not probing:
            token, w.pending = w.pending, None
            config = get_config()
            pos = _reported(self.alias, config)
            if pos is None or not pos.covers(token):
                return self._wait_then_read(token, config, execute, sql, params, many, context)
        return self._read(execute, sql, params, many, context)

    def _wait_then_read(self, token: Token, config: Any, execute: Any, sql: str, params: Any,
                        many: bool, context: Any) -> Any:
        """route_read chose this follower on condition that it first waits
        for token: in the read's own round trip where the driver allows,
        else by a question first.  A follower that does not catch up in
        time hands the read to the leader: never a stale read."""
        conn = context["connection"]
        form = drivers.combined_form(conn, context, many)
        if form is None:
            return self._wait_separately(token, config, execute, sql, params, many, context)
        state.count("waits_combined")
        try:
            result = drivers.execute_after_wait(form, execute, context, str(token), config.wait_ms, sql, params)
        except DatabaseError as e:
            answer = drivers.wait_refused(e)
            if answer is None and drivers.sqlstate(e) == drivers.SNAPSHOT_HELD:
                # a snapshot is held after all: wait() can wait under it
                return self._wait_separately(token, config, execute, sql, params, many, context)
            if answer is None:
                return self._failed(e, sql, params, many, context)
            # the wait's answer: this follower is not there yet (or never
            # will be); the leader has the write
            self._saw(conn)
            _answered(self.alias, token, config, answer, True)
            state.count("fallback_leader")
            state.count("extra_round_trips")
            return _move(self.alias, context, sql, params, many)
        _answered(self.alias, token, config, "reached", True)
        self._saw(conn)  # after: the reply's own report is the newer, and at least the token
        return result

    def _wait_separately(self, token: Token, config: Any, execute: Any, sql: str, params: Any,
                         many: bool, context: Any) -> Any:
        """Where the wait cannot go with the read (executemany, a
        server-side cursor, a transaction): ask first, then read."""
        conn = context["connection"]
        state.count("waits_separate")
        if _ask(self.alias, token, config) == "reached":
            return self._read(execute, sql, params, many, context)
        if conn.in_atomic_block:
            raise FollowerNotReady(token, [self.alias])  # a transaction stays on one database
        state.count("fallback_leader")
        state.count("extra_round_trips")
        return _move(self.alias, context, sql, params, many)

    def _read(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        conn = context["connection"]
        try:
            result = execute(sql, params, many, context)
        except DatabaseError as e:
            return self._failed(e, sql, params, many, context)
        self._saw(conn)
        return result

    def _saw(self, conn: Any) -> None:
        state.saw_follower_at(self.alias, parse_token(
            drivers.parameter_status(drivers.raw_connection(conn), "distributed.replay_position")))

    def _failed(self, e: BaseException, sql: str, params: Any, many: bool, context: Any) -> Any:
        """The follower failed the read: re-raise, or run it on the leader
        if the follower died under an autocommit read or recovery
        cancelled it."""
        conn = context["connection"]
        if conn.in_atomic_block or (threading.get_ident(), self.alias) in _probing:
            raise e
        conflict = drivers.sqlstate(e) == drivers.RECOVERY_CONFLICT
        if not conflict and not drivers.connection_lost(e, conn):
            raise e
        config = get_config()
        if conflict:
            state.count("recovery_conflicts")
        elif _watch(self.alias).opened_at >= state.follower(self.alias).down_since:
            state.mark_down(self.alias, e, config.cooldown_seconds)
        state.count("retried_on_leader")
        return _move(self.alias, context, sql, params, many)


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    try:
        config = get_config()
    except Exception:
        return
    cluster = config.cluster_of(connection.alias)
    if cluster is None:
        return
    if connection.alias == cluster.leader:
        watch_leader(connection)
    else:
        _watch(connection.alias)


connection_created.connect(_on_connection_created, dispatch_uid="readyourwrites.connection_created")
