-- Every error a user can hit: message and SQLSTATE.
\set VERBOSITY sqlstate
-- malformed tokens: 22P02
SELECT distributed.is_replayed('');
SELECT distributed.is_replayed('nonsense');
SELECT distributed.is_replayed('0/');
SELECT distributed.is_replayed('/0');
SELECT distributed.is_replayed('1:');
SELECT distributed.is_replayed(':0/1');
SELECT distributed.is_replayed('0:0/1');
SELECT distributed.is_replayed('x:0/1');
SELECT distributed.is_replayed('4294967296:0/1');
SELECT distributed.is_replayed('1:0/123456789');
SELECT distributed.is_replayed(' 0/1');
SELECT distributed.is_replayed('0/1 ');
SELECT distributed.wait('1:2:0/1', 0);
SELECT distributed.token_lsn('junk');
CALL distributed.wait_for('junk', 0);
SELECT distributed.record('k', 'junk');
-- boundaries that are fine
SELECT distributed.token_lsn('4294967295:FFFFFFFF/FFFFFFFF'),
       distributed.token_timeline('4294967295:0/0'),
       distributed.token_timeline('0/0');
SELECT distributed.token_lsn(NULL) IS NULL AS strict_helper;
-- NULLs: 22004
SELECT distributed.is_replayed(NULL::text);
SELECT distributed.is_replayed(NULL::pg_lsn);
SELECT distributed.wait(NULL::text, 0);
SELECT distributed.wait('0/1', NULL);
CALL distributed.wait_for(NULL::text, 0);
CALL distributed.wait_for('0/1', NULL);
SELECT distributed.session_token(NULL);
SELECT distributed.record(NULL, '0/1');
SELECT distributed.record('k', NULL);
SELECT distributed.forget(NULL);
-- timeouts: negative 22023; beyond int4 no such function (42883)
SELECT distributed.wait('0/1', -1);
CALL distributed.wait_for('0/1', -1);
SELECT distributed.wait('0/1', 2147483648);
-- keys: empty 22023, over 128 bytes 22001
SELECT distributed.session_token('');
SELECT distributed.record('', '0/1');
SELECT distributed.forget('');
SELECT distributed.session_token(repeat('k', 129));
SELECT distributed.session_token(repeat('k', 128)) IS NOT NULL AS max_len_ok;
SELECT distributed.session_token(repeat('é', 65));
-- keys are printable ASCII: the map is read from databases of any encoding
SELECT distributed.session_token('caf' || chr(233));
SELECT distributed.session_token('tab' || chr(9) || 'key');
SET distributed.session_key = 'naïve';
SELECT distributed.session_token(' ~ printable ASCII ~ ') IS NOT NULL AS ascii_ok;
SET distributed.session_key = '';
SET distributed.session_key = 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx';
-- record(): only positions this server holds, 22023
SELECT distributed.record('k', 'FFFFFFFF/0');
SELECT distributed.record('k', '9:0/1');
-- read-only settings: 55P02; capacity is set at start-up: 55P02
SET distributed.last_commit = '1:0/1';
SET distributed.replay_position = '1:0/1';
SET distributed.max_sessions = 10;
-- unknown settings under the reserved prefix: see prefix.sql
-- the procedure in a REPEATABLE READ transaction that took its snapshot: 25001
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT 1 AS snapshot_taken;
CALL distributed.wait_for('0/1', 0);
ROLLBACK;
\set VERBOSITY default
-- messages read as documented
SELECT distributed.is_replayed('nonsense');
SELECT distributed.session_token(repeat('k', 129));
SELECT distributed.wait('0/1', -1);
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT 1 AS snapshot_taken;
CALL distributed.wait_for('0/1', 0);
ROLLBACK;
