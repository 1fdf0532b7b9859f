# Without shared_preload_libraries: the extension installs, every function
# that needs shared memory explains (55000, with a hint naming the
# setting), the pure token parsers still work, and writes are unaffected.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DistributedCluster;

my $node = create_leader('nopreload', preload => 0, extension => 0);
is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'), '',
	'the library is not preloaded');
my ($ret, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION distributed');
is($ret, 0, 'CREATE EXTENSION distributed succeeds without preloading')
  or diag $err;

for my $sql (
	'SELECT distributed.last_commit()',
	"SELECT distributed.is_replayed('0/1')",
	"SELECT distributed.is_replayed('0/1'::pg_lsn)",
	"SELECT distributed.wait('0/1', 0)",
	"CALL distributed.wait_for('0/1', 0)",
	"SELECT distributed.session_token('k')",
	"SELECT distributed.record('k', '1:0/1')",
	"SELECT distributed.forget('k')",
	'SELECT distributed.replay_position()',
	'SELECT * FROM distributed.stats',
	'SELECT * FROM distributed.sessions',
	'SELECT * FROM distributed.waiters',
	'SELECT distributed.reset_stats()')
{
	my ($code, $stderr) = sqlstate($node, $sql);
	is($code, '55000', "$sql: 55000");
	like($stderr, qr/HINT:.*shared_preload_libraries/,
		"$sql: the hint names shared_preload_libraries");
}

is( $node->safe_psql('postgres',
		"SELECT distributed.token_lsn('1:0/10'), distributed.token_timeline('1:0/10'),"
		  . " distributed.token_timeline('0/10') IS NULL"),
	'0/10|1|t',
	'token_lsn and token_timeline work without preloading');
my ($code) = sqlstate($node, "SELECT distributed.token_lsn('1:zz')");
is($code, '22P02', 'token_lsn still rejects a malformed token: 22P02');

# Writes go on as before; nothing is reported.
my @r = pstatus(
	$node,
	"SET distributed.session_key = 'k'",
	'CREATE TABLE t (id int)',
	'INSERT INTO t VALUES (1)');
is_deeply([ map { $_->{error} } @r ], [ undef, undef, undef ],
	'writes with a session key set succeed');
is($r[2]{last_commit}, undef, 'no distributed.last_commit is reported');

done_testing();
