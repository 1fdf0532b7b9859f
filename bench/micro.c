/*-------------------------------------------------------------------------
 *
 * micro.c
 *		Wake-up latency of replay waiters, and the CPU cost of idle ones,
 *		on a real follower (the method of test/measure_waits.py, in C).
 *
 * Latency: replay is paused on the follower, the leader commits, n
 * sessions call SELECT distributed.wait(token, ...) on the follower and,
 * once all n show in distributed.waiters, replay is resumed.  A sample is
 * the waiter's clock_timestamp() right after its wait returned minus the
 * clock_timestamp() taken right after pg_wal_replay_resume() returned, in
 * the same statement (one server clock).  It includes replaying the one
 * pending commit; a waiter woken before the resuming statement read the
 * clock counts as 0.  With many waiters, the first woken in each round
 * separates the watcher's notice from the queue of backends that two cores
 * then have to run one after the other.
 *
 * Idle cost: with replay paused, the CPU time (user + system, from /proc)
 * of every process of the follower over a period, nobody waiting and then
 * n waiters asleep, as a share of one core; the replay watcher's own share
 * separately; and how often the watcher and the sleeping waiters woke up
 * meanwhile (their context switches, from /proc/<pid>/status), which is
 * exact where CPU time is counted in 10 ms ticks.
 *
 * --rounds-one 0 leaves out the single-waiter rounds and --cpu-seconds 0
 * the idle cost (bench/run.sh measures 1,000 waiters that way).
 *
 * --floor measures PostgreSQL's own mass wake-up the same way, without the
 * extension in the path: the control session holds an advisory lock in
 * place of pausing replay, the waiters' statement blocks on it in shared
 * mode, and releasing it (in place of resuming replay) wakes them all at
 * once.  What a woken backend does from there to its result is then
 * PostgreSQL's floor for one statement woken from a sleep.  --pids FILE
 * writes the waiters' backend pids (for bench/wakecost.sh's profiles).
 *
 *-------------------------------------------------------------------------
 */
#include "distbench.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

typedef struct Micro
{
	MicroConfig *cfg;
	PGconn	   *leader;
	PGconn	   *ctl;			/* the follower, for control */
	PGconn	  **w;				/* waiter connections to the follower */
	long		postmaster;		/* the follower's, for its CPU time */
	double		round_cpu;		/* follower CPU seconds in the rounds so far */
	double		round_queued;	/* its seconds runnable but not running */
	double		client_cpu;		/* our CPU seconds, likewise */
} Micro;

/*
 * Call fn for every process in /proc with its pid and the fields of its
 * /proc/<pid>/stat after "(comm) " (comm may hold spaces and parentheses,
 * so the fields start after its last ')').
 */
static void
for_each_process(void (*fn) (long pid, const char *stat, void *arg), void *arg)
{
	DIR		   *d = opendir("/proc");
	struct dirent *e;

	if (d == NULL)
		die("cannot read /proc");
	while ((e = readdir(d)) != NULL)
	{
		char		path[64],
					buf[1024],
				   *p;
		FILE	   *f;
		long		me = atol(e->d_name);
		size_t		len;

		if (me <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/stat", me);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		len = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[len] = '\0';
		if ((p = strrchr(buf, ')')) == NULL)
			continue;
		fn(me, p + 2, arg);
	}
	closedir(d);
}

typedef struct SchedSum
{
	long		postmaster;
	double		run;
	double		queued;
} SchedSum;

static void
sched_add(long pid, const char *stat, void *arg)
{
	SchedSum   *sum = arg;
	char		path[64];
	FILE	   *f;
	long		ppid;
	unsigned long long r,
				q;

	if (sscanf(stat, "%*c %ld", &ppid) != 1 || ppid != sum->postmaster)
		return;
	snprintf(path, sizeof(path), "/proc/%ld/schedstat", pid);
	if ((f = fopen(path, "r")) == NULL)
		return;
	if (fscanf(f, "%llu %llu", &r, &q) == 2)
	{
		sum->run += r / 1e9;
		sum->queued += q / 1e9;
	}
	fclose(f);
}

/*
 * Nanosecond CPU time and run-queue wait, summed over the postmaster's
 * children, from /proc/<pid>/schedstat (ticks in /proc/<pid>/stat are too
 * coarse for a few microseconds in each of many processes).
 */
static void
sched_seconds(long postmaster, double *run, double *queued)
{
	SchedSum	sum = {postmaster, 0, 0};

	for_each_process(sched_add, &sum);
	*run = sum.run;
	*queued = sum.queued;
}

/* CPU seconds (user + system) of this process so far. */
static double
own_cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
		(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* The advisory lock of --floor, and the waiters' statement there. */
#define FLOOR_LOCK "4711"
#define FLOOR_WAIT \
	"SELECT 'reached', extract(epoch FROM clock_timestamp()) " \
	"FROM pg_advisory_xact_lock_shared(" FLOOR_LOCK ") " \
	"WHERE $1::text IS NOT NULL AND $2::int4 IS NOT NULL"

static void
pause_replay(Micro *m)
{
	if (m->cfg->floor)
	{
		db_exec(m->ctl, "SELECT pg_advisory_lock(" FLOOR_LOCK ")");
		return;
	}
	db_exec(m->ctl, "SELECT pg_wal_replay_pause()");
	for (;;)
	{
		char	   *state = db_value(m->ctl, "SELECT pg_get_wal_replay_pause_state()");
		bool		paused = strcmp(state, "paused") == 0;

		free(state);
		if (paused)
			return;
		sleep_ms(2);
	}
}

/*
 * Resume replay; seconds since the epoch read right after, in the same
 * statement (a target list is evaluated left to right).
 */
static double
resume_replay(Micro *m)
{
	PGresult   *res = PQexec(m->ctl, m->cfg->floor ?
							 "SELECT pg_advisory_unlock(" FLOOR_LOCK "), "
							 "extract(epoch FROM clock_timestamp())" :
							 "SELECT pg_wal_replay_resume(), "
							 "extract(epoch FROM clock_timestamp())");
	double		v;

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		die("resume: %s", PQerrorMessage(m->ctl));
	v = strtod(PQgetvalue(res, 0, 1), NULL);
	PQclear(res);
	return v;
}

static void
wait_for_waiters(Micro *m, int n)
{
	for (;;)
	{
		char	   *c = db_value(m->ctl, m->cfg->floor ?
									 "SELECT count(*) FROM pg_locks "
									 "WHERE locktype = 'advisory' AND NOT granted" :
									 "SELECT count(*) FROM distributed.waiters");
		int			have = atoi(c);

		free(c);
		if (have >= n)
			return;
		sleep_ms(2);
	}
}

/* Commit on the leader; its token. */
static void
leader_commit(Micro *m, char *tok, size_t len)
{
	if (m->cfg->floor)
	{
		snprintf(tok, len, "0/0");
		return;
	}
	db_exec(m->leader, "INSERT INTO distbench_wake VALUES (1)");
	snprintf(tok, len, "%s", PQparameterStatus(m->leader, "distributed.last_commit"));
	if (tok[0] == '\0')
		die("the leader reported no distributed.last_commit");
}

static void
start_waiters(Micro *m, int n, const char *tok, int timeout_ms)
{
	char		ms[16];
	const char *params[2] = {tok, ms};

	snprintf(ms, sizeof(ms), "%d", timeout_ms);
	for (int i = 0; i < n; i++)
		if (!PQsendQueryPrepared(m->w[i], "wt", 2, params, NULL, NULL, 0))
			die("send wait: %s", PQerrorMessage(m->w[i]));
}

/*
 * Collect the waiters' answers; add (their clock - since) to out.  Returns
 * the smallest such sample (the first waiter woken).
 */
static double
finish_waiters(Micro *m, int n, double since, Samples *out)
{
	double		first = INFINITY;

	for (int i = 0; i < n; i++)
	{
		PGresult   *res;

		while ((res = PQgetResult(m->w[i])) != NULL)
		{
			if (PQresultStatus(res) != PGRES_TUPLES_OK)
				die("wait: %s", PQresultErrorMessage(res));
			if (strcmp(PQgetvalue(res, 0, 0), "reached") != 0)
				die("wait returned %s", PQgetvalue(res, 0, 0));
			if (out)
			{
				double		ms = fmax(0, (strtod(PQgetvalue(res, 0, 1), NULL) - since) * 1000);

				samples_add(out, ms);
				first = fmin(first, ms);
			}
			PQclear(res);
		}
	}
	return first;
}

static void
latency_round(Micro *m, int n, Samples *out, Samples *firsts)
{
	char		tok[64];
	double		resumed,
				r0,
				q0,
				r1,
				q1,
				o0;

	pause_replay(m);
	leader_commit(m, tok, sizeof(tok));
	start_waiters(m, n, tok, 60000);
	wait_for_waiters(m, n);
	sleep_ms(50);
	sched_seconds(m->postmaster, &r0, &q0);
	o0 = own_cpu_seconds();
	resumed = resume_replay(m);
	samples_add(firsts, finish_waiters(m, n, resumed, out));
	m->client_cpu += own_cpu_seconds() - o0;
	sched_seconds(m->postmaster, &r1, &q1);
	m->round_cpu += r1 - r0;
	m->round_queued += q1 - q0;
}

typedef struct TickSum
{
	long		pid;
	bool		children;
	unsigned long ticks;
} TickSum;

static void
ticks_add(long pid, const char *stat, void *arg)
{
	TickSum    *sum = arg;
	long		ppid;
	unsigned long utime,
				stime;

	/* state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
	if (sscanf(stat, "%*c %ld %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
			   &ppid, &utime, &stime) != 3)
		return;
	if (pid == sum->pid || (sum->children && ppid == sum->pid))
		sum->ticks += utime + stime;
}

/* CPU seconds (user + system) of pid, or of the postmaster pid and its children. */
static double
cpu_seconds(long pid, bool children)
{
	TickSum		sum = {pid, children, 0};

	for_each_process(ticks_add, &sum);
	return (double) sum.ticks / sysconf(_SC_CLK_TCK);
}

/* Context switches (voluntary + involuntary) of pid so far: its wake-ups. */
static long
switches(long pid)
{
	char		path[64],
				line[256];
	FILE	   *f;
	long		n = 0,
				v;

	snprintf(path, sizeof(path), "/proc/%ld/status", pid);
	if ((f = fopen(path, "r")) == NULL)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "voluntary_ctxt_switches: %ld", &v) == 1 ||
			sscanf(line, "nonvoluntary_ctxt_switches: %ld", &v) == 1)
			n += v;
	fclose(f);
	return n;
}

static long
switches_of(long *pids, int n)
{
	long		total = 0;

	for (int i = 0; i < n; i++)
		total += switches(pids[i]);
	return total;
}

/* Share of one core used by the follower (and its watcher) over cpu_s. */
static void
cpu_share(Micro *m, long postmaster, long watcher, double *all, double *watch,
		  long *pids, int npids, long *wakeups)
{
	double		c0 = cpu_seconds(postmaster, true),
				w0 = cpu_seconds(watcher, false),
				t0 = now_ms();
	long		s0 = switches(watcher) + switches_of(pids, npids);

	sleep_ms(m->cfg->cpu_s * 1000);
	*wakeups = switches(watcher) + switches_of(pids, npids) - s0;
	*all = (cpu_seconds(postmaster, true) - c0) / ((now_ms() - t0) / 1000) * 100;
	*watch = (cpu_seconds(watcher, false) - w0) / ((now_ms() - t0) / 1000) * 100;
}

/* The pids of the backends in distributed.waiters (at most n). */
static int
waiter_pids(Micro *m, long *pids, int n)
{
	PGresult   *res = PQexec(m->ctl, "SELECT pid FROM distributed.waiters");
	int			got = 0;

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		die("waiters: %s", PQerrorMessage(m->ctl));
	for (int i = 0; i < PQntuples(res) && got < n; i++)
		pids[got++] = atol(PQgetvalue(res, i, 0));
	PQclear(res);
	return got;
}

static long
follower_postmaster(Micro *m)
{
	char	   *dir = db_value(m->ctl, "SHOW data_directory");
	char		path[1024];
	FILE	   *f;
	long		pid = 0;

	snprintf(path, sizeof(path), "%s/postmaster.pid", dir);
	if ((f = fopen(path, "r")) == NULL || fscanf(f, "%ld", &pid) != 1)
		die("cannot read %s (run distbench as root or as the server's user)", path);
	fclose(f);
	free(dir);
	return pid;
}

int
micro_main(MicroConfig *cfg)
{
	Micro		m = {cfg, NULL, NULL, NULL, 0, 0, 0, 0};
	Samples		one = {0},
				many = {0},
				one_first = {0},
				many_first = {0};
	char		tok[64],
				sql[256],
			   *v,
			   *version;
	long		postmaster,
				watcher,
			   *pids;
	int			npids = 0;
	double		idle_all = NAN,
				idle_watch = NAN,
				busy_all = NAN,
				busy_watch = NAN;
	long		idle_wakeups = 0,
				busy_wakeups = 0;
	bool		cpu = cfg->cpu_s > 0 && !cfg->floor;
	FILE	   *f;

	m.leader = db_connect(cfg->leader, "the leader");
	m.ctl = db_connect(cfg->follower, "the follower");
	db_exec(m.leader, "SET client_min_messages = warning");
	db_exec(m.leader, "CREATE EXTENSION IF NOT EXISTS distributed");
	db_exec(m.leader, "CREATE TABLE IF NOT EXISTS distbench_wake (x int)");
	version = db_value(m.ctl, "SELECT current_setting('server_version') || ', max_wal_senders ' || "
					   "current_setting('max_wal_senders') || ', watch_interval ' || "
					   "current_setting('distributed.watch_interval')");
	v = db_value(m.leader, "SELECT pg_current_wal_flush_lsn()");
	snprintf(sql, sizeof(sql), "SELECT pg_last_wal_replay_lsn() >= '%s'::pg_lsn", v);
	free(v);
	for (double give_up = now_ms() + 60000;;)
	{
		bool		done;

		v = db_value(m.ctl, sql);
		done = v != NULL && v[0] == 't';
		free(v);
		if (done)
			break;
		if (now_ms() > give_up)
			die("the follower did not catch up within 60 s");
		sleep_ms(1);
	}

	m.w = calloc(cfg->waiters, sizeof(PGconn *));
	pids = calloc(cfg->waiters, sizeof(long));
	for (int i = 0; i < cfg->waiters; i++)
	{
		m.w[i] = db_connect(cfg->follower, "the follower");
		db_prepare(m.w[i], "wt", cfg->floor ? FLOOR_WAIT :
				   "SELECT distributed.wait($1::text, $2::int4), "
				   "extract(epoch FROM clock_timestamp())");
	}
	if (cfg->pids)
	{
		if ((f = fopen(cfg->pids, "w")) == NULL)
			die("cannot open %s", cfg->pids);
		for (int i = 0; i < cfg->waiters; i++)
			fprintf(f, "%d\n", PQbackendPID(m.w[i]));
		fclose(f);
	}

	m.postmaster = postmaster = follower_postmaster(&m);
	note("follower: PostgreSQL %s%s", version,
		 cfg->floor ? " (floor: woken from an advisory lock)" : "");
	if (cfg->rounds_one > 0)
	{
		note("wake-up latency: %d rounds of 1 waiter", cfg->rounds_one);
		for (int i = 0; i < cfg->rounds_one; i++)
			latency_round(&m, 1, &one, &one_first);
	}
	note("wake-up latency: %d rounds of %d waiters", cfg->rounds_many, cfg->waiters);
	m.round_cpu = m.round_queued = m.client_cpu = 0;
	for (int i = 0; i < cfg->rounds_many; i++)
		latency_round(&m, cfg->waiters, &many, &many_first);

	if (cpu)
	{
		note("CPU of %d idle waiters: 2 x %.0f s", cfg->waiters, cfg->cpu_s);
		v = db_value(m.ctl, "SELECT watcher_pid FROM distributed.stats");
		watcher = v ? atol(v) : -1;
		free(v);
		pause_replay(&m);
		cpu_share(&m, postmaster, watcher, &idle_all, &idle_watch, NULL, 0,
				  &idle_wakeups);
		leader_commit(&m, tok, sizeof(tok));
		start_waiters(&m, cfg->waiters, tok, (int) (cfg->cpu_s * 1000) + 60000);
		wait_for_waiters(&m, cfg->waiters);
		npids = waiter_pids(&m, pids, cfg->waiters);
		/* let the last of many go to sleep (on two busy cores) before counting */
		sleep_ms(1000);
		cpu_share(&m, postmaster, watcher, &busy_all, &busy_watch, pids, npids,
				  &busy_wakeups);
		(void) resume_replay(&m);
		finish_waiters(&m, cfg->waiters, 0, NULL);
	}

	note("  1 waiter: p50 %.3f ms p99 %.3f ms; %d waiters: p50 %.3f ms p99 %.3f ms; "
		 "CPU idle %.2f %%, %d waiting %.2f %% (%ld wake-ups)",
		 samples_pct(&one, 50), samples_pct(&one, 99), cfg->waiters,
		 samples_pct(&many, 50), samples_pct(&many, 99), idle_all,
		 cfg->waiters, busy_all, busy_wakeups);

	if (cfg->markdown)
	{
		f = strcmp(cfg->markdown, "-") == 0 ? stdout : fopen(cfg->markdown, "a");
		if (f == NULL)
			die("cannot open %s", cfg->markdown);
		fprintf(f, "| measurement (PostgreSQL %s%s) | result |\n|---|---|\n", version,
				cfg->floor ? "; floor: waiters woken from an advisory lock, no extension in the path" : "");
		if (cfg->rounds_one > 0)
			fprintf(f, "| wake-up latency, 1 waiter (%zu samples) | p50 %.3f ms, p99 %.3f ms, max %.3f ms |\n",
					one.n, samples_pct(&one, 50), samples_pct(&one, 99), samples_pct(&one, 100));
		fprintf(f, "| wake-up latency, %d waiters at once (%zu samples) | p50 %.3f ms, p99 %.3f ms, max %.3f ms |\n",
				cfg->waiters, many.n, samples_pct(&many, 50), samples_pct(&many, 99),
				samples_pct(&many, 100));
		fprintf(f, "| %d waiters at once: the first woken in each round (%zu rounds) | p50 %.3f ms, max %.3f ms |\n",
				cfg->waiters, many_first.n, samples_pct(&many_first, 50),
				samples_pct(&many_first, 100));
		fprintf(f, "| %d waiters at once, per waiter, from resume until its row was read: CPU time of the follower's processes; their time runnable but waiting for a core; CPU time of this client | %.1f µs; %.1f µs; %.1f µs |\n",
				cfg->waiters, m.round_cpu * 1e6 / ((double) cfg->waiters * cfg->rounds_many),
				m.round_queued * 1e6 / ((double) cfg->waiters * cfg->rounds_many),
				m.client_cpu * 1e6 / ((double) cfg->waiters * cfg->rounds_many));
		if (cpu)
		{
			fprintf(f, "| follower CPU over %.0f s, replay paused, nobody waiting | %.2f %% of one core (replay watcher %.2f %%; watcher wake-ups %ld) |\n",
					cfg->cpu_s, idle_all, idle_watch, idle_wakeups);
			fprintf(f, "| follower CPU over %.0f s, replay paused, %d waiters asleep | %.2f %% of one core (replay watcher %.2f %%); wake-ups of the watcher and the %d waiters: %ld |\n",
					cfg->cpu_s, cfg->waiters, busy_all, busy_watch, npids, busy_wakeups);
		}
		fprintf(f, "\n");
		if (f != stdout)
			fclose(f);
	}
	if (cfg->tsv)
	{
		if ((f = fopen(cfg->tsv, "a")) == NULL)
			die("cannot open %s", cfg->tsv);
		fprintf(f, "wake\t%.3f\t%.3f\t%.3f\t%.3f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%.3f\n",
				samples_pct(&one, 50), samples_pct(&one, 99),
				samples_pct(&many, 50), samples_pct(&many, 99),
				idle_all, busy_all, idle_watch, busy_watch, cfg->waiters,
				samples_pct(&many_first, 50));
		fclose(f);
	}

	for (int i = 0; i < cfg->waiters; i++)
		PQfinish(m.w[i]);
	free(m.w);
	free(pids);
	free(version);
	PQfinish(m.ctl);
	PQfinish(m.leader);
	return 0;
}
