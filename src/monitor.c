/*-------------------------------------------------------------------------
 *
 * monitor.c
 *		Set-returning functions behind the monitoring views, and the reset.
 *
 * Each view wraps one function:
 *	distributed.sessions  <- distributed.get_sessions()	(keys: pg_monitor)
 *	distributed.stats	  <- distributed.get_stats()
 *	distributed.waiters   <- distributed.get_waiters()	(pg_monitor)
 *
 * get_sessions copies one partition at a time under that partition's
 * shared lock, so a scan never blocks writers for longer than one
 * partition's copy.  The counters are atomics, read and reset one by one
 * without a lock: a reset concurrent with a commit or a wait may keep or
 * lose that one event.  stats_reset has a spinlock of its own.
 *
 * Copyright (c) 2026, distributed contributors
 *
 * IDENTIFICATION
 *		src/monitor.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xlog.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "compat.h"
#include "distributed.h"

#define SESSIONS_COLS	5
#define STATS_COLS		(DIST_NUM_COUNTERS + 8)

/* get_stats()'s columns in the SQL of extension version 0.1 */
#define DIST_COUNTER_IN_0_1(field, kind, since) + ((since) == DIST_API_0_1)
#define STATS_COLS_0_1	(0 DIST_COUNTERS(DIST_COUNTER_IN_0_1) + 8)
#define WAITERS_COLS	5

/* distributed.stats: role, capacity, entries, evictions, then the floor */
#define FLOOR_COLUMN	4

/* Microseconds per millisecond, for the columns shown in ms */
#define DIST_US_PER_MS	1000.0

/* A counter's column value: a count as int8, a time in ms as float8. */
static Datum
DistCounterDatum(pg_atomic_uint64 *counter, DistCounterKind kind)
{
	uint64		v = pg_atomic_read_u64(counter);

	if (kind == DIST_MICROSECONDS)
		return Float8GetDatum((double) v / DIST_US_PER_MS);
	return Int64GetDatum((int64) v);
}

PG_FUNCTION_INFO_V1(distributed_get_sessions);
Datum
distributed_get_sessions(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	DistCheckLoaded();
	DistInitMaterializedSRF(fcinfo);

	for (int part = 0; part < dist_shared->npartitions; part++)
	{
		DistPartition *p = &dist_shared->partitions[part];
		DistSessionEntry *copy;
		int			n = 0;
		dlist_iter	iter;

		copy = palloc(sizeof(DistSessionEntry) * Max(p->capacity, 1));
		LWLockAcquire(p->lock, LW_SHARED);
		dlist_foreach(iter, &p->lru)
		{
			if (n >= p->capacity)
				break;
			copy[n++] = *dlist_container(DistSessionEntry, lru, iter.cur);
		}
		LWLockRelease(p->lock);

		for (int i = 0; i < n; i++)
		{
			Datum		values[SESSIONS_COLS];
			bool		nulls[SESSIONS_COLS] = {0};

			values[0] = CStringGetTextDatum(copy[i].key);
			values[1] = PointerGetDatum(DistTokenToText(copy[i].tli, copy[i].lsn));
			values[2] = LSNGetDatum(copy[i].lsn);
			values[3] = Int64GetDatum((int64) copy[i].tli);
			values[4] = TimestampTzGetDatum(copy[i].written);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc,
								 values, nulls);
		}
		pfree(copy);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(distributed_get_stats);
Datum
distributed_get_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	DistCounters *c;
	Datum		values[STATS_COLS];
	bool		nulls[STATS_COLS] = {0};
	int64		entries = 0;
	TimeLineID	ftli;
	XLogRecPtr	flsn;
	int			nwaiting;
	int			api;
	int			i = 0;

	DistCheckLoaded();
	DistInitMaterializedSRF(fcinfo);
	c = &dist_shared->counters;

	/*
	 * The installed SQL may be older than this library (the extension not
	 * yet updated): serve the columns its get_stats() declares.
	 */
	if (rsinfo->setDesc->natts == STATS_COLS)
		api = DIST_API_0_2;
	else if (rsinfo->setDesc->natts == STATS_COLS_0_1)
		api = DIST_API_0_1;
	else
		elog(ERROR, "incorrect number of output arguments");

	for (int part = 0; part < dist_shared->npartitions; part++)
	{
		LWLockAcquire(dist_shared->partitions[part].lock, LW_SHARED);
		entries += hash_get_num_entries(dist_tables[part]);
		LWLockRelease(dist_shared->partitions[part].lock);
	}
	nwaiting = (int) pg_atomic_read_u32(&dist_shared->nwaiting);
	DistEnsureFloor();
	DistReadFloor(&ftli, &flsn);

	values[i++] = CStringGetTextDatum(RecoveryInProgress() ? "follower" : "leader");
	values[i++] = Int32GetDatum(dist_shared->capacity);
	values[i++] = Int64GetDatum(entries);

	/*
	 * The counters in the order of DIST_COUNTERS, those the installed
	 * version has; the floor column comes after the first of them
	 * (evictions), where the view has it.
	 */
#define DIST_COUNTER_COLUMN(field, kind, since) \
	if ((since) <= api) \
		values[i++] = DistCounterDatum(&c->field, kind); \
	if (i == FLOOR_COLUMN) \
	{ \
		if (dist_shared->floor_ready) \
			values[i++] = PointerGetDatum(DistTokenToText(ftli, flsn)); \
		else \
			nulls[i++] = true; \
	}
	DIST_COUNTERS(DIST_COUNTER_COLUMN)
#undef DIST_COUNTER_COLUMN
	values[i++] = Int32GetDatum(nwaiting);
	LWLockAcquire(dist_shared->waiters_lock, LW_SHARED);
	if (dist_shared->watcher_pid != 0)
		values[i++] = Int32GetDatum(dist_shared->watcher_pid);
	else
		nulls[i++] = true;
	LWLockRelease(dist_shared->waiters_lock);
	values[i++] = Int32GetDatum(dist_watch_interval_ms);
	SpinLockAcquire(&dist_shared->stats_lock);
	values[i++] = TimestampTzGetDatum(dist_shared->stats_reset);
	SpinLockRelease(&dist_shared->stats_lock);
	Assert(i == rsinfo->setDesc->natts);

	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(distributed_get_waiters);
Datum
distributed_get_waiters(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	DistWaiter *copy;
	int			n = 0;
	TimestampTz now = GetCurrentTimestamp();

	DistCheckLoaded();
	DistInitMaterializedSRF(fcinfo);

	copy = palloc(sizeof(DistWaiter) * dist_shared->nslots);
	LWLockAcquire(dist_shared->waiters_lock, LW_SHARED);
	for (int i = 0; i < dist_shared->nslots; i++)
		if (dist_shared->waiters[i].in_use)
			copy[n++] = dist_shared->waiters[i];
	LWLockRelease(dist_shared->waiters_lock);

	for (int i = 0; i < n; i++)
	{
		Datum		values[WAITERS_COLS];
		bool		nulls[WAITERS_COLS] = {0};

		values[0] = Int32GetDatum(copy[i].pid);
		values[1] = PointerGetDatum(DistTokenToText(copy[i].tli, copy[i].lsn));
		values[2] = LSNGetDatum(copy[i].lsn);
		values[3] = TimestampTzGetDatum(copy[i].started);
		values[4] = Float8GetDatum((double) (now - copy[i].started) / 1000.0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	pfree(copy);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(distributed_reset_stats);
Datum
distributed_reset_stats(PG_FUNCTION_ARGS)
{
	DistCounters *c;
	TimestampTz now;

	DistCheckLoaded();
	c = &dist_shared->counters;
#define DIST_COUNTER_RESET(field, kind, since) pg_atomic_write_u64(&c->field, 0);
	DIST_COUNTERS(DIST_COUNTER_RESET)
#undef DIST_COUNTER_RESET
	now = GetCurrentTimestamp();
	SpinLockAcquire(&dist_shared->stats_lock);
	dist_shared->stats_reset = now;
	SpinLockRelease(&dist_shared->stats_lock);
	PG_RETURN_VOID();
}
