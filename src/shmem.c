/*-------------------------------------------------------------------------
 *
 * shmem.c
 *		Shared memory: its size, its creation, and the floor of the map.
 *
 * One DistShared struct holds the session map's partitions (each a dynahash
 * table of at most its capacity, with an LRU list threaded through the
 * entries), the floor, the counters and one waiter slot per backend.  A
 * separate dynahash table, dist_prepared, holds the session key of each
 * prepared transaction (one entry per max_prepared_transactions; none when
 * that is 0).
 *
 * Locking:
 *	- each map partition has its own LWLock (tranche "distributed_map");
 *	  it protects that partition's table, LRU list and entries.
 *	- waiters_lock (tranche "distributed_waiters") protects the queue of
 *	  armed waiters and the watcher's latch (see waiter.c).
 *	- prepared_lock (tranche "distributed_prepared") protects dist_prepared.
 *	  A partition lock may be taken while it is held, never the other way
 *	  around.
 *	- floor_lock, a spinlock, protects the floor.  It may be taken while a
 *	  partition lock is held, never the other way around.
 *	- stats_lock, a spinlock, protects stats_reset.
 *	- counters are atomics and need no lock.
 *
 * Copyright (c) 2026, distributed contributors
 *
 * IDENTIFICATION
 *		src/shmem.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/twophase.h"
#include "miscadmin.h"
#include "postmaster/autovacuum.h"
#include "replication/walsender.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "distributed.h"

/* Maps of at least this many keys are split into DIST_MAX_PARTITIONS. */
#define DIST_PARTITION_THRESHOLD	1024

/* Room for a partition table's shmem index name. */
#define DIST_TABLE_NAMELEN			64

DistShared *dist_shared = NULL;
HTAB	   *dist_tables[DIST_MAX_PARTITIONS];
HTAB	   *dist_prepared = NULL;

#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/*
 * Small maps keep one partition so that eviction is exactly least recently
 * written; large ones spread writers over several locks, and eviction is
 * least recently written within a partition.
 */
int
DistNumPartitions(int capacity)
{
	return capacity >= DIST_PARTITION_THRESHOLD ? DIST_MAX_PARTITIONS : 1;
}

static int
DistPartitionCapacity(int capacity, int npartitions, int i)
{
	return capacity / npartitions + (i < capacity % npartitions ? 1 : 0);
}

/*
 * One waiter slot per PGPROC that can run SQL.  Before PostgreSQL 15 the
 * request runs from _PG_init, before MaxBackends is computed, so add it up
 * the way InitializeMaxBackends() does.
 */
static int
DistWaiterSlots(void)
{
#if PG_VERSION_NUM >= 150000
	return MaxBackends;
#else
	return MaxConnections + autovacuum_max_workers + 1 +
		max_worker_processes + max_wal_senders;
#endif
}

static Size
DistShmemSize(void)
{
	Size		size;
	int			nparts = DistNumPartitions(dist_max_sessions);

	size = add_size(offsetof(DistShared, waiters),
					mul_size(DistWaiterSlots(), sizeof(DistWaiter)));
	size = MAXALIGN(size);
	for (int i = 0; i < nparts; i++)
		size = add_size(size,
						hash_estimate_size(DistPartitionCapacity(dist_max_sessions, nparts, i),
										   sizeof(DistSessionEntry)));
	if (max_prepared_xacts > 0)
		size = add_size(size, hash_estimate_size(max_prepared_xacts,
												 sizeof(DistPreparedEntry)));
	return size;
}

/*
 * Ask for the shared memory and locks.  From PostgreSQL 15 on this runs in
 * shmem_request_hook; before, directly from _PG_init.
 */
void
DistShmemRequest(void)
{
	RequestAddinShmemSpace(DistShmemSize());
	RequestNamedLWLockTranche("distributed_map",
							  DistNumPartitions(dist_max_sessions));
	RequestNamedLWLockTranche("distributed_waiters", 1);
	RequestNamedLWLockTranche("distributed_prepared", 1);
}

#if PG_VERSION_NUM >= 150000
static void
DistShmemRequestHook(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	DistShmemRequest();
}
#endif

static void
DistShmemStartup(void)
{
	bool		found;
	int			nparts = DistNumPartitions(dist_max_sessions);
	int			nslots = DistWaiterSlots();

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);

	dist_shared = ShmemInitStruct("distributed",
								  offsetof(DistShared, waiters) +
								  nslots * sizeof(DistWaiter),
								  &found);
	if (!found)
	{
		LWLockPadded *maplocks = GetNamedLWLockTranche("distributed_map");

		SpinLockInit(&dist_shared->floor_lock);
		dist_shared->floor_ready = false;
		dist_shared->floor_tli = 0;
		dist_shared->floor_lsn = InvalidXLogRecPtr;
		dist_shared->npartitions = nparts;
		dist_shared->capacity = dist_max_sessions;
		for (int i = 0; i < nparts; i++)
		{
			dist_shared->partitions[i].lock = &maplocks[i].lock;
			dlist_init(&dist_shared->partitions[i].lru);
			dist_shared->partitions[i].capacity =
				DistPartitionCapacity(dist_max_sessions, nparts, i);
		}
		dist_shared->waiters_lock =
			&(GetNamedLWLockTranche("distributed_waiters"))->lock;
		dist_shared->nslots = nslots;
		DistWaitersShmemInit();
		dist_shared->prepared_lock =
			&(GetNamedLWLockTranche("distributed_prepared"))->lock;

#define DIST_COUNTER_INIT(field, kind, since) \
		pg_atomic_init_u64(&dist_shared->counters.field, 0);
		DIST_COUNTERS(DIST_COUNTER_INIT)
#undef DIST_COUNTER_INIT
		SpinLockInit(&dist_shared->stats_lock);
		dist_shared->stats_reset = GetCurrentTimestamp();
	}

	if (max_prepared_xacts > 0)
	{
		HASHCTL		info;

		memset(&info, 0, sizeof(info));
		info.keysize = GIDSIZE;
		info.entrysize = sizeof(DistPreparedEntry);
		dist_prepared = ShmemInitHash("distributed prepared transactions",
									  max_prepared_xacts, max_prepared_xacts,
									  &info, HASH_ELEM | HASH_STRINGS);
	}

	for (int i = 0; i < nparts; i++)
	{
		HASHCTL		info;
		char		name[DIST_TABLE_NAMELEN];
		int			cap = DistPartitionCapacity(dist_max_sessions, nparts, i);

		memset(&info, 0, sizeof(info));
		info.keysize = DIST_MAX_KEY_LEN + 1;
		info.entrysize = sizeof(DistSessionEntry);
		snprintf(name, sizeof(name), "distributed session map %d", i);
		dist_tables[i] = ShmemInitHash(name, cap, cap, &info,
									   HASH_ELEM | HASH_STRINGS);
	}

	LWLockRelease(AddinShmemInitLock);
}

void
DistShmemInstallHooks(void)
{
#if PG_VERSION_NUM >= 150000
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = DistShmemRequestHook;
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = DistShmemStartup;
}

/*
 * Raise the floor to at least (tli, lsn).  Never lowers it.  Safe to call
 * with a partition lock held; raises no error.
 */
void
DistRaiseFloor(TimeLineID tli, XLogRecPtr lsn)
{
	SpinLockAcquire(&dist_shared->floor_lock);
	if (lsn > dist_shared->floor_lsn)
	{
		dist_shared->floor_lsn = lsn;
		dist_shared->floor_tli = tli;
	}
	SpinLockRelease(&dist_shared->floor_lock);
}

void
DistReadFloor(TimeLineID *tli, XLogRecPtr *lsn)
{
	SpinLockAcquire(&dist_shared->floor_lock);
	*tli = dist_shared->floor_tli;
	*lsn = dist_shared->floor_lsn;
	SpinLockRelease(&dist_shared->floor_lock);
}

/*
 * The map starts empty at every start-up and promotion, so it cannot know
 * the keys written before.  Before its first use on a server that accepts
 * writes, raise the floor to the current end of WAL: every commit made
 * before the restart or the promotion lies at or below it.  On a standby
 * this does nothing (the map is not used there).  Raises no error.
 */
void
DistEnsureFloor(void)
{
	XLogRecPtr	pos;
	TimeLineID	tli;

	if (dist_shared->floor_ready)
		return;
	if (RecoveryInProgress())
		return;

	pos = GetXLogInsertRecPtr();
	tli = DistInsertTimeLine();

	SpinLockAcquire(&dist_shared->floor_lock);
	if (!dist_shared->floor_ready)
	{
		if (pos > dist_shared->floor_lsn)
		{
			dist_shared->floor_lsn = pos;
			dist_shared->floor_tli = tli;
		}
		dist_shared->floor_ready = true;
	}
	SpinLockRelease(&dist_shared->floor_lock);
}
