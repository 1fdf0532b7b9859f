"""Settings, read in one place.

    READYOURWRITES = {
        "LEADER": "default",                 # alias that takes writes
        "FOLLOWERS": ["replica1", "replica2"],
        "POLICY": "wait",                    # "leader" | "wait" | "raise"
        "WAIT_MS": 50,                       # for POLICY "wait"
        "SESSION_KEY": "session",            # "session" | "user" | callable(request)
        "TOKEN_STORE": "leader",             # "leader" | "cookie"
        "POOLER": None,                      # "transaction" | "session" behind a pooler
        "ENABLED": True,                     # False: route nothing (every query to "default")
        "APPS": None,                        # app labels routed (None: every app)
    }

FOLLOWERS may be given as REPLICA_DATABASES (django-multidb-router's name);
one of the two is required.  Settings are read again when a test changes
them (the setting_changed signal).
"""
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
try:
    from django.core.signals import setting_changed
except ImportError:  # Django < 4.0
    from django.test.signals import setting_changed
from django.utils.module_loading import import_string

__all__ = ["Config", "get_config", "reset_config"]

POLICIES = ("leader", "wait", "raise")
POOLERS = (None, "transaction", "session")
STORES = ("leader", "cookie")


@dataclass(frozen=True)
class Config:
    leader: str
    followers: Tuple[str, ...]
    policy: str
    wait_ms: int
    session_key: Any  # "session", "user" or a callable(request) -> Optional[str]
    token_store: str
    cookie_name: str
    cookie_max_age: int
    cooldown_seconds: float
    max_lag_seconds: Optional[float]
    max_lag_bytes: Optional[int]
    pooler: Optional[str]
    key_secret: Optional[str]
    enabled: bool = True
    apps: Optional[Tuple[str, ...]] = None

    def key_secrets(self) -> Tuple[Any, ...]:
        """The secrets keys are hashed under: the current one first, then
        the fallbacks of a rotation in progress (SECRET_KEY_FALLBACKS)."""
        if self.key_secret is not None:
            return (self.key_secret,)
        return (settings.SECRET_KEY,) + tuple(getattr(settings, "SECRET_KEY_FALLBACKS", ()) or ())

    def key_function(self) -> Callable[[Any], Optional[str]]:
        if callable(self.session_key):
            return self.session_key
        if self.session_key == "session":
            return _session_key
        if self.session_key == "user":
            return _user_key
        if self.session_key == "auth":
            return _auth_key
        return import_string(self.session_key)


def _session_key(request: Any) -> Optional[str]:
    session = getattr(request, "session", None)
    return getattr(session, "session_key", None) if session is not None else None


def _user_key(request: Any) -> Optional[str]:
    user = getattr(request, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return "user:%s" % user.pk


def _auth_key(request: Any) -> Optional[str]:
    """For sites with API clients: the session key when there is one, else
    the Authorization header (a token or credentials: hashed, never sent)."""
    key = _session_key(request)
    if key:
        return key
    header = getattr(request, "META", {}).get("HTTP_AUTHORIZATION")
    return header or None


_config: Optional[Config] = None


def get_config() -> Config:
    global _config
    if _config is None:
        _config = _load()
    return _config


def reset_config(**kwargs: Any) -> None:
    """Forget the cached settings; done on every setting_changed."""
    global _config
    _config = None


def _on_setting_changed(setting: str = "", **kwargs: Any) -> None:
    if setting in ("READYOURWRITES", "REPLICA_DATABASES", "DATABASES", "SECRET_KEY", "SECRET_KEY_FALLBACKS"):
        reset_config()
        from . import context

        context.forget_hashes()


setting_changed.connect(_on_setting_changed, dispatch_uid="readyourwrites.setting_changed")


def _load() -> Config:
    raw = dict(getattr(settings, "READYOURWRITES", {}))
    leader = raw.pop("LEADER", "default")
    followers = raw.pop("FOLLOWERS", None)
    if followers is None:
        followers = getattr(settings, "REPLICA_DATABASES", None)
    if followers is None:
        raise ImproperlyConfigured("READYOURWRITES['FOLLOWERS'] (or REPLICA_DATABASES) must name the "
                                   "follower aliases: other databases are not taken as followers")
    followers = tuple(followers)
    for alias in (leader,) + followers:
        if alias not in settings.DATABASES:
            raise ImproperlyConfigured("READYOURWRITES names database %r, which is not in DATABASES" % alias)
    if leader in followers:
        raise ImproperlyConfigured("READYOURWRITES: the leader %r cannot also be a follower" % leader)
    policy = raw.pop("POLICY", "leader")
    if policy not in POLICIES:
        raise ImproperlyConfigured("READYOURWRITES['POLICY'] must be one of %s, not %r" % (", ".join(POLICIES), policy))
    store = raw.pop("TOKEN_STORE", "leader")
    if store not in STORES:
        raise ImproperlyConfigured("READYOURWRITES['TOKEN_STORE'] must be one of %s, not %r" % (", ".join(STORES), store))
    wait_ms = int(raw.pop("WAIT_MS", 50))
    if wait_ms < 0:
        raise ImproperlyConfigured("READYOURWRITES['WAIT_MS'] must not be negative")
    config = Config(
        leader=leader,
        followers=followers,
        policy=policy,
        wait_ms=wait_ms,
        session_key=raw.pop("SESSION_KEY", "session"),
        token_store=store,
        cookie_name=raw.pop("COOKIE_NAME", "readyourwrites"),
        cookie_max_age=int(raw.pop("COOKIE_MAX_AGE", 3600)),
        cooldown_seconds=float(raw.pop("COOLDOWN_SECONDS", 5.0)),
        max_lag_seconds=raw.pop("MAX_LAG_SECONDS", None),
        max_lag_bytes=raw.pop("MAX_LAG_BYTES", None),
        pooler=raw.pop("POOLER", None),
        key_secret=raw.pop("KEY_SECRET", None),
        enabled=bool(raw.pop("ENABLED", True)),
        apps=None if raw.get("APPS") is None else tuple(raw.pop("APPS")),
    )
    raw.pop("APPS", None)
    if config.session_key not in ("session", "user", "auth") and not callable(config.session_key):
        try:
            import_string(config.session_key)
        except ImportError as e:
            raise ImproperlyConfigured("READYOURWRITES['SESSION_KEY'] %r does not import (%s)"
                                       % (config.session_key, e))
    for name, value in (("MAX_LAG_SECONDS", config.max_lag_seconds), ("MAX_LAG_BYTES", config.max_lag_bytes)):
        if value is not None and (not isinstance(value, (int, float)) or value < 0):
            raise ImproperlyConfigured("READYOURWRITES[%r] must be a non-negative number or None" % name)
    if config.pooler not in POOLERS:
        raise ImproperlyConfigured("READYOURWRITES['POOLER'] must be None, 'transaction' or 'session', not %r" % (config.pooler,))
    if raw:
        raise ImproperlyConfigured("unknown READYOURWRITES settings: %s" % ", ".join(sorted(raw)))
    return config
