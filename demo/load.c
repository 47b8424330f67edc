/*
 * load.c - the actor's workload from the requesting side, and the bench
 * that times it (chan-demo --bench-actor).
 *
 * A request is the consumer's fib job, {"op": "fib", "n": n, "for": "load",
 * "delay_ms": 0, "quiet": true, "resolve": R}, answered by the same actor
 * code as in the demo.  R is a fresh reply endpoint: one end of a
 * connection pair (this process keeps the other: one descriptor here and,
 * once received, one in the actor, per request in flight), or a channel of
 * the connection the job travels on (none).  Answers are read oldest first,
 * by a thread of their own; the others wait in their sockets, or queued
 * inside the connection.
 */
#include <pthread.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "demo.h"

#define FIB_MOD 60 /* job k asks fib(k % FIB_MOD) */

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int
send_job(chan_conn *conn, bool channels, int k, chan_conn **ret_mine)
{
	chan_conn *theirs = NULL;
	chan_msg *m;
	chan_value *root;
	int r;

	if (!channels && (r = chan_conn_pair(ret_mine, &theirs)) < 0)
		return r;
	m = chan_msg_new(NULL);
	root = chan_map(m);
	chan_map_put(root, "op", chan_string(m, "fib"));
	chan_map_put(root, "n", chan_int(m, k % FIB_MOD));
	chan_map_put(root, "for", chan_string(m, "load"));
	chan_map_put(root, "delay_ms", chan_int(m, 0));
	chan_map_put(root, "quiet", chan_bool(m, true));
	chan_map_put(root, "resolve", channels ? chan_channel_open(m, conn, ret_mine)
					       : chan_handle_move_conn(m, &theirs));
	r = chan_msg_set_root(m, root);
	if (r == 0)
		r = chan_conn_send(conn, m, DEMO_TIMEOUT_MS);
	chan_msg_free(m); /* closes the moved-in end: the actor has its own */
	chan_conn_free(theirs); /* NULL unless the move failed */
	if (r < 0)
		*ret_mine = chan_conn_free(*ret_mine);
	return r;
}

/* The answer to job k: {"value": fib(k % FIB_MOD)}, then nothing more. */
static int
recv_answer(chan_conn *mine, int k, struct load *ld)
{
	chan_msg *m = NULL;
	int64_t v = 0, fds = 0, before = 0;
	int r;

	if ((r = chan_conn_recv(mine, DEMO_TIMEOUT_MS, &m)) < 0)
		return r;
	r = chan_map_get_int(chan_msg_root(m), "value", &v);
	if (r == 0 && v != demo_fib(k % FIB_MOD))
		r = CHAN_E_INVALID_ARGUMENT;
	if (r == 0 && ld->hold && k == 0 &&
	    (r = chan_map_get_int(chan_msg_root(m), "fds", &fds)) == 0 &&
	    (r = chan_map_get_int(chan_msg_root(m), "fds_before", &before)) == 0) {
		ld->actor_fds = (int)fds;
		ld->actor_fds_before = (int)before;
	}
	chan_msg_free(m);
	if (r < 0)
		say("load", "job %d: wrong answer (%s)", k, chan_errname(r));
	return r;
}

static int
send_hold(chan_conn *conn, int count)
{
	chan_msg *m = chan_msg_new(NULL);
	chan_value *root = chan_map(m);
	int r;

	chan_map_put(root, "op", chan_string(m, "hold"));
	chan_map_put(root, "count", chan_int(m, count));
	r = chan_msg_set_root(m, root);
	if (r == 0)
		r = chan_conn_send(conn, m, DEMO_TIMEOUT_MS);
	chan_msg_free(m);
	return r;
}

/* The requesting side is two threads: this one sends, a reader takes the
 * answers oldest first as they come.  One thread doing both would stall: with
 * channels every answer arrives on the one socket, and an actor whose
 * answers fill it stops reading jobs while we are still sending them (a
 * stream's head-of-line blocking, SPEC.md §18.6 rule 4). */
struct pipeline {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct load *ld;
	chan_conn **mine; /* ring of window slots: job k in k % window */
	int sent, done;   /* jobs sent, answers taken */
	bool go;          /* the reader may start (hold: once all are counted) */
	int err;          /* the first error of either thread */
	double t_end;
};

static void *
reader_main(void *arg)
{
	struct pipeline *p = arg;
	struct load *ld = p->ld;

	for (int k = 0; k < ld->total; k++) {
		chan_conn *c;
		int r;

		pthread_mutex_lock(&p->lock);
		while (!p->err && (!p->go || p->sent <= k))
			pthread_cond_wait(&p->cond, &p->lock);
		c = p->mine[k % ld->window];
		pthread_mutex_unlock(&p->lock);
		if (p->err) /* read under the lock above; set once */
			return NULL;
		r = recv_answer(c, k, ld);
		pthread_mutex_lock(&p->lock);
		p->mine[k % ld->window] = chan_conn_free(c);
		if (r < 0 && !p->err)
			p->err = r;
		p->done = k + 1;
		pthread_cond_broadcast(&p->cond);
		pthread_mutex_unlock(&p->lock);
		if (r < 0)
			return NULL;
	}
	p->t_end = now();
	return NULL;
}

int
actor_load(chan_conn *conn, struct load *ld)
{
	struct pipeline p = {.ld = ld, .go = !ld->hold};
	pthread_t reader;
	int r = 0, fds;
	double t0;

	if (ld->window < 1 || ld->total < 1 || (ld->hold && ld->total != ld->window) ||
	    !(p.mine = calloc((size_t)ld->window, sizeof(*p.mine))))
		return CHAN_E_INVALID_ARGUMENT;
	pthread_mutex_init(&p.lock, NULL);
	pthread_cond_init(&p.cond, NULL);
	ld->fds_base = ld->fds_peak = count_open_fds();
	ld->actor_fds = ld->actor_fds_before = -1;
	if (pthread_create(&reader, NULL, reader_main, &p) != 0) {
		free(p.mine);
		return CHAN_E_SYSTEM;
	}
	t0 = now();
	if (ld->hold)
		r = send_hold(conn, ld->total);
	for (int k = 0; r == 0 && k < ld->total; k++) {
		chan_conn *c = NULL;
		bool full;

		pthread_mutex_lock(&p.lock);
		while (!p.err && k - p.done >= ld->window)
			pthread_cond_wait(&p.cond, &p.lock);
		r = p.err;
		pthread_mutex_unlock(&p.lock);
		if (r < 0 || (r = send_job(conn, ld->channels, k, &c)) < 0)
			break;
		pthread_mutex_lock(&p.lock);
		p.mine[k % ld->window] = c;
		p.sent = k + 1;
		full = p.sent - p.done == ld->window;
		pthread_cond_broadcast(&p.cond);
		pthread_mutex_unlock(&p.lock);
		/* The count every 256 jobs (reading /proc/self/fd is not
		 * free); hold: once all are sent, before the reader starts,
		 * so that it sees every request in flight. */
		if ((ld->hold ? full : k % 256 == 255) && (fds = count_open_fds()) > ld->fds_peak)
			ld->fds_peak = fds;
	}
	pthread_mutex_lock(&p.lock);
	if (r < 0 && !p.err)
		p.err = r;
	p.go = true;
	pthread_cond_broadcast(&p.cond);
	pthread_mutex_unlock(&p.lock);
	pthread_join(reader, NULL);
	r = p.err;
	ld->seconds = p.t_end - t0;
	if (r < 0)
		say("load", "%d of %d jobs answered: %s", p.done, ld->total, chan_strerror(r));
	for (int i = 0; i < ld->window; i++)
		chan_conn_free(p.mine[i]);
	free(p.mine);
	pthread_mutex_destroy(&p.lock);
	pthread_cond_destroy(&p.cond);
	if (r == 0 && (fds = count_open_fds()) != ld->fds_base) {
		say("load", "open fds: %d before, %d after", ld->fds_base, fds);
		r = CHAN_E_INVALID_ARGUMENT;
	}
	return r;
}

/* ---- chan-demo --bench-actor ---- */

static int
one_run(bool channels, int total, int window, struct load *ld)
{
	chan_conn *actor = NULL;
	pid_t pid = spawn_actor(&actor, true); /* its lines go to stderr */
	int r = 0;

	if (pid < 0)
		return -1;
	*ld = (struct load){.total = total, .window = window, .channels = channels};
	if (channels)
		r = chan_conn_hello(actor, CHAN_FEATURE_CHANNELS, DEMO_TIMEOUT_MS);
	if (r == 0)
		r = actor_load(actor, ld);
	chan_conn_free(actor); /* the actor finishes, checking its own fds */
	if (reap(pid) < 0 && r == 0)
		r = -1;
	return r;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

int
bench_actor_main(int argc, char **argv)
{
	enum { ROUNDS = 5 };
	int total = 20000, window = 256, fds = count_open_fds(), after;
	bool json = false;
	double rps[2][ROUNDS];
	int peak[2] = {0, 0}, base = 0;
	const char *names[2] = {"reply_to connections", "channels"};

	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = true;
		else if (strcmp(argv[i], "--requests") == 0 && i + 1 < argc)
			total = atoi(argv[++i]);
		else if (strcmp(argv[i], "--outstanding") == 0 && i + 1 < argc)
			window = atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: chan-demo --bench-actor [--json] [--requests N] "
					"[--outstanding W]\n");
			return 2;
		}
	}
	if (total < 1 || window < 1 || window > 10000) {
		fprintf(stderr, "chan-demo: --requests >= 1, 1 <= --outstanding <= 10000\n");
		return 2;
	}
	{ /* reply_to connections need a descriptor per request in flight */
		struct rlimit rl;

		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max &&
		    rl.rlim_cur < (rlim_t)window + 64) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	/* Alternating, so that a change of machine load hits both alike. */
	for (int round = 0; round < ROUNDS; round++) {
		for (int j = 0; j < 2; j++) {
			int mode = (round + j) % 2;
			struct load ld;

			if (one_run(mode == 1, total, window, &ld) < 0) {
				fprintf(stderr, "chan-demo: --bench-actor: the run with %s failed\n",
					names[mode]);
				return 1;
			}
			rps[mode][round] = total / ld.seconds;
			if (ld.fds_peak - ld.fds_base > peak[mode])
				peak[mode] = ld.fds_peak - ld.fds_base;
			base = ld.fds_base;
		}
	}
	if ((after = count_open_fds()) != fds) {
		fprintf(stderr, "chan-demo: --bench-actor: open fds %d before, %d after\n", fds,
			after);
		return 1;
	}
	qsort(rps[0], ROUNDS, sizeof(double), cmp_double);
	qsort(rps[1], ROUNDS, sizeof(double), cmp_double);
	if (json) {
		printf("{\"requests\": %d, \"outstanding\": %d, \"rounds\": %d, "
		       "\"reply_to_rps\": %.0f, \"channels_rps\": %.0f, "
		       "\"fds_base\": %d, \"fds_peak_reply_to\": %d, \"fds_peak_channels\": %d}\n",
		       total, window, ROUNDS, rps[0][ROUNDS / 2], rps[1][ROUNDS / 2], base,
		       base + peak[0], base + peak[1]);
		return 0;
	}
	printf("the demo's actor, %d fib jobs per run, %d outstanding, median of %d runs each:\n",
	       total, window, ROUNDS);
	for (int mode = 0; mode < 2; mode++)
		printf("  %-22s %9.0f requests/s (runs %.0f..%.0f); open fds here: %d, "
		       "%d at most in flight\n",
		       names[mode], rps[mode][ROUNDS / 2], rps[mode][0], rps[mode][ROUNDS - 1], base,
		       base + peak[mode]);
	printf("  channels/reply_to: %.2fx\n", rps[1][ROUNDS / 2] / rps[0][ROUNDS / 2]);
	return 0;
}
