/*
 * actor.c - the third party: resolves futures.
 *
 * Jobs arrive from the consumer as {"op": "fib", "n": n, "for": name,
 * "resolve": <conn or channel>}; the actor computes and sends {"value": v}
 * on the resolve endpoint, whose other end the consumer has handed to a
 * producer as a future (directly, or through a relay).  A resolve endpoint
 * is either a connection (one descriptor here, one at the other end) or a
 * channel of the actor's own connection to the consumer (no descriptor):
 * the actor takes both the same way and answers both with demo_reply.
 * {"op": "hold", "count": k} makes the actor receive k jobs before it
 * answers any: k requests in flight at once, to be counted.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "demo.h"

#define MAX_HOLD 100000

/* held >= 0: the answer also says how many fds the actor had open while
 * holding the job (and before). */
static int
resolve(chan_msg *job, int held, int held_before)
{
	chan_value *root = chan_msg_root(job);
	int64_t n = 0, delay_ms = 0;
	bool quiet = false;
	const char *who = "?";
	chan_conn *future = NULL;
	chan_msg *m;
	chan_value *v;
	int r;

	/* Checked reads: a missing or mistyped field is an error, never 0. */
	if ((r = chan_map_get_int(root, "n", &n)) < 0 ||
	    (r = chan_map_get_string(root, "for", &who, NULL)) < 0 ||
	    (r = demo_get_int_or(root, "delay_ms", 10, &delay_ms)) < 0)
		return r;
	if (n < 0 || n > 92 || delay_ms < 0 || delay_ms > 1000)
		return CHAN_E_INVALID_ARGUMENT;
	r = chan_map_get_bool(root, "quiet", &quiet);
	if (r < 0 && r != CHAN_E_NOT_FOUND)
		return r;
	/* Take the endpoint out of the message: it is ours now. */
	r = chan_map_move_conn(root, "resolve", &future);
	if (r < 0)
		return r;
	if (delay_ms > 0) { /* the "slow" part of the work */
		struct timespec later = {0, (long)delay_ms * 1000 * 1000};

		nanosleep(&later, NULL);
	}
	m = chan_msg_new(NULL);
	v = chan_map(m);
	chan_map_put(v, "value", chan_int(m, demo_fib(n)));
	if (held >= 0) {
		chan_map_put(v, "fds", chan_int(m, held));
		chan_map_put(v, "fds_before", chan_int(m, held_before));
	}
	r = chan_msg_set_root(m, v);
	if (r == 0) {
		if (!quiet)
			say("actor", "fib(%lld) = %lld for %s: resolving its future%s",
			    (long long)n, (long long)demo_fib(n), who,
			    chan_conn_channel_id(future) ? " (on its channel)" : "");
		r = demo_reply(future, m);
	}
	chan_msg_free(m);
	chan_conn_free(future);
	return r;
}

/* Receive count jobs, then answer them all.  before: the actor's open fds
 * at rest (counted before the hold message came: the read that brought it
 * may have brought the first job's descriptor too, read ahead, SPEC.md
 * §10.3). */
static int
hold(chan_conn *conn, int64_t count, int before)
{
	chan_msg **jobs;
	int during, got = 0, r = 0, failed = 0;

	if (count < 1 || count > MAX_HOLD)
		return CHAN_E_INVALID_ARGUMENT;
	if (!(jobs = calloc((size_t)count, sizeof(*jobs))))
		return CHAN_E_NO_MEMORY;
	for (; got < count; got++) {
		const char *op = NULL;

		if ((r = chan_conn_recv(conn, DEMO_TIMEOUT_MS, &jobs[got])) < 0)
			break;
		if (chan_map_get_string(chan_msg_root(jobs[got]), "op", &op, NULL) < 0 ||
		    strcmp(op, "fib") != 0) {
			r = CHAN_E_INVALID_ARGUMENT;
			got++;
			break;
		}
	}
	during = count_open_fds();
	if (r == 0)
		say("actor", "holding %lld requests in flight: %d open fds (%d at rest)",
		    (long long)count, during, before);
	for (int i = 0; i < got; i++) {
		if (r == 0 && resolve(jobs[i], during, before) < 0)
			failed++;
		chan_msg_free(jobs[i]);
	}
	free(jobs);
	if (r == 0 && failed)
		r = CHAN_E_INVALID_ARGUMENT;
	return r;
}

static int
job(chan_conn *conn, chan_msg *m, int rest)
{
	chan_value *root = chan_msg_root(m);
	const char *op = NULL;
	int64_t count = 0;
	int r;

	if ((r = chan_map_get_string(root, "op", &op, NULL)) < 0)
		return r;
	if (strcmp(op, "fib") == 0)
		return resolve(m, -1, -1);
	if (strcmp(op, "hold") == 0) {
		if ((r = chan_map_get_int(root, "count", &count)) < 0)
			return r;
		return hold(conn, count, rest);
	}
	say("actor", "unknown op %s", op);
	return CHAN_E_INVALID_ARGUMENT;
}

int
actor_run(chan_conn *conn)
{
	int failures = 0, rest = count_open_fds(), r;

	for (;;) {
		chan_msg *m = NULL;

		/* -1: the actor idles until the consumer closes the connection. */
		r = chan_conn_recv(conn, -1, &m);
		if (r == CHAN_E_CONNECTION_CLOSED)
			break;
		if (r < 0) {
			say("actor", "receive failed: %s", chan_strerror(r));
			failures++;
			if (chan_error_scope(r) == CHAN_SCOPE_FATAL)
				break;
			continue;
		}
		if ((r = job(conn, m, rest)) < 0) {
			say("actor", "job failed: %s", chan_errname(r));
			failures++;
		}
		chan_msg_free(m);
	}
	chan_conn_free(conn);
	return failures ? 1 : 0;
}
