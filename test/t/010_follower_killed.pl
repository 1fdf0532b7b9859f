# Failure: a follower killed with SIGKILL while sessions wait on it.
#
# Leader L, followers F1 and F2, both paused, each with waits in flight.
# F1's postmaster is killed with SIGKILL (the pid in postmaster.pid); its
# backends notice the postmaster's death and exit, so each waiting client
# must end with a lost-connection error, not hang.  Meanwhile L keeps
# accepting writes and F2's waits and checks keep working.  F1 is then
# started again, first cut off from L (so it holds exactly the WAL it had
# received before the kill), then streaming again: its answers must be
# right at each step.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DistributedCluster;

my ($leader, $f1, $f2) = create_cluster('kill', followers => 2);
$leader->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
wait_replayed($_, $leader) for ($f1, $f2);
my $leader_conninfo = $leader->connstr . ' application_name=kill_f1';

sub write_row
{
	my ($id) = @_;
	my @r = pstatus($leader, "INSERT INTO t VALUES ($id)");
	die "insert $id failed: $r[0]{error}{message}" if $r[0]{error};
	return $r[0]{last_commit};
}

sub qry
{
	my ($node, $sql) = @_;
	return $node->safe_psql('postgres', $sql);
}

# ---------------------------------------------------------------------
# Waits in flight on both paused followers
# ---------------------------------------------------------------------
pause($_) for ($f1, $f2);
my $t_wait = write_row(1);
(my $t_wait_lsn = $t_wait) =~ s/^\d+://;
# F1 must have received (not replayed) the token's WAL before the kill, so
# that after the restart it is in F1's own pg_wal.
$f1->poll_query_until('postgres',
	"SELECT pg_last_wal_receive_lsn() >= '$t_wait_lsn'::pg_lsn")
  or die 'F1 did not receive the token';
is(qry($f1, "SELECT distributed.is_replayed('$t_wait')"), 'f',
	'F1 (paused) has not replayed the token');

my @bg1 = (
	bg_pstatus($f1, 'k1_func', "SELECT distributed.wait('$t_wait', 180000)"),
	bg_pstatus($f1, 'k1_proc', "CALL distributed.wait_for('$t_wait', 180000)"),
	bg_pstatus($f1, 'k1_lsn',
		"SELECT distributed.wait('$t_wait_lsn'::pg_lsn, 180000)"));
my @bg2 = (
	bg_pstatus($f2, 'k2_func', "SELECT distributed.wait('$t_wait', 180000)"),
	bg_pstatus($f2, 'k2_proc', "CALL distributed.wait_for('$t_wait', 180000)"));
my @pids1 = map { wait_for_waiting_backend($f1, $_) } qw(k1_func k1_proc k1_lsn);
wait_for_waiting_backend($f2, $_) for qw(k2_func k2_proc);
is(qry($f1, 'SELECT count(*) FROM distributed.waiters'), '3',
	'three sessions wait on F1');
is(qry($f2, 'SELECT count(*) FROM distributed.waiters'), '2',
	'two sessions wait on F2');

# ---------------------------------------------------------------------
# SIGKILL F1's postmaster
# ---------------------------------------------------------------------
my $pm = postmaster_pid($f1);
like($pm, qr/^\d+$/, 'F1 has a postmaster.pid');
my @kids = child_pids($pm);
ok((grep { $_ == $pids1[0] } @kids) && (grep { $_ == $pids1[1] } @kids),
	'the waiting backends are children of that postmaster');
my ($killed, @gone) = kill9_server($f1);
is($killed, $pm, 'F1\'s postmaster was killed');
ok(!grep({ !process_gone($_) } $pm, @pids1),
	'the postmaster and every waiting backend are gone');

my %name = (0 => 'wait()', 1 => 'CALL wait_for()', 2 => 'wait(pg_lsn)');
for my $i (0 .. $#bg1)
{
	my @r = bg_finish($bg1[$i]);
	is(scalar(@r), 1, "$name{$i} on F1: the client reported its statement");
	ok(defined $r[0]{error} && !defined $r[0]{rows},
		"$name{$i} on F1 ended with an error, not a status");
	is($r[0]{error}{sqlstate}, undef,
		"$name{$i} on F1: a lost connection has no SQLSTATE");
	like($r[0]{error}{message} // '',
		qr/server closed the connection unexpectedly|terminating connection|connection to server .* lost/,
		"$name{$i} on F1: the error says the connection was lost");
}
is(($bg1[$_]{h}->full_results)[0], 0,
	"$name{$_} on F1: the client exited normally after reporting the error")
  for 0 .. $#bg1;

# ---------------------------------------------------------------------
# The leader and F2 carry on
# ---------------------------------------------------------------------
$leader->poll_query_until('postgres',
	"SELECT NOT EXISTS (SELECT FROM pg_stat_replication WHERE application_name = 'kill_f1')")
  or die 'the leader kept F1\'s WAL sender';
my $t_down = write_row(2);
ok(token_lsn_num($t_down) > token_lsn_num($t_wait),
	'the leader accepts writes while F1 is down');
is( qry($leader, "SELECT distributed.is_replayed('$t_down'), distributed.wait('$t_down', 0)"),
	't|reached', 'the leader holds its new token');
is(qry($f2, 'SELECT count(*) FROM distributed.waiters'), '2',
	'F2\'s waits are still in flight');
is(qry($f2, "SELECT distributed.is_replayed('$t_down'), distributed.wait('$t_down', 0)"),
	'f|timeout', 'F2 (paused) has not replayed the new token');
resume($f2);
for my $bg (@bg2)
{
	my @r = bg_finish($bg);
	is($r[0]{error}, undef, "$bg->{name}: F2's wait ended without error");
}
is(qry($f2, "SELECT distributed.wait('$t_down', 180000)"), 'reached',
	'F2 reaches the token written while F1 was down');
is( qry($f2,
		"SELECT distributed.is_replayed('$t_wait'), distributed.is_replayed('$t_down'),"
		  . ' (SELECT count(*) FROM distributed.waiters), (SELECT count(*) FROM t)'),
	't|t|0|2', 'F2 holds both tokens and both rows, and nobody waits');
my $t_down2 = write_row(3);
is(qry($f2, "SELECT distributed.wait('$t_down2', 180000)"), 'reached',
	'F2 keeps following the leader');

# ---------------------------------------------------------------------
# F1 restarted, cut off from the leader: only the WAL it had received
# ---------------------------------------------------------------------
$f1->append_conf('postgresql.conf', "primary_conninfo = ''");    # F1 is down
$f1->start;
is(qry($f1, 'SELECT pg_is_in_recovery()'), 't', 'F1 is a standby again');
is(qry($f1, 'SELECT count(*) FROM pg_stat_wal_receiver'), '0',
	'F1 has no WAL receiver (cut off)');
poll_value($f1, 'SELECT watcher_pid FROM distributed.stats');
is( qry($f1,
		'SELECT (SELECT count(*) FROM distributed.waiters), waiting, waits_started,'
		  . ' waits_cancelled FROM distributed.stats'),
	'0|0|0|0',
	'F1 restarted with no waiters left over and fresh counters');
$f1->poll_query_until('postgres',
	"SELECT distributed.is_replayed('$t_wait')")
  or die 'F1 did not replay its own WAL';
is( qry($f1,
		"SELECT distributed.is_replayed('$t_wait'), distributed.wait('$t_wait', 0),"
		  . " distributed.is_replayed('$t_down'), distributed.wait('$t_down', 0)"),
	't|reached|f|timeout',
	'after the restart F1 holds the token it had received, not the one written while it was down');

# A wait that starts while F1 cannot reach the token, ended by streaming.
my $bg = bg_pstatus($f1, 'k1_after', "SELECT distributed.wait('$t_down2', 180000)");
my $bgp = bg_pstatus($f1, 'k1_after_proc', "CALL distributed.wait_for('$t_down', 180000)");
wait_for_waiting_backend($f1, $_) for qw(k1_after k1_after_proc);
follow_upstream($f1, $leader_conninfo);
my @r = bg_finish($bg);
is($r[0]{rows}[0][0], 'reached',
	'F1 streams again: a wait for a token written while it was down is reached');
@r = bg_finish($bgp);
is($r[0]{error}, undef, 'and CALL wait_for for one returns without error');
is( qry($f1,
		"SELECT distributed.is_replayed('$t_down'), distributed.is_replayed('$t_down2'),"
		  . ' (SELECT count(*) FROM t)'),
	't|t|3', 'F1 holds the tokens and rows written while it was down');

# ---------------------------------------------------------------------
# F1 works as before: a new wait ends reached, nothing left behind
# ---------------------------------------------------------------------
wait_streaming($f1);
pause($f1);
my $t_new = write_row(4);
$bg = bg_pstatus($f1, 'k1_new', "SELECT distributed.wait('$t_new', 180000)");
my $pid = wait_for_waiting_backend($f1, 'k1_new');
is(qry($f1, "SELECT token FROM distributed.waiters WHERE pid = $pid"), $t_new,
	'a new wait on the restarted F1 is listed in distributed.waiters');
resume($f1);
@r = bg_finish($bg);
is($r[0]{rows}[0][0], 'reached', 'a new wait on the restarted F1 returns reached');
is( qry($f1,
		'SELECT (SELECT count(*) FROM distributed.waiters), waiting,'
		  . ' waits_started = waits_reached + waits_timed_out + waits_promoted'
		  . ' + waits_unreachable + waits_not_in_recovery + waits_cancelled'
		  . ' FROM distributed.stats'),
	'0|0|t', 'F1: distributed.waiters is empty and every wait has one outcome');
ok( $leader->poll_query_until('postgres',
		"SELECT count(*) = 2 FROM pg_stat_replication WHERE state = 'streaming'"),
	'the leader streams to both followers again');

done_testing();
