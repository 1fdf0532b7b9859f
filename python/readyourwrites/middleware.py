"""Per-request routing context, for sync and async stacks.

Put it BEFORE django.contrib.sessions' SessionMiddleware, so that the
session's own save at the end of the request (the login case) runs inside
the context and is recorded under the session's key.
"""
from typing import Any, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from .conf import get_config
from .context import RoutingContext, activate
from .router import finish_context, own_token
from .state import state
from .tokens import parse_token

__all__ = ["ReadYourWritesMiddleware"]


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
                    config.cookie_name, default=None, salt="readyourwrites")))
            except Exception:
                pass
        return ctx

    def _finish(self, ctx: RoutingContext, response: Any) -> None:
        config = get_config()
        if not ctx.wrote:
            return
        finish_context(ctx)
        token = own_token(config)
        state.saw_leader_at(token)
        if token is not None and config.token_store == "cookie":
            response.set_signed_cookie(config.cookie_name, str(token), salt="readyourwrites",
                                       max_age=config.cookie_max_age, httponly=True, samesite="Lax")

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self.__acall__(request)
        ctx = self._context(request)
        with activate(ctx):
            response = self.get_response(request)
            self._finish(ctx, response)
        return response

    async def __acall__(self, request: Any) -> Any:
        from asgiref.sync import sync_to_async

        ctx = self._context(request)
        with activate(ctx):
            response = await self.get_response(request)
            await sync_to_async(self._finish, thread_sensitive=True)(ctx, response)
        return response
