/*-------------------------------------------------------------------------
 *
 * distributed.h
 *		Declarations shared by the files of the distributed extension.
 *
 * A token names a position in the WAL of one timeline: the end of a commit
 * record on the leader, or how far a follower has replayed.  Its text form
 * is "<timeline>:<lsn>", for example "1:0/3000148"; follower-side calls also
 * accept a bare LSN ("0/3000148"), which is then taken to be on whatever
 * timeline the server is on, and is answered only up to the server's first
 * timeline switch (past it, it could name a write lost in a failover).
 *
 * Copyright (c) 2026, distributed contributors
 *
 * IDENTIFICATION
 *		src/distributed.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DISTRIBUTED_H
#define DISTRIBUTED_H

#include "postgres.h"

#include "access/xact.h"
#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "lib/ilist.h"
#include "lib/pairingheap.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/hsearch.h"

/* Longest session key, in bytes.  A hex SHA-256 digest is 64. */
#define DIST_MAX_KEY_LEN		128

/* Session map partitions; see DistNumPartitions(). */
#define DIST_MAX_PARTITIONS		16

/*
 * SQLSTATE for a token that this server's timeline history can never hold.
 * Class 55 (object not in prerequisite state); a subclass starting with a
 * letter from I to Z is implementation-defined (PostgreSQL uses P), U here.
 */
#define ERRCODE_DIST_UNREACHABLE	MAKE_SQLSTATE('5','5','U','0','1')
/* The server was promoted while waiting (wait_for). */
#define ERRCODE_DIST_PROMOTED		MAKE_SQLSTATE('5','5','U','0','2')
/* The server is not a standby and does not hold the token (wait_for). */
#define ERRCODE_DIST_NOT_IN_RECOVERY	MAKE_SQLSTATE('5','5','U','0','3')
/* A timeline history file this server needs is missing or corrupt. */
#define ERRCODE_DIST_HISTORY_FILE	MAKE_SQLSTATE('5','5','U','0','4')
/* A token lies before the start of its own timeline on this server. */
#define ERRCODE_DIST_BEFORE_TIMELINE	MAKE_SQLSTATE('5','5','U','0','5')

/* Longest token text: "4294967295:FFFFFFFF/FFFFFFFF". */
#define DIST_TOKEN_BUFLEN		32

typedef struct DistToken
{
	TimeLineID	tli;			/* 0 when the text gave a bare LSN */
	XLogRecPtr	lsn;
} DistToken;

/* Where a token stands on this server; see DistTokenState(). */
typedef enum DistTokenStatus
{
	DIST_REACHED,				/* replayed here (on a leader: held here) */
	DIST_PENDING,				/* not yet, but replay may still reach it */
	DIST_NEVER,					/* this server's timeline left before it */
	DIST_NOT_IN_RECOVERY,		/* not here, and this server replays no WAL */
	DIST_BEFORE_TIMELINE		/* before its timeline began here: no such write */
} DistTokenStatus;

/* One entry of the session map; the key must come first (dynahash). */
typedef struct DistSessionEntry
{
	char		key[DIST_MAX_KEY_LEN + 1];
	dlist_node	lru;			/* position in its partition's LRU list */
	XLogRecPtr	lsn;
	TimestampTz written;
	TimeLineID	tli;
} DistSessionEntry;

typedef struct DistPartition
{
	LWLock	   *lock;			/* protects this partition's table and list */
	dlist_head	lru;			/* head: least recently written */
	int			capacity;
} DistPartition;

/*
 * A backend waiting for replay; slots are indexed by PGPROC number.  See
 * waiter.c for the protocol.
 */
typedef enum DistWaiterState
{
	DIST_WAITER_IDLE,			/* not armed: nobody will wake it */
	DIST_WAITER_QUEUED,			/* in the queue of armed waiters */
	DIST_WAITER_PARKED			/* armed for a later timeline */
} DistWaiterState;

typedef struct DistWaiter
{
	pairingheap_node node;		/* in the queue while QUEUED */
	DistWaiterState state;		/* protected by waiters_lock */
	bool		in_use;			/* a wait is in progress; set by its owner */
	int			pid;
	TimeLineID	tli;
	XLogRecPtr	lsn;
	TimestampTz started;
	Latch	   *latch;
} DistWaiter;

/*
 * The counters of distributed.stats, defined once: X(field, kind, since),
 * in the order of the view's columns (the floor column comes between the
 * first and the second).  A DIST_COUNT is shown as int8, a
 * DIST_MICROSECONDS as float8 milliseconds.  "since" is the API version of
 * the extension's SQL (DIST_API_*) whose get_stats() has the column: a
 * server running this library with an older version installed (before
 * ALTER EXTENSION distributed UPDATE) is served that version's columns.
 * The shared struct, its initialisation, the view and reset_stats() are
 * all expanded from this list.
 */
#define DIST_API_0_1	1
#define DIST_API_0_2	2

#define DIST_COUNTERS(X) \
	X(evictions, DIST_COUNT, DIST_API_0_1) \
	X(commits_recorded, DIST_COUNT, DIST_API_0_1) \
	X(checks_safe, DIST_COUNT, DIST_API_0_1) \
	X(checks_unsafe, DIST_COUNT, DIST_API_0_1) \
	X(waits_started, DIST_COUNT, DIST_API_0_1) \
	X(waits_reached, DIST_COUNT, DIST_API_0_1) \
	X(waits_timed_out, DIST_COUNT, DIST_API_0_1) \
	X(waits_promoted, DIST_COUNT, DIST_API_0_1) \
	X(waits_unreachable, DIST_COUNT, DIST_API_0_1) \
	X(waits_not_in_recovery, DIST_COUNT, DIST_API_0_1) \
	X(waits_stale_snapshot, DIST_COUNT, DIST_API_0_2) \
	X(waits_cancelled, DIST_COUNT, DIST_API_0_1) \
	X(wait_time_us, DIST_MICROSECONDS, DIST_API_0_1)

typedef enum DistCounterKind
{
	DIST_COUNT,
	DIST_MICROSECONDS
} DistCounterKind;

typedef struct DistCounters
{
#define DIST_COUNTER_FIELD(field, kind, since) pg_atomic_uint64 field;
	DIST_COUNTERS(DIST_COUNTER_FIELD)
#undef DIST_COUNTER_FIELD
} DistCounters;

#define DIST_NUM_COUNTERS \
	((int) (sizeof(DistCounters) / sizeof(pg_atomic_uint64)))

/*
 * A transaction prepared on the leader (PREPARE TRANSACTION), by global
 * transaction identifier: the session key it was prepared under, so that a
 * COMMIT PREPARED run by any session records its commit under that key.
 */
typedef struct DistPreparedEntry
{
	char		gid[GIDSIZE];	/* hash key; must come first */
	TransactionId xid;			/* the prepared transaction's xid */
	char		key[DIST_MAX_KEY_LEN + 1];	/* "" when prepared without a key */
} DistPreparedEntry;

typedef struct DistShared
{
	/* floor of every answer of the session map; protected by floor_lock */
	slock_t		floor_lock;
	bool		floor_ready;	/* raised to the WAL end since start-up */
	TimeLineID	floor_tli;
	XLogRecPtr	floor_lsn;

	int			npartitions;
	int			capacity;
	DistPartition partitions[DIST_MAX_PARTITIONS];

	/* waiters; see waiter.c */
	LWLock	   *waiters_lock;	/* protects the queue, narmed, watcher_* */
	int			nslots;
	pg_atomic_uint32 nwaiting;	/* slots in use */
	pairingheap queue;			/* QUEUED waiters, lowest LSN first */
	int			narmed;			/* QUEUED or PARKED waiters */
	pg_atomic_uint64 first_lsn; /* LSN of the queue's first, or UINT64_MAX */
	Latch	   *watcher_latch;	/* NULL while the watcher is not running */
	int			watcher_pid;

	/* protects the prepared-transaction table (dist_prepared) */
	LWLock	   *prepared_lock;

	DistCounters counters;
	slock_t		stats_lock;		/* protects stats_reset */
	TimestampTz stats_reset;

	DistWaiter	waiters[FLEXIBLE_ARRAY_MEMBER];
} DistShared;

/* distributed.c */
extern int	dist_max_sessions;
extern char *dist_session_key;
extern int	dist_watch_interval_ms;
extern bool dist_report_replay;
extern void DistCheckLoaded(void);

/* shmem.c */
extern DistShared *dist_shared;
extern HTAB *dist_tables[DIST_MAX_PARTITIONS];
extern HTAB *dist_prepared;
extern void DistShmemRequest(void);
extern void DistShmemInstallHooks(void);
extern int	DistNumPartitions(int capacity);
extern void DistRaiseFloor(TimeLineID tli, XLogRecPtr lsn);
extern void DistReadFloor(TimeLineID *tli, XLogRecPtr *lsn);
extern void DistEnsureFloor(void);

/* token.c */
extern bool DistParseToken(const char *text, DistToken *token);
extern DistToken DistTokenFromText(text *t);
extern int	DistFormatToken(char *buf, TimeLineID tli, XLogRecPtr lsn);
extern text *DistTokenToText(TimeLineID tli, XLogRecPtr lsn);
extern DistTokenStatus DistTokenState(DistToken token);
extern void DistRaiseBeforeTimeline(DistToken token);
extern void DistCheckKey(const char *key, int len);
extern const char *DistKeyBadChar(const char *key, int len);

/* leader.c */
extern void DistXactCallback(XactEvent event, void *arg);
extern void DistInstallUtilityHook(void);
extern void DistSessionKeyAssign(const char *newval, void *extra);

/* report.c */
typedef enum DistReported
{
	DIST_REPORT_LAST_COMMIT,	/* distributed.last_commit */
	DIST_REPORT_REPLAY_POSITION,	/* distributed.replay_position */
	DIST_NUM_REPORTED
} DistReported;

extern void DistReport(DistReported which, TimeLineID tli, XLogRecPtr lsn);
extern const char *DistShowLastCommit(void);
extern const char *DistShowReplayPosition(void);

/* waiter.c */
extern TimestampTz dist_wait_started;
extern void DistWaitersShmemInit(void);
extern bool DistSleepUntil(DistToken token, TimestampTz deadline);
extern void DistDisarm(void);
extern void DistWaitCleanup(int code, Datum arg);
extern void DistRegisterWatcher(void);
extern void DistReportReplayPosition(void);
PGDLLEXPORT void distributed_watcher_main(Datum main_arg);

#endif							/* DISTRIBUTED_H */
