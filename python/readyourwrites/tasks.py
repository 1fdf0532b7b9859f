"""Django's task framework (django.tasks, Django 6.0+): a task sees what
the code that enqueued it had to see.

    from readyourwrites.tasks import task

    @task                     # in place of django.tasks.task, same arguments
    def send_receipt(order_id): ...

    send_receipt.enqueue(order.pk)    # in a view, after writing the order

Enqueued inside a routing context (a request, acting_for) or after a write
of the thread's own, the task's keyword arguments carry the tokens (one per
cluster) the enqueuing code had to see, signed (never a session key, nor its hash);
whatever worker runs it -- another process, another machine -- runs it
inside acting_for(token=...), so its reads wait for (or skip) followers
that lack that write.  Enqueued inside a transaction on the leader, the
task also demands the leader's position when it starts (the transaction's
writes had no token yet); see carry.py.  Django offers no hook that runs
on both sides of a task, so the task class does it: enqueue() adds the
argument, call() and acall() take it off again.  A tampered or week-old token demands nothing.
"""
import dataclasses
import functools
from typing import Any, Callable, Dict, Optional

from django.tasks import task as _django_task
from django.tasks.base import Task as _DjangoTask

from .carry import signed_carry, worker_scope

__all__ = ["task", "Task", "KWARG"]

KWARG = "readyourwrites_token"
_SALT = "readyourwrites.tasks"
MAX_AGE = 7 * 24 * 3600


def _signed_token() -> Optional[str]:
    return signed_carry(_SALT)


def _carry(kwargs: Dict[str, Any], signed: Optional[str]) -> Dict[str, Any]:
    if signed is not None and KWARG not in kwargs:
        kwargs = dict(kwargs)
        kwargs[KWARG] = signed
    return kwargs


def _scope(kwargs: Dict[str, Any]) -> Any:
    """Take the carried value off kwargs: the scope to run the task in."""
    return worker_scope(kwargs.pop(KWARG, None), _SALT, MAX_AGE)


class _Carrying:
    """Mixed into the backend's task class."""

    __slots__ = ()

    def enqueue(self, *args: Any, **kwargs: Any) -> Any:
        return super().enqueue(*args, **_carry(kwargs, _signed_token()))  # type: ignore[misc]

    async def aenqueue(self, *args: Any, **kwargs: Any) -> Any:
        from asgiref.sync import sync_to_async

        signed = await sync_to_async(_signed_token, thread_sensitive=True)()
        return await super().aenqueue(*args, **_carry(kwargs, signed))  # type: ignore[misc]

    def call(self, *args: Any, **kwargs: Any) -> Any:
        scope = _scope(kwargs)
        if scope is None:
            return super().call(*args, **kwargs)  # type: ignore[misc]
        with scope:
            return super().call(*args, **kwargs)  # type: ignore[misc]

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        from asgiref.sync import sync_to_async

        scope = await sync_to_async(_scope, thread_sensitive=True)(kwargs)
        if scope is None:
            return await super().acall(*args, **kwargs)  # type: ignore[misc]
        async with scope:
            return await super().acall(*args, **kwargs)  # type: ignore[misc]


class Task(_Carrying, _DjangoTask):
    """django.tasks.Task that carries the enqueuing code's token."""

    __slots__ = ()


@functools.lru_cache(maxsize=None)
def _carrying_class(cls: type) -> type:
    if cls is _DjangoTask:
        return Task
    return type("Carrying" + cls.__name__, (_Carrying, cls), {"__slots__": (), "__module__": __name__})


def task(function: Optional[Callable] = None, **options: Any) -> Any:
    """django.tasks.task, with the task class carrying the token."""
    def wrapper(f: Callable) -> Any:
        plain = _django_task(**options)(f)
        fields = {fl.name: getattr(plain, fl.name) for fl in dataclasses.fields(plain)}
        return _carrying_class(type(plain))(**fields)

    if function is not None:
        return wrapper(function)
    return wrapper
