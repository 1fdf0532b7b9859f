# 090_reference.pl: the README's reference tables match what is installed.
#
# Starts one node with the library preloaded, creates the extension, and
# compares the "## Reference" tables of README.md with the catalogs and the
# sources:
#
#   ### Functions   first cell `distributed.name(arg type, ...)`: the set of
#                   (name, input argument types) equals pg_proc's for schema
#                   distributed; return types match (procedures: "procedure").
#   ### Views       first cell `distributed.name`: the set of views equals the
#                   catalog's; each view's "Columns" cell ("name type, ...")
#                   equals its columns in order; every role granted SELECT
#                   appears in backticks in the "Who may read" cell.
#   ### Settings    first cell `distributed.name`: the set equals pg_settings'
#                   distributed.%; context and default (boot value plus unit,
#                   '' for empty) match.
#   ### SQLSTATEs   first cell `XXXXX`: every errcode(ERRCODE_...) and
#                   GUC_check_errcode(ERRCODE_...) in src/*.c and src/*.h is
#                   listed.  Convention: a listed code that no source file
#                   raises must say "(core)" in its row, meaning PostgreSQL
#                   itself raises it in the situation described.
#
# Also: the README's instruction to GRANT USAGE ON SCHEMA distributed is
# there exactly when the install script leaves the schema closed to PUBLIC.
#
# Each first cell must be exactly one backticked name and nothing else.
# Type names are normalised on both sides (int4 = integer, timestamptz =
# timestamp with time zone, ...).

use strict;
use warnings;

use FindBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

# The suite runs with the source tree as the working directory; fall back to
# this file's location for a run from elsewhere.
my $root = -f 'README.md' ? '.' : "$FindBin::Bin/../..";
my $readme_path = "$root/README.md";
ok(-f $readme_path, "README.md found at $readme_path")
  or BAIL_OUT('no README.md');
my $readme = slurp_file($readme_path);

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

my %type_alias = (
	int2 => 'smallint',
	int4 => 'integer',
	int => 'integer',
	int8 => 'bigint',
	bool => 'boolean',
	float4 => 'real',
	float8 => 'double precision',
	timestamptz => 'timestamp with time zone',
	timestamp => 'timestamp without time zone',
	varchar => 'character varying',
);

sub norm_type
{
	my ($t) = @_;
	$t = lc $t;
	$t =~ s/`//g;
	$t =~ s/^\s+|\s+$//g;
	$t =~ s/\s+/ /g;
	$t =~ s/^pg_catalog\.//;
	my $setof = ($t =~ s/^setof //) ? 'setof ' : '';
	$t = $type_alias{$t} // $t;
	return $setof . $t;
}

# "a, b" and "extra" lists for a set comparison; sorted.
sub set_diff
{
	my ($want, $have) = @_;    # array refs
	my %w = map { $_ => 1 } @$want;
	my %h = map { $_ => 1 } @$have;
	return {
		missing_from_readme => [ sort grep { !$h{$_} } keys %w ],
		extra_in_readme => [ sort grep { !$w{$_} } keys %h ],
	};
}

sub check_set
{
	my ($what, $installed, $documented) = @_;
	my $d = set_diff($installed, $documented);
	is_deeply($d, { missing_from_readme => [], extra_in_readme => [] },
		"README $what table lists exactly the installed ones")
	  or diag(
		"$what installed but not in README: "
		  . (join(', ', @{ $d->{missing_from_readme} }) || '(none)') . "\n"
		  . "$what in README but not installed: "
		  . (join(', ', @{ $d->{extra_in_readme} }) || '(none)'));
	return;
}

# Rows of the first Markdown table after the line "### $title", as arrays of
# trimmed cells, header and separator removed.
sub readme_table
{
	my ($title) = @_;
	my @lines = split /\n/, $readme;
	my $i = 0;
	$i++ while $i < @lines && $lines[$i] !~ /^###\s+\Q$title\E\s*$/;
	return () if $i >= @lines;
	$i++;
	$i++ while $i < @lines && $lines[$i] !~ /^\s*\|/ && $lines[$i] !~ /^#/;
	my @rows;
	my $n = 0;
	while ($i < @lines && $lines[$i] =~ /^\s*\|/)
	{
		my $line = $lines[$i++];
		next if $n++ == 0;                      # header
		next if $line =~ /^\s*\|[\s:|-]+\|\s*$/;    # separator
		$line =~ s/^\s*\|//;
		$line =~ s/\|\s*$//;
		# a "|" inside backticks would split a cell; the tables use none
		my @cells = map { s/^\s+|\s+$//gr } split /\|/, $line, -1;
		push @rows, \@cells;
	}
	return @rows;
}

# The first cells of a table: each must be exactly `name`.
sub first_cells
{
	my ($title, @rows) = @_;
	my (@names, @bad);
	for my $r (@rows)
	{
		# keep one entry per row (undef when malformed) so that indexes match
		if ($r->[0] =~ /^`([^`]+)`$/) { push @names, $1 }
		else { push @names, undef; push @bad, $r->[0] }
	}
	ok(@rows > 0 && !@bad,
		"README $title table found, each first cell one `name`")
	  or diag(@rows
		? "malformed first cells: " . join(' | ', @bad)
		: "no table after \"### $title\"");
	return @names;
}

# ---------------------------------------------------------------------------
# The node
# ---------------------------------------------------------------------------

my $node = PostgreSQL::Test::Cluster->new('reference');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'distributed'");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION distributed');

sub query_rows
{
	my ($sql) = @_;
	my $out = $node->safe_psql('postgres', $sql);
	return map { [ split /\|/, $_, -1 ] } grep { length } split /\n/, $out;
}

# ---------------------------------------------------------------------------
# Functions and procedures
# ---------------------------------------------------------------------------

{
	my @rows = readme_table('Functions');
	my @names = first_cells('Functions', @rows);

	my (@documented, %doc_returns);
	for my $k (0 .. $#rows)
	{
		my $sig = $names[$k] // next;
		my ($name, $args) = $sig =~ /^distributed\.(\w+)\((.*)\)$/
		  or do { push @documented, "unparsable: $sig"; next };
		my @types;
		for my $arg (split /,/, $args)
		{
			$arg =~ s/\s+DEFAULT\s+.*$//i;
			$arg =~ s/^\s*(IN|INOUT|VARIADIC)\s+//i;
			$arg =~ s/^\s+|\s+$//g;
			next unless length $arg;
			# every argument is "name type"; the type may have spaces
			my ($type) = $arg =~ /^\w+\s+(.+)$/;
			push @types, norm_type($type // "unnamed argument: $arg");
		}
		my $key = "$name(" . join(', ', @types) . ")";
		push @documented, $key;
		my $ret = $rows[$k][1] // '';
		$doc_returns{$key} =
		  $ret =~ /procedure/i ? '(procedure)' : norm_type($ret);
	}

	my (@installed, %returns);
	for my $r (query_rows(q{
		SELECT p.proname, pg_catalog.oidvectortypes(p.proargtypes),
		       p.prokind, pg_catalog.pg_get_function_result(p.oid)
		FROM pg_catalog.pg_proc p
		JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = 'distributed'
		ORDER BY 1, 2}))
	{
		my ($name, $argtypes, $kind, $result) = @$r;
		my $key = "$name("
		  . join(', ', map { norm_type($_) } grep { /\S/ } split /,/, $argtypes)
		  . ")";
		push @installed, $key;
		$returns{$key} = $kind eq 'p' ? '(procedure)' : norm_type($result);
	}

	check_set('function/procedure', \@installed, \@documented);

	my %both = map { $_ => $returns{$_} }
	  grep { exists $doc_returns{$_} } keys %returns;
	my %doc_both = map { $_ => $doc_returns{$_} } keys %both;
	is_deeply(\%doc_both, \%both,
		'README function table: return types match pg_get_function_result')
	  or diag(join "\n", map { "$_: README says '$doc_both{$_}', installed '$both{$_}'" }
		  grep { $doc_both{$_} ne $both{$_} } sort keys %both);
}

# ---------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------

{
	my @rows = readme_table('Views');
	my @names = first_cells('Views', @rows);

	my (%doc_cols, %doc_readers);
	for my $k (0 .. $#rows)
	{
		my $name = $names[$k] // next;
		$name =~ s/^distributed\.//;
		$doc_cols{$name} = [
			map {
				my ($col, $type) = /^\s*`?(\w+)`?\s+(.+?)\s*$/;
				defined $col ? "$col " . norm_type($type) : "unparsable: $_"
			} split /,/, ($rows[$k][1] // '')
		];
		$doc_readers{$name} = $rows[$k][2] // '';
	}

	my (%cols, %grantees);
	for my $r (query_rows(q{
		SELECT c.relname, a.attname,
		       pg_catalog.format_type(a.atttypid, a.atttypmod)
		FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_catalog.pg_attribute a
		  ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		WHERE n.nspname = 'distributed' AND c.relkind = 'v'
		ORDER BY c.relname, a.attnum}))
	{
		push @{ $cols{ $r->[0] } }, "$r->[1] " . norm_type($r->[2]);
	}
	for my $r (query_rows(q{
		SELECT c.relname,
		       CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
		            ELSE pg_catalog.pg_get_userbyid(acl.grantee) END
		FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace,
		     LATERAL pg_catalog.aclexplode(c.relacl) acl
		WHERE n.nspname = 'distributed' AND c.relkind = 'v'
		  AND acl.privilege_type = 'SELECT' AND acl.grantee <> c.relowner
		ORDER BY 1, 2}))
	{
		push @{ $grantees{ $r->[0] } }, $r->[1];
	}

	check_set('view', [ keys %cols ], [ keys %doc_cols ]);

	my %common = map { $_ => 1 } grep { $doc_cols{$_} } keys %cols;
	my %want = map { $_ => $cols{$_} } keys %common;
	my %got = map { $_ => $doc_cols{$_} } keys %common;
	is_deeply(\%got, \%want, 'README view table: columns and types match, in order')
	  or diag(join "\n", map {
		  "$_: README has (" . join(', ', @{ $got{$_} }) . ")\n"
			. "    installed (" . join(', ', @{ $want{$_} }) . ")"
	  } grep { join(',', @{ $got{$_} }) ne join(',', @{ $want{$_} }) } sort keys %common);

	my @undocumented;
	for my $v (sort keys %common)
	{
		for my $role (@{ $grantees{$v} // [] })
		{
			push @undocumented, "$v: $role"
			  unless $doc_readers{$v} =~ /`\Q$role\E`/;
		}
	}
	is_deeply(\@undocumented, [],
		'README view table: every role granted SELECT is named in "who may read"')
	  or diag('granted SELECT but not named (in backticks) in the README: '
		  . join('; ', @undocumented));
}

# The schema: the README tells users to GRANT USAGE exactly when the
# install script does not open the schema to PUBLIC itself.
{
	my $public_usage = $node->safe_psql('postgres', q{
		SELECT EXISTS (
			SELECT FROM pg_catalog.pg_namespace n,
			     LATERAL pg_catalog.aclexplode(n.nspacl) acl
			WHERE n.nspname = 'distributed' AND acl.grantee = 0
			  AND acl.privilege_type = 'USAGE')});
	my $readme_grants = $readme =~ /GRANT USAGE ON SCHEMA distributed/ ? 1 : 0;
	is($readme_grants, $public_usage eq 't' ? 0 : 1,
		'README asks for GRANT USAGE ON SCHEMA distributed exactly when PUBLIC lacks it')
	  or diag($public_usage eq 't'
		? 'the install script now grants USAGE to PUBLIC: drop the GRANT USAGE advice from README.md'
		: 'PUBLIC has no USAGE on schema distributed: README.md must say to grant it');
}

# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------

{
	my @rows = readme_table('Settings');
	my @names = first_cells('Settings', @rows);

	my %documented;
	for my $k (0 .. $#rows)
	{
		my $name = $names[$k] // next;
		my $context = $rows[$k][1] // '';
		my $default = $rows[$k][2] // '';
		$default =~ s/`//g;
		$default = '' if $default eq "''";
		$documented{$name} = "context=$context default=$default";
	}

	my %installed;
	for my $r (query_rows(q{
		SELECT name, context, boot_val, coalesce(unit, '')
		FROM pg_catalog.pg_settings
		WHERE name LIKE 'distributed.%'
		ORDER BY 1}))
	{
		my ($name, $context, $boot, $unit) = @$r;
		$installed{$name} = "context=$context default=$boot$unit";
	}

	check_set('setting', [ keys %installed ], [ keys %documented ]);

	my @common = grep { exists $documented{$_} } sort keys %installed;
	is_deeply({ map { $_ => $documented{$_} } @common },
		{ map { $_ => $installed{$_} } @common },
		'README settings table: context and default match pg_settings')
	  or diag(join "\n", map { "$_: README '$documented{$_}', installed '$installed{$_}'" }
		  grep { $documented{$_} ne $installed{$_} } @common);
}

# ---------------------------------------------------------------------------
# SQLSTATEs
# ---------------------------------------------------------------------------

{
	my @rows = readme_table('SQLSTATEs');
	my @codes = first_cells('SQLSTATEs', @rows);
	my %row_text;
	for my $k (0 .. $#rows)
	{
		$row_text{ $codes[$k] } = join(' | ', @{ $rows[$k] }) if defined $codes[$k];
	}

	# ERRCODE_* name -> five-character code, from the server's errcodes.h
	# and this project's own MAKE_SQLSTATE defines.
	my $incdir = $node->config_data('--includedir-server');
	my @headers = ("$incdir/utils/errcodes.h", glob("$root/src/*.h"));
	my %sqlstate;
	for my $h (@headers)
	{
		next unless -f $h;
		my $text = slurp_file($h);
		while ($text =~
			/#define\s+(ERRCODE_\w+)\s+MAKE_SQLSTATE\(\s*'(.)'\s*,\s*'(.)'\s*,\s*'(.)'\s*,\s*'(.)'\s*,\s*'(.)'\s*\)/g)
		{
			$sqlstate{$1} = "$2$3$4$5$6";
		}
	}
	ok(exists $sqlstate{ERRCODE_QUERY_CANCELED},
		"errcodes.h read from $incdir/utils");

	# Codes raised by the sources.
	my (%raised, @unknown);
	for my $f (sort(glob("$root/src/*.c"), glob("$root/src/*.h")))
	{
		my $text = slurp_file($f);
		while ($text =~ /\b(?:GUC_check_)?errcode\s*\(\s*(ERRCODE_\w+)\s*\)/g)
		{
			my $name = $1;
			if (exists $sqlstate{$name})
			{
				push @{ $raised{ $sqlstate{$name} } }, "$name in " . ($f =~ s{.*/}{}r);
			}
			else
			{
				push @unknown, "$name in $f";
			}
		}
	}
	ok(keys %raised > 0 && !@unknown,
		'every ERRCODE_ name raised in src/ maps to a SQLSTATE')
	  or diag('unknown errcode names: ' . join(', ', @unknown));

	my @missing = map { "$_ (" . join(', ', @{ $raised{$_} }) . ")" }
	  grep { !exists $row_text{$_} } sort keys %raised;
	is_deeply(\@missing, [],
		'README SQLSTATE table lists every code the sources raise')
	  or diag('raised in src/ but not in the README: ' . join('; ', @missing));

	my @unaccounted = grep { !$raised{$_} && $row_text{$_} !~ /\(core\)/ }
	  sort keys %row_text;
	is_deeply(\@unaccounted, [],
		'README SQLSTATE table: codes the sources never raise are marked (core)')
	  or diag('listed in the README, raised by no source file and not marked "(core)": '
		  . join(', ', @unaccounted));

	my @malformed = grep { !/^[0-9A-Z]{5}$/ } sort keys %row_text;
	is_deeply(\@malformed, [], 'README SQLSTATE codes are five characters')
	  or diag('malformed: ' . join(', ', @malformed));
}

$node->stop;
done_testing();
