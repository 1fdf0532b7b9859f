-- Unknown settings under the reserved "distributed." prefix.  From
-- PostgreSQL 15 on MarkGUCPrefixReserved() makes SET of one fail with 42602;
-- PostgreSQL 14 has only EmitWarningsOnPlaceholders(), which warns about
-- placeholders that exist when the library loads and lets later ones be.
-- The first row says which expected file applies: prefix.out (t, 15 and
-- later) or prefix_1.out (f, 14), so neither can pass on the other.
\set VERBOSITY sqlstate
SELECT current_setting('server_version_num')::int >= 150000 AS prefix_reserved;
SET distributed.no_such_setting = 1;
SHOW distributed.no_such_setting;
