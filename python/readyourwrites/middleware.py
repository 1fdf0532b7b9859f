"""Per-request routing context, for sync and async stacks.

Put it BEFORE django.contrib.sessions' SessionMiddleware, so that the
session's own save at the end of the request (the login case) runs inside
the context and is recorded under the session's key.
"""
import asyncio
from typing import Any, Callable, Iterator

from .conf import get_config
from .context import RoutingContext, activate, leader_commit
from .router import finish_context
from .tokens import parse_token

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction
except ImportError:  # asgiref < 3.6 (Django 3.2 to 4.1 allow it)
    iscoroutinefunction = asyncio.iscoroutinefunction

    def markcoroutinefunction(func: Any) -> Any:
        func._is_coroutine = asyncio.coroutines._is_coroutine
        return func

__all__ = ["ReadYourWritesMiddleware"]

_COOKIE_SALT = "readyourwrites"


class ReadYourWritesMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]):
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def _context(self, request: Any) -> RoutingContext:
        config = get_config()
        ctx = RoutingContext(request=request, key_function=config.key_function())
        if config.token_store == "cookie":
            try:
                ctx.raise_token(parse_token(request.get_signed_cookie(
                    config.cookie_name, default=None, salt=_COOKIE_SALT)))
            except Exception:
                pass  # a tampered or expired cookie demands nothing
        return ctx

    @staticmethod
    def _start(ctx: RoutingContext) -> None:
        ctx.baseline = leader_commit()

    def _finish(self, ctx: RoutingContext, request: Any, response: Any) -> None:
        """Never raises: the request's writes have committed."""
        if not ctx.wrote:
            return
        config = get_config()
        finish_context(ctx)
        token = ctx.token
        if token is not None and config.token_store == "cookie" and not getattr(response, "streaming", False):
            response.set_signed_cookie(config.cookie_name, str(token), salt=_COOKIE_SALT,
                                       max_age=config.cookie_max_age, httponly=True, samesite="Lax",
                                       secure=request.is_secure())

    def _stream(self, ctx: RoutingContext, request: Any, response: Any) -> Any:
        """A streaming body is produced after the view returns: produce it
        inside the request's context too."""
        content = response.streaming_content
        if getattr(response, "is_async", False):
            return  # async streaming bodies run on the event loop: no queries there

        def body() -> Iterator[Any]:
            with activate(ctx):
                try:
                    yield from content
                finally:
                    self._finish(ctx, request, response)

        response.streaming_content = body()

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self.__acall__(request)
        ctx = self._context(request)
        with activate(ctx):
            self._start(ctx)
            response = self.get_response(request)
            if getattr(response, "streaming", False):
                self._stream(ctx, request, response)
            else:
                self._finish(ctx, request, response)
        return response

    async def __acall__(self, request: Any) -> Any:
        from asgiref.sync import sync_to_async

        ctx = self._context(request)
        with activate(ctx):
            await sync_to_async(self._start, thread_sensitive=True)(ctx)
            response = await self.get_response(request)
            if getattr(response, "streaming", False):
                self._stream(ctx, request, response)
            else:
                await sync_to_async(self._finish, thread_sensitive=True)(ctx, request, response)
        return response
