/*-------------------------------------------------------------------------
 *
 * leader.c
 *		Commit tokens: the commit callback, the session map and two-phase
 *		commit.
 *
 * After every transaction that wrote a commit record, DistXactCallback
 * takes XactLastCommitEnd (the end of that record, never an earlier
 * position: a follower can reach an earlier one while the commit itself is
 * still unapplied) and
 *
 *	- makes it this backend's distributed.last_commit, which report.c sends
 *	  to the client in a ParameterStatus message before ReadyForQuery: no
 *	  extra round trip;
 *	- if distributed.session_key is set (per connection or SET LOCAL),
 *	  raises that key's position in the shared session map.
 *
 * The callback runs after the commit is durable, where an error would be
 * too late to undo anything, so nothing on its path may raise one: the map
 * insert uses HASH_ENTER_NULL (and falls back to raising the floor), no
 * memory is allocated, and the only locks taken are one partition's LWLock,
 * held for a hash probe and a list move, and for COMMIT PREPARED the
 * prepared-transaction table's lock, held for one probe.
 *
 * Two-phase commit.  COMMIT PREPARED may run in any session, long after the
 * PREPARE TRANSACTION, even after a restart.  At PREPARE the key in force is
 * stored against the global transaction identifier (GID) in a shared table
 * (dist_prepared, one entry per max_prepared_transactions); the COMMIT
 * PREPARED records its commit under that key, as well as under the key of
 * the session that runs it.  A GID the table does not know (prepared
 * before a restart, or the table was full) raises the floor to the commit
 * instead, which keeps every answer at or above the truth.
 *
 * On every server the callback also lets follower.c refresh the reported
 * replay position at the end of each transaction, committed or aborted.
 *
 * Answers never under-report (design invariant 2): an evicted or forgotten
 * entry raises the floor to its position first, and the floor starts at the
 * end of WAL at start-up or promotion (DistEnsureFloor).
 *
 * Copyright (c) 2026, distributed contributors
 *
 * IDENTIFICATION
 *		src/leader.c
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
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "distributed.h"

/* XactLastCommitEnd as of the last commit this backend reported. */
static XLogRecPtr dist_reported_commit_end = InvalidXLogRecPtr;

/* This backend's last commit token, for distributed.last_commit(). */
static TimeLineID dist_last_tli = 0;
static XLogRecPtr dist_last_lsn = InvalidXLogRecPtr;

/*
 * The two-phase command of the current transaction, noticed by the utility
 * hook and acted on when the transaction ends.
 */
typedef enum DistTwoPhaseCommand
{
	DIST_2PC_NONE,
	DIST_2PC_PREPARE,			/* PREPARE TRANSACTION dist_gid */
	DIST_2PC_COMMIT,			/* COMMIT PREPARED dist_gid */
	DIST_2PC_ROLLBACK			/* ROLLBACK PREPARED dist_gid */
} DistTwoPhaseCommand;

/* What the prepared-transaction table said about a GID being committed. */
typedef enum DistPreparedKey
{
	DIST_PREPARED_UNKNOWN,		/* not in the table: raise the floor */
	DIST_PREPARED_NO_KEY,		/* prepared without a session key */
	DIST_PREPARED_KEY			/* prepared under dist_prepared_key */
} DistPreparedKey;

static DistTwoPhaseCommand dist_2pc = DIST_2PC_NONE;
static char dist_gid[GIDSIZE];
static DistPreparedKey dist_prepared_found = DIST_PREPARED_UNKNOWN;
static TransactionId dist_prepared_xid = InvalidTransactionId;
static char dist_prepared_key[DIST_MAX_KEY_LEN + 1];

static ProcessUtility_hook_type prev_process_utility = NULL;

/* DistKeyHash(dist_session_key), kept by DistSessionKeyAssign() */
static uint32 dist_session_key_hash = 0;

/*
 * The hash of a key, as dynahash computes it for the partition tables
 * (HASH_STRINGS, keysize DIST_MAX_KEY_LEN + 1), so that it is computed once
 * per lookup and also picks the partition.
 */
static inline uint32
DistKeyHash(const char *key)
{
	return string_hash(key, DIST_MAX_KEY_LEN + 1);
}

static inline int
DistPartitionOf(uint32 hash)
{
	/*
	 * dynahash picks a bucket from the low bits of the same hash; remix it,
	 * or every key of a partition would share its low bits and crowd into a
	 * fraction of the buckets.
	 */
	if (dist_shared->npartitions == 1)
		return 0;
	return murmurhash32(hash) % dist_shared->npartitions;
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
 * Raise key's position to at least (tli, lsn); hash is DistKeyHash(key).
 * Raises no error and
 * allocates nothing: if the entry cannot be stored, the floor is raised
 * instead, which keeps every answer at or above the truth.
 */
static void
DistRecordKey(const char *key, uint32 hash, TimeLineID tli, XLogRecPtr lsn,
			  TimestampTz when)
{
	int			part = DistPartitionOf(hash);
	DistPartition *p = &dist_shared->partitions[part];
	HTAB	   *table = dist_tables[part];
	DistSessionEntry *entry;
	bool		found;

	DistEnsureFloor();

	LWLockAcquire(p->lock, LW_EXCLUSIVE);
	entry = hash_search_with_hash_value(table, key, hash, HASH_FIND, NULL);
	if (entry == NULL)
	{
		while (hash_get_num_entries(table) >= p->capacity &&
			   !dlist_is_empty(&p->lru))
			DistEvictOne(part);
		entry = hash_search_with_hash_value(table, key, hash,
											HASH_ENTER_NULL, &found);
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
	uint32		hash = DistKeyHash(key);
	int			part = DistPartitionOf(hash);
	DistPartition *p = &dist_shared->partitions[part];
	DistSessionEntry *entry;
	TimeLineID	ftli;
	XLogRecPtr	flsn;

	DistEnsureFloor();

	LWLockAcquire(p->lock, LW_SHARED);
	entry = hash_search_with_hash_value(dist_tables[part], key, hash,
										HASH_FIND, NULL);
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

/*
 * Assign hook of distributed.session_key: hash the key once per assignment
 * (the GUC machinery calls this for every change, including the restores at
 * transaction end), not once per commit.
 */
void
DistSessionKeyAssign(const char *newval, void *extra)
{
	dist_session_key_hash = newval != NULL ? DistKeyHash(newval) : 0;
}

static inline bool
DistKeySet(void)
{
	return dist_session_key != NULL && dist_session_key[0] != '\0';
}

/* ------------------------------------------------------------------------
 * Two-phase commit
 * ------------------------------------------------------------------------
 */

/*
 * At the end of PREPARE TRANSACTION: remember the key in force (or that
 * there was none) against the GID.  Runs before the prepared transaction is
 * released to other sessions (PostPrepare_Twophase), so no COMMIT PREPARED
 * can look for the entry before it exists.  Raises no error: with the table
 * full the GID stays unknown, and its commit raises the floor.
 */
static void
DistRememberPrepared(void)
{
	DistPreparedEntry *entry;
	bool		found;

	if (dist_prepared == NULL)
		return;
	LWLockAcquire(dist_shared->prepared_lock, LW_EXCLUSIVE);
	entry = hash_search(dist_prepared, dist_gid, HASH_ENTER_NULL, &found);
	if (entry != NULL)
	{
		entry->xid = GetTopTransactionIdIfAny();
		strlcpy(entry->key, DistKeySet() ? dist_session_key : "",
				sizeof(entry->key));
	}
	LWLockRelease(dist_shared->prepared_lock);
}

/*
 * Before COMMIT PREPARED runs: look up the key its transaction was prepared
 * under.  While the GID is still prepared no other transaction can take it,
 * so the entry found is that transaction's.
 */
static void
DistLookupPrepared(void)
{
	DistPreparedEntry *entry;

	dist_prepared_found = DIST_PREPARED_UNKNOWN;
	dist_prepared_xid = InvalidTransactionId;
	if (dist_prepared == NULL)
		return;
	LWLockAcquire(dist_shared->prepared_lock, LW_SHARED);
	entry = hash_search(dist_prepared, dist_gid, HASH_FIND, NULL);
	if (entry != NULL)
	{
		dist_prepared_xid = entry->xid;
		if (entry->key[0] == '\0')
			dist_prepared_found = DIST_PREPARED_NO_KEY;
		else
		{
			dist_prepared_found = DIST_PREPARED_KEY;
			strlcpy(dist_prepared_key, entry->key, sizeof(dist_prepared_key));
		}
	}
	LWLockRelease(dist_shared->prepared_lock);
}

/*
 * After COMMIT or ROLLBACK PREPARED committed: drop the GID's entry, unless
 * the GID has since been prepared again by another transaction.
 */
static void
DistForgetPrepared(void)
{
	DistPreparedEntry *entry;

	if (dist_prepared == NULL || dist_prepared_found == DIST_PREPARED_UNKNOWN)
		return;
	LWLockAcquire(dist_shared->prepared_lock, LW_EXCLUSIVE);
	entry = hash_search(dist_prepared, dist_gid, HASH_FIND, NULL);
	if (entry != NULL && entry->xid == dist_prepared_xid)
		hash_search(dist_prepared, dist_gid, HASH_REMOVE, NULL);
	LWLockRelease(dist_shared->prepared_lock);
}

/*
 * Record the commit of a prepared transaction under the key it was
 * prepared under; a transaction of unknown origin raises the floor.
 */
static void
DistRecordPreparedCommit(TimeLineID tli, XLogRecPtr end, TimestampTz when)
{
	switch (dist_prepared_found)
	{
		case DIST_PREPARED_UNKNOWN:
			DistEnsureFloor();
			DistRaiseFloor(tli, end);
			break;
		case DIST_PREPARED_NO_KEY:
			break;
		case DIST_PREPARED_KEY:
			DistRecordKey(dist_prepared_key, DistKeyHash(dist_prepared_key),
						  tli, end, when);
			pg_atomic_fetch_add_u64(&dist_shared->counters.commits_recorded, 1);
			break;
	}
}

/* ------------------------------------------------------------------------
 * The transaction callback
 * ------------------------------------------------------------------------
 */

static void
DistAtCommit(void)
{
	TimeLineID	tli;
	XLogRecPtr	end = XactLastCommitEnd;
	TimestampTz when;

	/*
	 * A transaction with an xid always writes a commit record, and
	 * RecordTransactionCommit has just set XactLastCommitEnd to its end.
	 * COMMIT PREPARED runs without an xid of its own; there it is the end of
	 * the commit-prepared record.  (Read-only transactions that pruned a
	 * page move XactLastCommitEnd too, and so does ROLLBACK PREPARED: they
	 * are no write of the session's, and are not reported.)
	 */
	if (!(TransactionIdIsValid(GetTopTransactionIdIfAny()) ||
		  dist_2pc == DIST_2PC_COMMIT) ||
		end == InvalidXLogRecPtr || end == dist_reported_commit_end)
		return;

	tli = DistInsertTimeLine();
	dist_reported_commit_end = end;
	dist_last_tli = tli;
	dist_last_lsn = end;
	DistReport(DIST_REPORT_LAST_COMMIT, tli, end);

	if (!DistKeySet() && dist_2pc != DIST_2PC_COMMIT)
		return;

	when = GetCurrentTransactionStopTimestamp();
	if (DistKeySet())
	{
		DistRecordKey(dist_session_key, dist_session_key_hash, tli, end, when);
		pg_atomic_fetch_add_u64(&dist_shared->counters.commits_recorded, 1);
	}
	if (dist_2pc == DIST_2PC_COMMIT)
		DistRecordPreparedCommit(tli, end, when);
}

void
DistXactCallback(XactEvent event, void *arg)
{
	if (dist_shared == NULL)
		return;

	switch (event)
	{
		case XACT_EVENT_COMMIT:
			DistAtCommit();
			if (dist_2pc == DIST_2PC_COMMIT || dist_2pc == DIST_2PC_ROLLBACK)
				DistForgetPrepared();
			break;
		case XACT_EVENT_PREPARE:
			if (dist_2pc == DIST_2PC_PREPARE)
				DistRememberPrepared();
			break;
		case XACT_EVENT_ABORT:
			break;
		default:
			/* not the end of a top-level transaction */
			return;
	}
	dist_2pc = DIST_2PC_NONE;

	/* on a follower, report how far replay got; a no-op on a leader */
	DistReportReplayPosition();
}

/*
 * Notice the two-phase commands, whose work happens when their
 * transaction ends: PREPARE TRANSACTION, and COMMIT PREPARED, whose
 * transaction has no xid of its own but writes the prepared transaction's
 * commit record.
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

	if (IsA(node, TransactionStmt) && dist_shared != NULL)
	{
		TransactionStmt *stmt = (TransactionStmt *) node;

		switch (stmt->kind)
		{
			case TRANS_STMT_PREPARE:
				dist_2pc = DIST_2PC_PREPARE;
				strlcpy(dist_gid, stmt->gid, sizeof(dist_gid));
				break;
			case TRANS_STMT_COMMIT_PREPARED:
				dist_2pc = DIST_2PC_COMMIT;
				strlcpy(dist_gid, stmt->gid, sizeof(dist_gid));
				DistLookupPrepared();
				break;
			case TRANS_STMT_ROLLBACK_PREPARED:
				dist_2pc = DIST_2PC_ROLLBACK;
				strlcpy(dist_gid, stmt->gid, sizeof(dist_gid));
				DistLookupPrepared();
				break;
			default:
				break;
		}
	}

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

	DistRecordKey(key, DistKeyHash(key), token.tli, token.lsn,
				  GetCurrentTimestamp());
	DistLookupKey(key, &tli, &lsn);
	PG_RETURN_TEXT_P(DistTokenToText(tli, lsn));
}

PG_FUNCTION_INFO_V1(distributed_forget);
Datum
distributed_forget(PG_FUNCTION_ARGS)
{
	char	   *key;
	uint32		hash;
	int			part;
	DistPartition *p;
	DistSessionEntry *entry;

	DistCheckLoaded();
	key = DistKeyArg(fcinfo, 0);
	DistCheckLeader();
	DistEnsureFloor();

	hash = DistKeyHash(key);
	part = DistPartitionOf(hash);
	p = &dist_shared->partitions[part];
	LWLockAcquire(p->lock, LW_EXCLUSIVE);
	entry = hash_search_with_hash_value(dist_tables[part], key, hash,
										HASH_FIND, NULL);
	if (entry != NULL)
	{
		/* forgetting is an early eviction: the floor keeps its position */
		DistRaiseFloor(entry->tli, entry->lsn);
		dlist_delete(&entry->lru);
		hash_search_with_hash_value(dist_tables[part], key, hash,
									HASH_REMOVE, NULL);
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
