/*
 * loop_load.c - many concurrent clients against one event-loop server.
 *
 *   loop_load PATH CLIENTS REQUESTS [--stall]
 *
 * CLIENTS threads each connect to PATH and make REQUESTS requests, each with
 * a fresh reply_to connection ({"n": i, "reply_to": <conn>}, answered with
 * {"n": i}).  With --stall, two hostile clients come first and stay for the
 * whole run: one sends half a frame header and stops; one sends requests
 * and never reads the answers.  The run fails (exit 1) if any answer is
 * lost or wrong, if the server's descriptor count does not come back to
 * where it was, or if the server's RSS grows by more than 25% (or 4 MiB)
 * between the first fifth of the requests and the end.  It prints one
 * line:
 *
 *   loop-load: 1000 clients x 100 requests, stalled 0: lost 0, p50 41.0 us,
 *   p99 210.3 us, server fds 4 -> 4, server RSS 2212 -> 2300 KiB
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "chan.h"
#include "loop_common.h"

#define TIMEOUT_MS 20000

static const char *path;
static int requests;
static atomic_long done_requests, lost;
static double *latency; /* [client * requests + i], microseconds */

static double
now_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

/* A fresh reply_to per request: the pattern whose cost this measures. */
static int
round_trip(chan_conn *c, int64_t i)
{
	chan_conn *mine = NULL, *theirs = NULL;
	chan_msg *req = NULL, *ans = NULL;
	chan_value *root;
	int64_t n = -1;
	int r;

	if ((r = chan_conn_pair(&mine, &theirs)) < 0)
		return r;
	req = chan_msg_new(NULL);
	root = chan_map(req);
	chan_map_put(root, "n", chan_int(req, i));
	chan_map_put(root, "reply_to", chan_handle_move_conn(req, &theirs));
	if ((r = chan_msg_set_root(req, root)) == 0 && (r = chan_conn_send(c, req, TIMEOUT_MS)) == 0 &&
	    (r = chan_conn_recv(mine, TIMEOUT_MS, &ans)) == 0)
		r = chan_map_get_int(chan_msg_root(ans), "n", &n);
	if (r == 0 && n != i)
		r = CHAN_E_INVALID_ARGUMENT;
	chan_msg_free(ans);
	chan_msg_free(req);
	chan_conn_free(theirs);
	chan_conn_free(mine);
	return r;
}

static void *
client(void *arg)
{
	long id = (long)arg;
	chan_conn *c = NULL;
	int r = chan_connect(path, &c);

	for (int i = 0; i < requests; i++) {
		double t0 = now_us();

		if (r == 0)
			r = round_trip(c, i);
		latency[id * requests + i] = now_us() - t0;
		if (r < 0)
			atomic_fetch_add(&lost, 1);
		atomic_fetch_add(&done_requests, 1);
	}
	if (r < 0)
		fprintf(stderr, "loop-load: client %ld: %s\n", id, chan_strerror(r));
	chan_conn_free(c);
	return NULL;
}

static long
server_fds(pid_t pid)
{
	char p[64];
	long n = 0;
	DIR *d;

	snprintf(p, sizeof(p), "/proc/%d/fd", (int)pid);
	if (!(d = opendir(p)))
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n - 2;
}

static long
server_rss_kib(pid_t pid)
{
	char p[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(p, sizeof(p), "/proc/%d/status", (int)pid);
	if (!(f = fopen(p, "re")))
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Hostile client 1: half a header, then nothing (the server must keep the
 * partial frame and serve everyone else). */
static chan_conn *
stall_mid_frame(void)
{
	chan_conn *c = NULL;
	static const char half[8] = {'C', 'H', 'A', 'N', 1, 0, 0, 0};

	if (chan_connect(path, &c) < 0 ||
	    chan_sock_send(chan_conn_borrow_fd(c), half, sizeof(half), NULL, 0, false) != 8)
		exit(1);
	return c;
}

/* Hostile client 2: requests whose answers it never reads. */
static chan_conn *
stall_reader(chan_conn **keep, int n)
{
	chan_conn *c = NULL;

	if (chan_connect(path, &c) < 0)
		exit(1);
	for (int i = 0; i < n; i++) {
		chan_conn *theirs = NULL;
		chan_msg *req = chan_msg_new(NULL);
		chan_value *root = chan_map(req);

		if (chan_conn_pair(&keep[i], &theirs) < 0)
			exit(1);
		chan_map_put(root, "n", chan_int(req, i));
		chan_map_put(root, "reply_to", chan_handle_move_conn(req, &theirs));
		if (chan_msg_set_root(req, root) < 0 || chan_conn_send(c, req, TIMEOUT_MS) < 0)
			exit(1);
		chan_msg_free(req);
	}
	return c;
}

int
main(int argc, char **argv)
{
	int clients, stall = argc == 5 && !strcmp(argv[4], "--stall"), r;
	chan_conn *probe = NULL, *s1 = NULL, *s2 = NULL, *unread[64] = {0};
	struct chan_peer_cred cred;
	pthread_attr_t attr;
	pthread_t *th;
	long fds0, fds1, rss0 = -1, rss1, total;

	if (argc < 4 || (argc == 5 && !stall)) {
		fprintf(stderr, "usage: loop_load PATH CLIENTS REQUESTS [--stall]\n");
		return 2;
	}
	path = argv[1];
	clients = atoi(argv[2]);
	requests = atoi(argv[3]);
	loop_raise_fd_limit();
	/* Who serves PATH, and how many descriptors it holds while idle (our
	 * probe connection counted: it stays open until the end). */
	for (int i = 0; (r = chan_connect(path, &probe)) < 0 && i < 200; i++)
		usleep(10000); /* the server may still be starting */
	if (r < 0 || chan_conn_peer_cred(probe, &cred) < 0) {
		fprintf(stderr, "loop-load: cannot reach %s: %s\n", path, chan_strerror(r));
		return 1;
	}
	usleep(50000);
	fds0 = server_fds(cred.pid);
	if (stall) {
		s1 = stall_mid_frame();
		s2 = stall_reader(unread, 64);
	}
	total = (long)clients * requests;
	latency = calloc((size_t)total, sizeof(double));
	th = calloc((size_t)clients, sizeof(*th));
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	for (long i = 0; i < clients; i++)
		if (pthread_create(&th[i], &attr, client, (void *)i) != 0) {
			fprintf(stderr, "loop-load: pthread_create: %s\n", strerror(errno));
			return 1;
		}
	while (atomic_load(&done_requests) < total) {
		if (rss0 < 0 && atomic_load(&done_requests) >= total / 5)
			rss0 = server_rss_kib(cred.pid); /* every client connected and busy */
		usleep(2000);
	}
	rss1 = server_rss_kib(cred.pid);
	for (int i = 0; i < clients; i++)
		pthread_join(th[i], NULL);
	chan_conn_free(s1);
	chan_conn_free(s2);
	for (int i = 0; i < 64; i++)
		chan_conn_free(unread[i]);
	/* The server sees the closes in its own time. */
	for (int i = 0; i < 500 && (fds1 = server_fds(cred.pid)) != fds0; i++)
		usleep(10000);
	qsort(latency, (size_t)total, sizeof(double), cmp_double);
	printf("loop-load: %d clients x %d requests, stalled %d: lost %ld, p50 %.1f us, p99 %.1f us, "
	       "server fds %ld -> %ld, server RSS %ld -> %ld KiB\n",
	       clients, requests, stall ? 2 : 0, atomic_load(&lost), latency[total / 2],
	       latency[total * 99 / 100], fds0, fds1, rss0, rss1);
	chan_conn_free(probe);
	free(latency);
	free(th);
	if (atomic_load(&lost) || fds1 != fds0 || rss0 < 0 ||
	    (rss1 - rss0 > rss0 / 4 && rss1 - rss0 > 4096))
		return 1;
	return 0;
}
