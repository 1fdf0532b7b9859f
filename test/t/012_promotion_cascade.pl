# Failure: a follower promoted while another follower cascades from it and
# while waits are in flight on both.
#
# Leader L, follower A of L, follower B of A (cascading: B's
# primary_conninfo names A).  A is cut off from L (primary_conninfo = '')
# and paused; L then writes the token t_lost, which neither A nor B ever
# receives, and dies (immediate stop).  A is promoted: it writes timeline 2,
# whose history leaves timeline 1 before t_lost.  B, paused across the
# promotion, then follows A onto timeline 2 (recovery_target_timeline
# 'latest', the default).
#
# Waits on A for t_lost must report the promotion; waits on B must end
# 'unreachable' (55U01) once B switches timeline, never 'reached'; a token
# A writes on timeline 2 is reached on B.  is_replayed(t_lost) is checked
# on A and B at every step, including after timeline 2's WAL has grown
# past t_lost's LSN, and while B switches, and must never be true.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DistributedCluster;

my $leader = create_leader('casc_leader');
$leader->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY, note text)');
my $fa = add_follower($leader, 'casc_a');
$fa->backup('from_a');
my $fb = PostgreSQL::Test::Cluster->new('casc_b');
$fb->init_from_backup($fa, 'from_a', has_streaming => 1);
$fb->start;
wait_streaming($fb);

sub qry
{
	my ($node, $sql) = @_;
	return $node->safe_psql('postgres', $sql);
}

my %lost_seen;    # node name => how many checks called t_lost replayed
my %checks;

# is_replayed(t_lost) on a node, counted; returns its answer
sub check_lost
{
	my ($node, $t_lost) = @_;
	my $v = qry($node, "SELECT distributed.is_replayed('$t_lost')");
	$checks{ $node->name }++;
	$lost_seen{ $node->name }++ if $v eq 't';
	return $v;
}

is(qry($fb, 'SELECT sender_port FROM pg_stat_wal_receiver'), $fa->port,
	'B streams from A (cascading)');
is(qry($leader, 'SELECT count(*) FROM pg_stat_replication'), '1',
	'L streams to A only');

my @r = pstatus($leader, "INSERT INTO t VALUES (1, 'before')");
my $t1 = $r[0]{last_commit};
wait_replayed($fa, $leader);
wait_replayed($fb, $leader);
is( qry($fb, "SELECT distributed.is_replayed('$t1'), distributed.wait('$t1', 0)"),
	't|reached', 'B reaches L\'s token through A');

# ---------------------------------------------------------------------
# Cut A off from L and pause it; L writes t_lost and dies
# ---------------------------------------------------------------------
follow_upstream($fa, '');
$fa->poll_query_until('postgres', 'SELECT count(*) = 0 FROM pg_stat_wal_receiver')
  or die 'A kept its WAL receiver';
$leader->poll_query_until('postgres', 'SELECT count(*) = 0 FROM pg_stat_replication')
  or die 'L kept its WAL sender';
pause($fa);
# B holds everything A holds before B is paused
my $a_end = qry($fa, 'SELECT pg_last_wal_receive_lsn()');
$fb->poll_query_until('postgres', "SELECT pg_last_wal_replay_lsn() >= '$a_end'::pg_lsn")
  or die 'B did not catch up with A';
pause($fb);

@r = pstatus($leader, "INSERT INTO t VALUES (2, 'lost')");
my $t_lost = $r[0]{last_commit};
(my $t_lost_lsn = $t_lost) =~ s/^\d+://;
like($t_lost, qr{^1:}, 'L wrote t_lost on timeline 1');
$leader->stop('immediate');

is(check_lost($fa, $t_lost), 'f', 'A (cut off) has not replayed t_lost');
is(check_lost($fb, $t_lost), 'f', 'B has not replayed t_lost');
is(qry($fa, "SELECT distributed.wait('$t_lost', 0)"), 'timeout',
	'on A, t_lost is pending (timeout) before the promotion');

# ---------------------------------------------------------------------
# Waits in flight on A and on B
# ---------------------------------------------------------------------
my $b_stats0 = qry($fb, 'SELECT waits_unreachable, waits_reached FROM distributed.stats');
my $bg_af = bg_pstatus($fa, 'a_func', "SELECT distributed.wait('$t_lost', 180000)");
my $bg_ap = bg_pstatus($fa, 'a_proc', "CALL distributed.wait_for('$t_lost', 180000)");
my $bg_bf = bg_pstatus($fb, 'b_func', "SELECT distributed.wait('$t_lost', 180000)");
my $bg_bp = bg_pstatus($fb, 'b_proc', "CALL distributed.wait_for('$t_lost', 180000)");
# a position on timeline 2 at which A's new timeline will begin or lie
# beyond: reached on B only once B replays timeline 2
my $a_pos = qry($fa, 'SELECT pg_last_wal_replay_lsn()');
my $bg_bn = bg_pstatus($fb, 'b_next', "SELECT distributed.wait('2:$a_pos', 180000)");
wait_for_waiting_backend($fa, $_) for qw(a_func a_proc);
wait_for_waiting_backend($fb, $_) for qw(b_func b_proc b_next);
is(qry($fa, 'SELECT count(*) FROM distributed.waiters'), '2', 'two waits in flight on A');
is(qry($fb, 'SELECT count(*) FROM distributed.waiters'), '3', 'three waits in flight on B');

# ---------------------------------------------------------------------
# Promote A
# ---------------------------------------------------------------------
$fa->promote;
@r = bg_finish($bg_af);
is($r[0]{error}, undef, 'A: the waiting function returned a status');
is($r[0]{rows}[0][0], 'promoted', 'A: wait() in flight across the promotion returns promoted');
@r = bg_finish($bg_ap);
is($r[0]{error}{sqlstate}, '55U02', 'A: CALL wait_for() in flight across the promotion raises 55U02');
is(qry($fa, 'SELECT count(*) FROM distributed.waiters'), '0', 'A: no waiter left');

is(qry($fa, 'SELECT pg_is_in_recovery()'), 'f', 'A is promoted');
my ($switch) = qry($fa, "SELECT pg_read_file('pg_wal/00000002.history')")
  =~ m{^1\s+([0-9A-F]+/[0-9A-F]+)}m;
ok(defined $switch, 'A\'s timeline 2 history names the switch point');
$switch //= '0/0';
cmp_ok(token_lsn_num($t_lost), '>', lsn_num($switch),
	't_lost lies after the switch point: timeline 2 never holds it');
cmp_ok(token_lsn_num($t1), '<=', lsn_num($switch), 't1 lies before it');

# A writes on timeline 2 until its WAL is past t_lost's LSN
my ($t_new, $n) = ('', 0);
while (token_lsn_num($t_new || '1:0/0') <= token_lsn_num($t_lost) && $n < 50)
{
	$n++;
	@r = pstatus($fa, "INSERT INTO t VALUES (1000 + $n, 'new')");
	die 'write on A failed' if $r[0]{error};
	$t_new = $r[0]{last_commit};
}
like($t_new, qr{^2:}, 'A writes timeline-2 tokens');
cmp_ok(token_lsn_num($t_new), '>', token_lsn_num($t_lost),
	'A\'s timeline 2 has grown past t_lost\'s LSN');
is(check_lost($fa, $t_lost), 'f', 'A: t_lost is still not replayed');
is( qry($fa, "SELECT distributed.wait('$t_lost', 1000), distributed.is_replayed('$t_new'),"
		  . " distributed.is_replayed('$t1')"),
	'unreachable|t|t', 'A: t_lost unreachable; its own token and t1 held');
my ($code) = sqlstate($fa, "CALL distributed.wait_for('$t_lost', 1000)");
is($code, '55U01', 'A: CALL wait_for(t_lost) raises 55U01');

# ---------------------------------------------------------------------
# B, paused across the promotion, still on timeline 1
# ---------------------------------------------------------------------
is( qry($fb, 'SELECT distributed.token_timeline(distributed.replay_position()),'
		  . ' (SELECT count(*) FROM distributed.waiters)'),
	'1|3', 'B (paused) is still on timeline 1, its three waits in flight');
is(check_lost($fb, $t_lost), 'f', 'B (paused): t_lost not replayed');
is(qry($fb, "SELECT distributed.is_replayed('$t_new')"), 'f',
	'B (paused): A\'s new token not replayed yet');
my $bg_bt = bg_pstatus($fb, 'b_tnew', "SELECT distributed.wait('$t_new', 180000)");
my $bg_btp = bg_pstatus($fb, 'b_tnew_proc', "CALL distributed.wait_for('$t_new', 180000)");
wait_for_waiting_backend($fb, $_) for qw(b_tnew b_tnew_proc);

# Resume B: it follows A onto timeline 2.  A sampler on B checks
# is_replayed(t_lost) (and where B is) about every 2 ms from before the
# resume until well after the switch.
my $sample_sql = "SELECT distributed.is_replayed('$t_lost'), distributed.is_replayed('$t_new'),"
  . " distributed.token_timeline(distributed.replay_position()), pg_sleep(0.002)";
my $sampler = bg_pstatus($fb, 'b_sampler', ($sample_sql) x 600);
poll_value($fb,
	"SELECT 1 FROM pg_stat_activity WHERE application_name = 'b_sampler'"
	  . " AND query LIKE '%is_replayed%'");
resume($fb);
my @samples = bg_finish($sampler);
my %seen = (tl1 => 0, tl2 => 0, lost => 0, errors => 0);
for my $s (@samples)
{
	if ($s->{error}) { $seen{errors}++; next; }
	my ($lost, $new, $tli) = @{ $s->{rows}[0] };
	$seen{ $tli eq '1' ? 'tl1' : 'tl2' }++;
	$seen{lost}++ if $lost eq 't';
	$checks{ $fb->name }++;
	$lost_seen{ $fb->name }++ if $lost eq 't';
}
diag("B sampled " . scalar(@samples) . " times: $seen{tl1} on timeline 1, $seen{tl2} on timeline 2");
is($seen{errors}, 0, 'every sample on B succeeded');
cmp_ok($seen{tl1}, '>', 0, 'the sampler saw B on timeline 1 (before the switch)');
is($seen{lost}, 0, 'no sample on B, before, during or after the switch, called t_lost replayed');

@r = bg_finish($bg_bf);
is($r[0]{rows}[0][0], 'unreachable',
	'B: wait(t_lost) in flight ends unreachable when B switches to timeline 2');
@r = bg_finish($bg_bp);
is($r[0]{error}{sqlstate}, '55U01', 'B: CALL wait_for(t_lost) in flight raises 55U01');
@r = bg_finish($bg_bn);
is($r[0]{rows}[0][0], 'reached', 'B: a wait for a timeline-2 position is reached');
@r = bg_finish($bg_bt);
is($r[0]{rows}[0][0], 'reached', 'B: a wait for A\'s new token is reached');
@r = bg_finish($bg_btp);
is($r[0]{error}, undef, 'B: CALL wait_for(A\'s new token) returns without error');
my ($unreach0, $reached0) = split /\|/, $b_stats0;
is( qry($fb, 'SELECT waits_unreachable, waits_reached, waiting FROM distributed.stats'),
	($unreach0 + 2) . '|' . ($reached0 + 3) . '|0',
	'B counted two unreachable and three reached waits, and nobody waits');

is( qry($fb, 'SELECT pg_is_in_recovery(), distributed.token_timeline(distributed.replay_position()),'
		  . ' sender_port FROM pg_stat_wal_receiver'),
	't|2|' . $fa->port, 'B is a standby of A on timeline 2');
is(check_lost($fb, $t_lost), 'f', 'B: t_lost not replayed after the switch');
is( qry($fb,
		"SELECT distributed.wait('$t_lost', 1000), distributed.wait('$t_lost', 0),"
		  . " distributed.is_replayed('$t1'),"
		  . " (SELECT string_agg(note, ',' ORDER BY id) FILTER (WHERE id < 1000) FROM t),"
		  . " (SELECT count(*) FROM t WHERE id > 1000)"),
	"unreachable|unreachable|t|before|$n",
	'B: t_lost unreachable, t1 held; the lost row absent, all of A\'s rows present');
($code) = sqlstate($fb, "CALL distributed.wait_for('$t_lost', 1000)");
is($code, '55U01', 'B: CALL wait_for(t_lost) raises 55U01');

# A bare LSN past B's first timeline switch could name the lost write
# (documented): t_lost's LSN alone is never called replayed, although
# timeline 2 has passed that position.  Clients must keep the timeline.
is(qry($fb, "SELECT distributed.is_replayed('$t_lost_lsn')"), 'f',
	'B: the bare LSN of t_lost, past the switch, is not replayed');

# More writes on A; B follows; t_lost stays unreplayed on both
@r = pstatus($fa, "INSERT INTO t VALUES (5000, 'later')");
my $t_later = $r[0]{last_commit};
is(qry($fb, "SELECT distributed.wait('$t_later', 180000)"), 'reached',
	'B reaches a later timeline-2 token');
is(check_lost($fa, $t_lost), 'f', 'A: t_lost not replayed at the end');
is(check_lost($fb, $t_lost), 'f', 'B: t_lost not replayed at the end');

# ---------------------------------------------------------------------
# B's copy of timeline 2's history (fetched from A when B followed it onto
# timeline 2), missing or corrupt: every form raises 55U04, an ERROR that
# leaves the session, and no waiter, behind.  003 tests the same on a
# promoted node, which wrote its history file itself.
# ---------------------------------------------------------------------
my $hist = $fb->data_dir . '/pg_wal/00000002.history';
ok(-f $hist, 'B holds timeline 2\'s history file, received from A');
my $saved = slurp_file($hist);
my @calls = (
	[ 'is_replayed(token)', "SELECT distributed.is_replayed('$t1')" ],
	[ 'wait(token, 0)',     "SELECT distributed.wait('$t1', 0)" ],
	[ 'wait(token, 1000)',  "SELECT distributed.wait('$t_later', 1000)" ],
	[ 'CALL wait_for',      "CALL distributed.wait_for('$t1', 1000)" ],
	[ 'is_replayed(bare LSN)', "SELECT distributed.is_replayed('$t_lost_lsn')" ]);
for my $bad (undef, "garbage\n", "1\t0/1000000\n5\t0/2000000\n", "")
{
	my $what = defined $bad ? "\"" . ($bad =~ s/\s+/ /gr) . "\"" : 'missing';
	unlink $hist if -e $hist;
	if (defined $bad)
	{
		open my $fh, '>', $hist or die "write $hist: $!";
		print $fh $bad;
		close $fh;
	}
	@r = pstatus($fb, map { ($_->[1], "SELECT 'alive'") } @calls);
	for my $i (0 .. $#calls)
	{
		my $call = $calls[$i][0];
		is($r[ 2 * $i ]{error}{sqlstate}, '55U04',
			"B, history file $what: $call raises 55U04")
		  or diag explain $r[ 2 * $i ];
		is($r[ 2 * $i + 1 ]{rows}[0][0], 'alive',
			"B, history file $what: the session survives $call");
	}
}
open my $hfh, '>', $hist or die "write $hist: $!";
print $hfh $saved;
close $hfh;
is( qry($fb, "SELECT distributed.is_replayed('$t1'), distributed.is_replayed('$t_lost'),"
		  . " (SELECT count(*) FROM distributed.waiters)"),
	't|f|0', 'B, history file restored: t1 held, t_lost not, no waiter left behind');

is(join(',', map { $lost_seen{$_} // 0 } qw(casc_a casc_b)), '0,0',
	"t_lost was never reported replayed (A: $checks{casc_a} checks, B: $checks{casc_b})");

done_testing();
