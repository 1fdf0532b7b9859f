/*-------------------------------------------------------------------------
 *
 * waiter.c
 *		How a backend waiting for replay sleeps, and the replay watcher
 *		that wakes it.
 *
 * Nothing in the server tells an extension's backend that a record was
 * replayed, so one background worker, the replay watcher, looks for
 * everyone, and waiters sleep on their own latches until it wakes them or
 * their deadline passes.
 *
 * Armed waiters form a queue in shared memory, a pairing heap ordered by
 * LSN (the model is PostgreSQL 19's xlogwait.c), with the lowest LSN also
 * published in an atomic.  The watcher's look is one read of the replay
 * position and one of that atomic; only when replay has passed it does
 * the watcher take waiters_lock, take the reached waiters off the queue,
 * and set their latches after releasing it, in batches.  A waiter is armed
 * once per wait; a woken one whose token is reached leaves without taking
 * the lock.  A waiter armed for a later timeline than the one replayed is
 * parked, out of the queue, until the timeline changes; then, and when
 * recovery ends, every armed waiter is woken to look again.
 *
 * When the watcher looks:
 *	- PostgreSQL 16 and later, with max_wal_senders > 0: whenever the
 *	  startup process replays a record, through the condition variable it
 *	  broadcasts for logical walsenders (see DistReplayConditionVariable()
 *	  in compat.h).  Nothing is polled: asleep with replay paused or idle,
 *	  neither the watcher nor the waiters ever wake.
 *	- otherwise (PostgreSQL 14 and 15, or max_wal_senders = 0): every
 *	  distributed.watch_interval (1 ms by default) while anyone is armed.
 * While nobody is armed it sleeps on its latch alone, which the first
 * waiter to arm sets.
 *
 * The protocol that loses no wake-up: a waiter arms under the lock, then
 * checks replay, then sleeps; the watcher disarms under the lock and sets
 * the latch after releasing it.  A waiter that errors out (cancel,
 * statement_timeout) or exits leaves the queue through
 * PG_ENSURE_ERROR_CLEANUP, so nothing is left behind.  When the watcher
 * exits it wakes every armed waiter; while no watcher runs, waiters check
 * replay themselves every watch interval, until the postmaster has started
 * a new one.
 *
 * Copyright (c) 2026, distributed contributors
 *
 * IDENTIFICATION
 *	  src/waiter.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "distributed.h"

/* Timestamp of the current wait, for the cancellation counters. */
TimestampTz dist_wait_started = 0;

/* Waiters taken off the queue per hold of waiters_lock. */
#define DIST_WAKE_BATCH		16

/* Waiters a woken waiter wakes in turn; see DistPassOn(). */
#define DIST_PASS_ON		2

static void DistWakeWaiters(bool wake_all, TimeLineID tli, XLogRecPtr replay,
							int limit);

/* ------------------------------------------------------------------------
 * The queue of armed waiters
 * ------------------------------------------------------------------------
 */

/* pairingheap keeps the "largest" first: make that the lowest LSN. */
static int
DistWaiterCmp(const pairingheap_node *a, const pairingheap_node *b, void *arg)
{
	const DistWaiter *wa = pairingheap_const_container(DistWaiter, node, a);
	const DistWaiter *wb = pairingheap_const_container(DistWaiter, node, b);

	if (wa->lsn < wb->lsn)
		return 1;
	if (wa->lsn > wb->lsn)
		return -1;
	return 0;
}

/*
 * Called from the shared memory start-up hook when the struct is created.
 * The queue keeps a pointer to DistWaiterCmp, valid in every process
 * because they are all forked from the postmaster that loaded the library
 * (PostgreSQL 19's xlogwait.c keeps its heap in shared memory the same way).
 */
void
DistWaitersShmemInit(void)
{
	pg_atomic_init_u32(&dist_shared->nwaiting, 0);
	/* pairingheap_initialize() is newer than PostgreSQL 18 */
	dist_shared->queue.ph_compare = DistWaiterCmp;
	dist_shared->queue.ph_arg = NULL;
	dist_shared->queue.ph_root = NULL;
	dist_shared->narmed = 0;
	pg_atomic_init_u64(&dist_shared->first_lsn, PG_UINT64_MAX);
	dist_shared->watcher_latch = NULL;
	dist_shared->watcher_pid = 0;
	memset(dist_shared->waiters, 0, dist_shared->nslots * sizeof(DistWaiter));
}

/* Publish the queue's lowest LSN for the watcher's lock-free check. */
static void
DistUpdateFirstLSN(void)
{
	XLogRecPtr	first = PG_UINT64_MAX;

	Assert(LWLockHeldByMeInMode(dist_shared->waiters_lock, LW_EXCLUSIVE));
	if (!pairingheap_is_empty(&dist_shared->queue))
		first = pairingheap_container(DistWaiter, node,
									  pairingheap_first(&dist_shared->queue))->lsn;
	pg_atomic_write_u64(&dist_shared->first_lsn, first);
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

/*
 * Arm this backend's slot for the token: queue it, so that the watcher
 * wakes it once replay passes the token.  The first use of the slot in a
 * wait also fills in what distributed.waiters shows.
 */
static void
DistArm(DistWaiter *slot, DistToken token)
{
	Latch	   *watcher = NULL;

	if (!slot->in_use)
	{
		slot->pid = MyProcPid;
		slot->latch = MyLatch;
		slot->started = dist_wait_started;
		slot->tli = token.tli;
		slot->lsn = token.lsn;
		pg_write_barrier();
		slot->in_use = true;
		pg_atomic_fetch_add_u32(&dist_shared->nwaiting, 1);
	}

	LWLockAcquire(dist_shared->waiters_lock, LW_EXCLUSIVE);
	Assert(slot->state == DIST_WAITER_IDLE);
	slot->state = DIST_WAITER_QUEUED;
	pairingheap_add(&dist_shared->queue, &slot->node);
	DistUpdateFirstLSN();
	/* the watcher sleeps without a timeout while nobody is armed */
	if (++dist_shared->narmed == 1)
		watcher = dist_shared->watcher_latch;
	LWLockRelease(dist_shared->waiters_lock);

	if (watcher != NULL)
		SetLatch(watcher);
}

/* Is the watcher running?  Without it, waiters look for themselves. */
static bool
DistWatcherRunning(void)
{
	pg_read_barrier();
	return ((volatile DistShared *) dist_shared)->watcher_latch != NULL;
}

/*
 * A waiter just woken wakes a few more of those replay has reached before
 * it goes on, so that when many are woken at once the wake-ups spread
 * like a tree over every process that runs instead of queueing behind the
 * watcher: with hundreds of backends runnable on a few cores, the watcher
 * gets only its share of them and would set the last latches late.  The
 * watcher still wakes everyone reached itself; this only gets there first.
 * Costs a read of replay and of an atomic when there is nobody to wake.
 */
static void
DistPassOn(void)
{
	TimeLineID	tli;
	XLogRecPtr	replay;

	if (!RecoveryInProgress())
		return;
	replay = GetXLogReplayRecPtr(&tli);
	if (replay < pg_atomic_read_u64(&dist_shared->first_lsn))
		return;
	DistWakeWaiters(false, tli, replay, DIST_PASS_ON);
}

/*
 * The sleeping half of a wait; DistWait() checks the token between calls:
 *
 *		for (;;)
 *		{
 *			if (!DistSleepUntil(token, deadline))
 *				break;
 *			CHECK_FOR_INTERRUPTS();
 *			if (DistTokenState(token) != DIST_PENDING)
 *				break;
 *		}
 *		DistDisarm();
 *
 * A call on an unarmed slot arms it and returns at once, so that the
 * caller checks the token once more before sleeping: a wake-up sent after
 * the arming is not lost, and one sent before it is not needed because the
 * check sees the replay that caused it.  A call on an armed slot sleeps
 * until the watcher wakes it (which disarms it), the deadline passes, or,
 * while no watcher runs, one watch interval passes.  A woken waiter whose
 * token is reached so takes no lock at all.  Returns false, without
 * sleeping, once the deadline has passed.
 */
bool
DistSleepUntil(DistToken token, TimestampTz deadline)
{
	DistWaiter *slot = DistMySlot();
	TimestampTz now;
	long		remaining;
	int			rc;

	/*
	 * Only the watcher disarms a slot, under the lock, so a slot seen idle
	 * here is idle; one seen armed may have just been disarmed, and then
	 * its latch is set and the sleep below returns at once.
	 */
	if (!slot->in_use || slot->state == DIST_WAITER_IDLE)
	{
		DistArm(slot, token);
		return true;
	}

	now = GetCurrentTimestamp();
	if (now >= deadline)
		return false;
	remaining = (long) ((deadline - now + 999) / 1000);
	if (remaining > PG_INT32_MAX)
		remaining = PG_INT32_MAX;
	if (!DistWatcherRunning())
		remaining = Min(remaining, dist_watch_interval_ms);

	rc = WaitLatch(MyLatch,
				   WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
				   remaining, dist_wait_event_replay);
	if (rc & WL_LATCH_SET)
	{
		ResetLatch(MyLatch);
		if (slot->state == DIST_WAITER_IDLE)
			DistPassOn();
	}
	return true;
}

/* End this backend's wait: leave the queue if still in it, free the slot. */
void
DistDisarm(void)
{
	DistWaiter *slot = DistMySlot();

	if (!slot->in_use)
		return;
	if (slot->state != DIST_WAITER_IDLE)
	{
		LWLockAcquire(dist_shared->waiters_lock, LW_EXCLUSIVE);
		if (slot->state == DIST_WAITER_QUEUED)
		{
			pairingheap_remove(&dist_shared->queue, &slot->node);
			DistUpdateFirstLSN();
		}
		if (slot->state != DIST_WAITER_IDLE)
			dist_shared->narmed--;
		slot->state = DIST_WAITER_IDLE;
		LWLockRelease(dist_shared->waiters_lock);
	}
	slot->in_use = false;
	pg_atomic_fetch_sub_u32(&dist_shared->nwaiting, 1);
}

/* Error and exit path of a wait: free the slot and count the wait. */
void
DistWaitCleanup(int code, Datum arg)
{
	DistDisarm();
	pg_atomic_fetch_add_u64(&dist_shared->counters.waits_cancelled, 1);
	pg_atomic_fetch_add_u64(&dist_shared->counters.wait_time_us,
							(uint64) Max(0, GetCurrentTimestamp() - dist_wait_started));
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

/*
 * Disarm the waiters that replay has reached, or all of them when the
 * timeline changed or recovery ended, and set their latches.  A waiter
 * armed for a timeline after the one being replayed is parked instead: it
 * stays armed, out of the queue, until the timeline changes.
 *
 * At most limit waiters are woken in all, and at most DIST_WAKE_BATCH
 * taken per hold of the lock, their latches set after it is released, so
 * that the lock is never held long and the backends woken first run (and
 * pass the wake-up on) while the rest are collected.
 */
static void
DistWakeWaiters(bool wake_all, TimeLineID tli, XLogRecPtr replay, int limit)
{
	Latch	   *wake[DIST_WAKE_BATCH];
	int			nwake;
	int			batch;
	int			next = 0;

	do
	{
		batch = Min(limit, DIST_WAKE_BATCH);
		nwake = 0;
		LWLockAcquire(dist_shared->waiters_lock, LW_EXCLUSIVE);
		if (wake_all)
		{
			/* rare (timeline switch, promotion, watcher exit): scan */
			for (; next < dist_shared->nslots && nwake < batch; next++)
			{
				DistWaiter *slot = &dist_shared->waiters[next];

				if (slot->state == DIST_WAITER_IDLE)
					continue;
				if (slot->state == DIST_WAITER_QUEUED)
					pairingheap_remove(&dist_shared->queue, &slot->node);
				slot->state = DIST_WAITER_IDLE;
				dist_shared->narmed--;
				wake[nwake++] = slot->latch;
			}
		}
		else
		{
			while (nwake < batch &&
				   !pairingheap_is_empty(&dist_shared->queue))
			{
				DistWaiter *slot = pairingheap_container(DistWaiter, node,
														 pairingheap_first(&dist_shared->queue));

				if (slot->lsn > replay)
					break;
				(void) pairingheap_remove_first(&dist_shared->queue);
				if (slot->tli > tli)
				{
					slot->state = DIST_WAITER_PARKED;
					continue;
				}
				slot->state = DIST_WAITER_IDLE;
				dist_shared->narmed--;
				wake[nwake++] = slot->latch;
			}
		}
		DistUpdateFirstLSN();
		LWLockRelease(dist_shared->waiters_lock);

		for (int i = 0; i < nwake; i++)
			SetLatch(wake[i]);
		limit -= nwake;
	} while (nwake == batch && limit > 0);
}

static void
DistWatcherExit(int code, Datum arg)
{
	bool		mine = false;

	/* an error may have ended the loop with the lock held */
	LWLockReleaseAll();

	LWLockAcquire(dist_shared->waiters_lock, LW_EXCLUSIVE);
	if (dist_shared->watcher_pid == MyProcPid)
	{
		dist_shared->watcher_latch = NULL;
		dist_shared->watcher_pid = 0;
		mine = true;
	}
	LWLockRelease(dist_shared->waiters_lock);

	/*
	 * Waiters asleep now count on a wake-up from us.  Wake them all, so
	 * that they see no watcher runs and look at replay themselves until a
	 * new one starts.
	 */
	if (mine)
		DistWakeWaiters(true, 0, InvalidXLogRecPtr, INT_MAX);
}

/*
 * Main loop.  While somebody is armed, look at replay whenever it may have
 * moved: after each record the startup process replays where it tells
 * (PostgreSQL 16 and later, with cascading replication allowed; see
 * DistReplayConditionVariable()), otherwise every watch interval.  While
 * nobody is armed, sleep on the latch alone: the first waiter to arm sets
 * it.  The look itself is one read of replay and one of the queue's
 * lowest LSN; the lock is taken only when there is somebody to wake.
 */
void
distributed_watcher_main(Datum main_arg)
{
	TimeLineID	last_tli = 0;
	ConditionVariable *replay_cv;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	LWLockAcquire(dist_shared->waiters_lock, LW_EXCLUSIVE);
	dist_shared->watcher_latch = MyLatch;
	dist_shared->watcher_pid = MyProcPid;
	LWLockRelease(dist_shared->waiters_lock);
	before_shmem_exit(DistWatcherExit, (Datum) 0);

	replay_cv = DistReplayConditionVariable();

	for (;;)
	{
		long		timeout = -1;
		int			narmed;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		pg_read_barrier();
		narmed = ((volatile DistShared *) dist_shared)->narmed;
		if (narmed > 0)
		{
			bool		in_recovery;
			TimeLineID	tli = 0;
			XLogRecPtr	replay = InvalidXLogRecPtr;

			/*
			 * Join the condition variable's wait list before reading replay:
			 * a record replayed after the read then sets our latch.
			 */
			if (replay_cv != NULL)
				ConditionVariablePrepareToSleep(replay_cv);

			in_recovery = RecoveryInProgress();
			if (in_recovery)
				replay = GetXLogReplayRecPtr(&tli);
			if (!in_recovery || tli != last_tli)
				DistWakeWaiters(true, tli, replay, INT_MAX);
			else if (replay >= pg_atomic_read_u64(&dist_shared->first_lsn))
				DistWakeWaiters(false, tli, replay, INT_MAX);
			last_tli = tli;

			if (replay_cv == NULL || !in_recovery)
				timeout = dist_watch_interval_ms;
		}
		else if (replay_cv != NULL)
			ConditionVariableCancelSleep();

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_EXIT_ON_PM_DEATH |
						 (timeout >= 0 ? WL_TIMEOUT : 0),
						 timeout, PG_WAIT_EXTENSION);
	}
}
