-- Monitoring views and privileges.
\set VERBOSITY terse
SELECT attname, format_type(atttypid, atttypmod)
  FROM pg_attribute
 WHERE attrelid = 'distributed.sessions'::regclass AND attnum > 0
 ORDER BY attnum;
SELECT count(*) > 0 AS has_rows,
       bool_and(distributed.token_lsn(token) = lsn) AS token_matches_lsn,
       bool_and(last_write <= now() + interval '1 minute') AS sane_time
  FROM distributed.sessions;
SELECT attname FROM pg_attribute
 WHERE attrelid = 'distributed.stats'::regclass AND attnum > 0 ORDER BY attnum;
SELECT role, capacity, checks_safe > 0 AS checked, waits_started > 0 AS waited,
       wait_time_ms >= 0 AS wait_time, watch_interval_ms
  FROM distributed.stats;
SELECT * FROM distributed.waiters;

-- privileges: keys are secrets
SELECT table_name, grantee, privilege_type FROM information_schema.role_table_grants
 WHERE table_schema = 'distributed' AND grantee <> current_user
 ORDER BY table_name, grantee, privilege_type;
SELECT p.oid::regprocedure AS routine,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_may_execute
  FROM pg_proc p WHERE p.pronamespace = 'distributed'::regnamespace
 ORDER BY p.oid::regprocedure::text;
CREATE ROLE dist_app LOGIN;
CREATE ROLE dist_watch LOGIN IN ROLE pg_monitor;
SET ROLE dist_app;
SELECT role FROM distributed.stats;
SELECT * FROM distributed.sessions;
SELECT * FROM distributed.waiters;
SELECT distributed.reset_stats();
-- an application role can record its own writes and look keys up ...
SELECT distributed.session_token('alice') IS NOT NULL AS can_look_up;
-- ... but not move other keys' positions unless granted
SELECT distributed.forget('alice');
SELECT distributed.record('alice', '0/1');
RESET ROLE;
SET ROLE dist_watch;
SELECT count(*) > 0 AS monitor_sees_keys FROM distributed.sessions;
SELECT count(*) >= 0 AS monitor_sees_waiters FROM distributed.waiters;
SELECT distributed.reset_stats();
RESET ROLE;

-- reset (superuser)
SELECT distributed.reset_stats();
SELECT checks_safe, checks_unsafe, waits_started, waits_reached, evictions,
       stats_reset > now() - interval '1 minute' AS just_reset
  FROM distributed.stats;
-- the map is not a counter: reset leaves it
SELECT entries > 0 AS map_kept FROM distributed.stats;
DROP ROLE dist_app;
DROP ROLE dist_watch;
