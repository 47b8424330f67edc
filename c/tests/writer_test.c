/*
 * writer_test.c - chan_writer against the tree encoder: the same value gives
 * the same bytes (random values, with the shapes that move bytes: lengths
 * over 127, many keys, deep nesting, borrowed bytes, handles), the same
 * refusals by the same names, and frames that go out on a connection.
 */
#include <fcntl.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "helpers.h"

#define LONG_MS 5000

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint64_t
next(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545f4914f6cdd1dULL;
}

static char text[70000];
static int pipe_fds[2];
static long budget; /* bytes and values left in this round's value */

/* One random value, built twice: into the tree of m and into w. */
static chan_value *
both(chan_msg *m, chan_writer *w, int depth, int *handles)
{
	unsigned pick = (unsigned)(next() % (depth >= 32 || budget <= 0 ? 7 : 9));
	chan_value *v;

	budget -= 16;
	switch (pick) {
	case 0:
		chan_writer_null(w);
		return chan_null(m);
	case 1: {
		bool b = next() & 1;

		chan_writer_bool(w, b);
		return chan_bool(m, b);
	}
	case 2: {
		int64_t i = (int64_t)next() >> (next() % 64);

		chan_writer_int(w, i);
		return chan_int(m, i);
	}
	case 3: {
		uint64_t bits = next();
		double f;

		memcpy(&f, &bits, 8); /* any bits, NaNs included */
		chan_writer_float(w, f);
		return chan_float(m, f);
	}
	case 4: { /* short or long ASCII strings: prefixes of 1..3 bytes */
		size_t n = next() % 4 || budget < 20000 ? next() % 40 : next() % 20000;

		budget -= (long)n;
		chan_writer_string_n(w, text, n);
		return chan_string_n(m, text, n);
	}
	case 5: { /* bytes, sometimes borrowed (>= 4 KiB: spliced, not copied) */
		size_t n = next() % 3 || budget < 70000 ? next() % 200 : next() % 70000;

		budget -= (long)n;
		if (next() & 1)
			chan_writer_bytes_borrow(w, text, n);
		else
			chan_writer_bytes(w, text, n);
		return chan_bytes(m, text, n);
	}
	case 6:
		if (*handles < 253) {
			int fd = pipe_fds[next() & 1];

			++*handles;
			chan_writer_handle_borrow(w, CHAN_KIND_FD, fd);
			return chan_handle_borrow(m, CHAN_KIND_FD, fd);
		}
		chan_writer_null(w);
		return chan_null(m);
	case 7: {
		unsigned n = (unsigned)(next() % 6 ? next() % 5 : next() % 300);

		v = chan_list(m);
		chan_writer_list_begin(w);
		for (unsigned i = 0; i < n && depth < 40; i++)
			chan_list_append(v, both(m, w, depth + 1, handles));
		chan_writer_list_end(w);
		return v;
	}
	default: {
		unsigned n = (unsigned)(next() % 6 ? next() % 5 : next() % 300);
		char key[32];

		v = chan_map(m);
		chan_writer_map_begin(w);
		for (unsigned i = 0; i < n; i++) {
			size_t kl = (size_t)snprintf(key, sizeof(key), "%u", i * 7919u % 100003u);

			if (i == 0 && next() % 4 == 0)
				kl = 0; /* the empty key: omitted on the wire */
			chan_writer_key_n(w, key, kl);
			chan_map_put_n(v, key, kl, both(m, w, depth + 1, handles));
		}
		chan_writer_map_end(w);
		return v;
	}
	}
}

static void
test_same_bytes_as_the_tree(void)
{
	chan_writer *w = chan_writer_new(NULL);
	size_t cap = 1 << 20;
	uint8_t *a = malloc(cap), *b = malloc(cap);
	int fa[253], fb[253];

	for (size_t i = 0; i < sizeof(text); i++)
		text[i] = (char)('a' + i % 26);
	CU_ASSERT_FATAL(pipe2(pipe_fds, O_CLOEXEC) == 0);
	for (int round = 0; round < 3000; round++) {
		chan_msg *m = chan_msg_new(NULL);
		int handles = 0, rm, rw;
		size_t la = 0, lb = 0, na = 0, nb = 0;
		chan_value *root;

		chan_writer_reset(w);
		budget = 300000;
		root = both(m, w, 1, &handles);
		rm = chan_msg_set_root(m, root);
		if (rm == 0)
			rm = chan_encode(m, a, cap, &la);
		rw = chan_writer_frame(w, b, cap, fb, 253, &lb, &nb);
		CU_ASSERT_EQUAL(rw, rm);
		if (rm == 0 && rw == 0) {
			CU_ASSERT_EQUAL(chan_msg_borrow_handles(m, fa, 253, &na), 0);
			CU_ASSERT(la == lb && !memcmp(a, b, la));
			CU_ASSERT(na == nb && !memcmp(fa, fb, na * sizeof(int)));
		} else {
			CU_ASSERT_EQUAL(rm, CHAN_E_PAYLOAD_TOO_LARGE); /* the only expected one */
		}
		chan_msg_free(m);
	}
	close(pipe_fds[0]);
	close(pipe_fds[1]);
	free(a);
	free(b);
	chan_writer_free(w);
}

/* The tree builder's refusals, by the same names, poisoning the writer. */
static void
test_same_refusals(void)
{
	chan_writer *w = chan_writer_new(NULL);
	uint8_t buf[64];
	size_t n, nf;

	chan_writer_map_begin(w);
	chan_writer_key(w, "a");
	chan_writer_int(w, 1);
	CU_ASSERT_EQUAL(chan_writer_key(w, "a"), CHAN_E_DUPLICATE_KEY);
	CU_ASSERT_STRING_EQUAL(chan_writer_error_message(w), "chan_writer_key: duplicate key \"a\"");
	CU_ASSERT_EQUAL(chan_writer_int(w, 2), CHAN_E_DUPLICATE_KEY); /* poisoned */
	CU_ASSERT_EQUAL(chan_writer_map_end(w), CHAN_E_DUPLICATE_KEY);
	CU_ASSERT_EQUAL(chan_writer_frame(w, buf, sizeof(buf), NULL, 0, &n, &nf),
			CHAN_E_DUPLICATE_KEY);

	/* a duplicate far into a big map (the hash index) */
	chan_writer_reset(w);
	CU_ASSERT_EQUAL(chan_writer_error(w), 0);
	chan_writer_map_begin(w);
	for (int i = 0; i < 1000; i++) {
		char k[16];

		snprintf(k, sizeof(k), "k%d", i % 999);
		if (chan_writer_key(w, k) < 0)
			break;
		chan_writer_map_begin(w); /* values that move bytes */
		chan_writer_key(w, "x");
		chan_writer_string_n(w, text, 200);
		chan_writer_map_end(w);
	}
	CU_ASSERT_EQUAL(chan_writer_error(w), CHAN_E_DUPLICATE_KEY);
	CU_ASSERT_STRING_EQUAL(chan_writer_error_message(w), "chan_writer_key: duplicate key \"k0\"");

	chan_writer_reset(w);
	CU_ASSERT_EQUAL(chan_writer_string(w, "\xc3("), CHAN_E_INVALID_UTF8);
	chan_writer_reset(w);
	chan_writer_map_begin(w);
	CU_ASSERT_EQUAL(chan_writer_key_n(w, "a\0b", 3), CHAN_E_INVALID_KEY);
	chan_writer_reset(w);
	for (int i = 0; i < 32; i++)
		CU_ASSERT_EQUAL(chan_writer_list_begin(w), 0);
	CU_ASSERT_EQUAL(chan_writer_list_begin(w), CHAN_E_DEPTH_EXCEEDED);
	chan_writer_reset(w);
	chan_writer_list_begin(w);
	for (int i = 0; i < 253; i++)
		CU_ASSERT_EQUAL(chan_writer_handle_borrow(w, CHAN_KIND_FD, 0), 0);
	CU_ASSERT_EQUAL(chan_writer_handle_borrow(w, CHAN_KIND_FD, 0), CHAN_E_HANDLE_LIMIT_EXCEEDED);
	chan_writer_reset(w);
	CU_ASSERT_EQUAL(chan_writer_handle_borrow(w, CHAN_KIND_CONN, 0), CHAN_E_WRONG_HANDLE_KIND);

	/* shape mistakes */
	chan_writer_reset(w);
	CU_ASSERT_EQUAL(chan_writer_frame(w, buf, sizeof(buf), NULL, 0, &n, &nf), CHAN_E_EMPTY_VALUE);
	chan_writer_int(w, 1);
	CU_ASSERT_EQUAL(chan_writer_int(w, 2), CHAN_E_INVALID_ARGUMENT);
	CU_ASSERT_STRING_EQUAL(chan_writer_error_message(w),
			       "chan_writer_int: the frame already has its value");
	chan_writer_reset(w);
	chan_writer_map_begin(w);
	CU_ASSERT_EQUAL(chan_writer_int(w, 2), CHAN_E_INVALID_ARGUMENT); /* no key */
	chan_writer_reset(w);
	chan_writer_map_begin(w);
	chan_writer_key(w, "k");
	CU_ASSERT_EQUAL(chan_writer_map_end(w), CHAN_E_EMPTY_VALUE);
	chan_writer_reset(w);
	chan_writer_list_begin(w);
	CU_ASSERT_EQUAL(chan_writer_frame(w, buf, sizeof(buf), NULL, 0, &n, &nf),
			CHAN_E_INVALID_ARGUMENT); /* still open */
	CU_ASSERT_EQUAL(chan_writer_map_end(w), CHAN_E_INVALID_ARGUMENT);
	chan_writer_reset(w);
	CU_ASSERT_EQUAL(chan_writer_key(w, "k"), CHAN_E_INVALID_ARGUMENT); /* no map */
	chan_writer_free(w);
}

/* A writer's frame on a connection: borrowed bytes of 8 MiB go out by
 * gathered sendmsg (timeout 0: committed, then flushed), handles arrive. */
static void
test_send_writer(void)
{
	static char big[8 << 20];
	int p[2], fd = -1, before = chan_test_count_fds();
	chan_writer *w = chan_writer_new(NULL);
	chan_conn *a, *b;
	chan_msg *got = NULL;
	const void *data;
	size_t n;
	int r;

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 131u >> 7);
	CU_ASSERT_FATAL(pipe2(p, O_CLOEXEC) == 0);
	CU_ASSERT_FATAL(chan_conn_pair(&a, &b) == 0);
	chan_writer_map_begin(w);
	chan_writer_key(w, "file");
	chan_writer_handle_borrow(w, CHAN_KIND_FD, p[1]);
	chan_writer_key(w, "data");
	chan_writer_bytes_borrow(w, big, sizeof(big));
	chan_writer_key(w, "back");
	chan_writer_handle_borrow_conn(w, a);
	chan_writer_map_end(w);
	/* our own endpoint cannot travel over itself */
	CU_ASSERT_EQUAL(chan_conn_send_writer(a, w, LONG_MS), CHAN_E_SELF_SEND);
	chan_writer_reset(w);
	chan_writer_map_begin(w);
	chan_writer_key(w, "file");
	chan_writer_handle_borrow(w, CHAN_KIND_FD, p[1]);
	chan_writer_key(w, "data");
	chan_writer_bytes_borrow(w, big, sizeof(big));
	chan_writer_map_end(w);
	CU_ASSERT_EQUAL(chan_conn_send_writer(a, w, 0), 0); /* committed */
	chan_writer_reset(w); /* the frame no longer needs the writer */
	memset(big, 0, 4096);                               /* nor the borrowed bytes */
	for (int i = 0; i < 100000 && (r = chan_conn_recv(b, 0, &got)) == CHAN_E_WOULD_BLOCK; i++)
		CU_ASSERT(chan_conn_flush(a, 0) == 0 || chan_conn_pending(a));
	CU_ASSERT_EQUAL_FATAL(r, 0);
	CU_ASSERT_EQUAL(chan_map_get_bytes(chan_msg_root(got), "data", &data, &n), 0);
	CU_ASSERT_EQUAL(n, sizeof(big));
	/* the first 4 KiB were cleared after the send returned: what arrived
	 * must be what was there when the frame was committed */
	CU_ASSERT(n == sizeof(big) && ((const char *)data)[1] == (char)(131u >> 7));
	CU_ASSERT(n == sizeof(big) && !memcmp((const char *)data + 4096, big + 4096, n - 4096));
	CU_ASSERT_EQUAL(chan_value_borrow_fd(chan_map_get(chan_msg_root(got), "file"), &fd), 0);
	CU_ASSERT(fd >= 0 && fd != p[1]);
	chan_msg_free(got);
	chan_writer_free(w);
	chan_conn_free(a);
	chan_conn_free(b);
	close(p[0]);
	close(p[1]);
	CU_ASSERT_EQUAL(chan_test_count_fds(), before);
}

CU_TestInfo writer_tests[] = {
	{"same_bytes_as_the_tree", test_same_bytes_as_the_tree},
	{"same_refusals", test_same_refusals},
	{"send_writer", test_send_writer},
	CU_TEST_INFO_NULL,
};
