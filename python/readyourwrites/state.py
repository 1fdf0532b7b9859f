"""What this process knows about its databases, shared by all its threads.

Replay positions only grow on a timeline, so one proof that a follower
reached position P serves every later token up to P; the highest position
seen per follower is kept, and replaced when the follower reports another
timeline (a failover, or a rebuilt follower).

Follower aliases are unique across clusters, so what is known of a
follower is its cluster's; leader positions are kept per cluster (their
LSNs are positions in different WAL streams).  Reports are also sampled
(at most one every SAMPLE_SECONDS, over the last RATE_SECONDS or
SAMPLES) to estimate how fast a follower replays: replay_rate().
"""
import collections
import logging
import threading
import time
from typing import Deque, Dict, Iterable, Optional, Tuple

from .tokens import Token

logger = logging.getLogger("readyourwrites")

__all__ = ["FollowerState", "ProcessState", "state"]

SAMPLES = 64  # reports kept per follower for its replay rate ...
SAMPLE_SECONDS = 0.05  # ... at least this far apart (a later one replaces the newest) ...
RATE_SECONDS = 10.0  # ... the oldest kept the newest at least this old: the rate is recent


class FollowerState:
    __slots__ = ("alias", "position", "observed_at", "lag_seconds", "lag_bytes",
                 "down_until", "down_since", "failures", "last_error", "samples")

    def __init__(self, alias: str):
        self.alias = alias
        self.position: Optional[Token] = None
        self.observed_at = 0.0  # monotonic time of the last report of its position
        self.lag_seconds = 0.0  # behind the leader, as of that report
        self.lag_bytes = 0
        self.down_until = 0.0
        self.down_since = -1.0  # when it was last marked down: connections opened before are stale
        self.failures = 0
        self.last_error = ""
        # (monotonic time, position) of reports, oldest first, for the rate
        self.samples: Deque[Tuple[float, Token]] = collections.deque(maxlen=SAMPLES)


class ProcessState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.followers: Dict[str, FollowerState] = {}
        # per cluster: (monotonic time, leader position) when this process first saw it
        self._leader_seen: Dict[str, Deque[Tuple[float, Token]]] = {}
        self.counts: Dict[str, int] = collections.Counter()
        # token -> followers that answered "not yet" for it, newest tokens last
        self._refused: "collections.OrderedDict[Token, frozenset]" = collections.OrderedDict()
        self._all_down: set = set()  # clusters with no usable follower, as last logged
        self._leader_rtt: Dict[str, float] = {}  # cluster -> measured round trip to its leader, ms

    # -- follower positions ------------------------------------------------
    def follower(self, alias: str) -> FollowerState:
        f = self.followers.get(alias)
        if f is None:
            with self._lock:
                f = self.followers.setdefault(alias, FollowerState(alias))
        return f

    def saw_follower_at(self, alias: str, token: Optional[Token], sample: bool = True) -> None:
        """Record a report of the follower's position (a reply's
        ParameterStatus, or a check that it reached a token).  sample:
        the report is fresh (a reply just received), fit to measure the
        replay rate by; an idle connection's last report is not."""
        if token is None:
            return
        f = self.follower(alias)
        now = time.monotonic()
        with self._lock:
            known = f.position
            if known is not None and token.timeline < known.timeline:
                return  # a late report from before a timeline switch
            # the latest report wins, even if lower: one server never goes
            # back, so a lower report is a late one (it costs a check) or
            # comes from another server behind the same alias (it saves a
            # stale read)
            f.position = token
            pos = f.position
            if sample:
                _sample(f, now, pos)
            # how far behind the leader it is, judged only against leader
            # positions this process had seen when the report arrived
            f.observed_at = now
            f.lag_seconds, f.lag_bytes = 0.0, 0
            seen = self._leader_seen.get(_cluster_of(alias), ())
            for t, tok in seen:
                if tok.timeline == pos.timeline and tok.lsn > pos.lsn:
                    f.lag_seconds = now - t
                    break
            if seen:
                newest = seen[-1][1]
                if newest.timeline == pos.timeline:
                    f.lag_bytes = max(0, newest.lsn - pos.lsn)

    def replay_rate(self, alias: str) -> Optional[float]:
        """Bytes of WAL the follower replayed per second, from its sampled
        reports: from the oldest kept to the newest, over the time from
        the oldest until now (so a follower that stopped advancing is seen
        slowing down).  None when unknown: fewer than two reports, or no
        progress between them (an idle follower and a paused one look the
        same)."""
        f = self.follower(alias)
        with self._lock:
            return _rate(f)

    def saw_leader_at(self, cluster: str, token: Optional[Token]) -> None:
        if token is None:
            return
        with self._lock:
            seen = self._leader_seen.get(cluster)
            if seen is None:
                seen = self._leader_seen[cluster] = collections.deque(maxlen=256)
            if not seen or token > seen[-1][1]:
                seen.append((time.monotonic(), token))

    def lagging(self, alias: str, max_seconds: Optional[float], max_bytes: Optional[int]) -> bool:
        """Over a lag limit as of its last report."""
        f = self.follower(alias)
        with self._lock:
            return ((max_seconds is not None and f.lag_seconds > max_seconds)
                    or (max_bytes is not None and f.lag_bytes > max_bytes))

    def report_age(self, alias: str) -> float:
        return time.monotonic() - self.follower(alias).observed_at

    def refused(self, token: Token) -> frozenset:
        return self._refused.get(token, frozenset())

    def refuse(self, token: Token, alias: str) -> None:
        with self._lock:
            self._refused[token] = self._refused.get(token, frozenset()) | {alias}
            self._refused.move_to_end(token)
            while len(self._refused) > 1024:
                self._refused.popitem(last=False)

    def saw_leader_rtt(self, cluster: str, ms: float) -> None:
        """A round trip of the router's own to a leader (a key lookup):
        a moving average, the newest weighing a fifth."""
        with self._lock:
            old = self._leader_rtt.get(cluster)
            self._leader_rtt[cluster] = ms if old is None else 0.8 * old + 0.2 * ms

    def leader_rtt(self, cluster: str) -> Optional[float]:
        return self._leader_rtt.get(cluster)

    # -- health ------------------------------------------------------------
    def mark_down(self, alias: str, error: BaseException, cooldown: float) -> None:
        f = self.follower(alias)
        with self._lock:
            f.down_since = time.monotonic()
            f.down_until = f.down_since + cooldown
            f.failures += 1
            f.last_error = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        logger.warning("follower %s failed (%s); skipping it for %.1f s", alias, f.last_error, cooldown)
        self.count("follower_failures")

    def is_up(self, alias: str) -> bool:
        return self.follower(alias).down_until <= time.monotonic()

    def note_usable(self, cluster: str, usable: Iterable[str]) -> None:
        """Log once when a cluster's last follower becomes unusable, and
        once when one is usable again."""
        usable = list(usable)
        with self._lock:
            was_down = cluster in self._all_down
            if not usable and not was_down:
                self._all_down.add(cluster)
            elif usable and was_down:
                self._all_down.discard(cluster)
            else:
                return
        if usable:
            logger.info("followers usable again: %s", ", ".join(usable))
        else:
            logger.warning("no follower is usable in cluster %s; its reads go to its leader until one is", cluster)

    # -- counters ----------------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def snapshot(self) -> Dict[str, object]:
        with self._lock:
            return {
                "counts": dict(self.counts),
                "followers": {
                    a: {
                        "position": str(f.position) if f.position else None,
                        "lag_seconds": round(f.lag_seconds, 3),
                        "lag_bytes": f.lag_bytes,
                        "down": f.down_until > time.monotonic(),
                        "failures": f.failures,
                        "replay_rate": None if _rate(f) is None else round(_rate(f)),  # bytes/s
                        "last_error": f.last_error,
                    }
                    for a, f in self.followers.items()
                },
                "leaders": {c: {"rtt_ms": round(ms, 3)} for c, ms in self._leader_rtt.items()},
            }

    def reset(self) -> None:
        with self._lock:
            self.followers.clear()
            self._leader_seen.clear()
            self._refused.clear()
            self.counts.clear()
            self._all_down.clear()
            self._leader_rtt.clear()


def _sample(f: FollowerState, now: float, pos: Token) -> None:
    """Keep a fresh report for the replay rate; caller holds the lock."""
    samples = f.samples
    if samples and samples[-1][1].timeline != pos.timeline:
        samples.clear()  # another timeline: its rate is unknown
    if samples and pos.lsn < samples[-1][1].lsn:
        return  # a report overtaken by another connection's: not a step back
    if len(samples) > 1 and now - samples[-2][0] < SAMPLE_SECONDS:
        # too close to the one before the newest: the newest moves on (the
        # samples stay SAMPLE_SECONDS apart, however often reports come)
        samples[-1] = (now, pos)
    else:
        samples.append((now, pos))
    # the oldest kept is the newest that is RATE_SECONDS old: the rate is
    # of the last seconds, not of the process's lifetime
    while len(samples) > 2 and now - samples[1][0] >= RATE_SECONDS:
        samples.popleft()


def _rate(f: FollowerState) -> Optional[float]:
    """replay_rate(); caller holds the lock."""
    if len(f.samples) < 2:
        return None
    (t0, first), (_, last) = f.samples[0], f.samples[-1]
    now = time.monotonic()
    if last.lsn <= first.lsn or now <= t0:
        return None
    return (last.lsn - first.lsn) / (now - t0)


def _cluster_of(alias: str) -> str:
    from .conf import get_config

    try:
        cluster = get_config().cluster_of(alias)
    except Exception:  # settings being changed: no lag is judged
        return ""
    return cluster.name if cluster is not None else ""


state = ProcessState()
