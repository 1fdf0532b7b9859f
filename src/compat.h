/*-------------------------------------------------------------------------
 *
 * compat.h
 *		Small wrappers over what differs between PostgreSQL 14 and 18.
 *
 * Everything version-dependent lives here, so the rest of the code reads as
 * if written for one server version.  test/check.sh builds and tests every
 * major from 14 to 18; PostgreSQL 13 is out of support and not built.
 *
 *-------------------------------------------------------------------------
 */
#ifndef DISTRIBUTED_COMPAT_H
#define DISTRIBUTED_COMPAT_H

#include "postgres.h"

#include "access/xlog.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

#if PG_VERSION_NUM < 140000
#error "distributed requires PostgreSQL 14 or later"
#endif

#if PG_VERSION_NUM >= 150000
#include "access/xlogrecovery.h"
#endif

/* Timeline that new WAL (and so a commit record) is written on. */
static inline TimeLineID
DistInsertTimeLine(void)
{
#if PG_VERSION_NUM >= 150000
	return GetWALInsertionTimeLine();
#else
	return ThisTimeLineID;
#endif
}

/* WAL flushed on a server that is not in recovery. */
static inline XLogRecPtr
DistFlushRecPtr(void)
{
#if PG_VERSION_NUM >= 150000
	return GetFlushRecPtr(NULL);
#else
	return GetFlushRecPtr();
#endif
}

/* Index of this backend's PGPROC, used to name its waiter slot. */
static inline int
DistMyProcNumber(void)
{
#if PG_VERSION_NUM >= 170000
	return MyProcNumber;
#else
	return MyProc->pgprocno;
#endif
}

/* Materialized set-returning function setup. */
static inline void
DistInitMaterializedSRF(FunctionCallInfo fcinfo)
{
#if PG_VERSION_NUM >= 150000
	InitMaterializedSRF(fcinfo, 0);
#else
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TupleDesc	tupdesc;
	MemoryContext oldcontext;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	oldcontext = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = tuplestore_begin_heap(true, false, work_mem);
	rsinfo->setDesc = CreateTupleDescCopy(tupdesc);
	MemoryContextSwitchTo(oldcontext);
#endif
}

/*
 * Is any snapshot still registered or active?  PostgreSQL 18 removed
 * GetOldestSnapshot(); there, ask whether this backend still advertises an
 * xmin, which is what a held snapshot would hold back on a standby.
 */
static inline bool
DistHoldsSnapshot(void)
{
#if PG_VERSION_NUM >= 180000
	return HaveRegisteredOrActiveSnapshot() ||
		TransactionIdIsValid(MyProc->xmin);
#else
	return GetOldestSnapshot() != NULL ||
		TransactionIdIsValid(MyProc->xmin);
#endif
}

/* Reserve the "distributed." prefix for this module's settings. */
#if PG_VERSION_NUM < 150000
#define MarkGUCPrefixReserved(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

/*
 * The condition variable the startup process broadcasts after replaying
 * each record, or NULL where there is none to sleep on.
 *
 * From PostgreSQL 16 on, ApplyWalRecord() calls WalSndWakeup(switchedTLI,
 * true) after every record once lastReplayedEndRecPtr is updated, which
 * broadcasts WalSndCtl->wal_replay_cv (for logical walsenders on a
 * standby), and StartupXLOG() calls WalSndWakeup(true, true) once recovery
 * has ended.  The former only while AllowCascadeReplication(), that is
 * hot_standby on and max_wal_senders > 0; both are fixed at server start,
 * so one look when the watcher starts is enough.  Before 16 walsenders
 * were woken through their latches and there is no such variable.
 */
#if PG_VERSION_NUM >= 160000
#include "replication/walreceiver.h"
#include "replication/walsender_private.h"
#endif
#include "storage/condition_variable.h"

static inline ConditionVariable *
DistReplayConditionVariable(void)
{
#if PG_VERSION_NUM >= 160000
	if (AllowCascadeReplication())
		return &WalSndCtl->wal_replay_cv;
#endif
	return NULL;
}

/* Wait event shown in pg_stat_activity while a backend waits for replay. */
extern uint32 dist_wait_event_replay;

static inline void
DistInitWaitEvents(void)
{
#if PG_VERSION_NUM >= 170000
	if (dist_wait_event_replay == 0)
		dist_wait_event_replay = WaitEventExtensionNew("DistributedReplay");
#else
	dist_wait_event_replay = PG_WAIT_EXTENSION;
#endif
}

#endif							/* DISTRIBUTED_COMPAT_H */
