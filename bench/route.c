/*-------------------------------------------------------------------------
 *
 * route.c
 *		The routing benchmark: simulated user sessions against one leader
 *		and K followers, under one lag scenario, for each strategy in turn.
 *
 * Each session has its own connection to the leader (with its own
 * distributed.session_key) and to every follower, and loops: write its row
 * on the leader (UPDATE to the next counter value; the token arrives with
 * the reply as distributed.last_commit), read the row right away, then
 * read it again (reads - 1) more times with exponentially distributed
 * think time between operations.  Every read checks by value that it sees
 * the session's last write: a counter below the last value written is a
 * stale read, one above it would be a checker bug.
 *
 * Strategies decide where each read goes:
 *
 *	leader		the leader
 *	naive		a random follower
 *	time:W		the leader for W ms after the session's write, then a random
 *				follower (Rails' database_selector, django-multidb-router)
 *	check		a follower known to have replayed the token (no extra query),
 *				else SELECT distributed.is_replayed(token) on the follower
 *				known to be furthest ahead, else the leader
 *	wait:T		the same, but CALL distributed.wait_for(token, T) (which
 *				holds no snapshot while it sleeps), else the leader
 *	wait-fn:T	the same with SELECT distributed.wait(token, T), which holds
 *				its query's snapshot while it sleeps
 *	check-pipe, wait-pipe:T
 *				the check (or the CALL) and the read sent together in one
 *				libpq pipeline, so in one round trip; the read is a separate
 *				statement and takes its snapshot after the check or wait has
 *				returned.  No extra round trip when the follower has the
 *				write; when it has not, the follower's answer is thrown away
 *				and the read redone on the leader
 *
 * "Known" is a per-process cache of each follower's highest replay
 * position, fed by distributed.replay_position, which every follower reply
 * carries in ParameterStatus; replay only moves forward on a timeline, so
 * one observation serves every token up to it (--cache conn keeps one per
 * connection instead).
 *
 * Besides the sessions, one side connection per follower samples its
 * replay position every --sample-ms, and when a session routes the first
 * read after its write, the same read is sent to every follower on side
 * connections (shadow reads): whether any of them sees the write is the
 * ideal for that read.  With the replay positions every reply carries, they
 * give the ideal follower share and the replay lag (report.c).  None of
 * them feeds the routing cache.
 *
 * Lag scenarios: background writers doing bulk updates on the leader
 * (natural lag), recovery_min_apply_delay set on some followers with ALTER
 * SYSTEM and a reload, and replay paused for a while in the middle of each
 * strategy's run (a spike).
 *
 *-------------------------------------------------------------------------
 */
#include "distbench.h"

#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

const char *const outcome_names[NOUTCOMES] = {
	"reached", "timeout", "promoted or not in recovery", "unreachable", "error"
};

#define OUTCOME_ERROR (NOUTCOMES - 1)
#define MAX_RESULTS 3
#define FILLER_ROWS 20000
#define SHADOWS_PER_FOLLOWER 4

typedef enum Step
{
	ST_IDLE,
	ST_WRITE,
	ST_CHECK,
	ST_WAIT,
	ST_PIPE,
	ST_READ
} Step;

/* A connection's query in flight and the results gathered so far. */
typedef struct Pending
{
	PGconn	   *conn;			/* NULL when idle */
	int			node;			/* -1 leader, else follower index */
	double		sent;
	PGresult   *res[MAX_RESULTS];
	int			nres;
	int			syncs;			/* pipeline: syncs sent (0: not a pipeline) */
	int			synced;			/* ... and received */
} Pending;

typedef struct Session
{
	int			id;
	PGconn	   *leader;
	PGconn	   *fol[MAX_FOLLOWERS];
	Token		known[MAX_FOLLOWERS];	/* per-connection cache (--cache conn) */
	long		counter;		/* last value written and acknowledged */
	long		writing;		/* value of the write in flight */
	Token		tok;			/* token of the last write */
	double		last_write;		/* when its reply arrived */
	int			reads_left;		/* 0: the next operation is a write */
	bool		first;			/* the current read is the first after a write */
	double		next_at;
	Step		step;
	double		read_start;
	size_t		rec;			/* its entry in reads_log */
	int			extra;			/* round trips spent on the current read */
	Pending		p;
} Session;

/* A sampler, a shadow reader or a background writer. */
typedef struct Aux
{
	PGconn	   *conn;
	int			node;
	double		next_at;		/* sampler: next sample */
	size_t		rec;			/* shadow: the read it shadows */
	long		expect;			/* shadow: the value written */
	Pending		p;
} Aux;

typedef struct Route
{
	RouteConfig *cfg;
	Session    *sessions;
	Aux			samplers[MAX_FOLLOWERS];
	Aux			shadows[MAX_FOLLOWERS][SHADOWS_PER_FOLLOWER];
	Aux		   *bg;
	PGconn	   *ctl_leader;
	PGconn	   *ctl[MAX_FOLLOWERS];
	Token		cache[MAX_FOLLOWERS];	/* the per-process cache */
	RunStats   *st;
	bool		stopping;
	double		end;
	long		bg_chunk;
	int			errors_shown;
} Route;

bool
strategy_parse(const char *spec, Strategy *out)
{
	const char *colon = strchr(spec, ':');
	size_t		len = colon ? (size_t) (colon - spec) : strlen(spec);
	int			ms = colon ? atoi(colon + 1) : 0;

	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", spec);
	out->ms = ms;
#define IS(word) (len == strlen(word) && strncmp(spec, word, len) == 0)
	if (IS("leader") && !colon)
	{
		out->kind = STRAT_LEADER;
		snprintf(out->label, sizeof(out->label), "leader only");
	}
	else if (IS("naive") && !colon)
	{
		out->kind = STRAT_NAIVE;
		snprintf(out->label, sizeof(out->label), "random follower (no pinning)");
	}
	else if (IS("time") && colon && ms >= 0)
	{
		out->kind = STRAT_TIME;
		snprintf(out->label, sizeof(out->label), "time pinning, W = %g s",
				 ms / 1000.0);
	}
	else if (IS("check") && !colon)
	{
		out->kind = STRAT_CHECK;
		snprintf(out->label, sizeof(out->label), "token check");
	}
	else if (IS("wait") && colon && ms >= 0)
	{
		out->kind = STRAT_WAIT;
		snprintf(out->label, sizeof(out->label), "token wait, T = %d ms", ms);
	}
	else if (IS("wait-fn") && colon && ms >= 0)
	{
		out->kind = STRAT_WAIT_FN;
		snprintf(out->label, sizeof(out->label),
				 "token wait, T = %d ms, function form", ms);
	}
	else if (IS("check-pipe") && !colon)
	{
		out->kind = STRAT_CHECK_PIPE;
		snprintf(out->label, sizeof(out->label), "token check, pipelined");
	}
	else if (IS("wait-pipe") && colon && ms >= 0)
	{
		out->kind = STRAT_WAIT_PIPE;
		snprintf(out->label, sizeof(out->label),
				 "token wait, T = %d ms, pipelined", ms);
	}
	else
		return false;
#undef IS
	return true;
}

bool
strategy_uses_token(const Strategy *s)
{
	return s->kind == STRAT_CHECK || s->kind == STRAT_WAIT ||
		s->kind == STRAT_WAIT_FN || s->kind == STRAT_CHECK_PIPE ||
		s->kind == STRAT_WAIT_PIPE;
}

/* ------------------------------------------------------------------------
 * Asynchronous queries
 * ------------------------------------------------------------------------
 */

static void
pending_clear(Pending *p)
{
	for (int i = 0; i < p->nres; i++)
		PQclear(p->res[i]);
	p->nres = 0;
	p->conn = NULL;
}

static void
pending_start(Pending *p, PGconn *conn, int node)
{
	p->conn = conn;
	p->node = node;
	p->nres = 0;
	p->syncs = 0;
	p->synced = 0;
	p->sent = now_ms();
}

/* Queue one prepared statement (in a pipeline, or alone). */
static void
queue_prepared(Pending *p, const char *stmt, int nparams,
			   const char *const *params)
{
	if (!PQsendQueryPrepared(p->conn, stmt, nparams, params, NULL, NULL, 0))
		die("send %s: %s", stmt, PQerrorMessage(p->conn));
}

static void
send_prepared(Pending *p, PGconn *conn, int node, const char *stmt,
			  int nparams, const char *const *params)
{
	pending_start(p, conn, node);
	queue_prepared(p, stmt, nparams, params);
}

static void
pipeline_begin(Pending *p, PGconn *conn, int node)
{
	pending_start(p, conn, node);
	if (!PQenterPipelineMode(conn))
		die("pipeline mode: %s", PQerrorMessage(conn));
}

static void
pipeline_sync(Pending *p)
{
	if (!PQpipelineSync(p->conn))
		die("pipeline sync: %s", PQerrorMessage(p->conn));
	p->syncs++;
}

/*
 * Read what has arrived; true once every result of the query (or of every
 * statement of the pipeline, up to its last sync) is in.
 */
static bool
pending_pump(Pending *p)
{
	if (!PQconsumeInput(p->conn))
		die("connection lost: %s", PQerrorMessage(p->conn));
	while (!PQisBusy(p->conn))
	{
		PGresult   *res = PQgetResult(p->conn);

		if (res == NULL)
		{
			if (p->syncs == 0)
				return true;
			continue;			/* the end of one statement's results */
		}
		if (PQresultStatus(res) == PGRES_PIPELINE_SYNC)
		{
			PQclear(res);
			if (++p->synced == p->syncs)
			{
				if (!PQexitPipelineMode(p->conn))
					die("leaving pipeline mode: %s", PQerrorMessage(p->conn));
				return true;
			}
			continue;
		}
		if (p->nres < MAX_RESULTS)
			p->res[p->nres++] = res;
		else
			PQclear(res);
	}
	return false;
}

static bool
result_ok(const PGresult *res)
{
	ExecStatusType st = PQresultStatus(res);

	return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

/* NULL if results from..nres-1 succeeded, else the first error message. */
static const char *
pending_error(Pending *p, int from)
{
	for (int i = from; i < p->nres; i++)
		if (!result_ok(p->res[i]))
			return PQresultErrorMessage(p->res[i]);
	return p->nres <= from ? "no result" : NULL;
}

/*
 * The outcome of a wait: from the status wait() returns, or from how CALL
 * wait_for() ended (by SQLSTATE, as the README documents them).
 */
static int
wait_outcome(const PGresult *res, bool call)
{
	const char *v;

	if (call)
	{
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		if (PQresultStatus(res) == PGRES_COMMAND_OK)
			return 0;
		if (state == NULL)
			return 4;
		if (strcmp(state, "57014") == 0)
			return 1;
		if (strcmp(state, "55000") == 0)
			return 2;
		if (strcmp(state, "55D01") == 0)
			return 3;
		return 4;
	}
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		return 4;
	v = PQgetvalue(res, 0, 0);
	if (strcmp(v, "reached") == 0)
		return 0;
	if (strcmp(v, "timeout") == 0)
		return 1;
	if (strcmp(v, "promoted") == 0 || strcmp(v, "not_in_recovery") == 0)
		return 2;
	if (strcmp(v, "unreachable") == 0)
		return 3;
	return 4;
}

/* ------------------------------------------------------------------------
 * Observations of follower replay positions
 * ------------------------------------------------------------------------
 */

static void
observe(Route *r, Session *s, int node, double sent, double recv, Token pos)
{
	RunStats   *st = r->st;

	if (pos.tli == 0)
		return;
	GROW(st->obs[node], st->nobs[node], st->capobs[node]);
	st->obs[node][st->nobs[node]++] = (Obs)
	{
		sent, recv, pos
	};
	if (s == NULL)
		return;					/* the sampler does not feed the router */
	if (r->cfg->shared_cache)
		token_raise(&r->cache[node], pos);
	else
		token_raise(&s->known[node], pos);
}

static Token
known_position(Route *r, Session *s, int node)
{
	return r->cfg->shared_cache ? r->cache[node] : s->known[node];
}

/* A random follower known to hold the session's token, or -1. */
static int
known_follower(Route *r, Session *s)
{
	int			cand[MAX_FOLLOWERS];
	int			n = 0;

	for (int f = 0; f < r->cfg->nfollowers; f++)
		if (token_reached(known_position(r, s, f), s->tok))
			cand[n++] = f;
	return n ? cand[rand_int(n)] : -1;
}

/* The follower known to be furthest ahead (ties broken at random). */
static int
best_follower(Route *r, Session *s)
{
	int			best = -1,
				ties = 0;
	Token		top = {0, 0};

	for (int f = 0; f < r->cfg->nfollowers; f++)
	{
		Token		k = known_position(r, s, f);

		if (best < 0 || token_raise(&top, k))
		{
			best = f;
			top = k;
			ties = 1;
		}
		else if (k.tli == top.tli && k.lsn == top.lsn && rand_int(++ties) == 0)
			best = f;
	}
	return best;
}

/* ------------------------------------------------------------------------
 * Sessions
 * ------------------------------------------------------------------------
 */

static void
send_read(Session *s, int node)
{
	char		id[16];
	const char *params[1] = {id};

	snprintf(id, sizeof(id), "%d", s->id);
	s->step = ST_READ;
	send_prepared(&s->p, node < 0 ? s->leader : s->fol[node], node, "rd",
				  1, params);
}

static void
start_write(Session *s)
{
	char		id[16],
				value[24];
	const char *params[2] = {id, value};

	s->writing = s->counter + 1;
	snprintf(id, sizeof(id), "%d", s->id);
	snprintf(value, sizeof(value), "%ld", s->writing);
	s->step = ST_WRITE;
	send_prepared(&s->p, s->leader, -1, "wr", 2, params);
}

/* Check or wait for the token on a follower, alone or with the read. */
static void
send_probe(Route *r, Session *s, int node)
{
	const Strategy *strat = &r->st->strat;
	char		tok[TOKEN_BUFLEN],
				ms[16];
	const char *params[2] = {tok, ms};
	char		sql[256];

	token_format(s->tok, tok, sizeof(tok));
	snprintf(ms, sizeof(ms), "%d", strat->ms);
	switch (strat->kind)
	{
		case STRAT_CHECK:
			s->step = ST_CHECK;
			send_prepared(&s->p, s->fol[node], node, "ck", 1, params);
			break;
		case STRAT_WAIT:
			s->step = ST_WAIT;
			send_prepared(&s->p, s->fol[node], node, "wt", 2, params);
			break;
		case STRAT_CHECK_PIPE:
			s->step = ST_PIPE;
			snprintf(sql, sizeof(sql),
					 "SELECT distributed.is_replayed('%s'); "
					 "SELECT counter FROM distbench_rows WHERE id = %d",
					 tok, s->id);
			send_simple(&s->p, s->fol[node], node, sql);
			break;
		case STRAT_WAIT_PIPE:
			s->step = ST_PIPE;
			snprintf(sql, sizeof(sql),
					 "SELECT distributed.wait('%s', %d); "
					 "SELECT counter FROM distbench_rows WHERE id = %d",
					 tok, strat->ms, s->id);
			send_simple(&s->p, s->fol[node], node, sql);
			break;
		default:
			die("no probe for strategy %s", strat->name);
	}
}

static void
start_read(Route *r, Session *s)
{
	const Strategy *strat = &r->st->strat;
	int			k = r->cfg->nfollowers;
	int			node;

	s->read_start = now_ms();
	s->extra = 0;
	switch (strat->kind)
	{
		case STRAT_LEADER:
			send_read(s, -1);
			break;
		case STRAT_NAIVE:
			send_read(s, rand_int(k));
			break;
		case STRAT_TIME:
			if (s->read_start - s->last_write < strat->ms)
				send_read(s, -1);
			else
				send_read(s, rand_int(k));
			break;
		default:
			node = known_follower(r, s);
			if (node >= 0)
				send_read(s, node);
			else
				send_probe(r, s, best_follower(r, s));
			break;
	}
}

static void
start_op(Route *r, Session *s)
{
	if (s->reads_left == 0)
		start_write(s);
	else
		start_read(r, s);
}

static void
finish_read(Route *r, Session *s, int node, const char *value, double now)
{
	RunStats   *st = r->st;
	long		v = atol(value);

	samples_add(&st->read_lat, now - s->read_start);
	st->reads++;
	if (now <= r->end)
		st->reads_in_window++;
	if (node >= 0)
		st->follower_reads++;
	if (v < s->counter)
	{
		if (node >= 0)
			st->stale_follower++;
		else
			st->stale_leader++;
	}
	else if (v > s->counter)
		st->ahead++;
	st->extra_rt += s->extra;
	if (s->first)
	{
		st->first_reads++;
		st->first_extra_rt += s->extra;
	}
	GROW(st->reads_log, st->nreads_log, st->capreads_log);
	st->reads_log[st->nreads_log++] = (ReadRec)
	{
		s->read_start, s->tok, node >= 0
	};
	s->first = false;
	s->reads_left--;
	s->step = ST_IDLE;
	s->next_at = now + rand_exp(r->cfg->think_ms);
}

static void
session_error(Route *r, Session *s, const char *msg, double now)
{
	r->st->errors++;
	if (r->errors_shown++ < 5)
		note("session %d (%s, step %d): %s", s->id, r->st->strat.name,
			 (int) s->step, msg);
	/* start over with a write */
	s->reads_left = 0;
	s->step = ST_IDLE;
	s->next_at = now + rand_exp(r->cfg->think_ms);
}

/* The query in flight on s has completed: take the next step. */
static void
session_done(Route *r, Session *s)
{
	RunStats   *st = r->st;
	double		now = now_ms();
	Pending    *p = &s->p;
	int			node = p->node;
	const char *err = pending_error(p);
	PGresult   *res0 = p->nres > 0 ? p->res[0] : NULL;

	if (node >= 0)
		observe(r, s, node, p->sent, now,
				db_reported(p->conn, "distributed.replay_position"));
	if (err != NULL)
	{
		if (s->step == ST_WAIT)
			st->outcomes[OUTCOME_ERROR]++;
		session_error(r, s, err, now);
		pending_clear(p);
		return;
	}

	switch (s->step)
	{
		case ST_WRITE:
			{
				Token		t = db_reported(s->leader, "distributed.last_commit");

				if (strcmp(PQcmdTuples(res0), "1") != 0)
				{
					pending_clear(p);
					session_error(r, s, "write updated no row", now);
					return;
				}
				s->counter = s->writing;
				if (t.tli == 0 || (t.tli == s->tok.tli && t.lsn == s->tok.lsn))
					st->missing_tokens++;
				else
					s->tok = t;
				s->last_write = now;
				st->writes++;
				samples_add(&st->write_lat, now - p->sent);
				GROW(st->writes_log, st->nwrites_log, st->capwrites_log);
				st->writes_log[st->nwrites_log++] = (WriteRec)
				{
					now, s->tok
				};
				pending_clear(p);
				s->reads_left = r->cfg->reads;
				s->first = true;
				if (s->reads_left > 0)
					start_read(r, s);
				else
				{
					s->step = ST_IDLE;
					s->next_at = now + rand_exp(r->cfg->think_ms);
				}
				return;
			}
		case ST_CHECK:
			{
				bool		yes = PQgetvalue(res0, 0, 0)[0] == 't';

				st->checks++;
				s->extra++;
				pending_clear(p);
				if (yes)
				{
					st->checks_true++;
					send_read(s, node);
				}
				else
					send_read(s, -1);
				return;
			}
		case ST_WAIT:
			{
				const char *outcome = PQgetvalue(res0, 0, 0);
				int			o;

				for (o = 0; o < OUTCOME_ERROR; o++)
					if (strcmp(outcome, outcome_names[o]) == 0)
						break;
				st->outcomes[o]++;
				samples_add(&st->wait_lat, now - p->sent);
				s->extra++;
				pending_clear(p);
				send_read(s, o == 0 ? node : -1);
				return;
			}
		case ST_PIPE:
			{
				const char *answer;
				bool		yes;

				if (p->nres != 2 || PQntuples(p->res[1]) != 1)
				{
					pending_clear(p);
					session_error(r, s, "pipelined read returned no row", now);
					return;
				}
				answer = PQgetvalue(res0, 0, 0);
				if (r->st->strat.kind == STRAT_WAIT_PIPE)
				{
					int			o;

					for (o = 0; o < OUTCOME_ERROR; o++)
						if (strcmp(answer, outcome_names[o]) == 0)
							break;
					st->outcomes[o]++;
					yes = (o == 0);
				}
				else
				{
					st->checks++;
					yes = answer[0] == 't';
					if (yes)
						st->checks_true++;
				}
				if (yes)
				{
					char		value[24];

					snprintf(value, sizeof(value), "%s",
							 PQgetvalue(p->res[1], 0, 0));
					pending_clear(p);
					finish_read(r, s, node, value, now);
				}
				else
				{
					/* the follower's row is not trusted: ask the leader */
					s->extra++;
					pending_clear(p);
					send_read(s, -1);
				}
				return;
			}
		case ST_READ:
			if (PQntuples(res0) != 1)
			{
				pending_clear(p);
				session_error(r, s, "read returned no row", now);
				return;
			}
			{
				char		value[24];

				snprintf(value, sizeof(value), "%s", PQgetvalue(res0, 0, 0));
				pending_clear(p);
				finish_read(r, s, node, value, now);
			}
			return;
		case ST_IDLE:
			break;
	}
	die("session %d: result in idle state", s->id);
}

/* ------------------------------------------------------------------------
 * Samplers and background writers
 * ------------------------------------------------------------------------
 */

static void
sampler_send(Aux *a)
{
	send_prepared(&a->p, a->conn, a->node, "sp", 0, NULL);
}

static void
sampler_done(Route *r, Aux *a)
{
	double		now = now_ms();
	Token		pos = db_reported(a->conn, "distributed.replay_position");
	Token		val = {0, 0};

	if (pending_error(&a->p) == NULL)
		(void) token_parse(PQgetvalue(a->p.res[0], 0, 0), &val);
	token_raise(&pos, val);
	observe(r, NULL, a->node, a->p.sent, now, pos);
	pending_clear(&a->p);
	a->next_at = now + r->cfg->sample_ms;
}

static void
bg_send(Route *r, Aux *a)
{
	char		lo[16],
				hi[16];
	const char *params[2] = {lo, hi};
	long		first = (r->bg_chunk++ * r->cfg->bg_rows) % FILLER_ROWS;

	snprintf(lo, sizeof(lo), "%ld", first);
	snprintf(hi, sizeof(hi), "%ld", first + r->cfg->bg_rows);
	send_prepared(&a->p, a->conn, -1, "bg", 2, params);
}

static void
bg_done(Route *r, Aux *a)
{
	const char *err = pending_error(&a->p);

	if (err != NULL && r->errors_shown++ < 5)
		note("background writer: %s", err);
	if (err == NULL)
		r->st->bg_writes++;
	pending_clear(&a->p);
}

/* ------------------------------------------------------------------------
 * Lag scenarios and setup
 * ------------------------------------------------------------------------
 */

static void
set_replay_paused(Route *r, bool pause)
{
	for (int f = 0; f < r->cfg->nfollowers; f++)
		if (r->cfg->pause_mask & (1u << f))
			db_exec(r->ctl[f], pause ? "SELECT pg_wal_replay_pause()"
					: "SELECT pg_wal_replay_resume()");
}

static void
set_apply_delay(Route *r, int ms)
{
	char		sql[128];

	for (int f = 0; f < r->cfg->nfollowers; f++)
	{
		if (!(r->cfg->delay_mask & (1u << f)))
			continue;
		if (ms > 0)
			snprintf(sql, sizeof(sql),
					 "ALTER SYSTEM SET recovery_min_apply_delay = '%dms'", ms);
		else
			snprintf(sql, sizeof(sql),
					 "ALTER SYSTEM RESET recovery_min_apply_delay");
		db_exec(r->ctl[f], sql);
		db_exec(r->ctl[f], "SELECT pg_reload_conf()");
	}
	sleep_ms(300);				/* let the startup process reload */
}

/*
 * Block until every follower has replayed all the leader has flushed (core
 * functions only: this also runs before the extension has reached them).
 */
static void
catch_up(Route *r)
{
	char	   *pos = db_value(r->ctl_leader, "SELECT pg_current_wal_flush_lsn()");
	char		sql[128];
	double		give_up = now_ms() + 60000;

	snprintf(sql, sizeof(sql),
			 "SELECT pg_last_wal_replay_lsn() >= '%s'::pg_lsn", pos);
	for (int f = 0; f < r->cfg->nfollowers; f++)
	{
		for (;;)
		{
			char	   *v = db_value(r->ctl[f], sql);
			bool		done = v != NULL && v[0] == 't';

			free(v);
			if (done)
				break;
			if (now_ms() > give_up)
				die("follower %d did not replay up to %s within 60 s", f + 1, pos);
			sleep_ms(1);
		}
	}
	free(pos);
}

static void
setup(Route *r)
{
	RouteConfig *cfg = r->cfg;
	char		sql[512];
	PGresult   *res;

	r->ctl_leader = db_connect(cfg->leader, "the leader");
	db_exec(r->ctl_leader, "SET client_min_messages = warning");
	db_exec(r->ctl_leader, "CREATE EXTENSION IF NOT EXISTS distributed");
	db_exec(r->ctl_leader,
			"CREATE TABLE IF NOT EXISTS distbench_rows "
			"(id int PRIMARY KEY, counter bigint NOT NULL) WITH (fillfactor = 50)");
	snprintf(sql, sizeof(sql),
			 "INSERT INTO distbench_rows SELECT g, 0 FROM generate_series(0, %d) g "
			 "ON CONFLICT DO NOTHING", cfg->sessions - 1);
	db_exec(r->ctl_leader, sql);
	if (cfg->bg_writers > 0)
	{
		db_exec(r->ctl_leader,
				"CREATE TABLE IF NOT EXISTS distbench_filler "
				"(id int PRIMARY KEY, v bigint NOT NULL, pad text NOT NULL) "
				"WITH (fillfactor = 50)");
		snprintf(sql, sizeof(sql),
				 "INSERT INTO distbench_filler SELECT g, 0, repeat('x', 200) "
				 "FROM generate_series(0, %d) g ON CONFLICT DO NOTHING",
				 FILLER_ROWS - 1);
		db_exec(r->ctl_leader, sql);
	}
	for (int f = 0; f < cfg->nfollowers; f++)
		r->ctl[f] = db_connect(cfg->followers[f], "a follower");
	catch_up(r);

	r->sessions = calloc(cfg->sessions, sizeof(Session));
	snprintf(sql, sizeof(sql),
			 "SELECT id, counter FROM distbench_rows WHERE id < %d ORDER BY id",
			 cfg->sessions);
	res = PQexec(r->ctl_leader, sql);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != cfg->sessions)
		die("reading the session rows: %s", PQerrorMessage(r->ctl_leader));
	for (int i = 0; i < cfg->sessions; i++)
	{
		Session    *s = &r->sessions[i];

		s->id = i;
		s->counter = atol(PQgetvalue(res, i, 1));
		s->leader = db_connect(cfg->leader, "the leader");
		snprintf(sql, sizeof(sql), "SET distributed.session_key = 'distbench-%d'", i);
		db_exec(s->leader, sql);
		db_prepare(s->leader, "wr", "UPDATE distbench_rows SET counter = $2 WHERE id = $1");
		db_prepare(s->leader, "rd", "SELECT counter FROM distbench_rows WHERE id = $1");
		for (int f = 0; f < cfg->nfollowers; f++)
		{
			s->fol[f] = db_connect(cfg->followers[f], "a follower");
			db_prepare(s->fol[f], "rd", "SELECT counter FROM distbench_rows WHERE id = $1");
			db_prepare(s->fol[f], "ck", "SELECT distributed.is_replayed($1::text)");
			db_prepare(s->fol[f], "wt", "SELECT distributed.wait($1::text, $2::int4)");
		}
	}
	PQclear(res);

	for (int f = 0; f < cfg->nfollowers; f++)
	{
		Aux		   *a = &r->samplers[f];

		a->conn = db_connect(cfg->followers[f], "a follower");
		a->node = f;
		db_prepare(a->conn, "sp", "SELECT distributed.replay_position()");
	}
	r->bg = calloc(cfg->bg_writers > 0 ? cfg->bg_writers : 1, sizeof(Aux));
	for (int i = 0; i < cfg->bg_writers; i++)
	{
		r->bg[i].conn = db_connect(cfg->leader, "the leader");
		r->bg[i].node = -1;
		db_prepare(r->bg[i].conn, "bg",
				   "UPDATE distbench_filler SET v = v + 1 WHERE id >= $1 AND id < $2");
	}
}

/* ------------------------------------------------------------------------
 * One strategy's run
 * ------------------------------------------------------------------------
 */

typedef struct Watched
{
	Pending    *p;
	Session    *s;				/* the session, or NULL */
	Aux		   *a;				/* the sampler or writer, or NULL */
	bool		sampler;
} Watched;

static void
run_strategy(Route *r, RunStats *st)
{
	RouteConfig *cfg = r->cfg;
	int			maxfds = cfg->sessions + cfg->nfollowers + cfg->bg_writers;
	struct pollfd *fds = calloc(maxfds, sizeof(struct pollfd));
	Watched    *who = calloc(maxfds, sizeof(Watched));
	double		start = now_ms();
	double		pause_at = INFINITY,
				resume_at = INFINITY;
	bool		paused = false;

	r->st = st;
	r->stopping = false;
	r->end = start + cfg->duration_s * 1000;
	r->errors_shown = 0;
	if (cfg->pause_len_s > 0)
	{
		pause_at = start + cfg->pause_at_s * 1000;
		resume_at = pause_at + cfg->pause_len_s * 1000;
	}
	for (int i = 0; i < cfg->sessions; i++)
	{
		Session    *s = &r->sessions[i];

		s->reads_left = 0;
		s->step = ST_IDLE;
		s->next_at = start + rand_unit() * cfg->think_ms;
	}
	for (int f = 0; f < cfg->nfollowers; f++)
		r->samplers[f].next_at = start;

	for (;;)
	{
		double		now = now_ms();
		double		wake = r->end;
		int			nfds = 0;
		struct timespec ts;

		if (!r->stopping && now >= r->end)
			r->stopping = true;
		if (!paused && now >= pause_at && !r->stopping)
		{
			set_replay_paused(r, true);
			paused = true;
			pause_at = INFINITY;
		}
		if (paused && (now >= resume_at || r->stopping))
		{
			set_replay_paused(r, false);
			paused = false;
			resume_at = INFINITY;
		}
		if (!r->stopping)
			wake = fmin(wake, fmin(pause_at, resume_at));

		for (int i = 0; i < cfg->sessions; i++)
		{
			Session    *s = &r->sessions[i];

			if (s->p.conn == NULL && !r->stopping)
			{
				if (s->next_at <= now)
					start_op(r, s);
				else
					wake = fmin(wake, s->next_at);
			}
			if (s->p.conn != NULL)
			{
				fds[nfds] = (struct pollfd) {PQsocket(s->p.conn), POLLIN, 0};
				who[nfds++] = (Watched) {&s->p, s, NULL, false};
			}
		}
		for (int f = 0; f < cfg->nfollowers; f++)
		{
			Aux		   *a = &r->samplers[f];

			if (a->p.conn == NULL && !r->stopping)
			{
				if (a->next_at <= now)
					sampler_send(a);
				else
					wake = fmin(wake, a->next_at);
			}
			if (a->p.conn != NULL)
			{
				fds[nfds] = (struct pollfd) {PQsocket(a->conn), POLLIN, 0};
				who[nfds++] = (Watched) {&a->p, NULL, a, true};
			}
		}
		for (int i = 0; i < cfg->bg_writers; i++)
		{
			Aux		   *a = &r->bg[i];

			if (a->p.conn == NULL && !r->stopping)
				bg_send(r, a);
			if (a->p.conn != NULL)
			{
				fds[nfds] = (struct pollfd) {PQsocket(a->conn), POLLIN, 0};
				who[nfds++] = (Watched) {&a->p, NULL, a, false};
			}
		}
		if (r->stopping && nfds == 0)
			break;

		now = now_ms();
		wake = fmax(0, fmin(wake - now, 100));
		ts.tv_sec = 0;
		ts.tv_nsec = (long) (wake * 1e6);
		if (ppoll(fds, nfds, &ts, NULL) < 0)
			continue;
		for (int i = 0; i < nfds; i++)
		{
			if (fds[i].revents == 0 || !pending_pump(who[i].p))
				continue;
			if (who[i].s)
				session_done(r, who[i].s);
			else if (who[i].sampler)
				sampler_done(r, who[i].a);
			else
				bg_done(r, who[i].a);
		}
	}
	st->elapsed_s = (r->end - start) / 1000.0;
	free(fds);
	free(who);
}

int
route_main(RouteConfig *cfg)
{
	Route		r;
	RunStats   *runs = calloc(cfg->nstrategies, sizeof(RunStats));
	int			failures;

	memset(&r, 0, sizeof(r));
	r.cfg = cfg;
	note("%s: setting up %d sessions, %d followers", cfg->scenario,
		 cfg->sessions, cfg->nfollowers);
	setup(&r);
	if (cfg->delay_ms > 0)
		set_apply_delay(&r, cfg->delay_ms);

	for (int i = 0; i < cfg->nstrategies; i++)
	{
		RunStats   *st = &runs[i];

		st->strat = cfg->strategies[i];
		catch_up(&r);
		run_strategy(&r, st);
		report_compute(st, cfg->nfollowers);
		report_progress(st);
	}

	if (cfg->delay_ms > 0)
		set_apply_delay(&r, 0);
	catch_up(&r);

	if (cfg->markdown)
	{
		FILE	   *f = strcmp(cfg->markdown, "-") == 0 ? stdout : fopen(cfg->markdown, "a");

		if (f == NULL)
			die("cannot open %s", cfg->markdown);
		report_markdown(f, cfg, runs, cfg->nstrategies);
		if (f != stdout)
			fclose(f);
	}
	if (cfg->tsv)
	{
		FILE	   *f = fopen(cfg->tsv, "a");

		if (f == NULL)
			die("cannot open %s", cfg->tsv);
		for (int i = 0; i < cfg->nstrategies; i++)
			report_tsv(f, cfg, &runs[i]);
		fclose(f);
	}
	failures = report_checks(cfg, runs, cfg->nstrategies, cfg->checks);

	for (int i = 0; i < cfg->sessions; i++)
	{
		PQfinish(r.sessions[i].leader);
		for (int f = 0; f < cfg->nfollowers; f++)
			PQfinish(r.sessions[i].fol[f]);
	}
	for (int f = 0; f < cfg->nfollowers; f++)
	{
		PQfinish(r.samplers[f].conn);
		PQfinish(r.ctl[f]);
	}
	for (int i = 0; i < cfg->bg_writers; i++)
		PQfinish(r.bg[i].conn);
	PQfinish(r.ctl_leader);
	return failures ? 1 : 0;
}
