"""System checks for what can be checked offline (manage.py check)."""
from typing import Any, List

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

_MIDDLEWARE = "readyourwrites.ReadYourWritesMiddleware"
_ROUTER = "readyourwrites.ReadYourWritesRouter"
_SESSION = "django.contrib.sessions.middleware.SessionMiddleware"


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> List[Any]:
    from .conf import _clusters, get_config, problems, reset_config

    errors: List[Any] = []
    reset_config()
    # the clusters' aliases and apps, each problem under its own id
    found = []
    try:
        found = problems(_clusters(dict(getattr(settings, "READYOURWRITES", {}))))
    except ImproperlyConfigured:
        pass  # told below, as E001
    errors.extend(Error(message, id=code) for code, message in found)
    try:
        get_config()
    except ImproperlyConfigured as e:
        if str(e) not in {message for _, message in found}:
            errors.append(Error(str(e), id="readyourwrites.E001"))
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    mw = [m for m in middleware if m in (_MIDDLEWARE, "readyourwrites.middleware.ReadYourWritesMiddleware")]
    if not mw:
        errors.append(Warning("ReadYourWritesMiddleware is not in MIDDLEWARE: requests get no routing context",
                              id="readyourwrites.W001"))
    elif _SESSION in middleware and middleware.index(mw[0]) > middleware.index(_SESSION):
        errors.append(Error("ReadYourWritesMiddleware must come before SessionMiddleware",
                            hint="Otherwise the session saved at the end of a login is not recorded "
                                 "under the session's key.", id="readyourwrites.E002"))
    routers = [r if isinstance(r, str) else type(r).__module__ + "." + type(r).__name__
               for r in getattr(settings, "DATABASE_ROUTERS", [])]
    if not any(r in (_ROUTER, "readyourwrites.router.ReadYourWritesRouter") for r in routers):
        errors.append(Warning("ReadYourWritesRouter is not in DATABASE_ROUTERS", id="readyourwrites.W002"))
    return errors
