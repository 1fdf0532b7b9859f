/*-------------------------------------------------------------------------
 *
 * leader.c
 *		Commit tokens: the commit callback and the session map.
 *
 * After every transaction that wrote a commit record, DistXactCallback
 * takes XactLastCommitEnd (the end of that record, never an earlier
 * position: a follower can reach an earlier one while the commit itself is
 * still unapplied) and
 *
 *	- sets distributed.last_commit, a GUC_REPORT setting, so the server
 *	  sends the token to the client in a ParameterStatus message before
 *	  ReadyForQuery: no extra round trip;
 *	- if distributed.session_key is set (per connection or SET LOCAL),
 *	  raises that key's position in the shared session map.
 *
 * The callback runs after the commit is durable, where an error would be
 * too late to undo anything, so nothing on its path may raise one: the
 * setting is changed with elevel WARNING, the map insert uses
 * HASH_ENTER_NULL (and falls back to raising the floor), and the only lock
 * taken is one partition's LWLock, held for a hash probe and a list move.
 *
 * On a follower the same callback, at the end of every transaction,
 * refreshes distributed.replay_position, so that a client learns how far
 * the follower has replayed from any reply.
 *
 * Answers never under-report (design invariant 2): an evicted or forgotten
 * entry raises the floor to its position first, and the floor starts at the
 * end of WAL at start-up or promotion (DistEnsureFloor).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "distributed.h"

/* XactLastCommitEnd as of the last commit this backend reported. */
static XLogRecPtr dist_reported_commit_end = InvalidXLogRecPtr;

/* This backend's last commit token, for distributed.last_commit(). */
static TimeLineID dist_last_tli = 0;
static XLogRecPtr dist_last_lsn = InvalidXLogRecPtr;

/* Set while a COMMIT PREPARED runs, until its transaction ends. */
static bool dist_commit_prepared = false;

static ProcessUtility_hook_type prev_process_utility = NULL;

/* Last replay position this backend reported. */
static XLogRecPtr dist_reported_replay = InvalidXLogRecPtr;
static TimeLineID dist_reported_replay_tli = 0;

static int
DistPartitionOf(const char *key)
{
	if (dist_shared->npartitions == 1)
		return 0;
	/*
	 * dynahash picks a bucket from the low bits of the same string hash;
	 * remix it, or every key of a partition would share its low bits and
	 * crowd into a sixteenth of the buckets.
	 */
	return murmurhash32(hash_bytes((const unsigned char *) key, strlen(key))) %
		dist_shared->npartitions;
}

/*
 * Evict the least recently written entry of a partition, raising the floor
 * to its position first.  Caller must hold the partition's lock exclusively.
 */
static void
DistEvictOne(int part)
{
	DistPartition *p = &dist_shared->partitions[part];
	DistSessionEntry *victim;

	if (dlist_is_empty(&p->lru))
		return;
	victim = dlist_head_element(DistSessionEntry, lru, &p->lru);
	DistRaiseFloor(victim->tli, victim->lsn);
	dlist_delete(&victim->lru);
	hash_search(dist_tables[part], victim->key, HASH_REMOVE, NULL);
	pg_atomic_fetch_add_u64(&dist_shared->counters.evictions, 1);
}

/*
 * Raise key's position to at least (tli, lsn).  Raises no error: if the
 * entry cannot be stored, the floor is raised instead, which keeps every
 * answer at or above the truth.
 */
static void
DistRecordKey(const char *key, TimeLineID tli, XLogRecPtr lsn,
			  TimestampTz when)
{
	int			part = DistPartitionOf(key);
	DistPartition *p = &dist_shared->partitions[part];
	HTAB	   *table = dist_tables[part];
	DistSessionEntry *entry;
	bool		found;

	DistEnsureFloor();

	LWLockAcquire(p->lock, LW_EXCLUSIVE);
	entry = hash_search(table, key, HASH_FIND, NULL);
	if (entry == NULL)
	{
		while (hash_get_num_entries(table) >= p->capacity &&
			   !dlist_is_empty(&p->lru))
			DistEvictOne(part);
		entry = hash_search(table, key, HASH_ENTER_NULL, &found);
		if (entry == NULL)
		{
			DistRaiseFloor(tli, lsn);
			LWLockRelease(p->lock);
			return;
		}
		entry->lsn = InvalidXLogRecPtr;
		entry->tli = tli;
	}
	else
		dlist_delete(&entry->lru);
	dlist_push_tail(&p->lru, &entry->lru);

	if (lsn > entry->lsn)
	{
		entry->lsn = lsn;
		entry->tli = tli;
	}
	entry->written = when;
	LWLockRelease(p->lock);
}

/*
 * The answer for a key: its position, or the floor if that is higher.
 */
static void
DistLookupKey(const char *key, TimeLineID *tli, XLogRecPtr *lsn)
{
	int			part = DistPartitionOf(key);
	DistPartition *p = &dist_shared->partitions[part];
	DistSessionEntry *entry;
	TimeLineID	ftli;
	XLogRecPtr	flsn;

	DistEnsureFloor();

	LWLockAcquire(p->lock, LW_SHARED);
	entry = hash_search(dist_tables[part], key, HASH_FIND, NULL);
	/* read the floor under the lock: eviction raises it before removing */
	DistReadFloor(&ftli, &flsn);
	if (entry != NULL && entry->lsn >= flsn)
	{
		*tli = entry->tli;
		*lsn = entry->lsn;
	}
	else
	{
		*tli = ftli;
		*lsn = flsn;
	}
	LWLockRelease(p->lock);
}

static void
DistSetReported(const char *name, const char *value)
{
	/* elevel WARNING: a failure is reported, never raised */
	(void) set_config_option(name, value, PGC_INTERNAL, PGC_S_OVERRIDE,
							 GUC_ACTION_SET, true, WARNING, false);
}

void
DistXactCallback(XactEvent event, void *arg)
{
	char		buf[DIST_TOKEN_BUFLEN];

	if (event == XACT_EVENT_ABORT)
		dist_commit_prepared = false;
	if (event != XACT_EVENT_COMMIT || dist_shared == NULL)
		return;

	/*
	 * A transaction with an xid always writes a commit record, and
	 * RecordTransactionCommit has just set XactLastCommitEnd to its end.
	 * COMMIT PREPARED runs without an xid of its own; there it is the end of
	 * the commit-prepared record.  (Read-only transactions that pruned a
	 * page move XactLastCommitEnd too: they are no write of the session's,
	 * and are not reported.)
	 */
	if ((TransactionIdIsValid(GetTopTransactionIdIfAny()) || dist_commit_prepared) &&
		XactLastCommitEnd != InvalidXLogRecPtr &&
		XactLastCommitEnd != dist_reported_commit_end)
	{
		TimeLineID	tli = DistInsertTimeLine();

		dist_commit_prepared = false;
		dist_reported_commit_end = XactLastCommitEnd;
		dist_last_tli = tli;
		dist_last_lsn = XactLastCommitEnd;

		DistFormatToken(buf, tli, XactLastCommitEnd);
		DistSetReported("distributed.last_commit", buf);

		if (dist_session_key != NULL && dist_session_key[0] != '\0')
		{
			DistRecordKey(dist_session_key, tli, XactLastCommitEnd,
						  GetCurrentTransactionStopTimestamp());
			pg_atomic_fetch_add_u64(&dist_shared->counters.commits_recorded, 1);
		}
		return;
	}

	DistReportReplayPosition();
}

/*
 * On a follower, refresh distributed.replay_position if replay has moved
 * since this backend last reported it.  Raises no error.
 */
void
DistReportReplayPosition(void)
{
	char		buf[DIST_TOKEN_BUFLEN];
	TimeLineID	tli;
	XLogRecPtr	replay;

	if (!dist_report_replay || !RecoveryInProgress())
		return;
	replay = GetXLogReplayRecPtr(&tli);
	if (replay != dist_reported_replay || tli != dist_reported_replay_tli)
	{
		dist_reported_replay = replay;
		dist_reported_replay_tli = tli;
		DistFormatToken(buf, tli, replay);
		DistSetReported("distributed.replay_position", buf);
	}
}

/*
 * Notice COMMIT PREPARED, whose transaction has no xid of its own but
 * writes the prepared transaction's commit record.
 */
static void
DistProcessUtility(PlannedStmt *pstmt, const char *queryString,
#if PG_VERSION_NUM >= 140000
				   bool readOnlyTree,
#endif
				   ProcessUtilityContext context, ParamListInfo params,
				   QueryEnvironment *queryEnv, DestReceiver *dest,
				   QueryCompletion *qc)
{
	Node	   *node = pstmt->utilityStmt;

	if (IsA(node, TransactionStmt) &&
		((TransactionStmt *) node)->kind == TRANS_STMT_COMMIT_PREPARED)
		dist_commit_prepared = true;

#if PG_VERSION_NUM >= 140000
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context,
							 params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
#else
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, context,
							 params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, context,
								params, queryEnv, dest, qc);
#endif
}

void
DistInstallUtilityHook(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = DistProcessUtility;
}

/* Read a non-NULL session key argument. */
static char *
DistKeyArg(FunctionCallInfo fcinfo, int argno)
{
	text	   *t;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("session key must not be null")));
	t = PG_GETARG_TEXT_PP(argno);
	DistCheckKey(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	return text_to_cstring(t);
}

static void
DistCheckLeader(void)
{
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("the session map is not available during recovery"),
				 errdetail("The session map lives on the leader; a follower does not know which keys have written."),
				 errhint("Call this function on the leader.")));
}

PG_FUNCTION_INFO_V1(distributed_last_commit);
Datum
distributed_last_commit(PG_FUNCTION_ARGS)
{
	DistCheckLoaded();
	if (dist_last_lsn == InvalidXLogRecPtr)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(DistTokenToText(dist_last_tli, dist_last_lsn));
}

PG_FUNCTION_INFO_V1(distributed_session_token);
Datum
distributed_session_token(PG_FUNCTION_ARGS)
{
	char	   *key;
	TimeLineID	tli;
	XLogRecPtr	lsn;

	DistCheckLoaded();
	key = DistKeyArg(fcinfo, 0);
	DistCheckLeader();
	DistLookupKey(key, &tli, &lsn);
	PG_RETURN_TEXT_P(DistTokenToText(tli, lsn));
}

PG_FUNCTION_INFO_V1(distributed_record);
Datum
distributed_record(PG_FUNCTION_ARGS)
{
	char	   *key;
	DistToken	token;
	TimeLineID	tli;
	XLogRecPtr	lsn;

	DistCheckLoaded();
	key = DistKeyArg(fcinfo, 0);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("token must not be null")));
	token = DistTokenFromText(PG_GETARG_TEXT_PP(1));
	DistCheckLeader();

	/*
	 * Only positions this server holds may be recorded: a position ahead of
	 * its WAL, or on a timeline it never had, would pin the key's reads to
	 * the leader for good.
	 */
	if (token.tli == 0)
		token.tli = DistInsertTimeLine();
	if (DistTokenState(token) != DIST_REACHED)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("token %u:%X/%X is not in this server's WAL",
						token.tli, LSN_FORMAT_ARGS(token.lsn)),
				 errdetail("This server is on timeline %u and has written up to %X/%X.",
						   DistInsertTimeLine(),
						   LSN_FORMAT_ARGS(GetXLogInsertRecPtr()))));

	DistRecordKey(key, token.tli, token.lsn, GetCurrentTimestamp());
	DistLookupKey(key, &tli, &lsn);
	PG_RETURN_TEXT_P(DistTokenToText(tli, lsn));
}

PG_FUNCTION_INFO_V1(distributed_forget);
Datum
distributed_forget(PG_FUNCTION_ARGS)
{
	char	   *key;
	int			part;
	DistPartition *p;
	DistSessionEntry *entry;

	DistCheckLoaded();
	key = DistKeyArg(fcinfo, 0);
	DistCheckLeader();
	DistEnsureFloor();

	part = DistPartitionOf(key);
	p = &dist_shared->partitions[part];
	LWLockAcquire(p->lock, LW_EXCLUSIVE);
	entry = hash_search(dist_tables[part], key, HASH_FIND, NULL);
	if (entry != NULL)
	{
		/* forgetting is an early eviction: the floor keeps its position */
		DistRaiseFloor(entry->tli, entry->lsn);
		dlist_delete(&entry->lru);
		hash_search(dist_tables[part], key, HASH_REMOVE, NULL);
	}
	LWLockRelease(p->lock);
	PG_RETURN_BOOL(entry != NULL);
}

PG_FUNCTION_INFO_V1(distributed_token_lsn);
Datum
distributed_token_lsn(PG_FUNCTION_ARGS)
{
	DistToken	token = DistTokenFromText(PG_GETARG_TEXT_PP(0));

	PG_RETURN_LSN(token.lsn);
}

PG_FUNCTION_INFO_V1(distributed_token_timeline);
Datum
distributed_token_timeline(PG_FUNCTION_ARGS)
{
	DistToken	token = DistTokenFromText(PG_GETARG_TEXT_PP(0));

	if (token.tli == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64((int64) token.tli);
}
