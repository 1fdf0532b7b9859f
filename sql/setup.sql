-- The temporary instance preloads the library (test/regress.conf).
CREATE EXTENSION distributed;
SELECT extname, extversion, nspname
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE extname = 'distributed';
SHOW distributed.max_sessions;
SELECT role, capacity, entries, waiting, watcher_pid IS NOT NULL AS watcher_running
  FROM distributed.stats;
CREATE TABLE items (id int PRIMARY KEY, v text);
