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
 *	  timeline WAL is written on, but nothing more will be replayed;
 *	- a token that lies before its own timeline began in this server's
 *	  history names no write of this history at all, and is rejected;
 *	- a bare LSN is a position of the current timeline only up to this
 *	  server's first timeline switch; past it, it could name a write lost
 *	  with a former leader, and is unreachable.
 *
 * Nothing here takes a lock other than the spinlocks inside the core calls.
 * The only I/O is reading the history file of this server's timeline, once
 * per backend and timeline, and only on a server past timeline 1.  It is
 * parsed here rather than by readTimeLineHistory(), which raises FATAL on a
 * malformed file: a bad file must fail the call, not end the session.
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
#include "access/xlog_internal.h"
#include "common/string.h"
#include "lib/stringinfo.h"
#include "storage/fd.h"
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

/* Write v in hex (uppercase, no leading zeros) at p; returns the end. */
static char *
DistHex32(char *p, uint32 v)
{
	static const char digits[] = "0123456789ABCDEF";
	char		tmp[8];
	int			n = 0;

	do
	{
		tmp[n++] = digits[v & 0xF];
		v >>= 4;
	} while (v != 0);
	while (n > 0)
		*p++ = tmp[--n];
	return p;
}

/*
 * Format a token into buf, of DIST_TOKEN_BUFLEN bytes, as
 * snprintf("%u:%X/%X", tli, LSN_FORMAT_ARGS(lsn)) would; returns its
 * length.  By hand, because it runs on every commit a key records and on
 * every statement after which replay has moved: snprintf's format parsing
 * costs ten times as much.
 */
int
DistFormatToken(char *buf, TimeLineID tli, XLogRecPtr lsn)
{
	char	   *p = buf + pg_ultoa_n(tli, buf);

	*p++ = ':';
	p = DistHex32(p, (uint32) (lsn >> 32));
	*p++ = '/';
	p = DistHex32(p, (uint32) lsn);
	*p = '\0';
	return (int) (p - buf);
}

text *
DistTokenToText(TimeLineID tli, XLogRecPtr lsn)
{
	char		buf[DIST_TOKEN_BUFLEN];

	DistFormatToken(buf, tli, lsn);
	return cstring_to_text(buf);
}

/*
 * This backend's copy of the history of one timeline (a history file never
 * changes once written), oldest timeline first; the last entry is the
 * timeline itself, with end InvalidXLogRecPtr.
 */
static TimeLineID dist_history_tli = 0;
static TimeLineHistoryEntry *dist_history = NULL;
static int	dist_history_len = 0;

/* Raise the error for a history file that cannot be used. */
static void
DistBadHistory(const char *path, int lineno, const char *line,
			   const char *problem)
{
	ereport(ERROR,
			(errcode(ERRCODE_DIST_HISTORY_FILE),
			 errmsg("invalid timeline history file \"%s\"", path),
			 lineno > 0 ?
			 errdetail("Line %d (\"%s\"): %s", lineno, line, problem) :
			 errdetail("%s", problem),
			 errhint("Restore the file from the server that created the timeline, or from the WAL archive.")));
}

/*
 * Read the history file of timeline "current" into dist_history.
 *
 * Not readTimeLineHistory(): it takes a missing file to mean "no parents"
 * (which would call every older token unreachable) and raises FATAL on a
 * malformed line, ending the session of whoever asked.  Here both are an
 * ERROR with a SQLSTATE of their own, and the cache is only replaced by a
 * history that parsed completely.
 */
static void
DistLoadHistory(TimeLineID current)
{
	TimeLineHistoryEntry *entries;
	int			n = 0;
	int			size = 8;
	XLogRecPtr	last_end = InvalidXLogRecPtr;

	/*
	 * Parse into transaction memory (and a file that is closed at abort), so
	 * that an error leaves nothing behind; keep only a complete history.
	 */
	entries = palloc(sizeof(TimeLineHistoryEntry) * size);
	if (current > 1)
	{
		char		path[MAXPGPATH];
		FILE	   *fd;
		StringInfoData line;
		int			lineno = 0;
		TimeLineID	last_tli = 0;

		TLHistoryFilePath(path, current);
		fd = AllocateFile(path, "r");
		if (fd == NULL)
		{
			/* unreadable or missing: either way this server cannot decide */
			if (errno != ENOENT)
				ereport(ERROR,
						(errcode(ERRCODE_DIST_HISTORY_FILE),
						 errmsg("could not open timeline history file \"%s\": %m", path)));
			ereport(ERROR,
					(errcode(ERRCODE_DIST_HISTORY_FILE),
					 errmsg("timeline history file \"%s\" is missing", path),
					 errdetail("Without it this server cannot tell which positions of earlier timelines its history holds."),
					 errhint("Restore the file from the server that created timeline %u, or from the WAL archive.",
							 current)));
		}

		initStringInfo(&line);
		while (pg_get_line_buf(fd, &line))
		{
			char	   *p = line.data;
			unsigned int tli;
			unsigned int hi;
			unsigned int lo;
			char		tail;
			int			nfields;
			XLogRecPtr	end;

			lineno++;
			p[strcspn(p, "\r\n")] = '\0';
			while (*p == ' ' || *p == '\t')
				p++;
			if (*p == '\0' || *p == '#')
				continue;
			nfields = sscanf(p, "%u\t%X/%X%c", &tli, &hi, &lo, &tail);
			if (nfields < 3 || (nfields == 4 && tail != '\t' && tail != ' '))
				DistBadHistory(path, lineno, p,
							   "Expected a timeline ID and a switch point.");
			end = ((uint64) hi << 32) | lo;
			if (tli == 0 || tli <= last_tli || tli >= current)
				DistBadHistory(path, lineno, p,
							   "Timeline IDs must increase and stay below the file's own timeline.");
			if (end < last_end)
				DistBadHistory(path, lineno, p,
							   "Switch points must not decrease.");
			if (n + 1 >= size)	/* keep room for the file's own timeline */
			{
				size *= 2;
				entries = repalloc(entries, sizeof(TimeLineHistoryEntry) * size);
			}
			entries[n].tli = tli;
			entries[n].begin = last_end;
			entries[n].end = end;
			n++;
			last_tli = tli;
			last_end = end;
		}
		if (ferror(fd))
			ereport(ERROR,
					(errcode(ERRCODE_DIST_HISTORY_FILE),
					 errmsg("could not read timeline history file \"%s\": %m", path)));
		FreeFile(fd);
		pfree(line.data);
		if (n == 0)
			DistBadHistory(path, 0, NULL,
						   "The file names no parent timeline, which every timeline after the first has.");
	}
	entries[n].tli = current;
	entries[n].begin = last_end;
	entries[n].end = InvalidXLogRecPtr;
	n++;

	dist_history_tli = 0;
	if (dist_history != NULL)
		pfree(dist_history);
	dist_history = NULL;
	dist_history = MemoryContextAlloc(TopMemoryContext,
									  sizeof(TimeLineHistoryEntry) * n);
	memcpy(dist_history, entries, sizeof(TimeLineHistoryEntry) * n);
	dist_history_len = n;
	dist_history_tli = current;
	pfree(entries);
}

/* The entry of timeline tli in the history of current, or NULL. */
static TimeLineHistoryEntry *
DistHistoryEntry(TimeLineID current, TimeLineID tli)
{
	if (dist_history_tli != current)
		DistLoadHistory(current);
	for (int i = 0; i < dist_history_len; i++)
		if (dist_history[i].tli == tli)
			return &dist_history[i];
	return NULL;
}

/*
 * Where a token stands on this server.  "current" is the timeline being
 * replayed (or written, when not in recovery) and pos how far it goes.
 *
 * A bare LSN names no timeline.  Up to this server's first timeline switch
 * every branch of the cluster's history holds the same WAL, so it is
 * answered as a position of the current timeline; past it, it could as
 * well name a write lost with a former leader as one of this history, and
 * it is never called reached (DIST_NEVER: it never can be).
 */
DistTokenStatus
DistTokenState(DistToken token)
{
	bool		in_recovery = RecoveryInProgress();
	TimeLineID	current;
	XLogRecPtr	pos;
	TimeLineHistoryEntry *entry;

	if (in_recovery)
		pos = GetXLogReplayRecPtr(&current);
	else
	{
		current = DistInsertTimeLine();
		pos = GetXLogInsertRecPtr();
	}

	if (token.tli == 0)
	{
		if (current > 1)
		{
			(void) DistHistoryEntry(current, current);
			if (dist_history_len > 1 && token.lsn > dist_history[0].end)
				return DIST_NEVER;
		}
		token.tli = current;
	}

	if (token.tli > current)
		return in_recovery ? DIST_PENDING : DIST_NOT_IN_RECOVERY;

	entry = current > 1 ? DistHistoryEntry(current, token.tli) : NULL;
	if (entry != NULL && token.lsn < entry->begin)
		return DIST_BEFORE_TIMELINE;

	if (token.tli == current)
	{
		if (token.lsn <= pos)
			return DIST_REACHED;
		return in_recovery ? DIST_PENDING : DIST_NOT_IN_RECOVERY;
	}

	/* an older timeline: held if this history left it at or after lsn */
	if (entry == NULL || token.lsn > entry->end)
		return DIST_NEVER;
	return DIST_REACHED;
}

/*
 * Reject a token for which DistTokenState() answered DIST_BEFORE_TIMELINE:
 * no write of its timeline lies before that timeline began, so it was not
 * issued by this cluster's history (another server promoted to the same
 * timeline number, or a made-up token).
 */
void
DistRaiseBeforeTimeline(DistToken token)
{
	TimeLineID	current;
	TimeLineHistoryEntry *entry;

	if (RecoveryInProgress())
		(void) GetXLogReplayRecPtr(&current);
	else
		current = DistInsertTimeLine();
	entry = DistHistoryEntry(current, token.tli);

	ereport(ERROR,
			(errcode(ERRCODE_DIST_BEFORE_TIMELINE),
			 errmsg("token %u:%X/%X lies before the start of its timeline on this server",
					token.tli, LSN_FORMAT_ARGS(token.lsn)),
			 entry != NULL ?
			 errdetail("Timeline %u began at %X/%X in this server's history; no write of that timeline lies before it.",
					   token.tli, LSN_FORMAT_ARGS(entry->begin)) : 0,
			 errhint("The token comes from another server's history, such as one promoted to the same timeline number.")));
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
