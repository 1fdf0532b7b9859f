"""What a task carries from the code that enqueued it to the worker that
runs it (readyourwrites.tasks, readyourwrites.celery).

The carried value is signed (never a session key, nor its hash):
"<token>", "<token>;leader" or ";leader".  ";leader" asks the worker to
demand the leader's position when the task starts (one query): the
enqueuing code was inside a transaction on the leader, whose writes had no
token yet, or its key's lookup failed.  A value of 0.2.0 holds the token
alone.  The worker also demands its own thread's last commit: a queue kept
on the leader alias makes the worker's claim of the task such a commit, at
or past everything the enqueuing transaction wrote.
"""
import logging
from typing import Any, Optional

from django.core import signing

from .api import acting_for, use_leader
from .context import current, thread_own
from .leader import _highest, leader_in_transaction, leader_position, token_to_carry
from .tokens import parse_token

logger = logging.getLogger("readyourwrites")

__all__ = ["signed_carry", "worker_scope"]

_AT_START = "leader"


def _in_transaction() -> bool:
    try:
        return leader_in_transaction()
    except Exception:  # no router settings (a publish elsewhere): nothing to carry
        return False


def signed_carry(salt: str) -> Optional[str]:
    """The signed value to carry, or None (nothing to demand).  May query
    the leader (the key's lookup); never raises for it."""
    if current() is None and thread_own() is None and not _in_transaction():
        return None
    token, at_start = token_to_carry()
    if token is None and not at_start:
        return None
    value = "" if token is None else str(token)
    if at_start:
        value += ";" + _AT_START
    return signing.dumps(value, salt=salt)


def worker_scope(value: Any, salt: str, max_age: int) -> Any:
    """The scope to run a task in, from its carried value: acting_for()
    demanding the carried token, the worker thread's own last commit and,
    when asked, the leader's position now; use_leader() if that position
    cannot be had.  None: nothing to demand (a tampered or week-old value
    demands nothing)."""
    if not value:
        return None
    try:
        text = signing.loads(value, salt=salt, max_age=max_age)
    except (signing.BadSignature, ValueError):
        return None
    if not isinstance(text, str):
        return None
    token_text, _, flag = text.partition(";")
    token = parse_token(token_text)
    if token is None and token_text:
        return None  # not a token: demands nothing, as before
    token = _highest(token, thread_own())
    if flag == _AT_START:
        try:
            token = _highest(token, leader_position())
        except Exception as e:  # the leader did not answer: it has everything
            logger.warning("could not ask the leader's position for a task (%s); its reads go to the leader", e)
            return use_leader()
    return None if token is None else acting_for(token=token)
