/*-------------------------------------------------------------------------
 *
 * distributed.c
 *		Module entry point: settings, hooks and the preload check.
 *
 * The extension makes reads from hot-standby followers safe for the
 * session that just wrote on the leader:
 *
 *	- leader.c records the end of every write transaction's commit record,
 *	  per backend and per session key in a shared-memory map.
 *	- report.c tells the client the backend's last commit (and, on a
 *	  follower, its replay position) in ParameterStatus messages.
 *	- follower.c answers whether a token is replayed and waits until it is.
 *	- monitor.c exposes the map, the counters and the waiters.
 *	- shmem.c owns the shared memory; token.c parses tokens and decides
 *	  where one stands against this server's timeline history.
 *
 * Everything needs shared memory, so the library must be loaded through
 * shared_preload_libraries.  Loaded any other way, _PG_init returns quietly
 * and every SQL function raises 55000 (see DistCheckLoaded).
 *
 * Copyright (c) 2026, distributed contributors
 *
 * IDENTIFICATION
 *		src/distributed.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "compat.h"
#include "distributed.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Defaults and limits of the settings */
#define DIST_MAX_SESSIONS_DEFAULT	10000
#define DIST_MAX_SESSIONS_LIMIT		10000000
#define DIST_WATCH_INTERVAL_DEFAULT	1		/* ms */
#define DIST_WATCH_INTERVAL_LIMIT	1000	/* ms */

/* Settings */
int			dist_max_sessions = DIST_MAX_SESSIONS_DEFAULT;
char	   *dist_session_key = NULL;
int			dist_watch_interval_ms = DIST_WATCH_INTERVAL_DEFAULT;
bool		dist_report_replay = true;

/*
 * Read-only, reported settings.  Their GUC value is never assigned: SHOW
 * answers through a show hook, and report.c sends the changes (see there).
 */
static char *dist_last_commit_guc = NULL;
static char *dist_replay_position_guc = NULL;

uint32		dist_wait_event_replay = 0;

static bool
DistSessionKeyCheck(char **newval, void **extra, GucSource source)
{
	size_t		len = strlen(*newval);

	if (len > DIST_MAX_KEY_LEN)
	{
		GUC_check_errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION);
		GUC_check_errmsg("session key is too long");
		GUC_check_errdetail("A session key may be at most %d bytes; this one is %zu.",
							DIST_MAX_KEY_LEN, len);
		return false;
	}
	if (DistKeyBadChar(*newval, (int) len) != NULL)
	{
		GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
		GUC_check_errmsg("session key must be printable ASCII");
		GUC_check_errhint("Send a hash of the key in hex, as the Django router does.");
		return false;
	}
	return true;
}

void
_PG_init(void)
{
	/*
	 * Without shared memory there is nothing to record into; stay out of the
	 * way and let each SQL function explain (DistCheckLoaded).
	 */
	if (!process_shared_preload_libraries_in_progress)
		return;

	DefineCustomIntVariable("distributed.max_sessions",
							"Number of session keys the leader remembers before evicting the least recently written.",
							NULL,
							&dist_max_sessions,
							DIST_MAX_SESSIONS_DEFAULT,
							1,
							DIST_MAX_SESSIONS_LIMIT,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("distributed.session_key",
							   "Key under which this session's commits are recorded in the leader's session map.",
							   "Empty means commits are not recorded under any key. "
							   "Reported to the client, so it knows without asking "
							   "whether the key is set in the current transaction.",
							   &dist_session_key,
							   "",
							   PGC_USERSET,
							   GUC_REPORT | GUC_NOT_IN_SAMPLE,
							   DistSessionKeyCheck, DistSessionKeyAssign, NULL);

	DefineCustomStringVariable("distributed.last_commit",
							   "Token of this backend's last write transaction, reported to the client after each one.",
							   NULL,
							   &dist_last_commit_guc,
							   "",
							   PGC_INTERNAL,
							   GUC_REPORT | GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_FILE,
							   NULL, NULL, DistShowLastCommit);

	DefineCustomStringVariable("distributed.replay_position",
							   "Replay position of this follower, reported to the client as transactions end.",
							   NULL,
							   &dist_replay_position_guc,
							   "",
							   PGC_INTERNAL,
							   GUC_REPORT | GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_FILE,
							   NULL, NULL, DistShowReplayPosition);

	DefineCustomBoolVariable("distributed.report_replay_position",
							 "Whether a follower reports its replay position to the client at the end of each transaction.",
							 NULL,
							 &dist_report_replay,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("distributed.watch_interval",
							"How often the replay watcher checks replay progress while backends wait.",
							NULL,
							&dist_watch_interval_ms,
							DIST_WATCH_INTERVAL_DEFAULT,
							1,
							DIST_WATCH_INTERVAL_LIMIT,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("distributed");

	DistShmemInstallHooks();
#if PG_VERSION_NUM < 150000
	/* keep in sync with DistShmemRequestHook in shmem.c */
	DistShmemRequest();
#endif

	DistRegisterWatcher();
	RegisterXactCallback(DistXactCallback, NULL);
	DistInstallUtilityHook();
}

/*
 * Raise the documented error when the library was not preloaded.
 */
void
DistCheckLoaded(void)
{
	if (dist_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("distributed must be loaded via shared_preload_libraries"),
				 errhint("Add distributed to shared_preload_libraries in postgresql.conf and restart the server.")));
	DistInitWaitEvents();
}
