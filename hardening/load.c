/*
 * load.c - load and soak test (issue 7 §3).
 *
 * One consumer process, P producer processes.  Each producer connects to
 * the consumer's listener and sends N requests; every request carries a
 * fresh reply_to connection (one end of a new socketpair, a conn handle).
 * The consumer takes the endpoint out of the request (chan_conn_from_value)
 * and answers on it; the producer reads the answer on the other end, checks
 * it, and sees the consumer's end close.  Requests are pipelined: up to W
 * per producer are outstanding.
 *
 * Checked in every process: every reply arrives, with the right sequence
 * number and payload; the number of open descriptors at the end equals the
 * number at the start; the resident set stays flat (after a warm-up tenth
 * of the run, RSS never exceeds its warm-up value by more than -r KiB).
 *
 * Back-pressure (-s, -b, -t): the consumer sleeps S microseconds per
 * request, the sockets' buffers are B bytes, and producers send with a T ms
 * timeout.  A producer whose request does not fit gets TIMEOUT (nothing was
 * sent), reads the replies it is owed and tries again; nothing is lost and
 * memory stays bounded.  With -s the run must see at least one TIMEOUT.
 *
 * usage: load [-p producers] [-n requests] [-w window] [-z payload bytes]
 *             [-s consumer_sleep_us] [-b socket_buffer] [-t send_timeout_ms]
 *             [-r rss_slack_kib] [-v]
 * Prints one line per process and a summary; exit status 0 if all passed.
 * (Timings are printed for information only; nothing asserts on them.)
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chan.h"
#include "util.h"

struct opts {
	int producers;
	long requests;
	int window;
	size_t payload;
	long slow_us;
	int sockbuf;
	int timeout_ms;
	long rss_slack_kib;
	int verbose;
};

static struct opts o = {8, 10000, 16, 64, 0, 0, -1, 1024, 0};
static char name[64];

#define FAIL(...)                                                              \
	do {                                                                   \
		fprintf(stderr, "load[%d]: ", (int)getpid());                  \
		fprintf(stderr, __VA_ARGS__);                                  \
		fputc('\n', stderr);                                           \
		return 1;                                                      \
	} while (0)

static double
now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static void
set_buffers(int fd)
{
	if (o.sockbuf > 0) {
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &o.sockbuf, sizeof(o.sockbuf));
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &o.sockbuf, sizeof(o.sockbuf));
	}
}

/* RSS watch: the value at the end of the warm-up tenth, and the maximum
 * after it. */
struct rss {
	long warm, max, samples;
};

static void
rss_sample(struct rss *r, long done, long total)
{
	long pages = hu_rss_pages();

	if (done < total / 10 || total < 10)
		return;
	if (!r->warm)
		r->warm = pages;
	if (pages > r->max)
		r->max = pages;
	r->samples++;
}

/* Under AddressSanitizer freed memory sits in a quarantine, so RSS grows
 * by design: the growth is reported but not judged (LeakSanitizer checks
 * every process at exit instead). */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_JUDGED 0
#else
#define RSS_JUDGED 1
#endif

static int
rss_flat(const struct rss *r, long *grew_kib)
{
	long page_kib = sysconf(_SC_PAGESIZE) / 1024;

	*grew_kib = (r->max - r->warm) * page_kib;
	return !RSS_JUDGED || *grew_kib <= o.rss_slack_kib;
}

static void
fill(uint8_t *p, size_t n, long seq, int who)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seq * 31 + who * 7 + (long)i);
}

/* ---- producer ---- */

struct pending {
	chan_conn *mine;
	long seq;
};

/* Wait for the reply of the oldest outstanding request and check it. */
static int
take_reply(struct pending *p, int who, uint8_t *want)
{
	chan_msg *m = NULL;
	const void *bytes;
	int64_t seq, from;
	size_t n = 0;
	int r = chan_conn_recv(p->mine, -1, &m);

	if (r < 0)
		FAIL("producer %d: reply %ld: %s", who, p->seq, chan_errname(r));
	fill(want, o.payload, p->seq, who);
	if (chan_map_get_bytes(chan_msg_root(m), "echo", &bytes, &n) < 0 ||
	    chan_map_get_int(chan_msg_root(m), "seq", &seq) < 0 || seq != p->seq ||
	    chan_map_get_int(chan_msg_root(m), "producer", &from) < 0 || from != who ||
	    n != o.payload || (n && memcmp(bytes, want, n) != 0))
		FAIL("producer %d: reply %ld is not the answer to it", who, p->seq);
	chan_msg_free(m);
	/* the consumer freed its end: the reply connection ends */
	r = chan_conn_recv(p->mine, -1, &m);
	if (r != CHAN_E_CONNECTION_CLOSED)
		FAIL("producer %d: after reply %ld: %s, want CONNECTION_CLOSED", who,
		     p->seq, chan_errname(r));
	chan_conn_free(p->mine);
	p->mine = NULL;
	return 0;
}

static int
producer(int who)
{
	struct pending *q = calloc((size_t)o.window, sizeof(*q));
	uint8_t *payload = malloc(o.payload + 1), *want = malloc(o.payload + 1);
	chan_conn *c = NULL;
	long head = 0, tail = 0, timeouts = 0, partial = 0;
	struct rss rss = {0};
	int start_fds = hu_count_fds(), r;
	long grew;
	double t0 = now();

	if (!q || !payload || !want)
		FAIL("producer %d: out of memory", who);
	if ((r = chan_connect(name, &c)) < 0)
		FAIL("producer %d: connect: %s", who, chan_errname(r));
	set_buffers(chan_conn_borrow_fd(c));
	for (long seq = 0; seq < o.requests; seq++) {
		chan_conn *mine = NULL, *theirs = NULL;
		chan_msg *m = chan_msg_new(NULL);
		chan_value *root = chan_map(m);

		if ((r = chan_conn_pair(&mine, &theirs)) < 0)
			FAIL("producer %d: pair: %s", who, chan_errname(r));
		fill(payload, o.payload, seq, who);
		chan_map_put(root, "op", chan_string(m, "echo"));
		chan_map_put(root, "seq", chan_int(m, seq));
		chan_map_put(root, "producer", chan_int(m, who));
		chan_map_put(root, "payload", chan_bytes(m, payload, o.payload));
		/* the fresh endpoint moves into the request (no dup): once
		 * sent and freed, only the consumer holds it */
		chan_map_put(root, "reply_to", chan_handle_move_conn(m, &theirs));
		if ((r = chan_msg_set_root(m, root)) < 0)
			FAIL("producer %d: build: %s", who, chan_errname(r));
		if (theirs)
			FAIL("producer %d: chan_conn_handle kept the connection", who);
		for (;;) {
			r = chan_conn_send(c, m, o.timeout_ms);
			if (r == 0)
				break;
			if (r != CHAN_E_TIMEOUT)
				FAIL("producer %d: send %ld: %s", who, seq, chan_errname(r));
			/* back-pressure: nothing was sent; collect a reply we
			 * are owed (the consumer is behind), then retry */
			timeouts++;
			if (head == tail)
				continue;
			if (chan_conn_pending(c) && (r = chan_conn_flush(c, -1)) < 0)
				FAIL("producer %d: flush: %s", who, chan_errname(r));
			if (take_reply(&q[head % o.window], who, want))
				return 1;
			head++;
		}
		if (chan_conn_pending(c))
			partial++;
		chan_msg_free(m);
		q[tail % o.window] = (struct pending){mine, seq};
		tail++;
		if (tail - head == o.window) {
			/* a committed frame must be out before we wait for
			 * its answer */
			if (chan_conn_pending(c) && (r = chan_conn_flush(c, -1)) < 0)
				FAIL("producer %d: flush: %s", who, chan_errname(r));
			if (take_reply(&q[head % o.window], who, want))
				return 1;
			head++;
		}
		if (seq % 64 == 0)
			rss_sample(&rss, seq, o.requests);
	}
	if (chan_conn_pending(c) && (r = chan_conn_flush(c, -1)) < 0)
		FAIL("producer %d: flush: %s", who, chan_errname(r));
	while (head < tail) {
		if (take_reply(&q[head % o.window], who, want))
			return 1;
		head++;
	}
	chan_conn_free(c);
	free(q);
	free(payload);
	free(want);
	if (hu_count_fds() != start_fds)
		FAIL("producer %d: %d fds open at the end, %d at the start", who,
		     hu_count_fds(), start_fds);
	if (!rss_flat(&rss, &grew))
		FAIL("producer %d: RSS grew by %ld KiB after warm-up (limit %ld)", who,
		     grew, o.rss_slack_kib);
	printf("load: producer %d: %ld requests, %ld replies, %ld TIMEOUT, %ld partial "
	       "sends, fds %d -> %d, RSS +%ld KiB after warm-up, %.2f s\n",
	       who, o.requests, head, timeouts, partial, start_fds, hu_count_fds(),
	       grew, now() - t0);
	fflush(stdout);
	return timeouts ? 2 : 0; /* 2: saw back-pressure */
}

/* ---- consumer ---- */

static int
answer(chan_msg *req, long *handled)
{
	chan_value *root = chan_msg_root(req), *to = chan_map_get(root, "reply_to");
	const void *payload;
	int64_t seq, from;
	size_t n = 0;
	chan_conn *rc = NULL;
	chan_msg *m;
	chan_value *rep;
	int r;

	if (chan_map_get_bytes(root, "payload", &payload, &n) < 0 ||
	    chan_map_get_int(root, "seq", &seq) < 0 || chan_map_get_int(root, "producer", &from) < 0)
		FAIL("consumer: a request without payload, seq or producer");
	if ((r = chan_conn_move_from_value(to, &rc)) < 0)
		FAIL("consumer: reply_to: %s", chan_errname(r));
	if (o.slow_us)
		usleep((useconds_t)o.slow_us);
	m = chan_msg_new(NULL);
	rep = chan_map(m);
	chan_map_put(rep, "seq", chan_int(m, seq));
	chan_map_put(rep, "producer", chan_int(m, from));
	chan_map_put(rep, "echo", chan_bytes(m, payload ? payload : "", n));
	if ((r = chan_msg_set_root(m, rep)) < 0)
		FAIL("consumer: build: %s", chan_errname(r));
	if ((r = chan_conn_send(rc, m, -1)) < 0)
		FAIL("consumer: reply: %s", chan_errname(r));
	chan_msg_free(m);
	chan_conn_free(rc);
	(*handled)++;
	return 0;
}

static int
consumer(chan_listener *l, int start_fds, pid_t *pids)
{
	chan_conn **c = calloc((size_t)o.producers, sizeof(*c));
	struct pollfd *pf = calloc((size_t)o.producers, sizeof(*pf));
	long handled = 0, total = (long)o.producers * o.requests, grew;
	int open_conns = 0, r, failed = 0, pressure = 0;
	struct rss rss = {0};
	double t0 = now();

	if (!c || !pf)
		FAIL("consumer: out of memory");
	for (int i = 0; i < o.producers; i++) {
		if ((r = chan_listener_accept(l, 60000, &c[i])) < 0)
			FAIL("consumer: accept: %s", chan_errname(r));
		set_buffers(chan_conn_borrow_fd(c[i]));
		open_conns++;
	}
	while (open_conns) {
		for (int i = 0; i < o.producers; i++) {
			pf[i].fd = c[i] ? chan_conn_borrow_fd(c[i]) : -1;
			pf[i].events = POLLIN;
		}
		if (poll(pf, (nfds_t)o.producers, 60000) <= 0)
			FAIL("consumer: poll: nothing for 60 s (%s)", strerror(errno));
		for (int i = 0; i < o.producers; i++) {
			if (!c[i] || !pf[i].revents)
				continue;
			for (;;) {
				chan_msg *req = NULL;

				r = chan_conn_recv(c[i], 0, &req);
				if (r == CHAN_E_WOULD_BLOCK)
					break;
				if (r == CHAN_E_CONNECTION_CLOSED) {
					chan_conn_free(c[i]);
					c[i] = NULL;
					open_conns--;
					break;
				}
				if (r < 0)
					FAIL("consumer: receive: %s", chan_errname(r));
				if (answer(req, &handled))
					return 1;
				chan_msg_free(req);
				if (handled % 64 == 0)
					rss_sample(&rss, handled, total);
			}
		}
	}
	chan_listener_free(l);
	for (int i = 0; i < o.producers; i++) {
		int st = 0;

		if (waitpid(pids[i], &st, 0) != pids[i] || !WIFEXITED(st) ||
		    (WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 2)) {
			fprintf(stderr, "load: producer %d failed (status 0x%x)\n", i, st);
			failed++;
		} else if (WEXITSTATUS(st) == 2) {
			pressure++;
		}
	}
	free(c);
	free(pf);
	if (handled != total)
		FAIL("consumer: %ld requests handled, %ld sent", handled, total);
	if (hu_count_fds() != start_fds)
		FAIL("consumer: %d fds open at the end, %d at the start", hu_count_fds(),
		     start_fds);
	if (!rss_flat(&rss, &grew))
		FAIL("consumer: RSS grew by %ld KiB after warm-up (limit %ld)", grew,
		     o.rss_slack_kib);
	printf("load: consumer: %ld requests answered, fds %d -> %d, RSS +%ld KiB after "
	       "warm-up, %.2f s, %.0f requests/s\n",
	       handled, start_fds, hu_count_fds(), grew, now() - t0,
	       (double)handled / (now() - t0));
	if (failed)
		FAIL("%d producer(s) failed", failed);
	if (o.slow_us && !pressure)
		FAIL("slow consumer, yet no producer ever got TIMEOUT: no back-pressure seen");
	printf("load: PASS: %d producers x %ld requests, each with a fresh reply_to "
	       "connection%s\n",
	       o.producers, o.requests,
	       o.slow_us ? "; slow consumer: back-pressure seen as TIMEOUT, nothing lost" : "");
	return 0;
}

int
main(int argc, char **argv)
{
	chan_listener *l = NULL;
	pid_t *pids;
	int opt, start_fds, r;

	while ((opt = getopt(argc, argv, "p:n:w:z:s:b:t:r:v")) != -1) {
		switch (opt) {
		case 'p': o.producers = atoi(optarg); break;
		case 'n': o.requests = atol(optarg); break;
		case 'w': o.window = atoi(optarg); break;
		case 'z': o.payload = (size_t)atol(optarg); break;
		case 's': o.slow_us = atol(optarg); break;
		case 'b': o.sockbuf = atoi(optarg); break;
		case 't': o.timeout_ms = atoi(optarg); break;
		case 'r': o.rss_slack_kib = atol(optarg); break;
		case 'v': o.verbose = 1; break;
		default:
			fprintf(stderr, "usage: load [-p producers] [-n requests] [-w window] "
					"[-z payload] [-s slow_us] [-b sockbuf] [-t timeout_ms] "
					"[-r rss_slack_kib]\n");
			return 2;
		}
	}
	if (o.producers < 1 || o.requests < 1 || o.window < 1)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	alarm(600); /* no hang outlives this */
	start_fds = hu_count_fds();
	snprintf(name, sizeof(name), "@chan-load-%d", (int)getpid());
	if ((r = chan_listen(name, &l)) < 0) {
		fprintf(stderr, "load: listen: %s\n", chan_errname(r));
		return 1;
	}
	pids = calloc((size_t)o.producers, sizeof(*pids));
	for (int i = 0; i < o.producers; i++) {
		fflush(NULL);
		pids[i] = fork();
		if (pids[i] < 0) {
			perror("load: fork");
			return 1;
		}
		if (pids[i] == 0) {
			chan_listener_free(l); /* abstract name: nothing unlinked */
			free(pids);
			_exit(producer(i));
		}
	}
	r = consumer(l, start_fds, pids);
	free(pids);
	return r;
}
