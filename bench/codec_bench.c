/*
 * codec_bench.c - chan's codec against protobuf-c (typed) and msgpack-c.
 *
 * Cases (the same data in every codec; bench/py_codec.py builds it for
 * pickle, bench/typed.proto is the typed schema):
 *   repr   a map of 11 entries: 2 short strings, 2 ints, a float, a bool,
 *          null, a list of 20 small ints, a map of 4 strings, 256 bytes,
 *          one handle
 *   4k     a list of 44 records {id, name, score, tags[3]} (~4 KiB in chan)
 *   1m     one bytes value of 1 MiB
 *   list   a list of 100,000 ints (0..99999)
 *   depth  maps nested to chan's maximum depth 32 around one int
 *
 * Operations per case (interleaved, see bench.h):
 *   chan    encode          chan_encode of a prebuilt tree into a buffer
 *   chan    build+encode    chan_msg_new, build the tree from C data,
 *                           chan_encode, chan_msg_free (msgpack's packing
 *                           works from C data too, so this is its peer)
 *   chan    decode          chan_decode (DETACHED: handle indices checked,
 *                           no descriptors) + chan_msg_free
 *   chan    decode+pool     the same with an allocator hook that reuses
 *                           freed blocks (see pool_alloc)
 *   chan    decode+borrow   the same with CHAN_DECODE_BORROW: bytes values
 *                           of CHAN_BORROW_MIN bytes or more point into the
 *                           input (as msgpack-c's do) instead of being copied
 *   pbc     encode/decode   protobuf_c_message_pack of a prebuilt typed
 *                           struct; unpack + free_unpacked
 *   msgpack encode/decode   sbuffer cleared, msgpack_pack_* from C data;
 *                           msgpack_unpack_next + msgpack_unpacked_destroy
 * mallocs per operation are counted by interposing malloc (all three
 * libraries) and, for chan and protobuf-c, cross-checked with their
 * allocator hooks.
 *
 * --callgrind: run each operation a fixed number of times between
 * CALLGRIND_ZERO_STATS and CALLGRIND_DUMP_STATS_AT, for
 * `valgrind --tool=callgrind` (bench/run.py reads the dumps).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <msgpack.h>
#include <protobuf-c/protobuf-c.h>
#include <valgrind/callgrind.h>

#include "bench.h"
#include "chan.h"
#include "typed.pb-c.h"

/* ---- counting mallocs ---- */

static uint64_t n_mallocs;

#if !defined(__SANITIZE_ADDRESS__)
#define HAVE_MALLOC_COUNT 1
/* Interpose malloc for the whole process (the executable's definitions win
 * over libc's for every shared object), counting allocations. */
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void __libc_free(void *p);

void *
malloc(size_t size)
{
	n_mallocs++;
	return __libc_malloc(size);
}

void *
calloc(size_t n, size_t size)
{
	n_mallocs++;
	return __libc_calloc(n, size);
}

void *
realloc(void *p, size_t size)
{
	n_mallocs++;
	return __libc_realloc(p, size);
}

void
free(void *p)
{
	__libc_free(p);
}
#else
#define HAVE_MALLOC_COUNT 0
#endif

/* The allocator hooks: count, then malloc. */
static uint64_t n_hook_allocs;

static void *
hook_alloc(void *ctx, size_t size)
{
	(void)ctx;
	n_hook_allocs++;
	return malloc(size);
}

static void
hook_free(void *ctx, void *p)
{
	(void)ctx;
	free(p);
}

static const struct chan_allocator chan_counting = {hook_alloc, hook_free, NULL};

/*
 * A pool allocator for the "decode+pool" operation: freed blocks are kept
 * (up to POOL_SLOTS) and handed out again to requests that fit, so a decode
 * loop touches the same memory every time.  It separates what the decoder
 * computes from what fresh memory costs (glibc mmaps big blocks and unmaps
 * them on free: every page faults in again; expensive on a VM).  The
 * allocator hook of chan.h is how an application gets the same.
 */
#define POOL_SLOTS 8
struct pool_block {
	size_t cap;
	size_t pad_; /* keep the payload 16-aligned */
};
static struct pool_block *pool_free[POOL_SLOTS];

static void *
pool_alloc(void *ctx, size_t size)
{
	struct pool_block *b;

	(void)ctx;
	for (int i = 0; i < POOL_SLOTS; i++) {
		if (pool_free[i] && pool_free[i]->cap >= size) {
			b = pool_free[i];
			pool_free[i] = NULL;
			return b + 1;
		}
	}
	b = malloc(sizeof(*b) + size);
	if (!b)
		return NULL;
	b->cap = size;
	return b + 1;
}

static void
pool_release(void *ctx, void *p)
{
	struct pool_block *b = (struct pool_block *)p - 1;

	(void)ctx;
	for (int i = 0; i < POOL_SLOTS; i++) {
		if (!pool_free[i]) {
			pool_free[i] = b;
			return;
		}
	}
	free(b);
}

static void
pool_drain(void)
{
	for (int i = 0; i < POOL_SLOTS; i++) {
		free(pool_free[i]);
		pool_free[i] = NULL;
	}
}

static const struct chan_allocator chan_pool = {pool_alloc, pool_release, NULL};
static ProtobufCAllocator pbc_counting = {hook_alloc, hook_free, NULL};

/* ---- the data ---- */

#define N_SAMPLES 20
#define BLOB_LEN 256
#define N_RECORDS 44
#define BIG_LEN (1024u * 1024u)
#define N_INTS 100000
#define N_NEST 31 /* maps; the int inside is at depth 32 */

static const char *const META_KEYS[4] = {"host", "zone", "owner", "build"};
static const char *const META_VALS[4] = {"node-a", "eu-west-1", "ops", "r1234"};
static const char *const TAGS[5] = {"red", "green", "blue", "cyan", "magenta"};
static int64_t samples[N_SAMPLES];
static uint8_t blob[BLOB_LEN];
static uint8_t *big;
static int64_t *ints;
static char record_names[N_RECORDS][16];
static int handle_fd = -1;

static void
data_init(void)
{
	for (int i = 0; i < N_SAMPLES; i++)
		samples[i] = i * 3 - 10;
	for (int i = 0; i < BLOB_LEN; i++)
		blob[i] = (uint8_t)(i * 31 + 7);
	big = malloc(BIG_LEN);
	ints = malloc(N_INTS * sizeof(*ints));
	BENCH_CHECK(big && ints);
	for (uint32_t i = 0; i < BIG_LEN; i++)
		big[i] = (uint8_t)(i * 131 + 17);
	for (int i = 0; i < N_INTS; i++)
		ints[i] = i;
	for (int i = 0; i < N_RECORDS; i++)
		snprintf(record_names[i], sizeof(record_names[i]), "item-%04d", i);
	handle_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	BENCH_CHECK(handle_fd >= 0);
}

static int64_t
record_id(int i)
{
	return 1000 + (int64_t)i * 37;
}

static double
record_score(int i)
{
	return i * 0.5 + 0.25;
}

/* ---- chan: build the trees from C data ---- */

static void
put(chan_value *map, const char *key, chan_value *v)
{
	(void)chan_map_put(map, key, v); /* errors poison the message */
}

static void
chan_build_repr(chan_msg *m)
{
	chan_value *r = chan_map(m), *l = chan_list(m), *meta = chan_map(m);

	put(r, "name", chan_string(m, "sensor-17"));
	put(r, "kind", chan_string(m, "reading"));
	put(r, "id", chan_int(m, 1234567));
	put(r, "seq", chan_int(m, -42));
	put(r, "ratio", chan_float(m, 0.8125));
	put(r, "ok", chan_bool(m, 1));
	put(r, "note", chan_null(m));
	for (int i = 0; i < N_SAMPLES; i++)
		(void)chan_list_append(l, chan_int(m, samples[i]));
	put(r, "samples", l);
	for (int i = 0; i < 4; i++)
		put(meta, META_KEYS[i], chan_string(m, META_VALS[i]));
	put(r, "meta", meta);
	put(r, "blob", chan_bytes(m, blob, BLOB_LEN));
	put(r, "fd", chan_handle_copy(m, CHAN_KIND_FD, handle_fd));
	(void)chan_msg_set_root(m, r);
}

static void
chan_build_4k(chan_msg *m)
{
	chan_value *l = chan_list(m);

	for (int i = 0; i < N_RECORDS; i++) {
		chan_value *rec = chan_map(m), *tags = chan_list(m);

		put(rec, "id", chan_int(m, record_id(i)));
		put(rec, "name", chan_string(m, record_names[i]));
		put(rec, "score", chan_float(m, record_score(i)));
		for (int t = 0; t < 3; t++)
			(void)chan_list_append(tags, chan_string(m, TAGS[(i + t) % 5]));
		put(rec, "tags", tags);
		(void)chan_list_append(l, rec);
	}
	(void)chan_msg_set_root(m, l);
}

static void
chan_build_1m(chan_msg *m)
{
	(void)chan_msg_set_root(m, chan_bytes(m, big, BIG_LEN));
}

static void
chan_build_list(chan_msg *m)
{
	chan_value *l = chan_list(m);

	for (int i = 0; i < N_INTS; i++)
		(void)chan_list_append(l, chan_int(m, ints[i]));
	(void)chan_msg_set_root(m, l);
}

static void
chan_build_depth(chan_msg *m)
{
	chan_value *v = chan_int(m, 42);

	for (int i = 0; i < N_NEST; i++) {
		chan_value *map = chan_map(m);

		put(map, "k", v);
		v = map;
	}
	(void)chan_msg_set_root(m, v);
}

/* ---- chan: the same values through the writer (no tree) ---- */

static void
chan_write_repr(chan_writer *w)
{
	chan_writer_map_begin(w);
	chan_writer_key(w, "name");
	chan_writer_string(w, "sensor-17");
	chan_writer_key(w, "kind");
	chan_writer_string(w, "reading");
	chan_writer_key(w, "id");
	chan_writer_int(w, 1234567);
	chan_writer_key(w, "seq");
	chan_writer_int(w, -42);
	chan_writer_key(w, "ratio");
	chan_writer_float(w, 0.8125);
	chan_writer_key(w, "ok");
	chan_writer_bool(w, true);
	chan_writer_key(w, "note");
	chan_writer_null(w);
	chan_writer_key(w, "samples");
	chan_writer_list_begin(w);
	for (int i = 0; i < N_SAMPLES; i++)
		chan_writer_int(w, samples[i]);
	chan_writer_list_end(w);
	chan_writer_key(w, "meta");
	chan_writer_map_begin(w);
	for (int i = 0; i < 4; i++) {
		chan_writer_key(w, META_KEYS[i]);
		chan_writer_string(w, META_VALS[i]);
	}
	chan_writer_map_end(w);
	chan_writer_key(w, "blob");
	chan_writer_bytes(w, blob, BLOB_LEN);
	chan_writer_key(w, "fd");
	chan_writer_handle_borrow(w, CHAN_KIND_FD, handle_fd);
	chan_writer_map_end(w);
}

static void
chan_write_4k(chan_writer *w)
{
	chan_writer_list_begin(w);
	for (int i = 0; i < N_RECORDS; i++) {
		chan_writer_map_begin(w);
		chan_writer_key(w, "id");
		chan_writer_int(w, record_id(i));
		chan_writer_key(w, "name");
		chan_writer_string(w, record_names[i]);
		chan_writer_key(w, "score");
		chan_writer_float(w, record_score(i));
		chan_writer_key(w, "tags");
		chan_writer_list_begin(w);
		for (int t = 0; t < 3; t++)
			chan_writer_string(w, TAGS[(i + t) % 5]);
		chan_writer_list_end(w);
		chan_writer_map_end(w);
	}
	chan_writer_list_end(w);
}

static void
chan_write_1m(chan_writer *w)
{
	/* copied, as msgpack's pack copies it (chan_writer_bytes_borrow would
	 * copy nothing: the frame would refer to `big`) */
	chan_writer_bytes(w, big, BIG_LEN);
}

static void
chan_write_list(chan_writer *w)
{
	chan_writer_list_begin(w);
	for (int i = 0; i < N_INTS; i++)
		chan_writer_int(w, ints[i]);
	chan_writer_list_end(w);
}

static void
chan_write_depth(chan_writer *w)
{
	for (int i = 0; i < N_NEST; i++) {
		chan_writer_map_begin(w);
		chan_writer_key(w, "k");
	}
	chan_writer_int(w, 42);
	for (int i = 0; i < N_NEST; i++)
		chan_writer_map_end(w);
}

/* ---- protobuf-c: the typed equivalents, built once ---- */

static Chanbench__Null pb_null = CHANBENCH__NULL__INIT;
static Chanbench__Meta pb_meta = CHANBENCH__META__INIT;
static Chanbench__Handle pb_handle = CHANBENCH__HANDLE__INIT;
static Chanbench__Repr pb_repr = CHANBENCH__REPR__INIT;
static Chanbench__Record pb_recs[N_RECORDS];
static Chanbench__Record *pb_rec_ptrs[N_RECORDS];
static char *pb_tags[N_RECORDS][3];
static Chanbench__Records pb_records = CHANBENCH__RECORDS__INIT;
static Chanbench__Blob pb_blob = CHANBENCH__BLOB__INIT;
static Chanbench__Ints pb_ints = CHANBENCH__INTS__INIT;
static Chanbench__Nest pb_nest[N_NEST];

static void
pb_init(void)
{
	pb_meta.host = (char *)META_VALS[0];
	pb_meta.zone = (char *)META_VALS[1];
	pb_meta.owner = (char *)META_VALS[2];
	pb_meta.build = (char *)META_VALS[3];
	pb_handle.index = 0;
	pb_handle.kind = CHAN_KIND_FD;
	pb_repr.name = "sensor-17";
	pb_repr.kind = "reading";
	pb_repr.id = 1234567;
	pb_repr.seq = -42;
	pb_repr.ratio = 0.8125;
	pb_repr.ok = 1;
	pb_repr.note = &pb_null;
	pb_repr.n_samples = N_SAMPLES;
	pb_repr.samples = samples;
	pb_repr.meta = &pb_meta;
	pb_repr.blob.len = BLOB_LEN;
	pb_repr.blob.data = blob;
	pb_repr.fd = &pb_handle;

	for (int i = 0; i < N_RECORDS; i++) {
		Chanbench__Record init = CHANBENCH__RECORD__INIT;

		pb_recs[i] = init;
		pb_recs[i].id = record_id(i);
		pb_recs[i].name = record_names[i];
		pb_recs[i].score = record_score(i);
		for (int t = 0; t < 3; t++)
			pb_tags[i][t] = (char *)TAGS[(i + t) % 5];
		pb_recs[i].n_tags = 3;
		pb_recs[i].tags = pb_tags[i];
		pb_rec_ptrs[i] = &pb_recs[i];
	}
	pb_records.n_records = N_RECORDS;
	pb_records.records = pb_rec_ptrs;

	pb_blob.data.len = BIG_LEN;
	pb_blob.data.data = big;

	pb_ints.n_values = N_INTS;
	pb_ints.values = ints;

	for (int i = 0; i < N_NEST; i++) {
		Chanbench__Nest init = CHANBENCH__NEST__INIT;

		pb_nest[i] = init;
		if (i + 1 < N_NEST)
			pb_nest[i].child = &pb_nest[i + 1];
		else
			pb_nest[i].leaf = 42;
	}
}

/* ---- msgpack: pack from C data ---- */

static void
mp_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);

	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void
mp_pack_repr(msgpack_packer *pk)
{
	static const uint8_t handle_ext[2] = {0, CHAN_KIND_FD}; /* index, kind */

	msgpack_pack_map(pk, 11);
	mp_str(pk, "name");
	mp_str(pk, "sensor-17");
	mp_str(pk, "kind");
	mp_str(pk, "reading");
	mp_str(pk, "id");
	msgpack_pack_int64(pk, 1234567);
	mp_str(pk, "seq");
	msgpack_pack_int64(pk, -42);
	mp_str(pk, "ratio");
	msgpack_pack_double(pk, 0.8125);
	mp_str(pk, "ok");
	msgpack_pack_true(pk);
	mp_str(pk, "note");
	msgpack_pack_nil(pk);
	mp_str(pk, "samples");
	msgpack_pack_array(pk, N_SAMPLES);
	for (int i = 0; i < N_SAMPLES; i++)
		msgpack_pack_int64(pk, samples[i]);
	mp_str(pk, "meta");
	msgpack_pack_map(pk, 4);
	for (int i = 0; i < 4; i++) {
		mp_str(pk, META_KEYS[i]);
		mp_str(pk, META_VALS[i]);
	}
	mp_str(pk, "blob");
	msgpack_pack_bin(pk, BLOB_LEN);
	msgpack_pack_bin_body(pk, blob, BLOB_LEN);
	mp_str(pk, "fd");
	msgpack_pack_ext(pk, 2, 1); /* a handle: ext type 1 */
	msgpack_pack_ext_body(pk, handle_ext, 2);
}

static void
mp_pack_4k(msgpack_packer *pk)
{
	msgpack_pack_array(pk, N_RECORDS);
	for (int i = 0; i < N_RECORDS; i++) {
		msgpack_pack_map(pk, 4);
		mp_str(pk, "id");
		msgpack_pack_int64(pk, record_id(i));
		mp_str(pk, "name");
		mp_str(pk, record_names[i]);
		mp_str(pk, "score");
		msgpack_pack_double(pk, record_score(i));
		mp_str(pk, "tags");
		msgpack_pack_array(pk, 3);
		for (int t = 0; t < 3; t++)
			mp_str(pk, TAGS[(i + t) % 5]);
	}
}

static void
mp_pack_1m(msgpack_packer *pk)
{
	msgpack_pack_bin(pk, BIG_LEN);
	msgpack_pack_bin_body(pk, big, BIG_LEN);
}

static void
mp_pack_list(msgpack_packer *pk)
{
	msgpack_pack_array(pk, N_INTS);
	for (int i = 0; i < N_INTS; i++)
		msgpack_pack_int64(pk, ints[i]);
}

static void
mp_pack_depth(msgpack_packer *pk)
{
	for (int i = 0; i < N_NEST; i++) {
		msgpack_pack_map(pk, 1);
		mp_str(pk, "k");
	}
	msgpack_pack_int64(pk, 42);
}

/* ---- cases ---- */

struct codec_case {
	const char *name;
	void (*chan_build)(chan_msg *m);
	void (*chan_write)(chan_writer *w);
	ProtobufCMessage *pb;
	void (*mp_pack)(msgpack_packer *pk);
	uint32_t cg_n; /* iterations under callgrind */

	chan_msg *msg; /* prebuilt */
	uint8_t *chan_frame;
	size_t chan_len;
	uint8_t *pb_bytes;
	size_t pb_len;
	msgpack_sbuffer mp_sb; /* the reference encoding */
	msgpack_sbuffer mp_out; /* scratch for the encode op */
	uint8_t *out;           /* scratch for chan and protobuf-c encodes */
	size_t out_cap;
};

static struct codec_case cases[] = {
	{.name = "repr", .chan_build = chan_build_repr, .chan_write = chan_write_repr, .pb = &pb_repr.base, .mp_pack = mp_pack_repr, .cg_n = 200},
	{.name = "4k", .chan_build = chan_build_4k, .chan_write = chan_write_4k, .pb = &pb_records.base, .mp_pack = mp_pack_4k, .cg_n = 50},
	{.name = "1m", .chan_build = chan_build_1m, .chan_write = chan_write_1m, .pb = &pb_blob.base, .mp_pack = mp_pack_1m, .cg_n = 3},
	{.name = "list", .chan_build = chan_build_list, .chan_write = chan_write_list, .pb = &pb_ints.base, .mp_pack = mp_pack_list, .cg_n = 2},
	{.name = "depth", .chan_build = chan_build_depth, .chan_write = chan_write_depth, .pb = &pb_nest[0].base, .mp_pack = mp_pack_depth, .cg_n = 200},
};

static volatile size_t sink;

static void
op_chan_encode(struct codec_case *c)
{
	size_t len = 0;
	int r = chan_encode(c->msg, c->out, c->out_cap, &len);

	sink += len + (size_t)r;
}

static void
op_chan_build_encode(struct codec_case *c)
{
	chan_msg *m = chan_msg_new(NULL);
	size_t len = 0;
	int r;

	c->chan_build(m);
	r = chan_encode(m, c->out, c->out_cap, &len);
	chan_msg_free(m);
	sink += len + (size_t)r;
}

/* The writer: reset, describe the value, the frame is complete in the
 * writer (its size checked; chan_conn_send_writer sends it from there). */
static chan_writer *writer;

static void
op_chan_write(struct codec_case *c)
{
	size_t len = 0, nfds = 0;
	int r;

	chan_writer_reset(writer);
	c->chan_write(writer);
	r = chan_writer_frame(writer, NULL, 0, NULL, 0, &len, &nfds);
	sink += len + (size_t)(r == CHAN_E_BUFFER_TOO_SMALL);
}

static void
op_chan_decode(struct codec_case *c)
{
	chan_msg *m = NULL;
	int r = chan_decode(c->chan_frame, c->chan_len, NULL, 0, CHAN_DECODE_DETACHED,
			    NULL, NULL, &m, NULL);

	sink += (size_t)r;
	chan_msg_free(m);
}

static void
op_chan_decode_pool(struct codec_case *c)
{
	chan_msg *m = NULL;
	int r = chan_decode(c->chan_frame, c->chan_len, NULL, 0, CHAN_DECODE_DETACHED,
			    NULL, &chan_pool, &m, NULL);

	sink += (size_t)r;
	chan_msg_free(m);
}

static void
op_chan_decode_borrow(struct codec_case *c)
{
	chan_msg *m = NULL;
	int r = chan_decode(c->chan_frame, c->chan_len, NULL, 0,
			    CHAN_DECODE_DETACHED | CHAN_DECODE_BORROW, NULL, NULL, &m, NULL);

	sink += (size_t)r;
	chan_msg_free(m);
}

static void
op_pb_encode(struct codec_case *c)
{
	sink += protobuf_c_message_pack(c->pb, c->out);
}

static void
op_pb_decode(struct codec_case *c)
{
	ProtobufCMessage *m =
		protobuf_c_message_unpack(c->pb->descriptor, NULL, c->pb_len, c->pb_bytes);

	sink += (size_t)(m != NULL);
	protobuf_c_message_free_unpacked(m, NULL);
}

static void
op_mp_encode(struct codec_case *c)
{
	msgpack_packer pk;

	msgpack_sbuffer_clear(&c->mp_out);
	msgpack_packer_init(&pk, &c->mp_out, msgpack_sbuffer_write);
	c->mp_pack(&pk);
	sink += c->mp_out.size;
}

static void
op_mp_decode(struct codec_case *c)
{
	msgpack_unpacked u;
	size_t off = 0;
	msgpack_unpack_return r;

	msgpack_unpacked_init(&u);
	r = msgpack_unpack_next(&u, c->mp_sb.data, c->mp_sb.size, &off);
	sink += (size_t)r;
	msgpack_unpacked_destroy(&u);
}

struct op {
	const char *impl, *op;
	void (*fn)(struct codec_case *c);
};

static const struct op ops[] = {
	{"chan", "encode", op_chan_encode},
	{"chan", "build+encode", op_chan_build_encode},
	{"chan", "write", op_chan_write},
	{"chan", "decode", op_chan_decode},
	{"chan", "decode+pool", op_chan_decode_pool},
	{"chan", "decode+borrow", op_chan_decode_borrow},
	{"pbc", "encode", op_pb_encode},
	{"pbc", "decode", op_pb_decode},
	{"msgpack", "encode", op_mp_encode},
	{"msgpack", "decode", op_mp_decode},
};
#define N_OPS (sizeof(ops) / sizeof(ops[0]))

static size_t
op_bytes(const struct codec_case *c, size_t i)
{
	if (!strcmp(ops[i].impl, "chan"))
		return c->chan_len;
	if (!strcmp(ops[i].impl, "pbc"))
		return c->pb_len;
	return c->mp_sb.size;
}

/* ---- preparing and checking a case ---- */

static void
case_prepare(struct codec_case *c)
{
	msgpack_packer pk;
	size_t n;
	int r;

	c->msg = chan_msg_new(NULL);
	BENCH_CHECK(c->msg);
	c->chan_build(c->msg);
	BENCH_CHECK(chan_msg_error(c->msg) == 0);
	BENCH_CHECK(chan_encoded_size(c->msg, &c->chan_len) == 0);
	c->chan_frame = malloc(c->chan_len);
	BENCH_CHECK(c->chan_frame);
	r = chan_encode(c->msg, c->chan_frame, c->chan_len, &n);
	BENCH_CHECK(r == 0 && n == c->chan_len);
	/* the writer makes the very same frame, with the same handle table */
	{
		uint8_t *wf = malloc(c->chan_len);
		int wfds[4], tfds[4];
		size_t wl = 0, wn = 0, tn = 0;

		if (!writer)
			writer = chan_writer_new(NULL);
		BENCH_CHECK(writer && wf);
		chan_writer_reset(writer);
		c->chan_write(writer);
		BENCH_CHECK(chan_writer_frame(writer, wf, c->chan_len, wfds, 4, &wl, &wn) == 0);
		BENCH_CHECK(wl == c->chan_len && memcmp(wf, c->chan_frame, wl) == 0);
		BENCH_CHECK(chan_msg_borrow_handles(c->msg, tfds, 4, &tn) == 0 && tn == wn);
		free(wf);
	}

	c->pb_len = protobuf_c_message_get_packed_size(c->pb);
	c->pb_bytes = malloc(c->pb_len);
	BENCH_CHECK(c->pb_bytes);
	BENCH_CHECK(protobuf_c_message_pack(c->pb, c->pb_bytes) == c->pb_len);

	msgpack_sbuffer_init(&c->mp_sb);
	msgpack_packer_init(&pk, &c->mp_sb, msgpack_sbuffer_write);
	c->mp_pack(&pk);
	msgpack_sbuffer_init(&c->mp_out);

	c->out_cap = c->chan_len > c->pb_len ? c->chan_len : c->pb_len;
	c->out = malloc(c->out_cap);
	BENCH_CHECK(c->out);
}

/* The decoders give back what was encoded: a benchmark of a broken codec
 * measures nothing. */
static void
case_check(struct codec_case *c)
{
	chan_msg *m = NULL;
	chan_value *root;
	size_t n = 0, len = 0;
	ProtobufCMessage *pm;
	msgpack_unpacked u;
	size_t off = 0;
	uint8_t *again = malloc(c->chan_len > c->pb_len ? c->chan_len : c->pb_len);

	BENCH_CHECK(again);
	/* chan: decode, re-encode, same bytes; a few values by hand. */
	BENCH_CHECK(chan_decode(c->chan_frame, c->chan_len, NULL, 0, CHAN_DECODE_DETACHED,
				NULL, NULL, &m, &n) == 0);
	BENCH_CHECK(n == c->chan_len);
	BENCH_CHECK(chan_encode(m, again, c->chan_len, &len) == 0 && len == c->chan_len);
	BENCH_CHECK(memcmp(again, c->chan_frame, len) == 0);
	root = chan_msg_root(m);
	if (!strcmp(c->name, "repr")) {
		size_t blen = 0;
		const void *b = NULL;

		BENCH_CHECK(chan_map_get_bytes(root, "blob", &b, &blen) == 0);
		BENCH_CHECK(chan_value_count(root) == 11);
		BENCH_CHECK(blen == BLOB_LEN && !memcmp(b, blob, BLOB_LEN));
		BENCH_CHECK(chan_value_kind(chan_map_get(root, "fd")) == CHAN_KIND_FD);
		BENCH_CHECK(chan_value_count(chan_map_get(root, "samples")) == N_SAMPLES);
	} else if (!strcmp(c->name, "list")) {
		BENCH_CHECK(chan_value_count(root) == N_INTS);
		int64_t last = -1;

		BENCH_CHECK(chan_value_get_int(chan_value_at(root, N_INTS - 1), &last) == 0);
		BENCH_CHECK(last == N_INTS - 1);
	} else if (!strcmp(c->name, "1m")) {
		size_t blen = 0;
		const void *b = NULL;

		BENCH_CHECK(chan_value_get_bytes(root, &b, &blen) == 0);
		BENCH_CHECK(blen == BIG_LEN && !memcmp(b, big, BIG_LEN));
	} else if (!strcmp(c->name, "4k")) {
		BENCH_CHECK(chan_value_count(root) == N_RECORDS);
	} else if (!strcmp(c->name, "depth")) {
		chan_value *v = root;
		int64_t x = 0;

		for (int i = 0; i < N_NEST; i++)
			v = chan_map_get(v, "k");
		BENCH_CHECK(chan_value_get_int(v, &x) == 0 && x == 42);
	}
	chan_msg_free(m);
	m = NULL;
	BENCH_CHECK(chan_decode(c->chan_frame, c->chan_len, NULL, 0,
				CHAN_DECODE_DETACHED | CHAN_DECODE_BORROW, NULL, NULL, &m, NULL) == 0);
	BENCH_CHECK(chan_encode(m, again, c->chan_len, &len) == 0 && len == c->chan_len);
	BENCH_CHECK(memcmp(again, c->chan_frame, len) == 0);
	chan_msg_free(m);

	/* protobuf-c: unpack and repack to the same bytes. */
	pm = protobuf_c_message_unpack(c->pb->descriptor, NULL, c->pb_len, c->pb_bytes);
	BENCH_CHECK(pm);
	BENCH_CHECK(protobuf_c_message_pack(pm, again) == c->pb_len);
	BENCH_CHECK(memcmp(again, c->pb_bytes, c->pb_len) == 0);
	protobuf_c_message_free_unpacked(pm, NULL);

	/* msgpack: one whole object. */
	msgpack_unpacked_init(&u);
	BENCH_CHECK(msgpack_unpack_next(&u, c->mp_sb.data, c->mp_sb.size, &off) ==
		    MSGPACK_UNPACK_SUCCESS);
	BENCH_CHECK(off == c->mp_sb.size);
	msgpack_unpacked_destroy(&u);
	free(again);
}

/* Allocations per operation: interposed malloc (when available), and the
 * allocator hooks of chan and protobuf-c, which must agree with it. */
static double
count_mallocs(struct codec_case *c, size_t i)
{
	const int n = 4;
	uint64_t before = n_mallocs, hook_before = n_hook_allocs;

	for (int k = 0; k < n; k++) {
		if (ops[i].fn == op_chan_decode) {
			chan_msg *m = NULL;

			BENCH_CHECK(chan_decode(c->chan_frame, c->chan_len, NULL, 0,
						CHAN_DECODE_DETACHED, NULL, &chan_counting,
						&m, NULL) == 0);
			chan_msg_free(m);
		} else if (ops[i].fn == op_pb_decode) {
			ProtobufCMessage *m = protobuf_c_message_unpack(
				c->pb->descriptor, &pbc_counting, c->pb_len, c->pb_bytes);

			BENCH_CHECK(m);
			protobuf_c_message_free_unpacked(m, &pbc_counting);
		} else {
			ops[i].fn(c);
		}
	}
	if (ops[i].fn == op_chan_decode || ops[i].fn == op_pb_decode) {
		uint64_t hooked = n_hook_allocs - hook_before;

		/* The hook's calls are counted by the interposer too. */
		if (HAVE_MALLOC_COUNT)
			BENCH_CHECK(n_mallocs - before == hooked);
		return (double)hooked / n;
	}
	return HAVE_MALLOC_COUNT ? (double)(n_mallocs - before) / n : -1;
}

struct run_ctx {
	struct codec_case *c;
	size_t op;
};

static void
run_n(void *ctx, uint64_t n)
{
	struct run_ctx *rc = ctx;
	void (*fn)(struct codec_case *) = ops[rc->op].fn;

	for (uint64_t k = 0; k < n; k++)
		fn(rc->c);
}

static void
case_time(struct codec_case *c)
{
	uint64_t iters[N_OPS];
	double *samples_ns[N_OPS];
	int reps = bench_opt.reps;

	for (size_t i = 0; i < N_OPS; i++) {
		struct run_ctx rc = {c, i};

		iters[i] = bench_calibrate(run_n, &rc, 3, 10000000);
		samples_ns[i] = calloc((size_t)reps, sizeof(double));
		BENCH_CHECK(samples_ns[i]);
	}
	for (int r = 0; r < reps; r++) {
		for (size_t i = 0; i < N_OPS; i++) {
			struct run_ctx rc = {c, i};
			uint64_t t0 = bench_now_ns();

			run_n(&rc, iters[i]);
			samples_ns[i][r] = (double)(bench_now_ns() - t0) / (double)iters[i];
		}
	}
	for (size_t i = 0; i < N_OPS; i++) {
		bench_emit("codec", c->name, ops[i].impl, ops[i].op, "-", samples_ns[i], reps,
			   (double)op_bytes(c, i), count_mallocs(c, i), iters[i]);
		free(samples_ns[i]);
	}
}

static void
case_callgrind(struct codec_case *c)
{
	for (size_t i = 0; i < N_OPS; i++) {
		char name[128];
		uint32_t n = bench_opt.smoke ? 1 : c->cg_n;

		ops[i].fn(c); /* warm up: lazy binding, first-touch */
		snprintf(name, sizeof(name), "codec/%s/%s/%s/%u", c->name, ops[i].impl,
			 ops[i].op, n);
		CALLGRIND_ZERO_STATS;
		for (uint32_t k = 0; k < n; k++)
			ops[i].fn(c);
		CALLGRIND_DUMP_STATS_AT(name);
		printf("C\t%s\t%zu\n", name, op_bytes(c, i));
	}
	fflush(stdout);
}

static void
case_free(struct codec_case *c)
{
	chan_msg_free(c->msg);
	free(c->chan_frame);
	free(c->pb_bytes);
	free(c->out);
	msgpack_sbuffer_destroy(&c->mp_sb);
	msgpack_sbuffer_destroy(&c->mp_out);
	pool_drain();
}

int
main(int argc, char **argv)
{
	int callgrind = 0, i = bench_parse_args(argc, argv);

	for (; i < argc; i++) {
		if (!strcmp(argv[i], "callgrind")) {
			callgrind = 1;
		} else {
			fprintf(stderr, "usage: %s [--smoke] [--reps N] [--ms X] [--only CASE] [callgrind]\n",
				argv[0]);
			return 2;
		}
	}
	data_init();
	pb_init();
	printf("# codec: chan %s, protobuf-c %s, msgpack-c %s%s\n", chan_version(),
	       protobuf_c_version(), msgpack_version(),
	       HAVE_MALLOC_COUNT ? "" : " (sanitizer build: mallocs from hooks only)");
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		struct codec_case *c = &cases[k];

		if (bench_opt.only && !strstr(c->name, bench_opt.only))
			continue;
		case_prepare(c);
		case_check(c);
		printf("# case %s: chan %zu bytes, protobuf-c %zu, msgpack %zu\n", c->name,
		       c->chan_len, c->pb_len, c->mp_sb.size);
		if (callgrind)
			case_callgrind(c);
		else
			case_time(c);
		case_free(c);
	}
	free(big);
	free(ints);
	close(handle_fd);
	return 0;
}
