# Sourced by bench/run.sh, bench/latency.sh, bench/micro.sh and
# bench/smoke.sh: a local leader and streaming followers with the
# distributed library preloaded, run as an unprivileged user (initdb
# refuses root) in a scratch directory, on Unix sockets only.
#
#   cluster_start NFOLLOWERS      sets CLUSTER_DIR, LEADER, FOLLOWERS (array)
#   cluster_stop                  stops what cluster_start started, removes the directory
#   bench_begin NAME              a scratch directory WORK, and on exit: the proxy
#                                 (proxy_stop, if defined) and the servers stopped,
#                                 WORK copied to KEEP_WORK (if set) and removed;
#                                 then builds distbench and latproxy
#
# LEADER and FOLLOWERS[i] are libpq connection strings.
#
# Which PostgreSQL: PG_BINDIR (its bin directory) or PG_CONFIG, else
# Debian's 15.  For the latency scenario (bench/latency.sh):
#   CLUSTER_TCP=1         the servers also listen on 127.0.0.1 (same ports)
#   CLUSTER_REPL_PORT=P   followers stream from 127.0.0.1:P (a proxy that
#                         forwards to the leader) instead of its Unix socket

if [ -n "${PG_BINDIR:-}" ]; then
    PG_CONFIG=${PG_CONFIG:-$PG_BINDIR/pg_config}
fi
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export PG_CONFIG
RUN_AS=${RUN_AS:-postgres}
PGBIN=${PG_BINDIR:-$("$PG_CONFIG" --bindir)}
BASE_PORT=${BASE_PORT:-5450}
CLUSTER_DIR=
LEADER=
FOLLOWERS=()
CLUSTER_NODES=()

# A base port P with P..P+39 free on this host, for runs that listen on
# 127.0.0.1 (TCP ports, unlike Unix sockets in a scratch directory, are
# shared with every other run on the machine).
pick_base_port() {
    local base used
    used=$(ss -Htln 2>/dev/null | awk '{ n = split($4, a, ":"); print a[n] }')
    for _ in $(seq 1 50); do
        base=$((20000 + (RANDOM % 200) * 100))
        if ! awk -v b="$base" '$1 >= b && $1 < b + 40 { f = 1 } END { exit !f }' <<<"$used"; then
            echo "$base"
            return 0
        fi
    done
    echo 5470
}

as_pg() { runuser -u "$RUN_AS" -- "$@"; }

conninfo() { echo "host=$CLUSTER_DIR port=$1 user=postgres dbname=postgres"; }

cluster_start() {
    local nfollowers=$1 i port repl
    CLUSTER_DIR=$(mktemp -d /tmp/distbench.XXXXXX)
    chown "$RUN_AS": "$CLUSTER_DIR"
    as_pg "$PGBIN/initdb" -D "$CLUSTER_DIR/leader" -A trust -U postgres >/dev/null
    cat >> "$CLUSTER_DIR/leader/postgresql.conf" <<CONF
listen_addresses = '${CLUSTER_TCP:+127.0.0.1}'
unix_socket_directories = '$CLUSTER_DIR'
port = $BASE_PORT
shared_preload_libraries = 'distributed'
wal_level = replica
max_connections = 600
max_wal_senders = 10
shared_buffers = 128MB
max_wal_size = 2GB
CONF
    as_pg "$PGBIN/pg_ctl" -D "$CLUSTER_DIR/leader" -l "$CLUSTER_DIR/leader.log" -w start >/dev/null
    CLUSTER_NODES=(leader)
    LEADER=$(conninfo "$BASE_PORT")
    FOLLOWERS=()
    for i in $(seq 1 "$nfollowers"); do
        port=$((BASE_PORT + i))
        as_pg "$PGBIN/pg_basebackup" -h "$CLUSTER_DIR" -p "$BASE_PORT" -U postgres \
            -D "$CLUSTER_DIR/follower$i" -R
        sed -i "s/^port = $BASE_PORT\$/port = $port/" "$CLUSTER_DIR/follower$i/postgresql.conf"
        # A plain primary_conninfo, which wins over the one pg_basebackup -R
        # wrote (the last setting wins): that one carries the options of its
        # own libpq (sslcertmode, sslnegotiation from 16 on), which an older
        # libpq refuses, and the relocatable builds' walreceiver loads the
        # system's libpq 15.
        if [ -n "${CLUSTER_REPL_PORT:-}" ]; then
            repl="host=127.0.0.1 port=$CLUSTER_REPL_PORT"
        else
            repl="host=$CLUSTER_DIR port=$BASE_PORT"
        fi
        echo "primary_conninfo = '$repl user=postgres application_name=follower$i'" \
            >> "$CLUSTER_DIR/follower$i/postgresql.auto.conf"
        as_pg "$PGBIN/pg_ctl" -D "$CLUSTER_DIR/follower$i" -l "$CLUSTER_DIR/follower$i.log" -w start >/dev/null
        CLUSTER_NODES+=("follower$i")
        FOLLOWERS+=("$(conninfo "$port")")
    done
}

# Restart the leader, optionally overriding settings: cluster_restart_leader "-c x=y".
cluster_restart_leader() {
    as_pg "$PGBIN/pg_ctl" -D "$CLUSTER_DIR/leader" -m fast -w -o "${1:-}" \
        -l "$CLUSTER_DIR/leader.log" restart >/dev/null
}

cluster_stop_node() {
    as_pg "$PGBIN/pg_ctl" -D "$CLUSTER_DIR/$1" -m fast -w stop >/dev/null 2>&1 || true
}

cluster_stop() {
    local i
    [ -n "$CLUSTER_DIR" ] || return 0
    for ((i = ${#CLUSTER_NODES[@]} - 1; i >= 0; i--)); do
        cluster_stop_node "${CLUSTER_NODES[$i]}"
    done
    if [ -n "${KEEP_LOGS:-}" ]; then
        mkdir -p "$KEEP_LOGS" && cp "$CLUSTER_DIR"/*.log "$KEEP_LOGS"/ 2>/dev/null || true
    fi
    rm -rf "$CLUSTER_DIR"
    CLUSTER_DIR=
}

# The set-up and clean-up of a benchmark command (bench/run.sh, bench/latency.sh).
bench_begin() {
    WORK=$(mktemp -d "/tmp/$1.XXXXXX")
    trap bench_end EXIT
    trap 'exit 1' INT TERM
    echo "== build"
    make -s -C bench PG_CONFIG="$PG_CONFIG"
}

bench_end() {
    if declare -F proxy_stop >/dev/null; then proxy_stop; fi
    cluster_stop
    if [ -n "${KEEP_WORK:-}" ]; then mkdir -p "$KEEP_WORK" && cp -r "$WORK"/. "$KEEP_WORK"/; fi
    rm -rf "$WORK"
}
