/*-------------------------------------------------------------------------
 *
 * route.h
 *		Internal declarations of the routing benchmark, shared by route.c
 *		(sessions and strategies), scenario.c (setup, lag scenarios, the
 *		event loop) and pending.c (asynchronous queries).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ROUTE_H
#define ROUTE_H

#include "distbench.h"

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
	ST_READ,
	ST_MULTI,					/* wait-one: CALL and read in one message */
	ST_LSN,						/* the leader's position after a write */
	ST_POS,						/* maxscale: the leader's position before a read */
	ST_PROBE					/* gitlab: is this replica caught up? */
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
	double		known_at[MAX_FOLLOWERS];	/* ... when each was last heard from */
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
	/* the latency scenario's anchors */
	int			extra_leader;	/* those of extra on the leader */
	uint64_t	lsn;			/* a position read from the leader */
	bool		stuck;			/* gitlab: reads stick to the leader */
	unsigned	tried;			/* gitlab: replicas probed for this read */
	uint64_t	confirmed[MAX_FOLLOWERS];	/* waitfor: LSN each was seen to reach */
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
	double		cache_at[MAX_FOLLOWERS];	/* ... when each was last heard from */
	RunStats   *st;
	bool		stopping;
	double		end;
	long		bg_chunk;
	int			errors_shown;
} Route;


/* pending.c */
extern void pending_clear(Pending *p);
extern void pending_start(Pending *p, PGconn *conn, int node);
extern void queue_prepared(Pending *p, const char *stmt, int nparams,
						   const char *const *params);
extern void send_prepared(Pending *p, PGconn *conn, int node, const char *stmt,
						  int nparams, const char *const *params);
extern void pipeline_begin(Pending *p, PGconn *conn, int node);
extern void pipeline_sync(Pending *p);
extern bool pending_pump(Pending *p);
extern bool result_ok(const PGresult *res);
extern const char *pending_error(Pending *p, int from);
extern int	wait_outcome(const PGresult *res, bool call);

/* route.c */
extern void start_op(Route *r, Session *s);
extern void session_done(Route *r, Session *s);
extern void sampler_send(Aux *a);
extern void sampler_done(Route *r, Aux *a);
extern void shadow_done(Route *r, Aux *a);
extern void bg_send(Route *r, Aux *a);
extern void bg_done(Route *r, Aux *a);

#endif							/* ROUTE_H */
