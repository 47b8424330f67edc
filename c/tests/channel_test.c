/*
 * channel_test.c - revision 1.1 over real socketpairs (SPEC.md §16-§18):
 * HELLO and what it makes usable, control frames, epitaphs, channels
 * (open, use, END, close, unknown, limits, queues, not transferable),
 * with the fd count checked around every test by main.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "helpers.h"

#define LONG_MS 5000

/* {key: i} */
static chan_msg *
int_msg(const char *key, int64_t i)
{
	chan_msg *m = chan_msg_new(NULL);
	chan_value *root = chan_map(m);

	chan_map_put(root, key, chan_int(m, i));
	chan_msg_set_root(m, root);
	return m;
}

static int
send_int(chan_conn *c, const char *key, int64_t i)
{
	chan_msg *m = int_msg(key, i);
	int r = chan_conn_send(c, m, LONG_MS);

	chan_msg_free(m);
	return r;
}

/* Receive {key: i}; returns i, or INT64_MIN + error. */
static int64_t
recv_int(chan_conn *c, const char *key, int timeout)
{
	chan_msg *m = NULL;
	int64_t i = 0;
	int r = chan_conn_recv(c, timeout, &m);

	if (r < 0)
		return INT64_MIN - r; /* INT64_MIN + |r| */
	if (chan_map_get_int(chan_msg_root(m), key, &i) < 0)
		i = INT64_MIN + 1000;
	chan_msg_free(m);
	return i;
}
#define ERR(e) (INT64_MIN - (e))

/* A pair whose ends have exchanged HELLOs (a's first, b's in answer). */
static void
pair11(chan_conn **a, chan_conn **b)
{
	CU_ASSERT_FATAL(chan_conn_pair(a, b) == 0);
	CU_ASSERT_EQUAL(chan_conn_features(*a), 0);
	CU_ASSERT_EQUAL_FATAL(chan_conn_hello(*a, 0, LONG_MS), 0);
	CU_ASSERT_EQUAL(send_int(*a, "n", 1), 0);
	CU_ASSERT_EQUAL(recv_int(*b, "n", LONG_MS), 1); /* HELLO consumed, answered */
	CU_ASSERT_EQUAL(send_int(*b, "n", 2), 0);
	CU_ASSERT_EQUAL(recv_int(*a, "n", LONG_MS), 2);
	CU_ASSERT_EQUAL(chan_conn_features(*a), CHAN_FEATURE_EPITAPH | CHAN_FEATURE_CHANNELS);
	CU_ASSERT_EQUAL(chan_conn_features(*b), CHAN_FEATURE_EPITAPH | CHAN_FEATURE_CHANNELS);
}

/* Read whatever is in the socket (a raw peer's view). */
static ssize_t
drain(int fd, uint8_t *buf, size_t cap)
{
	size_t got = 0;

	for (;;) {
		ssize_t n = recv(fd, buf + got, cap - got, MSG_DONTWAIT);

		if (n <= 0)
			return n < 0 && errno != EAGAIN ? -1 : (ssize_t)got;
		got += (size_t)n;
	}
}

/* §16.1: without a HELLO every frame is a 1.0 frame, byte for byte, and a
 * 1.1 implementation never sends a HELLO of its own accord. */
static void
test_no_hello_unprompted(void)
{
	int sv[2];
	chan_conn *c;
	chan_msg *m = int_msg("k", 7), *got = NULL;
	uint8_t want[64], buf[256];
	size_t wlen;

	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	CU_ASSERT_FATAL(chan_conn_move_from_fd(sv[1], &c) == 0);
	CU_ASSERT_EQUAL(chan_encode(m, want, sizeof(want), &wlen), 0);
	CU_ASSERT_EQUAL(write(sv[0], want, wlen), (ssize_t)wlen);
	CU_ASSERT_EQUAL(chan_conn_recv(c, LONG_MS, &got), 0);
	chan_msg_free(got);
	CU_ASSERT_EQUAL(chan_conn_send(c, m, LONG_MS), 0);
	CU_ASSERT_EQUAL(drain(sv[0], buf, sizeof(buf)), (ssize_t)wlen);
	CU_ASSERT(memcmp(buf, want, wlen) == 0);
	CU_ASSERT_EQUAL(chan_conn_features(c), 0);
	chan_msg_free(m);
	chan_conn_free(c);
	close(sv[0]);
}

static void
test_hello_both_ways(void)
{
	chan_conn *a, *b;

	pair11(&a, &b);
	CU_ASSERT_EQUAL(chan_conn_hello(a, 0, 0), CHAN_E_INVALID_ARGUMENT); /* one per side */
	CU_ASSERT_EQUAL(chan_conn_hello(b, 0, 0), CHAN_E_INVALID_ARGUMENT); /* answered */
	chan_conn_free(a);
	chan_conn_free(b);
}

/* A HELLO frame as a raw peer writes it: {"op":"hello","features":{...}}. */
static size_t
raw_hello(uint8_t *buf, size_t cap, const char *feature, const char *required)
{
	chan_msg *m = chan_msg_new(NULL);
	chan_value *root = chan_map(m), *f = chan_map(m);
	size_t len = 0;

	chan_map_put(root, "op", chan_string(m, "hello"));
	if (feature)
		chan_map_put(f, feature, chan_map(m));
	chan_map_put(root, "features", f);
	if (required) {
		chan_value *l = chan_list(m);

		chan_list_append(l, chan_string(m, required));
		chan_map_put(root, "require", l);
	}
	chan_msg_set_root(m, root);
	CU_ASSERT_EQUAL(chan_encode(m, buf, cap, &len), 0);
	buf[5] = 0x01; /* CONTROL */
	chan_msg_free(m);
	return len;
}

/* §16.2 rule 6: a required feature this side lacks is fatal, with an
 * epitaph first (the HELLO announced "epitaph"). */
static void
test_require_unmet_is_fatal_with_epitaph(void)
{
	int sv[2];
	chan_conn *c;
	uint8_t buf[512];
	size_t len;
	ssize_t n;
	chan_msg *m = NULL, *f = NULL;

	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	CU_ASSERT_FATAL(chan_conn_move_from_fd(sv[1], &c) == 0);
	len = raw_hello(buf, sizeof(buf), "epitaph", "x_teleport");
	CU_ASSERT_EQUAL(write(sv[0], buf, len), (ssize_t)len);
	CU_ASSERT_EQUAL(chan_conn_recv(c, LONG_MS, &m), CHAN_E_UNSUPPORTED_FEATURE);
	CU_ASSERT_EQUAL(chan_conn_recv(c, 0, &m), CHAN_E_CONNECTION_CLOSED); /* then over */
	/* The raw peer got our HELLO answer, then the epitaph. */
	n = drain(sv[0], buf, sizeof(buf));
	CU_ASSERT_FATAL(n > 32);
	CU_ASSERT_EQUAL(chan_decode(buf, (size_t)n, NULL, 0,
				    CHAN_DECODE_DETACHED | CHAN_DECODE_REVISION_1_1, NULL, NULL,
				    &f, &len),
			0);
	CU_ASSERT_STRING_EQUAL(tv_string(chan_map_get(chan_msg_root(f), "op"), NULL), "hello");
	chan_msg_free(f);
	f = NULL;
	CU_ASSERT_EQUAL(chan_decode(buf + len, (size_t)n - len, NULL, 0,
				    CHAN_DECODE_DETACHED | CHAN_DECODE_REVISION_1_1, NULL, NULL,
				    &f, NULL),
			0);
	CU_ASSERT_STRING_EQUAL(tv_string(chan_map_get(chan_msg_root(f), "op"), NULL), "epitaph");
	CU_ASSERT_EQUAL(tv_int(chan_map_get(chan_msg_root(f), "code")), -CHAN_E_UNSUPPORTED_FEATURE);
	chan_msg_free(f);
	chan_conn_free(c);
	close(sv[0]);
}

/* §16.2 rule 2: before agreement, only a well-formed HELLO passes; any other
 * frame with flags gets the 1.0 answer, descriptors closed. */
static void
test_before_agreement_flags_are_reserved(void)
{
	int sv[2], p[2];
	chan_conn *c;
	chan_msg *m = int_msg("op", 1), *got = NULL;
	uint8_t buf[256];
	size_t len;

	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	CU_ASSERT_FATAL(pipe2(p, O_CLOEXEC) == 0);
	CU_ASSERT_FATAL(chan_conn_move_from_fd(sv[1], &c) == 0);
	CU_ASSERT_EQUAL(chan_encode(m, buf, sizeof(buf), &len), 0);
	buf[5] = 0x01; /* CONTROL, but not a HELLO */
	CU_ASSERT(chan_sock_send(sv[0], buf, len, NULL, 0, false) == (ssize_t)len);
	CU_ASSERT_EQUAL(chan_conn_recv(c, LONG_MS, &got), CHAN_E_RESERVED_FIELD_NONZERO);
	/* A HELLO with a descriptor is not well formed either. */
	len = raw_hello(buf, sizeof(buf), "channels", NULL);
	buf[6] = 1;
	CU_ASSERT(chan_sock_send(sv[0], buf, len, p, 1, false) == (ssize_t)len);
	CU_ASSERT_EQUAL(chan_conn_recv(c, LONG_MS, &got), CHAN_E_RESERVED_FIELD_NONZERO);
	/* END before agreement */
	chan_encode(m, buf, sizeof(buf), &len);
	buf[5] = 0x02;
	buf[8] = 1;
	CU_ASSERT(chan_sock_send(sv[0], buf, len, NULL, 0, false) == (ssize_t)len);
	CU_ASSERT_EQUAL(chan_conn_recv(c, LONG_MS, &got), CHAN_E_RESERVED_FIELD_NONZERO);
	CU_ASSERT_EQUAL(chan_conn_features(c), 0);
	CU_ASSERT_EQUAL(send_int(c, "still", 1), 0); /* nothing was answered */
	{ /* exactly one 1.0 frame came back: no HELLO answer before it */
		ssize_t n = drain(sv[0], buf, sizeof(buf));

		CU_ASSERT(n > 16 && buf[5] == 0 && buf[8] == 0 &&
			  (size_t)n == 16 + (size_t)(buf[12] | buf[13] << 8));
	}
	chan_msg_free(m);
	chan_conn_free(c);
	close(sv[0]);
	close(p[0]);
	close(p[1]);
}

/* §17.3: the application's epitaph, then CONNECTION_CLOSED both ways. */
static void
test_epitaph_names_the_error(void)
{
	chan_conn *a, *b;
	int code = 0;

	pair11(&a, &b);
	CU_ASSERT_PTR_NULL(chan_conn_epitaph(b, &code));
	CU_ASSERT_EQUAL(chan_conn_send_epitaph(a, CHAN_E_PAYLOAD_TOO_LARGE, "your frame: 2 GiB", LONG_MS), 0);
	CU_ASSERT_EQUAL(send_int(a, "n", 3), CHAN_E_CONNECTION_CLOSED);
	CU_ASSERT_EQUAL(recv_int(b, "n", LONG_MS), ERR(CHAN_E_PAYLOAD_TOO_LARGE));
	CU_ASSERT_STRING_EQUAL(chan_conn_epitaph(b, &code), "your frame: 2 GiB");
	CU_ASSERT_EQUAL(code, CHAN_E_PAYLOAD_TOO_LARGE);
	CU_ASSERT_EQUAL(recv_int(b, "n", LONG_MS), ERR(CHAN_E_CONNECTION_CLOSED));
	CU_ASSERT_EQUAL(send_int(b, "n", 4), CHAN_E_CONNECTION_CLOSED);
	chan_conn_free(a);
	chan_conn_free(b);
}

/* §17.3 rule 2: a fatal error the peer caused is sent back as an epitaph. */
static void
test_fatal_error_sends_epitaph(void)
{
	chan_conn *a, *b;
	int code = 0;

	pair11(&a, &b);
	CU_ASSERT_EQUAL(write(chan_conn_borrow_fd(a), "JUNKJUNKJUNKJUNK", 16), 16);
	CU_ASSERT_EQUAL(recv_int(b, "n", LONG_MS), ERR(CHAN_E_BAD_MAGIC));
	CU_ASSERT_EQUAL(recv_int(a, "n", LONG_MS), ERR(CHAN_E_BAD_MAGIC));
	CU_ASSERT_PTR_NOT_NULL(chan_conn_epitaph(a, &code));
	CU_ASSERT_EQUAL(code, CHAN_E_BAD_MAGIC);
	chan_conn_free(a);
	chan_conn_free(b);
}

/* Without "epitaph" announced there is no epitaph (§17.3 rule 1). */
static void
test_epitaph_needs_the_feature(void)
{
	chan_conn *a, *b;

	CU_ASSERT_FATAL(chan_conn_pair(&a, &b) == 0);
	CU_ASSERT_EQUAL(chan_conn_send_epitaph(a, CHAN_E_SYSTEM, NULL, 0), CHAN_E_UNSUPPORTED_FEATURE);
	CU_ASSERT_EQUAL(send_int(a, "n", 5), 0);
	CU_ASSERT_EQUAL(recv_int(b, "n", LONG_MS), 5);
	chan_conn_free(a);
	chan_conn_free(b);
}

/* Client: a request carrying a channel as reply_to.  Returns the endpoint. */
static chan_conn *
request(chan_conn *c, int64_t n)
{
	chan_msg *m = chan_msg_new(NULL);
	chan_value *root = chan_map(m);
	chan_conn *ch = NULL;

	chan_map_put(root, "n", chan_int(m, n));
	chan_map_put(root, "reply_to", chan_channel_open(m, c, &ch));
	chan_msg_set_root(m, root);
	CU_ASSERT_EQUAL(chan_msg_error(m), 0);
	CU_ASSERT_EQUAL(chan_conn_send(c, m, LONG_MS), 0);
	chan_msg_free(m);
	return ch;
}

/* Server: take one request and its reply endpoint. */
static chan_conn *
take_request(chan_conn *s, int64_t *ret_n)
{
	chan_msg *m = NULL;
	chan_conn *ch = NULL;

	CU_ASSERT_EQUAL_FATAL(chan_conn_recv(s, LONG_MS, &m), 0);
	CU_ASSERT_EQUAL(chan_map_get_int(chan_msg_root(m), "n", ret_n), 0);
	CU_ASSERT_EQUAL(chan_map_move_conn(chan_msg_root(m), "reply_to", &ch), 0);
	chan_msg_free(m);
	return ch;
}

/* §18.3-§18.5: open, answer with END, no close frame, no descriptor. */
static void
test_channel_reply_round_trip(void)
{
	chan_conn *a, *b, *ca, *cb;
	chan_msg *rep = int_msg("r", 0), *m = NULL;
	int64_t n = 0;
	int fds = chan_test_count_fds();

	pair11(&a, &b);
	ca = request(a, 41);
	CU_ASSERT_EQUAL(chan_conn_channel_id(ca), 1);
	cb = take_request(b, &n);
	CU_ASSERT_EQUAL(n, 41);
	CU_ASSERT_EQUAL(chan_conn_channel_id(cb), 1u | 0x80000000u);
	CU_ASSERT_EQUAL(chan_conn_borrow_fd(cb), -1);
	chan_msg_free(rep);
	rep = int_msg("r", 42);
	CU_ASSERT_EQUAL(chan_conn_send_last(cb, rep, LONG_MS), 0);
	CU_ASSERT_EQUAL(chan_conn_send(cb, rep, LONG_MS), CHAN_E_CHANNEL_CLOSED);
	CU_ASSERT_EQUAL(recv_int(ca, "r", LONG_MS), 42);
	CU_ASSERT_EQUAL(recv_int(ca, "r", 0), ERR(CHAN_E_CHANNEL_CLOSED));
	CU_ASSERT_EQUAL(chan_conn_send(ca, rep, 0), CHAN_E_CHANNEL_CLOSED);
	chan_conn_free(ca);
	chan_conn_free(cb);
	/* Neither side sent a close: nothing is waiting on either socket. */
	CU_ASSERT_EQUAL(chan_conn_recv(a, 0, &m), CHAN_E_WOULD_BLOCK);
	CU_ASSERT_EQUAL(chan_conn_recv(b, 0, &m), CHAN_E_WOULD_BLOCK);
	CU_ASSERT_EQUAL(chan_test_count_fds(), fds + 2); /* the pair only */
	chan_msg_free(rep);
	chan_conn_free(a);
	chan_conn_free(b);
}

/* §18.5 rule 3: freeing an endpoint that saw no END closes the channel;
 * the peer's endpoint reports CHANNEL_CLOSED on receive and send. */
static void
test_channel_close_by_free(void)
{
	chan_conn *a, *b, *ca, *cb;
	int64_t n;

	pair11(&a, &b);
	ca = request(a, 1);
	cb = take_request(b, &n);
	CU_ASSERT_EQUAL(send_int(cb, "x", 1), 0);
	chan_conn_free(ca); /* unread frame and all */
	CU_ASSERT_EQUAL(recv_int(cb, "x", LONG_MS), ERR(CHAN_E_CHANNEL_CLOSED));
	CU_ASSERT_EQUAL(send_int(cb, "x", 2), CHAN_E_CHANNEL_CLOSED);
	/* The main stream is untouched. */
	CU_ASSERT_EQUAL(send_int(a, "m", 3), 0);
	CU_ASSERT_EQUAL(recv_int(b, "m", LONG_MS), 3);
	chan_conn_free(cb);
	chan_conn_free(a);
	chan_conn_free(b);
}

/* Bidirectional use, and frames of several channels interleaved and queued. */
static void
test_channels_interleave(void)
{
	enum { N = 50 };
	chan_conn *a, *b, *ca[N], *cb[N];
	int64_t n;

	pair11(&a, &b);
	for (int i = 0; i < N; i++)
		ca[i] = request(a, i);
	for (int i = 0; i < N; i++) {
		cb[i] = take_request(b, &n);
		CU_ASSERT_EQUAL(n, i);
	}
	for (int i = N - 1; i >= 0; i--) /* answered in reverse */
		CU_ASSERT_EQUAL(send_int(cb[i], "r", 100 + i), 0);
	for (int i = 0; i < N; i++) /* read in order: the others queue */
		CU_ASSERT_EQUAL(recv_int(ca[i], "r", LONG_MS), 100 + i);
	for (int i = 0; i < N; i++) {
		CU_ASSERT_EQUAL(send_int(ca[i], "q", i), 0);
		CU_ASSERT_EQUAL(recv_int(cb[i], "q", LONG_MS), i);
		chan_conn_free(ca[i]);
		chan_conn_free(cb[i]);
	}
	chan_conn_free(a);
	chan_conn_free(b);
}

/* 20,000 requests outstanding on one connection: the descriptor count does
 * not move (the socketpair pattern would need 40,000). */
static void
test_many_outstanding_flat_fds(void)
{
	enum { N = 20000 };
	chan_conn *a, *b, **ca = calloc(N, sizeof(*ca)), **cb = calloc(N, sizeof(*cb));
	int64_t n;
	int fds;

	CU_ASSERT_FATAL(ca && cb);
	pair11(&a, &b);
	fds = chan_test_count_fds();
	for (int i = 0; i < N; i += 100) { /* in batches: one thread plays both */
		for (int k = i; k < i + 100; k++)
			ca[k] = request(a, k);
		for (int k = i; k < i + 100; k++) {
			cb[k] = take_request(b, &n);
			CU_ASSERT_EQUAL(n, k);
		}
	}
	CU_ASSERT_EQUAL(chan_test_count_fds(), fds);
	for (int i = 0; i < N; i += 100) {
		for (int k = i; k < i + 100; k++) {
			chan_msg *m = int_msg("r", k);

			CU_ASSERT_EQUAL(chan_conn_send_last(cb[k], m, LONG_MS), 0);
			chan_msg_free(m);
			chan_conn_free(cb[k]);
		}
		/* the last of the batch is read; the others wait in queues */
		CU_ASSERT_EQUAL(recv_int(ca[i + 99], "r", LONG_MS), i + 99);
	}
	CU_ASSERT_EQUAL(chan_test_count_fds(), fds);
	for (int i = N - 1; i >= 0; i--) {
		if (i % 1000 == 0)
			CU_ASSERT_EQUAL(recv_int(ca[i], "r", 0), i);
		chan_conn_free(ca[i]); /* unread replies are freed with it */
	}
	CU_ASSERT_EQUAL(chan_test_count_fds(), fds);
	free(ca);
	free(cb);
	chan_conn_free(a);
	chan_conn_free(b);
}

/* §18.3 rule 1: ids go out in send order, whatever the order of opening. */
static void
test_ids_follow_send_order(void)
{
	chan_conn *a, *b, *c1, *c2, *s1, *s2;
	chan_msg *m1 = chan_msg_new(NULL), *m2 = chan_msg_new(NULL);
	int64_t n;

	pair11(&a, &b);
	chan_msg_set_root(m1, chan_channel_open(m1, a, &c1));
	chan_msg_set_root(m2, chan_channel_open(m2, a, &c2));
	CU_ASSERT_EQUAL(chan_conn_channel_id(c1), 0); /* not sent yet */
	{ /* sending on an unsent channel is refused */
		chan_msg *x = int_msg("x", 1);

		CU_ASSERT_EQUAL(chan_conn_send(c1, x, 0), CHAN_E_INVALID_ARGUMENT);
		CU_ASSERT_EQUAL(recv_int(c1, "x", 0), ERR(CHAN_E_INVALID_ARGUMENT));
		chan_msg_free(x);
	}
	CU_ASSERT_EQUAL(chan_conn_send(a, m2, LONG_MS), 0);
	CU_ASSERT_EQUAL(chan_conn_send(a, m1, LONG_MS), 0);
	CU_ASSERT_EQUAL(chan_conn_channel_id(c2), 1);
	CU_ASSERT_EQUAL(chan_conn_channel_id(c1), 2);
	/* Sent once only (§18.7). */
	CU_ASSERT_EQUAL(chan_conn_send(a, m1, LONG_MS), CHAN_E_CHANNEL_NOT_TRANSFERABLE);
	for (int i = 0; i < 2; i++) {
		chan_msg *m = NULL;
		chan_conn *e = NULL;

		CU_ASSERT_EQUAL_FATAL(chan_conn_recv(b, LONG_MS, &m), 0);
		CU_ASSERT_EQUAL(chan_value_channel_id(chan_msg_root(m)), (uint32_t)i + 1);
		CU_ASSERT_EQUAL(chan_conn_move_from_value(chan_msg_root(m), &e), 0);
		CU_ASSERT_EQUAL(chan_conn_move_from_value(chan_msg_root(m), &e), CHAN_E_INVALID_ARGUMENT);
		if (i == 0)
			s2 = e;
		else
			s1 = e;
		chan_msg_free(m);
	}
	CU_ASSERT_EQUAL(send_int(s1, "k", 1), 0);
	CU_ASSERT_EQUAL(send_int(s2, "k", 2), 0);
	CU_ASSERT_EQUAL(recv_int(c1, "k", LONG_MS), 1);
	CU_ASSERT_EQUAL(recv_int(c2, "k", LONG_MS), 2);
	(void)n;
	chan_msg_free(m1);
	chan_msg_free(m2);
	chan_conn_free(c1);
	chan_conn_free(c2);
	chan_conn_free(s1);
	chan_conn_free(s2);
	chan_conn_free(a);
	chan_conn_free(b);
}

/* §18.7: a channel stays on its connection. */
static void
test_channel_not_transferable(void)
{
	chan_conn *a, *b, *x, *y, *ch;
	chan_msg *m = chan_msg_new(NULL), *m2 = chan_msg_new(NULL);
	chan_writer *w = chan_writer_new(NULL);

	pair11(&a, &b);
	pair11(&x, &y);
	chan_msg_set_root(m, chan_channel_open(m, a, &ch));
	CU_ASSERT_EQUAL(chan_conn_send(x, m, LONG_MS), CHAN_E_CHANNEL_NOT_TRANSFERABLE);
	CU_ASSERT_PTR_NULL(chan_handle_move_conn(m2, &ch));
	CU_ASSERT_EQUAL(chan_msg_error(m2), CHAN_E_CHANNEL_NOT_TRANSFERABLE);
	CU_ASSERT_PTR_NOT_NULL(ch); /* untouched */
	CU_ASSERT_EQUAL(chan_writer_handle_borrow_conn(w, ch), CHAN_E_CHANNEL_NOT_TRANSFERABLE);
	{ /* a raw id names no channel of ours */
		chan_msg *r = chan_msg_new(NULL);

		chan_msg_set_root(r, chan_channel_ref(r, 9));
		CU_ASSERT_EQUAL(chan_conn_send(a, r, LONG_MS), CHAN_E_CHANNEL_NOT_TRANSFERABLE);
		chan_msg_free(r);
	}
	/* the message still opens it on its own connection */
	CU_ASSERT_EQUAL(chan_conn_send(a, m, LONG_MS), 0);
	chan_writer_free(w);
	chan_msg_free(m);
	chan_msg_free(m2);
	chan_conn_free(ch);
	chan_conn_free(a);
	chan_conn_free(b);
	chan_conn_free(x);
	chan_conn_free(y);
}

/* Channels need the feature (§16.1 rule 2). */
static void
test_channel_needs_the_feature(void)
{
	chan_conn *a, *b, *ch = NULL;
	chan_msg *m = chan_msg_new(NULL);

	CU_ASSERT_FATAL(chan_conn_pair(&a, &b) == 0);
	CU_ASSERT_PTR_NULL(chan_channel_open(m, a, &ch));
	CU_ASSERT_EQUAL(chan_msg_error(m), CHAN_E_UNSUPPORTED_FEATURE);
	CU_ASSERT_PTR_NULL(ch);
	chan_msg_free(m);
	/* require: usable at once, before the answer */
	CU_ASSERT_EQUAL(chan_conn_hello(a, CHAN_FEATURE_CHANNELS, LONG_MS), 0);
	CU_ASSERT_EQUAL(chan_conn_features(a), CHAN_FEATURE_CHANNELS);
	ch = request(a, 5);
	{
		int64_t n;
		chan_conn *s = take_request(b, &n);

		CU_ASSERT_EQUAL(n, 5);
		CU_ASSERT_EQUAL(send_int(s, "r", 6), 0);
		CU_ASSERT_EQUAL(recv_int(ch, "r", LONG_MS), 6);
		chan_conn_free(s);
	}
	chan_conn_free(ch);
	chan_conn_free(a);
	chan_conn_free(b);
}

/* §18.6 rule 3: frames for an endpoint nobody reads are bounded; the
 * largest queue is reset and its reader told. */
static void
test_queue_limit_resets_largest(void)
{
	chan_conn *a, *b, *ca, *cb;
	int64_t n;

	pair11(&a, &b);
	CU_ASSERT_EQUAL(chan_conn_set_channel_limits(a, 0, 4096), 0);
	ca = request(a, 1);
	cb = take_request(b, &n);
	for (int i = 0; i < 100; i++) /* ~8 KiB for ca, which nobody reads */
		CU_ASSERT_EQUAL(send_int(cb, "fill", i), 0);
	CU_ASSERT_EQUAL(send_int(b, "main", 7), 0);
	CU_ASSERT_EQUAL(recv_int(a, "main", LONG_MS), 7); /* reading main queued ca's */
	for (int i = 0; i < 100; i++) {
		int64_t got = recv_int(ca, "fill", LONG_MS);

		if (got < 0) {
			CU_ASSERT_EQUAL(got, ERR(CHAN_E_CHANNEL_LIMIT_EXCEEDED));
			break;
		}
	}
	CU_ASSERT_EQUAL(recv_int(ca, "fill", LONG_MS), ERR(CHAN_E_CHANNEL_CLOSED));
	/* The peer learns through the close: its sends fail. */
	CU_ASSERT_EQUAL(send_int(a, "main", 8), 0);
	CU_ASSERT_EQUAL(recv_int(b, "main", LONG_MS), 8);
	CU_ASSERT_EQUAL(send_int(cb, "fill", 0), CHAN_E_CHANNEL_CLOSED);
	CU_ASSERT_EQUAL(recv_int(cb, "fill", LONG_MS), ERR(CHAN_E_CHANNEL_LIMIT_EXCEEDED));
	chan_conn_free(ca);
	chan_conn_free(cb);
	chan_conn_free(a);
	chan_conn_free(b);
}

/* The main stream cannot be reset: its overflow is fatal (§18.6 rule 3). */
static void
test_main_overflow_is_fatal(void)
{
	chan_conn *a, *b, *ca, *cb;
	int64_t n;
	int code = 0;

	pair11(&a, &b);
	CU_ASSERT_EQUAL(chan_conn_set_channel_limits(a, 0, 4096), 0);
	ca = request(a, 1);
	cb = take_request(b, &n);
	for (int i = 0; i < 100; i++)
		CU_ASSERT_EQUAL(send_int(b, "flood", i), 0);
	CU_ASSERT_EQUAL(recv_int(ca, "r", LONG_MS), ERR(CHAN_E_CHANNEL_LIMIT_EXCEEDED));
	/* reported once; then the connection is plainly over (no event loop
	 * reads a frame-scope code for ever) */
	CU_ASSERT_EQUAL(recv_int(a, "flood", 0), ERR(CHAN_E_CONNECTION_CLOSED));
	/* and the peer is told */
	for (;;) {
		int64_t got = recv_int(b, "x", LONG_MS);

		if (got < 0) {
			CU_ASSERT_EQUAL(got, ERR(CHAN_E_CHANNEL_LIMIT_EXCEEDED));
			break;
		}
	}
	CU_ASSERT_PTR_NOT_NULL(chan_conn_epitaph(b, &code));
	chan_conn_free(ca);
	chan_conn_free(cb);
	chan_conn_free(a);
	chan_conn_free(b);
}

/* §18.6 rule 1 and §18.3 rule 2: opening beyond max_channels rejects the
 * frame, and the opener's endpoint learns it. */
static void
test_max_channels(void)
{
	chan_conn *a, *b, *c1, *c2;
	chan_msg *m = chan_msg_new(NULL), *got = NULL;
	chan_value *l = chan_list(m);

	pair11(&a, &b);
	CU_ASSERT_EQUAL(chan_conn_set_channel_limits(b, 1, 0), 0);
	chan_list_append(l, chan_channel_open(m, a, &c1));
	chan_list_append(l, chan_channel_open(m, a, &c2));
	chan_msg_set_root(m, l);
	CU_ASSERT_EQUAL(chan_conn_send(a, m, LONG_MS), 0);
	CU_ASSERT_EQUAL(chan_conn_recv(b, LONG_MS, &got), CHAN_E_CHANNEL_LIMIT_EXCEEDED);
	CU_ASSERT_EQUAL(recv_int(c1, "r", LONG_MS), ERR(CHAN_E_CHANNEL_LIMIT_EXCEEDED));
	CU_ASSERT_EQUAL(recv_int(c2, "r", LONG_MS), ERR(CHAN_E_CHANNEL_LIMIT_EXCEEDED));
	CU_ASSERT_EQUAL(recv_int(c2, "r", LONG_MS), ERR(CHAN_E_CHANNEL_CLOSED));
	/* the connection goes on */
	CU_ASSERT_EQUAL(send_int(a, "m", 1), 0);
	CU_ASSERT_EQUAL(recv_int(b, "m", LONG_MS), 1);
	chan_msg_free(m);
	chan_conn_free(c1);
	chan_conn_free(c2);
	chan_conn_free(a);
	chan_conn_free(b);
}

/* §18.4 rule 2: a frame on a channel never opened is UNKNOWN_CHANNEL (frame
 * scope, its descriptors closed); one on a channel closed here is dropped. */
static void
test_unknown_channel(void)
{
	chan_conn *a, *b;
	chan_msg *m = int_msg("k", 1), *got = NULL;
	uint8_t buf[64];
	size_t len;
	int p[2];
	int fd;

	pair11(&a, &b);
	CU_ASSERT_FATAL(pipe2(p, O_CLOEXEC) == 0);
	fd = chan_conn_borrow_fd(a);
	chan_encode(m, buf, sizeof(buf), &len);
	buf[8] = 5; /* channel 5, opened by a: never */
	CU_ASSERT(chan_sock_send(fd, buf, len, NULL, 0, false) == (ssize_t)len);
	CU_ASSERT_EQUAL(chan_conn_recv(b, LONG_MS, &got), CHAN_E_UNKNOWN_CHANNEL);
	buf[11] = 0x80; /* channel 5 opened by b: never allocated */
	CU_ASSERT(chan_sock_send(fd, buf, len, NULL, 0, false) == (ssize_t)len);
	CU_ASSERT_EQUAL(chan_conn_recv(b, LONG_MS, &got), CHAN_E_UNKNOWN_CHANNEL);
	buf[8] = 0; /* 0x80000000 */
	CU_ASSERT(chan_sock_send(fd, buf, len, NULL, 0, false) == (ssize_t)len);
	CU_ASSERT_EQUAL(chan_conn_recv(b, LONG_MS, &got), CHAN_E_UNKNOWN_CHANNEL);
	CU_ASSERT_EQUAL(send_int(a, "k", 2), 0);
	CU_ASSERT_EQUAL(recv_int(b, "k", LONG_MS), 2);
	chan_msg_free(m);
	close(p[0]);
	close(p[1]);
	chan_conn_free(a);
	chan_conn_free(b);
}

struct waiter {
	chan_conn *ch;
	int64_t got;
};

static void *
wait_on(void *arg)
{
	struct waiter *w = arg;

	w->got = recv_int(w->ch, "r", LONG_MS);
	return NULL;
}

/* One thread waits on a channel while another reads the main stream: each
 * gets its own frames, whoever reads the socket. */
static void
test_threads_share_the_socket(void)
{
	chan_conn *a, *b, *cb;
	struct waiter w = {0};
	pthread_t t;
	int64_t n;

	pair11(&a, &b);
	w.ch = request(a, 1);
	cb = take_request(b, &n);
	CU_ASSERT_FATAL(pthread_create(&t, NULL, wait_on, &w) == 0);
	CU_ASSERT_EQUAL(send_int(b, "m", 10), 0);
	CU_ASSERT_EQUAL(recv_int(a, "m", LONG_MS), 10);
	CU_ASSERT_EQUAL(send_int(cb, "r", 11), 0);
	pthread_join(t, NULL);
	CU_ASSERT_EQUAL(w.got, 11);
	chan_conn_free(w.ch);
	chan_conn_free(cb);
	chan_conn_free(a);
	chan_conn_free(b);
}

/* Endpoints outlive their connection's application handle: they report
 * CONNECTION_CLOSED, and the memory goes with the last one. */
static void
test_endpoint_outlives_connection(void)
{
	chan_conn *a, *b, *ca, *cb;
	int64_t n;

	pair11(&a, &b);
	ca = request(a, 1);
	cb = take_request(b, &n);
	chan_conn_free(a);
	CU_ASSERT_EQUAL(recv_int(ca, "r", 0), ERR(CHAN_E_CONNECTION_CLOSED));
	CU_ASSERT_EQUAL(send_int(ca, "r", 0), CHAN_E_CONNECTION_CLOSED);
	CU_ASSERT_EQUAL(recv_int(cb, "r", LONG_MS), ERR(CHAN_E_CONNECTION_CLOSED));
	chan_conn_free(ca);
	chan_conn_free(cb);
	chan_conn_free(b);
}

/* Text of the channel handle and the buffer decoder's revision flag. */
static void
test_channel_value_codec(void)
{
	chan_msg *m = chan_msg_new(NULL), *d = NULL;
	uint8_t buf[64];
	size_t len;

	chan_msg_set_root(m, chan_channel_ref(m, 300));
	CU_ASSERT_EQUAL(chan_encode(m, buf, sizeof(buf), &len), 0);
	CU_ASSERT_EQUAL(len, 16 + 5);
	CU_ASSERT(chan_test_same_bytes(buf + 16, 5, "\x52\x03\x08\xac\x02", 5));
	CU_ASSERT_EQUAL(chan_decode(buf, len, NULL, 0, 0, NULL, NULL, &d, NULL), CHAN_E_UNKNOWN_FIELD);
	CU_ASSERT_EQUAL(chan_decode(buf, len, NULL, 0, CHAN_DECODE_REVISION_1_1, NULL, NULL, &d, NULL), 0);
	CU_ASSERT_EQUAL(chan_value_type(chan_msg_root(d)), CHAN_CHANNEL);
	CU_ASSERT_EQUAL(chan_value_channel_id(chan_msg_root(d)), 300);
	CU_ASSERT_STRING_EQUAL(chan_type_name(CHAN_CHANNEL), "channel");
	chan_msg_free(d);
	buf[17] = 0x02; /* Channel{id: 0}: the default written out */
	buf[19] = 0x00;
	buf[12] = 4;
	CU_ASSERT_EQUAL(chan_decode(buf, 20, NULL, 0, CHAN_DECODE_REVISION_1_1, NULL, NULL, &d, NULL), CHAN_E_NONCANONICAL);
	CU_ASSERT_PTR_NULL(chan_channel_ref(m, 0));
	chan_msg_free(m);
	/* A control frame in a buffer read as 1.1 meets §17.2 too. */
	m = chan_msg_new(NULL);
	chan_msg_set_root(m, chan_int(m, 5)); /* not a control message */
	CU_ASSERT_EQUAL(chan_encode(m, buf, sizeof(buf), &len), 0);
	buf[5] = 0x01;
	CU_ASSERT_EQUAL(chan_decode(buf, len, NULL, 0, CHAN_DECODE_REVISION_1_1, NULL, NULL, &d, NULL), CHAN_E_UNSUPPORTED_FEATURE);
	CU_ASSERT_EQUAL(chan_decode(buf, len, NULL, 0, 0, NULL, NULL, &d, NULL), CHAN_E_RESERVED_FIELD_NONZERO);
	chan_msg_free(m);
	m = chan_msg_new(NULL);
	{
		chan_value *r = chan_map(m);

		chan_map_put(r, "op", chan_string(m, "hello"));
		chan_map_put(r, "features", chan_map(m));
		chan_msg_set_root(m, r);
	}
	CU_ASSERT_EQUAL(chan_encode(m, buf, sizeof(buf), &len), 0);
	buf[5] = 0x01;
	CU_ASSERT_EQUAL(chan_decode(buf, len, NULL, 0, CHAN_DECODE_REVISION_1_1, NULL, NULL, &d, NULL), 0);
	chan_msg_free(d);
	buf[5] = 0x03; /* CONTROL and END on a HELLO */
	buf[8] = 1;
	CU_ASSERT_EQUAL(chan_decode(buf, len, NULL, 0, CHAN_DECODE_REVISION_1_1, NULL, NULL, &d, NULL), CHAN_E_RESERVED_FIELD_NONZERO);
	buf[5] = 0x01; /* a HELLO on a channel */
	CU_ASSERT_EQUAL(chan_decode(buf, len, NULL, 0, CHAN_DECODE_REVISION_1_1, NULL, NULL, &d, NULL), CHAN_E_UNSUPPORTED_FEATURE);
	chan_msg_free(m);
}

/* A frame on a channel after its sender's END is discarded (§18.5 rule 1;
 * found by stream_fuzz), and an epitaph's local-scope code does not make a
 * blocking receive say WOULD_BLOCK (§17.3 rule 3). */
static void
test_after_end_and_local_epitaph(void)
{
	chan_conn *a, *b, *ca, *cb;
	chan_msg *m = int_msg("r", 1);
	uint8_t buf[64];
	size_t len;
	int64_t n;
	int code = 0;

	pair11(&a, &b);
	ca = request(a, 1);
	cb = take_request(b, &n);
	CU_ASSERT_EQUAL(chan_conn_send_last(cb, m, LONG_MS), 0);
	/* a peer that breaks the rule: one more frame on channel 1 */
	chan_encode(m, buf, sizeof(buf), &len);
	buf[8] = 1;
	buf[11] = 0x80;
	CU_ASSERT(chan_sock_send(chan_conn_borrow_fd(b), buf, len, NULL, 0, false) == (ssize_t)len);
	CU_ASSERT_EQUAL(send_int(b, "m", 2), 0);
	CU_ASSERT_EQUAL(recv_int(ca, "r", LONG_MS), 1);
	CU_ASSERT_EQUAL(recv_int(a, "m", LONG_MS), 2); /* reads past the stray frame */
	CU_ASSERT_EQUAL(recv_int(ca, "r", 0), ERR(CHAN_E_CHANNEL_CLOSED));
	CU_ASSERT_EQUAL(chan_conn_send_epitaph(b, CHAN_E_WOULD_BLOCK, "odd", LONG_MS), 0);
	CU_ASSERT_EQUAL(recv_int(a, "m", -1), ERR(CHAN_E_CONNECTION_CLOSED));
	CU_ASSERT_PTR_NOT_NULL(chan_conn_epitaph(a, &code));
	CU_ASSERT_EQUAL(code, CHAN_E_WOULD_BLOCK);
	chan_msg_free(m);
	chan_conn_free(ca);
	chan_conn_free(cb);
	chan_conn_free(a);
	chan_conn_free(b);
}

CU_TestInfo channel_tests[] = {
	{"after_end_and_local_epitaph", test_after_end_and_local_epitaph},
	{"no_hello_unprompted", test_no_hello_unprompted},
	{"hello_both_ways", test_hello_both_ways},
	{"require_unmet_is_fatal_with_epitaph", test_require_unmet_is_fatal_with_epitaph},
	{"before_agreement_flags_are_reserved", test_before_agreement_flags_are_reserved},
	{"epitaph_names_the_error", test_epitaph_names_the_error},
	{"fatal_error_sends_epitaph", test_fatal_error_sends_epitaph},
	{"epitaph_needs_the_feature", test_epitaph_needs_the_feature},
	{"channel_reply_round_trip", test_channel_reply_round_trip},
	{"channel_close_by_free", test_channel_close_by_free},
	{"channels_interleave", test_channels_interleave},
	{"many_outstanding_flat_fds", test_many_outstanding_flat_fds},
	{"ids_follow_send_order", test_ids_follow_send_order},
	{"channel_not_transferable", test_channel_not_transferable},
	{"channel_needs_the_feature", test_channel_needs_the_feature},
	{"queue_limit_resets_largest", test_queue_limit_resets_largest},
	{"main_overflow_is_fatal", test_main_overflow_is_fatal},
	{"max_channels", test_max_channels},
	{"unknown_channel", test_unknown_channel},
	{"threads_share_the_socket", test_threads_share_the_socket},
	{"endpoint_outlives_connection", test_endpoint_outlives_connection},
	{"channel_value_codec", test_channel_value_codec},
	CU_TEST_INFO_NULL,
};
