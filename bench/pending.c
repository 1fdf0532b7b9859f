/*-------------------------------------------------------------------------
 *
 * pending.c
 *		One query (or one libpq pipeline) in flight on a connection, sent
 *		with libpq's asynchronous API and gathered as its results arrive.
 *
 *-------------------------------------------------------------------------
 */
#include "route.h"

#include <string.h>

void
pending_clear(Pending *p)
{
	for (int i = 0; i < p->nres; i++)
		PQclear(p->res[i]);
	p->nres = 0;
	p->conn = NULL;
}

void
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
void
queue_prepared(Pending *p, const char *stmt, int nparams,
			   const char *const *params)
{
	if (!PQsendQueryPrepared(p->conn, stmt, nparams, params, NULL, NULL, 0))
		die("send %s: %s", stmt, PQerrorMessage(p->conn));
}

void
send_prepared(Pending *p, PGconn *conn, int node, const char *stmt,
			  int nparams, const char *const *params)
{
	pending_start(p, conn, node);
	queue_prepared(p, stmt, nparams, params);
}

void
pipeline_begin(Pending *p, PGconn *conn, int node)
{
	pending_start(p, conn, node);
	if (!PQenterPipelineMode(conn))
		die("pipeline mode: %s", PQerrorMessage(conn));
}

void
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
bool
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

bool
result_ok(const PGresult *res)
{
	ExecStatusType st = PQresultStatus(res);

	return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

/* NULL if results from..nres-1 succeeded, else the first error message. */
const char *
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
int
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
		/* the extension's SQLSTATEs: README, Reference, SQLSTATEs */
		if (strcmp(state, "55U02") == 0 || strcmp(state, "55U03") == 0)
			return 2;		/* promoted, not in recovery */
		if (strcmp(state, "55U01") == 0 || strcmp(state, "55U04") == 0 ||
			strcmp(state, "55U05") == 0)
			return 3;		/* unreachable */
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
