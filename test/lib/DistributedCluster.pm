# DistributedCluster.pm - helpers for the TAP tests of the distributed
# extension: a leader with the library preloaded and streaming followers,
# replay pausing, background sessions, and a real libpq client
# (test/pstatus.py) to see ParameterStatus values.
#
#   use DistributedCluster;
#   my ($leader, $a, $b) = DistributedCluster::create_cluster('x', followers => 2);
#   pause($a); ... resume($a); wait_replayed($a, $leader);
#
# Every server listens on a Unix socket only (PostgreSQL::Test::Cluster's
# default).  Nothing here sleeps to create lag: lag is made by pausing
# replay; waiting is done by polling for a state.

package DistributedCluster;

use strict;
use warnings;

use Carp;
use Cwd qw(abs_path);
use Exporter 'import';
use File::Basename qw(dirname);
use IPC::Run;
use JSON::PP;
use Time::HiRes qw(usleep);

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(
  create_leader add_follower create_cluster
  pause resume wait_replayed
  pstatus pstatus_as bg_pstatus bg_finish wait_for_waiting_backend poll_value
  sqlstate lsn_num token_tli token_lsn_num
  postmaster_pid child_pids process_gone wait_processes_gone kill9_server
  follow_upstream wait_streaming stop_process continue_process);

# test/pstatus.py, next to this file's directory
our $PSTATUS = abs_path(dirname(__FILE__) . '/../pstatus.py');
our $PYTHON = $ENV{DIST_PYTHON} // '/usr/bin/python3';

my $backup_seq = 0;

=pod

=head1 FUNCTIONS

=over

=item create_leader($name, preload => 1, conf => '...', extension => 1, checksums => 1)

A primary that allows streaming, with shared_preload_libraries =
'distributed' (unless preload => 0), the extra postgresql.conf lines in conf,
started, with CREATE EXTENSION distributed done (unless extension => 0).
checksums => 0 initializes it without data checksums where initdb would
otherwise enable them (PostgreSQL 18 and later); with checksums every first
hint-bit change to a page after a checkpoint writes a full-page image to
the WAL, whatever wal_log_hints says.

=cut

sub create_leader
{
	my ($name, %opts) = @_;
	my $preload = $opts{preload} // 1;

	my $node = PostgreSQL::Test::Cluster->new($name);
	my @extra;
	# initdb enables data checksums by default from 18 on, and only
	# accepts --no-data-checksums from then on
	push @extra, '--no-data-checksums'
	  if !($opts{checksums} // 1) && $node->pg_version >= 18;
	$node->init(allows_streaming => 1, extra => \@extra);
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'distributed'") if $preload;
	$node->append_conf('postgresql.conf', $opts{conf}) if defined $opts{conf};
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION distributed')
	  if $opts{extension} // 1;
	return $node;
}

=pod

=item add_follower($leader, $name, conf => '...')

A streaming follower of $leader made from a fresh base backup (so it has
the extension and everything written so far), started and caught up.

=cut

sub add_follower
{
	my ($leader, $name, %opts) = @_;
	my $backup = 'b' . ++$backup_seq;

	$leader->backup($backup);
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init_from_backup($leader, $backup, has_streaming => 1);
	$node->append_conf('postgresql.conf', $opts{conf})
	  if defined $opts{conf};
	$node->start;
	wait_replayed($node, $leader);
	return $node;
}

=pod

=item create_cluster($prefix, followers => N, conf => '...')

Returns ($leader, @followers): "${prefix}_leader" and N followers
"${prefix}_f1" ... all caught up.

=cut

sub create_cluster
{
	my ($prefix, %opts) = @_;
	my $n = $opts{followers} // 1;
	my $leader = create_leader("${prefix}_leader", %opts);
	my @followers = map { add_follower($leader, "${prefix}_f$_") } 1 .. $n;
	return ($leader, @followers);
}

=pod

=item pause($follower), resume($follower)

pg_wal_replay_pause() / pg_wal_replay_resume().  Once pause() returns, the
startup process applies no further record (it checks before each one), so
WAL written on the leader afterwards is received but not replayed.

=cut

sub pause
{
	my ($node) = @_;
	$node->safe_psql('postgres', 'SELECT pg_wal_replay_pause()');
	return;
}

sub resume
{
	my ($node) = @_;
	$node->safe_psql('postgres', 'SELECT pg_wal_replay_resume()');
	return;
}

=pod

=item wait_replayed($follower, $leader [, $lsn])

Wait until $follower has replayed $lsn (default: the leader's current WAL
write position).  Dies if that does not happen within the default timeout.

=cut

sub wait_replayed
{
	my ($follower, $leader, $lsn) = @_;
	$lsn //= $leader->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	$follower->poll_query_until('postgres',
		"SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn")
	  or croak "follower " . $follower->name . " did not replay $lsn";
	return;
}

=pod

=item pstatus($node, @sql) / pstatus_as($node, $role, @sql)

Run the statements through test/pstatus.py over one autocommit libpq
connection to $node's postgres database (as $role for pstatus_as);
returns a list of hashes, one per statement: {sql, rows, error =>
{sqlstate, message} | undef, last_commit, replay_position} (the
ParameterStatus values after the statement).

=cut

sub _connstr
{
	my ($node, $appname, $user) = @_;
	my $c = $node->connstr('postgres');
	$c .= " application_name=$appname" if defined $appname;
	$c .= " user=$user" if defined $user;
	return $c;
}

sub _decode_lines
{
	my ($out) = @_;
	return map { decode_json($_) } grep { /\S/ } split /\n/, $out;
}

sub pstatus
{
	my ($node, @sql) = @_;
	return pstatus_as($node, undef, @sql);
}

sub pstatus_as
{
	my ($node, $user, @sql) = @_;
	my ($out, $err);
	my $ok = IPC::Run::run(
		[ $PYTHON, $PSTATUS, _connstr($node, undef, $user), @sql ],
		'>', \$out, '2>', \$err,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	croak "pstatus.py failed: $err" unless $ok;
	my @res = _decode_lines($out);
	croak "pstatus.py: expected " . scalar(@sql) . " results, got "
	  . scalar(@res) . ": $out $err"
	  unless @res == @sql;
	return @res;
}

=pod

=item bg_pstatus($node, $appname, @sql) / bg_finish($bg)

Start pstatus.py in the background with application_name $appname (to find
its backend in pg_stat_activity); bg_finish waits for it to end and returns
its results as pstatus() does.

=cut

sub bg_pstatus
{
	my ($node, $appname, @sql) = @_;
	my $bg = { out => '', err => '', name => $appname };
	$bg->{h} = IPC::Run::start(
		[ $PYTHON, $PSTATUS, _connstr($node, $appname), @sql ],
		'>', \$bg->{out}, '2>', \$bg->{err},
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	return $bg;
}

sub bg_finish
{
	my ($bg) = @_;
	eval { $bg->{h}->finish; };
	croak "background pstatus.py ($bg->{name}) failed: $@ $bg->{err}" if $@;
	return _decode_lines($bg->{out});
}

=pod

=item poll_value($node, $sql)

Run $sql until it returns a non-empty result; return that result.  Dies
after the default timeout.

=cut

sub poll_value
{
	my ($node, $sql) = @_;
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (time() < $deadline)
	{
		my $v = $node->safe_psql('postgres', $sql);
		return $v if $v ne '';
		usleep(50_000);
	}
	croak "timed out waiting for a result of: $sql";
}

=pod

=item wait_for_waiting_backend($node, $appname)

Wait until the backend with application_name $appname is in a wait with
wait_event_type 'Extension' (distributed's wait), return its pid.

=cut

sub wait_for_waiting_backend
{
	my ($node, $appname) = @_;
	return poll_value($node,
		"SELECT pid FROM pg_stat_activity WHERE application_name = '$appname'"
		  . " AND wait_event_type = 'Extension'");
}

=pod

=item sqlstate($node, $sql [, user => $role]) => ($sqlstate, $stderr, $stdout)

Run $sql with psql (VERBOSITY verbose), as $role if given; returns the
SQLSTATE of the first error (undef if none), psql's stderr and stdout.

=cut

sub sqlstate
{
	my ($node, $sql, %opts) = @_;
	my @extra = ('-v', 'VERBOSITY=verbose');
	push @extra, '-U', $opts{user} if defined $opts{user};
	my ($ret, $out, $err) =
	  $node->psql('postgres', $sql, extra_params => \@extra);
	my ($code) = $err =~ /(?:ERROR|FATAL):\s+([0-9A-Z]{5}):/;
	return ($code, $err, $out);
}

=pod

=item lsn_num('0/3000148'), token_tli('1:0/3000148'), token_lsn_num('1:0/3000148')

LSNs as numbers, for comparisons in Perl.

=cut

sub lsn_num
{
	my ($lsn) = @_;
	croak "not an LSN: " . ($lsn // 'undef')
	  unless defined $lsn && $lsn =~ m{^([0-9A-Fa-f]+)/([0-9A-Fa-f]+)$};
	return hex($1) * 4294967296 + hex($2);
}

sub token_tli
{
	my ($token) = @_;
	croak "not a token: " . ($token // 'undef')
	  unless defined $token && $token =~ m{^(\d+):};
	return $1 + 0;
}

sub token_lsn_num
{
	my ($token) = @_;
	croak "not a token: " . ($token // 'undef')
	  unless defined $token && $token =~ m{^\d+:(.*)$};
	return lsn_num($1);
}

=pod

=back

=cut

=pod

=head2 Failures (used by test/t/01x_*.pl)

=over

=item postmaster_pid($node), child_pids($pid)

The postmaster's pid, from the first line of $node->data_dir/postmaster.pid
(undef when there is no such file); the pids of the processes whose parent
is $pid (from /proc).

=cut

sub postmaster_pid
{
	my ($node) = @_;
	open my $fh, '<', $node->data_dir . '/postmaster.pid' or return undef;
	my $pid = <$fh>;
	close $fh;
	return undef unless defined $pid;
	chomp $pid;
	return $pid =~ /^\d+$/ ? $pid : undef;
}

sub child_pids
{
	my ($ppid) = @_;
	my @kids;
	opendir my $dh, '/proc' or croak "cannot read /proc: $!";
	for my $pid (grep { /^\d+$/ } readdir $dh)
	{
		open my $fh, '<', "/proc/$pid/stat" or next;
		my $stat = <$fh>;
		close $fh;
		# pid (comm) state ppid ...; comm may hold spaces and parentheses
		next unless defined $stat && $stat =~ /\)\s+\S+\s+(\d+)/;
		push @kids, $pid + 0 if $1 == $ppid;
	}
	closedir $dh;
	return sort { $a <=> $b } @kids;
}

=pod

=item process_gone($pid), wait_processes_gone(@pids)

True when $pid no longer runs (no such process, or a zombie waiting to be
reaped: it holds no shared memory any more).  wait_processes_gone polls
until every pid is gone; dies after the default timeout.

=cut

sub process_gone
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/stat" or return 1;
	my $stat = <$fh>;
	close $fh;
	return 1 unless defined $stat;
	my ($state) = $stat =~ /\)\s+(\S+)/;
	return defined $state && ($state eq 'Z' || $state eq 'X');
}

sub wait_processes_gone
{
	my (@pids) = @_;
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (time() < $deadline)
	{
		return 1 unless grep { !process_gone($_) } @pids;
		usleep(20_000);
	}
	croak "processes still running: " . join(' ', grep { !process_gone($_) } @pids);
}

=pod

=item kill9_server($node) => ($postmaster_pid, @children)

Kill $node's postmaster with SIGKILL (the pid in postmaster.pid; through
$node->kill9, so that the node object knows it is down), then wait until
every process it had started has exited by itself (they notice the
postmaster's death), so that $node->start can follow.  The stale
postmaster.pid (and the socket's lock file) are left in place, as after a
real crash, unless the killed postmaster is still a zombie that its parent
(the init process, once pg_ctl has exited) has not reaped yet: a new
postmaster would take that pid for a live server and refuse to start, so
then both lock files are removed.

=cut

sub kill9_server
{
	my ($node) = @_;
	my $pm = postmaster_pid($node);
	croak 'no postmaster.pid for ' . $node->name unless defined $pm;
	my @kids = child_pids($pm);
	$node->kill9;
	wait_processes_gone($pm, @kids);
	if (-e "/proc/$pm")
	{
		unlink($node->data_dir . '/postmaster.pid');
		unlink($node->host . '/.s.PGSQL.' . $node->port . '.lock');
	}
	return ($pm, @kids);
}

=pod

=item follow_upstream($node, $conninfo), wait_streaming($node)

Point $node's primary_conninfo at $conninfo ('' cuts it off) and reload;
wait_streaming waits until $node's WAL receiver is streaming.

=cut

sub follow_upstream
{
	my ($node, $conninfo) = @_;
	$node->append_conf('postgresql.conf', "primary_conninfo = '$conninfo'");
	$node->reload;
	return;
}

sub wait_streaming
{
	my ($node) = @_;
	$node->poll_query_until('postgres',
		"SELECT EXISTS (SELECT FROM pg_stat_wal_receiver WHERE status = 'streaming')")
	  or croak $node->name . ' is not streaming';
	return;
}

=pod

=item stop_process($pid), continue_process($pid)

SIGSTOP / SIGCONT one process (for example the WAL writer, so that an
asynchronous commit stays in the WAL buffers).

=cut

sub stop_process
{
	my ($pid) = @_;
	kill('STOP', $pid) or croak "cannot stop $pid: $!";
	# wait until it is stopped (state T)
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (time() < $deadline)
	{
		open my $fh, '<', "/proc/$pid/stat" or croak "no process $pid";
		my ($state) = <$fh> =~ /\)\s+(\S+)/;
		close $fh;
		return 1 if $state eq 'T';
		usleep(10_000);
	}
	croak "process $pid did not stop";
}

sub continue_process
{
	my ($pid) = @_;
	return kill('CONT', $pid);
}

=pod

=back

=cut

1;
