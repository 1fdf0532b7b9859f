# Waits on a follower: reached, timeout, the procedure form, what
# pg_stat_activity and distributed.waiters show while a backend waits,
# cancellation, statement_timeout, termination, and waits on the leader.
#
# Lag is made by pausing replay; every wait that must not end by itself
# has a timeout far beyond the test's run time.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DistributedCluster;

my ($leader, $f) = create_cluster('wait', followers => 1);
$leader->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
wait_replayed($f, $leader);

sub stat_of
{
	my ($node, $col) = @_;
	return $node->safe_psql('postgres', "SELECT $col FROM distributed.stats");
}

sub write_row
{
	my ($id) = @_;
	my @r = pstatus($leader, "INSERT INTO t VALUES ($id)");
	die "insert failed" if $r[0]{error};
	return $r[0]{last_commit};
}

my $watcher = stat_of($f, 'watcher_pid');
like($watcher, qr/^\d+$/, 'the follower has a replay watcher');
# The watcher connects to no database, so on PostgreSQL 15 it is not in
# pg_stat_activity; look at its process title instead.
SKIP:
{
	skip 'no /proc', 1 unless -r "/proc/$watcher/cmdline";
	like(slurp_file("/proc/$watcher/cmdline"), qr/distributed replay watcher/,
		'stats.watcher_pid is the replay watcher background worker');
}

# ---------------------------------------------------------------------
# A wait ends 'reached' when replay resumes
# ---------------------------------------------------------------------
pause($f);
my $t1 = write_row(1);
my $bg = bg_pstatus($f, 'w_reached',
	"SELECT distributed.wait('$t1', 180000)",
	"SELECT count(*) FROM t WHERE id = 1");
my $pid = wait_for_waiting_backend($f, 'w_reached');
is($f->safe_psql('postgres', "SELECT token FROM distributed.waiters WHERE pid = $pid"),
	$t1, 'distributed.waiters lists the waiting backend with its token');
is(stat_of($f, 'waiting'), 1, 'stats.waiting counts it');
resume($f);
my @r = bg_finish($bg);
is($r[0]{rows}[0][0], 'reached', 'the wait returns reached once replay resumes');
is($r[1]{rows}[0][0], '1', 'the row is visible after the wait');
is($f->safe_psql('postgres', 'SELECT count(*) FROM distributed.waiters'),
	'0', 'the waiter left distributed.waiters');

# ---------------------------------------------------------------------
# The watcher is restarted after it dies, and a pending wait still ends
# ---------------------------------------------------------------------
pause($f);
my $tw = write_row(100);
$bg = bg_pstatus($f, 'w_watch', "SELECT distributed.wait('$tw', 180000)");
wait_for_waiting_backend($f, 'w_watch');
is(kill('TERM', $watcher), 1, 'replay watcher sent SIGTERM');
my $new_watcher = poll_value($f,
	"SELECT watcher_pid FROM distributed.stats WHERE watcher_pid <> $watcher");
isnt($new_watcher, $watcher, 'a new replay watcher took over');
resume($f);
@r = bg_finish($bg);
is($r[0]{rows}[0][0], 'reached',
	'a wait that began under the old watcher is reached after resume');

# ---------------------------------------------------------------------
# Timeouts
# ---------------------------------------------------------------------
pause($f);
my $t2 = write_row(2);
(my $t2_lsn = $t2) =~ s/^\d+://;
my $timed_out = stat_of($f, 'waits_timed_out');
@r = pstatus(
	$f,
	"SELECT distributed.wait('$t2', 50)",                  # 0
	"SELECT distributed.wait('$t2', 0)",                   # 1
	"SELECT distributed.wait('$t2_lsn'::pg_lsn, 50)",      # 2
	"SELECT distributed.wait('$t1', 0)",                   # 3
	"CALL distributed.wait_for('$t2', 50)",                # 4
	"CALL distributed.wait_for('$t1', 50)",                # 5
	"SELECT distributed.wait('$t2', -1)",                  # 6
	"SELECT distributed.wait('$t2', NULL)",                # 7
	"SELECT distributed.wait(NULL::text, 10)");            # 8
is($r[0]{rows}[0][0], 'timeout', 'wait with a short timeout on a paused follower: timeout');
is($r[1]{rows}[0][0], 'timeout', 'wait with timeout 0 for an unreplayed token: timeout');
is($r[2]{rows}[0][0], 'timeout', 'pg_lsn form times out too');
is($r[3]{rows}[0][0], 'reached', 'wait with timeout 0 for a replayed token: reached');
is($r[4]{error}{sqlstate}, '57014', 'CALL wait_for that times out raises 57014');
is($r[5]{error}, undef, 'CALL wait_for of a replayed token succeeds');
is($r[6]{error}{sqlstate}, '22023', 'negative timeout: 22023');
is($r[7]{error}{sqlstate}, '22004', 'NULL timeout: 22004');
is($r[8]{error}{sqlstate}, '22004', 'NULL token: 22004');
is(stat_of($f, 'waits_timed_out'), $timed_out + 4,
	'four waits were counted as timed out');

# ---------------------------------------------------------------------
# Waiting procedure vs waiting function: snapshot, wait event, waiters,
# cancellation
# ---------------------------------------------------------------------
my $cancelled = stat_of($f, 'waits_cancelled');
my $bgp = bg_pstatus($f, 'w_proc', "CALL distributed.wait_for('$t2', 180000)");
my $bgf = bg_pstatus($f, 'w_func', "SELECT distributed.wait('$t2', 180000)");
my $pidp = wait_for_waiting_backend($f, 'w_proc');
my $pidf = wait_for_waiting_backend($f, 'w_func');
my $act = "SELECT backend_xmin IS NULL, wait_event_type, wait_event, state"
  . " FROM pg_stat_activity WHERE pid = ";
# PostgreSQL 17 lets an extension name its wait events; before that every
# extension's wait shows as Extension/Extension
my $event = $f->pg_version >= 17 ? 'DistributedReplay' : 'Extension';
is($f->safe_psql('postgres', $act . $pidp), "t|Extension|$event|active",
	"CALL wait_for waits in wait event Extension/$event holding no snapshot (backend_xmin NULL)");
is($f->safe_psql('postgres', $act . $pidf), "f|Extension|$event|active",
	"SELECT wait() waits in wait event Extension/$event holding its snapshot (backend_xmin set)");
is( $f->safe_psql('postgres',
		'SELECT string_agg(pid::text || \'=\' || token, \',\' ORDER BY pid) FROM distributed.waiters'),
	join(',', map { "$_=$t2" } sort { $a <=> $b } ($pidp, $pidf)),
	'distributed.waiters lists both waiters');
is( $f->safe_psql('postgres',
		"SELECT waiting_ms >= 0 AND started <= now() FROM distributed.waiters WHERE pid = $pidp"),
	't', 'waiters shows when the wait started');
is(stat_of($f, 'waiting'), 2, 'stats.waiting is 2');

is( $f->safe_psql('postgres',
		"SELECT pg_cancel_backend($pidp) AND pg_cancel_backend($pidf)"),
	't', 'both waiters signalled');
my @rp = bg_finish($bgp);
my @rf = bg_finish($bgf);
is($rp[0]{error}{sqlstate}, '57014', 'pg_cancel_backend cancels CALL wait_for: 57014');
is($rf[0]{error}{sqlstate}, '57014', 'pg_cancel_backend cancels SELECT wait(): 57014');
is($f->safe_psql('postgres', 'SELECT count(*) FROM distributed.waiters'),
	'0', 'cancelled waiters left distributed.waiters');
is(stat_of($f, 'waiting'), 0, 'stats.waiting is back to 0');
is(stat_of($f, 'waits_cancelled'), $cancelled + 2,
	'stats.waits_cancelled counted both cancellations');

# ---------------------------------------------------------------------
# statement_timeout, transaction blocks, held snapshots
# ---------------------------------------------------------------------
@r = pstatus(
	$f,
	"SET statement_timeout = '200ms'",                             # 0
	"SELECT distributed.wait('$t2', 180000)",                      # 1
	"CALL distributed.wait_for('$t2', 180000)",                    # 2
	"RESET statement_timeout",                                     # 3
	"BEGIN",                                                       # 4
	"CALL distributed.wait_for('$t1', 1000)",                      # 5
	"ROLLBACK",                                                    # 6
	"SET default_transaction_isolation = 'repeatable read'",       # 7
	"CALL distributed.wait_for('$t1', 1000)",                      # 8
	"RESET default_transaction_isolation",                         # 9
	"SELECT count(*) FROM distributed.waiters");                   # 10
is($r[1]{error}{sqlstate}, '57014', 'statement_timeout ends SELECT wait() with 57014');
is($r[2]{error}{sqlstate}, '57014', 'statement_timeout ends CALL wait_for with 57014');
like($r[1]{error}{message}, qr/statement timeout/, 'the message names the statement timeout');
is($r[5]{error}, undef,
	'CALL wait_for inside a READ COMMITTED BEGIN block runs (the next statement takes a new snapshot)');
is($r[8]{error}, undef,
	'CALL wait_for under REPEATABLE READ in autocommit ends its transaction and runs');
is($r[10]{rows}[0][0], '0', 'no waiter left behind');

# ---------------------------------------------------------------------
# pg_terminate_backend while waiting
# ---------------------------------------------------------------------
$bg = bg_pstatus($f, 'w_term', "SELECT distributed.wait('$t2_lsn'::pg_lsn, 180000)");
$pid = wait_for_waiting_backend($f, 'w_term');
is($f->safe_psql('postgres', "SELECT token FROM distributed.waiters WHERE pid = $pid"),
	"1:$t2_lsn", 'a bare-LSN waiter is listed on the replayed timeline');
$f->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
poll_value($f,
	"SELECT 1 WHERE NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $pid)");
is($f->safe_psql('postgres', "SELECT count(*) FROM distributed.waiters WHERE pid = $pid"),
	'0', 'a terminated waiter leaves no row in distributed.waiters');
is(stat_of($f, 'waiting'), 0, 'stats.waiting is 0 after the termination');
@r = bg_finish($bg);
ok(defined $r[0]{error}, 'the terminated client got an error');

# ---------------------------------------------------------------------
# Resume: the pending token is reached; counters add up
# ---------------------------------------------------------------------
resume($f);
is($f->safe_psql('postgres', "SELECT distributed.wait('$t2', 180000)"),
	'reached', 'after resume the pending token is reached');
is( $f->safe_psql('postgres',
		'SELECT waits_started = waits_reached + waits_timed_out + waits_promoted'
		  . ' + waits_unreachable + waits_not_in_recovery + waits_cancelled'
		  . ' AND waiting = 0 FROM distributed.stats'),
	't', 'every wait started ended in exactly one outcome');

# ---------------------------------------------------------------------
# A wait that fails still reports how far replay got
# ---------------------------------------------------------------------
# The error ends the transaction without a commit, so only the wait itself
# can refresh distributed.replay_position for the client.
pause($f);
@r = pstatus($leader, "INSERT INTO t VALUES (50)");
my $t_moved = $r[0]{last_commit};
my $bgr = bg_pstatus($f, 'w_report', 'SELECT 1',
	"CALL distributed.wait_for('1:FFFFFFFF/0', 3000)");
wait_for_waiting_backend($f, 'w_report');
resume($f);
wait_replayed($f, $leader);
my @rr = bg_finish($bgr);
cmp_ok(token_lsn_num($rr[0]{replay_position}), '<', token_lsn_num($t_moved),
	'before the wait the follower reported a position short of the new write');
is($rr[1]{error}{sqlstate}, '57014', 'the wait timed out');
cmp_ok(token_lsn_num($rr[1]{replay_position}), '>=', token_lsn_num($t_moved),
	'the timed-out wait reported the position replay had reached meanwhile');

# ---------------------------------------------------------------------
# On the leader
# ---------------------------------------------------------------------
@r = pstatus(
	$leader,
	"SELECT distributed.wait('$t2', 180000)",                      # 0
	"CALL distributed.wait_for('$t2', 180000)",                    # 1
	"SELECT distributed.wait('1:FFFFFFFF/0', 180000)",             # 2
	"CALL distributed.wait_for('1:FFFFFFFF/0', 180000)");          # 3
is($r[0]{rows}[0][0], 'reached', 'on the leader, wait for its own token: reached');
is($r[1]{error}, undef, 'on the leader, CALL wait_for its own token succeeds');
is($r[2]{rows}[0][0], 'not_in_recovery',
	'on the leader, wait for a token beyond its WAL: not_in_recovery');
is($r[3]{error}{sqlstate}, '55U03',
	'on the leader, CALL wait_for a token beyond its WAL raises 55U03');

done_testing();
