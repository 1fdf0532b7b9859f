"""What this process knows about its databases, shared by all its threads.

Replay positions only grow on a timeline, so one proof that a follower
reached position P serves every later token up to P; the highest position
seen per follower is kept, and replaced when the follower reports another
timeline (a failover, or a rebuilt follower).
"""
import collections
import logging
import threading
import time
from typing import Deque, Dict, Iterable, Optional, Tuple

from .tokens import Token

logger = logging.getLogger("readyourwrites")

__all__ = ["FollowerState", "ProcessState", "state"]


class FollowerState:
    __slots__ = ("alias", "position", "observed_at", "lag_seconds", "lag_bytes",
                 "down_until", "down_since", "failures", "last_error")

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


class ProcessState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.followers: Dict[str, FollowerState] = {}
        # (monotonic time, leader position) when this process first saw it
        self._leader_seen: Deque[Tuple[float, Token]] = collections.deque(maxlen=256)
        self.counts: Dict[str, int] = collections.Counter()
        # token -> followers that answered "not yet" for it, newest tokens last
        self._refused: "collections.OrderedDict[Token, frozenset]" = collections.OrderedDict()
        self._all_down_logged = False

    # -- follower positions ------------------------------------------------
    def follower(self, alias: str) -> FollowerState:
        f = self.followers.get(alias)
        if f is None:
            with self._lock:
                f = self.followers.setdefault(alias, FollowerState(alias))
        return f

    def saw_follower_at(self, alias: str, token: Optional[Token]) -> None:
        """Record a report of the follower's position (a reply's
        ParameterStatus, or a check that it reached a token)."""
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
            # how far behind the leader it is, judged only against leader
            # positions this process had seen when the report arrived
            f.observed_at = now
            f.lag_seconds, f.lag_bytes = 0.0, 0
            for t, tok in self._leader_seen:
                if tok.timeline == pos.timeline and tok.lsn > pos.lsn:
                    f.lag_seconds = now - t
                    break
            if self._leader_seen:
                newest = self._leader_seen[-1][1]
                if newest.timeline == pos.timeline:
                    f.lag_bytes = max(0, newest.lsn - pos.lsn)

    def saw_leader_at(self, token: Optional[Token]) -> None:
        if token is None:
            return
        with self._lock:
            if not self._leader_seen or token > self._leader_seen[-1][1]:
                self._leader_seen.append((time.monotonic(), token))

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

    def note_usable(self, usable: Iterable[str]) -> None:
        usable = list(usable)
        with self._lock:
            if not usable and not self._all_down_logged:
                self._all_down_logged = True
                log = True
            elif usable and self._all_down_logged:
                self._all_down_logged = False
                log = False
                logger.info("followers usable again: %s", ", ".join(usable))
                return
            else:
                return
        if log:
            logger.warning("no follower is usable; reads go to the leader until one is")

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
                        "last_error": f.last_error,
                    }
                    for a, f in self.followers.items()
                },
            }

    def reset(self) -> None:
        with self._lock:
            self.followers.clear()
            self._leader_seen.clear()
            self._refused.clear()
            self.counts.clear()
            self._all_down_logged = False


state = ProcessState()
