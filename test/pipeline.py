#!/usr/bin/python3
"""pipeline.py - send SQL statements as one libpq pipeline, with a single
Sync after the last one, and print what each returned.

    /usr/bin/python3 test/pipeline.py CONNSTR SQL [SQL ...]

Each statement goes out as Parse/Bind/Describe/Execute (extended query
protocol) without a Sync in between, so the server runs them in one implicit
transaction, as a driver's pipeline does.  Nothing is read until all are
sent.  One line of JSON per statement is printed to stdout:

    {"sql": "...", "rows": [[...], ...] or null,
     "error": null or {"sqlstate": "...", "message": "..."}}

After an error the server skips the rest of the pipeline up to the Sync;
those statements print {"error": {"sqlstate": "skipped", ...}}.  libpq is
called through ctypes, so nothing beyond the system's libpq.so.5 is needed.
Exit status: 0 when the pipeline ran, 2 on bad usage or a failed connection.
"""

import ctypes
import ctypes.util
import json
import sys

PGRES_COMMAND_OK = 1
PGRES_TUPLES_OK = 2
PGRES_PIPELINE_SYNC = 10
PGRES_PIPELINE_ABORTED = 11
CONNECTION_OK = 0
PG_DIAG_SQLSTATE = ord('C')


def load_libpq():
    lib = ctypes.CDLL(ctypes.util.find_library('pq') or 'libpq.so.5')
    vp, cp, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    for name, res, args in (
            ('PQconnectdb', vp, [cp]),
            ('PQstatus', ci, [vp]),
            ('PQerrorMessage', cp, [vp]),
            ('PQenterPipelineMode', ci, [vp]),
            ('PQsendQueryParams', ci, [vp, cp, ci, vp, vp, vp, vp, ci]),
            ('PQpipelineSync', ci, [vp]),
            ('PQgetResult', vp, [vp]),
            ('PQresultStatus', ci, [vp]),
            ('PQresultErrorField', cp, [vp, ci]),
            ('PQresultErrorMessage', cp, [vp]),
            ('PQntuples', ci, [vp]),
            ('PQnfields', ci, [vp]),
            ('PQgetisnull', ci, [vp, ci, ci]),
            ('PQgetvalue', cp, [vp, ci, ci]),
            ('PQclear', None, [vp]),
            ('PQfinish', None, [vp])):
        f = getattr(lib, name)
        f.restype = res
        f.argtypes = args
    return lib


def main(argv):
    if len(argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    pq = load_libpq()
    conn = pq.PQconnectdb(argv[1].encode())
    if pq.PQstatus(conn) != CONNECTION_OK:
        sys.stderr.write('connection failed: %s\n' % pq.PQerrorMessage(conn).decode())
        return 2
    statements = argv[2:]
    if pq.PQenterPipelineMode(conn) != 1:
        sys.stderr.write('cannot enter pipeline mode\n')
        return 2
    for sql in statements:
        if pq.PQsendQueryParams(conn, sql.encode(), 0, None, None, None, None, 0) != 1:
            sys.stderr.write('send failed: %s\n' % pq.PQerrorMessage(conn).decode())
            return 2
    if pq.PQpipelineSync(conn) != 1:
        sys.stderr.write('sync failed: %s\n' % pq.PQerrorMessage(conn).decode())
        return 2

    for sql in statements:
        out = {'sql': sql, 'rows': None, 'error': None}
        res = pq.PQgetResult(conn)
        while res:
            st = pq.PQresultStatus(res)
            if st == PGRES_TUPLES_OK:
                out['rows'] = [[None if pq.PQgetisnull(res, i, j)
                                else pq.PQgetvalue(res, i, j).decode()
                                for j in range(pq.PQnfields(res))]
                               for i in range(pq.PQntuples(res))]
            elif st == PGRES_PIPELINE_ABORTED:
                out['error'] = {'sqlstate': 'skipped', 'message': 'pipeline aborted'}
            elif st != PGRES_COMMAND_OK:
                code = pq.PQresultErrorField(res, PG_DIAG_SQLSTATE)
                out['error'] = {'sqlstate': code.decode() if code else None,
                                'message': pq.PQresultErrorMessage(res).decode().strip()}
            pq.PQclear(res)
            res = pq.PQgetResult(conn)    # NULL ends this statement's results
        print(json.dumps(out), flush=True)
    res = pq.PQgetResult(conn)
    if not res or pq.PQresultStatus(res) != PGRES_PIPELINE_SYNC:
        sys.stderr.write('expected the Sync result\n')
        return 2
    pq.PQclear(res)
    pq.PQfinish(conn)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
