-- The follower-side calls on a leader: no special case needed.
\set VERBOSITY terse
INSERT INTO items VALUES (10, 'ten');
SELECT distributed.last_commit() AS t \gset
SELECT distributed.wait(:'t', 0) AS own_token,
       distributed.wait(:'t') AS default_timeout,
       distributed.wait(distributed.token_lsn(:'t'), 10) AS as_lsn;
CALL distributed.wait_for(:'t', 10);
CALL distributed.wait_for(distributed.token_lsn(:'t'));
-- a position the leader has not written: it replays nothing, so a wait
-- says so at once instead of sleeping
SELECT distributed.wait('FFFFFFFF/0', 100000) AS ahead,
       distributed.is_replayed('FFFFFFFF/0') AS ahead_safe;
-- a token from a later timeline (another branch of history)
SELECT distributed.wait('7:0/10', 100000) AS later_timeline;
CALL distributed.wait_for('FFFFFFFF/0', 100);
-- an earlier timeline this server never had: cannot be one of its writes
-- (timeline 1 is this server's first, so there is none to test here)
SELECT waits_started >= 6 AS counted, waits_reached >= 5 AS reached,
       waits_not_in_recovery >= 3 AS not_in_recovery, waiting
  FROM distributed.stats;
-- in a READ COMMITTED transaction block the procedure runs: it drops its
-- statement's snapshot, and the next statement takes a new one ...
BEGIN;
CALL distributed.wait_for(:'t', 10);
SELECT count(*) > 0 AS read_after FROM items;
ROLLBACK;
-- ... but not once a REPEATABLE READ transaction has taken its snapshot
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT 1 AS snapshot_taken;
CALL distributed.wait_for(:'t', 10);
ROLLBACK;
-- in autocommit mode it ends its own REPEATABLE READ transaction first
SET default_transaction_isolation = 'repeatable read';
CALL distributed.wait_for(:'t', 10);
-- the function forms never vouch for a REPEATABLE READ snapshot: whether
-- it was taken after the write cannot be told
SELECT distributed.wait(:'t', 10) AS wait_rr, distributed.is_replayed(:'t') AS replayed_rr;
RESET default_transaction_isolation;
SELECT distributed.wait(:'t', 10) AS wait_rc, distributed.is_replayed(:'t') AS replayed_rc;
-- a DO block at top level is not atomic: the procedure may run there,
-- and the block can go on to commit
DO $$ BEGIN CALL distributed.wait_for('0/1', 10); COMMIT; END $$;
DO $$ BEGIN CALL distributed.wait_for('0/1', 10); ROLLBACK; PERFORM count(*) FROM items; END $$;
-- under REPEATABLE READ a top-level DO block is not atomic either: the
-- procedure ends the block's transaction, and the block goes on in a new one
SET default_transaction_isolation = 'repeatable read';
DO $$ BEGIN PERFORM count(*) FROM items; CALL distributed.wait_for('0/1', 10); PERFORM count(*) FROM items; END $$;
-- but it does not commit what the block wrote
DO $$ BEGIN INSERT INTO items VALUES (11, 'eleven'); CALL distributed.wait_for('0/1', 10); END $$;
SELECT count(*) AS eleven FROM items WHERE id = 11;
RESET default_transaction_isolation;
-- but not under a query that keeps its own snapshot
DO $$ DECLARE r record; BEGIN
    FOR r IN SELECT id FROM items LIMIT 1 LOOP
        CALL distributed.wait_for('0/1', 10);
    END LOOP;
END $$;
-- but not from a function, whose statement keeps its snapshot
CREATE FUNCTION call_wait() RETURNS void LANGUAGE plpgsql
    AS $$ BEGIN CALL distributed.wait_for('0/1', 10); END $$;
SELECT call_wait();
DROP FUNCTION call_wait();
-- nothing is left waiting
SELECT count(*) AS waiters FROM distributed.waiters;
