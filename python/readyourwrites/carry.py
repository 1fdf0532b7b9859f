"""What a task carries from the code that enqueued it to the worker that
runs it (readyourwrites.tasks, readyourwrites.celery).

The carried value is signed (never a session key, nor its hash):
"<tokens>" or "<tokens>;leader=<cluster>,...", the tokens as in the
cookie (tokens.format_tokens: one per cluster, the default cluster's
bare).  "leader=" names the clusters whose leader's position the worker
demands when the task starts (one query each): the enqueuing code was
inside a transaction on that leader, whose writes had no token yet, or the
key's lookup there failed.  A value of 0.2.0 holds one token alone.  The
worker also demands its own thread's last commits: a queue kept on a
leader alias makes the worker's claim of the task such a commit, at or
past everything the enqueuing transaction wrote there.
"""
import logging
from typing import Any, Dict, Optional

from django.core import signing

from .api import acting_for, use_leader
from .conf import get_config
from .context import current, thread_own
from .leader import _highest, leader_in_transaction, leader_position, token_to_carry
from .tokens import Token, format_tokens, parse_tokens

logger = logging.getLogger("readyourwrites")

__all__ = ["signed_carry", "worker_scope"]

_AT_START = "leader="


def _in_transaction() -> bool:
    try:
        return leader_in_transaction()
    except Exception:  # no router settings (a publish elsewhere): nothing to carry
        return False


def signed_carry(salt: str) -> Optional[str]:
    """The signed value to carry, or None (nothing to demand).  May query
    the leaders (the key's lookups); never raises for them."""
    if current() is None and not thread_own() and not _in_transaction():
        return None
    tokens, at_start = token_to_carry()
    if not tokens and not at_start:
        return None
    value = format_tokens(tokens, get_config().default.name)
    if at_start:
        value += ";" + _AT_START + ",".join(sorted(at_start))
    return signing.dumps(value, salt=salt)


def worker_scope(value: Any, salt: str, max_age: int) -> Any:
    """The scope to run a task in, from its carried value: acting_for()
    demanding, per cluster, the carried token, the worker thread's own last
    commit and, when asked, the leader's position now; use_leader() if
    that position cannot be had.  None: nothing to demand (a tampered or
    week-old value demands nothing)."""
    if not value:
        return None
    try:
        text = signing.loads(value, salt=salt, max_age=max_age)
    except (signing.BadSignature, ValueError):
        return None
    if not isinstance(text, str):
        return None
    config = get_config()
    token_text, _, flag = text.partition(";")
    carried = {n: t for n, t in parse_tokens(token_text, config.default.name).items() if config.cluster(n)}
    if token_text and not carried:
        return None  # not a token: demands nothing, as before
    at_start = set(flag[len(_AT_START):].split(",")) if flag.startswith(_AT_START) else set()
    tokens: Dict[str, Token] = {}
    for cluster in config.clusters:
        token = _highest(carried.get(cluster.name), thread_own(cluster.name))
        if cluster.name in at_start:
            try:
                token = _highest(token, leader_position(cluster))
            except Exception as e:  # the leader did not answer: it has everything
                logger.warning("could not ask %s's position for a task (%s); its reads go to the leader",
                               cluster.leader, e)
                return use_leader()
        if token is not None:
            tokens[cluster.name] = token
    return acting_for(token=tokens) if tokens else None
