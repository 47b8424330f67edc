/*
 * actor.c - the third party: resolves futures.
 *
 * Jobs arrive from the consumer as {"op": "fib", "n": n, "for": name,
 * "resolve": <conn>}; the actor computes and sends {"value": v} on the
 * resolve connection, whose other end the consumer has handed to a
 * producer as a future.
 */
#include <string.h>
#include <time.h>

#include "demo.h"

static int64_t
fib(int64_t n)
{
	int64_t a = 0, b = 1;

	for (int64_t i = 0; i < n; i++) {
		int64_t t = a + b;

		a = b;
		b = t;
	}
	return a;
}

static int
resolve(chan_msg *job)
{
	chan_value *root = chan_msg_root(job);
	int64_t n = 0;
	const char *who = "?";
	struct timespec later = {0, 10 * 1000 * 1000};
	chan_conn *future = NULL;
	chan_msg *m;
	chan_value *v;
	int r;

	/* Checked reads: a missing or mistyped field is an error, never 0. */
	if ((r = chan_map_get_int(root, "n", &n)) < 0 ||
	    (r = chan_map_get_string(root, "for", &who, NULL)) < 0)
		return r;
	/* Take the connection out of the message: it is ours now. */
	r = chan_map_move_conn(root, "resolve", &future);
	if (r < 0)
		return r;
	nanosleep(&later, NULL); /* the "slow" part of the work */
	m = chan_msg_new(NULL);
	v = chan_map(m);
	chan_map_put(v, "value", chan_int(m, fib(n)));
	r = chan_msg_set_root(m, v);
	if (r == 0) {
		say("actor", "fib(%lld) = %lld for %s: resolving its future",
		    (long long)n, (long long)fib(n), who);
		r = chan_conn_send(future, m, DEMO_TIMEOUT_MS);
	}
	chan_msg_free(m);
	chan_conn_free(future);
	return r;
}

int
actor_run(chan_conn *conn)
{
	int failures = 0, r;

	for (;;) {
		chan_msg *job = NULL;

		/* -1: the actor idles until the consumer closes the connection. */
		r = chan_conn_recv(conn, -1, &job);
		if (r == CHAN_E_CONNECTION_CLOSED)
			break;
		if (r < 0) {
			say("actor", "receive failed: %s", chan_strerror(r));
			failures++;
			if (chan_error_scope(r) == CHAN_SCOPE_FATAL)
				break;
			continue;
		}
		if ((r = resolve(job)) < 0) {
			say("actor", "job failed: %s", chan_errname(r));
			failures++;
		}
		chan_msg_free(job);
	}
	chan_conn_free(conn);
	return failures ? 1 : 0;
}
