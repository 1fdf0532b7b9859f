# Tokens: what a client receives in ParameterStatus, what followers answer
# for them, and the leader's session map (keys, record, forget).
#
# Leader + followers A and B.  A is paused (pg_wal_replay_pause), B caught
# up, so the same token is checked on a follower that has not replayed it
# and on one that has.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DistributedCluster;

my $TOKEN_RE = qr{^[1-9][0-9]*:[0-9A-F]+/[0-9A-F]+$};

my ($leader, $fa, $fb) = create_cluster('tok', followers => 2);
$leader->safe_psql('postgres',
	'CREATE TABLE t (id int PRIMARY KEY, note text)');
# The session map's floor is set at its first use (to the end of WAL); set
# it now, so that it lies below every token this test compares exactly.
$leader->safe_psql('postgres', 'SELECT floor FROM distributed.stats');
wait_replayed($_, $leader) for ($fa, $fb);

# ---------------------------------------------------------------------
# The token in ParameterStatus
# ---------------------------------------------------------------------
my @r = pstatus(
	$leader,
	"SELECT distributed.last_commit() IS NULL",    # 0
	"INSERT INTO t VALUES (1, 'one')",             # 1
	"SELECT distributed.last_commit()",            # 2
	"SELECT count(*) FROM t",                      # 3 read only
	"BEGIN",                                       # 4
	"SELECT * FROM t",                             # 5
	"COMMIT",                                      # 6
	"INSERT INTO t VALUES (2, 'two')",             # 7
	"SELECT distributed.last_commit()",            # 8
	"SELECT pg_current_wal_insert_lsn()");         # 9

is($r[0]{rows}[0][0], 't', 'last_commit() is NULL before the first write');
is($r[0]{last_commit}, '',
	'distributed.last_commit is reported empty at connection start');
my $t1 = $r[1]{last_commit};
like($t1, $TOKEN_RE,
	'a write transaction reports a token of the form tli:lsn');
is(token_tli($t1), 1, 'the token names timeline 1');
is($r[2]{rows}[0][0], $t1,
	'the reported token equals last_commit() on the same connection');
is($r[3]{last_commit}, $t1,
	'a read-only statement does not change the reported token');
is($r[6]{last_commit}, $t1,
	'a read-only BEGIN..COMMIT block does not change the reported token');
my $t2 = $r[7]{last_commit};
cmp_ok(token_lsn_num($t2), '>', token_lsn_num($t1),
	'the next write reports a later token');
is($r[8]{rows}[0][0], $t2, 'last_commit() follows the newest write');
cmp_ok(token_lsn_num($t2), '<=', lsn_num($r[9]{rows}[0][0]),
	'the token lies within the WAL written so far');
is($r[7]{replay_position}, '',
	'a leader does not report distributed.replay_position');

my ($code) = sqlstate($leader, "SET distributed.last_commit = '1:0/1'");
is($code, '55P02', 'distributed.last_commit cannot be set');

# ---------------------------------------------------------------------
# A paused, B caught up: replayed exactly when the write is visible
# ---------------------------------------------------------------------
pause($fa);
@r = pstatus($leader, "INSERT INTO t VALUES (3, 'three')");
my $t3 = $r[0]{last_commit};
like($t3, $TOKEN_RE, 'token of the write made while A is paused');
wait_replayed($fb, $leader);
(my $t3_lsn = $t3) =~ s/^\d+://;

my $q =
  "SELECT distributed.is_replayed('$t3'), (SELECT count(*) FROM t WHERE id = 3)";
is($fa->safe_psql('postgres', $q), 'f|0',
	'paused follower A: is_replayed is false and the row is not visible');
is($fb->safe_psql('postgres', $q), 't|1',
	'caught-up follower B: is_replayed is true and the row is visible');

$q = "SELECT distributed.is_replayed('$t3_lsn'::pg_lsn),"
  . " distributed.is_replayed(distributed.token_lsn('$t3')),"
  . " distributed.is_replayed('$t3_lsn'::text)";
is($fa->safe_psql('postgres', $q), 'f|f|f',
	'on A the pg_lsn overload and the bare-LSN text form also say false');
is($fb->safe_psql('postgres', $q), 't|t|t',
	'on B the pg_lsn overload and the bare-LSN text form also say true');

is($leader->safe_psql('postgres', "SELECT distributed.is_replayed('$t3')"),
	't', 'the leader holds its own token');
is( $leader->safe_psql('postgres',
		"SELECT distributed.is_replayed('1:FFFFFFFF/0')"),
	'f',
	'the leader does not hold a token beyond its WAL');
is($fb->safe_psql('postgres', "SELECT distributed.is_replayed('2:0/1')"),
	'f', 'a follower on timeline 1 has not replayed a timeline-2 token');

# The follower's replay position as a client sees it, across the resume.
# With report_replay_position off the value is not refreshed; RESET turns
# it back on, and the RESET's own transaction reports the new position.
my @f = pstatus(
	$fa,
	"SELECT distributed.is_replayed('$t3')",                   # 0
	"SELECT distributed.replay_position()",                    # 1
	"SET distributed.report_replay_position = off",            # 2
	"SELECT pg_wal_replay_resume()",                           # 3
	"SELECT distributed.wait('$t3', 180000)",                  # 4
	"RESET distributed.report_replay_position",                # 5
	"SELECT distributed.is_replayed('$t3'), count(*) FROM t WHERE id = 3"
);                                                             # 6
my $rp0 = $f[0]{replay_position};
like($rp0, $TOKEN_RE, 'paused follower reports distributed.replay_position');
cmp_ok(token_lsn_num($rp0), '<', token_lsn_num($t3),
	'the reported replay position is before the unreplayed token');
is($f[0]{rows}[0][0], 'f', 'is_replayed is false at that position');
is($f[1]{rows}[0][0], $rp0,
	'replay_position() equals the reported value while paused');
is($f[0]{last_commit}, '', 'a follower reports no commit token');
is($f[4]{rows}[0][0], 'reached', 'wait for the token after resume: reached');
is($f[4]{replay_position}, $rp0,
	'with report_replay_position off the reported position is not refreshed');
my $rp5 = $f[5]{replay_position};
cmp_ok(token_lsn_num($rp5), '>=', token_lsn_num($t3),
	'reporting on again: the reported replay position reached the token');
cmp_ok(token_lsn_num($rp5), '>', token_lsn_num($rp0),
	'the reported replay position advanced');
is(join('|', @{ $f[6]{rows}[0] }), 't|1',
	'after resume A reports the token replayed and the row visible');

is( $fa->safe_psql('postgres',
		'SELECT role, checks_safe, checks_unsafe, floor IS NULL FROM distributed.stats'
	),
	'follower|1|5|t',
	'A counted 5 unsafe checks and 1 safe one; a follower has no floor');

# ---------------------------------------------------------------------
# Session keys
# ---------------------------------------------------------------------
my $before = $leader->safe_psql('postgres',
	'SELECT commits_recorded FROM distributed.stats');
my @s = pstatus(
	$leader,
	"BEGIN",                                                    # 0
	"SET LOCAL distributed.session_key = 'user-local'",         # 1
	"INSERT INTO t VALUES (10, 'local')",                       # 2
	"COMMIT",                                                   # 3
	"SELECT distributed.session_token('user-local')",           # 4
	"SHOW distributed.session_key",                             # 5
	"INSERT INTO t VALUES (11, 'no key')",                      # 6
	"SELECT distributed.session_token('user-local')",           # 7
	"SET distributed.session_key = 'user-session'",             # 8
	"INSERT INTO t VALUES (12, 'session 1')",                   # 9
	"SELECT distributed.session_token('user-session')",         # 10
	"INSERT INTO t VALUES (13, 'session 2')",                   # 11
	"SELECT distributed.session_token('user-session')",         # 12
	"SELECT count(*) FROM t",                                   # 13
	"SELECT distributed.session_token('user-session')",         # 14
	"RESET distributed.session_key",                            # 15
	"SELECT key, token FROM distributed.sessions ORDER BY key"  # 16
);
ok(!grep({ defined $_->{error} } @s), 'session key statements ran')
  or diag explain [ map { $_->{error} } @s ];
my $t10 = $s[3]{last_commit};
like($t10, $TOKEN_RE, 'COMMIT of the SET LOCAL transaction reports a token');
is($s[4]{rows}[0][0], $t10,
	'SET LOCAL key: session_token(key) equals the commit token');
is($s[5]{rows}[0][0], '', 'SET LOCAL key is gone after COMMIT');
my $t11 = $s[6]{last_commit};
cmp_ok(token_lsn_num($t11), '>', token_lsn_num($t10), 'next write has a later token');
is($s[7]{rows}[0][0], $t10,
	'a write without the key does not move the SET LOCAL key');
my $t12 = $s[9]{last_commit};
is($s[10]{rows}[0][0], $t12, 'session-level key records the first write');
my $t13 = $s[11]{last_commit};
isnt($t13, $t12, 'second write has its own token');
is($s[12]{rows}[0][0], $t13, 'session-level key records the second write');
is($s[14]{rows}[0][0], $t13,
	'a read-only transaction under the key does not move it');
is_deeply(
	$s[16]{rows},
	[ [ 'user-local', $t10 ], [ 'user-session', $t13 ] ],
	'the sessions view lists both keys at their last write');
is( $leader->safe_psql('postgres',
		'SELECT commits_recorded FROM distributed.stats'),
	$before + 3,
	'three keyed commits were recorded');

# ---------------------------------------------------------------------
# record() and forget()
# ---------------------------------------------------------------------
(my $t12_lsn = $t12) =~ s/^\d+://;
@s = pstatus(
	$leader,
	"SELECT distributed.record('rec', '$t13')",                 # 0
	"SELECT distributed.record('rec', '$t10')",                 # 1
	"SELECT distributed.session_token('rec')",                  # 2
	"SELECT distributed.record('rec2', '$t12_lsn')",            # 3
	"SELECT distributed.record('rec', '1:FFFFFFFF/0')",         # 4
	"SELECT distributed.record('rec', '7:0/1')",                # 5
	"SELECT distributed.record('rec', 'not a token')",          # 6
	"SELECT distributed.record('', '$t10')",                    # 7
	"SELECT distributed.forget('rec')",                         # 8
	"SELECT distributed.forget('rec')",                         # 9
	"SELECT distributed.session_token('rec')",                  # 10
	"SELECT distributed.session_token('never-seen')",           # 11
	"SELECT floor FROM distributed.stats",                      # 12
	"SELECT count(*) FROM distributed.sessions WHERE key = 'rec'",  # 13
	"SELECT distributed.session_token('rec2')");                # 14
is($s[0]{rows}[0][0], $t13, 'record() of a new key returns the token');
is($s[1]{rows}[0][0], $t13, 'record() never lowers a key');
is($s[2]{rows}[0][0], $t13, 'session_token() answers the recorded token');
is($s[3]{rows}[0][0], "1:$t12_lsn",
	'record() of a bare LSN takes the current timeline');
is($s[4]{error}{sqlstate}, '22023', 'record() beyond the WAL: 22023');
is($s[5]{error}{sqlstate}, '22023',
	'record() on a timeline the server never had: 22023');
is($s[6]{error}{sqlstate}, '22P02', 'record() of a malformed token: 22P02');
is($s[7]{error}{sqlstate}, '22023', 'record() with an empty key: 22023');
is($s[8]{rows}[0][0], 't', 'forget() of a known key returns true');
is($s[9]{rows}[0][0], 'f', 'forget() again returns false');
cmp_ok(token_lsn_num($s[10]{rows}[0][0]), '>=', token_lsn_num($t13),
	'a forgotten key still answers at least its last token');
cmp_ok(token_lsn_num($s[11]{rows}[0][0]), '>=', token_lsn_num($t13),
	'forget() raised the floor: an unknown key answers at least that token');
cmp_ok(token_lsn_num($s[12]{rows}[0][0]), '>=', token_lsn_num($t13),
	'stats.floor is at least the forgotten key\'s token');
is($s[13]{rows}[0][0], '0', 'the forgotten key left the sessions view');
is($s[14]{rows}[0][0], $s[10]{rows}[0][0],
	'a key below the floor answers the floor');

# ---------------------------------------------------------------------
# The session map is the leader's
# ---------------------------------------------------------------------
for my $call ("distributed.session_token('user-local')",
	"distributed.record('k', '$t10')",
	"distributed.forget('user-local')")
{
	my ($c) = sqlstate($fb, "SELECT $call");
	is($c, '25006', "$call on a follower: 25006");
}

done_testing();
