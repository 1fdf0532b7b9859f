#!/bin/bash
# Install what is needed, build and install the extension, start a local
# leader and one follower (as user postgres, in a scratch directory, on Unix
# sockets only), run a client script against them, then stop them.
#
#   bash test/with-cluster.sh SCRIPT.py       # as root, from a clone
#   KEEP=1 bash test/with-cluster.sh ...      # leave the servers running
#
# The script is run as SCRIPT.py SOCKET_DIR LEADER_PORT FOLLOWER_PORT.
set -euo pipefail

SCRIPT=${1:?usage: with-cluster.sh SCRIPT.py}
cd "$(dirname "$0")/.."
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
RUN_AS=${RUN_AS:-postgres}
BIN=$("$PG_CONFIG" --bindir)

bash test/install-deps.sh
echo "== building and installing the extension"
make -s PG_CONFIG="$PG_CONFIG"
make -s PG_CONFIG="$PG_CONFIG" install

DIR=$(mktemp -d /tmp/distributed-demo.XXXXXX)
chown "$RUN_AS": "$DIR"
as_user() { runuser -u "$RUN_AS" -- "$@"; }

stop() {
    as_user "$BIN/pg_ctl" -D "$DIR/follower" -m fast stop >/dev/null 2>&1 || true
    as_user "$BIN/pg_ctl" -D "$DIR/leader" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
if [ -z "${KEEP:-}" ]; then trap stop EXIT; fi

echo "== starting a leader and a follower in $DIR"
as_user "$BIN/initdb" -D "$DIR/leader" -A trust -U postgres >/dev/null
cat >> "$DIR/leader/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$DIR'
port = 5440
shared_preload_libraries = 'distributed'
wal_level = replica
max_connections = 300
CONF
as_user "$BIN/pg_ctl" -D "$DIR/leader" -l "$DIR/leader.log" -w start >/dev/null
as_user "$BIN/pg_basebackup" -h "$DIR" -p 5440 -U postgres -D "$DIR/follower" -R
sed -i 's/^port = 5440/port = 5441/' "$DIR/follower/postgresql.conf"
as_user "$BIN/pg_ctl" -D "$DIR/follower" -l "$DIR/follower.log" -w start >/dev/null

# the unprivileged user may not be able to read the clone (say, under /root)
cp "$SCRIPT" "$DIR/client.py"
chown "$RUN_AS": "$DIR/client.py"
as_user /usr/bin/python3 "$DIR/client.py" "$DIR" 5440 5441

if [ -n "${KEEP:-}" ]; then
    echo
    echo "Servers left running: leader psql -h $DIR -p 5440 -U postgres, follower -p 5441."
    echo "Stop them with:"
    echo "  runuser -u $RUN_AS -- $BIN/pg_ctl -D $DIR/follower stop; runuser -u $RUN_AS -- $BIN/pg_ctl -D $DIR/leader stop"
else
    echo
    echo "== stopped both servers and removed $DIR"
fi
