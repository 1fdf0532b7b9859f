/*-------------------------------------------------------------------------
 *
 * report.c
 *		Reported values: distributed.last_commit and
 *		distributed.replay_position, sent to the client in ParameterStatus.
 *
 * Both are read-only GUC_REPORT settings, so a client learns their value at
 * connection start the usual way, and SHOW and current_setting() answer
 * through a show hook that returns this backend's current value.  Their
 * GUC value itself is never assigned: setting a reported GUC through
 * set_config_option() on every commit costs the GUC assignment, its undo
 * stack at transaction end and, before PostgreSQL 16, a scan over every
 * setting before ReadyForQuery to find the one to report (about 5 % of a
 * pgbench transaction on the leader).
 *
 * Instead, DistReport() stores the new value in this backend and marks it
 * pending; the ParameterStatus message is sent just before the next
 * ReadyForQuery, where the server sends its own reports
 * (ReportChangedGUCOptions): outside any transaction, with no lock held and
 * interrupts allowed.  Sending it from the transaction callback instead
 * would write to the socket while the transaction's locks are still held
 * and with interrupts held off, so a client that stopped reading could pin
 * both; and any error there would come after the commit.
 *
 * To see ReadyForQuery go out, the backend's PQcommMethods table (the
 * indirection PostgreSQL uses to redirect a parallel worker's messages to
 * its leader) is replaced by a copy whose putmessage sends the pending
 * reports before a ReadyForQuery message and then passes every message on
 * unchanged.  The copy is put in place only while a report is pending, and
 * the table it replaced is put back when the reports have gone out: the
 * other messages of a transaction (a pgbench transaction sends about twenty)
 * go out as they would without the library, not through one more call.
 * This is done only in client backends that talk the frontend protocol
 * over their own socket: not in walsenders (whose COPY stream must not be
 * interleaved), parallel workers or background workers.
 *
 * Nothing here raises an error or allocates memory.
 *
 * Copyright (c) 2026, distributed contributors
 *
 * IDENTIFICATION
 *		src/report.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "libpq/libpq.h"
#include "libpq/libpq-be.h"
#include "miscadmin.h"
#include "replication/walsender.h"
#include "tcop/dest.h"
#include "tcop/tcopprot.h"

#include "compat.h"
#include "distributed.h"

/* Protocol message types (PqMsg_ReadyForQuery, PqMsg_ParameterStatus) */
#define DIST_MSG_READY_FOR_QUERY	'Z'
#define DIST_MSG_PARAMETER_STATUS	'S'

/* Longest setting name reported here, with its terminating zero. */
#define DIST_REPORT_NAMELEN		32

typedef struct DistReportedValue
{
	const char *name;			/* the setting */
	bool		set;			/* false until the first value */
	TimeLineID	tli;			/* the value */
	XLogRecPtr	lsn;
	bool		pending;		/* value differs from what the client has */
	bool		sent_set;		/* what the client last got: '' or ... */
	TimeLineID	sent_tli;		/* ... this token */
	XLogRecPtr	sent_lsn;
	char		shown[DIST_TOKEN_BUFLEN];	/* SHOW's text of the value */
} DistReportedValue;

/* Both start empty: the value reported at connection start. */
static DistReportedValue dist_reported[DIST_NUM_REPORTED] = {
	[DIST_REPORT_LAST_COMMIT] = {.name = "distributed.last_commit"},
	[DIST_REPORT_REPLAY_POSITION] = {.name = "distributed.replay_position"},
};

/*
 * Whether this backend reports (decided at its first report); while a
 * report is pending, the methods that were in place (the backend's own, or
 * another module's wrapper of them) and our copy of them that wraps
 * putmessage, which is PqCommMethods until the report has gone out.
 */
static enum
{
	DIST_REPORT_UNKNOWN,
	DIST_REPORT_YES,
	DIST_REPORT_NO
}			dist_can_report = DIST_REPORT_UNKNOWN;
static const PQcommMethods *dist_socket_methods = NULL;
static PQcommMethods dist_report_methods;

/*
 * Set when another module wrapped our copy while it was in place: its
 * wrapper calls ours, so ours stays where it is from then on (it passes
 * every message on, and sends the reports pending at each ReadyForQuery).
 */
static bool dist_wrapped = false;

/*
 * Send the pending reports, through the methods our copy wraps.  Runs just
 * before ReadyForQuery goes into the send buffer.  Values are kept as
 * numbers and formatted only here, once per message sent.
 */
static pg_noinline void
DistSendPending(void)
{
	char		msg[DIST_REPORT_NAMELEN + DIST_TOKEN_BUFLEN];

	for (int i = 0; i < DIST_NUM_REPORTED; i++)
	{
		DistReportedValue *r = &dist_reported[i];
		size_t		namelen;
		size_t		vallen;

		if (!r->pending)
			continue;
		r->pending = false;

		/* ParameterStatus: name and value, each zero-terminated */
		namelen = strlen(r->name) + 1;
		Assert(namelen <= DIST_REPORT_NAMELEN);
		memcpy(msg, r->name, namelen);
		vallen = DistFormatToken(msg + namelen, r->tli, r->lsn) + 1;
		if (dist_socket_methods->putmessage(DIST_MSG_PARAMETER_STATUS, msg,
											namelen + vallen) == 0)
		{
			r->sent_set = true;
			r->sent_tli = r->tli;
			r->sent_lsn = r->lsn;
		}
	}
}

/*
 * putmessage while a report is pending: before ReadyForQuery, send the
 * reports and put back the methods our copy replaced.
 */
static int
DistPutMessage(char msgtype, const char *s, size_t len)
{
	if (msgtype == DIST_MSG_READY_FOR_QUERY)
	{
		DistSendPending();
		if (PqCommMethods == &dist_report_methods)
			PqCommMethods = dist_socket_methods;
		else
			dist_wrapped = true;
	}
	return dist_socket_methods->putmessage(msgtype, s, len);
}

/*
 * Can this backend report to a client?  Decided at the first report: only a
 * client backend on its own socket does.
 */
static bool
DistCanReport(void)
{
	if (dist_can_report == DIST_REPORT_UNKNOWN)
	{
		/* parallel and other background workers are not B_BACKEND */
		if (MyBackendType != B_BACKEND || am_walsender ||
			whereToSendOutput != DestRemote || MyProcPort == NULL ||
			PqCommMethods == NULL)
			dist_can_report = DIST_REPORT_NO;
		else
			dist_can_report = DIST_REPORT_YES;
	}
	return dist_can_report == DIST_REPORT_YES;
}

/*
 * Have the pending reports sent before the next ReadyForQuery: put our
 * copy of the methods in place of the ones there now.  Copied at every
 * arming (a few words), so that a module that wrapped the methods since
 * the last report is wrapped in turn rather than bypassed or lost.
 */
static void
DistArmReport(void)
{
	if (dist_wrapped || PqCommMethods == &dist_report_methods)
		return;
	dist_socket_methods = PqCommMethods;
	dist_report_methods = *PqCommMethods;
	dist_report_methods.putmessage = DistPutMessage;
	PqCommMethods = &dist_report_methods;
}

/*
 * Make (tli, lsn) the value of a reported setting in this backend; the
 * client is told before the next ReadyForQuery, unless it already has
 * that value.  Raises no error.
 */
void
DistReport(DistReported which, TimeLineID tli, XLogRecPtr lsn)
{
	DistReportedValue *r = &dist_reported[which];

	if (r->set && r->tli == tli && r->lsn == lsn)
		return;
	r->set = true;
	r->tli = tli;
	r->lsn = lsn;
	r->shown[0] = '\0';		/* formatted again when SHOW asks */
	if (DistCanReport())
	{
		r->pending = !r->sent_set || r->sent_tli != tli || r->sent_lsn != lsn;
		if (r->pending)
			DistArmReport();
	}
}

/* What SHOW and current_setting() answer: '' before the first value. */
static const char *
DistShow(DistReportedValue *r)
{
	if (r->set && r->shown[0] == '\0')
		(void) DistFormatToken(r->shown, r->tli, r->lsn);
	return r->shown;
}

const char *
DistShowLastCommit(void)
{
	return DistShow(&dist_reported[DIST_REPORT_LAST_COMMIT]);
}

const char *
DistShowReplayPosition(void)
{
	return DistShow(&dist_reported[DIST_REPORT_REPLAY_POSITION]);
}
