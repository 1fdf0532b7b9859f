/* distributed--0.1.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION distributed" to load this file. \quit

-- ---------------------------------------------------------------------------
-- Leader side: tokens and the session map
-- ---------------------------------------------------------------------------

CREATE FUNCTION last_commit()
RETURNS pg_catalog.text
AS 'MODULE_PATHNAME', 'distributed_last_commit'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

COMMENT ON FUNCTION last_commit() IS
'Token of this backend''s last write transaction (NULL before the first), the value also reported as distributed.last_commit';

CREATE FUNCTION session_token(key pg_catalog.text)
RETURNS pg_catalog.text
AS 'MODULE_PATHNAME', 'distributed_session_token'
LANGUAGE C VOLATILE PARALLEL SAFE;

COMMENT ON FUNCTION session_token(pg_catalog.text) IS
'Position of the last write recorded under a session key, never below the truth (the floor answers for unknown and evicted keys)';

CREATE FUNCTION record(key pg_catalog.text, token pg_catalog.text)
RETURNS pg_catalog.text
AS 'MODULE_PATHNAME', 'distributed_record'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION record(pg_catalog.text, pg_catalog.text) IS
'Raise a session key''s position to a token of this server''s WAL; returns the key''s position';

CREATE FUNCTION forget(key pg_catalog.text)
RETURNS pg_catalog.bool
AS 'MODULE_PATHNAME', 'distributed_forget'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION forget(pg_catalog.text) IS
'Drop a session key from the map (at logout); its position moves into the floor';

CREATE FUNCTION token_lsn(token pg_catalog.text)
RETURNS pg_catalog.pg_lsn
AS 'MODULE_PATHNAME', 'distributed_token_lsn'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION token_lsn(pg_catalog.text) IS
'The LSN part of a token';

CREATE FUNCTION token_timeline(token pg_catalog.text)
RETURNS pg_catalog.int8
AS 'MODULE_PATHNAME', 'distributed_token_timeline'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION token_timeline(pg_catalog.text) IS
'The timeline part of a token (NULL for a bare LSN)';

-- ---------------------------------------------------------------------------
-- Follower side: checks and waits
-- ---------------------------------------------------------------------------

CREATE FUNCTION replay_position()
RETURNS pg_catalog.text
AS 'MODULE_PATHNAME', 'distributed_replay_position'
LANGUAGE C VOLATILE PARALLEL SAFE;

COMMENT ON FUNCTION replay_position() IS
'This server''s replay position as a token (on a leader: its flush position)';

CREATE FUNCTION is_replayed(token pg_catalog.text)
RETURNS pg_catalog.bool
AS 'MODULE_PATHNAME', 'distributed_is_replayed'
LANGUAGE C VOLATILE PARALLEL SAFE;

COMMENT ON FUNCTION is_replayed(pg_catalog.text) IS
'Whether this server has replayed a token (always true on the leader that issued it)';

CREATE FUNCTION is_replayed(token pg_catalog.pg_lsn)
RETURNS pg_catalog.bool
AS 'MODULE_PATHNAME', 'distributed_is_replayed_lsn'
LANGUAGE C VOLATILE PARALLEL SAFE;

COMMENT ON FUNCTION is_replayed(pg_catalog.pg_lsn) IS
'Whether this server has replayed an LSN of its current timeline';

CREATE FUNCTION wait(token pg_catalog.text, timeout_ms pg_catalog.int4 DEFAULT 1000)
RETURNS pg_catalog.text
AS 'MODULE_PATHNAME', 'distributed_wait'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

COMMENT ON FUNCTION wait(pg_catalog.text, pg_catalog.int4) IS
'Wait until this server replays a token: reached, timeout, promoted, not_in_recovery or unreachable';

CREATE FUNCTION wait(token pg_catalog.pg_lsn, timeout_ms pg_catalog.int4 DEFAULT 1000)
RETURNS pg_catalog.text
AS 'MODULE_PATHNAME', 'distributed_wait_lsn'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

COMMENT ON FUNCTION wait(pg_catalog.pg_lsn, pg_catalog.int4) IS
'Wait until this server replays an LSN of its current timeline';

CREATE PROCEDURE wait_for(token pg_catalog.text, timeout_ms pg_catalog.int4 DEFAULT 1000)
AS 'MODULE_PATHNAME', 'distributed_wait_for'
LANGUAGE C;

COMMENT ON PROCEDURE wait_for(pg_catalog.text, pg_catalog.int4) IS
'Wait like wait() holding no snapshot; returns when reached, raises 57014 (timeout), 55000 (not a standby, or promoted) or 55U01 (unreachable)';

CREATE PROCEDURE wait_for(token pg_catalog.pg_lsn, timeout_ms pg_catalog.int4 DEFAULT 1000)
AS 'MODULE_PATHNAME', 'distributed_wait_for_lsn'
LANGUAGE C;

COMMENT ON PROCEDURE wait_for(pg_catalog.pg_lsn, pg_catalog.int4) IS
'Like wait() for an LSN, holding no snapshot while it sleeps';

-- ---------------------------------------------------------------------------
-- Monitoring
-- ---------------------------------------------------------------------------

CREATE FUNCTION get_sessions(
    OUT key pg_catalog.text,
    OUT token pg_catalog.text,
    OUT lsn pg_catalog.pg_lsn,
    OUT timeline pg_catalog.int8,
    OUT last_write pg_catalog.timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'distributed_get_sessions'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

CREATE VIEW sessions AS
    SELECT * FROM get_sessions();

COMMENT ON VIEW sessions IS
'The leader''s session map: each key, its last write and when';

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

CREATE FUNCTION get_waiters(
    OUT pid pg_catalog.int4,
    OUT token pg_catalog.text,
    OUT lsn pg_catalog.pg_lsn,
    OUT started pg_catalog.timestamptz,
    OUT waiting_ms pg_catalog.float8)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'distributed_get_waiters'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

CREATE VIEW waiters AS
    SELECT * FROM get_waiters();

COMMENT ON VIEW waiters IS
'Backends waiting for replay now';

CREATE FUNCTION reset_stats()
RETURNS void
AS 'MODULE_PATHNAME', 'distributed_reset_stats'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

COMMENT ON FUNCTION reset_stats() IS
'Zero the counters of distributed.stats';

-- ---------------------------------------------------------------------------
-- Privileges: keys are secrets (they identify logins)
-- ---------------------------------------------------------------------------

-- Applications call the functions; each object below says who may use it.
GRANT USAGE ON SCHEMA @extschema@ TO PUBLIC;

REVOKE ALL ON FUNCTION get_sessions() FROM PUBLIC;
REVOKE ALL ON sessions FROM PUBLIC;
GRANT EXECUTE ON FUNCTION get_sessions() TO pg_monitor;
GRANT SELECT ON sessions TO pg_monitor;

REVOKE ALL ON FUNCTION get_waiters() FROM PUBLIC;
REVOKE ALL ON waiters FROM PUBLIC;
GRANT EXECUTE ON FUNCTION get_waiters() TO pg_monitor;
GRANT SELECT ON waiters TO pg_monitor;

GRANT SELECT ON stats TO PUBLIC;

REVOKE ALL ON FUNCTION reset_stats() FROM PUBLIC;

-- record() and forget() move positions for any key: forget() raises the
-- floor for everyone, record() pins a key to the leader until followers
-- catch up.  Grant them to the application's role when it needs them.
REVOKE ALL ON FUNCTION record(pg_catalog.text, pg_catalog.text) FROM PUBLIC;
REVOKE ALL ON FUNCTION forget(pg_catalog.text) FROM PUBLIC;
