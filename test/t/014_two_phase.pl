# Two-phase commit: a transaction prepared under a session key and
# committed by another session (no key, or another key), also across a
# restart of the leader between PREPARE and COMMIT PREPARED.
#
# A lookup of the preparing key must never answer below the commit of the
# prepared transaction, or a follower that has not replayed that commit
# would be taken for one that holds the key's writes.  The follower is
# paused (pg_wal_replay_pause) just before the COMMIT PREPARED, so the
# answer is checked on a follower that lacks exactly that commit.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DistributedCluster;

my ($leader, $f) = create_cluster(
	'tpc',
	followers => 1,
	conf => "max_prepared_transactions = 5\nautovacuum = off");
$leader->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
# The floor is set at the map's first use; set it now, below every commit
# this test makes.
$leader->safe_psql('postgres', 'SELECT floor FROM distributed.stats');

sub q1 { return $leader->safe_psql('postgres', $_[0]); }
sub answer { return q1("SELECT distributed.session_token('$_[0]')"); }
sub floor_token { return q1('SELECT floor FROM distributed.stats'); }

# Session A: an earlier commit under userA, then a prepared transaction.
sub prepare_as
{
	my ($key, $id, $gid) = @_;
	my $set = defined $key ? "SET distributed.session_key = '$key';" : '';
	$leader->safe_psql('postgres',
		"$set BEGIN; INSERT INTO t VALUES ($id); PREPARE TRANSACTION '$gid';");
	return;
}

# Session B runs $sql (COMMIT/ROLLBACK PREPARED), optionally under a key;
# returns the token it was told.
sub finish_as
{
	my ($key, $sql) = @_;
	my @stmts = ((defined $key ? ("SET distributed.session_key = '$key'") : ()),
		$sql);
	my @r = pstatus($leader, @stmts);
	is($r[-1]{error}, undef, "$sql succeeds");
	return $r[-1]{last_commit};
}

sub follower_sees
{
	my ($token, $id) = @_;
	return $f->safe_psql('postgres',
		"SELECT distributed.is_replayed('$token'), "
		  . "(SELECT count(*) FROM t WHERE id = $id)");
}

# ---------------------------------------------------------------------
# Committed by a session without a key
# ---------------------------------------------------------------------
my @r = pstatus($leader, "SET distributed.session_key = 'userA'",
	'INSERT INTO t VALUES (1)');
my $t1 = $r[1]{last_commit};
is(answer('userA'), $t1, 'userA answers its plain commit');

prepare_as('userA', 2, 'a2');
wait_replayed($f, $leader);
pause($f);

my $tc = finish_as(undef, "COMMIT PREPARED 'a2'");
cmp_ok(token_lsn_num($tc), '>', token_lsn_num($t1),
	'COMMIT PREPARED reports a token after the earlier commit');
my $ta = answer('userA');
cmp_ok(token_lsn_num($ta), '>=', token_lsn_num($tc),
	'session_token(userA) is at or above the COMMIT PREPARED run by a session without a key');
is(follower_sees($ta, 2), 'f|0',
	"a follower paused before the COMMIT PREPARED does not report userA's answer replayed");
resume($f);
wait_replayed($f, $leader);
is(follower_sees($ta, 2), 't|1',
	"once replayed, userA's answer is replayed and the prepared row is visible");

# ---------------------------------------------------------------------
# Committed by a session with another key: both keys answer the commit
# ---------------------------------------------------------------------
prepare_as('userA', 3, 'a3');
wait_replayed($f, $leader);
pause($f);
$tc = finish_as('userB', "COMMIT PREPARED 'a3'");
$ta = answer('userA');
cmp_ok(token_lsn_num($ta), '>=', token_lsn_num($tc),
	'session_token(userA) is at or above a COMMIT PREPARED run under userB');
cmp_ok(token_lsn_num(answer('userB')), '>=', token_lsn_num($tc),
	'the committing key userB is recorded too');
is(follower_sees($ta, 3), 'f|0',
	"paused follower: userA's answer is not replayed, the row is missing");
resume($f);
wait_replayed($f, $leader);

# ---------------------------------------------------------------------
# ROLLBACK PREPARED and keyless prepares change nothing
# ---------------------------------------------------------------------
my $before = answer('userA');
my $floor0 = floor_token();
prepare_as('userA', 4, 'a4');
finish_as(undef, "ROLLBACK PREPARED 'a4'");
is(answer('userA'), $before, 'ROLLBACK PREPARED leaves userA unchanged');
prepare_as(undef, 5, 'n5');
finish_as(undef, "COMMIT PREPARED 'n5'");
is(floor_token(), $floor0,
	'a transaction prepared without a key does not raise the floor when committed');
is(answer('userA'), $before, '... nor change userA');

# ---------------------------------------------------------------------
# The leader restarts between PREPARE and COMMIT PREPARED
# ---------------------------------------------------------------------
prepare_as('userA', 6, 'a6');
$leader->restart;
# The map starts empty; its floor is set at the first use, here, before
# the COMMIT PREPARED, so the floor alone lies below that commit.
my $floor1 = floor_token();
wait_replayed($f, $leader);
pause($f);
$tc = finish_as(undef, "COMMIT PREPARED 'a6'");
cmp_ok(token_lsn_num($tc), '>', token_lsn_num($floor1),
	'after the restart the COMMIT PREPARED lies above the floor set at start-up');
$ta = answer('userA');
cmp_ok(token_lsn_num($ta), '>=', token_lsn_num($tc),
	'session_token(userA) is at or above a COMMIT PREPARED of a transaction prepared before a restart');
is(follower_sees($ta, 6), 'f|0',
	"paused follower: userA's answer after the restart is not replayed, the row is missing");
resume($f);
wait_replayed($f, $leader);
is(follower_sees($ta, 6), 't|1', 'and is once the follower replays it');

done_testing();
