/*
 * decode_test.c - every decode error of the registry, triggered by a frame,
 * with every fd handed to chan_decode shown closed afterwards; the precedence
 * of SPEC.md §9.3; hostile inputs (deep nesting, huge lengths); allocation
 * counts and out-of-memory at every allocation.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "helpers.h"

/* A frame from header fields and payload hex ("-1" length = computed). */
static size_t
make_frame(uint8_t *out, size_t cap, uint8_t flags, uint16_t handles, uint32_t channel,
	   long length, const char *payload_hex)
{
	uint8_t *payload = NULL;
	long n = chan_test_hex(payload_hex, &payload);
	uint32_t len;

	CU_ASSERT_FATAL(n >= 0 && (size_t)n + CHAN_HEADER_SIZE <= cap);
	len = length < 0 ? (uint32_t)n : (uint32_t)length;
	memcpy(out, "CHAN\x01", 5);
	out[5] = flags;
	out[6] = (uint8_t)handles;
	out[7] = (uint8_t)(handles >> 8);
	for (int i = 0; i < 4; i++) {
		out[8 + i] = (uint8_t)(channel >> (8 * i));
		out[12 + i] = (uint8_t)(len >> (8 * i));
	}
	memcpy(out + CHAN_HEADER_SIZE, payload, (size_t)n);
	free(payload);
	return CHAN_HEADER_SIZE + (size_t)n;
}

struct decode_case {
	const char *name;
	int expect;
	uint16_t handles;   /* header handle_count */
	int nfds;           /* descriptors delivered (pipe read ends) */
	int conn_fds;       /* deliver sockets instead of pipes */
	uint8_t flags;
	uint32_t channel;
	long length;        /* -1: the payload's length */
	const char *payload;
};

static const struct decode_case cases[] = {
	/* header (SPEC.md §5.2, §8) */
	{"reserved_flags", CHAN_E_RESERVED_FIELD_NONZERO, 1, 1, 0, 0x01, 0, -1, "4a 02 10 01"},
	{"reserved_channel", CHAN_E_RESERVED_FIELD_NONZERO, 1, 1, 0, 0, 7, -1, "4a 02 10 01"},
	{"handle_limit_default_65", CHAN_E_HANDLE_LIMIT_EXCEEDED, 65, 65, 0, 0, 0, -1, "0a 00"},
	{"too_few_handles", CHAN_E_TOO_FEW_HANDLES, 2, 1, 0, 0, 0, -1, "3a 08 0a 02 4a 00 0a 02 4a 00"},
	{"too_many_handles", CHAN_E_TOO_MANY_HANDLES, 1, 2, 0, 0, 0, -1, "4a 02 10 01"},
	{"truncated_payload", CHAN_E_TRUNCATED, 1, 1, 0, 0, 0, 9, "4a 02 10 01"},
	{"payload_0xffffffff", CHAN_E_PAYLOAD_TOO_LARGE, 1, 1, 0, 0, 0, 0xffffffffL, "4a 02 10 01"},
	/* §7.3 walk */
	{"empty_payload", CHAN_E_EMPTY_VALUE, 0, 0, 0, 0, 0, -1, ""},
	{"null_wrong_wire_type", CHAN_E_MALFORMED, 0, 0, 0, 0, 0, -1, "08 00"},
	{"group_wire_type", CHAN_E_MALFORMED, 0, 0, 0, 0, 0, -1, "0b"},
	{"wire_type_7", CHAN_E_MALFORMED, 0, 0, 0, 0, 0, -1, "0f 00"},
	{"field_zero", CHAN_E_MALFORMED, 0, 0, 0, 0, 0, -1, "02 00"},
	{"length_past_end", CHAN_E_MALFORMED, 0, 0, 0, 0, 0, -1, "2a 05 61"},
	{"varint_11_bytes", CHAN_E_MALFORMED, 0, 0, 0, 0, 0, -1, "18 80 80 80 80 80 80 80 80 80 80 01"},
	{"varint_overflow", CHAN_E_MALFORMED, 0, 0, 0, 0, 0, -1, "18 ff ff ff ff ff ff ff ff ff 02"},
	{"varint_truncated", CHAN_E_MALFORMED, 0, 0, 0, 0, 0, -1, "18 80"},
	{"fixed64_truncated", CHAN_E_MALFORMED, 0, 0, 0, 0, 0, -1, "21 00 00 00"},
	{"tag_over_32_bits", CHAN_E_MALFORMED, 0, 0, 0, 0, 0, -1, "80 80 80 80 80 01 00"},
	{"unknown_value_field", CHAN_E_UNKNOWN_FIELD, 0, 0, 0, 0, 0, -1, "50 00"},
	{"unknown_field_fixed32", CHAN_E_UNKNOWN_FIELD, 0, 0, 0, 0, 0, -1, "0a 00 55 00 00 00 00"},
	{"field_in_null", CHAN_E_UNKNOWN_FIELD, 0, 0, 0, 0, 0, -1, "0a 02 08 00"},
	{"field_in_handle", CHAN_E_UNKNOWN_FIELD, 1, 1, 0, 0, 0, -1, "4a 04 10 01 18 00"},
	{"unknown_before_malformed", CHAN_E_UNKNOWN_FIELD, 0, 0, 0, 0, 0, -1, "3a 05 10 00 0a 05 18"},
	{"varint_nonminimal", CHAN_E_NONCANONICAL, 0, 0, 0, 0, 0, -1, "18 80 00"},
	{"tag_nonminimal", CHAN_E_NONCANONICAL, 0, 0, 0, 0, 0, -1, "98 00 00"},
	{"length_nonminimal", CHAN_E_NONCANONICAL, 0, 0, 0, 0, 0, -1, "2a 81 00 61"},
	{"two_members", CHAN_E_NONCANONICAL, 0, 0, 0, 0, 0, -1, "18 00 10 00"},
	{"same_member_twice", CHAN_E_NONCANONICAL, 0, 0, 0, 0, 0, -1, "18 00 18 02"},
	{"bool_two", CHAN_E_NONCANONICAL, 0, 0, 0, 0, 0, -1, "10 02"},
	{"nan_noncanonical", CHAN_E_NONCANONICAL, 0, 0, 0, 0, 0, -1, "21 01 00 00 00 00 00 f8 7f"},
	{"nan_negative", CHAN_E_NONCANONICAL, 0, 0, 0, 0, 0, -1, "21 00 00 00 00 00 00 f8 ff"},
	{"empty_key_written", CHAN_E_NONCANONICAL, 0, 0, 0, 0, 0, -1, "42 08 0a 06 0a 00 12 02 0a 00"},
	{"entry_value_before_key", CHAN_E_NONCANONICAL, 0, 0, 0, 0, 0, -1, "42 09 0a 07 12 02 0a 00 0a 01 6b"},
	{"handle_index_zero_written", CHAN_E_NONCANONICAL, 1, 1, 0, 0, 0, -1, "4a 04 08 00 10 01"},
	{"handle_kind_zero_written", CHAN_E_NONCANONICAL, 1, 1, 0, 0, 0, -1, "4a 02 10 00"},
	{"handle_fields_reversed", CHAN_E_NONCANONICAL, 2, 2, 0, 0, 0, -1,
	 "3a 0e 0a 04 4a 02 10 01 0a 06 4a 04 10 01 08 01"},
	{"empty_list_item", CHAN_E_EMPTY_VALUE, 0, 0, 0, 0, 0, -1, "3a 02 0a 00"},
	{"entry_without_value", CHAN_E_EMPTY_VALUE, 0, 0, 0, 0, 0, -1, "42 06 0a 04 0a 02 6b 31"},
	{"invalid_utf8_ff", CHAN_E_INVALID_UTF8, 0, 0, 0, 0, 0, -1, "2a 01 ff"},
	{"invalid_utf8_surrogate", CHAN_E_INVALID_UTF8, 0, 0, 0, 0, 0, -1, "2a 03 ed a0 80"},
	{"invalid_utf8_overlong_nul", CHAN_E_INVALID_UTF8, 0, 0, 0, 0, 0, -1, "2a 02 c0 80"},
	{"invalid_utf8_above_10ffff", CHAN_E_INVALID_UTF8, 0, 0, 0, 0, 0, -1, "2a 04 f4 90 80 80"},
	{"invalid_utf8_cut", CHAN_E_INVALID_UTF8, 0, 0, 0, 0, 0, -1, "2a 02 e2 82"},
	{"invalid_utf8_key", CHAN_E_INVALID_UTF8, 0, 0, 0, 0, 0, -1, "42 07 0a 05 0a 01 80 12 00"},
	{"key_with_nul", CHAN_E_INVALID_KEY, 0, 0, 0, 0, 0, -1, "42 08 0a 06 0a 02 61 00 12 00"},
	{"key_nul_before_empty_value", CHAN_E_INVALID_KEY, 0, 0, 0, 0, 0, -1, "42 06 0a 04 0a 02 00 61"},
	{"duplicate_key", CHAN_E_DUPLICATE_KEY, 0, 0, 0, 0, 0, -1,
	 "42 12 0a 07 0a 01 61 12 02 0a 00 0a 07 0a 01 61 12 02 0a 00"},
	{"unknown_handle_kind_3", CHAN_E_UNKNOWN_HANDLE_KIND, 1, 1, 0, 0, 0, -1, "4a 02 10 03"},
	{"handle_kind_absent", CHAN_E_UNKNOWN_HANDLE_KIND, 1, 1, 0, 0, 0, -1, "4a 00"},
	{"handle_kind_2_pow_32_plus_1", CHAN_E_UNKNOWN_HANDLE_KIND, 1, 1, 0, 0, 0, -1,
	 "4a 06 10 81 80 80 80 10"},
	{"conn_is_a_pipe", CHAN_E_WRONG_HANDLE_KIND, 1, 1, 0, 0, 0, -1, "4a 02 10 02"},
	{"index_out_of_range", CHAN_E_HANDLE_INDEX_OUT_OF_RANGE, 1, 1, 0, 0, 0, -1, "4a 04 08 01 10 01"},
	{"index_2_pow_32", CHAN_E_HANDLE_INDEX_OUT_OF_RANGE, 1, 1, 0, 0, 0, -1,
	 "4a 08 08 80 80 80 80 10 10 01"},
	{"index_out_of_order", CHAN_E_HANDLE_INDEX_OUT_OF_ORDER, 2, 2, 0, 0, 0, -1,
	 "3a 0c 0a 04 4a 02 10 01 0a 04 4a 02 10 01"},
	{"index_reversed", CHAN_E_HANDLE_INDEX_OUT_OF_ORDER, 2, 2, 0, 0, 0, -1,
	 "3a 0e 0a 06 4a 04 08 01 10 01 0a 04 4a 02 10 01"},
	{"index_skipped", CHAN_E_UNREFERENCED_HANDLE, 2, 2, 0, 0, 0, -1, "4a 04 08 01 10 01"},
	{"no_reference", CHAN_E_UNREFERENCED_HANDLE, 1, 1, 0, 0, 0, -1, "0a 00"},
	/* precedence (§9.3): the earlier check wins */
	{"flags_before_too_few", CHAN_E_RESERVED_FIELD_NONZERO, 1, 0, 0, 1, 0, -1, "4a 02 10 01"},
	{"too_many_before_walk", CHAN_E_TOO_MANY_HANDLES, 0, 1, 0, 0, 0, -1, "ff"},
	{"walk_before_unreferenced", CHAN_E_MALFORMED, 2, 2, 0, 0, 0, -1, "4a 02 10 01 ff"},
	{"utf8_before_duplicate", CHAN_E_INVALID_UTF8, 0, 0, 0, 0, 0, -1,
	 "42 19 0a 07 0a 01 61 12 02 0a 00 0a 07 0a 01 61 12 02 0a 00 0a 05 12 03 2a 01 ff"},
	{"unreferenced_before_kind_check", CHAN_E_UNREFERENCED_HANDLE, 2, 2, 0, 0, 0, -1, "4a 02 10 02"},
	{"duplicate_before_kind_check", CHAN_E_DUPLICATE_KEY, 1, 1, 0, 0, 0, -1,
	 "42 14 0a 09 0a 01 61 12 04 4a 02 10 02 0a 07 0a 01 61 12 02 0a 00"},
};

static void
run_case(const struct decode_case *c)
{
	uint8_t frame[512];
	size_t len = make_frame(frame, sizeof(frame), c->flags, c->handles, c->channel,
				c->length, c->payload);
	int fds[80], keep[80], nfds = c->nfds, r;
	chan_msg *msg = NULL;
	int before = chan_test_count_fds();

	for (int i = 0; i < nfds; i++) {
		int p[2];

		if (c->conn_fds) {
			CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) == 0);
		} else {
			CU_ASSERT_FATAL(pipe2(p, O_CLOEXEC) == 0);
		}
		fds[i] = p[0];
		keep[i] = p[1];
	}
	r = chan_decode(frame, len, nfds ? fds : NULL, (size_t)nfds, 0, NULL, NULL, &msg, NULL);
	if (r != c->expect)
		fprintf(stderr, "\n  case %s: got %s, want %s\n", c->name,
			chan_errname(r) ? chan_errname(r) : "?", chan_errname(c->expect));
	CU_ASSERT_EQUAL(r, c->expect);
	CU_ASSERT_PTR_NULL(msg);
	/* chan_decode took every fd and closed each exactly once. */
	for (int i = 0; i < nfds; i++) {
		CU_ASSERT_EQUAL(fds[i], -1);
		close(keep[i]);
	}
	CU_ASSERT_EQUAL(chan_test_count_fds(), before);
	chan_msg_free(msg);
}

static void
test_decode_every_error_closes_every_fd(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_case(&cases[i]);
}

/* Every frame- and codec-level error of the registry has a case above. */
static void
test_decode_cases_cover_registry(void)
{
	static const int decode_errors[] = {
		CHAN_E_RESERVED_FIELD_NONZERO, CHAN_E_HANDLE_LIMIT_EXCEEDED, CHAN_E_TOO_FEW_HANDLES,
		CHAN_E_TOO_MANY_HANDLES, CHAN_E_MALFORMED, CHAN_E_UNKNOWN_FIELD, CHAN_E_NONCANONICAL,
		CHAN_E_EMPTY_VALUE, CHAN_E_INVALID_UTF8, CHAN_E_DUPLICATE_KEY,
		CHAN_E_UNKNOWN_HANDLE_KIND, CHAN_E_WRONG_HANDLE_KIND, CHAN_E_INVALID_KEY, CHAN_E_HANDLE_INDEX_OUT_OF_RANGE,
		CHAN_E_HANDLE_INDEX_OUT_OF_ORDER, CHAN_E_UNREFERENCED_HANDLE, CHAN_E_TRUNCATED,
		CHAN_E_PAYLOAD_TOO_LARGE,
	};

	for (size_t e = 0; e < sizeof(decode_errors) / sizeof(decode_errors[0]); e++) {
		int found = 0;

		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
			found |= cases[i].expect == decode_errors[e];
		if (!found)
			fprintf(stderr, "\n  no case for %s\n", chan_errname(decode_errors[e]));
		CU_ASSERT(found);
	}
}

static void
expect_decode(const uint8_t *buf, size_t len, int want)
{
	chan_msg *m = NULL;
	int r = chan_decode(buf, len, NULL, 0, 0, NULL, NULL, &m, NULL);

	if (r != want)
		fprintf(stderr, "\n  got %s want %s\n", chan_errname(r), chan_errname(want));
	CU_ASSERT_EQUAL(r, want);
	chan_msg_free(m);
}

static void
test_decode_header_errors(void)
{
	uint8_t f[32];
	size_t n = make_frame(f, sizeof(f), 0, 0, 0, -1, "0a 00");

	expect_decode(f, n, 0);
	expect_decode(f, 0, CHAN_E_TRUNCATED);
	expect_decode(f, 15, CHAN_E_TRUNCATED);
	expect_decode(f, n - 1, CHAN_E_TRUNCATED);
	f[3] = 'X';
	expect_decode(f, n, CHAN_E_BAD_MAGIC);
	expect_decode(f, 15, CHAN_E_TRUNCATED); /* too short to judge the magic */
	f[3] = 'N';
	f[4] = 2;
	expect_decode(f, n, CHAN_E_UNSUPPORTED_VERSION);
	f[4] = 0;
	expect_decode(f, n, CHAN_E_UNSUPPORTED_VERSION);
	/* bad magic outranks everything after it */
	n = make_frame(f, sizeof(f), 1, 9, 1, 0xffffffffL, "");
	f[0] = 0;
	expect_decode(f, n, CHAN_E_BAD_MAGIC);
}

/* Build N levels of nesting backwards: lists or maps around a null. */
static uint8_t *
nested(size_t levels, int maps, size_t *ret_len)
{
	size_t cap = levels * 16 + 64, pos = cap;
	uint8_t *buf = malloc(cap);
	size_t inner;

	CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
	buf[--pos] = 0x00;
	buf[--pos] = 0x0a; /* null */
	for (size_t i = 1; i < levels; i++) {
		uint8_t tmp[10];
		int k;
		uint64_t v;

#define PREPEND_LEN(tag)                                                               \
	inner = cap - pos;                                                             \
	for (v = inner, k = 0; v >= 0x80; v >>= 7)                                     \
		tmp[k++] = (uint8_t)(v | 0x80);                                        \
	tmp[k++] = (uint8_t)v;                                                         \
	pos -= (size_t)k;                                                              \
	memcpy(buf + pos, tmp, (size_t)k);                                             \
	buf[--pos] = (tag);
		if (maps) {
			PREPEND_LEN(0x12) /* Entry.value */
			PREPEND_LEN(0x0a) /* Map.entries */
			PREPEND_LEN(0x42) /* Value.map_value */
		} else {
			PREPEND_LEN(0x0a) /* List.items */
			PREPEND_LEN(0x3a) /* Value.list_value */
		}
	}
	/* frame header in front */
	pos -= CHAN_HEADER_SIZE;
	inner = cap - pos - CHAN_HEADER_SIZE;
	memcpy(buf + pos, "CHAN\x01\0\0\0\0\0\0\0", 12);
	for (int i = 0; i < 4; i++)
		buf[pos + 12 + i] = (uint8_t)(inner >> (8 * i));
	memmove(buf, buf + pos, cap - pos);
	*ret_len = cap - pos;
	return buf;
#undef PREPEND_LEN
}

static void
test_decode_depth_limit_exact(void)
{
	for (int maps = 0; maps < 2; maps++) {
		size_t len;
		uint8_t *b = nested(32, maps, &len);
		chan_msg *m = NULL;
		struct chan_limits lim = {.max_depth = 5};

		expect_decode(b, len, 0);
		CU_ASSERT_EQUAL(chan_decode(b, len, NULL, 0, 0, &lim, NULL, &m, NULL),
				CHAN_E_DEPTH_EXCEEDED);
		free(b);
		b = nested(33, maps, &len);
		expect_decode(b, len, CHAN_E_DEPTH_EXCEEDED);
		free(b);
		b = nested(5, maps, &len);
		CU_ASSERT_EQUAL(chan_decode(b, len, NULL, 0, 0, &lim, NULL, &m, NULL), 0);
		chan_msg_free(m);
		free(b);
	}
}

/* protobuf-c's unpack would overflow the stack here; we stop at depth 33. */
static void
test_decode_million_deep_nesting(void)
{
	size_t len;
	uint8_t *b = nested(1000000, 0, &len);

	CU_ASSERT(len < CHAN_DEFAULT_MAX_PAYLOAD + CHAN_HEADER_SIZE);
	expect_decode(b, len, CHAN_E_DEPTH_EXCEEDED);
	free(b);
	b = nested(1000000, 1, &len);
	{
		struct chan_limits lim = {.max_payload = CHAN_HARD_MAX_PAYLOAD};
		chan_msg *m = NULL;

		CU_ASSERT_EQUAL(chan_decode(b, len, NULL, 0, 0, &lim, NULL, &m, NULL),
				CHAN_E_DEPTH_EXCEEDED);
	}
	free(b);
}

/* Handle rules are checked even without descriptors (detached). */
static void
test_decode_detached_checks_indices(void)
{
	uint8_t f[64];
	size_t n = make_frame(f, sizeof(f), 0, 2, 0, -1, "3a 0c 0a 04 4a 02 10 01 0a 04 4a 02 10 01");
	chan_msg *m = NULL;
	int fd = 0;

	CU_ASSERT_EQUAL(chan_decode(f, n, NULL, 0, CHAN_DECODE_DETACHED, NULL, NULL, &m, NULL),
			CHAN_E_HANDLE_INDEX_OUT_OF_ORDER);
	n = make_frame(f, sizeof(f), 0, 2, 0, -1, "3a 0e 0a 04 4a 02 10 01 0a 06 4a 04 08 01 10 02");
	CU_ASSERT_EQUAL(chan_decode(f, n, NULL, 0, CHAN_DECODE_DETACHED, NULL, NULL, &m, NULL), 0);
	CU_ASSERT_EQUAL(tv_fd(chan_value_at(chan_msg_root(m), 1)), -1);
	CU_ASSERT_EQUAL(chan_value_kind(chan_value_at(chan_msg_root(m), 1)), CHAN_KIND_CONN);
	CU_ASSERT_EQUAL(chan_value_handle_index(chan_value_at(chan_msg_root(m), 1)), 1);
	CU_ASSERT_EQUAL(chan_value_move_fd(chan_value_at(chan_msg_root(m), 1), &fd),
			CHAN_E_INVALID_ARGUMENT);
	chan_msg_free(m);
}

/* 253 handles decode; the limit is per call. */
static void
test_decode_253_handles(void)
{
	chan_msg *m = chan_msg_new(NULL), *d = NULL;
	chan_value *l = chan_list(m);
	uint8_t *frame;
	size_t len, n;
	int fds[253], p[2], before = chan_test_count_fds();
	struct chan_limits lim = {.max_handles = 253};
	const int *table;

	CU_ASSERT_FATAL(pipe2(p, O_CLOEXEC) == 0);
	for (int i = 0; i < 253; i++)
		CU_ASSERT_EQUAL(chan_list_append(l, chan_handle_copy(m, CHAN_KIND_FD, p[i % 2])), 0);
	chan_msg_set_root(m, l);
	CU_ASSERT_EQUAL_FATAL(chan_test_encode(m, &frame, &len), 0);
	table = tv_handles(m, &n);
	CU_ASSERT_EQUAL_FATAL(n, 253);
	for (int i = 0; i < 253; i++)
		fds[i] = fcntl(table[i], F_DUPFD_CLOEXEC, 3);
	chan_msg_free(m);
	CU_ASSERT_EQUAL(chan_decode(frame, len, fds, 253, 0, NULL, NULL, &d, NULL),
			CHAN_E_HANDLE_LIMIT_EXCEEDED);
	for (int i = 0; i < 253; i++) {
		CU_ASSERT_EQUAL(fds[i], -1);
		fds[i] = fcntl(p[i % 2], F_DUPFD_CLOEXEC, 3);
	}
	CU_ASSERT_EQUAL_FATAL(chan_decode(frame, len, fds, 253, 0, &lim, NULL, &d, NULL), 0);
	CU_ASSERT_EQUAL(chan_value_count(chan_msg_root(d)), 253);
	CU_ASSERT_EQUAL(chan_value_handle_index(chan_value_at(chan_msg_root(d), 252)), 252);
	CU_ASSERT_EQUAL(tv_fd(chan_value_at(chan_msg_root(d), 252)), fds[252]);
	chan_msg_free(d);
	free(frame);
	close(p[0]);
	close(p[1]);
	CU_ASSERT_EQUAL(chan_test_count_fds(), before);
}

/* Decoding costs a bounded number of allocations whatever the payload (the
 * arena's first chunk is sized from the payload and chunks double); a
 * failure of any of them is NO_MEMORY (never MALFORMED) and closes the fds. */
static void
test_decode_one_allocation(void)
{
	chan_msg *m = chan_msg_new(NULL), *d = NULL;
	chan_value *root = chan_map(m), *list = chan_list(m);
	uint8_t *frame;
	size_t len;
	struct chan_test_alloc ta;
	int p[2], r;
	char key[16];

	CU_ASSERT_FATAL(pipe2(p, O_CLOEXEC) == 0);
	for (int i = 0; i < 100; i++) { /* > CHAN_MAP_INDEX_MIN: hash index */
		snprintf(key, sizeof(key), "k%d", i);
		chan_map_put(root, key, chan_string(m, key));
	}
	for (int i = 0; i < 10000; i++)
		chan_list_append(list, chan_int(m, i));
	chan_map_put(root, "list", list);
	chan_map_put(root, "fd", chan_handle_copy(m, CHAN_KIND_FD, p[0]));
	chan_msg_set_root(m, root);
	CU_ASSERT_EQUAL_FATAL(chan_test_encode(m, &frame, &len), 0);
	chan_msg_free(m);
	close(p[0]); /* the message held its own duplicate */

	chan_test_alloc_init(&ta, 0);
	CU_ASSERT_EQUAL_FATAL(chan_decode(frame, len, &p[1], 1, 0, NULL, &ta.a, &d, NULL), 0);
	CU_ASSERT(ta.allocs >= 1 && ta.allocs <= 7);
	CU_ASSERT_STRING_EQUAL(tv_string(chan_map_get(chan_msg_root(d), "k77"), NULL), "k77");
	CU_ASSERT_EQUAL(tv_int(chan_value_at(chan_map_get(chan_msg_root(d), "list"), 9999)),
			9999);
	chan_msg_free(d);
	CU_ASSERT_EQUAL(ta.live, 0);
	CU_ASSERT_FALSE(chan_test_fd_is_open(p[1]));

	for (long k = 1; k <= 7; k++) {
		CU_ASSERT_FATAL(pipe2(p, O_CLOEXEC) == 0);
		close(p[0]);
		chan_test_alloc_init(&ta, k);
		r = chan_decode(frame, len, &p[1], 1, 0, NULL, &ta.a, &d, NULL);
		CU_ASSERT(r == CHAN_E_NO_MEMORY || (r == 0 && k > 1));
		if (r == 0)
			chan_msg_free(d);
		else
			CU_ASSERT_EQUAL(p[1], -1);
		CU_ASSERT_FALSE(chan_test_fd_is_open(p[1]));
		CU_ASSERT_EQUAL(ta.live, 0);
	}
	free(frame);
}

/* The densest payloads (one node per 4 bytes) and the biggest blobs stay
 * within the bound of chan.h: one allocation for a 1 MiB bytes value, at
 * most 7 for 200,000 nulls. */
static void
test_decode_allocation_bound(void)
{
	static uint8_t blob[1 << 20];
	struct chan_test_alloc ta;
	chan_msg *m = chan_msg_new(NULL), *d = NULL;
	chan_value *l = chan_list(m);
	uint8_t *frame;
	size_t len;

	for (int i = 0; i < 200000; i++)
		chan_list_append(l, chan_null(m));
	chan_msg_set_root(m, l);
	CU_ASSERT_EQUAL_FATAL(chan_test_encode(m, &frame, &len), 0);
	chan_msg_free(m);
	chan_test_alloc_init(&ta, 0);
	CU_ASSERT_EQUAL(chan_decode(frame, len, NULL, 0, 0, NULL, &ta.a, &d, NULL), 0);
	CU_ASSERT(ta.allocs > 1 && ta.allocs <= 7);
	CU_ASSERT_EQUAL(chan_value_count(chan_msg_root(d)), 200000);
	chan_msg_free(d);
	CU_ASSERT_EQUAL(ta.live, 0);
	free(frame);

	m = chan_msg_new(NULL);
	chan_msg_set_root(m, chan_bytes(m, blob, sizeof(blob)));
	CU_ASSERT_EQUAL_FATAL(chan_test_encode(m, &frame, &len), 0);
	chan_msg_free(m);
	chan_test_alloc_init(&ta, 0);
	CU_ASSERT_EQUAL(chan_decode(frame, len, NULL, 0, 0, NULL, &ta.a, &d, NULL), 0);
	CU_ASSERT_EQUAL(ta.allocs, 1);
	chan_msg_free(d);
	free(frame);
}

/* CHAN_DECODE_BORROW: large bytes values point into the input, small ones
 * and strings are copied. */
static void
test_decode_borrow(void)
{
	static uint8_t blob[CHAN_BORROW_MIN];
	chan_msg *m = chan_msg_new(NULL), *d = NULL;
	chan_value *l = chan_list(m);
	uint8_t *frame;
	size_t len, n;
	const uint8_t *p;

	memset(blob, 0xab, sizeof(blob));
	chan_list_append(l, chan_bytes(m, blob, sizeof(blob)));
	chan_list_append(l, chan_bytes(m, blob, sizeof(blob) - 1));
	chan_list_append(l, chan_string(m, "text"));
	chan_msg_set_root(m, l);
	CU_ASSERT_EQUAL_FATAL(chan_test_encode(m, &frame, &len), 0);
	chan_msg_free(m);
	CU_ASSERT_EQUAL_FATAL(chan_decode(frame, len, NULL, 0, CHAN_DECODE_BORROW, NULL, NULL, &d,
					  NULL),
			      0);
	p = tv_bytes(chan_value_at(chan_msg_root(d), 0), &n);
	CU_ASSERT(n == sizeof(blob) && p > frame && p + n <= frame + len); /* borrowed */
	p = tv_bytes(chan_value_at(chan_msg_root(d), 1), &n);
	CU_ASSERT(n == sizeof(blob) - 1 && (p + n <= frame || p >= frame + len)); /* copied */
	CU_ASSERT(memcmp(p, blob, n) == 0);
	p = (const uint8_t *)tv_string(chan_value_at(chan_msg_root(d), 2), &n);
	CU_ASSERT(p + n <= frame || p >= frame + len);
	chan_msg_free(d);
	free(frame);
}

/* Decoding stops at the frame: trailing bytes are the next frame's. */
static void
test_decode_reports_consumed(void)
{
	uint8_t f[64];
	size_t n = make_frame(f, sizeof(f), 0, 0, 0, -1, "18 02"), used = 0;
	chan_msg *m = NULL;

	memcpy(f + n, "CHAN", 4);
	CU_ASSERT_EQUAL_FATAL(chan_decode(f, n + 4, NULL, 0, 0, NULL, NULL, &m, &used), 0);
	CU_ASSERT_EQUAL(used, n);
	CU_ASSERT_EQUAL(tv_int(chan_msg_root(m)), 1);
	chan_msg_free(m);
}

static void
test_decode_invalid_arguments_close_fds(void)
{
	int p[2];
	chan_msg *m = NULL;
	uint8_t f[32];
	size_t n = make_frame(f, sizeof(f), 0, 1, 0, -1, "4a 02 10 01");

	CU_ASSERT_FATAL(pipe2(p, O_CLOEXEC) == 0);
	CU_ASSERT_EQUAL(chan_decode(f, n, p, 2, CHAN_DECODE_DETACHED, NULL, NULL, &m, NULL),
			CHAN_E_INVALID_ARGUMENT);
	CU_ASSERT_FALSE(chan_test_fd_is_open(p[0]) || chan_test_fd_is_open(p[1]));
	CU_ASSERT_FATAL(pipe2(p, O_CLOEXEC) == 0);
	CU_ASSERT_EQUAL(chan_decode(f, n, p, 2, 0, NULL, NULL, NULL, NULL), CHAN_E_INVALID_ARGUMENT);
	CU_ASSERT_FALSE(chan_test_fd_is_open(p[0]) || chan_test_fd_is_open(p[1]));
}

CU_TestInfo decode_tests[] = {
	{"every_error_closes_every_fd", test_decode_every_error_closes_every_fd},
	{"cases_cover_registry", test_decode_cases_cover_registry},
	{"header_errors", test_decode_header_errors},
	{"depth_limit_exact", test_decode_depth_limit_exact},
	{"million_deep_nesting", test_decode_million_deep_nesting},
	{"detached_checks_indices", test_decode_detached_checks_indices},
	{"253_handles", test_decode_253_handles},
	{"one_allocation", test_decode_one_allocation},
	{"allocation_bound", test_decode_allocation_bound},
	{"borrow", test_decode_borrow},
	{"reports_consumed", test_decode_reports_consumed},
	{"invalid_arguments_close_fds", test_decode_invalid_arguments_close_fds},
	CU_TEST_INFO_NULL,
};
