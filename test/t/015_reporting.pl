# What is reported, and what the position functions answer.
#
# - A follower refreshes distributed.replay_position at the end of every
#   transaction, aborted ones included: replay is paused, a statement
#   reports the old position, then a statement resumes replay, polls until
#   replay has passed a later write and fails; the ParameterStatus after the
#   failure must carry the new position.
# - On the leader, replay_position() and is_replayed() use the same
#   position: with synchronous_commit = off the commit record's end lies
#   above the WAL flush position until the WAL writer gets to it (here: a
#   10 s wal_writer_delay), and a client's own token must still be held by
#   both.
# - SHOW and current_setting() answer the reported value.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DistributedCluster;

my ($leader, $f) = create_cluster(
	'rep',
	followers => 1,
	conf => "wal_writer_delay = 10s\nautovacuum = off");
$leader->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
wait_replayed($f, $leader);

# ---------------------------------------------------------------------
# Follower: an aborted transaction reports the new replay position
# ---------------------------------------------------------------------
pause($f);
$leader->safe_psql('postgres', 'INSERT INTO t VALUES (1)');
my $target = $leader->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');

my @r = pstatus(
	$f,
	'SELECT 1',
	"DO \$\$ BEGIN PERFORM pg_wal_replay_resume(); "
	  . "WHILE pg_last_wal_replay_lsn() < '$target'::pg_lsn LOOP "
	  . "PERFORM pg_sleep(0.01); END LOOP; "
	  . "RAISE EXCEPTION 'replayed, now fail'; END \$\$",
	'SHOW distributed.replay_position',
	"SELECT current_setting('distributed.replay_position')");
my $old = $r[0]{replay_position};
like($old, qr{^1:}, 'a follower reports its replay position');
cmp_ok(token_lsn_num($old), '<', lsn_num($target),
	'while paused it reports a position before the write');
like($r[1]{error}{message}, qr/replayed, now fail/, 'the second transaction aborted');
cmp_ok(token_lsn_num($r[1]{replay_position}), '>=', lsn_num($target),
	'the aborted transaction reported the position replay had reached');
is($r[2]{rows}[0][0], $r[1]{replay_position},
	'SHOW distributed.replay_position answers the reported value');
is($r[3]{rows}[0][0], $r[2]{replay_position},
	'current_setting() answers the reported value');

# A wait_for that times out in a transaction block: replay moved inside
# the block (nothing is reported before its end), the timeout's error
# aborts it, and its reply carries the position replay reached.
pause($f);
$leader->safe_psql('postgres', 'INSERT INTO t VALUES (3)');
$target = $leader->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
@r = pstatus(
	$f,
	'SELECT 1',
	'BEGIN',
	"DO \$\$ BEGIN PERFORM pg_wal_replay_resume(); "
	  . "WHILE pg_last_wal_replay_lsn() < '$target'::pg_lsn LOOP "
	  . "PERFORM pg_sleep(0.01); END LOOP; END \$\$",
	"CALL distributed.wait_for('1:FF/0', 10)",
	'ROLLBACK');
cmp_ok(token_lsn_num($r[0]{replay_position}), '<', lsn_num($target),
	'wait_for timeout: paused, the position before the write');
is($r[2]{replay_position}, $r[0]{replay_position},
	'wait_for timeout: nothing reported inside the block');
is($r[3]{error}{sqlstate}, '57014', 'wait_for timeout: 57014');
cmp_ok(token_lsn_num($r[3]{replay_position}), '>=', lsn_num($target),
	'wait_for timeout: the error reports the position replay reached');

# ---------------------------------------------------------------------
# Leader: its own asynchronous commit is held by both functions
# ---------------------------------------------------------------------
@r = pstatus(
	$leader,
	'SET synchronous_commit = off',
	'INSERT INTO t VALUES (2)',
	"SELECT distributed.is_replayed(distributed.last_commit()), "
	  . "distributed.token_lsn(distributed.replay_position()) >= "
	  . "distributed.token_lsn(distributed.last_commit()), "
	  . "distributed.last_commit()",
	'SHOW distributed.last_commit',
	"SELECT current_setting('distributed.last_commit')");
my $tok = $r[1]{last_commit};
is($r[2]{rows}[0][2], $tok, 'last_commit() is the reported token');
is($r[2]{rows}[0][0], 't', 'leader: is_replayed(own asynchronous commit) is true');
is($r[2]{rows}[0][1], 't',
	'leader: replay_position() is at or above its own asynchronous commit');
is($r[3]{rows}[0][0], $tok, 'SHOW distributed.last_commit answers the reported token');
is($r[4]{rows}[0][0], $tok, 'current_setting() answers the reported token');

done_testing();
