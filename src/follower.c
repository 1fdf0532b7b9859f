/*-------------------------------------------------------------------------
 *
 * follower.c
 *		Replay checks and waits.
 *
 * A check (distributed.is_replayed) compares a token with this server's
 * replay position once.  A wait (distributed.wait, CALL distributed.
 * wait_for) sleeps until replay reaches the token, the timeout passes, the
 * server is promoted, or the token turns out to be unreachable here.  How a
 * waiter sleeps and who wakes it (the replay watcher) is in waiter.c.
 *
 * The procedure form drops its snapshot before sleeping (as PostgreSQL
 * 17's reverted pg_wal_replay_wait did): a held snapshot can make replay
 * wait for it (a recovery conflict), which would hold back the very replay
 * being waited for.  It needs no transaction control to do so: in READ
 * COMMITTED every statement takes a new snapshot, so dropping the portal's
 * snapshot is enough, also inside a transaction block or a multi-statement
 * query string (where the CALL is atomic).  "CALL wait_for(...); SELECT
 * ..." therefore works as one message, and the SELECT reads with a snapshot
 * taken after the wait.
 *
 * An answer speaks for the caller's next snapshot.  Under REPEATABLE READ
 * or SERIALIZABLE the transaction's snapshot was taken before any of these
 * calls ran, and every later statement of the transaction reads with it;
 * whether it sees the write cannot be told, so the functions never vouch
 * for it there (is_replayed() is false, wait() answers 'stale_snapshot'
 * without sleeping), and the procedure ends the transaction first where it
 * may (a non-atomic CALL) and refuses where it may not.  In READ COMMITTED
 * the statement that runs wait() keeps the snapshot it started with: it is
 * the next statement that sees the write.
 *
 * Copyright (c) 2026, distributed contributors
 *
 * IDENTIFICATION
 *	  src/follower.c
 *
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
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
	DIST_WAIT_UNREACHABLE,
	DIST_WAIT_STALE_SNAPSHOT
} DistWaitResult;

static const char *const dist_wait_result_names[] = {
	"reached",
	"timeout",
	"promoted",
	"not_in_recovery",
	"unreachable",
	"stale_snapshot"
};

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

/*
 * Will the caller's next statement read with a snapshot taken before this
 * call?  Under REPEATABLE READ and SERIALIZABLE, once the transaction's
 * snapshot is taken every later statement of the transaction uses it, and
 * whether this statement is the transaction's last (autocommit) cannot be
 * told from here: a pipeline or a DO block may go on in it.
 */
static bool
DistSnapshotFixed(void)
{
	return IsolationUsesXactSnapshot() && FirstSnapshotSet;
}

/*
 * DistTokenState(), rejecting a token that no write of this history has.
 * Not inlined: DistWait() calls it beside a PG_ENSURE_ERROR_CLEANUP block,
 * where gcc's -Wclobbered would flag the inlined local.
 */
static pg_noinline DistTokenStatus
DistTokenStateChecked(DistToken token)
{
	DistTokenStatus state = DistTokenState(token);

	if (state == DIST_BEFORE_TIMELINE)
		DistRaiseBeforeTimeline(token);
	return state;
}

static bool
DistIsReplayed(DistToken token)
{
	bool		safe = DistTokenStateChecked(token) == DIST_REACHED &&
		!DistSnapshotFixed();

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
		case DIST_BEFORE_TIMELINE:
			DistRaiseBeforeTimeline(token);
			break;
		case DIST_PENDING:
			break;
	}
	return DIST_WAIT_TIMEOUT;
}

/* Count a wait's outcome and its time. */
static void
DistCountWait(DistWaitResult result)
{
	pg_atomic_uint64 *counter;

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
		case DIST_WAIT_STALE_SNAPSHOT:
			counter = &dist_shared->counters.waits_stale_snapshot;
			break;
		default:
			counter = &dist_shared->counters.waits_unreachable;
			break;
	}
	pg_atomic_fetch_add_u64(counter, 1);
	pg_atomic_fetch_add_u64(&dist_shared->counters.wait_time_us,
							(uint64) Max(0, GetCurrentTimestamp() - dist_wait_started));
}

/*
 * wait() in a transaction whose snapshot is fixed (see DistSnapshotFixed):
 * sleeping cannot make that snapshot see anything, so answer at once, and
 * never 'reached'.
 */
static DistWaitResult
DistWaitFixedSnapshot(DistToken token)
{
	DistTokenStatus state;
	DistWaitResult result = DIST_WAIT_STALE_SNAPSHOT;

	dist_wait_started = GetCurrentTimestamp();
	pg_atomic_fetch_add_u64(&dist_shared->counters.waits_started, 1);
	state = DistTokenStateChecked(token);
	if (state == DIST_NEVER)
		result = DIST_WAIT_UNREACHABLE;
	else if (state == DIST_NOT_IN_RECOVERY)
		result = DIST_WAIT_NOT_IN_RECOVERY;
	DistCountWait(result);
	return result;
}

static DistWaitResult
DistWait(DistToken token, int32 timeout_ms)
{
	bool		began_in_recovery = RecoveryInProgress();
	DistTokenStatus state;
	DistWaitResult result;
	TimestampTz deadline;

	dist_wait_started = GetCurrentTimestamp();
	deadline = TimestampTzPlusMilliseconds(dist_wait_started, timeout_ms);
	pg_atomic_fetch_add_u64(&dist_shared->counters.waits_started, 1);

	/* follower: reject a token before its timeline began, before arming */
	state = DistTokenStateChecked(token);
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
			/* arm, check, sleep, check, ...: see DistSleepUntil() */
			while (DistSleepUntil(token, deadline))
			{
				CHECK_FOR_INTERRUPTS();
				state = DistTokenState(token);
				if (state != DIST_PENDING)
					break;
			}
		}
		PG_END_ENSURE_ERROR_CLEANUP(DistWaitCleanup, (Datum) 0);
		DistDisarm();
	}

	result = DistResultOf(state, token, began_in_recovery);
	DistCountWait(result);
	return result;
}

static Datum
DistWaitResultDatum(DistWaitResult result)
{
	return PointerGetDatum(cstring_to_text(dist_wait_result_names[result]));
}

/* The function form: a status for the caller's next statement. */
static Datum
DistWaitFunction(DistToken token, int32 timeout)
{
	if (DistSnapshotFixed())
		return DistWaitResultDatum(DistWaitFixedSnapshot(token));
	return DistWaitResultDatum(DistWait(token, timeout));
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
	return DistWaitFunction(token, timeout);
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
	return DistWaitFunction(token, timeout);
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
	bool		bare = token.tli == 0;

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
	 * The error aborts the transaction, and the abort reports the replay
	 * position (DistReportReplayPosition()), so the client told "not yet"
	 * also learns how far replay got.
	 */
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
					(errcode(ERRCODE_DIST_PROMOTED),
					 errmsg("server was promoted while waiting for replay of %u:%X/%X",
							token.tli, LSN_FORMAT_ARGS(token.lsn)),
					 errdetail("Recovery ended before replaying that position; on the new timeline it may never hold that write.")));
			break;
		case DIST_WAIT_NOT_IN_RECOVERY:
			ereport(ERROR,
					(errcode(ERRCODE_DIST_NOT_IN_RECOVERY),
					 errmsg("recovery is not in progress"),
					 errdetail("This server is not a standby and has not written %X/%X; it will never replay it.",
							   LSN_FORMAT_ARGS(token.lsn))));
			break;
		case DIST_WAIT_UNREACHABLE:
			if (bare)
				ereport(ERROR,
						(errcode(ERRCODE_DIST_UNREACHABLE),
						 errmsg("LSN %X/%X lies past this server's first timeline switch",
								LSN_FORMAT_ARGS(token.lsn)),
						 errdetail("Past that point a bare LSN could name a write lost with a former leader as well as one of this server's history."),
						 errhint("Pass the token with its timeline, as \"<timeline>:<lsn>\".")));
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
	if (ctx == NULL || !IsA(ctx, CallContext))
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("cannot wait for replay outside a CALL statement")));

	token = DistTokenArg(fcinfo, 0, is_lsn);
	timeout = DistTimeoutArg(fcinfo, 1);

	/*
	 * Under REPEATABLE READ or SERIALIZABLE, a transaction whose snapshot is
	 * taken reads every later statement with it: that snapshot must not be
	 * held while sleeping, nor read with afterwards.  A non-atomic CALL (top
	 * level in autocommit mode, the first statement of a pipeline) may end
	 * its transaction, as a procedure that COMMITs does; the rest then runs
	 * in a new transaction, which takes its snapshot after the wait.  It
	 * does not commit what a caller wrote (a DO block on the leader, say).
	 * Anywhere else (a transaction block, a multi-statement query string)
	 * the snapshot stays, and a wait could not serve the reads after it.
	 */
	if (IsolationUsesXactSnapshot() && FirstSnapshotSet)
	{
		if (ctx->atomic || TransactionIdIsValid(GetTopTransactionIdIfAny()))
			ereport(ERROR,
					(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
					 errmsg("cannot wait for replay in a transaction that has taken its snapshot"),
					 errdetail("Under REPEATABLE READ or SERIALIZABLE the later statements of this transaction read with a snapshot taken before the wait, which cannot see what replay applies during it."),
					 errhint("Wait before the transaction begins, or in READ COMMITTED.")));
		SPI_connect_ext(SPI_OPT_NONATOMIC);
		SPI_commit();
		SPI_finish();
	}

	/*
	 * Otherwise only the statements' own snapshots are active: the portal
	 * snapshot of this CALL (and, in a non-atomic CALL from a DO block or
	 * procedure, those of the portals around it).  Release them the way
	 * SPI_commit does, so that every portal knows its snapshot is gone and
	 * takes a new one when it next needs one; in READ COMMITTED the next
	 * statement takes a new snapshot anyway.  Any other active snapshot (the
	 * query of an enclosing FOR loop, a function's statement) is not ours to
	 * drop.  Then drop the catalog snapshot, and give up if anything still
	 * holds one (an open cursor, say).
	 */
	if (ActiveSnapshotSet() &&
		(ActivePortal == NULL || ActivePortal->portalSnapshot != GetActiveSnapshot()))
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("cannot wait for replay while the calling query holds a snapshot"),
				 errdetail("The procedure was called under a statement that keeps its own snapshot, such as a function or a FOR loop over a query."),
				 errhint("Call it as a statement of its own, or use the function distributed.wait() instead.")));
	if (ActiveSnapshotSet())
		ForgetPortalSnapshots();
	InvalidateCatalogSnapshot();
	if (DistHoldsSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("cannot wait for replay while a snapshot is held"),
				 errdetail("A snapshot held while waiting can hold back the replay being waited for."),
				 errhint("Close open cursors first, or use the function distributed.wait() instead.")));

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
 * Reporting the replay position (moved here from leader.c)
 * ------------------------------------------------------------------------
 */

/*
 * On a follower, make replay's position the value of
 * distributed.replay_position; report.c tells the client before the next
 * ReadyForQuery if it has moved since the client was last told.  Called at
 * the end of every transaction, committed or aborted.  Raises no error.
 */
void
DistReportReplayPosition(void)
{
	TimeLineID	tli;
	XLogRecPtr	replay;

	if (!dist_report_replay || !RecoveryInProgress())
		return;
	replay = GetXLogReplayRecPtr(&tli);
	DistReport(DIST_REPORT_REPLAY_POSITION, tli, replay);
}
