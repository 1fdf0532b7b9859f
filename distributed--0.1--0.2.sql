/* distributed--0.1--0.2.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION distributed UPDATE TO '0.2'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- distributed.stats: waits_stale_snapshot, the waits answered
-- 'stale_snapshot' (counted in checks_unsafe before).  A function's OUT
-- columns cannot be changed in place, so get_stats() and the view over it
-- are made anew, with the privileges 0.1 gave them.  Until this script has
-- run, the library serves 0.1's columns.
-- ---------------------------------------------------------------------------

DROP VIEW stats;
DROP FUNCTION get_stats();

CREATE FUNCTION get_stats(
    OUT role pg_catalog.text,
    OUT capacity pg_catalog.int4,
    OUT entries pg_catalog.int8,
    OUT evictions pg_catalog.int8,
    OUT floor pg_catalog.text,
    OUT commits_recorded pg_catalog.int8,
    OUT checks_safe pg_catalog.int8,
    OUT checks_unsafe pg_catalog.int8,
    OUT waits_started pg_catalog.int8,
    OUT waits_reached pg_catalog.int8,
    OUT waits_timed_out pg_catalog.int8,
    OUT waits_promoted pg_catalog.int8,
    OUT waits_unreachable pg_catalog.int8,
    OUT waits_not_in_recovery pg_catalog.int8,
    OUT waits_stale_snapshot pg_catalog.int8,
    OUT waits_cancelled pg_catalog.int8,
    OUT wait_time_ms pg_catalog.float8,
    OUT waiting pg_catalog.int4,
    OUT watcher_pid pg_catalog.int4,
    OUT watch_interval_ms pg_catalog.int4,
    OUT stats_reset pg_catalog.timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'distributed_get_stats'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

CREATE VIEW stats AS
    SELECT * FROM get_stats();

COMMENT ON VIEW stats IS
'Counters of this server: map size, evictions, floor, checks and waits';

GRANT SELECT ON stats TO PUBLIC;

-- ---------------------------------------------------------------------------
-- Comments that 0.1 got wrong or that 0.2 changed: the leader answers with
-- its insert position, wait() may answer stale_snapshot, and wait_for()
-- raises the distinct codes of the README's SQLSTATE table.
-- ---------------------------------------------------------------------------

COMMENT ON FUNCTION replay_position() IS
'This server''s replay position as a token (on a leader: its WAL insert position)';

COMMENT ON FUNCTION wait(pg_catalog.text, pg_catalog.int4) IS
'Wait until this server replays a token: reached, timeout, promoted, not_in_recovery, unreachable or stale_snapshot';

COMMENT ON PROCEDURE wait_for(pg_catalog.text, pg_catalog.int4) IS
'Wait like wait() holding no snapshot; returns when reached, raises 57014 (timeout), 55U01 (unreachable), 55U02 (promoted), 55U03 (not a standby), 55U04 (history file missing or corrupt), 55U05 (token before its timeline) or 25001 (a snapshot is held)';
