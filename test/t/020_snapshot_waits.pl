# Waits and the snapshot that reads after them.
#
# A wait is only worth its answer if the read that follows it can see the
# write.  Function-form answers (wait(), is_replayed()) speak for the
# caller's next statement: in READ COMMITTED it takes a new snapshot, but
# inside a REPEATABLE READ transaction block the snapshot is already taken
# and will be reused, so such a call must never answer 'reached' / true.
# The statement that runs wait() took its own snapshot before the wait: it
# does not see the write (documented), the next statement does.
#
# The procedure wait_for sent with its read as ONE message, a simple-query
# string "CALL ...; SELECT ..." or a libpq pipeline with one Sync: the
# procedure holds no snapshot (backend_xmin NULL) while it sleeps, and the
# read, which takes its snapshot after the wait returned, sees the row.
#
# Lag is made by pausing replay; it is resumed from the same session
# (pg_wal_replay_resume() inside the transaction under test) or from
# another one once the waiter is seen waiting.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use IPC::Run;
use JSON::PP;
use Time::HiRes qw(usleep);

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DistributedCluster;

my $PIPELINE = abs_path(dirname(__FILE__) . '/../pipeline.py');

my ($leader, $f) = create_cluster('snap', followers => 1);
$leader->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
wait_replayed($f, $leader);

sub write_row
{
	my ($id) = @_;
	my @r = pstatus($leader, "INSERT INTO t VALUES ($id)");
	die "insert failed" if $r[0]{error};
	return $r[0]{last_commit};
}

# Start a client in the background: argv, application_name.
sub bg_client
{
	my (@cmd) = @_;
	my $c = { out => '', err => '' };
	$c->{h} = IPC::Run::start(\@cmd, '>', \$c->{out}, '2>', \$c->{err},
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	return $c;
}

sub bg_client_finish
{
	my ($c) = @_;
	eval { $c->{h}->finish; };
	return ($c->{out}, $c->{err});
}

# The pid of the backend named $app once it waits for replay, or undef
# once its client has ended without waiting (so that a refusal fails the
# test at once instead of after the default timeout).
sub waiting_pid
{
	my ($node, $app, $c) = @_;
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (time() < $deadline)
	{
		my $pid = $node->safe_psql('postgres',
			"SELECT pid FROM pg_stat_activity WHERE application_name = '$app'"
			  . " AND wait_event_type = 'Extension'");
		return $pid if $pid ne '';
		$c->{h}->pump_nb;
		return undef unless $c->{h}->pumpable;
		usleep(20_000);
	}
	return undef;
}

# One simple-query message (psql -c with several statements), optionally
# with REPEATABLE READ as the session's default; returns (stdout, stderr).
my $RR = " options='-c default_transaction_isolation=repeatable\\\\ read'";

sub one_message
{
	my ($sql, $extra) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(
		[
			'psql', '-X', '-A', '-t', '-v', 'VERBOSITY=verbose',
			'-d', $f->connstr('postgres') . ($extra // ''), '-c', $sql
		],
		'>', \$out, '2>', \$err,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	return ($out, $err);
}

# ---------------------------------------------------------------------
# REPEATABLE READ inside a transaction block: the snapshot is taken
# ---------------------------------------------------------------------
pause($f);
my $t1 = write_row(1);
my @r = pstatus(
	$f,
	"BEGIN ISOLATION LEVEL REPEATABLE READ",                          # 0
	"SELECT count(*) FROM t",                                         # 1
	"SELECT pg_wal_replay_resume()",                                  # 2
	"SELECT distributed.wait('$t1', 180000)",                         # 3
	"SELECT distributed.is_replayed('$t1')",                          # 4
	"SELECT distributed.wait(distributed.token_lsn('$t1'), 180000)",  # 5
	"SELECT distributed.is_replayed(distributed.token_lsn('$t1'))",   # 6
	"SELECT count(*) FROM t",                                         # 7
	"COMMIT",                                                         # 8
	"SELECT distributed.wait('$t1', 180000)",                         # 9
	"SELECT count(*) FROM t");                                        # 10
is($r[1]{rows}[0][0], '0', 'RR: the transaction took its snapshot before the write replayed');
is($r[3]{rows}[0][0], 'stale_snapshot',
	'RR block: wait() answers stale_snapshot, not reached');
is($r[4]{rows}[0][0], 'f', 'RR block: is_replayed() answers false');
is($r[5]{rows}[0][0], 'stale_snapshot', 'RR block: wait(pg_lsn) answers stale_snapshot');
is($r[6]{rows}[0][0], 'f', 'RR block: is_replayed(pg_lsn) answers false');
is($r[7]{rows}[0][0], '0', 'RR block: indeed the snapshot still does not see the row');
is($r[9]{rows}[0][0], 'reached', 'after COMMIT the wait is reached');
is($r[10]{rows}[0][0], '1', 'and the next statement sees the row');

# Even a token replayed long ago: the snapshot's age is unknown, so no proof.
@r = pstatus(
	$f,
	"BEGIN ISOLATION LEVEL REPEATABLE READ",                          # 0
	"SELECT distributed.wait('$t1', 0), distributed.is_replayed('$t1')", # 1
	"COMMIT");
is(join('|', @{ $r[1]{rows}[0] }), 'stale_snapshot|f',
	'RR block: an old token is not vouched for either');

# The same in an implicit block (one simple-query message under RR).
# The first statement takes the snapshot; psql before 15 prints only the
# last result of a message, so the wait's answer comes last.
my ($out, $err) = one_message("SELECT 1; SELECT distributed.wait('$t1', 0)", $RR);
like($out, qr/(?:\A|\n)stale_snapshot\n\z/, 'RR, statements of one message: stale_snapshot');

# Counted: a wait answered stale_snapshot is a wait begun and one of
# waits_stale_snapshot; is_replayed()'s false stays a check.
$f->safe_psql('postgres', 'SELECT distributed.reset_stats()');
@r = pstatus(
	$f,
	"BEGIN ISOLATION LEVEL REPEATABLE READ",                          # 0
	"SELECT distributed.wait('$t1', 0)",                              # 1
	"SELECT distributed.wait(distributed.token_lsn('$t1'), 100)",     # 2
	"SELECT distributed.is_replayed('$t1')",                          # 3
	"COMMIT",                                                         # 4
	"SELECT waits_started, waits_stale_snapshot, waits_reached,"
	  . " checks_unsafe, checks_safe FROM distributed.stats");       # 5
is(join('|', @{ $r[5]{rows}[0] // [] }), '2|2|0|1|0',
	'stats: two waits answered stale_snapshot, counted in waits_stale_snapshot, not as checks')
  or diag explain $r[5];

# ---------------------------------------------------------------------
# REPEATABLE READ in autocommit: the function cannot tell whether its
# statement ends the transaction (a pipeline or DO block may go on in it),
# so it still does not vouch; the procedure ends its transaction and waits
# without a snapshot, and the next statement sees the row.
# ---------------------------------------------------------------------
pause($f);
my $t2 = write_row(2);
my $bg_rr = bg_pstatus($f, 's_rr',
	"SET default_transaction_isolation = 'repeatable read'",          # 0
	"SELECT distributed.wait('$t2', 0), distributed.is_replayed('$t2')", # 1
	"CALL distributed.wait_for('$t2', 180000)",                       # 2
	"SELECT count(*) FROM t");                                        # 3
my $pid_rr = waiting_pid($f, 's_rr', $bg_rr);
ok(defined $pid_rr, 'RR autocommit: CALL wait_for waits');
SKIP:
{
	skip 'CALL wait_for did not wait', 1 unless defined $pid_rr;
	is( $f->safe_psql('postgres',
			"SELECT backend_xmin IS NULL FROM pg_stat_activity WHERE pid = $pid_rr"),
		't', 'RR autocommit: CALL wait_for sleeps without an xmin');
}
resume($f);
@r = bg_finish($bg_rr);
is(join('|', @{ $r[1]{rows}[0] }), 'stale_snapshot|f',
	'RR autocommit: the function forms do not vouch');
is($r[2]{error}, undef, 'RR autocommit: CALL wait_for waits and returns');
is($r[3]{rows}[0][0], '2', 'RR autocommit: the next statement sees the row');

# READ COMMITTED in a block: the next statement takes a new snapshot, so
# 'reached' is the truth
pause($f);
my $t3 = write_row(3);
@r = pstatus(
	$f,
	"BEGIN",                                                          # 0
	"SELECT count(*) FROM t",                                         # 1
	"SELECT pg_wal_replay_resume()",                                  # 2
	"SELECT distributed.wait('$t3', 180000)",                         # 3
	"SELECT distributed.is_replayed('$t3')",                          # 4
	"SELECT count(*) FROM t",                                         # 5
	"COMMIT");
is($r[1]{rows}[0][0], '2', 'RC block: the row is not there yet');
is($r[3]{rows}[0][0], 'reached', 'RC block: wait() is reached');
is($r[4]{rows}[0][0], 't', 'RC block: is_replayed() is true');
is($r[5]{rows}[0][0], '3', 'RC block: the next statement sees the row');

# ---------------------------------------------------------------------
# One statement: its snapshot was taken before the wait (documented)
# ---------------------------------------------------------------------
pause($f);
my $t4 = write_row(4);
my $bg = bg_pstatus($f, 's_one',
	"SELECT distributed.wait('$t4', 180000), (SELECT count(*) FROM t)",
	"SELECT count(*) FROM t");
wait_for_waiting_backend($f, 's_one');
resume($f);
@r = bg_finish($bg);
is(join('|', @{ $r[0]{rows}[0] }), 'reached|3',
	'one statement: wait() is reached but the statement\'s own snapshot predates it');
is($r[1]{rows}[0][0], '4', 'one statement: the next statement sees the row');

# ---------------------------------------------------------------------
# One round trip: CALL wait_for; SELECT as one simple-query message
# ---------------------------------------------------------------------
sub no_xmin_while_waiting
{
	my ($pid, $what) = @_;
	is( $f->safe_psql('postgres',
			"SELECT backend_xmin IS NULL AND backend_xid IS NULL, wait_event_type"
			  . " FROM pg_stat_activity WHERE pid = $pid"),
		't|Extension', "$what: the waiting backend holds no xmin while it sleeps");
	is( $f->safe_psql('postgres',
			"SELECT count(*) FROM pg_stat_activity WHERE pid = $pid AND state = 'active'"),
		'1', "$what: the backend is still in its statement");
	return;
}

# As a simple-query string, and as a libpq pipeline (Parse/Bind/Execute
# twice, one Sync): the client's argv, and how to find the read's count in
# what it prints.
my @one_trip = (
	[
		'simple query', 5,
		sub {
			('psql', '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', $_[0],
				'-c', "CALL distributed.wait_for('$_[1]', 180000); SELECT count(*) FROM t");
		},
		sub { (split /\n/, $_[0])[-1] }
	],
	[
		'pipeline', 6,
		sub {
			($DistributedCluster::PYTHON, $PIPELINE, $_[0],
				"CALL distributed.wait_for('$_[1]', 180000)", "SELECT count(*) FROM t");
		},
		sub {
			my @p = map { decode_json($_) } grep { /\S/ } split /\n/, $_[0];
			$p[0]{error} ? $p[0]{error}{message} : $p[1]{rows}[0][0];
		}
	]);
my $t6;
for my $case (@one_trip)
{
	my ($what, $id, $argv, $read) = @$case;
	my $app = "one_trip_$id";

	pause($f);
	$t6 = write_row($id);
	my $c = bg_client($argv->($f->connstr('postgres') . " application_name=$app", $t6));
	my $pid = waiting_pid($f, $app, $c);
	ok(defined $pid, "$what: the combined message waits for replay");
	SKIP:
	{
		skip "$what did not wait", 2 unless defined $pid;
		no_xmin_while_waiting($pid, $what);
	}
	usleep(300_000);
	resume($f);
	($out, $err) = bg_client_finish($c);
	is($read->($out), $id, "$what: the read after CALL wait_for sees the row")
	  or diag $out;
	is($err, '', "$what: no error");
}

# A READ COMMITTED transaction block: each statement takes a new snapshot.
@r = pstatus(
	$f,
	"BEGIN",
	"CALL distributed.wait_for('$t6', 1000)",
	"SELECT count(*) FROM t",
	"COMMIT");
is($r[1]{error}, undef, 'RC block: CALL wait_for runs');
is($r[2]{rows}[0][0], '6', 'RC block: the read after it sees the rows');

# Where the next read would reuse a snapshot already taken: refused, 25001.
($out, $err) = one_message(
	"CALL distributed.wait_for('$t6', 1000); SELECT count(*) FROM t", $RR);
like($err, qr/ERROR:\s+25001:/, 'RR, one message: CALL wait_for raises 25001');
@r = pstatus(
	$f,
	"BEGIN ISOLATION LEVEL REPEATABLE READ",
	"CALL distributed.wait_for('$t6', 1000)",
	"ROLLBACK");
is($r[1]{error}{sqlstate}, '25001', 'RR block: CALL wait_for raises 25001');
my $c = bg_client($DistributedCluster::PYTHON, $PIPELINE,
	$f->connstr('postgres') . $RR,
	"CALL distributed.wait_for('$t6', 1000)",
	"SELECT count(*) FROM t");
($out, $err) = bg_client_finish($c);
my @p = map { decode_json($_) } grep { /\S/ } split /\n/, $out;
is($p[0]{error}, undef,
	'RR pipeline: CALL wait_for (non-atomic, first of the pipeline) ends its transaction and runs')
  or diag explain \@p, $err;
is($p[1]{rows}[0][0], '6', 'RR pipeline: the read after it runs in a new transaction');

is($f->safe_psql('postgres', 'SELECT count(*) FROM distributed.waiters'),
	'0', 'no waiter left behind')
  or diag $f->safe_psql('postgres',
	'SELECT w.*, a.application_name, a.state, a.query FROM distributed.waiters w'
	  . ' LEFT JOIN pg_stat_activity a USING (pid)');

done_testing();
