/*-------------------------------------------------------------------------
 *
 * scenario.c
 *		Setup, lag scenarios and the event loop of the routing benchmark.
 *
 * One process, one thread: every connection's socket goes into one ppoll();
 * a session whose think time has passed starts its next operation, and a
 * connection whose reply is complete moves its owner to the next step
 * (route.c).  Lag scenarios are driven from control connections: ALTER
 * SYSTEM SET recovery_min_apply_delay and a reload before the strategies
 * run, pg_wal_replay_pause() and pg_wal_replay_resume() at fixed offsets
 * within each strategy's run.  Between strategies every follower catches up
 * with the leader, so each starts from the same state.
 *
 *-------------------------------------------------------------------------
 */
#include "route.h"

#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

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
		db_prepare(s->leader, "ls", "SELECT pg_current_wal_insert_lsn()::text");
		db_prepare(s->leader, "fl", "SELECT pg_current_wal_flush_lsn()::text");
		for (int f = 0; f < cfg->nfollowers; f++)
		{
			s->fol[f] = db_connect(cfg->followers[f], "a follower");
			db_prepare(s->fol[f], "rd", "SELECT counter FROM distbench_rows WHERE id = $1");
			db_prepare(s->fol[f], "ck", "SELECT distributed.is_replayed($1::text)");
			db_prepare(s->fol[f], "wt", "SELECT distributed.wait($1::text, $2::int4)");
			db_prepare(s->fol[f], "wf", "CALL distributed.wait_for($1::text, $2::int4)");
			db_prepare(s->fol[f], "wl", "CALL distributed.wait_for($1::pg_lsn, $2::int4)");
			db_prepare(s->fol[f], "gp", "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn");
		}
	}
	PQclear(res);

	for (int f = 0; f < cfg->nfollowers; f++)
	{
		Aux		   *a = &r->samplers[f];

		a->conn = db_connect(cfg->followers[f], "a follower");
		a->node = f;
		db_prepare(a->conn, "sp", "SELECT distributed.replay_position()");
		for (int i = 0; cfg->shadow && i < SHADOWS_PER_FOLLOWER; i++)
		{
			a = &r->shadows[f][i];
			a->conn = db_connect(cfg->followers[f], "a follower");
			a->node = f;
			db_prepare(a->conn, "rd", "SELECT counter FROM distbench_rows WHERE id = $1");
		}
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

typedef enum WatchKind
{
	W_SESSION,
	W_SAMPLER,
	W_SHADOW,
	W_WRITER
} WatchKind;

typedef struct Watched
{
	WatchKind	kind;
	Session    *s;
	Aux		   *a;
} Watched;

static void
run_strategy(Route *r, RunStats *st)
{
	RouteConfig *cfg = r->cfg;
	int			maxfds = cfg->sessions + cfg->bg_writers +
		cfg->nfollowers * (1 + SHADOWS_PER_FOLLOWER);
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
		s->stuck = false;
		memset(s->confirmed, 0, sizeof(s->confirmed));
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
				who[nfds++] = (Watched) {W_SESSION, s, NULL};
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
				who[nfds++] = (Watched) {W_SAMPLER, NULL, a};
			}
			for (int i = 0; i < SHADOWS_PER_FOLLOWER; i++)
			{
				a = &r->shadows[f][i];
				if (a->p.conn != NULL)
				{
					fds[nfds] = (struct pollfd) {PQsocket(a->conn), POLLIN, 0};
					who[nfds++] = (Watched) {W_SHADOW, NULL, a};
				}
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
				who[nfds++] = (Watched) {W_WRITER, NULL, a};
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
			Pending    *p = who[i].s ? &who[i].s->p : &who[i].a->p;

			if (fds[i].revents == 0 || !pending_pump(p))
				continue;
			switch (who[i].kind)
			{
				case W_SESSION:
					session_done(r, who[i].s);
					break;
				case W_SAMPLER:
					sampler_done(r, who[i].a);
					break;
				case W_SHADOW:
					shadow_done(r, who[i].a);
					break;
				case W_WRITER:
					bg_done(r, who[i].a);
					break;
			}
		}
	}
	st->elapsed_s = (r->end - start) / 1000.0;
	free(fds);
	free(who);
}

/* The round trip of SELECT 1 on a connection, median of 21 (ms). */
static double
measure_rtt(PGconn *conn)
{
	Samples		rt = {0};
	double		v;

	for (int i = 0; i < 21; i++)
	{
		double		t0 = now_ms();

		db_exec(conn, "SELECT 1");
		samples_add(&rt, now_ms() - t0);
	}
	v = samples_pct(&rt, 50);
	free(rt.v);
	return v;
}

int
route_main(RouteConfig *cfg)
{
	double		rtt_leader;
	double		rtt_follower[MAX_FOLLOWERS];
	Route		r;
	RunStats   *runs = calloc(cfg->nstrategies, sizeof(RunStats));
	int			failures;

	memset(&r, 0, sizeof(r));
	r.cfg = cfg;
	note("%s: setting up %d sessions, %d followers", cfg->scenario,
		 cfg->sessions, cfg->nfollowers);
	setup(&r);
	rtt_leader = measure_rtt(r.ctl_leader);
	for (int f = 0; f < cfg->nfollowers; f++)
		rtt_follower[f] = measure_rtt(r.ctl[f]);
	note("%s: round trip (SELECT 1, median of 21): leader %.2f ms", cfg->scenario, rtt_leader);
	for (int f = 0; f < cfg->nfollowers; f++)
		note("%s: round trip (SELECT 1, median of 21): follower %d %.2f ms",
			 cfg->scenario, f + 1, rtt_follower[f]);
	if (cfg->delay_ms > 0)
		set_apply_delay(&r, cfg->delay_ms);

	for (int i = 0; i < cfg->nstrategies; i++)
	{
		RunStats   *st = &runs[i];

		st->strat = cfg->strategies[i];
		st->rtt_leader = rtt_leader;
		memcpy(st->rtt_follower, rtt_follower, sizeof(rtt_follower));
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
	if (cfg->raw_tsv)
	{
		FILE	   *f = fopen(cfg->raw_tsv, "a");

		if (f == NULL)
			die("cannot open %s", cfg->raw_tsv);
		for (int i = 0; i < cfg->nstrategies; i++)
			for (size_t j = 0; j < runs[i].raw_lat.n; j++)
				fprintf(f, "%s\t%s\t%.3f\n", cfg->scenario, runs[i].strat.name,
						runs[i].raw_lat.v[j]);
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
		for (int i = 0; cfg->shadow && i < SHADOWS_PER_FOLLOWER; i++)
			PQfinish(r.shadows[f][i].conn);
		PQfinish(r.ctl[f]);
	}
	for (int i = 0; i < cfg->bg_writers; i++)
		PQfinish(r.bg[i].conn);
	PQfinish(r.ctl_leader);
	return failures ? 1 : 0;
}
