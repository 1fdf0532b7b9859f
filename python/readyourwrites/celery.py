"""Celery: a task sees what the code that enqueued it had to see.

When a task is published inside a routing context (a request, acting_for),
the context's tokens, one per cluster -- signed, never a session key --
travel in a message header; the worker opens a context demanding them
around the task
(see carry.py: published inside a transaction on the leader, the task also
demands the leader's position when it starts; publish with
transaction.on_commit() so that the task cannot start before the commit).
Connected when the app is ready if Celery is installed.
"""
from typing import Any, Dict

from celery.signals import before_task_publish, task_postrun, task_prerun

from .carry import signed_carry, worker_scope

HEADER = "readyourwrites_token"
_SALT = "readyourwrites.celery"
MAX_AGE = 7 * 24 * 3600  # a message older than this demands nothing
_open: Dict[str, Any] = {}


def _on_publish(headers: Any = None, **kwargs: Any) -> None:
    if headers is None:
        return
    signed = signed_carry(_SALT)
    if signed is not None:
        headers[HEADER] = signed


def _header(task: Any) -> Any:
    request = getattr(task, "request", None)
    value = getattr(request, HEADER, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(HEADER)
    return value


def _on_prerun(task_id: str = "", task: Any = None, **kwargs: Any) -> None:
    scope = worker_scope(_header(task), _SALT, MAX_AGE)
    if scope is None:
        return
    scope.__enter__()
    _open[task_id] = scope


def _on_postrun(task_id: str = "", **kwargs: Any) -> None:
    scope = _open.pop(task_id, None)
    if scope is not None:
        scope.__exit__(None, None, None)


before_task_publish.connect(_on_publish, weak=False, dispatch_uid="readyourwrites.publish")
task_prerun.connect(_on_prerun, weak=False, dispatch_uid="readyourwrites.prerun")
task_postrun.connect(_on_postrun, weak=False, dispatch_uid="readyourwrites.postrun")
