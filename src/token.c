/*-------------------------------------------------------------------------
 *
 * token.c
 *		Tokens: their text form, input checks, and where one stands here.
 *
 * A token is "<timeline>:<lsn>" (or a bare "<lsn>").  DistTokenState()
 * decides whether this server holds the write a token names:
 *
 *	- on a standby, a token on the timeline being replayed is reached once
 *	  replay passes its LSN; one on an older timeline of this server's
 *	  history is reached if that timeline ended at or after its LSN, and is
 *	  unreachable otherwise (the write was lost with the old leader); one on
 *	  a newer timeline may still be reached once replay switches to it;
 *	- on a server not in recovery, the same history rules apply to the
 *	  timeline WAL is written on, but nothing more will be replayed.
 *
 * Nothing here takes a lock other than the spinlocks inside the core calls;
 * reading a timeline history file is the only I/O, and only for tokens of
 * another timeline.
 *
 * Copyright (c) 2026, distributed contributors
 *
 * IDENTIFICATION
 *		src/token.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/timeline.h"
#include "access/xlog.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "compat.h"
#include "distributed.h"

/* Hex digits in each 32-bit half of an LSN */
#define DIST_HEX_DIGITS_32	8

/* Parse up to 8 hex digits; advance *p.  False when there are none. */
static bool
DistParseHex32(const char **p, uint32 *out)
{
	uint32		v = 0;
	int			n = 0;

	while (n < DIST_HEX_DIGITS_32)
	{
		char		c = **p;
		int			d;

		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			break;
		v = (v << 4) | d;
		(*p)++;
		n++;
	}
	*out = v;
	return n > 0;
}

/*
 * Parse "<tli>:<hi>/<lo>" or "<hi>/<lo>".  A bare LSN leaves tli 0.
 * Returns false for anything else, including a timeline of 0 or a value
 * that does not fit.
 */
bool
DistParseToken(const char *text, DistToken *token)
{
	const char *p = text;
	const char *colon = strchr(text, ':');
	uint32		hi,
				lo;

	token->tli = 0;
	token->lsn = InvalidXLogRecPtr;

	if (colon != NULL)
	{
		uint64		tli = 0;

		if (colon == text)
			return false;
		for (; p < colon; p++)
		{
			if (*p < '0' || *p > '9')
				return false;
			tli = tli * 10 + (*p - '0');
			if (tli > PG_UINT32_MAX)
				return false;
		}
		if (tli == 0)
			return false;
		token->tli = (TimeLineID) tli;
		p = colon + 1;
	}

	if (!DistParseHex32(&p, &hi) || *p != '/')
		return false;
	p++;
	if (!DistParseHex32(&p, &lo) || *p != '\0')
		return false;

	token->lsn = ((uint64) hi << 32) | lo;
	return true;
}

/*
 * Read a token argument.  Raises 22P02 for malformed text.
 */
DistToken
DistTokenFromText(text *t)
{
	char	   *s = text_to_cstring(t);
	DistToken	token;

	if (!DistParseToken(s, &token))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input syntax for type %s: \"%s\"",
						"token", s),
				 errhint("A token is \"<timeline>:<lsn>\", such as \"1:0/3000148\", or a bare LSN such as \"0/3000148\".")));
	pfree(s);
	return token;
}

/* Format a token into buf, of DIST_TOKEN_BUFLEN bytes. */
void
DistFormatToken(char *buf, TimeLineID tli, XLogRecPtr lsn)
{
	snprintf(buf, DIST_TOKEN_BUFLEN, "%u:%X/%X", tli, LSN_FORMAT_ARGS(lsn));
}

text *
DistTokenToText(TimeLineID tli, XLogRecPtr lsn)
{
	char		buf[DIST_TOKEN_BUFLEN];

	DistFormatToken(buf, tli, lsn);
	return cstring_to_text(buf);
}

/* This backend's copy of the history of one timeline (they never change). */
static TimeLineID dist_history_tli = 0;
static List *dist_history = NIL;

/*
 * Does the history of timeline "current" hold the write at (tli, lsn), for
 * a tli older than current?  Reads the history file once per timeline.
 */
static bool
DistHistoryHolds(TimeLineID current, TimeLineID tli, XLogRecPtr lsn)
{
	if (dist_history_tli != current)
	{
		MemoryContext old;

		/*
		 * readTimeLineHistory() takes a missing file to mean "no parents",
		 * which would call every older token unreachable; for a timeline
		 * after the first, a missing file is an error.
		 */
		if (current > 1 && !existsTimeLineHistory(current))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("history file for timeline %u is missing", current),
					 errdetail("Without it this server cannot tell whether a token of timeline %u is in its history.",
							   tli)));
		old = MemoryContextSwitchTo(TopMemoryContext);
		if (dist_history != NIL)
			list_free_deep(dist_history);
		dist_history = NIL;
		dist_history_tli = 0;
		dist_history = readTimeLineHistory(current);
		dist_history_tli = current;
		MemoryContextSwitchTo(old);
	}

	if (!tliInHistory(tli, dist_history))
		return false;
	return lsn <= tliSwitchPoint(tli, dist_history, NULL);
}

DistTokenStatus
DistTokenState(DistToken token)
{
	TimeLineID	current;
	TimeLineID	tli;
	XLogRecPtr	pos;

	if (RecoveryInProgress())
	{
		pos = GetXLogReplayRecPtr(&current);
		tli = token.tli != 0 ? token.tli : current;

		if (tli == current)
			return pos >= token.lsn ? DIST_REACHED : DIST_PENDING;
		if (tli > current)
			return DIST_PENDING;
		return DistHistoryHolds(current, tli, token.lsn) ?
			DIST_REACHED : DIST_NEVER;
	}

	current = DistInsertTimeLine();
	pos = GetXLogInsertRecPtr();
	tli = token.tli != 0 ? token.tli : current;

	if (tli == current)
		return token.lsn <= pos ? DIST_REACHED : DIST_NOT_IN_RECOVERY;
	if (tli > current)
		return DIST_NOT_IN_RECOVERY;
	return DistHistoryHolds(current, tli, token.lsn) ?
		DIST_REACHED : DIST_NEVER;
}

/*
 * Validate a session key given to a SQL function.
 */
void
DistCheckKey(const char *key, int len)
{
	const char *bad;

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("session key must not be empty")));
	if (len > DIST_MAX_KEY_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("session key is too long"),
				 errdetail("A session key may be at most %d bytes; this one is %d.",
						   DIST_MAX_KEY_LEN, len)));
	bad = DistKeyBadChar(key, len);
	if (bad != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("session key must be printable ASCII"),
				 errdetail("Byte %d is 0x%02x.", (int) (bad - key) + 1,
						   (unsigned char) *bad),
				 errhint("Send a hash of the key in hex, as the Django router does.")));
}

/*
 * First byte of a key outside printable ASCII, or NULL.  The map is shared
 * by every database of the server, whatever its encoding: a key is read
 * back in all of them, so only bytes that mean the same in all are taken.
 */
#define DIST_KEY_FIRST_CHAR	0x20	/* space */
#define DIST_KEY_LAST_CHAR	0x7e	/* tilde */

const char *
DistKeyBadChar(const char *key, int len)
{
	for (int i = 0; i < len; i++)
		if ((unsigned char) key[i] < DIST_KEY_FIRST_CHAR ||
			(unsigned char) key[i] > DIST_KEY_LAST_CHAR)
			return key + i;
	return NULL;
}
