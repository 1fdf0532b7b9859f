#!/bin/bash
# Run it: install what is needed, build and install the extension, start a
# local leader and one follower (as user postgres, in a scratch directory,
# on Unix sockets only), show the whole flow on them, then stop them.
#
#   bash test/demo.sh            # as root, from a clone
#   KEEP=1 bash test/demo.sh     # leave the servers running; it prints how to stop them
cd "$(dirname "$0")/.." && exec bash test/with-cluster.sh test/demo.py
