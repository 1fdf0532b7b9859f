/*-------------------------------------------------------------------------
 *
 * follower.c
 *		Replay checks and waits, and the replay watcher.
 *
 * A check (distributed.is_replayed) compares a token with this server's
 * replay position once.  A wait (distributed.wait, CALL distributed.
 * wait_for) sleeps until replay reaches the token, the timeout passes, the
 * server is promoted, or the token turns out to be unreachable here.
 *
 * PostgreSQL 15 gives an extension no signal when the startup process
 * replays a record, so one background worker, the replay watcher, does the
 * looking for everyone: while at least one backend waits it reads the
 * replay position every distributed.watch_interval (1 ms by default) and
 * sets the latch of each waiter whose token it has passed; while nobody
 * waits it sleeps on its latch and costs nothing.  Waiters themselves do
 * not poll: each sleeps on its own latch until the watcher wakes it or its
 * deadline passes.  (Should the watcher not be running, waiters fall back
 * to checking every watch interval themselves.)
 *
 * Waiter slots are indexed by PGPROC number and protected by waiters_lock.
 * The protocol that loses no wake-up: a waiter arms its slot under the
 * lock, then checks replay, then sleeps; the watcher disarms a slot under
 * the lock and sets its latch after releasing it.  A waiter that errors out
 * (cancel, statement_timeout) or exits releases its slot through
 * PG_ENSURE_ERROR_CLEANUP, so nothing is left behind.
 *
 * The procedure form drops its snapshot before sleeping (as PostgreSQL
 * 17's reverted pg_wal_replay_wait did): a held snapshot can make replay
 * wait for it (a recovery conflict), which would hold back the very replay
 * being waited for.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/pquery.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/pg_lsn.h"
#include "utils/portal.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "distributed.h"

typedef enum DistWaitResult
{
	DIST_WAIT_REACHED,
	DIST_WAIT_TIMEOUT,
	DIST_WAIT_PROMOTED,
	DIST_WAIT_NOT_IN_RECOVERY,
	DIST_WAIT_UNREACHABLE
} DistWaitResult;

static const char *const dist_wait_result_names[] = {
	"reached",
	"timeout",
	"promoted",
	"not_in_recovery",
	"unreachable"
};

/* Timestamp of the current wait, for the cancellation counters. */
static TimestampTz dist_wait_started = 0;

/* ------------------------------------------------------------------------
 * Argument helpers
 * ------------------------------------------------------------------------
 */

static DistToken
DistTokenArg(FunctionCallInfo fcinfo, int argno, bool is_lsn)
{
	DistToken	token;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("token must not be null")));
	if (is_lsn)
	{
		token.tli = 0;
		token.lsn = PG_GETARG_LSN(argno);
	}
	else
		token = DistTokenFromText(PG_GETARG_TEXT_PP(argno));
	return token;
}

static int32
DistTimeoutArg(FunctionCallInfo fcinfo, int argno)
{
	int32		timeout;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("timeout must not be null")));
	timeout = PG_GETARG_INT32(argno);
	if (timeout < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout must not be negative"),
				 errdetail("The timeout is in milliseconds; 0 checks once without waiting.")));
	return timeout;
}

/* ------------------------------------------------------------------------
 * Checks
 * ------------------------------------------------------------------------
 */

static bool
DistIsReplayed(DistToken token)
{
	bool		safe = DistTokenState(token) == DIST_REACHED;

	pg_atomic_fetch_add_u64(safe ? &dist_shared->counters.checks_safe :
							&dist_shared->counters.checks_unsafe, 1);
	return safe;
}

PG_FUNCTION_INFO_V1(distributed_is_replayed);
Datum
distributed_is_replayed(PG_FUNCTION_ARGS)
{
	DistToken	token;

	DistCheckLoaded();
	token = DistTokenArg(fcinfo, 0, false);
	PG_RETURN_BOOL(DistIsReplayed(token));
}

PG_FUNCTION_INFO_V1(distributed_is_replayed_lsn);
Datum
distributed_is_replayed_lsn(PG_FUNCTION_ARGS)
{
	DistToken	token;

	DistCheckLoaded();
	token = DistTokenArg(fcinfo, 0, true);
	PG_RETURN_BOOL(DistIsReplayed(token));
}

PG_FUNCTION_INFO_V1(distributed_replay_position);
Datum
distributed_replay_position(PG_FUNCTION_ARGS)
{
	TimeLineID	tli;
	XLogRecPtr	pos;

	DistCheckLoaded();
	if (RecoveryInProgress())
		pos = GetXLogReplayRecPtr(&tli);
	else
	{
		/*
		 * The position DistTokenState() holds every token below: the WAL
		 * insert position.  Not the flush position: with synchronous_commit
		 * off a commit is visible before its record is flushed.
		 */
		tli = DistInsertTimeLine();
		pos = GetXLogInsertRecPtr();
	}
	PG_RETURN_TEXT_P(DistTokenToText(tli, pos));
}

/* ------------------------------------------------------------------------
 * Waiter slots
 * ------------------------------------------------------------------------
 */

static DistWaiter *
DistMySlot(void)
{
	int			procno = DistMyProcNumber();

	if (procno < 0 || procno >= dist_shared->nslots)
		elog(ERROR, "backend %d has no waiter slot", procno);
	return &dist_shared->waiters[procno];
}

/* Arm (or re-arm) this backend's slot for the token. */
static void
DistArm(DistToken token)
{
	DistWaiter *slot = DistMySlot();
	Latch	   *watcher;
	bool		first;

	LWLockAcquire(dist_shared->waiters_lock, LW_EXCLUSIVE);
	first = !slot->in_use;
	if (first)
	{
		slot->in_use = true;
		slot->pid = MyProcPid;
		slot->latch = MyLatch;
		slot->started = dist_wait_started;
		dist_shared->nwaiting++;
	}
	slot->tli = token.tli;
	slot->lsn = token.lsn;
	slot->armed = true;
	watcher = dist_shared->watcher_latch;
	LWLockRelease(dist_shared->waiters_lock);

	/* the watcher sleeps without a timeout while nobody waits */
	if (first && watcher != NULL)
		SetLatch(watcher);
}

static void
DistDisarm(void)
{
	DistWaiter *slot = DistMySlot();

	LWLockAcquire(dist_shared->waiters_lock, LW_EXCLUSIVE);
	if (slot->in_use)
	{
		memset(slot, 0, sizeof(DistWaiter));
		dist_shared->nwaiting--;
	}
	LWLockRelease(dist_shared->waiters_lock);
}

/* Error and exit path of a wait: free the slot and count the wait. */
static void
DistWaitCleanup(int code, Datum arg)
{
	DistDisarm();
	pg_atomic_fetch_add_u64(&dist_shared->counters.waits_cancelled, 1);
	pg_atomic_fetch_add_u64(&dist_shared->counters.wait_time_us,
							(uint64) Max(0, GetCurrentTimestamp() - dist_wait_started));
}

static bool
DistWatcherRunning(void)
{
	bool		running;

	LWLockAcquire(dist_shared->waiters_lock, LW_SHARED);
	running = dist_shared->watcher_latch != NULL;
	LWLockRelease(dist_shared->waiters_lock);
	return running;
}

/* ------------------------------------------------------------------------
 * Waiting
 * ------------------------------------------------------------------------
 */

static DistWaitResult
DistResultOf(DistTokenStatus state, DistToken token, bool began_in_recovery)
{
	/*
	 * A wait that began on a standby and ends on a promoted server reports
	 * the promotion, unless the token lies on a timeline this server left
	 * before (then its history proves the write is here).  A token on the
	 * promoted server's new timeline number may come from another server
	 * promoted to the same number: that is not proof.
	 */
	if (began_in_recovery && !RecoveryInProgress())
	{
		if (state == DIST_REACHED && token.tli != 0 &&
			token.tli < DistInsertTimeLine())
			return DIST_WAIT_REACHED;
		return DIST_WAIT_PROMOTED;
	}

	switch (state)
	{
		case DIST_REACHED:
			return DIST_WAIT_REACHED;
		case DIST_NEVER:
			return DIST_WAIT_UNREACHABLE;
		case DIST_NOT_IN_RECOVERY:
			return began_in_recovery ? DIST_WAIT_PROMOTED : DIST_WAIT_NOT_IN_RECOVERY;
		case DIST_PENDING:
			break;
	}
	return DIST_WAIT_TIMEOUT;
}

static DistWaitResult
DistWait(DistToken token, int32 timeout_ms)
{
	bool		began_in_recovery = RecoveryInProgress();
	DistTokenStatus state;
	DistWaitResult result;
	TimestampTz deadline;
	pg_atomic_uint64 *counter;

	dist_wait_started = GetCurrentTimestamp();
	deadline = TimestampTzPlusMilliseconds(dist_wait_started, timeout_ms);
	pg_atomic_fetch_add_u64(&dist_shared->counters.waits_started, 1);

	state = DistTokenState(token);
	if (state == DIST_PENDING && timeout_ms > 0)
	{
		/*
		 * A bare LSN is taken to be on the timeline being replayed when the
		 * wait starts; the watcher compares both.
		 */
		if (token.tli == 0)
			(void) GetXLogReplayRecPtr(&token.tli);

		PG_ENSURE_ERROR_CLEANUP(DistWaitCleanup, (Datum) 0);
		{
			for (;;)
			{
				TimestampTz now;
				long		remaining;
				int			rc;

				DistArm(token);
				state = DistTokenState(token);
				if (state != DIST_PENDING)
					break;

				now = GetCurrentTimestamp();
				if (now >= deadline)
					break;
				remaining = (long) ((deadline - now + 999) / 1000);
				if (remaining > PG_INT32_MAX)
					remaining = PG_INT32_MAX;
				if (!DistWatcherRunning())
					remaining = Min(remaining, dist_watch_interval_ms);

				rc = WaitLatch(MyLatch,
							   WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							   remaining, dist_wait_event_replay);
				if (rc & WL_LATCH_SET)
					ResetLatch(MyLatch);
				CHECK_FOR_INTERRUPTS();
			}
		}
		PG_END_ENSURE_ERROR_CLEANUP(DistWaitCleanup, (Datum) 0);
		DistDisarm();
	}

	result = DistResultOf(state, token, began_in_recovery);
	switch (result)
	{
		case DIST_WAIT_REACHED:
			counter = &dist_shared->counters.waits_reached;
			break;
		case DIST_WAIT_TIMEOUT:
			counter = &dist_shared->counters.waits_timed_out;
			break;
		case DIST_WAIT_PROMOTED:
			counter = &dist_shared->counters.waits_promoted;
			break;
		case DIST_WAIT_NOT_IN_RECOVERY:
			counter = &dist_shared->counters.waits_not_in_recovery;
			break;
		default:
			counter = &dist_shared->counters.waits_unreachable;
			break;
	}
	pg_atomic_fetch_add_u64(counter, 1);
	pg_atomic_fetch_add_u64(&dist_shared->counters.wait_time_us,
							(uint64) Max(0, GetCurrentTimestamp() - dist_wait_started));
	return result;
}

static Datum
DistWaitResultDatum(DistWaitResult result)
{
	return PointerGetDatum(cstring_to_text(dist_wait_result_names[result]));
}

PG_FUNCTION_INFO_V1(distributed_wait);
Datum
distributed_wait(PG_FUNCTION_ARGS)
{
	DistToken	token;
	int32		timeout;

	DistCheckLoaded();
	token = DistTokenArg(fcinfo, 0, false);
	timeout = DistTimeoutArg(fcinfo, 1);
	return DistWaitResultDatum(DistWait(token, timeout));
}

PG_FUNCTION_INFO_V1(distributed_wait_lsn);
Datum
distributed_wait_lsn(PG_FUNCTION_ARGS)
{
	DistToken	token;
	int32		timeout;

	DistCheckLoaded();
	token = DistTokenArg(fcinfo, 0, true);
	timeout = DistTimeoutArg(fcinfo, 1);
	return DistWaitResultDatum(DistWait(token, timeout));
}

/*
 * Report a wait that did not reach its token as an error, for the
 * procedure form (which can return no status: a CALL that returns a row
 * keeps a registered snapshot for the row, the very thing it must drop).
 */
static void
DistRaiseWaitResult(DistWaitResult result, DistToken token, int32 timeout)
{
	TimeLineID	tli = 0;
	XLogRecPtr	pos;

	if (result == DIST_WAIT_REACHED)
		return;
	if (RecoveryInProgress())
		pos = GetXLogReplayRecPtr(&tli);
	else
	{
		pos = DistFlushRecPtr();
		tli = DistInsertTimeLine();
	}
	if (token.tli == 0)
		token.tli = tli;

	/*
	 * A client that was just told "not yet" wants to know how far replay
	 * got.  (The abort refreshes the reported position as well.)
	 */
	DistReportReplayPosition();

	switch (result)
	{
		case DIST_WAIT_TIMEOUT:
			ereport(ERROR,
					(errcode(ERRCODE_QUERY_CANCELED),
					 errmsg("timed out after %d ms waiting for replay of %u:%X/%X",
							timeout, token.tli, LSN_FORMAT_ARGS(token.lsn)),
					 errdetail("Replay is at %u:%X/%X.", tli, LSN_FORMAT_ARGS(pos))));
			break;
		case DIST_WAIT_PROMOTED:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("server was promoted while waiting for replay of %u:%X/%X",
							token.tli, LSN_FORMAT_ARGS(token.lsn)),
					 errdetail("Recovery ended before replaying that position; on the new timeline it may never hold that write.")));
			break;
		case DIST_WAIT_NOT_IN_RECOVERY:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("recovery is not in progress"),
					 errdetail("This server is not a standby and has not written %X/%X; it will never replay it.",
							   LSN_FORMAT_ARGS(token.lsn))));
			break;
		case DIST_WAIT_UNREACHABLE:
			ereport(ERROR,
					(errcode(ERRCODE_DIST_UNREACHABLE),
					 errmsg("token %u:%X/%X is not on this server's timeline",
							token.tli, LSN_FORMAT_ARGS(token.lsn)),
					 errdetail("This server's timeline history left timeline %u before that position; the write is not here and never will be.",
							   token.tli)));
			break;
		default:
			break;
	}
}

/*
 * CALL distributed.wait_for(token, timeout_ms): like distributed.wait(),
 * but holding no snapshot while it sleeps.  Returns nothing when the token
 * is reached and raises an error otherwise.
 */
static void
DistWaitForCommon(FunctionCallInfo fcinfo, bool is_lsn)
{
	CallContext *ctx = (CallContext *) fcinfo->context;
	DistToken	token;
	int32		timeout;

	DistCheckLoaded();
	if (ctx == NULL || !IsA(ctx, CallContext) || ctx->atomic)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("distributed.wait_for() cannot run inside a transaction block"),
				 errdetail("It must drop its snapshot before it sleeps, which only a top-level CALL in autocommit mode can do."),
				 errhint("CALL it outside BEGIN ... COMMIT, or use the function distributed.wait() instead.")));

	token = DistTokenArg(fcinfo, 0, is_lsn);
	timeout = DistTimeoutArg(fcinfo, 1);

	/*
	 * A non-atomic CALL (top level, or from a DO block or procedure that may
	 * COMMIT) runs with only portal snapshots active.  Release them the way
	 * SPI_commit does, so that every portal knows its snapshot is gone and
	 * takes a new one when it next needs one.  Any other active snapshot
	 * (the query of an enclosing FOR loop, say) is not ours to drop.  Then
	 * drop the catalog snapshot, and give up if anything still holds one (a
	 * REPEATABLE READ or SERIALIZABLE transaction registers its snapshot for
	 * its whole life).
	 */
	if (ActiveSnapshotSet() &&
		(ActivePortal == NULL || ActivePortal->portalSnapshot != GetActiveSnapshot()))
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("distributed.wait_for() cannot run while a query holds a snapshot"),
				 errdetail("It was called under a statement that keeps its own snapshot, such as a FOR loop over a query."),
				 errhint("Call it outside that statement, or use the function distributed.wait() instead.")));
	if (ActiveSnapshotSet())
		ForgetPortalSnapshots();
	InvalidateCatalogSnapshot();
	if (DistHoldsSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("distributed.wait_for() cannot run while a snapshot is held"),
				 errdetail("A snapshot held while waiting can hold back the replay being waited for."),
				 errhint("CALL it with default_transaction_isolation set to read committed, or use the function distributed.wait() instead.")));

	DistRaiseWaitResult(DistWait(token, timeout), token, timeout);
}

PG_FUNCTION_INFO_V1(distributed_wait_for);
Datum
distributed_wait_for(PG_FUNCTION_ARGS)
{
	DistWaitForCommon(fcinfo, false);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(distributed_wait_for_lsn);
Datum
distributed_wait_for_lsn(PG_FUNCTION_ARGS)
{
	DistWaitForCommon(fcinfo, true);
	PG_RETURN_VOID();
}

/* ------------------------------------------------------------------------
 * The replay watcher
 * ------------------------------------------------------------------------
 */

void
DistRegisterWatcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, sizeof(worker.bgw_library_name),
			 "distributed");
	snprintf(worker.bgw_function_name, sizeof(worker.bgw_function_name),
			 "distributed_watcher_main");
	snprintf(worker.bgw_name, sizeof(worker.bgw_name),
			 "distributed replay watcher");
	snprintf(worker.bgw_type, sizeof(worker.bgw_type),
			 "distributed replay watcher");
	RegisterBackgroundWorker(&worker);
}

static void
DistWatcherExit(int code, Datum arg)
{
	LWLockAcquire(dist_shared->waiters_lock, LW_EXCLUSIVE);
	if (dist_shared->watcher_pid == MyProcPid)
	{
		dist_shared->watcher_latch = NULL;
		dist_shared->watcher_pid = 0;
	}
	LWLockRelease(dist_shared->waiters_lock);
}

/*
 * Wake the waiters that replay has reached, or all of them when the
 * timeline changed or recovery ended.  Returns how many are still waiting.
 */
static int
DistWakeWaiters(bool wake_all, TimeLineID tli, XLogRecPtr replay)
{
	Latch	   *wake[64];
	int			nwake = 0;
	int			nwaiting;
	int			start = 0;

	/* batches of 64, setting latches only after the lock is released */
	for (;;)
	{
		int			i;

		LWLockAcquire(dist_shared->waiters_lock, LW_EXCLUSIVE);
		nwaiting = dist_shared->nwaiting;
		for (i = start; i < dist_shared->nslots && nwake < lengthof(wake); i++)
		{
			DistWaiter *slot = &dist_shared->waiters[i];

			if (!slot->in_use || !slot->armed)
				continue;
			if (wake_all || (slot->tli == tli && slot->lsn <= replay))
			{
				slot->armed = false;
				wake[nwake++] = slot->latch;
			}
		}
		LWLockRelease(dist_shared->waiters_lock);

		for (int j = 0; j < nwake; j++)
			SetLatch(wake[j]);
		if (i >= dist_shared->nslots)
			break;
		start = i;
		nwake = 0;
	}
	return nwaiting;
}

void
distributed_watcher_main(Datum main_arg)
{
	TimeLineID	last_tli = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	LWLockAcquire(dist_shared->waiters_lock, LW_EXCLUSIVE);
	dist_shared->watcher_latch = MyLatch;
	dist_shared->watcher_pid = MyProcPid;
	LWLockRelease(dist_shared->waiters_lock);
	before_shmem_exit(DistWatcherExit, (Datum) 0);

	for (;;)
	{
		int			nwaiting;
		long		timeout = -1;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		LWLockAcquire(dist_shared->waiters_lock, LW_SHARED);
		nwaiting = dist_shared->nwaiting;
		LWLockRelease(dist_shared->waiters_lock);

		if (nwaiting > 0)
		{
			bool		in_recovery = RecoveryInProgress();
			TimeLineID	tli = 0;
			XLogRecPtr	replay = InvalidXLogRecPtr;

			if (in_recovery)
				replay = GetXLogReplayRecPtr(&tli);
			nwaiting = DistWakeWaiters(!in_recovery || tli != last_tli,
									   tli, replay);
			last_tli = tli;
			if (nwaiting > 0)
				timeout = dist_watch_interval_ms;
		}

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_EXIT_ON_PM_DEATH |
						 (timeout >= 0 ? WL_TIMEOUT : 0),
						 timeout, PG_WAIT_EXTENSION);
	}
}

/* ------------------------------------------------------------------------
 * Reporting the replay position (moved here from leader.c)
 * ------------------------------------------------------------------------
 */

/* Last replay position this backend reported. */
static XLogRecPtr dist_reported_replay = InvalidXLogRecPtr;
static TimeLineID dist_reported_replay_tli = 0;

/*
 * On a follower, refresh distributed.replay_position if replay has moved
 * since this backend last reported it; report.c tells the client before
 * the next ReadyForQuery.  Called at the end of every transaction,
 * committed or aborted.  Raises no error.
 */
void
DistReportReplayPosition(void)
{
	TimeLineID	tli;
	XLogRecPtr	replay;

	if (!dist_report_replay || !RecoveryInProgress())
		return;
	replay = GetXLogReplayRecPtr(&tli);
	if (replay != dist_reported_replay || tli != dist_reported_replay_tli)
	{
		dist_reported_replay = replay;
		dist_reported_replay_tli = tli;
		DistReport(DIST_REPORT_REPLAY_POSITION, tli, replay);
	}
}
