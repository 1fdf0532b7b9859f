# The replay watcher and how waiters sleep:
#
#  - when the watcher exits, waiters already asleep are woken and check
#    replay themselves (the postmaster is stopped meanwhile, so no new
#    watcher can be what wakes them);
#  - several waiters on different tokens are all woken, and leave nothing
#    behind;
#  - with waiters asleep and replay paused, nobody wakes up periodically:
#    not the waiter, and on PostgreSQL 16 and later not the watcher either
#    (it sleeps on the startup process's replay condition variable);
#    counted in context switches of the processes, over a stretch of WAL
#    arriving unreplayed;
#  - a follower with max_wal_senders = 0 (no replay broadcasts on any
#    version) still wakes its waiters.
#
# Lag is made by pausing replay; every wait that must not end by itself
# has a timeout far beyond the test's run time.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Cwd qw(abs_path);
use Test::More;
use DistributedCluster;

my ($leader, $f) = create_cluster('watch', followers => 1);
$leader->safe_psql('postgres', 'CREATE TABLE t (id int)');
wait_replayed($f, $leader);

my $pg_major = int($f->safe_psql('postgres', 'SHOW server_version_num') / 10000);

sub write_row
{
	my ($node, $id) = @_;
	my @r = pstatus($node, "INSERT INTO t VALUES ($id)");
	die "insert failed: $r[0]{error}{message}" if $r[0]{error};
	return $r[0]{last_commit};
}

sub watcher_pid
{
	my ($node) = @_;
	return poll_value($node,
		'SELECT watcher_pid FROM distributed.stats WHERE watcher_pid IS NOT NULL');
}

# Context switches (voluntary + involuntary) of a process so far: each
# wake-up of a sleeping process is one.
sub switches
{
	my ($pid) = @_;
	my $status = slurp_file("/proc/$pid/status");
	my ($v) = $status =~ /^voluntary_ctxt_switches:\s+(\d+)/m;
	my ($n) = $status =~ /^nonvoluntary_ctxt_switches:\s+(\d+)/m;
	die "no context switch counts for $pid" unless defined $v && defined $n;
	return $v + $n;
}

# ---------------------------------------------------------------------
# The watcher's exit wakes waiters already asleep
# ---------------------------------------------------------------------
pause($f);
my $t1 = write_row($leader, 1);
my $bg = bg_pstatus($f, 'w_exit', "SELECT distributed.wait('$t1', 3600000)");
wait_for_waiting_backend($f, 'w_exit');
my $watcher = watcher_pid($f);

# A session opened now can resume replay while the postmaster, stopped,
# cannot start a new watcher (nor fork a new backend).
my $resumer = $f->background_psql('postgres');
my $pm = postmaster_pid($f);
stop_process($pm);
is(kill('TERM', $watcher), 1, 'replay watcher sent SIGTERM');
wait_processes_gone($watcher);
$resumer->query_safe('SELECT pg_wal_replay_resume()');
my @r = eval { bg_finish($bg) };
my $err = $@;
continue_process($pm);
is($err, '', 'the waiter returned while no watcher ran');
is($r[0]{rows}[0][0], 'reached',
	'a waiter asleep when the watcher exited is reached once replay resumes');
$resumer->quit;

my $new_watcher = poll_value($f,
	"SELECT watcher_pid FROM distributed.stats WHERE watcher_pid <> $watcher");
isnt($new_watcher, $watcher, 'the postmaster started a new watcher');

# ---------------------------------------------------------------------
# Several waiters on different tokens
# ---------------------------------------------------------------------
pause($f);
my @tokens = map { write_row($leader, 10 + $_) } 1 .. 3;
my @bgs;
for my $i (0 .. 5)
{
	my $tok = $tokens[ $i % 3 ];
	push @bgs, bg_pstatus($f, "w_many$i", "SELECT distributed.wait('$tok', 3600000)");
}
wait_for_waiting_backend($f, "w_many$_") for 0 .. 5;
is($f->safe_psql('postgres', 'SELECT count(*) FROM distributed.waiters'),
	'6', 'six waiters listed');
resume($f);
my @results = map { (bg_finish($_))[0]{rows}[0][0] } @bgs;
is(join(',', @results), join(',', ('reached') x 6), 'all six are reached');
is($f->safe_psql('postgres',
		'SELECT count(*) FROM distributed.waiters UNION ALL SELECT waiting FROM distributed.stats'),
	"0\n0", 'no waiter left behind');

# ---------------------------------------------------------------------
# Waiters asleep cause no periodic wake-ups
# ---------------------------------------------------------------------
pause($f);
my $t2 = write_row($leader, 2);
$bg = bg_pstatus($f, 'w_idle', "SELECT distributed.wait('$t2', 3600000)");
my $waiter = wait_for_waiting_backend($f, 'w_idle');
$watcher = watcher_pid($f);

# WAL keeps arriving (received, not replayed) while we count.  The first
# stretch lets the watcher settle after the waiter armed; the second is
# the one measured.
my @counts;
for my $stretch (1 .. 2)
{
	write_row($leader, 1000 + $_) for 1 .. 20;
	push @counts, [ switches($waiter), switches($watcher) ];
}
is($counts[1][0] - $counts[0][0], 0,
	'a sleeping waiter is not woken while replay is paused');
SKIP:
{
	skip 'before PostgreSQL 16 the watcher polls every watch_interval', 1
	  if $pg_major < 16;
	is($counts[1][1] - $counts[0][1], 0,
		'the watcher is not woken while replay is paused (it sleeps on the replay condition variable)');
}
resume($f);
@r = bg_finish($bg);
is($r[0]{rows}[0][0], 'reached', 'the sleeping waiter is reached once replay resumes');

# ---------------------------------------------------------------------
# max_wal_senders = 0: the startup process broadcasts nothing; the
# watcher polls.  A standby needs max_wal_senders at least the primary's,
# so this pair replicates through the WAL archive.
# ---------------------------------------------------------------------
# An absolute path: the servers run in their data directories.
my $archive = abs_path(PostgreSQL::Test::Utils::tempdir());
my $al = PostgreSQL::Test::Cluster->new('arch_leader');
$al->init(allows_streaming => 1);
$al->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'distributed'
max_wal_senders = 0
archive_mode = on
archive_command = 'cp "%p" "$archive/%f"'
});
$al->start;
$al->safe_psql('postgres', 'CREATE EXTENSION distributed; CREATE TABLE t (id int)');
$al->stop;
$al->backup_fs_cold('cold');
$al->start;
my $af = PostgreSQL::Test::Cluster->new('arch_follower');
$af->init_from_backup($al, 'cold');
$af->append_conf('postgresql.conf', qq{
max_wal_senders = 0
restore_command = 'cp "$archive/%f" "%p"'
wal_retrieve_retry_interval = '100ms'
});
$af->set_standby_mode;
$af->start;
is($af->safe_psql('postgres', 'SELECT pg_is_in_recovery(), current_setting(\'max_wal_senders\')'),
	"t|0", 'an archive-fed follower with max_wal_senders = 0');
watcher_pid($af);

pause($af);
my $t3 = write_row($al, 3);
$al->safe_psql('postgres', 'SELECT pg_switch_wal()');
$bg = bg_pstatus($af, 'w_nosend', "SELECT distributed.wait('$t3', 3600000)");
wait_for_waiting_backend($af, 'w_nosend');
resume($af);
@r = bg_finish($bg);
is($r[0]{rows}[0][0], 'reached',
	'with max_wal_senders = 0 a waiter is still woken once replay passes its token');

$af->stop;
$al->stop;
done_testing();
