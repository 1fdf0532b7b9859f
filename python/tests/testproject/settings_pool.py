"""The test site with Django's connection pool (5.1+, psycopg 3) on the leader."""
from .settings import *  # noqa: F401,F403
from .settings import DATABASES

for _alias in DATABASES:
    DATABASES[_alias]["CONN_MAX_AGE"] = 0  # the pool forbids persistent connections
DATABASES["default"]["OPTIONS"] = {"pool": {"min_size": 1, "max_size": 1}}
