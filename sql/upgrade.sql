-- The update path a user takes: the released 0.1 installed, this library
-- loaded, then ALTER EXTENSION distributed UPDATE.
DROP EXTENSION distributed;
CREATE EXTENSION distributed VERSION '0.1';
SELECT extversion FROM pg_extension WHERE extname = 'distributed';
-- before the update the library serves 0.1's columns
SELECT count(*) AS columns FROM pg_attribute
 WHERE attrelid = 'distributed.stats'::regclass AND attnum > 0;
SELECT role, waits_cancelled >= 0 AS counted, stats_reset IS NOT NULL AS reset
  FROM distributed.stats;
ALTER EXTENSION distributed UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'distributed';
SELECT attname FROM pg_attribute
 WHERE attrelid = 'distributed.stats'::regclass AND attnum > 0 AND attname LIKE 'wait%'
 ORDER BY attnum;
SELECT role, waits_stale_snapshot >= 0 AS counted, stats_reset IS NOT NULL AS reset
  FROM distributed.stats;
-- the view and its function still belong to the extension (PostgreSQL 18
-- also lists the view's row type), readable by all
SELECT pg_describe_object(classid, objid, objsubid) AS member
  FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'distributed')
   AND classid IN ('pg_proc'::regclass, 'pg_class'::regclass)
   AND pg_describe_object(classid, objid, objsubid) ~ 'stats'
 ORDER BY 1;
CREATE ROLE regress_upgrade_reader;
SET ROLE regress_upgrade_reader;
SELECT role FROM distributed.stats;
RESET ROLE;
DROP ROLE regress_upgrade_reader;
-- and a fresh install is the same 0.2
DROP EXTENSION distributed;
CREATE EXTENSION distributed;
SELECT extversion FROM pg_extension WHERE extname = 'distributed';
