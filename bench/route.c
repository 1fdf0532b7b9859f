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
 *				known to be furthest ahead (or one not heard from for
 *				--refresh-ms), else the leader
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
 *	wait-one:T	CALL distributed.wait_for(token, T) and the read in one
 *				simple-query message ("CALL ...; SELECT ..."), the form a
 *				driver without pipelining can send; on a timeout (or any
 *				error of the CALL, which skips the SELECT) the read goes to
 *				the leader
 *
 * Anchors, for the latency scenario (no extension on the client's path
 * except the bare-LSN wait that stands in for PostgreSQL 19's WAIT FOR):
 *
 *	gitlab		GitLab's load balancer: after a write, the session reads
 *				the leader's pg_current_wal_insert_lsn() (one more leader
 *				round trip) and sticks to the leader; each read while stuck
 *				asks replicas in random order whether pg_last_wal_replay_lsn()
 *				has reached it, reads on the first that has (and unsticks),
 *				else on the leader
 *	maxscale:T	MaxScale's causal_reads = universal: before every read, ask
 *				the leader for its position (pg_current_wal_flush_lsn()), then
 *				wait for it on a random follower and read, both in one
 *				pipeline; on a timeout the read goes to the leader
 *	waitfor:T	a router built on PostgreSQL 19's WAIT FOR LSN: after the
 *				commit, ask the leader for pg_current_wal_insert_lsn(); before
 *				a read on a random follower not yet seen to reach it, wait
 *				(CALL distributed.wait_for(lsn, T), the extension's bare-LSN
 *				form), then read; on a timeout, the leader
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
#include "route.h"

#include <stdlib.h>
#include <string.h>

const char *const outcome_names[NOUTCOMES] = {
	"reached", "timeout", "promoted or not in recovery", "unreachable", "error"
};

/*
 * The strategies by name: whether the name takes ":ms", and the label's
 * format, which prints the milliseconds scaled by "scale" (time pinning is
 * labelled in seconds).
 */
static const struct
{
	const char *word;
	StrategyKind kind;
	bool		takes_ms;
	double		scale;
	const char *label;
}			strategies[] = {
	{"leader", STRAT_LEADER, false, 1, "leader only"},
	{"naive", STRAT_NAIVE, false, 1, "random follower (no pinning)"},
	{"time", STRAT_TIME, true, 1000, "time pinning, W = %g s"},
	{"check", STRAT_CHECK, false, 1, "token check"},
	{"wait", STRAT_WAIT, true, 1, "token wait, T = %g ms"},
	{"wait-fn", STRAT_WAIT_FN, true, 1, "token wait, T = %g ms, function form"},
	{"check-pipe", STRAT_CHECK_PIPE, false, 1, "token check, pipelined"},
	{"wait-pipe", STRAT_WAIT_PIPE, true, 1, "token wait, T = %g ms, pipelined"},
	{"wait-one", STRAT_WAIT_ONE, true, 1, "token wait, T = %g ms, one message"},
	{"gitlab", STRAT_GITLAB, false, 1, "GitLab-style (stick, probe replicas)"},
	{"maxscale", STRAT_MAXSCALE, true, 1, "MaxScale-universal-style, T = %g ms"},
	{"waitfor", STRAT_WAITFOR, true, 1, "WAIT FOR-style, T = %g ms"},
};

bool
strategy_parse(const char *spec, Strategy *out)
{
	const char *colon = strchr(spec, ':');
	size_t		len = colon ? (size_t) (colon - spec) : strlen(spec);
	int			ms = colon ? atoi(colon + 1) : 0;

	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", spec);
	out->ms = ms;
	for (size_t i = 0; i < sizeof(strategies) / sizeof(strategies[0]); i++)
	{
		if (len != strlen(strategies[i].word) ||
			strncmp(spec, strategies[i].word, len) != 0)
			continue;
		if (strategies[i].takes_ms != (colon != NULL) || ms < 0)
			return false;
		out->kind = strategies[i].kind;
		snprintf(out->label, sizeof(out->label), strategies[i].label,
				 ms / strategies[i].scale);
		return true;
	}
	return false;
}

bool
strategy_uses_token(const Strategy *s)
{
	return s->kind == STRAT_CHECK || s->kind == STRAT_WAIT ||
		s->kind == STRAT_WAIT_FN || s->kind == STRAT_CHECK_PIPE ||
		s->kind == STRAT_WAIT_PIPE || s->kind == STRAT_WAIT_ONE ||
		s->kind == STRAT_GITLAB || s->kind == STRAT_MAXSCALE ||
		s->kind == STRAT_WAITFOR;
}

/* Strategies whose waits end in a CALL's error rather than a status. */
static bool
strategy_waits_by_call(const Strategy *s)
{
	return s->kind == STRAT_WAIT || s->kind == STRAT_WAIT_PIPE ||
		s->kind == STRAT_WAIT_ONE || s->kind == STRAT_MAXSCALE ||
		s->kind == STRAT_WAITFOR;
}

/* A pg_lsn's text, "X/Y", as a number (0 if it is not one). */
static uint64_t
lsn_parse(const char *v)
{
	unsigned int hi,
				lo;

	if (sscanf(v, "%X/%X", &hi, &lo) != 2)
		return 0;
	return ((uint64_t) hi << 32) | lo;
}

static void
lsn_format(uint64_t lsn, char *buf, size_t len)
{
	snprintf(buf, len, "%X/%X", (unsigned int) (lsn >> 32), (unsigned int) lsn);
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
	{
		token_raise(&r->cache[node], pos);
		r->cache_at[node] = recv;
	}
	else
	{
		token_raise(&s->known[node], pos);
		s->known_at[node] = recv;
	}
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

static double
known_at(Route *r, Session *s, int node)
{
	return r->cfg->shared_cache ? r->cache_at[node] : s->known_at[node];
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

/*
 * Where to check or wait: the follower known to be furthest ahead, unless
 * one has not been heard from for --refresh-ms.  Knowledge comes only from
 * replies, so without that rule a follower that once fell behind (a pause,
 * a conflict) would never be read from again, and never be seen to catch
 * up.
 */
static int
probe_target(Route *r, Session *s)
{
	double		now = now_ms();
	int			oldest = -1;

	for (int f = 0; f < r->cfg->nfollowers; f++)
		if (now - known_at(r, s, f) > r->cfg->refresh_ms &&
			(oldest < 0 || known_at(r, s, f) < known_at(r, s, oldest)))
			oldest = f;
	return oldest >= 0 ? oldest : best_follower(r, s);
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
				ms[16],
				id[16];
	const char *params[2] = {tok, ms};
	const char *rd_params[1] = {id};

	token_format(s->tok, tok, sizeof(tok));
	snprintf(ms, sizeof(ms), "%d", strat->ms);
	snprintf(id, sizeof(id), "%d", s->id);
	switch (strat->kind)
	{
		case STRAT_CHECK:
			s->step = ST_CHECK;
			send_prepared(&s->p, s->fol[node], node, "ck", 1, params);
			break;
		case STRAT_WAIT:
			s->step = ST_WAIT;
			send_prepared(&s->p, s->fol[node], node, "wf", 2, params);
			break;
		case STRAT_WAIT_FN:
			s->step = ST_WAIT;
			send_prepared(&s->p, s->fol[node], node, "wt", 2, params);
			break;
		case STRAT_CHECK_PIPE:
			/* one transaction, two statements: two snapshots, in order */
			s->step = ST_PIPE;
			pipeline_begin(&s->p, s->fol[node], node);
			queue_prepared(&s->p, "ck", 1, params);
			queue_prepared(&s->p, "rd", 1, rd_params);
			pipeline_sync(&s->p);
			break;
		case STRAT_WAIT_PIPE:
			/* CALL must run outside a transaction block: a sync of its own */
			s->step = ST_PIPE;
			pipeline_begin(&s->p, s->fol[node], node);
			queue_prepared(&s->p, "wf", 2, params);
			pipeline_sync(&s->p);
			queue_prepared(&s->p, "rd", 1, rd_params);
			pipeline_sync(&s->p);
			break;
		default:
			die("no probe for strategy %s", strat->name);
	}
}

/* wait-one: the CALL and the read as one simple-query message. */
static void
send_wait_one(Route *r, Session *s, int node)
{
	char		tok[TOKEN_BUFLEN],
				sql[200];

	token_format(s->tok, tok, sizeof(tok));
	snprintf(sql, sizeof(sql),
			 "CALL distributed.wait_for('%s', %d); "
			 "SELECT counter FROM distbench_rows WHERE id = %d",
			 tok, r->st->strat.ms, s->id);
	s->step = ST_MULTI;
	pending_start(&s->p, s->fol[node], node);
	if (!PQsendQuery(s->p.conn, sql))
		die("send: %s", PQerrorMessage(s->p.conn));
}

/* A question to the leader about its WAL position (an extra round trip). */
static void
send_leader_position(Session *s, Step step, const char *stmt)
{
	s->step = step;
	send_prepared(&s->p, s->leader, -1, stmt, 0, NULL);
}

/* gitlab: ask the next replica not yet tried; the leader after the last. */
static void
gitlab_next(Route *r, Session *s)
{
	int			cand[MAX_FOLLOWERS];
	int			n = 0,
				node;
	char		lsn[32];
	const char *params[1] = {lsn};

	for (int f = 0; f < r->cfg->nfollowers; f++)
		if (!(s->tried & (1u << f)))
			cand[n++] = f;
	if (n == 0)
	{
		send_read(s, -1);
		return;
	}
	node = cand[rand_int(n)];
	s->tried |= 1u << node;
	lsn_format(s->lsn, lsn, sizeof(lsn));
	s->step = ST_PROBE;
	send_prepared(&s->p, s->fol[node], node, "gp", 1, params);
}

/* maxscale: wait for the leader's position on a follower, and read there. */
static void
maxscale_wait_read(Route *r, Session *s)
{
	int			node = rand_int(r->cfg->nfollowers);
	char		lsn[32],
				ms[16],
				id[16];
	const char *params[2] = {lsn, ms};
	const char *rd_params[1] = {id};

	lsn_format(s->lsn, lsn, sizeof(lsn));
	snprintf(ms, sizeof(ms), "%d", r->st->strat.ms);
	snprintf(id, sizeof(id), "%d", s->id);
	s->step = ST_PIPE;
	pipeline_begin(&s->p, s->fol[node], node);
	queue_prepared(&s->p, "wl", 2, params);
	pipeline_sync(&s->p);
	queue_prepared(&s->p, "rd", 1, rd_params);
	pipeline_sync(&s->p);
}

/* waitfor: read on a follower, after a wait unless it was seen to get there. */
static void
waitfor_read(Route *r, Session *s)
{
	int			node = rand_int(r->cfg->nfollowers);
	char		lsn[32],
				ms[16];
	const char *params[2] = {lsn, ms};

	if (s->confirmed[node] >= s->lsn)
	{
		send_read(s, node);
		return;
	}
	lsn_format(s->lsn, lsn, sizeof(lsn));
	snprintf(ms, sizeof(ms), "%d", r->st->strat.ms);
	s->step = ST_WAIT;
	send_prepared(&s->p, s->fol[node], node, "wl", 2, params);
}

/*
 * The first read after a write: send the same read to every follower on a
 * free shadow connection, to learn whether any of them holds the write now.
 */
static void
send_shadows(Route *r, Session *s)
{
	RunStats   *st = r->st;
	ReadRec    *rec = &st->reads_log[s->rec];
	char		id[16];
	const char *params[1] = {id};

	snprintf(id, sizeof(id), "%d", s->id);
	for (int f = 0; f < r->cfg->nfollowers; f++)
	{
		for (int i = 0; i < SHADOWS_PER_FOLLOWER; i++)
		{
			Aux		   *a = &r->shadows[f][i];

			if (a->p.conn != NULL)
				continue;
			a->rec = s->rec;
			a->expect = s->counter;
			send_prepared(&a->p, a->conn, f, "rd", 1, params);
			rec->shadow_sent++;
			break;
		}
	}
	if (rec->shadow_sent < r->cfg->nfollowers)
		st->shadow_skipped++;
}

static void
start_read(Route *r, Session *s)
{
	RunStats   *st = r->st;
	const Strategy *strat = &st->strat;
	int			k = r->cfg->nfollowers;
	int			node;

	s->read_start = now_ms();
	s->extra = 0;
	s->extra_leader = 0;
	GROW(st->reads_log, st->nreads_log, st->capreads_log);
	s->rec = st->nreads_log++;
	st->reads_log[s->rec] = (ReadRec)
	{
		.t = s->read_start, .tok = s->tok
	};
	if (s->first && r->cfg->shadow)
		send_shadows(r, s);

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
		case STRAT_GITLAB:
			if (s->stuck)
			{
				s->tried = 0;
				gitlab_next(r, s);
			}
			else
				send_read(s, rand_int(k));
			break;
		case STRAT_MAXSCALE:
			s->extra++;
			s->extra_leader++;
			send_leader_position(s, ST_POS, "fl");
			break;
		case STRAT_WAITFOR:
			waitfor_read(r, s);
			break;
		case STRAT_WAIT_ONE:
			node = known_follower(r, s);
			if (node >= 0)
				send_read(s, node);
			else
				send_wait_one(r, s, probe_target(r, s));
			break;
		default:
			node = known_follower(r, s);
			if (node >= 0)
				send_read(s, node);
			else
				send_probe(r, s, probe_target(r, s));
			break;
	}
}

void
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
	st->extra_leader_rt += s->extra_leader;
	if (s->first)
	{
		st->first_reads++;
		st->first_extra_rt += s->extra;
		/* what the user waits for: from the write's reply to this value */
		samples_add(&st->raw_lat, now - s->last_write);
	}
	st->reads_log[s->rec].done = true;
	st->reads_log[s->rec].follower = node >= 0;
	st->reads_log[s->rec].node = node;
	st->reads_log[s->rec].stale = v < s->counter;
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

/* A read's value, copied before its result is cleared. */
static void
copy_value(char *buf, size_t len, const PGresult *res)
{
	snprintf(buf, len, "%s", PQgetvalue(res, 0, 0));
}

/* A check's answer (is_replayed, or a replica's position probe), counted. */
static bool
count_check(RunStats *st, const PGresult *res)
{
	bool		yes = PQgetvalue(res, 0, 0)[0] == 't';

	st->checks++;
	st->checks_true += yes;
	return yes;
}

/* A wait's outcome, counted; 0 when it reached the position. */
static int
count_wait(RunStats *st, const PGresult *res, bool by_call)
{
	int			o = wait_outcome(res, by_call);

	st->outcomes[o]++;
	return o;
}

/* The follower's answer is not used: the read goes to the leader. */
static void
read_on_leader(Session *s)
{
	s->extra++;
	s->extra_leader++;
	send_read(s, -1);
}

/* After a write (and its position, for the anchors that ask): read or rest. */
static void
after_write(Route *r, Session *s, double now)
{
	if (s->reads_left > 0)
		start_read(r, s);
	else
	{
		s->step = ST_IDLE;
		s->next_at = now + rand_exp(r->cfg->think_ms);
	}
}

/* The query in flight on s has completed: take the next step. */
void
session_done(Route *r, Session *s)
{
	RunStats   *st = r->st;
	double		now = now_ms();
	Pending    *p = &s->p;
	int			node = p->node;
	PGresult   *res0 = p->nres > 0 ? p->res[0] : NULL;
	const char *err;
	char		value[24];

	/*
	 * The reported position is refreshed when a transaction commits, not
	 * when it fails: after an error libpq still holds an older value, true
	 * then but not now.
	 */
	if (node >= 0 && p->nres > 0 && result_ok(p->res[p->nres - 1]))
		observe(r, s, node, p->sent, now,
				db_reported(p->conn, "distributed.replay_position"));

	/* a wait that ended in an error (CALL wait_for) is an outcome */
	if (s->step == ST_WAIT || s->step == ST_MULTI)
		err = res0 == NULL ? "no result" : NULL;
	else if (s->step == ST_PIPE && (st->strat.kind == STRAT_WAIT_PIPE ||
									st->strat.kind == STRAT_MAXSCALE))
		err = res0 == NULL ? "no result" : pending_error(p, 1);
	else
		err = pending_error(p, 0);
	if (err != NULL)
	{
		pending_clear(p);
		session_error(r, s, err, now);
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
				if (st->strat.kind == STRAT_GITLAB || st->strat.kind == STRAT_WAITFOR)
				{
					/* the position to wait for, from the leader: a round trip */
					st->write_extra_rt++;
					send_leader_position(s, ST_LSN, "ls");
					return;
				}
				after_write(r, s, now);
				return;
			}
		case ST_CHECK:
		case ST_WAIT:
			{
				/* one round trip to the follower, then the read where it says */
				bool		yes;

				if (s->step == ST_CHECK)
					yes = count_check(st, res0);
				else
				{
					yes = count_wait(st, res0, strategy_waits_by_call(&st->strat)) == 0;
					samples_add(&st->wait_lat, now - p->sent);
					if (yes && st->strat.kind == STRAT_WAITFOR)
						s->confirmed[node] = s->lsn;
				}
				s->extra++;
				pending_clear(p);
				send_read(s, yes ? node : -1);
				return;
			}
		case ST_MULTI:
			{
				/* the CALL's result, then (if it succeeded) the read's */
				int			o = count_wait(st, res0, true);

				if (o == 0 && (p->nres != 2 || PQresultStatus(p->res[1]) != PGRES_TUPLES_OK ||
							   PQntuples(p->res[1]) != 1))
				{
					char		msg[256];

					snprintf(msg, sizeof(msg), "%s",
							 p->nres == 2 && PQresultErrorMessage(p->res[1])[0] ?
							 PQresultErrorMessage(p->res[1]) : "read returned no row");
					pending_clear(p);
					session_error(r, s, msg, now);
					return;
				}
				if (o == 0)
				{
					copy_value(value, sizeof(value), p->res[1]);
					pending_clear(p);
					finish_read(r, s, node, value, now);
					return;
				}
				/* timed out, or refused: the read goes to the leader */
				if (o == 4 && r->errors_shown++ < 1)
					note("%s: the one-message wait failed, reading on the leader: %s",
						 st->strat.name, PQresultErrorMessage(res0));
				pending_clear(p);
				read_on_leader(s);
				return;
			}
		case ST_LSN:
			s->lsn = lsn_parse(PQgetvalue(res0, 0, 0));
			pending_clear(p);
			s->stuck = true;
			after_write(r, s, now);
			return;
		case ST_POS:
			s->lsn = lsn_parse(PQgetvalue(res0, 0, 0));
			pending_clear(p);
			maxscale_wait_read(r, s);
			return;
		case ST_PROBE:
			{
				bool		yes = count_check(st, res0);

				s->extra++;
				pending_clear(p);
				if (yes)
				{
					s->stuck = false;
					send_read(s, node);
				}
				else
					gitlab_next(r, s);
				return;
			}
		case ST_PIPE:
			{
				bool		yes;

				if (p->nres != 2 || PQntuples(p->res[1]) != 1)
				{
					pending_clear(p);
					session_error(r, s, "pipelined read returned no row", now);
					return;
				}
				if (st->strat.kind == STRAT_WAIT_PIPE || st->strat.kind == STRAT_MAXSCALE)
					yes = count_wait(st, res0, true) == 0;
				else
					yes = count_check(st, res0);
				copy_value(value, sizeof(value), p->res[1]);
				pending_clear(p);
				if (yes)
					finish_read(r, s, node, value, now);
				else
				{
					/* the follower's row is not trusted: ask the leader */
					read_on_leader(s);
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
			copy_value(value, sizeof(value), res0);
			pending_clear(p);
			finish_read(r, s, node, value, now);
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

void
sampler_send(Aux *a)
{
	send_prepared(&a->p, a->conn, a->node, "sp", 0, NULL);
}

void
sampler_done(Route *r, Aux *a)
{
	double		now = now_ms();
	Token		pos = db_reported(a->conn, "distributed.replay_position");
	Token		val = {0, 0};

	if (pending_error(&a->p, 0) == NULL)
	{
		(void) token_parse(PQgetvalue(a->p.res[0], 0, 0), &val);
		token_raise(&pos, val);
		observe(r, NULL, a->node, a->p.sent, now, pos);
	}
	pending_clear(&a->p);
	a->next_at = now + r->cfg->sample_ms;
}

void
shadow_done(Route *r, Aux *a)
{
	double		now = now_ms();
	ReadRec    *rec = &r->st->reads_log[a->rec];

	if (pending_error(&a->p, 0) == NULL && PQntuples(a->p.res[0]) == 1)
	{
		observe(r, NULL, a->node, a->p.sent, now,
				db_reported(a->conn, "distributed.replay_position"));
		rec->shadow_done++;
		if (atol(PQgetvalue(a->p.res[0], 0, 0)) >= a->expect)
			rec->shadow_fresh = true;
		else
			rec->shadow_stale |= 1u << a->node;
	}
	pending_clear(&a->p);
}

void
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

void
bg_done(Route *r, Aux *a)
{
	const char *err = pending_error(&a->p, 0);

	if (err != NULL && r->errors_shown++ < 5)
		note("background writer: %s", err);
	if (err == NULL)
		r->st->bg_writes++;
	pending_clear(&a->p);
}
