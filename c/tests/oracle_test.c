/*
 * oracle_test.c - libchan's codec against independent protobuf
 * implementations of proto/chan/v1/chan.proto:
 *  - protobuf-c's generated code (byte-exact both ways, on thousands of
 *    random trees), and
 *  - Google's protoc (--decode of libchan's bytes, --encode decoded by libchan).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "chan/v1/chan.pb-c.h"
#include "helpers.h"

/* ---- a deterministic random tree, built twice: libchan and protobuf-c ---- */

static uint64_t rng_state;

static uint64_t
rnd(void)
{
	/* xorshift64*: reproducible across runs and machines. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(2685821657736338717);
}

static const char *const words[] = {"", "a", "op", "reply_to", "héllo", "ключ", "\xf0\x9f\x98\x80",
				    "with\0nul", "$x", "0123456789abcdef0123456789abcdef"};
static const size_t word_lens[] = {0, 1, 2, 8, 6, 8, 4, 8, 2, 32};
static const size_t key_words[] = {0, 1, 2, 3, 4, 5, 6, 8, 9};

static int64_t
random_int(void)
{
	static const int64_t edges[] = {0, 1, -1, 63, 64, -64, -65, INT64_MAX, INT64_MIN, 1 << 20};

	if (rnd() % 3 == 0)
		return edges[rnd() % 10];
	return (int64_t)rnd() >> (rnd() % 64);
}

static double
random_float(void)
{
	static const double edges[] = {0.0, -0.0, 1.5, -2.25, 1e300, 5e-324, INFINITY, -INFINITY, NAN, 0.1};
	uint64_t bits = rnd();
	double d;

	if (rnd() % 2)
		return edges[rnd() % 10];
	memcpy(&d, &bits, 8);
	return isnan(d) ? NAN : d;
}

struct pair {
	chan_value *v;
	Chan__V1__Value *pb;
};

static Chan__V1__Value *
pb_value(void)
{
	Chan__V1__Value *pb = malloc(sizeof(*pb));

	CU_ASSERT_PTR_NOT_NULL_FATAL(pb);
	chan__v1__value__init(pb);
	return pb;
}

static struct pair
random_tree(chan_msg *m, int depth, uint32_t *handles)
{
	struct pair p = {0};
	unsigned type = depth > 5 ? 1 + rnd() % 6 : 1 + rnd() % 9;
	Chan__V1__Value *pb = pb_value();

	p.pb = pb;
	pb->kind_case = (Chan__V1__Value__KindCase)type;
	switch (type) {
	case CHAN_NULL:
		pb->null_value = malloc(sizeof(*pb->null_value));
		chan__v1__null__init(pb->null_value);
		p.v = chan_null(m);
		break;
	case CHAN_BOOL:
		pb->bool_value = rnd() % 2;
		p.v = chan_bool(m, pb->bool_value);
		break;
	case CHAN_INT:
		pb->int_value = random_int();
		p.v = chan_int(m, pb->int_value);
		break;
	case CHAN_FLOAT: {
		double d = random_float();

		pb->float_value = isnan(d) ? NAN : d;
		if (isnan(d)) { /* the one canonical NaN */
			uint64_t bits = UINT64_C(0x7ff8000000000000);
			memcpy(&pb->float_value, &bits, 8);
		}
		p.v = chan_float(m, d);
		break;
	}
	case CHAN_STRING:
	case CHAN_BYTES: {
		size_t w = rnd() % 10;

		pb->string_value.data = (uint8_t *)words[w];
		pb->string_value.len = word_lens[w];
		p.v = type == CHAN_STRING ? chan_string_n(m, words[w], word_lens[w])
					  : chan_bytes(m, words[w], word_lens[w]);
		break;
	}
	case CHAN_LIST: {
		size_t n = rnd() % 5;

		pb->list_value = malloc(sizeof(*pb->list_value));
		chan__v1__list__init(pb->list_value);
		pb->list_value->n_items = n;
		pb->list_value->items = calloc(n + 1, sizeof(Chan__V1__Value *));
		p.v = chan_list(m);
		for (size_t i = 0; i < n; i++) {
			struct pair c = random_tree(m, depth + 1, handles);

			pb->list_value->items[i] = c.pb;
			CU_ASSERT_EQUAL(chan_list_append(p.v, c.v), 0);
		}
		break;
	}
	case CHAN_MAP: {
		size_t n = rnd() % 5, k = 0, base = rnd() % 10;

		pb->map_value = malloc(sizeof(*pb->map_value));
		chan__v1__map__init(pb->map_value);
		pb->map_value->entries = calloc(n + 1, sizeof(Chan__V1__Entry *));
		p.v = chan_map(m);
		for (size_t i = 0; i < n; i++) {
			/* distinct keys; words[7] holds U+0000, which no key may */
			size_t w = key_words[(base + i) % 9];
			struct pair c = random_tree(m, depth + 1, handles);
			Chan__V1__Entry *e;

			CU_ASSERT_EQUAL(chan_map_put_n(p.v, words[w], word_lens[w], c.v), 0);
			e = malloc(sizeof(*e));
			chan__v1__entry__init(e);
			e->key.data = (uint8_t *)words[w];
			e->key.len = word_lens[w];
			e->value = c.pb;
			pb->map_value->entries[k++] = e;
		}
		pb->map_value->n_entries = k;
		break;
	}
	case CHAN_HANDLE: {
		int fd = rnd() % 2 ? 0 : 1; /* dup'd by chan_handle; any open fd works */
		pb->handle_value = malloc(sizeof(*pb->handle_value));
		chan__v1__handle__init(pb->handle_value);
		pb->handle_value->index = (*handles)++;
		pb->handle_value->kind = CHAN_KIND_FD;
		p.v = chan_handle_copy(m, CHAN_KIND_FD, fd);
		break;
	}
	}
	CU_ASSERT_PTR_NOT_NULL_FATAL(p.v);
	return p;
}

/* Free a tree built by random_tree (string data is static). */
static void
pb_free(Chan__V1__Value *pb)
{
	if (!pb)
		return;
	switch (pb->kind_case) {
	case CHAN__V1__VALUE__KIND_NULL_VALUE:
		free(pb->null_value);
		break;
	case CHAN__V1__VALUE__KIND_LIST_VALUE:
		for (size_t i = 0; i < pb->list_value->n_items; i++)
			pb_free(pb->list_value->items[i]);
		free(pb->list_value->items);
		free(pb->list_value);
		break;
	case CHAN__V1__VALUE__KIND_MAP_VALUE:
		for (size_t i = 0; i < pb->map_value->n_entries; i++) {
			pb_free(pb->map_value->entries[i]->value);
			free(pb->map_value->entries[i]);
		}
		free(pb->map_value->entries);
		free(pb->map_value);
		break;
	case CHAN__V1__VALUE__KIND_HANDLE_VALUE:
		free(pb->handle_value);
		break;
	default:
		break;
	}
	free(pb);
}

/* For 3,000 random trees: libchan's payload == protobuf-c's pack; protobuf-c
 * unpacks libchan's bytes and packs them back identically; libchan decodes
 * its own frame and re-encodes the same bytes. */
static void
test_oracle_random_trees_match_protobuf_c(void)
{
	rng_state = UINT64_C(0x9e3779b97f4a7c15);
	for (int iter = 0; iter < 3000; iter++) {
		chan_msg *m = chan_msg_new(NULL), *d = NULL;
		uint32_t handles = 0;
		struct pair root = random_tree(m, 1, &handles);
		uint8_t *frame = NULL, *pb_bytes, *frame2 = NULL;
		size_t len = 0, pb_len, len2 = 0;
		Chan__V1__Value *back;

		CU_ASSERT_EQUAL_FATAL(chan_msg_set_root(m, root.v), 0);
		CU_ASSERT_EQUAL_FATAL(chan_test_encode(m, &frame, &len), 0);
		pb_len = chan__v1__value__get_packed_size(root.pb);
		pb_bytes = malloc(pb_len + 1);
		CU_ASSERT_EQUAL(chan__v1__value__pack(root.pb, pb_bytes), pb_len);
		if (!chan_test_same_bytes(frame + CHAN_HEADER_SIZE, len - CHAN_HEADER_SIZE,
					  pb_bytes, pb_len)) {
			CU_FAIL("libchan and protobuf-c disagree");
			fprintf(stderr, "  tree %d\n", iter);
		}
		back = chan__v1__value__unpack(NULL, len - CHAN_HEADER_SIZE, frame + CHAN_HEADER_SIZE);
		CU_ASSERT_PTR_NOT_NULL_FATAL(back);
		CU_ASSERT_EQUAL(back->base.n_unknown_fields, 0);
		CU_ASSERT_EQUAL(chan__v1__value__pack(back, pb_bytes), pb_len);
		CU_ASSERT(memcmp(pb_bytes, frame + CHAN_HEADER_SIZE, pb_len) == 0);
		chan__v1__value__free_unpacked(back, NULL);

		CU_ASSERT_EQUAL(frame[6] | frame[7] << 8, handles);
		CU_ASSERT_EQUAL_FATAL(chan_decode(frame, len, NULL, 0, CHAN_DECODE_DETACHED, NULL,
						  NULL, &d, NULL),
				      0);
		CU_ASSERT_EQUAL_FATAL(chan_test_encode(d, &frame2, &len2), 0);
		CU_ASSERT(chan_test_same_bytes(frame2, len2, frame, len));
		free(frame);
		free(frame2);
		free(pb_bytes);
		pb_free(root.pb);
		chan_msg_free(m);
		chan_msg_free(d);
	}
}

/* ---- Google's protoc ---- */

static char tmpdir[256];

static void
make_tmpdir(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "%s/tmp-oracle-XXXXXX", CHAN_BUILD_DIR);
	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(tmpdir));
}

static int
run(const char *cmd)
{
	int st = system(cmd);

	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *
slurp(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t n = 0, cap = 0, r;

	if (!f)
		return NULL;
	do {
		if (n + 4096 > cap) {
			cap = cap * 2 + 4096;
			buf = realloc(buf, cap + 1);
		}
		r = fread(buf + n, 1, cap - n, f);
		n += r;
	} while (r > 0);
	fclose(f);
	buf[n] = '\0';
	*ret_len = n;
	return buf;
}

/* A payload made by libchan decodes with protoc to the expected structure. */
static void
test_oracle_protoc_decodes_libchan_payload(void)
{
	chan_msg *m;
	chan_value *root, *list;
	uint8_t *frame;
	size_t len, out_len;
	char path[512], cmd[2048], *text;
	FILE *f;
	static const char expect[] =
		"map_value {\n"
		"  entries {\n    key: \"op\"\n    value {\n      string_value: \"get\"\n    }\n  }\n"
		"  entries {\n    key: \"reply_to\"\n    value {\n      handle_value {\n        kind: 2\n      }\n    }\n  }\n"
		"  entries {\n    key: \"args\"\n    value {\n      list_value {\n"
		"        items {\n          int_value: -9223372036854775808\n        }\n"
		"        items {\n          float_value: -0\n        }\n"
		"        items {\n          bool_value: true\n        }\n"
		"        items {\n          null_value {\n          }\n        }\n"
		"        items {\n          bytes_value: \"\\000\\377\"\n        }\n"
		"        items {\n          handle_value {\n            index: 1\n            kind: 1\n          }\n        }\n"
		"      }\n    }\n  }\n}\n";
	int sv[2];

	make_tmpdir();
	CU_ASSERT_FATAL(pipe2(sv, O_CLOEXEC) == 0);
	m = chan_msg_new(NULL);
	root = chan_map(m);
	list = chan_list(m);
	{
		int s[2];

		CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s) == 0);
		chan_map_put(root, "op", chan_string(m, "get"));
		chan_map_put(root, "reply_to", chan_handle_copy(m, CHAN_KIND_CONN, s[0]));
		close(s[0]);
		close(s[1]);
	}
	chan_list_append(list, chan_int(m, INT64_MIN));
	chan_list_append(list, chan_float(m, -0.0));
	chan_list_append(list, chan_bool(m, 1));
	chan_list_append(list, chan_null(m));
	chan_list_append(list, chan_bytes(m, "\0\377", 2));
	chan_list_append(list, chan_handle_copy(m, CHAN_KIND_FD, sv[0]));
	chan_map_put(root, "args", list);
	CU_ASSERT_EQUAL_FATAL(chan_msg_set_root(m, root), 0);
	CU_ASSERT_EQUAL_FATAL(chan_test_encode(m, &frame, &len), 0);
	snprintf(path, sizeof(path), "%s/payload.bin", tmpdir);
	f = fopen(path, "wb");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	fwrite(frame + CHAN_HEADER_SIZE, 1, len - CHAN_HEADER_SIZE, f);
	fclose(f);
	snprintf(cmd, sizeof(cmd),
		 "protoc --proto_path=%s/proto --decode=chan.v1.Value chan/v1/chan.proto < %s > %s.txt",
		 CHAN_SOURCE_DIR, path, path);
	CU_ASSERT_EQUAL(run(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s.txt", path);
	text = slurp(cmd, &out_len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(text);
	CU_ASSERT_STRING_EQUAL(text, expect);
	if (strcmp(text, expect))
		fprintf(stderr, "\nprotoc printed:\n%s", text);
	free(text);
	free(frame);
	chan_msg_free(m);
	close(sv[0]);
	close(sv[1]);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	run(cmd);
}

/* A payload made by protoc --encode from text format decodes in libchan. */
static void
test_oracle_libchan_decodes_protoc_payload(void)
{
	static const char textproto[] =
		"map_value {\n"
		"  entries { key: \"n\" value { int_value: 9223372036854775807 } }\n"
		"  entries { key: \"f\" value { float_value: 0.1 } }\n"
		"  entries { key: \"s\" value { string_value: \"h\\303\\251llo\" } }\n"
		"  entries { key: \"\" value { list_value { items { bool_value: false } items { null_value {} } } } }\n"
		"  entries { key: \"h\" value { handle_value { kind: 1 } } }\n"
		"}\n";
	char path[512], cmd[2048];
	size_t plen;
	uint8_t *payload, *frame;
	chan_msg *d = NULL;
	chan_value *root, *l;
	FILE *f;
	int fds[2];

	make_tmpdir();
	snprintf(path, sizeof(path), "%s/in.txt", tmpdir);
	f = fopen(path, "w");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	fputs(textproto, f);
	fclose(f);
	snprintf(cmd, sizeof(cmd),
		 "protoc --proto_path=%s/proto --encode=chan.v1.Value chan/v1/chan.proto < %s > %s.bin",
		 CHAN_SOURCE_DIR, path, path);
	CU_ASSERT_EQUAL_FATAL(run(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s.bin", path);
	payload = (uint8_t *)slurp(cmd, &plen);
	CU_ASSERT_PTR_NOT_NULL_FATAL(payload);
	frame = calloc(1, CHAN_HEADER_SIZE + plen);
	memcpy(frame, "CHAN\x01\x00\x01\x00\x00\x00\x00\x00", 12);
	frame[12] = (uint8_t)plen;
	frame[13] = (uint8_t)(plen >> 8);
	memcpy(frame + CHAN_HEADER_SIZE, payload, plen);
	CU_ASSERT_FATAL(pipe2(fds, O_CLOEXEC) == 0);
	close(fds[1]);
	CU_ASSERT_EQUAL_FATAL(chan_decode(frame, CHAN_HEADER_SIZE + plen, fds, 1, 0, NULL, NULL,
					  &d, NULL),
			      0);
	root = chan_msg_root(d);
	CU_ASSERT_EQUAL(chan_value_count(root), 5);
	CU_ASSERT_EQUAL(tv_int(chan_map_get(root, "n")), INT64_MAX);
	CU_ASSERT_EQUAL(tv_float(chan_map_get(root, "f")), 0.1);
	CU_ASSERT_STRING_EQUAL(tv_string(chan_map_get(root, "s"), NULL), "h\xc3\xa9llo");
	l = chan_map_get(root, "");
	CU_ASSERT_EQUAL(chan_value_type(chan_value_at(l, 0)), CHAN_BOOL);
	CU_ASSERT_EQUAL(chan_value_type(chan_value_at(l, 1)), CHAN_NULL);
	CU_ASSERT_EQUAL(tv_fd(chan_map_get(root, "h")), fds[0]);
	chan_msg_free(d);
	CU_ASSERT_FALSE(chan_test_fd_is_open(fds[0]));
	free(payload);
	free(frame);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	run(cmd);
}

CU_TestInfo oracle_tests[] = {
	{"random_trees_match_protobuf_c", test_oracle_random_trees_match_protobuf_c},
	{"protoc_decodes_libchan_payload", test_oracle_protoc_decodes_libchan_payload},
	{"libchan_decodes_protoc_payload", test_oracle_libchan_decodes_protoc_payload},
	CU_TEST_INFO_NULL,
};
