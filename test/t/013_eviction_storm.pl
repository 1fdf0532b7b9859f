# Failure: the session map full under a write storm from many backends
# with many keys.  Every commit's token is recorded by its client (from
# ParameterStatus, right after COMMIT returns) and compared afterwards
# with what the leader answers (design invariant 2: never below a key's
# real last commit, also after its entry was evicted).
#
# Phase 1: max_sessions = 64 (one partition, exact least-recently-written
# order), 500 keys.  Phase 2: max_sessions = 1024 (16 partitions of 64),
# 4000 keys.  In each, 8 writer processes (half SET LOCAL the key inside
# each transaction, half set it for the session) and one reader that looks
# keys up while the storm runs: a lookup must never answer below a commit
# of that key that had completed before the lookup was sent.
#
# Clients are /usr/bin/python3 + psycopg2 processes (the script is below);
# they run to a fixed number of transactions, so nothing depends on speed.

use strict;
use warnings;

use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DistributedCluster;

my $PY = $ENV{DIST_PYTHON} // '/usr/bin/python3';

my $CLIENT = <<'PY';
import json, os, random, sys, time
import psycopg2

role, connstr = sys.argv[1], sys.argv[2]
conn = psycopg2.connect(connstr)
cur = conn.cursor()
out = []
if role == 'writer':
    wid, ntx, prefix, nkeys, mode = (int(sys.argv[3]), int(sys.argv[4]),
                                     sys.argv[5], int(sys.argv[6]), sys.argv[7])
    rnd = random.Random(1000 + wid)
    mismatch = 0
    for i in range(ntx):
        key = '%s%d' % (prefix, rnd.randrange(nkeys))
        cur.execute("SELECT set_config('distributed.session_key', %s, %s)",
                    (key, mode == 'local'))
        cur.execute("INSERT INTO storm (w, k) VALUES (%s, %s)", (wid, key))
        conn.commit()
        done = time.monotonic()
        tok = conn.get_parameter_status('distributed.last_commit')
        out.append([key, tok, done])
        if i % 16 == 0:
            # the server's own view of this backend's last token
            cur.execute("SELECT distributed.last_commit()")
            if cur.fetchone()[0] != tok:
                mismatch += 1
            conn.commit()
    print(json.dumps({'commits': out, 'mismatch': mismatch}))
else:
    stopfile, prefix, nkeys = sys.argv[3], sys.argv[4], int(sys.argv[5])
    conn.autocommit = True
    rnd = random.Random(7)
    while not os.path.exists(stopfile) and len(out) < 200000:
        key = '%s%d' % (prefix, rnd.randrange(nkeys))
        start = time.monotonic()
        cur.execute("SELECT distributed.session_token(%s)", (key,))
        out.append([key, cur.fetchone()[0], start])
    print(json.dumps({'lookups': out}))
PY

my $node = create_leader('storm',
	conf => "distributed.max_sessions = 64\nmax_connections = 30");
$node->safe_psql('postgres',
	'CREATE TABLE storm (id bigserial PRIMARY KEY, w int, k text)');

sub qry { return $node->safe_psql('postgres', $_[0]); }

sub storm
{
	my ($prefix, $nkeys, $nwriters, $ntx) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $stop = "$dir/stop";
	my $conn = $node->connstr('postgres');
	my %reader = (out => '', err => '');
	$reader{h} = IPC::Run::start(
		[ $PY, '-c', $CLIENT, 'reader', "$conn application_name=storm_reader",
			$stop, $prefix, $nkeys ],
		'>', \$reader{out}, '2>', \$reader{err},
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	my @w;
	for my $i (1 .. $nwriters)
	{
		my %c = (out => '', err => '');
		$c{h} = IPC::Run::start(
			[ $PY, '-c', $CLIENT, 'writer', "$conn application_name=storm_w$i",
				$i, $ntx, $prefix, $nkeys, $i % 2 ? 'local' : 'session' ],
			'>', \$c{out}, '2>', \$c{err},
			IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
		push @w, \%c;
	}
	my @writers;
	for my $c (@w)
	{
		eval { $c->{h}->finish; 1 } or die "writer failed: $@ $c->{err}";
		die "writer failed: $c->{err}" if ($c->{h}->full_results)[0];
		push @writers, decode_json($c->{out});
	}
	open my $fh, '>', $stop or die "cannot create $stop: $!";
	close $fh;
	eval { $reader{h}->finish; 1 } or die "reader failed: $@ $reader{err}";
	die "reader failed: $reader{err}" if ($reader{h}->full_results)[0];
	return (\@writers, decode_json($reader{out})->{lookups});
}

# Check one storm's records against the leader; $label names the phase.
sub check_storm
{
	my ($label, $prefix, $nkeys, $capacity, $writers, $lookups) = @_;
	my (%max, %tokens_of, %all, @commits);
	my ($nonmono, $mismatch, $bad_tok) = (0, 0, 0);
	for my $w (@$writers)
	{
		my $prev = -1;
		$mismatch += $w->{mismatch};
		for my $c (@{ $w->{commits} })
		{
			my ($k, $tok, $done) = @$c;
			unless (defined $tok && $tok =~ m{^1:[0-9A-F]+/[0-9A-F]+$}) { $bad_tok++; next; }
			my $lsn = token_lsn_num($tok);
			$nonmono++ if $lsn <= $prev;
			$prev = $lsn;
			$max{$k} = $lsn if !defined $max{$k} || $lsn > $max{$k};
			$tokens_of{$k}{$tok} = 1;
			$all{$tok} = 1;
			push @commits, [ $k, $lsn, $done ];
		}
	}
	my $total = 0;
	$total += scalar @{ $_->{commits} } for @$writers;
	is($bad_tok, 0, "$label: every commit reported a timeline-1 token ($total commits)");
	is($nonmono, 0, "$label: each writer's tokens rise commit after commit");
	is(scalar(keys %all), $total, "$label: every commit has its own token");
	is($mismatch, 0, "$label: ParameterStatus agrees with distributed.last_commit()");
	my $written = scalar keys %max;
	cmp_ok($written, '>', $capacity, "$label: $written keys written, more than the map holds");

	# The leader's answers now, for every key written (and a few never written)
	my %answer = map { split /=/ } split /\n/, qry(
		"SELECT k || '=' || distributed.session_token(k) FROM unnest(ARRAY['"
		  . join("','", sort keys %max) . "', '${prefix}never1', '${prefix}never2']) k");
	my @viol = grep { token_lsn_num($answer{$_}) < $max{$_} } sort keys %max;
	is(scalar(@viol), 0,
		"$label: no key answers below its last recorded commit (invariant 2)")
	  or diag("violations: " . join(', ', map { "$_ answers $answer{$_}" } @viol[0 .. ($#viol < 9 ? $#viol : 9)]));

	my ($cap, $entries, $evictions, $floor, $recorded) = split /\|/,
	  qry('SELECT capacity, entries, evictions, floor, commits_recorded FROM distributed.stats');
	is($cap, $capacity, "$label: capacity is $capacity");
	cmp_ok($evictions, '>', 0, "$label: the storm evicted entries ($evictions)");
	cmp_ok($entries, '<=', $capacity, "$label: entries ($entries) within capacity");
	is($entries, $capacity, "$label: the map is full after the storm");
	is($recorded, $total, "$label: stats.commits_recorded counts every keyed commit");
	ok($all{$floor}, "$label: the floor ($floor) is the position of a recorded commit (an evicted entry's)");

	# Every entry still in the map holds a real commit token of its key
	my @entries = map { [ split /=/ ] } split /\n/,
	  qry("SELECT key || '=' || token FROM distributed.sessions");
	is(scalar(@entries), $entries, "$label: distributed.sessions lists every entry");
	my @alien = grep { !$tokens_of{ $_->[0] }{ $_->[1] } } @entries;
	is(scalar(@alien), 0, "$label: every entry holds a token its key really committed");
	# Keys absent from the map answer at least the floor; keys in it their
	# entry or the floor, whichever is higher
	my %in_map = map { $_->[0] => $_->[1] } @entries;
	my @wrong = grep {
		my $want = token_lsn_num($floor);
		$want = token_lsn_num($in_map{$_}) if exists $in_map{$_} && token_lsn_num($in_map{$_}) > $want;
		token_lsn_num($answer{$_}) != $want
	} sort keys %max;
	is(scalar(@wrong), 0, "$label: every key answers max(its entry, the floor)");
	is($answer{"${prefix}never1"} . ' ' . $answer{"${prefix}never2"}, "$floor $floor",
		"$label: keys never written answer the floor");

	# Lookups during the storm: never below a commit of the key that had
	# completed before the lookup was sent
	my %by_key;
	push @{ $by_key{ $_->[0] } }, $_ for sort { $a->[2] <=> $b->[2] } @commits;
	my ($checked, $late) = (0, 0);
	for my $l (@$lookups)
	{
		my ($k, $v, $start) = @$l;
		my $need = -1;
		for my $c (@{ $by_key{$k} || [] })
		{
			last if $c->[2] >= $start;
			$need = $c->[1] if $c->[1] > $need;
		}
		next if $need < 0;
		$checked++;
		$late++ if token_lsn_num($v) < $need;
	}
	cmp_ok($checked, '>', 0,
		"$label: the reader looked up keys with completed commits during the storm ("
		  . scalar(@$lookups) . " lookups, $checked with an earlier commit)");
	is($late, 0, "$label: no lookup during the storm answered below an earlier completed commit");
	return;
}

# ---------------------------------------------------------------------
# Phase 1: 64 places, one partition
# ---------------------------------------------------------------------
qry('SELECT floor FROM distributed.stats');
my ($writers, $lookups) = storm('k', 500, 8, 300);
check_storm('64 places', 'k', 500, 64, $writers, $lookups);

# ---------------------------------------------------------------------
# Phase 2: 1024 places, 16 partitions
# ---------------------------------------------------------------------
$node->append_conf('postgresql.conf', 'distributed.max_sessions = 1024');
$node->restart;
qry('SELECT floor FROM distributed.stats');
($writers, $lookups) = storm('p', 4000, 8, 300);
check_storm('1024 places', 'p', 4000, 1024, $writers, $lookups);

done_testing();
