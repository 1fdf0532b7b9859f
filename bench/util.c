/*-------------------------------------------------------------------------
 *
 * util.c
 *		Clock, tokens, samples, random numbers and blocking libpq helpers.
 *
 * The blocking helpers are for setup and control connections only; the
 * sessions themselves never block (route.c).
 *
 *-------------------------------------------------------------------------
 */
#include "distbench.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

void
sleep_ms(double ms)
{
	struct timespec ts;

	if (ms <= 0)
		return;
	ts.tv_sec = (time_t) (ms / 1000);
	ts.tv_nsec = (long) ((ms - ts.tv_sec * 1000.0) * 1e6);
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void
vnote(const char *fmt, va_list ap)
{
	fprintf(stderr, "distbench: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void
die(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vnote(fmt, ap);
	va_end(ap);
	exit(2);
}

void
note(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vnote(fmt, ap);
	va_end(ap);
}

void *
xrealloc(void *p, size_t size)
{
	void	   *q = realloc(p, size);

	if (q == NULL && size > 0)
		die("out of memory");
	return q;
}

/* ------------------------------------------------------------------------
 * Tokens
 * ------------------------------------------------------------------------
 */

/* "<tli>:<hi>/<lo>" (hex LSN halves); false for '' or anything else. */
bool
token_parse(const char *s, Token *out)
{
	unsigned long tli;
	unsigned int hi,
				lo;
	char		tail;

	if (s == NULL || s[0] == '\0')
		return false;
	if (sscanf(s, "%lu:%X/%X%c", &tli, &hi, &lo, &tail) != 3 || tli == 0)
		return false;
	out->tli = (uint32_t) tli;
	out->lsn = ((uint64_t) hi << 32) | lo;
	return true;
}

void
token_format(Token t, char *buf, size_t len)
{
	snprintf(buf, len, "%" PRIu32 ":%X/%X", t.tli,
			 (unsigned int) (t.lsn >> 32), (unsigned int) t.lsn);
}

/*
 * Whether a server known to have replayed up to pos holds tok.  Only the
 * same timeline counts: these runs never switch timelines, and a client
 * that cannot tell must ask the server.
 */
bool
token_reached(Token pos, Token tok)
{
	return pos.tli != 0 && pos.tli == tok.tli && pos.lsn >= tok.lsn;
}

/* Raise a known replay position; true if it moved. */
bool
token_raise(Token *pos, Token seen)
{
	if (seen.tli == 0)
		return false;
	if (seen.tli > pos->tli || (seen.tli == pos->tli && seen.lsn > pos->lsn))
	{
		*pos = seen;
		return true;
	}
	return false;
}

/* ------------------------------------------------------------------------
 * Samples
 * ------------------------------------------------------------------------
 */

void
samples_add(Samples *s, double x)
{
	GROW(s->v, s->n, s->cap);
	s->v[s->n++] = x;
	s->sorted = false;
}

static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile; NAN when empty. */
double
samples_pct(Samples *s, double p)
{
	size_t		i;

	if (s->n == 0)
		return NAN;
	if (!s->sorted)
	{
		qsort(s->v, s->n, sizeof(double), cmp_double);
		s->sorted = true;
	}
	i = (size_t) ceil(p / 100.0 * s->n);
	if (i > 0)
		i--;
	if (i >= s->n)
		i = s->n - 1;
	return s->v[i];
}

double
samples_mean(const Samples *s)
{
	double		sum = 0;

	if (s->n == 0)
		return NAN;
	for (size_t i = 0; i < s->n; i++)
		sum += s->v[i];
	return sum / s->n;
}

void
samples_reset(Samples *s)
{
	s->n = 0;
	s->sorted = false;
}

/* ------------------------------------------------------------------------
 * Random numbers (xorshift64*: reproducible for a given --seed)
 * ------------------------------------------------------------------------
 */

static uint64_t rand_state = 88172645463325252ULL;

void
rand_seed(uint64_t seed)
{
	rand_state = seed ? seed : 88172645463325252ULL;
}

static uint64_t
rand_next(void)
{
	rand_state ^= rand_state >> 12;
	rand_state ^= rand_state << 25;
	rand_state ^= rand_state >> 27;
	return rand_state * 2685821657736338717ULL;
}

/* Uniform in [0, 1). */
double
rand_unit(void)
{
	return (rand_next() >> 11) * (1.0 / 9007199254740992.0);
}

int
rand_int(int n)
{
	return (int) (rand_unit() * n);
}

/* Exponentially distributed with the given mean (0 stays 0). */
double
rand_exp(double mean)
{
	if (mean <= 0)
		return 0;
	return -mean * log(1.0 - rand_unit());
}

/* ------------------------------------------------------------------------
 * Blocking libpq helpers (setup and control only)
 * ------------------------------------------------------------------------
 */

PGconn *
db_connect(const char *conninfo, const char *what)
{
	PGconn	   *conn = PQconnectdb(conninfo);

	if (PQstatus(conn) != CONNECTION_OK)
		die("cannot connect to %s (%s): %s", what, conninfo,
			PQerrorMessage(conn));
	return conn;
}

void
db_exec(PGconn *conn, const char *sql)
{
	PGresult   *res = PQexec(conn, sql);
	ExecStatusType st = PQresultStatus(res);

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
		die("%s: %s", sql, PQerrorMessage(conn));
	PQclear(res);
}

/* The first column of the first row, malloc'd; NULL for SQL NULL. */
char *
db_value(PGconn *conn, const char *sql)
{
	PGresult   *res = PQexec(conn, sql);
	char	   *v = NULL;

	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) < 1)
		die("%s: %s", sql, PQerrorMessage(conn));
	if (!PQgetisnull(res, 0, 0))
		v = strdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	return v;
}

void
db_prepare(PGconn *conn, const char *name, const char *sql)
{
	PGresult   *res = PQprepare(conn, name, sql, 0, NULL);

	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		die("prepare %s: %s", name, PQerrorMessage(conn));
	PQclear(res);
}

/* A token-valued ParameterStatus; tli 0 when absent or ''. */
Token
db_reported(PGconn *conn, const char *param)
{
	Token		t = {0, 0};

	(void) token_parse(PQparameterStatus(conn, param), &t);
	return t;
}
