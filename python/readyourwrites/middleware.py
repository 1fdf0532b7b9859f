"""Per-request routing context, for sync and async stacks.

Put it BEFORE django.contrib.sessions' SessionMiddleware, so that the
session's own save at the end of the request (the login case) runs inside
the context and is recorded under the session's key.  A streaming body,
sync or async, is produced inside the request's context too.
"""
import asyncio
import secrets
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from django.core import signing

from .conf import get_config
from .context import RoutingContext, activate, hash_key, hash_keys
from .leader import finish_context, observe
from .tokens import Token, format_tokens, parse_tokens

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction
except ImportError:  # asgiref < 3.6
    iscoroutinefunction = asyncio.iscoroutinefunction

    def markcoroutinefunction(func: Any) -> Any:
        func._is_coroutine = asyncio.coroutines._is_coroutine
        return func

__all__ = ["ReadYourWritesMiddleware"]

_COOKIE_SALT = "readyourwrites"
_KEY_SALT = "readyourwrites.key"
KEY_COOKIE_SUFFIX = "_key"
KEY_MAX_AGE = 365 * 24 * 3600  # the browser key outlives COOKIE_MAX_AGE by far


def _read_cookie(request: Any, config: Any) -> Tuple[Optional[str], Dict[str, Token]]:
    """The browser's key and each cluster's token from the signed cookie
    "<key>|<tokens>" (tokens.format_tokens; a cookie of version 0.2.0
    holds one token alone)."""
    try:
        value = request.get_signed_cookie(config.cookie_name, default=None, salt=_COOKIE_SALT,
                                          max_age=config.cookie_max_age)
    except (signing.BadSignature, ValueError):
        return None, {}  # tampered or older than COOKIE_MAX_AGE: demands nothing
    if not value:
        return None, {}
    key, _, tokens = value.rpartition("|")
    return key or None, {n: t for n, t in parse_tokens(tokens, config.default.name).items()
                         if config.cluster(n) is not None}


def _read_key(request: Any, config: Any) -> Optional[str]:
    """The browser's key from its own long-lived signed cookie."""
    try:
        return request.get_signed_cookie(config.cookie_name + KEY_COOKIE_SUFFIX, default=None,
                                         salt=_KEY_SALT, max_age=KEY_MAX_AGE) or None
    except (signing.BadSignature, ValueError):
        return None


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
        if config.enabled and config.token_store == "cookie":
            # The browser's key, not the session's: its writes are recorded
            # under it on each cluster's leader (whose map keeps the
            # highest), and a lookup finds what a concurrent request of the
            # same browser wrote after this cookie was set.  The tokens are
            # demanded at once.
            in_token, tokens = _read_cookie(request, config)
            ctx.browser_key = _read_key(request, config)
            ctx.key_came = ctx.browser_key is not None
            if ctx.browser_key is None:
                ctx.browser_key = in_token  # a token cookie from before the key cookie: its key goes on
            ctx.fixed_keys = hash_keys(ctx.browser_key) if ctx.browser_key else ()
            for name, token in tokens.items():
                ctx.part(name).cookie = token
                ctx.demand(name, token)
        return ctx

    @staticmethod
    def _take(ctx: RoutingContext) -> None:
        """Take the view's last commits (no query)."""
        try:
            observe()
        except Exception:
            pass

    def _set_cookie(self, ctx: RoutingContext, request: Any, response: Any) -> None:
        """The browser's key, in a long-lived cookie of its own, on every
        response to a request that came without it (no query); after a
        write, the token cookie too: the key and, per cluster, the highest
        of the token the request came with and its own writes (on the same
        timeline); a cluster the request did not write keeps its token.

        Two concurrent requests of one browser may answer in any order and
        the browser keeps the last cookie, perhaps the lower token: the key
        is what holds.  Both requests came with it and their writes are
        recorded under it, so the next request's lookup answers the higher.
        The key is issued on the first answer, whatever the request (not
        only on a write), and is not lost when the token cookie expires:
        only requests sent before the browser's first answer come without
        it.  A request that came without it and wrote records its writes
        under the new key when it ends (one query per cluster written)."""
        config = get_config()
        if not config.enabled or config.token_store != "cookie":
            return
        tokens, changed = {}, False
        for name, part in list(ctx.parts.items()):
            came, own = part.cookie, part.own
            if own is not None and not (came is not None and came.timeline == own.timeline and came.lsn >= own.lsn):
                tokens[name], changed = own, True
            elif came is not None:
                tokens[name] = came
        key = ctx.browser_key
        if key is None:
            key = ctx.browser_key = secrets.token_urlsafe(18)
            if any(p.own is not None for p in list(ctx.parts.values())):
                ctx.also_record.add(hash_key(key))  # by finish_context, after this
        if not ctx.key_came:
            response.set_signed_cookie(config.cookie_name + KEY_COOKIE_SUFFIX, key, salt=_KEY_SALT,
                                       max_age=KEY_MAX_AGE, httponly=True, samesite="Lax",
                                       secure=request.is_secure())
        if not changed:
            return  # the cookie stands
        response.set_signed_cookie(config.cookie_name, "%s|%s" % (key, format_tokens(tokens, config.default.name)),
                                   salt=_COOKIE_SALT, max_age=config.cookie_max_age, httponly=True,
                                   samesite="Lax", secure=request.is_secure())

    def _stream(self, ctx: RoutingContext, response: Any) -> None:
        content = response.streaming_content
        if getattr(response, "is_async", False):
            async def abody() -> Any:
                from asgiref.sync import sync_to_async

                it = content.__aiter__()
                try:
                    while True:
                        with activate(ctx):
                            try:
                                chunk = await it.__anext__()
                            except StopAsyncIteration:
                                return
                        yield chunk
                finally:
                    await sync_to_async(finish_context, thread_sensitive=True)(ctx)
            response.streaming_content = abody()
            return

        def body() -> Iterator[Any]:
            try:
                it = iter(content)
                while True:
                    with activate(ctx):
                        try:
                            chunk = next(it)
                        except StopIteration:
                            return
                    yield chunk
            finally:
                finish_context(ctx)
        response.streaming_content = body()

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self.__acall__(request)
        ctx = self._context(request)
        with activate(ctx):
            response = self.get_response(request)
            self._take(ctx)
            self._set_cookie(ctx, request, response)
            if getattr(response, "streaming", False):
                self._stream(ctx, response)
            else:
                finish_context(ctx)
        return response

    async def __acall__(self, request: Any) -> Any:
        from asgiref.sync import sync_to_async

        ctx = self._context(request)
        with activate(ctx):
            response = await self.get_response(request)
            await sync_to_async(self._take, thread_sensitive=True)(ctx)
            self._set_cookie(ctx, request, response)
            if getattr(response, "streaming", False):
                self._stream(ctx, response)
            else:
                await sync_to_async(finish_context, thread_sensitive=True)(ctx)
        return response
