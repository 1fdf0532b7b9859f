/*-------------------------------------------------------------------------
 *
 * latproxy.c
 *		A latency-injecting TCP proxy on loopback, for distbench's latency
 *		scenario (netem is not available on the machines this runs on).
 *
 *	latproxy LISTEN_PORT:TARGET_PORT:ONE_WAY_MS [...]
 *
 * Each mapping listens on 127.0.0.1:LISTEN_PORT and relays every
 * connection to 127.0.0.1:TARGET_PORT, holding each chunk of bytes read in
 * either direction for ONE_WAY_MS (fractions allowed) from the moment it
 * was read before writing it on, so a round trip costs twice that.  Order
 * is preserved (a chunk is never written before the one read before it),
 * and throughput is not limited by the delay: reading goes on while
 * earlier chunks wait, up to 4 MB buffered per direction.  An end of
 * stream is delayed like data and passed on as a half-close.
 *
 * One thread, one ppoll() over every socket, nanosecond timeouts.  Prints
 * "ready" on stdout once every port listens; on SIGTERM or SIGINT prints
 * per-mapping counts (connections, chunks, bytes) on stderr and exits.
 * Only loopback addresses, by construction.
 *
 * Why not toxiproxy: it installs (go install
 * github.com/Shopify/toxiproxy/v2/cmd/server@latest; the cmd/toxiproxy-server
 * path of older releases no longer exists) and its latency toxic works the
 * same way, but it takes whole milliseconds, and the followers here are
 * 0.5 ms away each way; it also needs the module proxy and an HTTP API call
 * per proxy, which the test command's smoke run should not.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <arpa/inet.h>

#define MAX_MAPS 16
#define MAX_CONNS 4096
#define CHUNK 65536
#define MAX_QUEUED (4 * 1024 * 1024)

typedef struct Chunk
{
	struct Chunk *next;
	double		due;			/* ms, monotonic */
	size_t		len;			/* 0: end of stream */
	size_t		off;			/* bytes already written */
	char		data[];
} Chunk;

/* One direction of a relayed connection. */
typedef struct Dir
{
	int			from,
				to;
	Chunk	   *head,
			   *tail;
	size_t		queued;
	bool		eof_read;		/* end of stream seen on from */
	bool		eof_sent;		/* ... and passed on */
} Dir;

typedef struct Conn
{
	bool		used;
	int			map;
	Dir			d[2];			/* client to server, server to client */
} Conn;

typedef struct Map
{
	int			listen_port;
	int			target_port;
	double		delay_ms;
	int			lfd;
	long		conns;
	long		chunks;
	long long	bytes;
} Map;

static Map	maps[MAX_MAPS];
static int	nmaps;
static Conn conns[MAX_CONNS];
static volatile sig_atomic_t stop;

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void
on_signal(int sig)
{
	(void) sig;
	stop = 1;
}

static void
nonblock(int fd)
{
	int			one = 1;

	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	/* the delay is ours to add: no Nagle on top of it */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static struct sockaddr_in
loopback(int port)
{
	struct sockaddr_in a;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons(port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

static void
conn_close(Conn *c)
{
	for (int i = 0; i < 2; i++)
	{
		Chunk	   *k = c->d[i].head;

		while (k)
		{
			Chunk	   *next = k->next;

			free(k);
			k = next;
		}
	}
	close(c->d[0].from);
	close(c->d[0].to);
	memset(c, 0, sizeof(*c));
}

static void
accept_one(int m)
{
	int			cfd = accept(maps[m].lfd, NULL, NULL);
	int			sfd;
	struct sockaddr_in a = loopback(maps[m].target_port);
	int			i;

	if (cfd < 0)
		return;
	sfd = socket(AF_INET, SOCK_STREAM, 0);
	/* a blocking connect: on loopback it completes at once or fails */
	if (sfd < 0 || connect(sfd, (struct sockaddr *) &a, sizeof(a)) < 0)
	{
		fprintf(stderr, "latproxy: connect to port %d: %s\n",
				maps[m].target_port, strerror(errno));
		if (sfd >= 0)
			close(sfd);
		close(cfd);
		return;
	}
	for (i = 0; i < MAX_CONNS && conns[i].used; i++)
		;
	if (i == MAX_CONNS)
	{
		fprintf(stderr, "latproxy: more than %d connections\n", MAX_CONNS);
		close(sfd);
		close(cfd);
		return;
	}
	nonblock(cfd);
	nonblock(sfd);
	conns[i].used = true;
	conns[i].map = m;
	conns[i].d[0] = (Dir) {.from = cfd,.to = sfd};
	conns[i].d[1] = (Dir) {.from = sfd,.to = cfd};
	maps[m].conns++;
}

/* Read what is there into a new chunk; false on a broken connection. */
static bool
dir_read(Conn *c, Dir *d)
{
	char		buf[CHUNK];
	ssize_t		n = read(d->from, buf, sizeof(buf));
	Chunk	   *k;

	if (n < 0)
		return errno == EAGAIN || errno == EINTR;
	k = malloc(sizeof(Chunk) + n);
	if (k == NULL)
		return false;
	k->next = NULL;
	k->due = now_ms() + maps[c->map].delay_ms;
	k->len = n;
	k->off = 0;
	memcpy(k->data, buf, n);
	if (d->tail)
		d->tail->next = k;
	else
		d->head = k;
	d->tail = k;
	d->queued += n;
	if (n == 0)
		d->eof_read = true;
	else
	{
		maps[c->map].chunks++;
		maps[c->map].bytes += n;
	}
	return true;
}

/* Write every chunk that is due; false on a broken connection. */
static bool
dir_write(Dir *d, double now)
{
	while (d->head && d->head->due <= now)
	{
		Chunk	   *k = d->head;

		if (k->len == 0)
		{
			shutdown(d->to, SHUT_WR);
			d->eof_sent = true;
		}
		else
		{
			ssize_t		n = write(d->to, k->data + k->off, k->len - k->off);

			if (n < 0)
				return errno == EAGAIN || errno == EINTR;
			k->off += n;
			d->queued -= n;
			if (k->off < k->len)
				return true;	/* the socket is full: wait for POLLOUT */
		}
		d->head = k->next;
		if (d->head == NULL)
			d->tail = NULL;
		free(k);
	}
	return true;
}

int
main(int argc, char **argv)
{
	static struct pollfd fds[MAX_MAPS + 2 * MAX_CONNS];
	static int	who[MAX_MAPS + 2 * MAX_CONNS];	/* map, or conn * 2 + dir */
	struct sigaction sa;

	if (argc < 2)
	{
		fprintf(stderr, "usage: latproxy LISTEN_PORT:TARGET_PORT:ONE_WAY_MS [...]\n");
		return 2;
	}
	for (int i = 1; i < argc; i++)
	{
		Map		   *m = &maps[nmaps];
		struct sockaddr_in a;
		int			one = 1;

		if (nmaps == MAX_MAPS ||
			sscanf(argv[i], "%d:%d:%lf", &m->listen_port, &m->target_port,
				   &m->delay_ms) != 3 || m->delay_ms < 0)
		{
			fprintf(stderr, "latproxy: bad mapping: %s\n", argv[i]);
			return 2;
		}
		a = loopback(m->listen_port);
		m->lfd = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(m->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(m->lfd, (struct sockaddr *) &a, sizeof(a)) < 0 ||
			listen(m->lfd, 1024) < 0)
		{
			fprintf(stderr, "latproxy: listen on 127.0.0.1:%d: %s\n",
					m->listen_port, strerror(errno));
			return 1;
		}
		fcntl(m->lfd, F_SETFL, fcntl(m->lfd, F_GETFL) | O_NONBLOCK);
		nmaps++;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	printf("ready\n");
	fflush(stdout);

	while (!stop)
	{
		double		now = now_ms();
		double		wake = INFINITY;
		int			n = 0;
		struct timespec ts,
				   *tsp = NULL;

		for (int m = 0; m < nmaps; m++)
		{
			fds[n] = (struct pollfd) {maps[m].lfd, POLLIN, 0};
			who[n++] = -1 - m;
		}
		for (int i = 0; i < MAX_CONNS; i++)
		{
			Conn	   *c = &conns[i];

			if (!c->used)
				continue;
			/* flush what is due first, so that POLLOUT is asked only when blocked */
			if (!dir_write(&c->d[0], now) || !dir_write(&c->d[1], now))
			{
				conn_close(c);
				continue;
			}
			if (c->d[0].eof_sent && c->d[1].eof_sent)
			{
				conn_close(c);
				continue;
			}
			for (int k = 0; k < 2; k++)
			{
				Dir		   *d = &c->d[k];
				short		ev = 0;

				if (!d->eof_read && d->queued < MAX_QUEUED)
					ev |= POLLIN;
				if (d->head && d->head->due <= now)
					ev |= POLLOUT;	/* due but not all written: blocked */
				else if (d->head)
					wake = fmin(wake, d->head->due);
				/* POLLIN on from, POLLOUT on to: two entries */
				if (ev & POLLIN)
				{
					fds[n] = (struct pollfd) {d->from, POLLIN, 0};
					who[n++] = i * 2 + k;
				}
				if (ev & POLLOUT)
				{
					fds[n] = (struct pollfd) {d->to, POLLOUT, 0};
					who[n++] = i * 2 + k;
				}
			}
		}
		if (wake < INFINITY)
		{
			double		ms = fmax(0, wake - now_ms());

			ts.tv_sec = (time_t) (ms / 1000);
			ts.tv_nsec = (long) ((ms - ts.tv_sec * 1000.0) * 1e6);
			tsp = &ts;
		}
		if (ppoll(fds, n, tsp, NULL) < 0)
			continue;
		for (int j = 0; j < n; j++)
		{
			Conn	   *c;
			Dir		   *d;

			if (fds[j].revents == 0)
				continue;
			if (who[j] < 0)
			{
				accept_one(-1 - who[j]);
				continue;
			}
			c = &conns[who[j] / 2];
			if (!c->used)
				continue;		/* closed earlier in this round */
			d = &c->d[who[j] % 2];
			if (fds[j].events & POLLIN)
			{
				if (!dir_read(c, d))
					conn_close(c);
			}
			else if (!dir_write(d, now_ms()))
				conn_close(c);
		}
	}
	for (int m = 0; m < nmaps; m++)
		fprintf(stderr, "latproxy: port %d -> %d, %.2f ms each way: %ld connections, "
				"%ld chunks, %lld bytes\n", maps[m].listen_port, maps[m].target_port,
				maps[m].delay_ms, maps[m].conns, maps[m].chunks, maps[m].bytes);
	return 0;
}
