/*-------------------------------------------------------------------------
 *
 * distbench.h
 *		Shared declarations of distbench, the routing benchmark and
 *		consistency checker of the distributed extension.
 *
 * distbench is a libpq client.  One thread drives every simulated user
 * session through libpq's asynchronous API (PQsendQuery*, PQconsumeInput,
 * PQisBusy) and poll(), so that hundreds of sessions need no threads and
 * every timestamp comes from one monotonic clock.
 *
 *	distbench.c	command line, dispatch
 *	route.c		the routing benchmark: sessions, strategies, lag scenarios
 *	report.c	metrics: ideal follower share, replay lag, tables, checks
 *	micro.c		wake-up latency of waiters, CPU of idle waiters
 *	util.c		clock, tokens, samples, connections
 *
 *-------------------------------------------------------------------------
 */
#ifndef DISTBENCH_H
#define DISTBENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <libpq-fe.h>

#define MAX_FOLLOWERS 8
#define MAX_STRATEGIES 16
#define TOKEN_BUFLEN 32

/* A position "<timeline>:<lsn>"; tli 0 means "none yet". */
typedef struct Token
{
	uint32_t	tli;
	uint64_t	lsn;
} Token;

/* A growable array of doubles, for percentiles. */
typedef struct Samples
{
	double	   *v;
	size_t		n;
	size_t		cap;
	bool		sorted;
} Samples;

/* ---- util.c ---- */
extern double now_ms(void);
extern void sleep_ms(double ms);
extern void die(const char *fmt,...) __attribute__((format(printf, 1, 2), noreturn));
extern void note(const char *fmt,...) __attribute__((format(printf, 1, 2)));
extern void *xrealloc(void *p, size_t size);
#define GROW(arr, n, cap) \
	do { \
		if ((n) >= (cap)) \
		{ \
			(cap) = (cap) ? (cap) * 2 : 1024; \
			(arr) = xrealloc((arr), (cap) * sizeof(*(arr))); \
		} \
	} while (0)

extern bool token_parse(const char *s, Token *out);
extern void token_format(Token t, char *buf, size_t len);
extern bool token_reached(Token pos, Token tok);
extern bool token_raise(Token *pos, Token seen);

extern void samples_add(Samples *s, double x);
extern double samples_pct(Samples *s, double p);
extern double samples_mean(const Samples *s);
extern void samples_reset(Samples *s);

extern void rand_seed(uint64_t seed);
extern double rand_unit(void);
extern int	rand_int(int n);
extern double rand_exp(double mean);

extern PGconn *db_connect(const char *conninfo, const char *what);
extern void db_exec(PGconn *conn, const char *sql);
extern char *db_value(PGconn *conn, const char *sql);
extern void db_prepare(PGconn *conn, const char *name, const char *sql);
extern Token db_reported(PGconn *conn, const char *param);

/* ---- route.c ---- */

typedef enum StrategyKind
{
	STRAT_LEADER,				/* every read on the leader */
	STRAT_NAIVE,				/* a random follower, no pinning */
	STRAT_TIME,					/* the leader for W ms after a write */
	STRAT_CHECK,				/* a follower known or checked to hold the token */
	STRAT_WAIT,					/* ... or waited on for up to T ms (CALL wait_for) */
	STRAT_WAIT_FN,				/* the same with SELECT distributed.wait() */
	STRAT_CHECK_PIPE,			/* check and read sent together */
	STRAT_WAIT_PIPE,			/* wait and read sent together */
	/* the latency scenario: the one-message wait, and the anchors */
	STRAT_WAIT_ONE,				/* CALL wait_for and the read in one query */
	STRAT_GITLAB,				/* stick to the leader, probe replicas */
	STRAT_MAXSCALE,				/* leader position before every read, wait */
	STRAT_WAITFOR				/* LSN after the commit, wait, then read */
} StrategyKind;

typedef struct Strategy
{
	StrategyKind kind;
	int			ms;				/* the window W or the wait T */
	char		name[48];		/* as given on the command line */
	char		label[80];		/* for the tables */
} Strategy;

extern bool strategy_parse(const char *spec, Strategy *out);
extern bool strategy_uses_token(const Strategy *s);

/*
 * Wait outcomes: reached, timeout, promoted or not in recovery, unreachable,
 * any other error.
 */
#define NOUTCOMES 5
extern const char *const outcome_names[NOUTCOMES];

/* One observation of a follower's replay position, from any reply. */
typedef struct Obs
{
	double		sent;			/* query sent (ms) */
	double		recv;			/* reply complete (ms) */
	Token		pos;			/* replayed at some instant in [sent, recv] */
} Obs;

/* One read, for the ideal share afterwards. */
typedef struct ReadRec
{
	double		t;				/* routing decision made (ms) */
	Token		tok;			/* the session's last write */
	bool		done;			/* completed (not abandoned on an error) */
	bool		follower;		/* served by a follower */
	bool		stale;			/* and saw an older value */
	int8_t		node;			/* the follower that served it, or -1 */
	bool		shadow_fresh;	/* a shadow read saw the write */
	uint8_t		shadow_stale;	/* followers whose shadow read did not (bits) */
	uint8_t		shadow_sent;	/* shadow reads sent (one per follower) */
	uint8_t		shadow_done;	/* ... and answered */
} ReadRec;

/* One write, for the replay lag afterwards. */
typedef struct WriteRec
{
	double		t;				/* reply with the token received (ms) */
	Token		tok;
} WriteRec;

typedef struct RunStats
{
	Strategy	strat;
	double		elapsed_s;
	long		writes;
	long		reads;
	long		reads_in_window;	/* completed within the run's duration */
	long		follower_reads;
	long		stale_follower;
	long		stale_leader;
	long		ahead;			/* a value above the last write: a checker bug */
	long		errors;
	long		missing_tokens; /* write whose reply carried no new token */
	long		extra_rt;		/* round trips beyond the read itself */
	long		first_reads;	/* reads right after the session's write */
	long		first_extra_rt;
	long		checks;
	long		checks_true;
	long		outcomes[NOUTCOMES];
	long		bg_writes;
	long		shadow_skipped; /* first reads without a full set of shadows */
	long		contradictions; /* stale after a reported position showed the write */
	Samples		read_lat;
	Samples		write_lat;
	Samples		wait_lat;
	ReadRec    *reads_log;
	size_t		nreads_log,
				capreads_log;
	WriteRec   *writes_log;
	size_t		nwrites_log,
				capwrites_log;
	Obs		   *obs[MAX_FOLLOWERS];
	size_t		nobs[MAX_FOLLOWERS],
				capobs[MAX_FOLLOWERS];
	/* filled in by report.c */
	double		ideal_lo;
	double		ideal_hi;
	double		ideal_exact;	/* share of reads decided by shadow reads */
	double		lag_p50[MAX_FOLLOWERS];
	double		lag_p99[MAX_FOLLOWERS];
	/* the latency scenario */
	long		extra_leader_rt;	/* those of extra_rt spent on the leader */
	long		write_extra_rt; /* leader round trips after a write's commit */
	Samples		raw_lat;		/* write's reply to its first read's value */
	Samples		limit;			/* per write: replay lag + follower round trip */
	double		rtt_leader;		/* measured round trip (SELECT 1), p50 */
	double		rtt_follower[MAX_FOLLOWERS];
} RunStats;

typedef struct RouteConfig
{
	const char *leader;
	const char *followers[MAX_FOLLOWERS];
	int			nfollowers;
	Strategy	strategies[MAX_STRATEGIES];
	int			nstrategies;
	int			sessions;
	int			reads;			/* reads after each write */
	double		think_ms;		/* mean think time between operations */
	double		duration_s;		/* per strategy */
	double		sample_ms;		/* replay-position sampling interval */
	bool		shadow;			/* shadow reads for the first read after a write */
	int			bg_writers;		/* connections writing bulk on the leader */
	int			bg_rows;		/* rows per bulk statement */
	int			delay_ms;		/* recovery_min_apply_delay */
	unsigned	delay_mask;		/* on these followers (bit i = follower i) */
	double		pause_at_s;		/* replay paused at this offset ... */
	double		pause_len_s;	/* ... for this long (0 = never) */
	unsigned	pause_mask;
	bool		shared_cache;	/* one replay-position cache per process */
	double		refresh_ms;		/* probe a follower not heard from for this long */
	const char *scenario;		/* name, for the tables */
	const char *markdown;		/* append the scenario's table here */
	const char *tsv;			/* append one line per strategy here */
	bool		checks;			/* print ok / not ok lines */
	const char *expect_stale;	/* strategy expected to read stale data */
	bool		latency_table;	/* the latency scenario's table */
	const char *raw_tsv;		/* append read-after-write latencies here */
} RouteConfig;

extern int	route_main(RouteConfig *cfg);

/* ---- report.c ---- */
extern void report_compute(RunStats *st, int nfollowers);
extern void report_progress(const RunStats *st);
extern void report_markdown(FILE *f, const RouteConfig *cfg,
							RunStats *runs, int nruns);
extern void report_tsv(FILE *f, const RouteConfig *cfg, RunStats *st);
extern int	report_checks(const RouteConfig *cfg, RunStats *runs, int nruns,
						  bool print);

/* ---- micro.c ---- */
typedef struct MicroConfig
{
	const char *leader;
	const char *follower;
	int			rounds_one;		/* rounds with a single waiter */
	int			rounds_many;	/* rounds with many waiters */
	int			waiters;		/* how many is many */
	double		cpu_s;			/* CPU sampling period */
	bool		floor;			/* PostgreSQL's own wake-up: an advisory lock */
	const char *pids;			/* write the waiters' backend pids here */
	const char *markdown;
	const char *tsv;
} MicroConfig;

extern int	micro_main(MicroConfig *cfg);

#endif							/* DISTBENCH_H */
