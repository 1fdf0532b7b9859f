#!/usr/bin/python3
"""pstatus.py - run SQL statements over one libpq connection and show, after
each, what the server reported in ParameterStatus messages.

    /usr/bin/python3 test/pstatus.py CONNSTR SQL [SQL ...]

The connection is in autocommit mode, so every statement is its own
transaction unless the statements include BEGIN ... COMMIT.  After each
statement one line of JSON is printed (and flushed) to stdout:

    {"sql": "...",                      # the statement
     "rows": [[...], ...] or null,      # its result rows, as text; null when
                                        # it returned no result set
     "error": null or {"sqlstate": "57014", "message": "..."},
     "last_commit": "1:0/3000148",      # get_parameter_status() of
     "replay_position": "1:0/3000148"}  # distributed.last_commit and
                                        # distributed.replay_position
                                        # (null if never reported)

An error does not stop the run: it is reported in "error" and the next
statement runs.  The TAP tests (test/t/*.pl, via test/lib/DistributedCluster.pm)
use this to see the values a real client receives, which psql cannot show.
Exit status: 0 when all statements ran (errors included), 2 on bad usage or
a failed connection.
"""

import json
import sys

import psycopg2
import psycopg2.extensions

REPORTED = ("distributed.last_commit", "distributed.replay_position")


def as_text(value):
    """Render a result value the way psql would (text), keeping NULL."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


def main(argv):
    if len(argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    try:
        conn = psycopg2.connect(argv[1])
    except psycopg2.Error as e:
        sys.stderr.write("connection failed: %s\n" % e)
        return 2
    conn.autocommit = True
    # Every column comes back as text: no type-specific parsing surprises.
    for oid in (16, 20, 21, 23, 700, 701, 1700, 1114, 1184):
        psycopg2.extensions.register_type(
            psycopg2.extensions.new_type((oid,), "TEXT%d" % oid,
                                         lambda v, cur: v), conn)
    cur = conn.cursor()
    for sql in argv[2:]:
        out = {"sql": sql, "rows": None, "error": None}
        try:
            cur.execute(sql)
            if cur.description is not None:
                out["rows"] = [[as_text(v) for v in row]
                               for row in cur.fetchall()]
        except psycopg2.Error as e:
            out["error"] = {"sqlstate": e.pgcode,
                            "message": (e.pgerror or str(e)).strip()}
        for name in REPORTED:
            try:
                value = conn.get_parameter_status(name)
            except psycopg2.Error:      # connection gone (terminated)
                value = None
            out[name.split(".", 1)[1]] = value
        print(json.dumps(out), flush=True)
    try:
        conn.close()
    except psycopg2.Error:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
