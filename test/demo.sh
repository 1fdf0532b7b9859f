#!/bin/bash
# Run it: install what is needed, build and install the extension, start a
# local leader and one follower (as user postgres, in a scratch directory,
# on Unix sockets only), show the whole flow on them, then stop them; then
# run a small Django site under a write-then-read load on a leader and two
# followers (one held 200 ms behind) and print where the reads went.
#
#   bash test/demo.sh            # as root, from a clone
#   KEEP=1 bash test/demo.sh     # leave the first pair running; it prints how to stop them
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_AS=${RUN_AS:-postgres}

bash test/with-cluster.sh test/demo.py

echo
echo "== a Django site under load: read-your-writes with the router, and without it"
SCRATCH=$(mktemp -d /tmp/distributed-load.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
tar --exclude=__pycache__ -cf - python | tar -C "$SCRATCH" -xf -
chown -R "$RUN_AS": "$SCRATCH"
runuser -u "$RUN_AS" -- env -C "$SCRATCH" /usr/bin/python3 python/tests/load.py
