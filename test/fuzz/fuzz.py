#!/usr/bin/python3
"""Generated hostile-input test for the distributed extension.

    /usr/bin/python3 test/fuzz/fuzz.py [--seed N] [--calls N] [--time S]

Starts its own temporary servers as the current (unprivileged) user: a
leader (initdb into a temporary directory, Unix socket only, the library
preloaded, distributed.max_sessions small) and a hot-standby follower made
with pg_basebackup.  It then throws thousands of seeded random, malformed
and boundary inputs at every SQL function and procedure of the extension
(the list is read from pg_proc, so a function the fuzzer does not know
fails the run) and at every distributed.* setting, as a superuser, a
pg_monitor member and a plain role, in a UTF8 and a SQL_ASCII database
(where keys and tokens may be any bytes but NUL), on the leader, on the
follower, and after the follower is promoted while waits are in flight.

Checked after every call:
  - the backend is alive (the connection still answers; a lost connection
    is a crash unless the call deliberately terminated it);
  - an error's SQLSTATE is one of the README's "### SQLSTATEs" table;
  - the call took less than --slow seconds (waits use 0..50 ms timeouts);
and, where the call succeeded, what it promises: a key never answers below
its last commit, record() never returns below its token, statuses are one
of the documented six, tokens read back in their text form, reported
settings (ParameterStatus) match the values.
At the end the server logs must show no crash ('terminated by signal',
PANIC, TRAP, ...), and every ERROR/FATAL a client backend logged must
carry a documented SQLSTATE (this covers connection-time settings).

The one exemption: bytes that are not valid UTF-8, sent to the UTF8
database on purpose, are refused by the server's input layer (22021)
before the extension sees them; they are counted separately.

Prints the seed first and "fuzz: N passed, M failed" last (N counts
checks); exits 1 on any failure.  Run as root, it re-runs itself as the
user "postgres" (or $FUZZ_USER).
"""

import argparse
import os
import pwd
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

DEFAULT_SEED = 20241121
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_README = os.path.normpath(os.path.join(HERE, '..', '..', 'README.md'))
STATUSES = {'reached', 'timeout', 'promoted', 'not_in_recovery', 'unreachable', 'stale_snapshot'}
TOKEN_RE = re.compile(r'[1-9][0-9]*:[0-9A-F]{1,8}/[0-9A-F]{1,8}\Z')
MAX_KEY = 128


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--seed', type=int,
                   default=int(os.environ.get('FUZZ_SEED', DEFAULT_SEED)))
    p.add_argument('--calls', type=int, default=int(os.environ.get('FUZZ_CALLS', 10000)),
                   help='fuzz calls to make (default 10000)')
    p.add_argument('--time', type=float, default=float(os.environ.get('FUZZ_TIME', 50)),
                   help='time budget for the calls, seconds (default 50)')
    p.add_argument('--slow', type=float, default=2.0,
                   help='a call slower than this fails (seconds)')
    p.add_argument('--readme', default=DEFAULT_README)
    p.add_argument('--pg-config', default=os.environ.get(
        'PG_CONFIG', '/usr/lib/postgresql/15/bin/pg_config'))
    p.add_argument('--keep', action='store_true', help='keep the data directories')
    p.add_argument('--verbose', '-v', action='store_true')
    return p.parse_args()


def reexec_unprivileged(args):
    """initdb refuses root: run again as an unprivileged user."""
    user = os.environ.get('FUZZ_USER', 'postgres')
    pw = pwd.getpwnam(user)
    d = tempfile.mkdtemp(prefix='distributed-fuzz-src.')
    shutil.copy(os.path.abspath(__file__), os.path.join(d, 'fuzz.py'))
    shutil.copy(args.readme, os.path.join(d, 'README.md'))
    for f in (d, os.path.join(d, 'fuzz.py'), os.path.join(d, 'README.md')):
        os.chown(f, pw.pw_uid, pw.pw_gid)
    argv = ['runuser', '-u', user, '--', sys.executable, os.path.join(d, 'fuzz.py'),
            '--seed', str(args.seed), '--calls', str(args.calls), '--time', str(args.time),
            '--slow', str(args.slow), '--readme', os.path.join(d, 'README.md'),
            '--pg-config', args.pg_config]
    if args.keep:
        argv.append('--keep')
    if args.verbose:
        argv.append('--verbose')
    rc = subprocess.call(argv, cwd=d)
    shutil.rmtree(d, ignore_errors=True)
    sys.exit(rc)


def documented_sqlstates(readme):
    """SQLSTATEs of the README's '### SQLSTATEs' table."""
    text = open(readme, encoding='utf-8').read()
    m = re.search(r'^### SQLSTATEs\s*$(.*?)(?=^#)', text + '\n#', re.M | re.S)
    if not m:
        sys.exit('fuzz: no "### SQLSTATEs" section in %s' % readme)
    codes = set(re.findall(r'^\|\s*`([0-9A-Z]{5})`\s*\|', m.group(1), re.M))
    if not codes:
        sys.exit('fuzz: the SQLSTATE table in %s is empty' % readme)
    return codes


# --------------------------------------------------------------------------
# SQL text.  Queries are built as bytes, so that the SQL_ASCII database can
# be sent any byte but NUL.
# --------------------------------------------------------------------------

class Raw:
    """An SQL fragment, inserted as is."""
    def __init__(self, sql):
        self.sql = sql if isinstance(sql, bytes) else sql.encode()

    def __repr__(self):
        return 'Raw(%r)' % self.sql[:80]


class BadBytes(bytes):
    """Bytes that are not valid UTF-8 (refused by a UTF8 database: 22021)."""


def lit(v):
    if v is None:
        return b'NULL'
    if isinstance(v, Raw):
        return v.sql
    if isinstance(v, bool):
        return b'true' if v else b'false'
    if isinstance(v, int):
        return str(v).encode()
    if isinstance(v, str):
        v = v.encode('utf-8')
    assert b'\0' not in v
    return b"'" + v.replace(b"'", b"''") + b"'"


def sql(fmt, *vals):
    """fmt uses {} placeholders for literals (given as Python values)."""
    parts = fmt.split('{}')
    assert len(parts) == len(vals) + 1, fmt
    out = parts[0].encode()
    for v, rest in zip(vals, parts[1:]):
        out += lit(v) + rest.encode()
    return out


def nbytes(v):
    if v is None or isinstance(v, Raw):
        return 0
    return len(v.encode('utf-8')) if isinstance(v, str) else len(v)


def short(b, n=160):
    if isinstance(b, str):
        b = b.encode('utf-8', 'replace')
    r = repr(b[:n])
    return r + ('... (%d bytes)' % len(b) if len(b) > n else '')


# --------------------------------------------------------------------------
# Generators
# --------------------------------------------------------------------------

UNI_POOLS = [
    (0x20, 0x7e), (0x01, 0x1f), (0x7f, 0x7f), (0xa0, 0xff), (0x300, 0x36f),
    (0x202a, 0x202e), (0x200b, 0x200f), (0xfeff, 0xfeff), (0x4e00, 0x4e80),
    (0x1f600, 0x1f64f), (0xfff0, 0xffff), (0x10fff0, 0x10ffff), (0x660, 0x669),
    (0xff10, 0xff19),
]
SPECIAL = ["'", '"', '\\', '$', '$$', '%', '%s', ';', '--', '/*', ':', '/',
           '\n', '\r', '\t', ' ', 'E\'', '\\0', '\\x00', '%n', '{}', "'; SELECT 1; --"]
BAD_UTF8 = [b'\xff', b'\xc3\x28', b'\xe2\x82', b'\xed\xa0\x80', b'\xc0\xaf',
            b'\xf8\x88\x80\x80\x80', b'\x80', b'\xf4\x90\x80\x80']


class Gen:
    def __init__(self, rnd):
        self.r = rnd

    def uni(self, n):
        r = self.r
        out = []
        for _ in range(n):
            if r.random() < 0.08:
                out.append(r.choice(SPECIAL))
            else:
                lo, hi = r.choice(UNI_POOLS)
                out.append(chr(r.randint(lo, hi)))
        return ''.join(out)

    def binary(self, n):
        return bytes(self.r.randint(1, 255) for _ in range(n))

    def length(self):
        r = self.r.random()
        if r < 0.55:
            return self.r.randint(0, 24)
        if r < 0.85:
            return self.r.randint(120, 136)
        if r < 0.97:
            return self.r.randint(200, 5000)
        return self.r.choice([65536, 300000, 1000000])

    def junk(self, ascii_db, n=None, allow_bad=True):
        """Arbitrary text: valid Unicode, or in the SQL_ASCII database any
        bytes; rarely invalid UTF-8 for the UTF8 database."""
        n = self.length() if n is None else n
        r = self.r.random()
        if ascii_db and r < 0.5:
            return self.binary(n)
        if not ascii_db and allow_bad and r < 0.02:
            s = self.uni(min(n, 40)).encode('utf-8')
            i = self.r.randint(0, len(s))
            return BadBytes(s[:i] + self.r.choice(BAD_UTF8) + s[i:])
        return self.uni(n)

    # keys ----------------------------------------------------------------
    def key(self, ascii_db, nullable=True):
        r, c = self.r, self.r.random()
        if nullable and c < 0.04:
            return None
        if c < 0.08:
            return ''
        if c < 0.30:    # exactly at or around the 128-byte limit
            n = r.choice([1, 127, 128, 129, 130, MAX_KEY])
            unit = r.choice(['k', 'é', '€', '😀', '\x01', "'", '\\'])
            u = len(unit.encode())
            s = unit * (n // u) + 'x' * (n % u)
            return s
        if c < 0.45:    # plausible keys (hex digests), a small set that repeats
            return r.choice(['alice', 'bob', 'carol', 'dave', 'erin', 'frank',
                             'grace', 'heidi']) + r.choice(['', str(r.randint(0, 20))])
        if c < 0.50:
            return '%064x' % r.getrandbits(256)
        if c < 0.53:
            return 'k' * r.choice([1000, 65536, 1000000])
        return self.junk(ascii_db)

    # tokens --------------------------------------------------------------
    def lsn_value(self, pos):
        r = self.r
        c = r.random()
        if c < 0.45 and pos is not None:
            d = r.choice([0, 0, 1, -1, 8, -8, 24, 4096, -4096, 1 << 20, 1 << 24,
                          -(1 << 24), 1 << 32, r.randint(-1 << 16, 1 << 16)])
            return max(0, min((1 << 64) - 1, pos + d))
        return r.choice([0, 1, 0xFFFFFFFF, 1 << 32, (1 << 32) + 1, (1 << 64) - 1,
                         (1 << 63), r.getrandbits(64), r.getrandbits(40), r.getrandbits(28)])

    def lsn_text(self, v, lower=False, pad=0):
        hi, lo = '%X' % (v >> 32), '%X' % (v & 0xFFFFFFFF)
        if pad:
            hi, lo = hi.zfill(pad), lo.zfill(pad)
        s = hi + '/' + lo
        return s.lower() if lower else s

    def tli(self, cur):
        return self.r.choice([cur, cur, cur, 1, 2, 3, cur + 1, max(cur - 1, 0), 0,
                              4294967295, 4294967296, 10 ** 12,
                              self.r.getrandbits(32)])

    def token(self, ascii_db, pos=None, cur_tli=1, nullable=True, allow_bad=True):
        r, c = self.r, self.r.random()
        if nullable and c < 0.04:
            return None
        if c < 0.50:    # well formed, mostly around where the server is
            v = self.lsn_value(pos)
            lower = r.random() < 0.1
            pad = r.choice([0, 0, 0, 8, 9])
            body = self.lsn_text(v, lower, pad)
            if r.random() < 0.2:
                return body
            t = self.tli(cur_tli)
            ts = str(t) if r.random() < 0.9 else r.choice(['0' + str(t), '+' + str(t),
                                                           '-' + str(t), ' ' + str(t)])
            return ts + ':' + body
        if c < 0.65:    # one mutation of a good token
            s = list('%d:%s' % (cur_tli, self.lsn_text(self.lsn_value(pos))))
            op = r.randint(0, 3)
            i = r.randint(0, len(s))
            if op == 0:
                s.insert(i, r.choice(list(':/ 0xXFfg-+.\t\n') + [self.uni(1)]))
            elif op == 1 and s:
                del s[min(i, len(s) - 1)]
            elif op == 2 and s:
                s[min(i, len(s) - 1)] = self.uni(1)
            else:
                s = s + s[:r.randint(0, len(s))]
            return ''.join(s)
        if c < 0.80:
            return r.choice([
                '', ' ', '/', ':', ':/', '0/', '/0', '1:', ':0/0', '1:/', '1:0/',
                '0:0/0', '-1:0/0', '1:-0/0', '1:0/-1', '1:0x1/0', '0x0/0',
                '4294967296:0/0', '99999999999999999999:0/0', '1:0/123456789',
                '1:123456789/0', '1:2:0/1', '1/2/3', '1:1:1', 'FFFFFFFF/FFFFFFFF/0',
                '4294967295:FFFFFFFF/FFFFFFFF', '1:FFFFFFFF/FFFFFFFF', '1:0/0',
                '0/0', '0/1', ' 0/1', '0/1 ', '0/1\n', '１:０/０', '١:0/0',
                '1\u200b:0/0', '1:0/0\x01', 'NaN', 'null', 'NULL', 'infinity', '-0/0',
                '1e3:0/0', '0' * 9 + '/0', '0/' + '0' * 9, '1:' + 'F' * 8 + '/' + 'F' * 8,
            ])
        if c < 0.88:
            n = r.choice([300, 5000, 100000, 1000000])
            return r.choice(['F' * n, '1:' + '0' * n + '/0', '9' * n + ':0/0',
                             '0/' + '0' * n, (':' * n), '/' * n])
        return self.junk(ascii_db, allow_bad=allow_bad)

    def timeout(self, follower):
        """(literal, small) where small means a wait is bounded by 50 ms."""
        r, c = self.r, self.r.random()
        if c < 0.62:
            return r.choice([0, 0, 1, 2, 5, r.randint(0, 50)]), True
        if c < 0.70:
            return -r.choice([1, 2, 1000, 2147483648]), True
        if c < 0.74:
            return None, True
        if c < 0.80:
            return r.choice([2147483647, 86400000, 100000]), False
        v = r.choice([
            '2147483648', '-2147483649', '99999999999999999999', '1.5', "'1.5'",
            "''", "'abc'", "'50'", "'99999999999'", "'-2147483649'", "'2147483647'",
            'true', "'50'::int8", '50::int8', '50::int2', '50::numeric', "'NaN'",
            '(2147483647 + 0)', "' 7 '", "'0x10'", "'1e2'", '1e2', '(-1)', "'-0'",
        ])
        # the ones that are valid integers above 50 ms need the guard
        return Raw(v), v not in ("'2147483647'", '(2147483647 + 0)')

    def lsn_arg(self, pos, follower):
        """A pg_lsn argument (an SQL expression)."""
        r, c = self.r, self.r.random()
        if c < 0.05:
            return Raw('NULL::pg_lsn')
        if c < 0.60:
            return Raw(sql('{}::pg_lsn', self.lsn_text(self.lsn_value(pos))))
        if c < 0.75:
            return Raw(r.choice(['pg_current_wal_insert_lsn()', 'pg_current_wal_flush_lsn()',
                                 'pg_last_wal_replay_lsn()', 'pg_last_wal_receive_lsn()',
                                 "'0/0'::pg_lsn", "'FFFFFFFF/FFFFFFFF'::pg_lsn",
                                 'pg_last_wal_replay_lsn() + 1',
                                 'pg_last_wal_replay_lsn() + 16777216',
                                 'pg_current_wal_insert_lsn() + 16777216']))
        return Raw(sql('{}::pg_lsn', self.token(False, pos, 1, nullable=False, allow_bad=False)))


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------

class Server:
    def __init__(self, name, bindir, datadir, sockdir, port):
        self.name, self.bindir, self.datadir = name, bindir, datadir
        self.sockdir, self.port = sockdir, port
        self.log = os.path.join(os.path.dirname(datadir), name + '.log')
        self.in_recovery = False
        self.tli = 1
        self.pos = None

    def ctl(self, *a, check=True):
        return subprocess.run([os.path.join(self.bindir, 'pg_ctl'), '-D', self.datadir] + list(a),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              check=check, text=True)

    def start(self):
        self.ctl('-l', self.log, '-w', '-t', '60', 'start')

    def stop(self):
        self.ctl('-m', 'fast', '-w', '-t', '60', 'stop', check=False)

    def dsn(self, db, user):
        return dict(host=self.sockdir, port=self.port, dbname=db, user=user,
                    connect_timeout=10, options='-c statement_timeout=5000')


DBS = {'fuzz': False, 'fuzz_ascii': True}          # name -> bytes-anything
ROLES = ['super', 'fuzz_app', 'fuzz_mon']


class Sess:
    def __init__(self, fz, server, db, role):
        self.fz, self.server, self.db, self.role = fz, server, db, role
        self.ascii = DBS[db]
        self.user = fz.superuser if role == 'super' else role
        self.conn = None

    def label(self):
        return '%s/%s/%s' % (self.server.name, self.db, self.role)

    def connect(self):
        import psycopg2
        import psycopg2.extensions as ext
        self.conn = psycopg2.connect(**self.server.dsn(self.db, self.user))
        self.conn.autocommit = True
        if self.ascii:
            # any bytes may come back: read text (and records) as bytes
            ext.register_type(ext.BYTES, self.conn)
            ext.register_type(ext.BYTESARRAY, self.conn)
        return self

    def alive(self):
        return self.conn is not None and not self.conn.closed


# --------------------------------------------------------------------------
# The fuzzer
# --------------------------------------------------------------------------

class Fuzz:
    def __init__(self, args):
        self.args = args
        self.seed = args.seed
        self.r = random.Random(args.seed)
        self.g = Gen(self.r)
        self.documented = documented_sqlstates(args.readme)
        self.passed = 0
        self.failed = 0
        self.failures = {}           # signature -> [count, first repro]
        self.codes_seen = {}         # sqlstate -> count
        self.pre_ext_22021 = 0
        self.calls = 0
        self.funcs_called = {}
        self.settings_touched = set()
        self.lock = threading.Lock()
        self.superuser = pwd.getpwuid(os.getuid()).pw_name
        self.sessions = {}
        self.sessions3 = {}
        self.bindir = subprocess.check_output([args.pg_config, '--bindir'], text=True).strip()
        self.notes = []
        self.note_keys = set()

    # checks --------------------------------------------------------------
    def check(self, ok, sig, detail=''):
        with self.lock:
            if ok:
                self.passed += 1
                return True
            self.failed += 1
            ent = self.failures.setdefault(sig, [0, detail])
            ent[0] += 1
            if ent[0] == 1:
                print('FAIL %s\n     %s' % (sig, detail), flush=True)
            return False

    def repro(self, sess, stmts):
        return 'seed=%d call=%d on %s (as %s): %s' % (
            self.seed, self.calls, sess.label(), sess.user,
            ' ; '.join(short(s, 300) for s in stmts))

    # sessions ------------------------------------------------------------
    def sess(self, server=None, db=None, role=None):
        server = server or self.pick_server()
        db = db or self.r.choice(['fuzz', 'fuzz', 'fuzz_ascii'])
        role = role or self.r.choice(['super', 'super', 'fuzz_app', 'fuzz_app', 'fuzz_mon'])
        k = (server.name, db, role)
        s = self.sessions.get(k)
        if s is None or not s.alive():
            s = Sess(self, server, db, role).connect()
            self.sessions[k] = s
        return s

    def pick_server(self):
        if self.follower is not None and self.r.random() < 0.45:
            return self.follower
        return self.leader

    def drop_sessions(self, server=None):
        for k, c in list(self.sessions3.items()):
            if server is None or k[0] == server.name:
                try:
                    c.close()
                except Exception:
                    pass
                del self.sessions3[k]
        for k, s in list(self.sessions.items()):
            if server is None or s.server is server:
                try:
                    s.conn.close()
                except Exception:
                    pass
                del self.sessions[k]

    # running statements ----------------------------------------------------
    def execute(self, sess, stmt, extra_ok=(), bad_encoding=False, may_die=False):
        """Run one statement; check its SQLSTATE.  Returns (rows, sqlstate).
        rows is None on error.  A lost connection is recorded and raises
        Died."""
        import psycopg2
        cur = sess.conn.cursor()
        try:
            cur.execute(stmt)
            rows = cur.fetchall() if cur.description else []
            return rows, None
        except psycopg2.Error as e:
            code = e.pgcode
            if code is None or sess.conn.closed:
                if may_die:
                    raise Died()
                self.check(False, 'backend died (connection lost) on %s' % sess.label(),
                           '%s\n     error: %s' % (self.repro(sess, [stmt]), str(e).strip()[:300]))
                self.after_death(sess)
                raise Died()
            with self.lock:
                self.codes_seen[code] = self.codes_seen.get(code, 0) + 1
            if bad_encoding and code == '22021':
                self.pre_ext_22021 += 1
                self.check(True, '')
            else:
                msg = (e.diag.message_primary or str(e)).strip()
                self.check(code in self.documented or code in extra_ok,
                           'undocumented SQLSTATE %s from %s' % (code, stmt_kind(stmt)),
                           '%s\n     message: %s' % (self.repro(sess, [stmt]), msg[:200]))
            return None, code
        except UnicodeDecodeError as e:
            # the server answered; the client could not decode the answer
            # (in SQL_ASCII psycopg2 decodes records as ASCII: expected)
            if not sess.ascii:
                self.note('the client could not decode an answer in %s: %s (e.g. %s)' % (
                    sess.db, e.reason, short(stmt, 60)), key=('decode', sess.db))
            return [], None

    def note(self, msg, key=None):
        key = key or msg
        with self.lock:
            if key not in self.note_keys:
                self.note_keys.add(key)
                self.notes.append(msg)
                if self.args.verbose:
                    print('note: ' + msg)

    def after_death(self, sess):
        """After a lost connection: drop that server's sessions, wait for it."""
        server = sess.server
        self.drop_sessions(server)
        import psycopg2
        for _ in range(100):
            try:
                c = psycopg2.connect(**server.dsn('fuzz', self.superuser))
                c.close()
                return
            except psycopg2.Error:
                time.sleep(0.1)

    def finish(self, sess, stmts):
        """Leave the session idle and prove the backend alive."""
        import psycopg2.extensions as ext
        if not sess.alive():
            self.check(False, 'backend died (connection closed) on %s' % sess.label(),
                       self.repro(sess, stmts))
            self.after_death(sess)
            return False
        try:
            st = sess.conn.info.transaction_status
            if st != ext.TRANSACTION_STATUS_IDLE:
                sess.conn.cursor().execute('ROLLBACK')
            # back to the session's defaults (statement_timeout, the key,
            # prepared statements, held cursors), then prove it answers
            cur = sess.conn.cursor()
            cur.execute('RESET ALL; DEALLOCATE ALL; CLOSE ALL; SELECT 1')
            ok = cur.fetchone()[0] == 1
        except Exception as e:
            ok = False
            stmts = list(stmts) + ['(alive check: %s)' % str(e).strip()[:200]]
        self.check(ok, 'backend not alive after a call on %s' % sess.label(), self.repro(sess, stmts))
        if not ok:
            self.after_death(sess)
        return ok

    def call(self, sess, stmts, extra_ok=(), bad_encoding=False, hook=None):
        """Run statements in order (stop at the first error), time them,
        then check the backend.  Returns the list of (rows, sqlstate).
        hook(out) runs after all of them succeeded, before the session is
        reset."""
        self.calls += 1
        out = []
        t0 = time.monotonic()
        try:
            for st in stmts:
                rows, code = self.execute(sess, st, extra_ok, bad_encoding)
                out.append((rows, code))
                if code is not None:
                    break
            if hook is not None and len(out) == len(stmts) and out[-1][1] is None:
                hook(out)
        except Died:
            return None
        dt = time.monotonic() - t0
        self.check(dt < self.args.slow, 'call slower than %.1f s' % self.args.slow,
                   '%.2f s: %s' % (dt, self.repro(sess, stmts)))
        if not self.finish(sess, stmts):
            return None
        return out

    # server state ------------------------------------------------------------
    def refresh_pos(self, server):
        s = self.sess(server, 'fuzz', 'super')
        rows, code = self.execute(s, b'SELECT distributed.replay_position(), pg_is_in_recovery()')
        if rows:
            tok, rec = rows[0]
            t, l = tok.split(':')
            hi, lo = l.split('/')
            server.tli, server.pos, server.in_recovery = int(t), (int(hi, 16) << 32) | int(lo, 16), rec

    # ------------------------------------------------------------------------
    # Actions
    # ------------------------------------------------------------------------

    def key_for(self, s):
        k = self.g.key(s.ascii)
        return k

    def bad(self, *vals):
        return any(isinstance(v, BadBytes) for v in vals)

    def token_for(self, s):
        return self.g.token(s.ascii, s.server.pos, s.server.tli)

    def count_func(self, name):
        self.funcs_called[name] = self.funcs_called.get(name, 0) + 1

    def guard(self, s, small):
        """Statements around a wait whose timeout may be long on a follower."""
        if small or not s.server.in_recovery:
            return [], []
        return [b"SET statement_timeout = '20ms'"], [b'RESET statement_timeout']

    def wrap(self, s, stmt, parallel_ok=False):
        """Vary the calling context of a SELECT expression list."""
        r = self.r.random()
        if r < 0.55:
            return [b'SELECT ' + stmt]
        if r < 0.63:
            return [b'SELECT ' + stmt + b' FROM generate_series(1, 3)']
        if r < 0.70:
            return [b'BEGIN', b'SELECT ' + stmt, b'COMMIT']
        if r < 0.76:
            return [b'BEGIN ISOLATION LEVEL REPEATABLE READ', b'SELECT ' + stmt, b'ROLLBACK']
        if r < 0.82 and parallel_ok:
            return [b"SET force_parallel_mode = on", b'SELECT ' + stmt, b'RESET force_parallel_mode']
        if r < 0.88:
            return [b'SELECT * FROM (SELECT ' + stmt + b') AS sub']
        if r < 0.93:
            return [b'PREPARE fz AS SELECT ' + stmt, b'EXECUTE fz', b'DEALLOCATE fz']
        body = b'SELECT ' + stmt
        if b'$fz$' in body:
            return [body]
        return [b'DO $fz$ BEGIN PERFORM ' + stmt + b'; END $fz$']

    def run_wrapped(self, s, expr, extra=(), bad=False, parallel_ok=False, pre=(), post=()):
        stmts = list(pre) + self.wrap(s, expr, parallel_ok) + list(post)
        return self.call(s, stmts, extra, bad)

    def first_value(self, res):
        """The value of the SELECT of a wrapped call, or raise LookupError."""
        for rows, code in res or []:
            if code is not None:
                raise LookupError
            if rows:
                return rows[0][0]
        raise LookupError

    # functions ----------------------------------------------------------------
    def f_last_commit(self):
        s = self.sess()
        self.count_func('last_commit()')
        res = self.run_wrapped(s, b'distributed.last_commit()')
        try:
            v = self.first_value(res)
            self.check(v is None or TOKEN_RE.match(_s(v)) is not None,
                       'last_commit() is not a token', repr(v))
        except LookupError:
            pass

    def f_session_token(self):
        s = self.sess()
        k = self.key_for(s)
        self.count_func('session_token(text)')
        expr = sql('distributed.session_token({})', k)
        if self.r.random() < 0.1:
            expr = sql('distributed.session_token(key => {})', k)
        res = self.run_wrapped(s, expr, bad=self.bad(k), parallel_ok=True)
        try:
            v = self.first_value(res)
            self.check(TOKEN_RE.match(_s(v)) is not None, 'session_token() is not a token', repr(v))
        except LookupError:
            pass

    def f_record(self):
        s = self.sess()
        k = self.key_for(s)
        t = self.token_for(s)
        self.count_func('record(text,text)')
        res = self.run_wrapped(s, sql('distributed.record({}, {})', k, t), bad=self.bad(k, t))
        try:
            v = _s(self.first_value(res))
            ok = TOKEN_RE.match(v) is not None
            self.check(ok, 'record() did not return a token', repr(v))
            if ok:
                self.check(lsn_of(v) >= lsn_of(_s(t)), 'record() returned below its token',
                           'record(%s, %s) = %s' % (short(k, 40), short(t, 40), v))
        except (LookupError, ValueError, TypeError):
            pass

    def f_forget(self):
        s = self.sess()
        k = self.key_for(s)
        self.count_func('forget(text)')
        res = self.run_wrapped(s, sql('distributed.forget({})', k), bad=self.bad(k))
        try:
            v = self.first_value(res)
            self.check(v in (True, False), 'forget() is not a boolean', repr(v))
        except LookupError:
            pass

    def f_token_parts(self):
        s = self.sess()
        t = self.token_for(s)
        which = self.r.choice(['token_lsn', 'token_timeline'])
        self.count_func(which + '(text)')
        form = self.r.random()
        if form < 0.8:
            expr = sql('distributed.%s({})' % which, t)
        elif form < 0.9:
            expr = sql('distributed.%s({}::varchar)' % which, t)
        else:
            expr = sql('distributed.%s(token => {})' % which, t)
        res = self.run_wrapped(s, expr, bad=self.bad(t), parallel_ok=True)
        try:
            v = self.first_value(res)
        except LookupError:
            return
        if t is None:
            self.check(v is None, '%s(NULL) is not NULL (STRICT)' % which, repr(v))
            return
        ts = _s(t)
        parsed = parse_token(ts)
        self.check(parsed is not None, '%s() accepted a malformed token' % which,
                   '%s(%s) = %r' % (which, short(t, 60), v))
        if parsed is not None:
            tli, lsn = parsed
            if which == 'token_lsn':
                self.check(lsn_of(_s(v)) == lsn, 'token_lsn() is wrong', '%s -> %r' % (short(t), v))
            else:
                self.check(v == (tli or None), 'token_timeline() is wrong', '%s -> %r' % (short(t), v))

    def f_replay_position(self):
        s = self.sess()
        self.count_func('replay_position()')
        res = self.run_wrapped(s, b'distributed.replay_position()', parallel_ok=True)
        try:
            v = _s(self.first_value(res))
            self.check(TOKEN_RE.match(v) is not None, 'replay_position() is not a token', repr(v))
        except LookupError:
            pass

    def f_is_replayed(self):
        s = self.sess()
        if self.r.random() < 0.3:
            a = self.g.lsn_arg(s.server.pos, s.server.in_recovery)
            self.count_func('is_replayed(pg_lsn)')
            expr = b'distributed.is_replayed(' + lit(a) + b')'
            bad = False
        else:
            t = self.token_for(s)
            self.count_func('is_replayed(text)')
            expr = sql('distributed.is_replayed({})', t)
            bad = self.bad(t)
        res = self.run_wrapped(s, expr, bad=bad, parallel_ok=True)
        try:
            v = self.first_value(res)
            self.check(v in (True, False), 'is_replayed() is not a boolean', repr(v))
        except LookupError:
            pass

    def wait_args(self, s):
        to, small = self.g.timeout(s.server.in_recovery)
        if self.r.random() < 0.3:
            a = self.g.lsn_arg(s.server.pos, s.server.in_recovery)
            return lit(a), to, small, False, 'pg_lsn'
        t = self.token_for(s)
        return lit(t), to, small, self.bad(t), 'text'

    def f_wait(self):
        s = self.sess()
        a, to, small, bad, kind = self.wait_args(s)
        self.count_func('wait(%s,integer)' % kind)
        c = self.r.random()
        if c < 0.1:
            expr = b'distributed.wait(' + a + b')'      # default timeout 1000
            small = False
        elif c < 0.2:
            expr = b'distributed.wait(timeout_ms => ' + lit(to) + b', token => ' + a + b')'
        else:
            expr = b'distributed.wait(' + a + b', ' + lit(to) + b')'
        pre, post = self.guard(s, small)
        res = self.run_wrapped(s, expr, bad=bad, pre=pre, post=post)
        try:
            v = _s(self.first_value(res))
            self.check(v in STATUSES, 'wait() returned an unknown status', repr(v))
            if not s.server.in_recovery:
                self.check(v != 'timeout', 'wait() on a leader timed out', repr(v))
        except LookupError:
            pass

    def f_wait_for(self):
        s = self.sess()
        a, to, small, bad, kind = self.wait_args(s)
        self.count_func('wait_for(%s,integer)' % kind)
        call = b'CALL distributed.wait_for(' + a + b', ' + lit(to) + b')'
        if self.r.random() < 0.1:
            call = b'CALL distributed.wait_for(' + a + b')'
            small = False
        pre, post = self.guard(s, small)
        body_ok = b'$fz$' not in call
        c = self.r.random()
        if c < 0.45 or not body_ok:
            stmts = [call]
        elif c < 0.52:
            stmts = [b'BEGIN', call, b'ROLLBACK']                          # runs (READ COMMITTED)
        elif c < 0.60:
            stmts = [b'DO $fz$ BEGIN ' + call + b'; END $fz$']
        elif c < 0.66:
            stmts = [b'DO $fz$ BEGIN PERFORM 1; COMMIT; ' + call + b'; COMMIT; ' + call + b'; END $fz$']
        elif c < 0.72:
            stmts = [b'DO $fz$ DECLARE r record; BEGIN FOR r IN SELECT 1 LOOP ' + call +
                     b'; END LOOP; END $fz$']                               # 25001
        elif c < 0.78:
            stmts = [b"SET default_transaction_isolation = 'repeatable read'", call,
                     b'RESET default_transaction_isolation']               # ends its transaction, runs
        elif c < 0.84:
            stmts = [b'CALL fuzz.proc_wait(' + a + b', ' + lit(to) + b')']  # nested, non-atomic
        elif c < 0.88:
            stmts = [b'CALL fuzz.proc_wait_set(' + a + b', ' + lit(to) + b')']  # SET clause: atomic
        elif c < 0.91:
            stmts = [b'SELECT fuzz.func_wait(' + a + b', ' + lit(to) + b')']    # function: atomic
        elif c < 0.94:
            stmts = [b'CALL fuzz.proc_wait_sql(' + a + b', ' + lit(to) + b')']  # SQL-language body
        elif c < 0.97:
            stmts = [b'DO $fz$ BEGIN EXECUTE ' + lit(call) + b'; END $fz$']     # dynamic CALL
        else:
            stmts = [b'BEGIN', b'DECLARE c CURSOR WITH HOLD FOR SELECT 1', b'COMMIT', call, b'CLOSE c']
        self.call(s, list(pre) + stmts + list(post), bad_encoding=bad)

    def f_srf(self):
        s = self.sess()
        name = self.r.choice(['get_sessions', 'get_stats', 'get_waiters'])
        self.count_func(name + '()')
        f = b'distributed.' + name.encode() + b'()'
        stmts = [self.r.choice([
            b'SELECT * FROM ' + f,
            b'SELECT count(*) FROM ' + f,
            b'SELECT ' + f,
            b'SELECT (' + f + b').*',
            b'SELECT * FROM ' + f + b' WITH ORDINALITY',
            b'SELECT count(*) FROM generate_series(1, 3) g, LATERAL ' + f + b' AS x',
            b'SELECT * FROM ROWS FROM (' + f + b', generate_series(1, 2)) AS x',
            b'SELECT 1 WHERE ' + f + b' IS NOT NULL',                  # 0A000 (core)
            b'SELECT CASE WHEN true THEN ' + f + b' END',               # 0A000 (core)
            b'DO $fz$ BEGIN PERFORM ' + f + b'; END $fz$',
            b'SELECT count(*) FROM distributed.' + {'get_sessions': b'sessions',
                                                      'get_stats': b'stats',
                                                      'get_waiters': b'waiters'}[name],
        ])]
        if self.r.random() < 0.15:
            stmts = [b'SET force_parallel_mode = on'] + stmts + [b'RESET force_parallel_mode']
        self.call(s, stmts)

    def f_reset_stats(self):
        s = self.sess()
        self.count_func('reset_stats()')
        self.run_wrapped(s, b'distributed.reset_stats()')

    # wrong types and arities ---------------------------------------------------
    def f_wrong_types(self):
        s = self.sess()
        name = self.r.choice(['session_token', 'record', 'forget', 'token_lsn', 'token_timeline',
                              'is_replayed', 'wait', 'last_commit', 'replay_position'])
        n = self.r.choice([0, 1, 2, 3])
        args = [self.r.choice(['1', '1.5', 'true', "'{}'::json", "ARRAY['0/1']", "ROW(1, 2)",
                               "'0/1'::bytea", "'\\x00'::bytea", "now()", 'NULL', "'0/1'",
                               "'0/1'::pg_lsn", "1::int8", "'x'::name", "'0/1'::char(3)",
                               "(SELECT NULL)", "'1:0/1'::varchar(3)"]) for _ in range(n)]
        expr = ('distributed.%s(%s)' % (name, ', '.join(args))).encode()
        self.call(s, [b'SELECT ' + expr])
        if self.r.random() < 0.2:
            self.call(s, [('CALL distributed.wait_for(%s)' % ', '.join(args)).encode()])

    # writes under keys --------------------------------------------------------
    def f_write_under_key(self):
        s = self.sess(server=self.leader if self.r.random() < 0.85 else None)
        k = self.g.key(s.ascii, nullable=False)
        local = self.r.random() < 0.5
        ins = sql('INSERT INTO fuzz.t (k) VALUES ({})', Raw("'w'"))
        if local:
            stmts = [b'BEGIN', sql('SET LOCAL distributed.session_key = {}', k), ins, b'COMMIT']
        else:
            stmts = [sql('SET distributed.session_key = {}', k), ins]
        self.settings_touched.add('distributed.session_key')

        def hook(out):
            # the reported settings and the function agree, and the key
            # answers at least this commit (invariant 2)
            rows, code = self.execute(s, b'SELECT distributed.last_commit()')
            if not rows:
                return
            lc = _s(rows[0][0])
            self.check(lc is not None and TOKEN_RE.match(lc) is not None,
                       'no last_commit() after a write', self.repro(s, stmts))
            ps = s.conn.get_parameter_status('distributed.last_commit')
            self.check(ps == lc, 'ParameterStatus distributed.last_commit differs from last_commit()',
                       '%r vs %r: %s' % (ps, lc, self.repro(s, stmts)))
            if not local and not s.ascii:
                psk = s.conn.get_parameter_status('distributed.session_key')
                self.check(psk == k, 'ParameterStatus distributed.session_key differs from the SET value',
                           '%s vs %s' % (short(psk or ''), short(k)))
            if nbytes(k) and not s.server.in_recovery and lc:
                rows, code = self.execute(s, sql('SELECT distributed.session_token({})', k))
                if rows:
                    tok = _s(rows[0][0])
                    self.check(lsn_of(tok) >= lsn_of(lc), 'session_token() below the last commit of its key',
                               'key %s: %s < %s' % (short(k, 40), tok, lc))
        self.call(s, stmts, bad_encoding=self.bad(k), hook=hook)

    def f_two_phase(self):
        s = self.sess(server=self.leader, role=self.r.choice(['super', 'fuzz_app']))
        k1, k2 = self.g.key(s.ascii, nullable=False), self.g.key(s.ascii, nullable=False)
        gid = 'fz%d' % self.calls
        stmts = [b'BEGIN', sql('SET LOCAL distributed.session_key = {}', k1),
                 b"INSERT INTO fuzz.t (k) VALUES ('2pc')", sql('PREPARE TRANSACTION {}', gid)]
        res = self.call(s, stmts, bad_encoding=self.bad(k1))
        if res is None or any(code for _, code in res) or len(res) < len(stmts):
            return
        fin = self.r.choice(['COMMIT', 'COMMIT', 'ROLLBACK'])
        stmts = [sql('SET distributed.session_key = {}', k2), sql(fin + ' PREPARED {}', gid),
                 b'RESET distributed.session_key']
        if self.r.random() < 0.2:
            stmts = [b'BEGIN'] + stmts      # 25001 inside a block; cleaned up below
        res = self.call(s, stmts, bad_encoding=self.bad(k2))
        # whatever happened, do not leave the prepared transaction behind
        if s.alive():
            rows, _ = self.execute(s, sql('SELECT count(*) FROM pg_prepared_xacts WHERE gid = {}', gid))
            if rows and rows[0][0]:
                self.execute(s, sql('ROLLBACK PREPARED {}', gid))
        try:
            s.conn.cursor().execute(b'RESET distributed.session_key')
        except Exception:
            pass

    # settings ---------------------------------------------------------------
    SETTINGS = ['distributed.session_key', 'distributed.last_commit', 'distributed.replay_position',
                'distributed.max_sessions', 'distributed.watch_interval',
                'distributed.report_replay_position']

    def setting_name(self, s):
        r = self.r.random()
        if r < 0.8:
            return self.r.choice(self.SETTINGS + ['distributed.session_key'] * 4)
        j = self.g.junk(s.ascii, self.r.randint(1, 12))
        if isinstance(j, bytes):
            j = j.decode('latin-1')
        return self.r.choice(['distributed.sesion_key', 'distributed.', 'distributed..x',
                              'distributed.session_key.x', 'distributed.x',
                              'distributed.' + j.replace('\0', '')])

    def setting_value(self, s, name):
        g, r = self.g, self.r.random()
        if name == 'distributed.session_key' and r < 0.8:
            return g.key(s.ascii, nullable=False)
        if r < 0.3:
            return self.r.choice(['on', 'off', 'true', 'yes', 'maybe', '1', '0', '-1', '1000',
                                  '1001', '2147483648', '1ms', '5 s', '1h', '0.5', '', ' ', '1:0/1',
                                  '10000001', 'DEFAULT', '5 parsecs'])
        return g.junk(s.ascii)

    def f_setting(self):
        s = self.sess()
        name = self.setting_name(s)
        self.settings_touched.add(name)
        ident = b'"' + name.encode('utf-8', 'replace').replace(b'"', b'""') + b'"'
        val = self.setting_value(s, name)
        bad = self.bad(val)
        c = self.r.random()
        if c < 0.35:
            stmts = [b'SET ' + ident + b' = ' + lit(val)]
        elif c < 0.45:
            stmts = [b'BEGIN', b'SET LOCAL ' + ident + b' TO ' + lit(val), b'SHOW ' + ident, b'COMMIT']
        elif c < 0.55:
            stmts = [sql('SELECT set_config({}, {}, {})', name, val, self.r.random() < 0.5)]
        elif c < 0.60:
            stmts = [b'SET ' + ident + b' TO DEFAULT']
        elif c < 0.66:
            stmts = [b'RESET ' + ident]
        elif c < 0.72:
            stmts = [b'SHOW ' + ident]
        elif c < 0.78:
            stmts = [sql('SELECT current_setting({}, {})', name, self.r.random() < 0.5)]
        elif c < 0.84:
            who = b'CURRENT_USER' if self.r.random() < 0.8 else b'fuzz_mon'
            stmts = [b'ALTER ROLE ' + who + b' SET ' + ident + b' = ' + lit(val),
                     b'ALTER ROLE ' + who + b' RESET ' + ident]
        elif c < 0.87:
            stmts = [b'ALTER DATABASE ' + s.db.encode() + b' SET ' + ident + b' = ' + lit(val),
                     b'ALTER DATABASE ' + s.db.encode() + b' RESET ' + ident]
        elif c < 0.92:
            stmts = [b'ALTER SYSTEM SET ' + ident + b' = ' + lit(val), b'SELECT pg_reload_conf()',
                     b'ALTER SYSTEM RESET ' + ident, b'SELECT pg_reload_conf()']
        elif c < 0.96:
            stmts = [sql('SELECT name, setting FROM pg_settings WHERE name LIKE {}', 'distributed.%')]
        else:
            stmts = [b'CREATE OR REPLACE FUNCTION fuzz.f_' + s.role.encode() +
                     b'() RETURNS text LANGUAGE sql SET ' + ident + b' = ' + lit(val) +
                     b" AS $fz$ SELECT current_setting('distributed.session_key') $fz$",
                     b'SELECT fuzz.f_' + s.role.encode() + b'()']
        def hook(out):
            # a session-level SET of the key is reported to the client
            if c < 0.35 and name == 'distributed.session_key' and not s.ascii:
                ps = s.conn.get_parameter_status('distributed.session_key')
                self.check(ps == val, 'ParameterStatus distributed.session_key differs from the SET value',
                           '%s vs %s' % (short(ps or ''), short(val)))
        # ALTER SYSTEM leaves a file behind on error; reset it in any case
        self.call(s, stmts, bad_encoding=bad, hook=hook)
        if b'ALTER SYSTEM' in stmts[0] and s.role == 'super' and s.alive():
            try:
                c2 = s.conn.cursor()
                c2.execute(b'ALTER SYSTEM RESET ALL')
                c2.execute(b'SELECT pg_reload_conf()')
            except Exception:
                pass

    def f_connect_options(self):
        """Settings given at connection time (startup packet options)."""
        import psycopg2
        server = self.pick_server()
        db = self.r.choice(list(DBS))
        name = self.r.choice(['distributed.session_key'] * 3 + self.SETTINGS + ['distributed.sesion_key'])
        val = self.g.key(False, nullable=False) if self.r.random() < 0.8 else self.g.uni(self.r.randint(0, 200))
        if isinstance(val, bytes):
            val = val.decode('utf-8', 'replace')
        # the server splits the options string at whitespace; a backslash
        # takes the next character literally
        esc = ''.join('\\' + ch if ch in '\\ \t\n\r\v\f' else ch for ch in val)
        self.settings_touched.add(name)
        self.calls += 1
        dsn = server.dsn(db, self.r.choice([self.superuser, 'fuzz_app']))
        dsn['options'] = '-c %s=%s' % (name, esc)
        try:
            c = psycopg2.connect(**dsn)
            c.autocommit = True
            cur = c.cursor()
            cur.execute('SELECT 1')
            self.check(cur.fetchone()[0] == 1, 'connection with options not usable', repr(dsn['options'])[:200])
            c.close()
        except psycopg2.Error as e:
            # refused at start-up: the SQLSTATE is checked in the server log
            # at the end; here the server must still accept connections
            self.check(True, '')
            try:
                c = psycopg2.connect(**server.dsn(db, self.superuser))
                c.close()
                self.check(True, '')
            except psycopg2.Error as e2:
                self.check(False, 'server refuses connections after a bad startup option',
                           '%r: %s / %s' % (dsn['options'][:200], e, e2))
        except ValueError:
            pass

    def f_cancel_wait(self):
        """Cancel (or terminate) a backend while it waits on the follower."""
        if self.follower is None or not self.follower.in_recovery:
            return
        victim = Sess(self, self.follower, 'fuzz', 'fuzz_app').connect()
        killer = self.sess(self.follower, 'fuzz', 'super')
        pid = victim.conn.get_backend_pid()
        target = '%d:%s' % (self.follower.tli, self.g.lsn_text((self.follower.pos or 0) + (1 << 30)))
        form = self.r.choice([b'SELECT distributed.wait(%s, 30000)', b'CALL distributed.wait_for(%s, 30000)'])
        stmt = form % lit(target)
        victim.conn.cursor().execute(b'SET statement_timeout = 0')
        terminate = self.r.random() < 0.25
        result = {}

        def run():
            import psycopg2
            try:
                victim.conn.cursor().execute(stmt)
                result['code'] = None
            except psycopg2.Error as e:
                result['code'] = e.pgcode
                result['msg'] = str(e).strip()[:200]
        self.calls += 1
        th = threading.Thread(target=run)
        th.start()
        # wait until it is listed as a waiter, then cancel it
        listed = False
        for _ in range(2000):
            rows, _ = self.execute(killer, sql('SELECT count(*) FROM distributed.waiters WHERE pid = {}', pid))
            if rows and rows[0][0] == 1:
                listed = True
                break
            time.sleep(0.005)
        self.check(listed, 'a waiting backend is not listed in distributed.waiters', stmt.decode())
        fn = 'pg_terminate_backend' if terminate else 'pg_cancel_backend'
        self.execute(killer, sql('SELECT %s({})' % fn, pid))
        th.join(40)
        self.check(not th.is_alive(), 'a cancelled wait did not end', stmt.decode())
        code = result.get('code')
        if terminate:
            self.check(code in ('57P01', None), 'terminated waiter: unexpected result', repr(result))
        else:
            self.check(code == '57014', 'cancelled wait did not raise 57014', repr(result))
            self.finish(victim, [stmt])
        # the slot is freed
        freed = False
        for _ in range(1000):
            rows, _ = self.execute(killer, sql('SELECT count(*) FROM distributed.waiters WHERE pid = {}', pid))
            if rows and rows[0][0] == 0:
                freed = True
                break
            time.sleep(0.01)
        self.check(freed, 'waiter slot not freed after %s' % fn, stmt.decode())
        try:
            victim.conn.close()
        except Exception:
            pass

    def f_extended(self):
        """The extended query protocol (psycopg 3): arguments as bound
        parameters (text or binary, typed by the client), server-side
        prepared statements reused, CALL with parameters."""
        try:
            import psycopg
        except ImportError:
            return
        server = self.pick_server()
        role = self.r.choice(['super', 'fuzz_app', 'fuzz_mon'])
        k = (server.name, role)
        conn = self.sessions3.get(k)
        if conn is None or conn.closed:
            d = server.dsn('fuzz', self.superuser if role == 'super' else role)
            conn = psycopg.connect(host=d['host'], port=d['port'], dbname=d['dbname'], user=d['user'],
                                   options=d['options'], autocommit=True)
            self.sessions3[k] = conn
        g, r = self.g, self.r
        tok = g.token(False, server.pos, server.tli, allow_bad=False)
        if isinstance(tok, bytes):
            tok = tok.decode('utf-8', 'replace')
        key = g.key(False)
        if isinstance(key, bytes):
            key = key.decode('utf-8', 'replace')
        to, small = g.timeout(server.in_recovery)
        if isinstance(to, Raw) or not small:
            to = r.choice([0, 1, 10, 50, -1, None, 2147483648, -2147483649])
        choices = [
            ('session_token(text)', 'SELECT distributed.session_token(%s)', [key]),
            ('record(text,text)', 'SELECT distributed.record(%s, %s)', [key, tok]),
            ('forget(text)', 'SELECT distributed.forget(%s)', [key]),
            ('token_lsn(text)', 'SELECT distributed.token_lsn(%s)', [tok]),
            ('token_timeline(text)', 'SELECT distributed.token_timeline(%s)', [tok]),
            ('is_replayed(text)', 'SELECT distributed.is_replayed(%s)', [tok]),
            ('is_replayed(text)', 'SELECT distributed.is_replayed(%s::text)', [tok]),
            ('is_replayed(pg_lsn)', 'SELECT distributed.is_replayed(%s::pg_lsn)', [tok]),
            ('wait(text,integer)', 'SELECT distributed.wait(%s, %s)', [tok, to]),
            ('wait(text,integer)', 'SELECT distributed.wait(%s::text, %s::int)', [tok, to]),
            ('wait(pg_lsn,integer)', 'SELECT distributed.wait(%s::pg_lsn, %s::int)', [tok, to]),
            ('wait_for(text,integer)', 'CALL distributed.wait_for(%s, %s)', [tok, to]),
            ('wait_for(text,integer)', 'CALL distributed.wait_for(%s::text, %s::int)', [tok, to]),
            ('wait_for(pg_lsn,integer)', 'CALL distributed.wait_for(%s::pg_lsn, %s::int)', [tok, to]),
            ('last_commit()', 'SELECT distributed.last_commit()', []),
            ('replay_position()', 'SELECT distributed.replay_position()', []),
            ('get_stats()', 'SELECT * FROM distributed.get_stats()', []),
            ('get_sessions()', 'SELECT * FROM distributed.get_sessions()', []),
            ('get_waiters()', 'SELECT * FROM distributed.get_waiters()', []),
            (None, "SELECT set_config('distributed.session_key', %s, false)", [key]),
        ]
        name, q, params = r.choice(choices)
        if name:
            self.count_func(name)
        if server.in_recovery and 'wait' in q:
            params = [p if p is not to else r.choice([0, 1, 10, 50]) for p in params]
        prepare = r.random() < 0.5
        binary = r.random() < 0.3
        self.calls += 1
        t0 = time.monotonic()
        repro = 'seed=%d call=%d on %s/fuzz/%s (extended protocol, prepare=%s, binary=%s): %s %r' % (
            self.seed, self.calls, server.name, role, prepare, binary, q, [short(p, 60) if isinstance(p, str) else p for p in params])
        try:
            cur = conn.cursor(binary=binary)
            cur.execute(q, params, prepare=prepare)
            if cur.description:
                cur.fetchall()
        except psycopg.Error as e:
            code = e.sqlstate
            if code is None or conn.closed or conn.broken:
                self.check(False, 'backend died (connection lost) on %s (extended protocol)' % server.name,
                           '%s\n     error: %s' % (repro, str(e)[:300]))
                self.sessions3.pop(k, None)
                self.after_death(Sess(self, server, 'fuzz', role))
                return
            with self.lock:
                self.codes_seen[code] = self.codes_seen.get(code, 0) + 1
            self.check(code in self.documented,
                       'undocumented SQLSTATE %s from %s (extended protocol)' % (code, q.split('(')[0]),
                       '%s\n     message: %s' % (repro, (e.diag.message_primary or '')[:200]))
        except (UnicodeError, ValueError, OverflowError):
            pass
        self.check(time.monotonic() - t0 < self.args.slow, 'call slower than %.1f s' % self.args.slow, repro)
        try:
            conn.execute('RESET ALL')
            ok = conn.execute('SELECT 1').fetchone()[0] == 1
        except psycopg.Error:
            ok = False
        self.check(ok, 'backend not alive after a call on %s (extended protocol)' % server.name, repro)
        if not ok:
            self.sessions3.pop(k, None)

    def f_encoding_leak(self):
        """Keys written from the SQL_ASCII database, read in the UTF8 one."""
        s = self.sess(self.leader, 'fuzz', 'super')
        cur = s.conn.cursor()
        try:
            cur.execute(b'SELECT textsend(key) FROM distributed.sessions')
            keys = [bytes(r[0]) for r in cur.fetchall()]
        except Exception:
            return
        for k in keys:
            try:
                k.decode('utf-8')
            except UnicodeDecodeError:
                self.note('distributed.sessions in a UTF8 database lists a key that is not valid UTF-8 '
                          '(written from the SQL_ASCII database of the same server), e.g. %s' % short(k, 40),
                          key='leak')
                break

    # ------------------------------------------------------------------------
    # Promotion with waits in flight
    # ------------------------------------------------------------------------

    def promote_under_waits(self):
        f = self.follower
        self.refresh_pos(f)
        stop = threading.Event()
        results = []
        ahead = '%d:%s' % (f.tli, self.g.lsn_text((f.pos or 0) + (1 << 28)))
        bare = self.g.lsn_text((f.pos or 0) + (1 << 28))
        stmts = [sql('SELECT distributed.wait({}, 50)', ahead),
                 sql('SELECT distributed.wait({}::pg_lsn, 50)', bare),
                 sql('CALL distributed.wait_for({}, 50)', ahead),
                 sql('SELECT distributed.wait({}, 50)', bare)]

        ready = threading.Semaphore(0)

        def waiter(i):
            import psycopg2
            try:
                ws = Sess(self, f, 'fuzz', 'fuzz_app').connect()
            except Exception as e:
                results.append(('connect', str(e)))
                ready.release()
                return
            ready.release()
            st = stmts[i % len(stmts)]
            # wait until the first answer that is not a timeout: the one
            # in flight when recovery ended
            while not stop.is_set():
                try:
                    cur = ws.conn.cursor()
                    cur.execute(st)
                    v = cur.fetchone()[0] if cur.description else 'ok'
                except psycopg2.Error as e:
                    v = e.pgcode
                results.append((st, v))
                if v not in ('timeout', '57014'):
                    break
            ws.conn.close()

        ths = [threading.Thread(target=waiter, args=(i,)) for i in range(4)]
        for t in ths:
            t.start()
        for t in ths:       # connected (slow under valgrind)
            ready.acquire(timeout=120)
        time.sleep(0.15)
        f.ctl('-w', '-t', '60', 'promote')
        stop.set()
        for t in ths:
            t.join(60)
        self.calls += len(results)
        hist = {}
        for st, v in results:
            hist[str(v)] = hist.get(str(v), 0) + 1
        print('fuzz: waits around the promotion: %s' % ', '.join(
            '%s x%d' % kv for kv in sorted(hist.items())), flush=True)
        promoted = 0
        for st, v in results:
            if isinstance(v, str) and v in STATUSES:
                self.check(True, '')
                promoted += v == 'promoted'
            elif v == 'ok':
                self.check(True, '')
            else:
                self.check(v in self.documented,
                           'wait during promotion: undocumented SQLSTATE %s' % v, short(st))
        self.check(any(v in ('promoted', '55U02') for _, v in results),
                   'no wait in flight reported the promotion',
                   'results: %s' % sorted(set(str(v) for _, v in results)))
        f.in_recovery = False
        self.drop_sessions(f)
        self.refresh_pos(f)
        self.check(f.tli == 2 and not f.in_recovery, 'promoted follower is not a leader on timeline 2',
                   'tli %s, in recovery %s' % (f.tli, f.in_recovery))
        # the history decides tokens of the old timeline: at the switch point
        # they are held, one byte past it they never will be
        s = self.sess(f, 'fuzz', 'super')
        rows, _ = self.execute(s, b"SELECT pg_read_file('pg_wal/00000002.history')")
        if rows:
            m = re.search(r'^1\s+([0-9A-F]+/[0-9A-F]+)', rows[0][0], re.M)
            if m:
                sw = lsn_of(m.group(1))
                at = '1:' + self.g.lsn_text(sw)
                past = '1:' + self.g.lsn_text(sw + 1)
                self.switch = sw
                for stmt, want in [
                        (sql('SELECT distributed.is_replayed({})', at), True),
                        (sql('SELECT distributed.is_replayed({})', past), False),
                        (sql('SELECT distributed.wait({}, 0)', at), 'reached'),
                        (sql('SELECT distributed.wait({}, 50)', past), 'unreachable')]:
                    self.calls += 1
                    rows, code = self.execute(s, stmt)
                    got = rows[0][0] if rows else code
                    self.check(got == want, 'old-timeline token on the promoted server',
                               '%s -> %r, want %r' % (stmt.decode(), got, want))
                self.calls += 1
                rows, code = self.execute(s, sql('CALL distributed.wait_for({}, 50)', past))
                self.check(code == '55U01' or (code in self.documented and code != '55000'),
                           'wait_for of a lost token: want the unreachable SQLSTATE',
                           'got %r' % code)

    # ------------------------------------------------------------------------

    def coverage_of_catalog(self):
        """Every function and setting of the extension is one the fuzzer
        knows."""
        s = self.sess(self.leader, 'fuzz', 'super')
        rows, _ = self.execute(s, b"SELECT p.proname || '(' || "
                                  b"replace(oidvectortypes(p.proargtypes), ', ', ',') || ')' "
                                  b"FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                                  b"WHERE n.nspname = 'distributed' ORDER BY 1")
        self.catalog = [r[0] for r in rows or []]
        known = set(KNOWN_FUNCS)
        for sig in self.catalog:
            self.check(sig in known, 'the fuzzer does not know a function of the extension',
                       sig + ' (add it to KNOWN_FUNCS and give it a generator)')
        rows, _ = self.execute(s, b"SELECT name FROM pg_settings WHERE name LIKE 'distributed.%' ORDER BY 1")
        self.catalog_settings = [r[0] for r in rows or []]
        for n in self.catalog_settings:
            self.check(n in self.SETTINGS, 'the fuzzer does not know a setting of the extension', n)

    # ------------------------------------------------------------------------

    def setup_servers(self):
        self.base = tempfile.mkdtemp(prefix='distributed-fuzz.')
        os.chmod(self.base, 0o700)
        sock = self.base
        ldata = os.path.join(self.base, 'leader')
        subprocess.run([os.path.join(self.bindir, 'initdb'), '-D', ldata, '-A', 'trust',
                        '-E', 'UTF8', '--locale=C', '-U', self.superuser, '--no-sync'],
                       check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(ldata, 'postgresql.conf'), 'a') as f:
            f.write('''
listen_addresses = ''
unix_socket_directories = '%s'
port = 5432
shared_preload_libraries = 'distributed'
distributed.max_sessions = 6
max_connections = 50
max_prepared_transactions = 4
wal_level = replica
max_wal_senders = 4
hot_standby = on
fsync = off
log_line_prefix = '%%m [%%p] %%b %%e '
log_min_messages = warning
log_min_error_statement = panic
''' % sock)
        self.leader = Server('leader', self.bindir, ldata, sock, 5432)
        self.follower = None
        self.leader.start()
        import psycopg2
        c = psycopg2.connect(**self.leader.dsn('postgres', self.superuser))
        c.autocommit = True
        cur = c.cursor()
        cur.execute("CREATE ROLE fuzz_app LOGIN")
        cur.execute("CREATE ROLE fuzz_mon LOGIN IN ROLE pg_monitor")
        cur.execute("CREATE DATABASE fuzz")
        cur.execute("CREATE DATABASE fuzz_ascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' "
                    "TEMPLATE template0")
        c.close()
        for db in DBS:
            c = psycopg2.connect(**self.leader.dsn(db, self.superuser))
            c.autocommit = True
            cur = c.cursor()
            cur.execute(SETUP_SQL)
            c.close()
        fdata = os.path.join(self.base, 'follower')
        subprocess.run([os.path.join(self.bindir, 'pg_basebackup'), '-h', sock, '-p', '5432',
                        '-U', self.superuser, '-D', fdata, '-R', '-X', 'stream', '--no-sync',
                        '--checkpoint=fast'],
                       check=True)
        with open(os.path.join(fdata, 'postgresql.conf'), 'a') as f:
            f.write('port = 5433\n')
        self.follower = Server('follower', self.bindir, fdata, sock, 5433)
        self.follower.start()
        self.follower.in_recovery = True
        self.switch = None

    def stop_servers(self):
        self.drop_sessions()
        for srv in (self.follower, self.leader):
            if srv is not None:
                srv.stop()

    def scan_logs(self):
        """No crash in any log; documented SQLSTATEs for client backends."""
        crash = re.compile(r'terminated by signal|was terminated by exception|\bPANIC\b|TRAP:|'
                           r'server process .* exited with exit code|'
                           r'terminating any other active server processes|'
                           r'all server processes terminated|segmentation fault|'
                           r'distributed replay watcher.* exited with exit code', re.I)
        line_re = re.compile(r'^\S+ \S+ \S+ \[\d+\] (.*?) ([0-9A-Z]{5}) (ERROR|FATAL|PANIC):\s+(.*)$')
        for srv in (self.leader, self.follower):
            if srv is None or not os.path.exists(srv.log):
                continue
            with open(srv.log, 'rb') as f:
                data = f.read().decode('utf-8', 'replace')
            # background workers exit with code 1 when told to at shutdown
            running = data.split('received fast shutdown request')[0]
            crashes = [l for l in running.splitlines() if crash.search(l)]
            crashes += [l for l in data.splitlines()
                        if crash.search(l) and 'background worker' not in l and l not in crashes]
            self.check(not crashes, 'server log of the %s shows a crash' % srv.name,
                       '\n     '.join(l[:300] for l in crashes[:10]))
            bad = {}
            for l in data.splitlines():
                m = line_re.match(l)
                if not m:
                    continue
                btype, code, sev, msg = m.groups()
                if btype != 'client backend':
                    continue
                if code in self.documented:
                    continue
                if code == '22021':      # deliberately mis-encoded input
                    continue
                if code == '57P01' and 'administrator command' in msg:   # our pg_terminate_backend
                    continue
                bad.setdefault(code, msg[:150])
            for code, msg in bad.items():
                self.check(False, 'server log (%s): undocumented SQLSTATE %s: %s' % (srv.name, code, msg[:90]),
                           'first message: %s' % msg)
            self.check(True, '')

    # ------------------------------------------------------------------------

    def run(self):
        print('fuzz: seed %d (override with --seed or FUZZ_SEED), up to %d calls or %.0f s'
              % (self.seed, self.args.calls, self.args.time), flush=True)
        print('fuzz: documented SQLSTATEs: %s' % ' '.join(sorted(self.documented)), flush=True)
        t_start = time.monotonic()
        self.setup_servers()
        print('fuzz: servers up in %s (%.1f s)' % (self.base, time.monotonic() - t_start), flush=True)
        try:
            self.coverage_of_catalog()
            actions = [
                (self.f_session_token, 10), (self.f_record, 8), (self.f_forget, 4),
                (self.f_token_parts, 10), (self.f_is_replayed, 8), (self.f_wait, 12),
                (self.f_wait_for, 10), (self.f_last_commit, 3), (self.f_replay_position, 3),
                (self.f_srf, 5), (self.f_reset_stats, 1), (self.f_wrong_types, 4),
                (self.f_write_under_key, 10), (self.f_two_phase, 2), (self.f_setting, 14),
                (self.f_connect_options, 1), (self.f_cancel_wait, 0.4), (self.f_encoding_leak, 0.3),
                (self.f_extended, 8),
            ]
            funcs = [a for a, _ in actions]
            weights = [w for _, w in actions]
            t0 = time.monotonic()
            promoted = False
            i = 0
            while self.calls < self.args.calls and time.monotonic() - t0 < self.args.time:
                frac = max(self.calls / self.args.calls, (time.monotonic() - t0) / self.args.time)
                if not promoted and frac > 0.6:
                    print('fuzz: %d calls; promoting the follower with waits in flight' % self.calls,
                          flush=True)
                    self.promote_under_waits()
                    promoted = True
                if i % 25 == 0:
                    self.refresh_pos(self.leader)
                    if self.follower is not None:
                        self.refresh_pos(self.follower)
                i += 1
                act = self.r.choices(funcs, weights)[0]
                try:
                    act()
                except Died:
                    pass
            elapsed = time.monotonic() - t0
            print('fuzz: %d calls in %.1f s' % (self.calls, elapsed), flush=True)
            # every function of the catalog was called
            for sig in self.catalog:
                self.check(self.funcs_called.get(sig, 0) > 0, 'function never called', sig)
            for n in self.catalog_settings:
                self.check(n in self.settings_touched, 'setting never fuzzed', n)
            # nothing waits any more, on any server
            for srv in (self.leader, self.follower):
                s = self.sess(srv, 'fuzz', 'super')
                rows, _ = self.execute(s, b'SELECT waiting, (SELECT count(*) FROM distributed.waiters) '
                                          b'FROM distributed.stats')
                self.check(rows is not None and rows[0] == (0, 0),
                           'waiter slots left behind on the %s' % srv.name, repr(rows))
        finally:
            self.stop_servers()
        self.scan_logs()
        return elapsed

    def report(self):
        print('fuzz: SQLSTATEs seen: %s' % ', '.join('%s x%d' % kv for kv in sorted(self.codes_seen.items())))
        if self.pre_ext_22021:
            print('fuzz: %d inputs of invalid UTF-8 refused by the server (22021) before the extension'
                  % self.pre_ext_22021)
        print('fuzz: calls per function: %s' % ', '.join(
            '%s %d' % kv for kv in sorted(self.funcs_called.items())))
        for n in self.notes[:10]:
            print('fuzz: note: ' + n)
        if self.failures:
            print('fuzz: failures by kind:')
            for sig, (n, detail) in sorted(self.failures.items(), key=lambda kv: -kv[1][0]):
                print('  %5d x %s\n          e.g. %s' % (n, sig, detail[:600]))
        print('fuzz: %d passed, %d failed' % (self.passed, self.failed), flush=True)


class Died(Exception):
    pass


def _s(v):
    if isinstance(v, (bytes, memoryview)):
        return bytes(v).decode('latin-1')
    return v


def stmt_kind(stmt):
    """A short name for the kind of a statement, to group failures."""
    m = re.match(rb'\s*(ALTER (?:SYSTEM|ROLE|DATABASE)|SET LOCAL|SET|SHOW|RESET|CALL|DO|BEGIN|'
                 rb'SELECT (?:[a-z_.]+\()?)', stmt)
    if not m:
        return stmt[:20].decode('utf-8', 'replace')
    k = m.group(1).decode()
    return k + ')' if k.endswith('(') else k


def parse_token(s):
    """Python model of the token syntax: (tli or 0, lsn) or None."""
    m = re.match(r'(?:([0-9]+):)?([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\Z', s)
    if not m:
        return None
    tli = m.group(1)
    if tli is not None:
        tli = int(tli)
        if tli == 0 or tli > 0xFFFFFFFF:
            return None
    return (tli or 0, (int(m.group(2), 16) << 32) | int(m.group(3), 16))


def lsn_of(s):
    p = parse_token(s)
    if p is None:
        raise ValueError(s)
    return p[1]


KNOWN_FUNCS = [
    'last_commit()', 'session_token(text)', 'record(text,text)', 'forget(text)',
    'token_lsn(text)', 'token_timeline(text)', 'replay_position()', 'is_replayed(text)',
    'is_replayed(pg_lsn)', 'wait(text,integer)', 'wait(pg_lsn,integer)',
    'wait_for(text,integer)', 'wait_for(pg_lsn,integer)', 'get_sessions()', 'get_stats()',
    'get_waiters()', 'reset_stats()',
]

SETUP_SQL = r'''
CREATE EXTENSION distributed;
CREATE SCHEMA fuzz;
GRANT ALL ON SCHEMA fuzz TO PUBLIC;
CREATE TABLE fuzz.t (id bigserial PRIMARY KEY, k text);
GRANT ALL ON fuzz.t, fuzz.t_id_seq TO PUBLIC;
CREATE PROCEDURE fuzz.proc_wait(t text, ms int) LANGUAGE plpgsql AS $$
BEGIN
  COMMIT;
  CALL distributed.wait_for(t, ms);
  PERFORM 1;
  COMMIT;
END $$;
CREATE PROCEDURE fuzz.proc_wait_set(t text, ms int) LANGUAGE plpgsql
  SET work_mem = '4MB' AS $$
BEGIN
  CALL distributed.wait_for(t, ms);
END $$;
CREATE PROCEDURE fuzz.proc_wait_sql(t text, ms int) LANGUAGE sql AS $$
  CALL distributed.wait_for(t, ms);
$$;
CREATE FUNCTION fuzz.func_wait(t text, ms int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  CALL distributed.wait_for(t, ms);
  RETURN 1;
END $$;
'''


def main():
    args = parse_args()
    if os.geteuid() == 0:
        reexec_unprivileged(args)
    fz = Fuzz(args)
    t0 = time.monotonic()
    try:
        fz.run()
    except Exception:
        import traceback
        traceback.print_exc()
        fz.failed += 1
        fz.failures['harness error'] = [1, traceback.format_exc()[-500:]]
        try:
            fz.stop_servers()
        except Exception:
            pass
    fz.report()
    print('fuzz: total %.1f s' % (time.monotonic() - t0))
    if hasattr(fz, 'base'):
        if fz.failed == 0 and not args.keep:
            shutil.rmtree(fz.base, ignore_errors=True)
        elif args.keep:
            print('fuzz: data directories and logs kept in %s' % fz.base)
        else:
            for d in ('leader', 'follower'):
                shutil.rmtree(os.path.join(fz.base, d), ignore_errors=True)
            print('fuzz: server logs kept in %s' % fz.base)
    sys.exit(1 if fz.failed else 0)


if __name__ == '__main__':
    main()
