/*-------------------------------------------------------------------------
 *
 * distbench.c
 *		Command line of distbench, the routing benchmark and consistency
 *		checker of the distributed extension.
 *
 *	distbench route --leader CONNINFO --follower CONNINFO [...] [options]
 *		simulated sessions under one lag scenario, each strategy in turn;
 *		exit status 1 if a consistency check failed (a stale read under
 *		leader-only or a token strategy, a query error, a missing token)
 *
 *	distbench wake --leader CONNINFO --follower CONNINFO [options]
 *		wake-up latency of replay waiters, and CPU of idle ones
 *
 * See bench/run.sh for a full run and bench/smoke.sh for a tiny one.
 *
 *-------------------------------------------------------------------------
 */
#include "distbench.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static void
usage(void)
{
	fprintf(stderr,
			"usage:\n"
			"  distbench route --leader CONNINFO --follower CONNINFO [--follower ...]\n"
			"      [--strategies LIST]   comma-separated, of: leader naive time:W check\n"
			"                            wait:T wait-fn:T check-pipe wait-pipe:T\n"
			"                            wait-one:T gitlab maxscale:T waitfor:T\n"
			"                            (W, T in ms)\n"
			"      [--sessions N] [--reads R] [--think-ms M] [--duration S]\n"
			"      [--sample-ms MS] [--no-shadow] [--bg-writers N] [--bg-rows N]\n"
			"      [--delay-ms MS --delay-on FOLLOWERS]\n"
			"      [--pause-at S --pause-len S --pause-on FOLLOWERS]\n"
			"      [--cache shared|conn] [--refresh-ms MS] [--scenario NAME]\n"
			"      [--markdown FILE|-]\n"
			"      [--tsv FILE] [--checks] [--expect-stale STRATEGY] [--seed N]\n"
			"      [--latency-table] [--raw-tsv FILE]\n"
			"  distbench wake --leader CONNINFO --follower CONNINFO\n"
			"      [--rounds-one N] [--rounds-many N] [--waiters N] [--cpu-seconds S]\n"
			"      [--floor] [--pids FILE] [--markdown FILE|-] [--tsv FILE]\n"
			"FOLLOWERS is \"all\" or 1-based numbers, comma-separated: 1,2\n");
	exit(2);
}

static unsigned
parse_followers(const char *s)
{
	unsigned	mask = 0;
	char	   *copy,
			   *tok,
			   *save;

	if (strcmp(s, "all") == 0)
		return ~0u;
	copy = strdup(s);
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
	{
		int			n = atoi(tok);

		if (n < 1 || n > MAX_FOLLOWERS)
			die("bad follower number: %s", tok);
		mask |= 1u << (n - 1);
	}
	free(copy);
	return mask;
}

static void
parse_strategies(RouteConfig *cfg, const char *list)
{
	char	   *copy = strdup(list),
			   *tok,
			   *save;

	cfg->nstrategies = 0;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
	{
		if (cfg->nstrategies == MAX_STRATEGIES)
			die("at most %d strategies", MAX_STRATEGIES);
		if (!strategy_parse(tok, &cfg->strategies[cfg->nstrategies++]))
			die("unknown strategy: %s", tok);
	}
	free(copy);
}

enum
{
	OPT_LEADER = 256, OPT_FOLLOWER, OPT_STRATEGIES, OPT_SESSIONS, OPT_READS,
	OPT_THINK, OPT_DURATION, OPT_SAMPLE, OPT_BG_WRITERS, OPT_BG_ROWS,
	OPT_DELAY_MS, OPT_DELAY_ON, OPT_PAUSE_AT, OPT_PAUSE_LEN, OPT_PAUSE_ON,
	OPT_CACHE, OPT_SCENARIO, OPT_MARKDOWN, OPT_TSV, OPT_CHECKS, OPT_EXPECT,
	OPT_SEED, OPT_ROUNDS_ONE, OPT_ROUNDS_MANY, OPT_WAITERS, OPT_CPU,
	OPT_NO_SHADOW, OPT_REFRESH,
	OPT_LATENCY_TABLE, OPT_RAW_TSV,
	OPT_FLOOR, OPT_PIDS
};

static const struct option options[] = {
	{"leader", required_argument, NULL, OPT_LEADER},
	{"follower", required_argument, NULL, OPT_FOLLOWER},
	{"strategies", required_argument, NULL, OPT_STRATEGIES},
	{"sessions", required_argument, NULL, OPT_SESSIONS},
	{"reads", required_argument, NULL, OPT_READS},
	{"think-ms", required_argument, NULL, OPT_THINK},
	{"duration", required_argument, NULL, OPT_DURATION},
	{"sample-ms", required_argument, NULL, OPT_SAMPLE},
	{"bg-writers", required_argument, NULL, OPT_BG_WRITERS},
	{"bg-rows", required_argument, NULL, OPT_BG_ROWS},
	{"delay-ms", required_argument, NULL, OPT_DELAY_MS},
	{"delay-on", required_argument, NULL, OPT_DELAY_ON},
	{"pause-at", required_argument, NULL, OPT_PAUSE_AT},
	{"pause-len", required_argument, NULL, OPT_PAUSE_LEN},
	{"pause-on", required_argument, NULL, OPT_PAUSE_ON},
	{"cache", required_argument, NULL, OPT_CACHE},
	{"scenario", required_argument, NULL, OPT_SCENARIO},
	{"markdown", required_argument, NULL, OPT_MARKDOWN},
	{"tsv", required_argument, NULL, OPT_TSV},
	{"checks", no_argument, NULL, OPT_CHECKS},
	{"expect-stale", required_argument, NULL, OPT_EXPECT},
	{"seed", required_argument, NULL, OPT_SEED},
	{"rounds-one", required_argument, NULL, OPT_ROUNDS_ONE},
	{"rounds-many", required_argument, NULL, OPT_ROUNDS_MANY},
	{"waiters", required_argument, NULL, OPT_WAITERS},
	{"cpu-seconds", required_argument, NULL, OPT_CPU},
	{"floor", no_argument, NULL, OPT_FLOOR},
	{"pids", required_argument, NULL, OPT_PIDS},
	{"no-shadow", no_argument, NULL, OPT_NO_SHADOW},
	{"refresh-ms", required_argument, NULL, OPT_REFRESH},
	{"latency-table", no_argument, NULL, OPT_LATENCY_TABLE},
	{"raw-tsv", required_argument, NULL, OPT_RAW_TSV},
	{NULL, 0, NULL, 0}
};

int
main(int argc, char **argv)
{
	RouteConfig rc = {0};
	MicroConfig mc = {0};
	const char *mode;
	int			c;

	if (argc < 2)
		usage();
	mode = argv[1];
	if (strcmp(mode, "route") != 0 && strcmp(mode, "wake") != 0)
		usage();

	rc.sessions = 40;
	rc.reads = 5;
	rc.think_ms = 50;
	rc.duration_s = 5;
	rc.sample_ms = 1;
	rc.bg_rows = 1000;
	rc.shared_cache = true;
	rc.shadow = true;
	rc.refresh_ms = 100;
	rc.scenario = "natural";
	parse_strategies(&rc, "leader,naive,time:100,time:2000,time:15000,check,wait:100");
	mc.rounds_one = 50;
	mc.rounds_many = 10;
	mc.waiters = 200;
	mc.cpu_s = 5;
	rand_seed(1);

	optind = 2;
	while ((c = getopt_long(argc, argv, "", options, NULL)) != -1)
	{
		switch (c)
		{
			case OPT_LEADER:
				rc.leader = mc.leader = optarg;
				break;
			case OPT_FOLLOWER:
				if (rc.nfollowers == MAX_FOLLOWERS)
					die("at most %d followers", MAX_FOLLOWERS);
				rc.followers[rc.nfollowers++] = optarg;
				if (mc.follower == NULL)
					mc.follower = optarg;
				break;
			case OPT_STRATEGIES:
				parse_strategies(&rc, optarg);
				break;
			case OPT_SESSIONS:
				rc.sessions = atoi(optarg);
				break;
			case OPT_READS:
				rc.reads = atoi(optarg);
				break;
			case OPT_THINK:
				rc.think_ms = atof(optarg);
				break;
			case OPT_DURATION:
				rc.duration_s = atof(optarg);
				break;
			case OPT_SAMPLE:
				rc.sample_ms = atof(optarg);
				break;
			case OPT_BG_WRITERS:
				rc.bg_writers = atoi(optarg);
				break;
			case OPT_BG_ROWS:
				rc.bg_rows = atoi(optarg);
				break;
			case OPT_DELAY_MS:
				rc.delay_ms = atoi(optarg);
				break;
			case OPT_DELAY_ON:
				rc.delay_mask = parse_followers(optarg);
				break;
			case OPT_PAUSE_AT:
				rc.pause_at_s = atof(optarg);
				break;
			case OPT_PAUSE_LEN:
				rc.pause_len_s = atof(optarg);
				break;
			case OPT_PAUSE_ON:
				rc.pause_mask = parse_followers(optarg);
				break;
			case OPT_CACHE:
				if (strcmp(optarg, "shared") != 0 && strcmp(optarg, "conn") != 0)
					usage();
				rc.shared_cache = strcmp(optarg, "shared") == 0;
				break;
			case OPT_SCENARIO:
				rc.scenario = optarg;
				break;
			case OPT_MARKDOWN:
				rc.markdown = mc.markdown = optarg;
				break;
			case OPT_TSV:
				rc.tsv = mc.tsv = optarg;
				break;
			case OPT_CHECKS:
				rc.checks = true;
				break;
			case OPT_EXPECT:
				rc.expect_stale = optarg;
				break;
			case OPT_SEED:
				rand_seed(strtoull(optarg, NULL, 10));
				break;
			case OPT_ROUNDS_ONE:
				mc.rounds_one = atoi(optarg);
				break;
			case OPT_ROUNDS_MANY:
				mc.rounds_many = atoi(optarg);
				break;
			case OPT_WAITERS:
				mc.waiters = atoi(optarg);
				break;
			case OPT_CPU:
				mc.cpu_s = atof(optarg);
				break;
			case OPT_FLOOR:
				mc.floor = true;
				break;
			case OPT_PIDS:
				mc.pids = optarg;
				break;
			case OPT_NO_SHADOW:
				rc.shadow = false;
				break;
			case OPT_REFRESH:
				rc.refresh_ms = atof(optarg);
				break;
			case OPT_LATENCY_TABLE:
				rc.latency_table = true;
				break;
			case OPT_RAW_TSV:
				rc.raw_tsv = optarg;
				break;
			default:
				usage();
		}
	}
	if (optind != argc || rc.leader == NULL || rc.nfollowers == 0)
		usage();
	if (rc.sessions < 1 || rc.reads < 0 || rc.duration_s <= 0 || rc.bg_rows < 1 ||
		mc.waiters < 1)
		die("sessions, duration, bg-rows and waiters must be positive");
	if (rc.pause_len_s > 0 && rc.pause_mask == 0)
		rc.pause_mask = ~0u;
	if (rc.delay_ms > 0 && rc.delay_mask == 0)
		rc.delay_mask = ~0u;
	rc.pause_mask &= (1u << rc.nfollowers) - 1;
	rc.delay_mask &= (1u << rc.nfollowers) - 1;

	if (strcmp(mode, "route") == 0)
		return route_main(&rc);
	return micro_main(&mc);
}
