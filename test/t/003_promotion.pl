# Promotion: waits in progress when a follower is promoted, and tokens of
# the old leader's timeline on the promoted node and on a follower that
# then follows it, before and after the switch point.
#
# Followers F and B are cut off from the leader (primary_conninfo = '')
# before the leader writes the token they must never get, and F is paused.
# Pausing alone would not do: a promoted standby first replays all WAL it
# has already received.  B is cut first, so that F holds all WAL that B
# has and B can later follow F onto timeline 2.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DistributedCluster;

my ($leader, $f, $fb) = create_cluster('promo', followers => 2);
$leader->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY, note text)');

sub set_upstream
{
	my ($node, $conninfo) = @_;
	$node->append_conf('postgresql.conf', "primary_conninfo = '$conninfo'");
	$node->reload;
	return;
}

my @r = pstatus($leader, "INSERT INTO t VALUES (1, 'before')");
my $t1 = $r[0]{last_commit};
wait_replayed($_, $leader) for ($f, $fb);
is($f->safe_psql('postgres', "SELECT distributed.is_replayed('$t1')"),
	't', 'the follower replayed the token written before the cut');

# Cut B, then F, off the leader; pause F.
for my $node ($fb, $f)
{
	set_upstream($node, '');
	$node->poll_query_until('postgres',
		'SELECT count(*) = 0 FROM pg_stat_wal_receiver')
	  or die $node->name . ' kept its WAL receiver';
}
$leader->poll_query_until('postgres', 'SELECT count(*) = 0 FROM pg_stat_replication')
  or die 'the leader kept its WAL senders';
pause($f);

@r = pstatus($leader, "INSERT INTO t VALUES (2, 'after')");
my $t2 = $r[0]{last_commit};
like($t2, qr{^1:}, 'the leader wrote a token on timeline 1 after the cut');
is( $f->safe_psql('postgres',
		"SELECT distributed.is_replayed('$t2'), distributed.wait('$t2', 0)"),
	'f|timeout', 'the cut-off follower has not replayed it');

# ---------------------------------------------------------------------
# Waits in progress across the promotion
# ---------------------------------------------------------------------
my ($promoted, $unreachable) = split /\|/, $f->safe_psql('postgres',
	'SELECT waits_promoted, waits_unreachable FROM distributed.stats');
my $bgf = bg_pstatus($f, 'p_func', "SELECT distributed.wait('$t2', 180000)");
my $bgp = bg_pstatus($f, 'p_proc', "CALL distributed.wait_for('$t2', 180000)");
# a token of a timeline the follower has not reached yet (not one the old
# leader could write): pending on timeline 1, beyond the WAL on timeline 2
my $bgx = bg_pstatus($f, 'p_next', "SELECT distributed.wait('2:FF/0', 180000)");
# and one of timeline 2 at a position the promoted server's own timeline 2
# will pass at once: another server promoted to timeline 2 may have written
# it, so reaching that number here proves nothing
my $bgl = bg_pstatus($f, 'p_low', "SELECT distributed.wait('2:0/1', 180000)");
wait_for_waiting_backend($f, $_) for qw(p_func p_proc p_next p_low);
is($f->safe_psql('postgres', 'SELECT count(*) FROM distributed.waiters'),
	'4', 'four backends wait on the paused follower');

$f->promote;    # pg_ctl promote waits until the server accepts writes
my @rf = bg_finish($bgf);
my @rp = bg_finish($bgp);
my @rx = bg_finish($bgx);
my @rl = bg_finish($bgl);
is($rf[0]{error}, undef, 'the waiting function returned a status');
is($rf[0]{rows}[0][0], 'promoted',
	'a wait in progress across the promotion returns promoted');
is($rp[0]{error}{sqlstate}, '55U02',
	'a CALL wait_for in progress across the promotion raises 55U02');
is($rx[0]{rows}[0][0], 'promoted',
	'a wait for a future timeline\'s token across the promotion returns promoted');
is($rl[0]{rows}[0][0], 'promoted',
	'a wait for a low position of the new timeline\'s number returns promoted, not reached');
is( $f->safe_psql('postgres',
		'SELECT waits_promoted, waits_unreachable, waiting FROM distributed.stats'),
	($promoted + 4) . "|$unreachable|0",
	'stats counted four promoted waits, none unreachable, and nobody waits any more');

# ---------------------------------------------------------------------
# Old timeline's tokens on the promoted node
# ---------------------------------------------------------------------
is($f->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 'f', 'the follower is promoted');
my $pos = $f->safe_psql('postgres', 'SELECT distributed.replay_position()');
is(token_tli($pos), 2, 'the promoted node writes on timeline 2');

my ($switch) = $f->safe_psql('postgres',
	"SELECT pg_read_file('pg_wal/00000002.history')") =~ m{^1\s+([0-9A-F]+/[0-9A-F]+)}m;
ok(defined $switch, 'timeline 2 history names the switch point from timeline 1');
$switch //= '0/0';
cmp_ok(token_lsn_num($t1), '<=', lsn_num($switch), 'the first token lies before the switch point');
cmp_ok(token_lsn_num($t2), '>', lsn_num($switch), 'the second token lies after the switch point');

@r = pstatus(
	$f,
	"SELECT distributed.is_replayed('$t2')",                    # 0
	"SELECT distributed.wait('$t2', 1000)",                     # 1
	"SELECT distributed.wait('$t2', 0)",                        # 2
	"CALL distributed.wait_for('$t2', 1000)",                   # 3
	"SELECT distributed.is_replayed('$t1')",                    # 4
	"SELECT distributed.wait('$t1', 1000)",                     # 5
	"CALL distributed.wait_for('$t1', 1000)",                   # 6
	"SELECT string_agg(note, ',' ORDER BY id) FROM t",          # 7
	"SELECT role, floor FROM distributed.stats",                # 8
	"SELECT distributed.session_token('never-seen')",           # 9
	"INSERT INTO t VALUES (3, 'new leader')",                   # 10
	"SELECT distributed.is_replayed(distributed.last_commit())" # 11
);
is($r[0]{rows}[0][0], 'f', 'a token after the switch point is not replayed on the promoted node');
is($r[1]{rows}[0][0], 'unreachable', 'waiting for it returns unreachable');
is($r[2]{rows}[0][0], 'unreachable', 'checking once (timeout 0) returns unreachable');
is($r[3]{error}{sqlstate}, '55U01', 'CALL wait_for it raises 55U01');
is($r[4]{rows}[0][0], 't', 'a token before the switch point is replayed on the promoted node');
is($r[5]{rows}[0][0], 'reached', 'waiting for it returns reached');
is($r[6]{error}, undef, 'CALL wait_for it succeeds');
is($r[7]{rows}[0][0], 'before', 'only the write before the switch point is visible');
is($r[8]{rows}[0][0], 'leader', 'the promoted node reports role leader');
my $floor = $r[8]{rows}[0][1];
is(token_tli($floor // '0:0/0'), 2, 'the floor of the promoted node is on its new timeline');
cmp_ok(token_lsn_num($floor // '0:0/0'), '>=', lsn_num($switch),
	'the floor is at least the end of recovery');
my $never = $r[9]{rows}[0][0];
cmp_ok(token_lsn_num($never), '>=', lsn_num($switch),
	'an unknown key answers at least the end of recovery');
cmp_ok(token_lsn_num($never), '>=', token_lsn_num($t1),
	'an unknown key answers at least every pre-promotion token');
my $t3 = $r[10]{last_commit};
like($t3, qr{^2:}, 'a write on the promoted node reports a timeline-2 token');
is($r[11]{rows}[0][0], 't', 'the promoted node holds its own token');

# ---------------------------------------------------------------------
# B, still on timeline 1, follows the promoted node onto timeline 2
# ---------------------------------------------------------------------
is( $fb->safe_psql('postgres',
		"SELECT distributed.is_replayed('$t2'), distributed.is_replayed('$t3'),"
		  . " distributed.is_replayed('$t1')"),
	'f|f|t',
	'B (timeline 1, cut off) has replayed neither the lost token nor timeline 2\'s');
my $bg_old = bg_pstatus($fb, 'b_old', "SELECT distributed.wait('$t2', 180000)");
my $bg_new = bg_pstatus($fb, 'b_new', "SELECT distributed.wait('$t3', 180000)");
wait_for_waiting_backend($fb, 'b_old');
wait_for_waiting_backend($fb, 'b_new');
set_upstream($fb, $f->connstr);
my @ro = bg_finish($bg_old);
my @rn = bg_finish($bg_new);
is($rn[0]{rows}[0][0], 'reached',
	'on B, a wait for the new timeline\'s token is reached once B follows it');
is($ro[0]{rows}[0][0], 'unreachable',
	'on B, a wait for the lost token ends unreachable when B switches timeline');
is( $fb->safe_psql('postgres',
		"SELECT pg_is_in_recovery(), distributed.token_timeline(distributed.replay_position()),"
		  . " distributed.is_replayed('$t2'), distributed.wait('$t2', 0),"
		  . " distributed.is_replayed('$t1'),"
		  . " (SELECT string_agg(note, ',' ORDER BY id) FROM t)"),
	"t|2|f|unreachable|t|before,new leader",
	'B replays timeline 2: the lost token is unreachable, the older one replayed, rows agree');
my ($code) = sqlstate($fb, "CALL distributed.wait_for('$t2', 1000)");
is($code, '55U01', 'on B, CALL wait_for the lost token raises 55U01');

# The old leader, still on timeline 1, does not hold timeline 2's token.
is( $leader->safe_psql('postgres',
		"SELECT distributed.is_replayed('$t3'), distributed.wait('$t3', 1000),"
		  . " distributed.is_replayed('$t2')"),
	'f|not_in_recovery|t',
	'the old leader holds its own token but not the new timeline\'s');

# ---------------------------------------------------------------------
# Bare LSNs after the failover.  A bare LSN past the start of timeline 2
# could name the lost write (t2's LSN) as well as one of timeline 2: it is
# never answered as replayed.  One before the switch point is.
# ---------------------------------------------------------------------
$f->safe_psql('postgres', 'SELECT pg_switch_wal()');
@r = pstatus($f, "INSERT INTO t VALUES (4, 'past')");
my $t4 = $r[0]{last_commit};
cmp_ok(token_lsn_num($t4), '>', token_lsn_num($t2),
	'timeline 2 WAL has passed the lost token\'s LSN');
wait_replayed($fb, $f);
my ($l1) = $t1 =~ /:(.*)$/;
my ($l2) = $t2 =~ /:(.*)$/;
my ($l4) = $t4 =~ /:(.*)$/;
for my $node ($f, $fb)
{
	my $n = $node == $f ? 'promoted node' : 'B on timeline 2';
	@r = pstatus(
		$node,
		"SELECT distributed.is_replayed('$l2'::pg_lsn)",               # 0
		"SELECT distributed.is_replayed('$l2')",                       # 1
		"SELECT distributed.wait('$l2'::pg_lsn, 0)",                   # 2
		"SELECT distributed.wait('$l2', 1000)",                        # 3
		"CALL distributed.wait_for('$l2'::pg_lsn, 0)",                 # 4
		"SELECT distributed.is_replayed('$l1'::pg_lsn),"
		  . " distributed.wait('$l1'::pg_lsn, 0)",                     # 5
		"SELECT distributed.is_replayed('$l4'::pg_lsn),"
		  . " distributed.wait('$l4', 0)",                             # 6
		"SELECT distributed.is_replayed('2:0/1')",                     # 7
		"SELECT distributed.wait('2:0/1', 0)",                         # 8
		"CALL distributed.wait_for('2:0/1', 0)",                       # 9
		"SELECT distributed.is_replayed('$t4')");                      # 10
	is($r[0]{rows}[0][0], 'f', "$n: is_replayed(pg_lsn) of the lost write's LSN is false");
	is($r[1]{rows}[0][0], 'f', "$n: is_replayed of the lost write's bare LSN text is false");
	is($r[2]{rows}[0][0], 'unreachable', "$n: wait(pg_lsn, 0) of it is unreachable");
	is($r[3]{rows}[0][0], 'unreachable', "$n: wait(bare LSN) of it is unreachable at once");
	is($r[4]{error}{sqlstate}, '55U01', "$n: CALL wait_for(pg_lsn) of it raises 55U01");
	is(join('|', @{ $r[5]{rows}[0] // [] }), 't|reached',
		"$n: a bare LSN before the switch point is replayed");
	is(join('|', @{ $r[6]{rows}[0] // [] }), 'f|unreachable',
		"$n: a bare LSN past the switch point is not vouched for, even timeline 2's own");
	is($r[7]{error}{sqlstate}, '55U05',
		"$n: a token before the start of its timeline is rejected (is_replayed)");
	is($r[8]{error}{sqlstate}, '55U05', "$n: ... (wait)");
	is($r[9]{error}{sqlstate}, '55U05', "$n: ... (CALL wait_for)");
	is($r[10]{rows}[0][0], 't', "$n: the timeline-qualified token of timeline 2 is replayed");
}

# ---------------------------------------------------------------------
# The history file of timeline 2, missing or corrupt, on the promoted
# node: an ERROR with its own SQLSTATE, and the session goes on.
# ---------------------------------------------------------------------
my $hist = $f->data_dir . '/pg_wal/00000002.history';
my $saved = slurp_file($hist);
rename($hist, "$hist.saved") or die "rename $hist: $!";
@r = pstatus($f,
	"SELECT distributed.is_replayed('$t1')",
	"SELECT distributed.wait('$t1', 0)",
	"SELECT 'alive'");
is($r[0]{error}{sqlstate}, '55U04', 'history file missing: is_replayed raises 55U04');
is($r[1]{error}{sqlstate}, '55U04', 'history file missing: wait raises 55U04');
is($r[2]{rows}[0][0], 'alive', 'history file missing: the session survives');
rename("$hist.saved", $hist) or die "rename back $hist: $!";

for my $bad ("garbage\n", "1\tnot-an-lsn\tno recovery target specified\n",
	"3\t0/1000000\tchild after parent\n", "")
{
	open my $fh, '>', $hist or die "write $hist: $!";
	print $fh $bad;
	close $fh;
	(my $what = $bad) =~ s/\s+/ /g;
	@r = pstatus($f,
		"SELECT distributed.is_replayed('$t1')",
		"SELECT 'alive'");
	is($r[0]{error}{sqlstate}, '55U04',
		"history file \"$what\": is_replayed raises 55U04, not FATAL");
	is($r[1]{rows}[0][0], 'alive', "history file \"$what\": the session survives");
}
open my $hfh, '>', $hist or die "write $hist: $!";
print $hfh $saved;
close $hfh;
is($f->safe_psql('postgres', "SELECT distributed.is_replayed('$t1')"),
	't', 'history file restored: the old token is replayed again');

done_testing();
