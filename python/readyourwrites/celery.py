"""Celery: a task sees what the code that enqueued it had to see.

When a task is published inside a routing context (a request, acting_for),
the context's tokens, one per cluster -- signed, never a session key --
travel in a message header; the worker opens a context demanding them
around the task.
Connected when the app is ready if Celery is installed.
"""
from typing import Any, Dict

from celery.signals import before_task_publish, task_postrun, task_prerun
from django.core import signing

from .api import acting_for, current_tokens
from .conf import get_config
from .context import current, thread_own
from .tokens import format_tokens, parse_tokens

HEADER = "readyourwrites_token"
_SALT = "readyourwrites.celery"
MAX_AGE = 7 * 24 * 3600  # a message older than this demands nothing
_open: Dict[str, Any] = {}


def _on_publish(headers: Any = None, **kwargs: Any) -> None:
    if headers is None or (current() is None and not thread_own()):
        return
    try:
        tokens = current_tokens()
    except Exception:
        return  # a leader did not answer: publish anyway, the task reads from the leader on its own
    if tokens:
        headers[HEADER] = signing.dumps(format_tokens(tokens, get_config().default.name), salt=_SALT)


def _header(task: Any) -> Any:
    request = getattr(task, "request", None)
    value = getattr(request, HEADER, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(HEADER)
    return value


def _on_prerun(task_id: str = "", task: Any = None, **kwargs: Any) -> None:
    value = _header(task)
    if not value:
        return
    try:
        text = signing.loads(value, salt=_SALT, max_age=MAX_AGE)
        config = get_config()
        tokens = {n: t for n, t in parse_tokens(text, config.default.name).items() if config.cluster(n)}
        scope = acting_for(token=tokens)
    except (signing.BadSignature, ValueError):
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
