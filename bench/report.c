/*-------------------------------------------------------------------------
 *
 * report.c
 *		Metrics of a strategy's run, and the tables and checks printed.
 *
 * Ideal follower share.  A read's token was "replayed on some follower at
 * the time of the read" when some follower's replay position had reached
 * it when the read was routed.  Replay positions are known only from
 * observations: every reply from a follower (the sessions' reads, checks
 * and waits, and a side connection per follower that samples every
 * --sample-ms) carries distributed.replay_position, which held at some
 * instant between the query's sending and the reply's arrival.  So for a
 * read routed at time t with token tok, on each follower:
 *
 *	- certainly replayed: an observation received by t shows >= tok;
 *	- possibly replayed: no observation sent at or after t shows < tok
 *	  (replay only moves forward, so one that does proves it was not).
 *
 * ideal_lo and ideal_hi are the shares of reads certainly and possibly
 * replayed on some follower; the truth lies between, and the gap is the
 * sampling resolution.  The first read after a write comes too soon after
 * it for that resolution, so it is decided by its shadow reads instead (the
 * same read sent to every follower as it was routed, route.c): replayed if
 * any of them saw the write.  "Share of ideal" divides by ideal_hi, the
 * stricter.
 *
 * Only replies whose last statement succeeded count as observations: the
 * position is refreshed at commit, so after an error libpq still holds an
 * older one.
 *
 * Replay lag of a write on a follower: from the reply carrying its token to
 * the midpoint between the last observation sent that did not show it and
 * the first received that did.
 *
 *-------------------------------------------------------------------------
 */
#include "distbench.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct FolIndex
{
	size_t		n;
	double	   *recv;			/* ascending */
	Token	   *prefmax;		/* highest position received by recv[i] */
	double	   *sent;			/* ascending */
	Token	   *sufmin;			/* lowest position among those sent at sent[i] or later */
} FolIndex;

static bool
token_less(Token a, Token b)
{
	return a.tli < b.tli || (a.tli == b.tli && a.lsn < b.lsn);
}

static int
cmp_recv(const void *a, const void *b)
{
	double		x = ((const Obs *) a)->recv,
				y = ((const Obs *) b)->recv;

	return (x > y) - (x < y);
}

static int
cmp_sent(const void *a, const void *b)
{
	double		x = ((const Obs *) a)->sent,
				y = ((const Obs *) b)->sent;

	return (x > y) - (x < y);
}

static void
index_build(FolIndex *ix, Obs *obs, size_t n)
{
	ix->n = n;
	ix->recv = malloc((n + 1) * sizeof(double));
	ix->sent = malloc((n + 1) * sizeof(double));
	ix->prefmax = malloc((n + 1) * sizeof(Token));
	ix->sufmin = malloc((n + 1) * sizeof(Token));

	qsort(obs, n, sizeof(Obs), cmp_recv);
	for (size_t i = 0; i < n; i++)
	{
		ix->recv[i] = obs[i].recv;
		ix->prefmax[i] = (i == 0 || token_less(ix->prefmax[i - 1], obs[i].pos))
			? obs[i].pos : ix->prefmax[i - 1];
	}
	qsort(obs, n, sizeof(Obs), cmp_sent);
	for (size_t i = n; i-- > 0;)
	{
		ix->sent[i] = obs[i].sent;
		ix->sufmin[i] = (i == n - 1 || token_less(obs[i].pos, ix->sufmin[i + 1]))
			? obs[i].pos : ix->sufmin[i + 1];
	}
}

static void
index_free(FolIndex *ix)
{
	free(ix->recv);
	free(ix->sent);
	free(ix->prefmax);
	free(ix->sufmin);
}

/*
 * Number of elements of the ascending v[0..n) that are below t, or at or
 * below it when with_equal.
 */
static size_t
count_below(const double *v, size_t n, double t, bool with_equal)
{
	size_t		lo = 0,
				hi = n;

	while (lo < hi)
	{
		size_t		mid = (lo + hi) / 2;

		if (v[mid] < t || (with_equal && v[mid] == t))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool
certainly_replayed(const FolIndex *ix, double t, Token tok)
{
	size_t		i = count_below(ix->recv, ix->n, t, true);

	return i > 0 && token_reached(ix->prefmax[i - 1], tok);
}

static bool
possibly_replayed(const FolIndex *ix, double t, Token tok)
{
	size_t		j = count_below(ix->sent, ix->n, t, false);

	return j == ix->n || token_reached(ix->sufmin[j], tok);
}

/* First i with arr[i] >= tok, in an array whose values only rise, or n. */
static size_t
first_reaching(const Token *arr, size_t n, Token tok)
{
	size_t		lo = 0,
				hi = n;

	while (lo < hi)
	{
		size_t		mid = (lo + hi) / 2;

		if (token_reached(arr[mid], tok))
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

/* First i with prefmax[i] >= tok (prefmax only rises), or n. */
static size_t
first_reached_by(const FolIndex *ix, Token tok)
{
	return first_reaching(ix->prefmax, ix->n, tok);
}

/* First j from which every observation sent shows >= tok, or n. */
static size_t
first_reached_from(const FolIndex *ix, Token tok)
{
	return first_reaching(ix->sufmin, ix->n, tok);
}

void
report_compute(RunStats *st, int nfollowers)
{
	FolIndex	ix[MAX_FOLLOWERS];
	long		lo = 0,
				hi = 0,
				exact = 0,
				ndone = 0;
	Samples		lag = {0};
	double	   *best = malloc((st->nwrites_log + 1) * sizeof(double));

	for (size_t w = 0; w < st->nwrites_log; w++)
		best[w] = INFINITY;
	for (int f = 0; f < nfollowers; f++)
		index_build(&ix[f], st->obs[f], st->nobs[f]);

	for (size_t r = 0; r < st->nreads_log; r++)
	{
		const ReadRec *rd = &st->reads_log[r];
		bool		c = false,
					p = false;

		if (!rd->done)
			continue;
		ndone++;

		/*
		 * A follower that returned an older value although a reply received
		 * before the read showed its replay position at or past the write
		 * would be a bug in the position it reports.
		 */
		if (rd->stale && rd->node >= 0 &&
			certainly_replayed(&ix[rd->node], rd->t, rd->tok))
			st->contradictions++;
		for (int f = 0; f < nfollowers; f++)
			if ((rd->shadow_stale & (1u << f)) &&
				certainly_replayed(&ix[f], rd->t, rd->tok))
				st->contradictions++;

		/* shadow reads decide the first read after a write */
		if (rd->shadow_fresh || (nfollowers > 0 && rd->shadow_done == nfollowers))
		{
			exact++;
			lo += rd->shadow_fresh;
			hi += rd->shadow_fresh;
			continue;
		}
		for (int f = 0; f < nfollowers; f++)
		{
			c = c || certainly_replayed(&ix[f], rd->t, rd->tok);
			p = p || possibly_replayed(&ix[f], rd->t, rd->tok);
		}
		lo += c;
		hi += p;
	}
	st->ideal_lo = ndone ? (double) lo / ndone : NAN;
	st->ideal_hi = ndone ? (double) hi / ndone : NAN;
	st->ideal_exact = ndone ? (double) exact / ndone : NAN;

	for (int f = 0; f < nfollowers; f++)
	{
		FolIndex   *x = &ix[f];

		samples_reset(&lag);
		for (size_t w = 0; w < st->nwrites_log; w++)
		{
			const WriteRec *wr = &st->writes_log[w];
			size_t		i,
						j;
			double		upper,
						lower;

			if (wr->tok.tli == 0)
				continue;
			i = first_reached_by(x, wr->tok);
			if (i == x->n)
				continue;		/* not seen replayed before the run ended */
			upper = x->recv[i];
			j = first_reached_from(x, wr->tok);
			lower = j > 0 ? x->sent[j - 1] : upper;
			samples_add(&lag, fmax(0, (lower + upper) / 2 - wr->t));
			/* the physical limit: the nearest follower to have it, one round trip */
			best[w] = fmin(best[w], fmax(0, (lower + upper) / 2 - wr->t) +
						   st->rtt_follower[f]);
		}
		st->lag_p50[f] = samples_pct(&lag, 50);
		st->lag_p99[f] = samples_pct(&lag, 99);
		index_free(x);
	}
	samples_reset(&st->limit);
	for (size_t w = 0; w < st->nwrites_log; w++)
		if (isfinite(best[w]))
			samples_add(&st->limit, best[w]);
	free(best);
	free(lag.v);
}

static double
ratio(long a, long b)
{
	return b ? (double) a / b : NAN;
}

void
report_progress(const RunStats *st)
{
	Samples    *lat = (Samples *) &st->read_lat;

	note("  %-18s %7.0f reads/s  follower %5.1f%%  ideal %5.1f-%5.1f%%  stale %ld  "
		 "p50 %.2f ms  p99 %.2f ms  extra RT/read %.3f  errors %ld",
		 st->strat.name, st->reads_in_window / st->elapsed_s,
		 100 * ratio(st->follower_reads, st->reads),
		 100 * st->ideal_lo, 100 * st->ideal_hi,
		 st->stale_follower + st->stale_leader,
		 samples_pct(lat, 50), samples_pct(lat, 99),
		 ratio(st->extra_rt, st->reads), st->errors);
}

static void
format_waits(char *buf, size_t len, const RunStats *st)
{
	size_t		off;

	if (st->strat.kind != STRAT_WAIT && st->strat.kind != STRAT_WAIT_FN &&
		st->strat.kind != STRAT_WAIT_PIPE && st->strat.kind != STRAT_WAIT_ONE &&
		st->strat.kind != STRAT_MAXSCALE && st->strat.kind != STRAT_WAITFOR)
	{
		snprintf(buf, len, "–");
		return;
	}
	off = snprintf(buf, len, "%ld / %ld", st->outcomes[0], st->outcomes[1]);
	for (int o = 2; o < NOUTCOMES; o++)
		if (st->outcomes[o] && off < len)
			off += snprintf(buf + off, len - off, ", %s %ld",
							outcome_names[o], st->outcomes[o]);
}

/*
 * The cells both routing tables share: the waits, the stale reads (bold
 * when there are any) and the follower share as a part of the ideal.
 */
static void
format_shares(const RunStats *st, char *waits, size_t waits_len,
			  char *stale_s, size_t stale_len, char *of_ideal, size_t ideal_len)
{
	long		stale = st->stale_follower + st->stale_leader;
	double		share = ratio(st->follower_reads, st->reads);

	format_waits(waits, waits_len, st);
	if (st->ideal_hi > 0)
		snprintf(of_ideal, ideal_len, "%.1f %%", 100 * share / st->ideal_hi);
	else
		snprintf(of_ideal, ideal_len, "–");
	if (stale)
		snprintf(stale_s, stale_len, "**%ld** (%.1f %%)", stale,
				 100 * ratio(stale, st->reads));
	else
		snprintf(stale_s, stale_len, "0");
}

/*
 * The latency scenario's table: what a user waits for after a write, where
 * the reads go, and what each router adds in round trips, beside the
 * physical limit (replay lag on the nearest follower plus one round trip
 * to it).
 */
static void
report_latency_markdown(FILE *f, const RouteConfig *cfg, RunStats *runs, int nruns)
{
	(void) cfg;
	fprintf(f, "| strategy | read after write p50 / p99 (ms) | physical limit p50 / p99 (ms) "
			"| all reads p50 / p99 (ms) | follower share | share of ideal | stale reads "
			"| extra round trips per read (of them to the leader) "
			"| extra leader round trips per write | waits reached / timed out |\n"
			"|---|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
	for (int i = 0; i < nruns; i++)
	{
		RunStats   *st = &runs[i];
		double		share = ratio(st->follower_reads, st->reads);
		char		waits[128],
					stale_s[64],
					of_ideal[32];

		format_shares(st, waits, sizeof(waits), stale_s, sizeof(stale_s),
					  of_ideal, sizeof(of_ideal));
		fprintf(f, "| %s | %.1f / %.1f | %.1f / %.1f | %.1f / %.1f | %.1f %% | %s | %s "
				"| %.3f (%.3f) | %.2f | %s |\n",
				st->strat.label,
				samples_pct(&st->raw_lat, 50), samples_pct(&st->raw_lat, 99),
				samples_pct(&st->limit, 50), samples_pct(&st->limit, 99),
				samples_pct(&st->read_lat, 50), samples_pct(&st->read_lat, 99),
				100 * share, of_ideal, stale_s,
				ratio(st->extra_rt, st->reads), ratio(st->extra_leader_rt, st->reads),
				ratio(st->write_extra_rt, st->writes), waits);
	}
	fprintf(f, "\n");
}

void
report_markdown(FILE *f, const RouteConfig *cfg, RunStats *runs, int nruns)
{
	if (cfg->latency_table)
	{
		report_latency_markdown(f, cfg, runs, nruns);
		return;
	}
	fprintf(f, "| strategy | reads/s | follower share | ideal share | share of ideal "
			"| stale reads | read p50 / p99 (ms) | extra round trips per read "
			"(first read after the write; later reads) | waits reached / timed out "
			"| replay lag p50 / p99 (ms)");
	fprintf(f, " |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
	for (int i = 0; i < nruns; i++)
	{
		RunStats   *st = &runs[i];
		double		share = ratio(st->follower_reads, st->reads);
		long		later = st->reads - st->first_reads;
		char		waits[128],
					stale_s[64],
					of_ideal[32],
					lag[128] = "";
		size_t		off = 0;

		format_shares(st, waits, sizeof(waits), stale_s, sizeof(stale_s),
					  of_ideal, sizeof(of_ideal));
		for (int k = 0; k < cfg->nfollowers && off < sizeof(lag); k++)
			off += snprintf(lag + off, sizeof(lag) - off, "%sf%d %.1f / %.1f",
							k ? "; " : "", k + 1, st->lag_p50[k], st->lag_p99[k]);
		fprintf(f, "| %s | %.0f | %.1f %% | %.1f–%.1f %% | %s | %s | %.2f / %.2f "
				"| %.3f (%.2f; %.3f) | %s | %s |\n",
				st->strat.label, st->reads_in_window / st->elapsed_s,
				100 * share, 100 * st->ideal_lo, 100 * st->ideal_hi,
				of_ideal,
				stale_s,
				samples_pct(&st->read_lat, 50), samples_pct(&st->read_lat, 99),
				ratio(st->extra_rt, st->reads),
				ratio(st->first_extra_rt, st->first_reads),
				ratio(st->extra_rt - st->first_extra_rt, later),
				waits, lag);
	}
	fprintf(f, "\n");
}

void
report_tsv(FILE *f, const RouteConfig *cfg, RunStats *st)
{
	long		later = st->reads - st->first_reads;
	double		lag50 = 0,
				lag99 = 0;

	for (int k = 0; k < cfg->nfollowers; k++)
	{
		lag50 = fmax(lag50, st->lag_p50[k]);
		lag99 = fmax(lag99, st->lag_p99[k]);
	}
	fprintf(f, "%s\t%s\t%.1f\t%.5f\t%.5f\t%.5f\t%ld\t%ld\t%.3f\t%.3f\t%.4f\t%.4f\t%.4f"
			"\t%ld\t%ld\t%ld\t%ld\t%.1f\t%ld\t%.1f\t%.1f"
			"\t%.3f\t%.3f\t%.4f\t%.4f\t%.3f\t%.3f\t%ld\t%.3f\t%.3f\n",
			cfg->scenario, st->strat.name,
			st->reads_in_window / st->elapsed_s,
			ratio(st->follower_reads, st->reads), st->ideal_lo, st->ideal_hi,
			st->stale_follower, st->stale_leader,
			samples_pct(&st->read_lat, 50), samples_pct(&st->read_lat, 99),
			ratio(st->extra_rt, st->reads),
			ratio(st->first_extra_rt, st->first_reads),
			ratio(st->extra_rt - st->first_extra_rt, later),
			st->outcomes[0], st->outcomes[1],
			st->outcomes[2] + st->outcomes[3] + st->outcomes[4],
			st->errors + st->missing_tokens + st->ahead,
			st->writes / st->elapsed_s, st->reads, lag50, lag99,
			samples_pct(&st->raw_lat, 50), samples_pct(&st->raw_lat, 99),
			ratio(st->extra_leader_rt, st->reads),
			ratio(st->write_extra_rt, st->writes),
			samples_pct(&st->limit, 50), samples_pct(&st->limit, 99),
			st->outcomes[4], st->rtt_leader,
			cfg->nfollowers ? st->rtt_follower[0] : NAN);
}

static int check_no = 0;

static bool
check(bool ok, bool print, const char *fmt,...) __attribute__((format(printf, 3, 4)));

static bool
check(bool ok, bool print, const char *fmt,...)
{
	va_list		ap;

	check_no++;
	if (!print)
		return ok;
	printf("%s %d - ", ok ? "ok" : "not ok", check_no);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	return ok;
}

/*
 * The consistency checks; returns the number that failed.  Leader-only and
 * the token strategies must never read stale data; nothing may fail.
 */
int
report_checks(const RouteConfig *cfg, RunStats *runs, int nruns, bool print)
{
	int			failed = 0;

	for (int i = 0; i < nruns; i++)
	{
		RunStats   *st = &runs[i];
		const char *n = st->strat.name;
		long		stale = st->stale_follower + st->stale_leader;

		failed += !check(st->writes > 0 && st->reads > 0, print,
						 "%s %s: ran (%ld writes, %ld reads)",
						 cfg->scenario, n, st->writes, st->reads);
		failed += !check(st->errors == 0 && st->missing_tokens == 0 && st->ahead == 0,
						 print, "%s %s: no query errors (%ld), every write reported "
						 "a new token (%ld missing), no value ahead of its write (%ld)",
						 cfg->scenario, n, st->errors, st->missing_tokens, st->ahead);
		failed += !check(st->contradictions == 0, print,
						 "%s %s: no follower served an older value after reporting a "
						 "replay position at or past the write (%ld)",
						 cfg->scenario, n, st->contradictions);
		failed += !check(st->stale_leader == 0, print,
						 "%s %s: no stale read on the leader (%ld)",
						 cfg->scenario, n, st->stale_leader);
		if (strategy_uses_token(&st->strat))
			failed += !check(stale == 0, print,
							 "%s %s: no stale read (%ld of %ld reads, %ld on followers)",
							 cfg->scenario, n, stale, st->reads, st->follower_reads);
		if (cfg->expect_stale && strcmp(cfg->expect_stale, n) == 0)
			failed += !check(stale > 0, print,
							 "%s %s: the checker sees stale reads (%ld of %ld)",
							 cfg->scenario, n, stale, st->reads);
	}
	return failed;
}
