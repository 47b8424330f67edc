/*
 * outstanding.c - many requests in flight on one connection (issue 13
 * targets): what each pattern costs in descriptors, and how fast it goes.
 *
 *   outstanding N_CHANNELS N_REPLY_TO [--smoke]
 *
 * A client and a server (forked) share one chan connection.  The client
 * sends N requests, each carrying its own reply endpoint, before any is
 * answered; the server holds every endpoint until all N have arrived, then
 * answers each one; the client reads every answer.
 *
 *   channels   the reply endpoint is a channel (SPEC.md §18): no descriptor
 *   reply_to   the reply endpoint is one end of a fresh socketpair (a conn
 *              handle): the client holds the other end, the server the one
 *              it received, so N requests hold 2N descriptors in all
 *
 * Prints one JSON object: for each pattern N, the descriptors each process
 * had open before and with all N outstanding, the wall time and requests/s
 * (pipelined: send all, answer all), and the RLIMIT_NOFILE that bounds the
 * reply_to pattern here.  bench/run.py renders it into BENCHMARKS.md.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chan.h"

#define CHECK(x)                                                                  \
	do {                                                                      \
		if (!(x)) {                                                       \
			fprintf(stderr, "outstanding: %s:%d: check failed: %s\n", \
				__FILE__, __LINE__, #x);                          \
			exit(2);                                                  \
		}                                                                 \
	} while (0)

static int
count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = -1; /* the directory's own descriptor */

	CHECK(d);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static double
now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

struct counts {
	int before, peak;
};

static chan_msg *
request(int64_t i, chan_conn *on, chan_conn **ret_channel, chan_conn **tx)
{
	chan_msg *m = chan_msg_new(NULL);
	chan_value *root = chan_map(m);

	chan_map_put(root, "seq", chan_int(m, i));
	chan_map_put(root, "method", chan_string(m, "get"));
	if (tx)
		chan_map_put(root, "reply_to", chan_handle_move_conn(m, tx));
	else
		chan_map_put(root, "reply_to", chan_channel_open(m, on, ret_channel));
	CHECK(chan_msg_set_root(m, root) == 0);
	return m;
}

static chan_msg *
reply(int64_t i)
{
	chan_msg *m = chan_msg_new(NULL);
	chan_value *root = chan_map(m);

	chan_map_put(root, "seq", chan_int(m, i));
	chan_map_put(root, "ok", chan_bool(m, true));
	CHECK(chan_msg_set_root(m, root) == 0);
	return m;
}

/* The server: take n requests, holding their endpoints; report; answer. */
static void
serve(chan_conn *c, int ctl, int n, int channels)
{
	chan_conn **ep = calloc((size_t)n, sizeof(*ep));
	struct counts k;

	CHECK(ep);
	k.before = count_fds();
	for (int i = 0; i < n; i++) {
		chan_msg *m = NULL;
		int64_t seq = -1;

		CHECK(chan_conn_recv(c, -1, &m) == 0);
		CHECK(chan_map_get_int(chan_msg_root(m), "seq", &seq) == 0 && seq == i);
		CHECK(chan_map_move_conn(chan_msg_root(m), "reply_to", &ep[i]) == 0);
		chan_msg_free(m);
	}
	k.peak = count_fds();
	CHECK(write(ctl, &k, sizeof(k)) == (ssize_t)sizeof(k));
	for (int i = 0; i < n; i++) {
		chan_msg *r = reply(i);

		CHECK((channels ? chan_conn_send_last(ep[i], r, -1) : chan_conn_send(ep[i], r, -1)) ==
		      0);
		chan_msg_free(r);
		chan_conn_free(ep[i]);
	}
	free(ep);
}

/* The client's side of one pattern; fills the JSON fields. */
static void
run(const char *name, int n, int channels, int last, int pfd)
{
	chan_conn *a, *b, **ep;
	int ctl[2], status;
	struct counts srv, cli;
	double t0, t1;
	pid_t pid;

	CHECK(chan_conn_pair(&a, &b) == 0);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) == 0);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		chan_conn_free(a);
		close(ctl[0]);
		if (channels) /* a channel's frames wait in the server's queues */
			CHECK(chan_conn_set_channel_limits(b, 0, 0) == 0);
		serve(b, ctl[1], n, channels);
		chan_conn_free(b);
		close(ctl[1]);
		_exit(0);
	}
	chan_conn_free(b);
	close(ctl[1]);
	if (channels)
		CHECK(chan_conn_hello(a, CHAN_FEATURE_CHANNELS, -1) == 0);
	ep = calloc((size_t)n, sizeof(*ep));
	CHECK(ep);
	cli.before = count_fds();
	t0 = now();
	for (int i = 0; i < n; i++) {
		chan_conn *tx = NULL;
		chan_msg *m;

		if (!channels)
			CHECK(chan_conn_pair(&ep[i], &tx) == 0);
		m = request(i, a, &ep[i], channels ? NULL : &tx);
		CHECK(chan_conn_send(a, m, -1) == 0);
		chan_msg_free(m);
	}
	CHECK(read(ctl[0], &srv, sizeof(srv)) == (ssize_t)sizeof(srv));
	cli.peak = count_fds();
	for (int i = 0; i < n; i++) {
		chan_msg *m = NULL;
		int64_t seq = -1;

		CHECK(chan_conn_recv(ep[i], -1, &m) == 0);
		CHECK(chan_map_get_int(chan_msg_root(m), "seq", &seq) == 0 && seq == i);
		chan_msg_free(m);
		ep[i] = chan_conn_free(ep[i]);
	}
	t1 = now();
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(count_fds() == cli.before);
	free(ep);
	chan_conn_free(a);
	close(ctl[0]);
	dprintf(pfd,
		"\"%s\": {\"n\": %d, \"client_fds_before\": %d, \"client_fds_peak\": %d, "
		"\"server_fds_before\": %d, \"server_fds_peak\": %d, \"seconds\": %.6f, "
		"\"requests_per_s\": %.1f}%s",
		name, n, cli.before, cli.peak, srv.before, srv.peak, t1 - t0, n / (t1 - t0),
		last ? "" : ", ");
}

int
main(int argc, char **argv)
{
	struct rlimit rl;
	int nch, nrt;

	if (argc < 3) {
		fprintf(stderr, "usage: outstanding N_CHANNELS N_REPLY_TO [--smoke]\n");
		return 2;
	}
	nch = atoi(argv[1]);
	nrt = atoi(argv[2]);
	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
	/* Each process holds one descriptor per outstanding reply_to request:
	 * leave room for what else it has open. */
	if ((rlim_t)nrt + 64 > rl.rlim_cur)
		nrt = (int)rl.rlim_cur - 64;
	CHECK(nch > 0 && nrt > 0);
	printf("{\"rlimit_nofile\": %llu, ", (unsigned long long)rl.rlim_cur);
	fflush(stdout);
	run("channels", nch, 1, 0, 1);
	run("reply_to", nrt, 0, 1, 1);
	printf("}\n");
	return 0;
}
