/*
 * value_test.c - the value API: building, reading, fd ownership (dup on add,
 * move on take, close on free), poisoning, attach rules, encode errors, and
 * allocation failure at every allocation of a build + encode + decode cycle.
 */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "helpers.h"

static void
test_value_scalars_roundtrip(void)
{
	chan_msg *m = chan_msg_new(NULL), *d = NULL;
	chan_value *l = chan_list(m);
	uint8_t *f;
	size_t n, slen;
	const char *s;

	chan_list_append(l, chan_null(m));
	chan_list_append(l, chan_bool(m, 7));
	chan_list_append(l, chan_int(m, INT64_MIN));
	chan_list_append(l, chan_float(m, -0.0));
	chan_list_append(l, chan_float(m, -NAN));
	chan_list_append(l, chan_string_n(m, "a\0b", 3));
	chan_list_append(l, chan_bytes(m, "", 0));
	chan_list_append(l, chan_list(m));
	chan_list_append(l, chan_map(m));
	CU_ASSERT_EQUAL_FATAL(chan_msg_set_root(m, l), 0);
	CU_ASSERT_EQUAL_FATAL(chan_test_encode(m, &f, &n), 0);
	CU_ASSERT_EQUAL_FATAL(chan_decode(f, n, NULL, 0, 0, NULL, NULL, &d, NULL), 0);
	l = chan_msg_root(d);
	CU_ASSERT_EQUAL(chan_value_count(l), 9);
	CU_ASSERT_EQUAL(chan_value_type(chan_value_at(l, 0)), CHAN_NULL);
	CU_ASSERT_EQUAL(tv_bool(chan_value_at(l, 1)), 1);
	CU_ASSERT_EQUAL(tv_int(chan_value_at(l, 2)), INT64_MIN);
	CU_ASSERT(signbit(tv_float(chan_value_at(l, 3))));
	CU_ASSERT(isnan(tv_float(chan_value_at(l, 4))));
	s = tv_string(chan_value_at(l, 5), &slen);
	CU_ASSERT_EQUAL(slen, 3);
	CU_ASSERT(memcmp(s, "a\0b", 4) == 0); /* NUL-terminated too */
	CU_ASSERT_PTR_NOT_NULL(tv_bytes(chan_value_at(l, 6), &slen));
	CU_ASSERT_EQUAL(slen, 0);
	CU_ASSERT_EQUAL(chan_value_type(chan_value_at(l, 7)), CHAN_LIST);
	CU_ASSERT_EQUAL(chan_value_count(chan_value_at(l, 8)), 0);
	CU_ASSERT_PTR_NULL(chan_value_at(l, 9));
	/* readers on the wrong type fail by name and write nothing */
	{
		int64_t i = 77;
		const char *str = "untouched";

		CU_ASSERT_EQUAL(chan_value_get_int(chan_value_at(l, 0), &i), CHAN_E_WRONG_TYPE);
		CU_ASSERT_EQUAL(i, 77);
		CU_ASSERT_EQUAL(chan_value_get_string(chan_value_at(l, 6), &str, NULL),
				CHAN_E_WRONG_TYPE);
		CU_ASSERT_STRING_EQUAL(str, "untouched");
	}
	/* the NaN went out as the canonical bits */
	CU_ASSERT(memmem(f, n, "\x21\x00\x00\x00\x00\x00\x00\xf8\x7f", 9) != NULL);
	free(f);
	chan_msg_free(d);
	chan_msg_free(m);
}

/* Insertion order is kept and significant; lookups work past the index
 * threshold; a duplicate key poisons the message (issue 12: it used to be
 * refused without poisoning, so a chained builder lost the value silently). */
static void
test_value_map_order_and_lookup(void)
{
	chan_msg *m = chan_msg_new(NULL);
	chan_value *map = chan_map(m);
	char key[16];

	for (int i = 999; i >= 0; i--) {
		snprintf(key, sizeof(key), "k%d", i);
		CU_ASSERT_EQUAL(chan_map_put(map, key, chan_int(m, i)), 0);
	}
	CU_ASSERT_EQUAL(chan_map_put(map, "k5", chan_int(m, 5)), CHAN_E_DUPLICATE_KEY);
	CU_ASSERT_EQUAL(chan_msg_error(m), CHAN_E_DUPLICATE_KEY);
	CU_ASSERT_STRING_EQUAL(chan_msg_error_message(m), "chan_map_put: duplicate key \"k5\"");
	CU_ASSERT_EQUAL(chan_msg_set_root(m, map), CHAN_E_DUPLICATE_KEY);
	chan_msg_free(m);
	m = chan_msg_new(NULL);
	map = chan_map(m);
	CU_ASSERT_EQUAL(chan_map_put_n(map, "\xff", 1, chan_int(m, 5)), CHAN_E_INVALID_UTF8);
	CU_ASSERT_STRING_EQUAL(chan_msg_error_message(m),
			       "chan_map_put_n: key \"\\xff\" is not valid UTF-8");
	chan_msg_free(m);
	m = chan_msg_new(NULL);
	map = chan_map(m);
	CU_ASSERT_EQUAL(chan_map_put_n(map, "a\0b", 3, chan_int(m, 5)), CHAN_E_INVALID_KEY);
	chan_msg_free(m);
	m = chan_msg_new(NULL);
	map = chan_map(m);
	for (int i = 999; i >= 0; i--) {
		snprintf(key, sizeof(key), "k%d", i);
		CU_ASSERT_EQUAL(chan_map_put(map, key, chan_int(m, i)), 0);
	}
	CU_ASSERT_STRING_EQUAL(chan_map_key_at(map, 0, NULL), "k999");
	CU_ASSERT_STRING_EQUAL(chan_map_key_at(map, 999, NULL), "k0");
	for (int i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		CU_ASSERT_EQUAL(tv_int(chan_map_get(map, key)), i);
	}
	CU_ASSERT_PTR_NULL(chan_map_get(map, "k1000"));
	CU_ASSERT_PTR_NULL(chan_map_get(map, NULL));
	chan_msg_free(m);
}

/* Adding a handle duplicates (CLOEXEC); taking moves; free closes the rest,
 * attached or not. */
static void
test_value_handle_ownership(void)
{
	int p[2], taken = -1, before = chan_test_count_fds();
	chan_msg *m = chan_msg_new(NULL);
	chan_value *l = chan_list(m), *h1, *h2, *stray;
	struct stat a, b;

	CU_ASSERT_FATAL(pipe2(p, O_CLOEXEC) == 0);
	h1 = chan_handle_copy(m, CHAN_KIND_FD, p[0]);
	h2 = chan_handle_copy(m, CHAN_KIND_FD, p[1]);
	stray = chan_handle_copy(m, CHAN_KIND_FD, p[1]); /* never attached */
	CU_ASSERT_PTR_NOT_NULL_FATAL(stray);
	CU_ASSERT_NOT_EQUAL(tv_fd(h1), p[0]);
	CU_ASSERT(chan_test_fd_cloexec(tv_fd(h1)));
	fstat(p[0], &a);
	fstat(tv_fd(h1), &b);
	CU_ASSERT(a.st_ino == b.st_ino && a.st_dev == b.st_dev);
	chan_list_append(l, h1);
	chan_list_append(l, h2);
	chan_msg_set_root(m, l);
	CU_ASSERT_EQUAL(chan_test_count_fds(), before + 5);
	CU_ASSERT_EQUAL(chan_value_move_fd(h1, &taken), 0);
	CU_ASSERT_EQUAL(tv_fd(h1), -1);
	CU_ASSERT_EQUAL(chan_value_move_fd(h1, &taken), CHAN_E_INVALID_ARGUMENT);
	chan_msg_free(m);
	/* the taken fd survives; the other two duplicates are closed */
	CU_ASSERT(chan_test_fd_is_open(taken));
	CU_ASSERT_EQUAL(chan_test_count_fds(), before + 3);
	close(taken);
	close(p[0]);
	close(p[1]);
}

/* chan_handle_take: the message takes the fd on success only. */
static void
test_value_handle_take(void)
{
	int p[2], before = chan_test_count_fds();
	chan_msg *m = chan_msg_new(NULL);
	chan_value *h;

	CU_ASSERT_FATAL(pipe2(p, O_CLOEXEC) == 0);
	h = chan_handle_move(m, CHAN_KIND_FD, p[0]);
	CU_ASSERT_EQUAL(tv_fd(h), p[0]); /* no duplicate */
	CU_ASSERT_PTR_NULL(chan_handle_move(m, CHAN_KIND_CONN, p[1])); /* a pipe is no conn */
	CU_ASSERT(chan_test_fd_is_open(p[1])); /* failure took nothing */
	CU_ASSERT_EQUAL(chan_msg_error(m), CHAN_E_WRONG_HANDLE_KIND);
	chan_msg_free(m);
	CU_ASSERT_FALSE(chan_test_fd_is_open(p[0])); /* the message closed what it took */
	close(p[1]);
	m = chan_msg_new(NULL);
	CU_ASSERT_PTR_NULL(chan_handle_move(m, CHAN_KIND_FD, 1000000)); /* not open */
	CU_ASSERT_EQUAL(chan_msg_error(m), CHAN_E_INVALID_ARGUMENT);
	CU_ASSERT_STRING_EQUAL(chan_msg_error_message(m),
			       "chan_handle_move: fd 1000000 is not open");
	chan_msg_free(m);
	CU_ASSERT_EQUAL(chan_test_count_fds(), before);
}

static void
test_value_conn_kind_checked_on_add(void)
{
	int p[2], s[2];
	chan_msg *m = chan_msg_new(NULL);

	CU_ASSERT_FATAL(pipe2(p, O_CLOEXEC) == 0);
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, s) == 0);
	CU_ASSERT_PTR_NULL(chan_handle_copy(m, CHAN_KIND_CONN, p[0]));
	CU_ASSERT_EQUAL(chan_msg_error(m), CHAN_E_WRONG_HANDLE_KIND);
	chan_msg_free(m);
	m = chan_msg_new(NULL);
	CU_ASSERT_PTR_NULL(chan_handle_copy(m, CHAN_KIND_CONN, s[0])); /* datagram socket */
	CU_ASSERT_EQUAL(chan_msg_error(m), CHAN_E_WRONG_HANDLE_KIND);
	chan_msg_free(m);
	m = chan_msg_new(NULL);
	CU_ASSERT_PTR_NULL(chan_handle_copy(m, 3, p[0]));
	CU_ASSERT_EQUAL(chan_msg_error(m), CHAN_E_INVALID_ARGUMENT);
	chan_msg_free(m);
	m = chan_msg_new(NULL);
	CU_ASSERT_PTR_NULL(chan_handle_copy(m, CHAN_KIND_FD, 1000000)); /* not open */
	CU_ASSERT_EQUAL(chan_msg_error(m), CHAN_E_INVALID_ARGUMENT);
	CU_ASSERT_STRING_EQUAL(chan_msg_error_message(m),
			       "chan_handle_copy: fd 1000000 is not open");
	chan_msg_free(m);
	close(p[0]);
	close(p[1]);
	close(s[0]);
	close(s[1]);
}

/* A failed constructor poisons the message: the chain reports its first
 * error at the end. */
static void
test_value_poison_and_attach_rules(void)
{
	chan_msg *m = chan_msg_new(NULL), *other = chan_msg_new(NULL);
	chan_value *map = chan_map(m), *l = chan_list(m), *x = chan_int(m, 1);
	uint8_t buf[64];
	size_t n;

	CU_ASSERT_EQUAL(chan_list_append(l, x), 0);
	CU_ASSERT_EQUAL(chan_list_append(l, x), CHAN_E_INVALID_ARGUMENT); /* attached twice */
	chan_msg_free(m);

	m = chan_msg_new(NULL);
	l = chan_list(m);
	CU_ASSERT_EQUAL(chan_list_append(l, l), CHAN_E_INVALID_ARGUMENT); /* a cycle */
	chan_msg_free(m);

	m = chan_msg_new(NULL);
	l = chan_list(m);
	CU_ASSERT_EQUAL(chan_list_append(l, chan_int(other, 1)), CHAN_E_INVALID_ARGUMENT);
	chan_msg_free(m);

	m = chan_msg_new(NULL);
	map = chan_map(m);
	CU_ASSERT_EQUAL(chan_map_put(map, "s", chan_string_n(m, "\xc0\x80", 2)),
			CHAN_E_INVALID_UTF8);
	CU_ASSERT_EQUAL(chan_map_put(map, "t", chan_int(m, 1)), CHAN_E_INVALID_UTF8);
	CU_ASSERT_EQUAL(chan_msg_set_root(m, map), CHAN_E_INVALID_UTF8);
	CU_ASSERT_EQUAL(chan_encode(m, buf, sizeof(buf), &n), CHAN_E_INVALID_UTF8);
	chan_msg_free(m);

	m = chan_msg_new(NULL);
	CU_ASSERT_EQUAL(chan_encode(m, buf, sizeof(buf), &n), CHAN_E_EMPTY_VALUE);
	CU_ASSERT_EQUAL(chan_msg_set_root(m, chan_null(m)), 0);
	CU_ASSERT_EQUAL(chan_msg_set_root(m, chan_null(m)), CHAN_E_INVALID_ARGUMENT);
	chan_msg_free(m);
	chan_msg_free(other);
	CU_ASSERT_PTR_NULL(chan_msg_free(NULL));
}

static void
test_value_encode_errors(void)
{
	chan_msg *m = chan_msg_new(NULL);
	chan_value *v = chan_null(m), *l;
	uint8_t buf[64], big[4096];
	size_t n = 0, need = 0;
	int p[2];

	/* depth 32 encodes, 33 does not */
	for (int i = 1; i < 32; i++) {
		l = chan_list(m);
		chan_list_append(l, v);
		v = l;
	}
	chan_msg_set_root(m, v);
	CU_ASSERT_EQUAL(chan_encode(m, big, sizeof(big), &n), 0);
	chan_msg_free(m);
	m = chan_msg_new(NULL);
	v = chan_null(m);
	for (int i = 1; i < 33; i++) {
		l = chan_list(m);
		chan_list_append(l, v);
		v = l;
	}
	chan_msg_set_root(m, v);
	CU_ASSERT_EQUAL(chan_encode(m, big, sizeof(big), &n), CHAN_E_DEPTH_EXCEEDED);
	chan_msg_free(m);

	/* 254 handles refused */
	CU_ASSERT_FATAL(pipe2(p, O_CLOEXEC) == 0);
	m = chan_msg_new(NULL);
	l = chan_list(m);
	for (int i = 0; i < 254; i++)
		chan_list_append(l, chan_handle_copy(m, CHAN_KIND_FD, p[0]));
	chan_msg_set_root(m, l);
	CU_ASSERT_EQUAL(chan_encoded_size(m, &n), CHAN_E_HANDLE_LIMIT_EXCEEDED);
	chan_msg_free(m);
	close(p[0]);
	close(p[1]);

	/* buffer too small: the size is still reported, nothing written past cap */
	m = chan_msg_new(NULL);
	chan_msg_set_root(m, chan_string(m, "hello, world"));
	CU_ASSERT_EQUAL(chan_encoded_size(m, &need), 0);
	memset(buf, 0xaa, sizeof(buf));
	CU_ASSERT_EQUAL(chan_encode(m, buf, need - 1, &n), CHAN_E_BUFFER_TOO_SMALL);
	CU_ASSERT_EQUAL(n, need);
	CU_ASSERT_EQUAL(buf[0], 0xaa);
	CU_ASSERT_EQUAL(chan_encode(m, buf, need, &n), 0);
	CU_ASSERT_EQUAL(n, need);
	chan_msg_free(m);
}

/*
 * Fail each allocation in turn (1..N) along build + encode + decode: every
 * failure is NO_MEMORY, nothing leaks (memory or fd), and the first
 * successful run proves N covered every allocation site.
 */
static int
build_encode_decode(struct chan_test_alloc *ta, int fd)
{
	chan_msg *m = chan_msg_new(&ta->a), *d = NULL;
	chan_value *root = m ? chan_map(m) : NULL, *l = m ? chan_list(m) : NULL;
	uint8_t *f = NULL;
	size_t n;
	int r, dupfd;
	char key[8];

	if (!m)
		return CHAN_E_NO_MEMORY;
	for (int i = 0; i < 40; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		chan_map_put(root, key, chan_string(m, "some text"));
		chan_list_append(l, chan_int(m, i));
	}
	chan_map_put(root, "l", l);
	chan_map_put(root, "fd", chan_handle_copy(m, CHAN_KIND_FD, fd));
	r = chan_msg_set_root(m, root);
	if (r == 0)
		r = chan_test_encode(m, &f, &n);
	if (r == 0) {
		dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
		r = chan_decode(f, n, &dupfd, 1, 0, NULL, &ta->a, &d, NULL);
		if (r < 0)
			CU_ASSERT_EQUAL(dupfd, -1);
	}
	free(f);
	chan_msg_free(d);
	chan_msg_free(m);
	return r;
}

static void
test_value_allocation_failure_everywhere(void)
{
	struct chan_test_alloc ta;
	int p[2], before, r;
	long total;

	CU_ASSERT_FATAL(pipe2(p, O_CLOEXEC) == 0);
	before = chan_test_count_fds();
	chan_test_alloc_init(&ta, 0);
	CU_ASSERT_EQUAL_FATAL(build_encode_decode(&ta, p[0]), 0);
	total = ta.allocs;
	CU_ASSERT(total > 3);
	for (long k = 1; k <= total; k++) {
		chan_test_alloc_init(&ta, k);
		r = build_encode_decode(&ta, p[0]);
		CU_ASSERT_EQUAL(r, CHAN_E_NO_MEMORY);
		CU_ASSERT_EQUAL(ta.live, 0);
		CU_ASSERT_EQUAL(chan_test_count_fds(), before);
	}
	close(p[0]);
	close(p[1]);
}

CU_TestInfo value_tests[] = {
	{"scalars_roundtrip", test_value_scalars_roundtrip},
	{"map_order_and_lookup", test_value_map_order_and_lookup},
	{"handle_ownership", test_value_handle_ownership},
	{"handle_take", test_value_handle_take},
	{"conn_kind_checked_on_add", test_value_conn_kind_checked_on_add},
	{"poison_and_attach_rules", test_value_poison_and_attach_rules},
	{"encode_errors", test_value_encode_errors},
	{"allocation_failure_everywhere", test_value_allocation_failure_everywhere},
	CU_TEST_INFO_NULL,
};
