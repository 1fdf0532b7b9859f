# The session map's floor: answers never fall below the truth across a
# restart (clean or immediate), an eviction from a full map, or forget().

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DistributedCluster;

my $node = create_leader('floor');
$node->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
# set the floor (first use of the map) before the writes compared exactly
$node->safe_psql('postgres', 'SELECT floor FROM distributed.stats');

sub keyed_write
{
	my ($key, $id) = @_;
	my @r = pstatus($node, "SET distributed.session_key = '$key'",
		"INSERT INTO t VALUES ($id)");
	die "write failed: $r[1]{error}{message}" if $r[1]{error};
	return $r[1]{last_commit};
}

sub q1 { return $node->safe_psql('postgres', $_[0]); }
sub answer { return q1("SELECT distributed.session_token('$_[0]')"); }

# ---------------------------------------------------------------------
# Restarts
# ---------------------------------------------------------------------
my $ta = keyed_write('k', 1);
is(answer('k'), $ta, 'before the restart the key answers its token');
is(q1('SELECT entries FROM distributed.stats'), '1', 'the map holds the key');

$node->restart;    # fast (clean) shutdown
is(q1('SELECT entries FROM distributed.stats'), '0',
	'after a clean restart the map is empty');
cmp_ok(token_lsn_num(answer('k')), '>=', token_lsn_num($ta),
	'after a clean restart the key answers at least its pre-restart token');
cmp_ok(token_lsn_num(answer('never-seen-1')), '>=', token_lsn_num($ta),
	'after a clean restart an unknown key answers at least that token too');
my $floor = q1('SELECT floor FROM distributed.stats');
is(token_tli($floor), 1, 'the floor is on the current timeline');
cmp_ok(token_lsn_num($floor), '>=', token_lsn_num($ta),
	'stats.floor is at least the pre-restart token');

my $tb = keyed_write('k', 2);
is(answer('k'), $tb, 'a write after the restart is recorded exactly');
$node->stop('immediate');
$node->start;
is(q1('SELECT count(*) FROM t WHERE id = 2'), '1',
	'the write survived the immediate stop');
is(q1('SELECT entries FROM distributed.stats'), '0',
	'after an immediate stop and restart the map is empty');
cmp_ok(token_lsn_num(answer('k')), '>=', token_lsn_num($tb),
	'after an immediate stop the key answers at least its pre-crash token');
cmp_ok(token_lsn_num(answer('never-seen-2')), '>=', token_lsn_num($tb),
	'after an immediate stop an unknown key answers at least that token too');

# ---------------------------------------------------------------------
# Eviction from a map of capacity 2 (one partition: exact LRU)
# ---------------------------------------------------------------------
$node->append_conf('postgresql.conf', 'distributed.max_sessions = 2');
$node->restart;
q1('SELECT floor FROM distributed.stats');    # set the floor first
is(q1('SELECT capacity, entries, evictions FROM distributed.stats'),
	'2|0|0', 'capacity 2, empty map, no evictions');

my $t1 = keyed_write('k1', 11);
my $t2 = keyed_write('k2', 12);
my $t3 = keyed_write('k3', 13);
is(q1('SELECT evictions, entries FROM distributed.stats'),
	'1|2', 'the third key evicted one entry');
is(q1("SELECT string_agg(key || '=' || token, ',' ORDER BY key) FROM distributed.sessions"),
	"k2=$t2,k3=$t3", 'the least recently written key (k1) was evicted');
cmp_ok(token_lsn_num(answer('k1')), '>=', token_lsn_num($t1),
	'the evicted key answers at least its real token');
is(q1('SELECT floor FROM distributed.stats'), $t1,
	'the floor rose to the evicted entry\'s position');
is(answer('k2'), $t2, 'k2 answers exactly');
is(answer('k3'), $t3, 'k3 answers exactly');

is(q1("SELECT distributed.forget('k3')"), 't', 'forget(k3) returns true');
is(q1("SELECT distributed.forget('k3')"), 'f', 'forget(k3) again returns false');
cmp_ok(token_lsn_num(answer('k3')), '>=', token_lsn_num($t3),
	'the forgotten key answers at least its token');
is(q1('SELECT evictions, entries FROM distributed.stats'),
	'1|1', 'forget is not counted as an eviction');

# LRU order is by last write, not by insertion
my $t4 = keyed_write('k4', 14);
my $t2b = keyed_write('k2', 15);
my $t5 = keyed_write('k5', 16);
is(q1("SELECT string_agg(key || '=' || token, ',' ORDER BY key) FROM distributed.sessions"),
	"k2=$t2b,k5=$t5", 'rewriting k2 made k4 the least recently written: k4 evicted');
is(q1('SELECT evictions FROM distributed.stats'), '2', 'two evictions in all');
cmp_ok(token_lsn_num(answer('k4')), '>=', token_lsn_num($t4),
	'k4 answers at least its token');

done_testing();
