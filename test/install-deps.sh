#!/bin/bash
# Install what building and testing distributed needs, from Debian 12's
# packages.  Idempotent: asks apt only when something is missing.
set -euo pipefail

PACKAGES=(
    make gcc
    postgresql-15 postgresql-server-dev-15 libpq-dev libkrb5-dev
    libipc-run-perl
    python3-psycopg2 python3-psycopg
    python3-django python3-celery
    pgbouncer
    patchelf
)

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: run as root (it installs Debian packages)" >&2
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -gt 0 ]; then
    # Debian's postgresql package would otherwise create and start a
    # "main" cluster on port 5432; the project starts its own servers.
    mkdir -p /etc/postgresql-common
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
    fi
    echo "install-deps: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
