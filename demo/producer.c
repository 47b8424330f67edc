/*
 * producer.c - a producer: asks the consumer questions, each with a fresh
 * reply_to endpoint, and checks the answers.  The endpoint is one end of a
 * fresh connection pair (two descriptors until the answer), or, with
 * channels, a channel of the producer's connection to the consumer (no
 * descriptor: SPEC.md §18).
 *
 * An answer arrives on the reply_to connection and is either
 *   {"value": 49}                  the result, or
 *   {"future": <conn>}             a connection on which the result will
 *                                  arrive later, from someone else.
 */
#include <string.h>

#include "demo.h"

struct question {
	const char *op;
	int64_t n;
};

static int64_t
expected(const struct question *q)
{
	if (strcmp(q->op, "square") == 0)
		return q->n * q->n;
	return demo_fib(q->n);
}

/* {"from": name, "op": op, "n": n, "reply_to": <conn or channel>}.  With a
 * connection: it moves into the message (*reply_to becomes NULL).  Without
 * (reply_to NULL): a channel of consumer opens, *ret_mine its endpoint. */
static chan_msg *
make_request(const char *name, const struct question *q, chan_conn **reply_to,
	     chan_conn *consumer, chan_conn **ret_mine)
{
	chan_msg *m = chan_msg_new(NULL);
	chan_value *root;

	if (!m)
		return NULL;
	root = chan_map(m);
	chan_map_put(root, "from", chan_string(m, name));
	chan_map_put(root, "op", chan_string(m, q->op));
	chan_map_put(root, "n", chan_int(m, q->n));
	chan_map_put(root, "reply_to", reply_to ? chan_handle_move_conn(m, reply_to)
						: chan_channel_open(m, consumer, ret_mine));
	if (chan_msg_set_root(m, root) < 0) /* reports any earlier failure */
		return chan_msg_free(m);
	return m;
}

/* Wait for {"value": v} on c. */
static int
receive_value(chan_conn *c, int64_t *ret)
{
	chan_msg *m = NULL;
	int r = chan_conn_recv(c, DEMO_TIMEOUT_MS, &m);

	if (r < 0)
		return r;
	r = chan_map_get_int(chan_msg_root(m), "value", ret);
	chan_msg_free(m);
	return r;
}

/*
 * Ask one question and wait for its answer.  *ret_future tells whether the
 * value came through a future.
 */
static int
ask(chan_conn *consumer, const char *name, const struct question *q, bool channels,
    int64_t *ret_value, int *ret_future)
{
	chan_conn *mine = NULL, *theirs = NULL, *future = NULL;
	chan_msg *req = NULL, *answer = NULL;
	int r;

	/* A fresh endpoint for the answer.  A connection pair: we keep one
	 * end, the other travels in the request.  A channel: the request
	 * carries its handle, and sending it opens the channel. */
	if (!channels && (r = chan_conn_pair(&mine, &theirs)) < 0)
		return r;
	req = make_request(name, q, channels ? NULL : &theirs, consumer, &mine);
	if (req && chan_msg_error(req))
		r = chan_msg_error(req);
	else
		r = req ? chan_conn_send(consumer, req, DEMO_TIMEOUT_MS) : CHAN_E_NO_MEMORY;
	/* Sent: the consumer has its own copy.  Drop ours now (freeing the
	 * message closes it), or we would never see the consumer close it. */
	chan_msg_free(req);
	chan_conn_free(theirs); /* NULL unless building the request failed */
	if (r < 0)
		goto out;

	if ((r = chan_conn_recv(mine, DEMO_TIMEOUT_MS, &answer)) < 0)
		goto out;
	if (channels) {
		chan_msg *more = NULL;

		/* The answer was the consumer's last frame on the channel. */
		if ((r = chan_conn_recv(mine, 0, &more)) != CHAN_E_CHANNEL_CLOSED) {
			say(name, "reply_to channel still open after the answer: %s",
			    r == 0 ? "a second frame" : chan_errname(r));
			chan_msg_free(more);
			r = CHAN_E_INVALID_ARGUMENT;
			goto out;
		}
	}
	r = chan_map_get_int(chan_msg_root(answer), "value", ret_value);
	if (r == 0) {
		*ret_future = 0;
	} else if (r == CHAN_E_NOT_FOUND) {
		/* A future: a connection that arrived inside a message that
		 * arrived on a connection we sent inside a message. */
		r = chan_map_move_conn(chan_msg_root(answer), "future", &future);
		if (r == 0)
			r = receive_value(future, ret_value);
		*ret_future = 1;
	}
out:
	chan_msg_free(answer);
	chan_conn_free(future);
	chan_conn_free(mine);
	return r;
}

/* {"from": name, "op": "bye", "answered": k} */
static int
say_goodbye(chan_conn *consumer, const char *name, int answered)
{
	chan_msg *m = chan_msg_new(NULL);
	chan_value *root = chan_map(m);
	int r;

	chan_map_put(root, "from", chan_string(m, name));
	chan_map_put(root, "op", chan_string(m, "bye"));
	chan_map_put(root, "answered", chan_int(m, answered));
	r = chan_msg_set_root(m, root);
	if (r == 0)
		r = chan_conn_send(consumer, m, DEMO_TIMEOUT_MS);
	chan_msg_free(m);
	return r;
}

int
producer_run(const char *path, const char *name, int seed, bool channels)
{
	struct question qs[QUESTIONS_PER_PRODUCER] = {
		{"square", 3 + seed},
		{"fib", 20 + 5 * seed},
		{"square", 11 * (seed + 1)},
	};
	chan_conn *consumer = NULL;
	int answered = 0, r;

	if ((r = chan_connect(path, &consumer)) < 0) {
		say(name, "cannot connect to %s: %s", path, chan_strerror(r));
		return -1;
	}
	/* The consumer implements revision 1.1: announce it, requiring
	 * "channels" so that the first request can carry one at once. */
	if (channels && (r = chan_conn_hello(consumer, CHAN_FEATURE_CHANNELS,
					     DEMO_TIMEOUT_MS)) < 0) {
		say(name, "HELLO: %s", chan_strerror(r));
		chan_conn_free(consumer);
		return -1;
	}
	for (int i = 0; i < QUESTIONS_PER_PRODUCER; i++) {
		int64_t value = 0, want = expected(&qs[i]);
		int future = 0;

		r = ask(consumer, name, &qs[i], channels, &value, &future);
		if (r < 0) {
			say(name, "%s(%lld) failed: %s", qs[i].op, (long long)qs[i].n,
			    chan_errname(r));
			continue;
		}
		say(name, "%s(%lld) = %lld%s%s", qs[i].op, (long long)qs[i].n,
		    (long long)value,
		    !future ? ""
		    : channels ? "  (resolved on a future received on my reply_to channel)"
			       : "  (resolved on a future received on my reply_to)",
		    value == want ? "" : "  WRONG");
		answered += value == want;
	}
	r = say_goodbye(consumer, name, answered);
	chan_conn_free(consumer);
	return r < 0 ? -1 : answered;
}
