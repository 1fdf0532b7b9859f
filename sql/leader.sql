-- Commit tokens on the leader.
\set VERBOSITY terse
-- a fresh backend has written nothing yet
SELECT distributed.last_commit() IS NULL AS none_yet,
       current_setting('distributed.last_commit') AS reported;
-- tokens are <timeline>:<lsn>
INSERT INTO items VALUES (1, 'one');
SELECT distributed.last_commit() ~ '^[0-9]+:[0-9A-F]+/[0-9A-F]+$' AS has_token;
SELECT distributed.last_commit() AS t1 \gset
-- the token is the end of the commit record: at or below the WAL insert
-- position now, and equal to the reported setting
SELECT distributed.token_lsn(:'t1') <= pg_current_wal_insert_lsn() AS at_or_below_insert,
       distributed.token_timeline(:'t1') = (SELECT timeline_id FROM pg_control_checkpoint()) AS on_current_timeline,
       current_setting('distributed.last_commit') = :'t1' AS setting_matches;
-- a read-only transaction leaves it alone
SELECT count(*) FROM items;
SELECT distributed.last_commit() = :'t1' AS unchanged_by_read;
-- so does a transaction that rolls back
BEGIN; INSERT INTO items VALUES (2, 'two'); ROLLBACK;
SELECT distributed.last_commit() = :'t1' AS unchanged_by_rollback;
-- the next write moves it forward
INSERT INTO items VALUES (2, 'two');
SELECT distributed.last_commit() AS t2 \gset
SELECT distributed.token_lsn(:'t2') > distributed.token_lsn(:'t1') AS advanced;
-- formatted as pg_lsn's output, after the timeline and a colon
SELECT :'t2' = distributed.token_timeline(:'t2') || ':' || distributed.token_lsn(:'t2')::text AS formatted_like_pg_lsn,
       p = distributed.token_timeline(p) || ':' || distributed.token_lsn(p)::text AS position_formatted_like_pg_lsn
  FROM (SELECT distributed.replay_position() AS p) s;

-- Session keys: per connection ...
SET distributed.session_key = 'alice';
UPDATE items SET v = 'uno' WHERE id = 1;
SELECT distributed.session_token('alice') = distributed.last_commit() AS alice_recorded;
-- ... and per transaction, as through a transaction-pooling proxy
RESET distributed.session_key;
BEGIN;
SET LOCAL distributed.session_key = 'bob';
UPDATE items SET v = 'dos' WHERE id = 2;
COMMIT;
SELECT distributed.session_token('bob') = distributed.last_commit() AS bob_recorded;
SHOW distributed.session_key;
UPDATE items SET v = 'two' WHERE id = 2;
SELECT distributed.session_token('bob') < distributed.last_commit() AS bob_not_rerecorded;
-- without a key, nothing is recorded
SELECT key FROM distributed.sessions ORDER BY key;
-- a key set and undone (transaction or savepoint rolled back) records
-- nothing; the key in force again is the one recorded under
SET distributed.session_key = 'alice';
BEGIN;
SET distributed.session_key = 'ivy';
ROLLBACK;
BEGIN;
SAVEPOINT s;
SET LOCAL distributed.session_key = 'judy';
ROLLBACK TO SAVEPOINT s;
UPDATE items SET v = 'uno' WHERE id = 1;
COMMIT;
SELECT distributed.session_token('alice') = distributed.last_commit() AS alice_recorded_again;
RESET distributed.session_key;
SELECT key FROM distributed.sessions ORDER BY key;

-- an unknown key answers the floor, which is set and below alice's write
SELECT floor IS NOT NULL AS floor_set FROM distributed.stats;
SELECT distributed.session_token('carol') = (SELECT floor FROM distributed.stats) AS unknown_is_floor;
SELECT distributed.token_lsn(distributed.session_token('carol'))
       <= distributed.token_lsn(distributed.session_token('alice')) AS floor_below_alice;

-- record() raises a key to a position this server holds, never lowers it
SELECT distributed.record('dave', distributed.last_commit()) = distributed.last_commit() AS dave_recorded;
SELECT distributed.record('alice', :'t1') = distributed.session_token('alice') AS never_lowered;
SELECT distributed.token_lsn(distributed.session_token('alice')) > distributed.token_lsn(:'t1') AS alice_kept;
-- a bare LSN is taken on the current timeline
SELECT distributed.record('erin', distributed.token_lsn(:'t2')::text) = :'t2' AS bare_lsn_recorded;

-- forget() drops the key; its position moves into the floor, so the
-- answer never goes below the truth
SELECT distributed.session_token('dave') AS dave \gset
SELECT distributed.forget('dave') AS forgotten, distributed.forget('dave') AS again;
SELECT distributed.token_lsn(distributed.session_token('dave')) >= distributed.token_lsn(:'dave') AS dave_not_under;
SELECT key FROM distributed.sessions ORDER BY key;

-- capacity is 4 (test/regress.conf): a fifth key evicts the least
-- recently written one, and the floor rises to cover it
SELECT evictions AS ev0 FROM distributed.stats \gset
SELECT distributed.session_token('bob') AS bob_before \gset
SELECT distributed.record('frank', distributed.last_commit()) IS NOT NULL AS f,
       distributed.record('grace', distributed.last_commit()) IS NOT NULL AS g;
SELECT key FROM distributed.sessions ORDER BY last_write, key;
SELECT entries, evictions - :ev0 AS new_evictions FROM distributed.stats;
-- bob, written least recently, was evicted; his answer is the floor now
SELECT distributed.token_lsn(distributed.session_token('bob'))
       >= distributed.token_lsn(:'bob_before') AS evicted_not_under,
       distributed.session_token('bob') = (SELECT floor FROM distributed.stats) AS bob_is_floor;

-- two-phase commit: COMMIT PREPARED is recorded under the key in force
-- when it runs
BEGIN;
UPDATE items SET v = 'prepared' WHERE id = 1;
PREPARE TRANSACTION 'dist_2pc';
SET distributed.session_key = 'henry';
COMMIT PREPARED 'dist_2pc';
RESET distributed.session_key;
SELECT distributed.last_commit() AS t2pc \gset
SELECT distributed.token_lsn(:'t2pc') > distributed.token_lsn(:'t2') AS prepared_advanced,
       distributed.session_token('henry') = :'t2pc' AS henry_recorded;

-- on the leader every token it issued is replayed
SELECT distributed.is_replayed(:'t1') AS t1_safe,
       distributed.is_replayed(distributed.token_lsn(:'t2')) AS t2_safe_lsn,
       distributed.is_replayed(distributed.token_lsn(:'t2')::text) AS t2_safe_bare;
-- and replay_position() is the insert position, the one is_replayed() uses
SELECT distributed.replay_position() = ((SELECT timeline_id FROM pg_control_checkpoint())::text
       || ':' || pg_current_wal_insert_lsn()::text) AS replay_is_insert;

-- the key's hash follows every way the setting changes, not only SET: a
-- database default taken at connection start and by RESET ALL and
-- DISCARD ALL, a function's SET clause undone when it returns
DO $$ BEGIN
    EXECUTE format('ALTER DATABASE %I SET distributed.session_key = %L', current_database(), 'lee');
END $$;
\c
SHOW distributed.session_key;
UPDATE items SET v = 'uno' WHERE id = 1;
SELECT distributed.session_token('lee') = distributed.last_commit() AS lee_at_connection_start;
SET distributed.session_key = 'alice';
RESET ALL;
UPDATE items SET v = 'uno' WHERE id = 1;
SELECT distributed.session_token('lee') = distributed.last_commit() AS lee_after_reset_all;
SET distributed.session_key = 'alice';
DISCARD ALL;
UPDATE items SET v = 'uno' WHERE id = 1;
SELECT distributed.session_token('lee') = distributed.last_commit() AS lee_after_discard_all;
CREATE FUNCTION write_as_kim() RETURNS void LANGUAGE sql
    SET distributed.session_key = 'kim'
    AS $$ UPDATE items SET v = 'uno' WHERE id = 1 $$;
SELECT write_as_kim();
SELECT distributed.session_token('lee') = distributed.last_commit() AS lee_after_function;
DROP FUNCTION write_as_kim();
DO $$ BEGIN
    EXECUTE format('ALTER DATABASE %I RESET distributed.session_key', current_database());
END $$;
