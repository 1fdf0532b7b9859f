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
        "REGION": None,                      # the region this process runs in
    }

Several clusters (each leader with its own followers) are named under
CLUSTERS; the flat LEADER/FOLLOWERS/APPS above are the shorthand for one
cluster named "default":

    "CLUSTERS": {
        "users": {"LEADER": "users", "FOLLOWERS": ["users_r1", "users_r2"]},   # every other app
        "orders": {"LEADER": "orders", "FOLLOWERS": {"orders_r1": {"REGION": "us"}},
                   "APPS": ["orders"], "LEADER_RTT_MS": 40},
    }

FOLLOWERS is a list of aliases, or a dict alias -> {"REGION", "RTT_MS"}.
FOLLOWERS may be given as REPLICA_DATABASES (django-multidb-router's name);
one of the two is required.  Settings are read again when a test changes
them (the setting_changed signal).
"""
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
try:
    from django.core.signals import setting_changed
except ImportError:  # Django < 4.0
    from django.test.signals import setting_changed
from django.utils.module_loading import import_string

__all__ = ["Config", "ClusterConfig", "get_config", "reset_config", "problems"]

POLICIES = ("leader", "wait", "raise")
POOLERS = (None, "transaction", "session")
STORES = ("leader", "cookie")


#: expected round trip, in ms, to a server in another region when the
#: settings give no RTT_MS for it (REMOTE_RTT_MS overrides)
REMOTE_RTT_MS = 50.0


@dataclass(frozen=True)
class ClusterConfig:
    """One leader and its followers.  Follower aliases are unique across
    clusters, so what is known of a follower (state.py) is its cluster's."""

    name: str
    leader: str
    followers: Tuple[str, ...]
    apps: Optional[Tuple[str, ...]] = None  # None: the cluster of every app no other cluster names
    follower_regions: Tuple[Tuple[str, Optional[str], Optional[float]], ...] = ()  # (alias, region, rtt_ms)
    leader_region: Optional[str] = None
    leader_rtt_ms: Optional[float] = None

    def aliases(self) -> Tuple[str, ...]:
        return (self.leader,) + self.followers


@dataclass(frozen=True)
class Config:
    clusters: Tuple[ClusterConfig, ...]
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
    region: Optional[str] = None
    remote_rtt_ms: float = REMOTE_RTT_MS

    # -- clusters -------------------------------------------------------------
    @property
    def default(self) -> ClusterConfig:
        """The cluster a bare token (one without a cluster's name: a
        cookie, Celery header or task argument written under the flat
        settings, acting_for(token=...)) is a position of, and the one
        written bare: the cluster named "default" (the flat settings'
        name), else the one whose leader is the "default" alias (the flat
        LEADER's default), else the first.  Not the order of CLUSTERS
        alone: a site moving to CLUSTERS, or reordering them, must not
        read outstanding tokens as positions of another leader's WAL."""
        for c in self.clusters:
            if c.name == "default":
                return c
        for c in self.clusters:
            if c.leader == "default":
                return c
        return self.clusters[0]

    @property
    def leader(self) -> str:
        return self.default.leader

    @property
    def followers(self) -> Tuple[str, ...]:
        return self.default.followers

    def cluster(self, name: str) -> Optional[ClusterConfig]:
        for c in self.clusters:
            if c.name == name:
                return c
        return None

    def cluster_of(self, alias: Optional[str]) -> Optional[ClusterConfig]:
        """The cluster alias (a leader or a follower) belongs to."""
        for c in self.clusters:
            if alias == c.leader or alias in c.followers:
                return c
        return None

    def cluster_of_app(self, app_label: str) -> Optional[ClusterConfig]:
        """The cluster naming app_label in APPS, else the one without APPS."""
        fallback = None
        for c in self.clusters:
            if c.apps is None:
                fallback = fallback or c
            elif app_label in c.apps:
                return c
        return fallback

    def all_followers(self) -> Tuple[str, ...]:
        return tuple(a for c in self.clusters for a in c.followers)

    # -- regions ----------------------------------------------------------------
    def _rtt(self, region: Optional[str], rtt_ms: Optional[float]) -> Optional[float]:
        if rtt_ms is not None:
            return float(rtt_ms)
        if self.region is None or region is None:
            return None
        return 0.0 if region == self.region else self.remote_rtt_ms

    def follower_rtt(self, cluster: ClusterConfig, alias: str) -> float:
        """Expected round trip to a follower: its RTT_MS, else 0 in this
        process's region (or with no regions set), else REMOTE_RTT_MS."""
        for a, region, rtt in cluster.follower_regions:
            if a == alias:
                return self._rtt(region, rtt) or 0.0
        return 0.0

    def leader_rtt(self, cluster: ClusterConfig) -> Optional[float]:
        """Expected round trip to the leader; None when the settings do not
        say (LEADER_RTT_MS, or LEADER_REGION and REGION)."""
        return self._rtt(cluster.leader_region, cluster.leader_rtt_ms)

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


_CLUSTER_KEYS = ("LEADER", "FOLLOWERS", "APPS", "LEADER_REGION", "LEADER_RTT_MS")


def _rtt_value(value: Any, what: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ImproperlyConfigured("READYOURWRITES: %s must be a non-negative number of milliseconds" % what)
    return float(value)


def _cluster(name: str, raw: Dict[str, Any], followers_default: Any = None) -> ClusterConfig:
    raw = dict(raw)
    where = "cluster %r" % name
    leader = raw.pop("LEADER", "default")
    followers = raw.pop("FOLLOWERS", followers_default)
    if followers is None:
        raise ImproperlyConfigured("READYOURWRITES['FOLLOWERS'] (or REPLICA_DATABASES) must name the "
                                   "follower aliases of %s: other databases are not taken as followers" % where)
    regions: List[Tuple[str, Optional[str], Optional[float]]] = []
    if isinstance(followers, dict):
        for alias, opts in followers.items():
            opts = dict(opts or {})
            region, rtt = opts.pop("REGION", None), _rtt_value(opts.pop("RTT_MS", None), "RTT_MS of %r" % alias)
            if opts:
                raise ImproperlyConfigured("unknown READYOURWRITES settings for follower %r: %s"
                                           % (alias, ", ".join(sorted(opts))))
            regions.append((alias, region, rtt))
    followers = tuple(followers)
    apps = raw.pop("APPS", None)
    config = ClusterConfig(
        name=name, leader=leader, followers=followers,
        apps=None if apps is None else tuple(apps),
        follower_regions=tuple(regions),
        leader_region=raw.pop("LEADER_REGION", None),
        leader_rtt_ms=_rtt_value(raw.pop("LEADER_RTT_MS", None), "LEADER_RTT_MS of %s" % where),
    )
    if raw:
        raise ImproperlyConfigured("unknown READYOURWRITES settings for %s: %s" % (where, ", ".join(sorted(raw))))
    return config


def problems(clusters: Tuple[ClusterConfig, ...]) -> List[Tuple[str, str]]:
    """What is wrong across the clusters, as (check id, message): an alias
    not in DATABASES (E001, as with one cluster), an alias in two places
    (E003), an app in two clusters or two clusters without APPS (E004)."""
    found: List[Tuple[str, str]] = []
    where: Dict[str, str] = {}
    for c in clusters:
        for alias in c.aliases():
            if alias not in settings.DATABASES:
                found.append(("readyourwrites.E001", "READYOURWRITES names database %r (cluster %r), "
                              "which is not in DATABASES" % (alias, c.name)))
            if alias in where:
                found.append(("readyourwrites.E003", "READYOURWRITES: database %r is in cluster %r and again "
                              "in cluster %r" % (alias, where[alias], c.name)))
            where.setdefault(alias, c.name)
    apps: Dict[str, str] = {}
    catch_all = [c.name for c in clusters if c.apps is None]
    if len(catch_all) > 1:
        found.append(("readyourwrites.E004", "READYOURWRITES: clusters %s have no APPS; only one cluster can "
                      "take the apps no other cluster names" % ", ".join(map(repr, catch_all))))
    for c in clusters:
        for app in c.apps or ():
            if app in apps:
                found.append(("readyourwrites.E004", "READYOURWRITES: app %r is in cluster %r and again in "
                              "cluster %r" % (app, apps[app], c.name)))
            apps.setdefault(app, c.name)
    return found


def _clusters(raw: Dict[str, Any]) -> Tuple[ClusterConfig, ...]:
    named = raw.pop("CLUSTERS", None)
    if named is None:
        flat = {k: raw.pop(k) for k in _CLUSTER_KEYS if k in raw}
        return (_cluster("default", flat, getattr(settings, "REPLICA_DATABASES", None)),)
    mixed = [k for k in _CLUSTER_KEYS if k in raw]
    if mixed:
        raise ImproperlyConfigured("READYOURWRITES: %s belong inside CLUSTERS when CLUSTERS is given"
                                   % ", ".join(mixed))
    if not named:
        raise ImproperlyConfigured("READYOURWRITES['CLUSTERS'] names no cluster")
    return tuple(_cluster(str(name), c) for name, c in named.items())


def _load() -> Config:
    raw = dict(getattr(settings, "READYOURWRITES", {}))
    clusters = _clusters(raw)
    for code, message in problems(clusters):
        raise ImproperlyConfigured(message)
    for c in clusters:
        if c.leader in c.followers:
            raise ImproperlyConfigured("READYOURWRITES: the leader %r cannot also be a follower" % c.leader)
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
        clusters=clusters,
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
        region=raw.pop("REGION", None),
        remote_rtt_ms=_rtt_value(raw.pop("REMOTE_RTT_MS", REMOTE_RTT_MS), "REMOTE_RTT_MS"),
    )
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
