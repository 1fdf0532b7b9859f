# Failure: the leader crashes (immediate stop) and restarts.
#
# - No key answers below its real last commit afterwards (the floor at the
#   end of recovered WAL), nor does a key never seen.
# - Tokens issued before the crash stay meaningful: waits in flight on a
#   paused follower across the crash end reached once it resumes, and the
#   follower and the restarted leader hold every pre-crash token.
# - A commit made with synchronous_commit = off just before the crash, whose
#   WAL was never written: held in the WAL buffers by stopping the WAL
#   writer (SIGSTOP) and keeping every other writer of WAL pages away
#   (autovacuum off, bgwriter_lru_maxpages = 0, no checkpoint).  Its client
#   had already received a token.  The test shows what that token means
#   after the crash (the README does not say; see the report in the
#   comments at the end).

use strict;
use warnings;

use POSIX ();
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DistributedCluster;

# wal_log_hints off and no data checksums (on by default from
# PostgreSQL 18): reads write no hint-bit full-page images, so the
# leader's WAL grows after the restart by little more than the
# end-of-recovery checkpoint (page pruning may still log a page or two).
# wal_buffers and shared_buffers large enough for the lost transaction,
# so that no backend has to write its WAL out to make room (writing out a
# dirty data page first flushes the WAL up to that page's position).
my ($leader, $f) = create_cluster('crash', followers => 1, checksums => 0,
	conf => "autovacuum = off\nbgwriter_lru_maxpages = 0\nwal_log_hints = off\n"
	  . "wal_buffers = 1MB\nshared_buffers = 16MB");
$leader->safe_psql('postgres',
	'CREATE TABLE t (id int PRIMARY KEY, k text, note text)');
$leader->safe_psql('postgres', 'SELECT floor FROM distributed.stats');
wait_replayed($f, $leader);

sub qry
{
	my ($node, $sql) = @_;
	return $node->safe_psql('postgres', $sql);
}

my $id = 0;
my %last;       # key => its last commit token
my @all;        # every durable token

# one keyed write per statement list; returns the token of the last one
sub keyed_write
{
	my ($key, $how) = @_;
	my @sql;
	if ($how eq 'local')
	{
		@sql = ('BEGIN', "SET LOCAL distributed.session_key = '$key'",
			"INSERT INTO t VALUES (" . ++$id . ", '$key', 'a')",
			"INSERT INTO t VALUES (" . ++$id . ", '$key', 'b')", 'COMMIT');
	}
	else
	{
		@sql = ("SET distributed.session_key = '$key'",
			"INSERT INTO t VALUES (" . ++$id . ", '$key', 'one')");
	}
	my @r = pstatus($leader, @sql);
	die "write for $key failed" if grep { $_->{error} } @r;
	my $tok = $r[-1]{last_commit};
	$last{$key} = $tok;
	push @all, $tok;
	return $tok;
}

my @keys = map { "key$_" } 1 .. 6;
# rounds over the keys, in different orders and ways
for my $round (1 .. 3)
{
	my @order = $round == 2 ? reverse(@keys) : @keys;
	keyed_write($_, ($round + length $_) % 2 ? 'local' : 'set') for @order;
}
# some keys written once more, so their last write is the newest of all
keyed_write('key2', 'set');

is( qry($leader,
		"SELECT string_agg(k || '=' || distributed.session_token(k), ',' ORDER BY k)"
		  . " FROM unnest(ARRAY['" . join("','", @keys) . "']) k"),
	join(',', map { "$_=$last{$_}" } sort @keys),
	'before the crash every key answers exactly its last token');

# ---------------------------------------------------------------------
# The follower lags: waits for pre-crash tokens in flight across the crash
# ---------------------------------------------------------------------
pause($f);
my $t_paused = keyed_write('key4', 'local');
my $t_max = keyed_write('key5', 'set');
is(qry($f, "SELECT distributed.is_replayed('$t_paused')"), 'f',
	'the paused follower has not replayed the last pre-crash tokens');
my $bgf = bg_pstatus($f, 'c_func', "SELECT distributed.wait('$t_max', 180000)");
my $bgp = bg_pstatus($f, 'c_proc', "CALL distributed.wait_for('$t_paused', 180000)");
wait_for_waiting_backend($f, $_) for qw(c_func c_proc);

# ---------------------------------------------------------------------
# An asynchronous commit whose WAL stays in the WAL buffers
# ---------------------------------------------------------------------
my $t_durable = keyed_write('async', 'set');    # synchronous: flushed
$last{async} = $t_durable;
my $ww = qry($leader,
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'");
like($ww, qr/^\d+$/, 'found the leader\'s WAL writer');
stop_process($ww);
my $lost_first = $id + 1;
my @r = pstatus(
	$leader,
	"SET synchronous_commit = off",
	"SET distributed.session_key = 'async'",
	"INSERT INTO t SELECT $lost_first + i, 'async', md5(i::text) FROM generate_series(0, 199) i",
	"SELECT pg_current_wal_lsn(), distributed.session_token('async'),"
	  . " (SELECT count(*) FROM t WHERE k = 'async')");
$id += 200;
die 'async insert failed' if grep { $_->{error} } @r;
my $t_lost = $r[2]{last_commit};
my ($written, $async_answer, $async_rows) = @{ $r[3]{rows}[0] };
cmp_ok(token_lsn_num($t_lost), '>', token_lsn_num($t_durable),
	'the asynchronous commit got a token');
cmp_ok(lsn_num($written), '<', token_lsn_num($t_lost),
	'its commit record was not written out before the crash (write position < token)');
is($async_answer, $t_lost, 'the key answered the asynchronous token before the crash');
is($async_rows, '201', 'its rows were visible before the crash');

# Immediate stop.  The stopped WAL writer cannot act on the postmaster's
# SIGQUIT; a child process kills it with SIGKILL as soon as that SIGQUIT is
# pending (so it never runs again and the postmaster need not wait 5 s).
my $killer = fork();
die "fork: $!" unless defined $killer;
if ($killer == 0)
{
	my $deadline = time() + 60;
	while (time() < $deadline)
	{
		open my $fh, '<', "/proc/$ww/status" or POSIX::_exit(0);
		my ($pnd) = join('', <$fh>) =~ /^ShdPnd:\s*([0-9a-f]+)/mi;
		close $fh;
		if (defined $pnd && (hex(substr($pnd, -8)) & 0x4))    # SIGQUIT = 3
		{
			kill('KILL', $ww);
			POSIX::_exit(0);
		}
		usleep(5_000);
	}
	POSIX::_exit(1);
}
$leader->stop('immediate');
waitpid($killer, 0);
is($? >> 8, 0, 'the WAL writer was killed after the immediate stop began');
$leader->start;
# the end-of-recovery checkpoint is written where the recovered WAL ends
my ($ckpt, $ckpt_below) = split /\|/, qry($leader,
	"SELECT checkpoint_lsn, checkpoint_lsn < distributed.token_lsn('$t_lost')"
	  . " AND checkpoint_lsn >= distributed.token_lsn('$t_durable') FROM pg_control_checkpoint()");
is($ckpt_below, 't',
	'the recovered WAL ends after the last durable commit and before the asynchronous commit\'s end');

# ---------------------------------------------------------------------
# After the restart: the floor
# ---------------------------------------------------------------------
is(qry($leader, 'SELECT entries FROM distributed.stats'), '0',
	'the map is empty after the crash');
delete $last{async};
# Answers are split with split_part, not token_lsn(), so that a malformed
# answer (such as a floor never set, "0:0/0") fails an assertion instead
# of the query.
sub answer_at_least
{
	my ($expr, $lsn) = @_;
	return qry($leader,
		"SELECT split_part(a, ':', 1), split_part(a, ':', 2)::pg_lsn - '$lsn'::pg_lsn >= 0"
		  . " FROM (SELECT $expr AS a) s");
}
for my $key (sort keys %last)
{
	my $lsn = $last{$key} =~ s/^\d+://r;
	is(answer_at_least("distributed.session_token('$key')", $lsn),
		'1|t', "$key answers at least its last pre-crash token ($last{$key})");
}
my ($newest) = sort { token_lsn_num($b) <=> token_lsn_num($a) } @all;
my $max_lsn = $newest =~ s/^\d+://r;
is(answer_at_least("distributed.session_token('never-seen')", $max_lsn),
	'1|t', 'a key never seen answers at least every pre-crash token');
is(answer_at_least('(SELECT floor FROM distributed.stats)', $max_lsn),
	'1|t', 'the floor is at least every pre-crash token');
is(answer_at_least("distributed.session_token('async')", $t_durable =~ s/^\d+://r),
	'1|t', 'the asynchronously written key answers at least its last durable token');

# Pre-crash tokens on the restarted leader
is( qry($leader,
		'SELECT bool_and(distributed.is_replayed(x)), '
		  . "string_agg(DISTINCT distributed.wait(x, 0), ',') FROM unnest(ARRAY['"
		  . join("','", @all) . "']) x"),
	't|reached', 'the restarted leader holds every durable pre-crash token');

# ---------------------------------------------------------------------
# The follower: waits in flight across the crash, pre-crash tokens
# ---------------------------------------------------------------------
is(qry($f, 'SELECT count(*) FROM distributed.waiters'), '2',
	'the follower\'s waits are still in flight after the leader\'s restart');
resume($f);
@r = bg_finish($bgf);
is($r[0]{rows}[0][0], 'reached', 'a wait() begun before the crash is reached');
@r = bg_finish($bgp);
is($r[0]{error}, undef, 'a CALL wait_for() begun before the crash returns without error');
wait_streaming($f);
wait_replayed($f, $leader);
is( qry($f,
		'SELECT bool_and(distributed.is_replayed(x)), '
		  . "string_agg(DISTINCT distributed.wait(x, 180000), ',') FROM unnest(ARRAY['"
		  . join("','", @all) . "']) x"),
	't|reached', 'the follower holds every durable pre-crash token');

# ---------------------------------------------------------------------
# The asynchronous commit: lost, and what its token means now
# ---------------------------------------------------------------------
is(qry($leader, "SELECT count(*) FROM t WHERE k = 'async'"), '1',
	'the asynchronous commit was lost in the crash (only the durable row is left)');
my ($end, $lost_beyond) = split /\|/, qry($leader,
	"SELECT pg_current_wal_insert_lsn(), distributed.token_lsn('$t_lost') > pg_current_wal_insert_lsn()");
is( qry($leader,
		"SELECT distributed.is_replayed('$t_lost') = "
		  . "(distributed.token_lsn('$t_lost') <= pg_current_wal_insert_lsn())"),
	't', 'the leader calls the lost token replayed exactly when its WAL has grown past that position');
is($lost_beyond, 't',
	'right after the restart the lost token lies beyond the leader\'s WAL');
is( qry($leader, "SELECT distributed.is_replayed('$t_lost'), distributed.wait('$t_lost', 0)"),
	'f|not_in_recovery',
	'so the leader reports it as not held (not_in_recovery)');
is( qry($f, "SELECT distributed.is_replayed('$t_lost'), distributed.wait('$t_lost', 0)"),
	'f|timeout', 'and the follower, caught up, as pending (timeout)');
my $answer = qry($leader, "SELECT distributed.session_token('async')");
diag("async key answers $answer after the crash; its lost token was $t_lost;"
	  . " recovered WAL ended at $ckpt; the leader's WAL now ends at $end");

# New writes move the WAL past the lost position: it is then a position
# of other WAL, "replayed" everywhere that has replayed that far.
my $t_new;
for my $batch (1 .. 20)
{
	my @new = pstatus($leader,
		"INSERT INTO t SELECT 100000 * $batch + i, 'new', md5(i::text) FROM generate_series(1, 100) i");
	$t_new = $new[0]{last_commit};
	last if token_lsn_num($t_new) > token_lsn_num($t_lost);
}
cmp_ok(token_lsn_num($t_new), '>', token_lsn_num($t_lost),
	'a later write lies beyond the lost token\'s position');
is(qry($f, "SELECT distributed.wait('$t_new', 180000)"), 'reached',
	'the follower reaches the new write');
is( qry($f, "SELECT distributed.is_replayed('$t_lost'), distributed.wait('$t_lost', 0)"),
	't|reached',
	'the lost token now counts as replayed on the follower (its position holds other WAL)');
is( qry($f, "SELECT count(*), count(*) FILTER (WHERE k = 'async') FROM t"),
	qry($leader, "SELECT count(*), count(*) FILTER (WHERE k = 'async') FROM t"),
	'the follower that calls it replayed shows what the leader shows: no stale read');

done_testing();
