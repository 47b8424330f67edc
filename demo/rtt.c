/*
 * rtt.c - round-trip time of a chan request carrying a fresh reply_to,
 * against the bare system calls doing the same job.
 *
 *   chan: the client makes a connection pair, sends {"n": i, "reply_to":
 *         <conn>} on a long-lived connection, the server takes reply_to out
 *         of the message and sends {"n": i} on it, the client receives it.
 *   raw:  the client makes a socketpair, sendmsg()s one byte with the new
 *         socket as SCM_RIGHTS, the server recvmsg()s it (MSG_CMSG_CLOEXEC),
 *         writes one byte into it and closes it, the client reads the byte.
 *
 * The raw side writes its own sendmsg/recvmsg and control messages on
 * purpose (it is the baseline, so it must not use libchan's helpers).
 *
 * Client and server are separate processes, pinned (sched_setaffinity) to
 * one CPU, then to two different CPUs.  Each configuration runs RUNS times
 * ROUNDS round trips, chan and raw runs alternating; the figure is the
 * median over the runs of each run's median round trip (medians, because
 * other load on the machine shows up as outliers).  A measurement, not a
 * test: `make rtt`.
 *
 *   chan-rtt [ROUNDS [RUNS]]
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chan.h"

#define TIMEOUT_MS 10000

static int rounds = 5000;
static int runs = 7;

static void
die(const char *what, int err)
{
	fprintf(stderr, "chan-rtt: %s: %s\n", what, err ? chan_strerror(err) : strerror(errno));
	exit(1);
}

static void
pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		die("sched_setaffinity", 0);
}

static double
now_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

/* ---- chan ---- */

static int64_t
req_n(const chan_msg *m)
{
	int64_t n;
	int r = chan_map_get_int(chan_msg_root(m), "n", &n);

	if (r < 0)
		die("\"n\"", r);
	return n;
}

static void
chan_server(chan_conn *c)
{
	for (;;) {
		chan_msg *req = NULL, *ans;
		chan_conn *reply = NULL;
		chan_value *root;
		int r = chan_conn_recv(c, TIMEOUT_MS, &req);

		if (r == CHAN_E_CONNECTION_CLOSED)
			break;
		if (r < 0)
			die("server recv", r);
		root = chan_msg_root(req);
		if ((r = chan_map_move_conn(root, "reply_to", &reply)) < 0)
			die("reply_to", r);
		ans = chan_msg_new(NULL);
		root = chan_map(ans);
		chan_map_put(root, "n", chan_int(ans, req_n(req)));
		if ((r = chan_msg_set_root(ans, root)) < 0 ||
		    (r = chan_conn_send(reply, ans, TIMEOUT_MS)) < 0)
			die("server send", r);
		chan_msg_free(ans);
		chan_msg_free(req);
		chan_conn_free(reply);
	}
	chan_conn_free(c);
}

static void
chan_round(chan_conn *c, int64_t i)
{
	chan_conn *mine, *theirs;
	chan_msg *req, *ans = NULL;
	chan_value *root;
	int r;

	if ((r = chan_conn_pair(&mine, &theirs)) < 0)
		die("pair", r);
	req = chan_msg_new(NULL);
	root = chan_map(req);
	chan_map_put(root, "n", chan_int(req, i));
	chan_map_put(root, "reply_to", chan_handle_move_conn(req, &theirs));
	if ((r = chan_msg_set_root(req, root)) < 0 ||
	    (r = chan_conn_send(c, req, TIMEOUT_MS)) < 0)
		die("client send", r);
	chan_msg_free(req); /* closes our end of theirs: the server has it */
	if ((r = chan_conn_recv(mine, TIMEOUT_MS, &ans)) < 0)
		die("client recv", r);
	if (req_n(ans) != i)
		die("wrong answer", CHAN_E_INVALID_ARGUMENT);
	chan_msg_free(ans);
	chan_conn_free(mine);
}

/* ---- raw system calls ---- */

static void
raw_server(int s)
{
	for (;;) {
		union {
			struct cmsghdr align;
			char buf[CMSG_SPACE(sizeof(int))];
		} ctl;
		char byte;
		struct iovec iov = {&byte, 1};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
				    .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf)};
		struct cmsghdr *cm;
		ssize_t n = recvmsg(s, &mh, MSG_CMSG_CLOEXEC);
		int fd;

		if (n == 0)
			break;
		cm = CMSG_FIRSTHDR(&mh);
		if (n < 0 || !cm || cm->cmsg_type != SCM_RIGHTS)
			die("raw server recvmsg", 0);
		memcpy(&fd, CMSG_DATA(cm), sizeof(fd));
		if (write(fd, &byte, 1) != 1)
			die("raw server write", 0);
		close(fd);
	}
	close(s);
}

static void
raw_round(int s, int64_t i)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	char byte = (char)i, back = 0;
	struct iovec iov = {&byte, 1};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair", 0);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &sv[1], sizeof(int));
	if (sendmsg(s, &mh, MSG_NOSIGNAL) != 1)
		die("raw sendmsg", 0);
	close(sv[1]);
	if (read(sv[0], &back, 1) != 1 || back != byte)
		die("raw read", 0);
	close(sv[0]);
}

/* ---- one configuration ---- */

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double
median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One run: a fresh server process, a warm-up, then `rounds` timed round
 * trips.  Returns the median round trip of the run in microseconds. */
static double
one_run(int use_chan, int server_cpu, int client_cpu, double *scratch)
{
	chan_conn *a = NULL, *b = NULL;
	int sv[2] = {-1, -1}, r, st;
	double m;
	pid_t pid;

	if (use_chan) {
		if ((r = chan_conn_pair(&a, &b)) < 0)
			die("pair", r);
	} else if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		die("socketpair", 0);
	}
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		die("fork", 0);
	if (pid == 0) {
		pin(server_cpu);
		if (use_chan) {
			chan_conn_free(a);
			chan_server(b);
		} else {
			close(sv[0]);
			raw_server(sv[1]);
		}
		_exit(0);
	}
	pin(client_cpu);
	if (use_chan)
		chan_conn_free(b);
	else
		close(sv[1]);
	for (int i = 0; i < 500; i++) /* warm up */
		use_chan ? chan_round(a, i) : raw_round(sv[0], i);
	for (int i = 0; i < rounds; i++) {
		double t0 = now_us();

		use_chan ? chan_round(a, i) : raw_round(sv[0], i);
		scratch[i] = now_us() - t0;
	}
	if (use_chan)
		chan_conn_free(a);
	else
		close(sv[0]);
	if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		die("server process failed", 0);
	m = median(scratch, rounds);
	return m;
}

/* chan and raw runs alternate, so both see the same machine. */
static void
measure(int server_cpu, int client_cpu, double *ret_chan, double *ret_raw)
{
	double chan_runs[64], raw_runs[64];
	double *scratch = malloc((size_t)rounds * sizeof(double));

	if (!scratch)
		die("malloc", 0);
	for (int k = 0; k < runs; k++) {
		chan_runs[k] = one_run(1, server_cpu, client_cpu, scratch);
		raw_runs[k] = one_run(0, server_cpu, client_cpu, scratch);
	}
	*ret_chan = median(chan_runs, runs);
	*ret_raw = median(raw_runs, runs);
	free(scratch);
}

int
main(int argc, char **argv)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	double c1, r1, c2 = 0, r2 = 0;

	if (argc > 1)
		rounds = atoi(argv[1]);
	if (argc > 2)
		runs = atoi(argv[2]);
	if (rounds < 1 || runs < 1 || runs > 64) {
		fprintf(stderr, "usage: chan-rtt [ROUNDS [RUNS<=64]]\n");
		return 2;
	}
	measure(0, 0, &c1, &r1);
	if (ncpu > 1)
		measure(1, 0, &c2, &r2);
	printf("round trip in microseconds: median over %d runs of each run's median of %d\n",
	       runs, rounds);
	printf("                                      one CPU   two CPUs\n");
	printf("  chan: request with fresh reply_to   %7.2f   %7.2f\n", c1, c2);
	printf("  raw sendmsg/recvmsg with one fd     %7.2f   %7.2f\n", r1, r2);
	printf("  chan / raw                          %7.2f   %7.2f\n", c1 / r1,
	       r2 > 0 ? c2 / r2 : 0.0);
	if (ncpu < 2)
		printf("  (one CPU online: no two-CPU figures)\n");
	return 0;
}
