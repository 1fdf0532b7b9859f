/*-------------------------------------------------------------------------
 *
 * waiter.c
 *		Waiter slots, and the replay watcher that wakes waiters.
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
void
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

void
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
void
DistWaitCleanup(int code, Datum arg)
{
	DistDisarm();
	pg_atomic_fetch_add_u64(&dist_shared->counters.waits_cancelled, 1);
	pg_atomic_fetch_add_u64(&dist_shared->counters.wait_time_us,
							(uint64) Max(0, GetCurrentTimestamp() - dist_wait_started));
}

bool
DistWatcherRunning(void)
{
	bool		running;

	LWLockAcquire(dist_shared->waiters_lock, LW_SHARED);
	running = dist_shared->watcher_latch != NULL;
	LWLockRelease(dist_shared->waiters_lock);
	return running;
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
