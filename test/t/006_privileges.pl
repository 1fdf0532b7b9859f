# Privileges: session keys identify logins, so the sessions and waiters
# views are for pg_monitor only; stats is public; reset_stats is for
# superusers.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DistributedCluster;

my $node = create_leader('priv');
$node->safe_psql(
	'postgres', q{
	CREATE ROLE alice LOGIN;
	CREATE ROLE mon LOGIN IN ROLE pg_monitor;
	CREATE TABLE t (id int);
	GRANT INSERT ON t TO alice;
});

# alice writes under a key: allowed (the setting is USERSET)
my @r = pstatus_as($node, 'alice', "SET distributed.session_key = 'alice-key'",
	'INSERT INTO t VALUES (1)');
is($r[1]{error}, undef, 'an unprivileged role can write under a session key');
like($r[1]{last_commit}, qr{^1:}, 'and is sent its token');

for my $sql (
	'SELECT * FROM distributed.sessions',
	'SELECT * FROM distributed.get_sessions()',
	'SELECT * FROM distributed.waiters',
	'SELECT * FROM distributed.get_waiters()',
	'SELECT distributed.reset_stats()')
{
	my ($code) = sqlstate($node, $sql, user => 'alice');
	is($code, '42501', "unprivileged role: $sql: 42501");
}
my ($code, $err, $out) =
  sqlstate($node, 'SELECT role, entries FROM distributed.stats', user => 'alice');
is($code, undef, 'unprivileged role can read distributed.stats') or diag $err;
is($out, 'leader|1', 'and sees the leader\'s counters');

($code, $err, $out) =
  sqlstate($node, 'SELECT key FROM distributed.sessions', user => 'mon');
is($code, undef, 'a pg_monitor member can read distributed.sessions') or diag $err;
is($out, 'alice-key', 'and sees the key');
($code, $err, $out) =
  sqlstate($node, 'SELECT count(*) FROM distributed.waiters', user => 'mon');
is($code, undef, 'a pg_monitor member can read distributed.waiters') or diag $err;
($code) = sqlstate($node, 'SELECT distributed.reset_stats()', user => 'mon');
is($code, '42501', 'a pg_monitor member cannot reset the stats');

# the superuser can
$node->safe_psql('postgres', "SELECT distributed.is_replayed('0/1')");
my $reset_before = $node->safe_psql('postgres', 'SELECT stats_reset FROM distributed.stats');
is($node->safe_psql('postgres', 'SELECT checks_safe > 0 FROM distributed.stats'),
	't', 'a check was counted');
$node->safe_psql('postgres', 'SELECT distributed.reset_stats()');
is( $node->safe_psql('postgres',
		"SELECT checks_safe, commits_recorded, stats_reset > '$reset_before'"
		  . ' FROM distributed.stats'),
	'0|0|t',
	'reset_stats by the superuser zeroes the counters and moves stats_reset');

done_testing();
