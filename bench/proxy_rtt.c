/*
 * proxy_rtt.c - what `chancodec proxy` costs a conversation (issue 16): the
 * round trip of a small request answered on the same connection, directly
 * and through the proxy (which prints every frame to a file), in turns.
 *
 *   proxy_rtt CHANCODEC [ROUNDS [RUNS]]
 *
 * Prints "proxy-rtt: direct X us, through the proxy Y us (printing to a
 * file): Z x" with medians of RUNS runs of ROUNDS round trips each.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chan.h"

static double
now_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static void
die(const char *what, int r)
{
	fprintf(stderr, "proxy_rtt: %s: %s\n", what, chan_strerror(r));
	exit(1);
}

/* Answer every message on its connection with the same message: one
 * process per connection (the direct client's, then the proxy's). */
static void
echo_server(const char *path)
{
	chan_listener *l;
	chan_conn *c;
	int r;

	if ((r = chan_listen(path, &l)) < 0)
		die("listen", r);
	for (int k = 0; k < 2; k++) {
		if ((r = chan_listener_accept(l, 10000, &c)) < 0)
			die("accept", r);
		if (k == 0 && fork() != 0) {
			chan_conn_free(c);
			continue;
		}
		for (;;) {
			chan_msg *m = NULL;

			if (chan_conn_recv(c, -1, &m) < 0)
				_exit(0);
			if ((r = chan_conn_send(c, m, -1)) < 0)
				die("echo", r);
			chan_msg_free(m);
		}
	}
	_exit(0);
}

static double
run(chan_conn *c, const chan_msg *m, int rounds)
{
	double t0 = now_us();

	for (int i = 0; i < rounds; i++) {
		chan_msg *got = NULL;
		int r;

		if ((r = chan_conn_send(c, m, -1)) < 0 || (r = chan_conn_recv(c, -1, &got)) < 0)
			die("round trip", r);
		chan_msg_free(got);
	}
	return (now_us() - t0) / rounds;
}

static int
cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
	int rounds = argc > 2 ? atoi(argv[2]) : 2000, runs = argc > 3 ? atoi(argv[3]) : 7;
	char dir[] = "/tmp/chan-proxy-rtt-XXXXXX", srv[80], prx[80], log[80], cmd[512];
	double direct[64], proxied[64];
	chan_conn *a = NULL, *b = NULL;
	chan_msg *m = chan_msg_new(NULL);
	chan_value *root = chan_map(m);
	pid_t server, proxy;
	int r;

	if (argc < 2 || runs > 64 || !mkdtemp(dir)) {
		fprintf(stderr, "usage: proxy_rtt CHANCODEC [ROUNDS [RUNS<=64]]\n");
		return 2;
	}
	snprintf(srv, sizeof(srv), "%s/server.sock", dir);
	snprintf(prx, sizeof(prx), "%s/proxy.sock", dir);
	snprintf(log, sizeof(log), "%s/transcript", dir);
	chan_map_put(root, "op", chan_string(m, "ping"));
	chan_map_put(root, "n", chan_int(m, 42));
	if ((r = chan_msg_set_root(m, root)) < 0)
		die("build", r);
	if ((server = fork()) == 0)
		echo_server(srv);
	for (int i = 0; i < 500 && access(srv, F_OK); i++)
		usleep(10000);
	if ((r = chan_connect(srv, &a)) < 0)
		die("connect", r);
	snprintf(cmd, sizeof(cmd), "exec %s proxy -o %s %s %s 2>/dev/null", argv[1], log, prx, srv);
	if ((proxy = fork()) == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500 && access(prx, F_OK); i++)
		usleep(10000);
	if ((r = chan_connect(prx, &b)) < 0)
		die("connect to the proxy", r);
	run(a, m, rounds / 10); /* warm up both paths */
	run(b, m, rounds / 10);
	for (int i = 0; i < runs; i++) {
		direct[i] = run(a, m, rounds);
		proxied[i] = run(b, m, rounds);
	}
	qsort(direct, (size_t)runs, sizeof(double), cmp);
	qsort(proxied, (size_t)runs, sizeof(double), cmp);
	printf("proxy-rtt: direct %.1f us, through the proxy %.1f us (printing every frame to a "
	       "file): %.2fx\n",
	       direct[runs / 2], proxied[runs / 2], proxied[runs / 2] / direct[runs / 2]);
	chan_conn_free(a);
	chan_conn_free(b);
	chan_msg_free(m);
	kill(proxy, SIGTERM);
	waitpid(proxy, NULL, 0);
	waitpid(server, NULL, 0);
	unlink(log);
	unlink(prx);
	unlink(srv);
	rmdir(dir);
	return 0;
}
