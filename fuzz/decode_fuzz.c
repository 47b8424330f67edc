/*
 * decode_fuzz.c - libFuzzer target for chan_decode (SPEC.md §5-§9).
 *
 * Input layout (fuzz/README.md):
 *   byte 0   number of descriptors to deliver (mod 33); revision 1.1 when
 *            (byte / 33) is odd (CHAN_DECODE_REVISION_1_1: flags and
 *            channel of SPEC.md §17.1/§18.1, channel handles, field 10)
 *   byte 1   flags: bit 0 detached (CHAN_DECODE_DETACHED, no descriptors),
 *            bit 1 custom limits from bytes 2-4, bit 2 take the first
 *            handle's fd out of the message before freeing it, bit 3
 *            decode with an allocator that fails its Nth allocation,
 *            N = 1 + (flags >> 4); without bit 3, bit 4 decodes with
 *            CHAN_DECODE_BORROW (large bytes values point into the input)
 *   byte 2   max_depth  = 1 + b % 32          (bit 1 only)
 *   byte 3   max_handles = 1 + b % 253        (bit 1 only)
 *   byte 4   max_payload: 0 default, 1..64 that many bytes, else
 *            1 << (b % 31)                  (bit 1 only)
 *   then one byte per descriptor: its type (enum hu_fd_type, mod HU_NTYPES)
 *   then the frame bytes (possibly followed by bytes of a next frame).
 *
 * Invariants checked on every input:
 *  - the result equals the independent reference of fuzz/ref.c (exact error
 *    precedence of SPEC.md §9.3 and §7.3, revision 1.0 or 1.1); on success
 *    the decoded value's channel handles (ids, walk order) and handle kinds
 *    are those the reference read; with a failing allocator it is
 *    NO_MEMORY or that same error (an error met before the allocation),
 *    and every allocation is freed;
 *  - every error is a registry name; decode never reports a local error;
 *  - on any error every delivered descriptor is closed when chan_decode
 *    returns; on success they are all in the message, in table order, and
 *    chan_msg_free closes every one it still owns (and none it gave away);
 *  - a decoded frame re-encodes to exactly the input frame's bytes (but for
 *    the 1.1 header fields flags and channel, which chan_encode writes as
 *    0); those bytes decode again to an equal value that re-encodes to them
 *    again; that second decode goes through a byte-counting allocator, and
 *    the largest peak per payload byte is printed at exit (SPEC.md §7.3:
 *    memory bounded by a constant factor of the payload plus a constant);
 *  - protobuf-c (an independent parser) accepts the payload and packs it
 *    back to the same bytes;
 *  - no descriptor is open after the call that was not open before.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chan.h"
#include "chan/v1/chan.pb-c.h"
#include "fzutil.h"
#include "ref.h"
#include "util.h"

#define MAX_FDS 32

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "decode_fuzz: %s:%d: invariant failed: %s\n", \
				__FILE__, __LINE__, #cond);                    \
			abort();                                               \
		}                                                              \
	} while (0)

struct fdset {
	int fds[MAX_FDS];
	int other[MAX_FDS];
	uint8_t type[MAX_FDS];
	size_t n;
};

static int
conn_ok(void *ctx, size_t i)
{
	const struct fdset *s = ctx;

	return i < s->n && s->type[i] == HU_UNIX_STREAM;
}

static void
close_others(struct fdset *s)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->other[i] >= 0)
			close(s->other[i]);
}

/* Encode msg into a new buffer. */
static uint8_t *
encode(chan_msg *msg, size_t *ret_len)
{
	size_t need = 0;
	uint8_t *buf;
	int r = chan_encoded_size(msg, &need);

	CHECK(r == 0);
	buf = malloc(need ? need : 1);
	CHECK(buf);
	r = chan_encode(msg, buf, need, ret_len);
	CHECK(r == 0 && *ret_len == need);
	return buf;
}

/* protobuf-c reads the payload and writes it back byte for byte. */
static void
check_oracle(const uint8_t *payload, size_t n)
{
	Chan__V1__Value *v = chan__v1__value__unpack(NULL, n, payload);
	uint8_t *out;
	size_t m;

	CHECK(v != NULL);
	m = chan__v1__value__get_packed_size(v);
	CHECK(m == n);
	out = malloc(m ? m : 1);
	CHECK(out);
	CHECK(chan__v1__value__pack(v, out) == m);
	CHECK(memcmp(out, payload, n) == 0);
	free(out);
	chan__v1__value__free_unpacked(v, NULL);
}

/* The value's channel ids and handle kinds in walk (document) order. */
static void
collect(const chan_value *v, struct ref_result *out)
{
	switch (chan_value_type(v)) {
	case CHAN_CHANNEL:
		if (out->nchannels < REF_MAX_CHANNELS)
			out->ids[out->nchannels] = chan_value_channel_id(v);
		out->nchannels++;
		break;
	case CHAN_HANDLE:
		if (out->nhandles < CHAN_HARD_MAX_HANDLES)
			out->kinds[out->nhandles] = (uint8_t)chan_value_kind(v);
		out->nhandles++;
		break;
	case CHAN_LIST:
	case CHAN_MAP:
		for (size_t i = 0; i < chan_value_count(v); i++)
			collect(chan_value_at(v, i), out);
		break;
	default:
		break;
	}
}

static struct ref_result ref_out, got_out;

/* A byte-counting allocator for the decoder's memory (SPEC.md §7.3 notes). */
struct counting {
	size_t live, peak;
};

static void *
k_alloc(void *ctx, size_t size)
{
	struct counting *k = ctx;
	size_t *p = malloc(sizeof(size_t) * 2 + size);

	if (!p)
		return NULL;
	p[0] = size;
	k->live += size;
	if (k->live > k->peak)
		k->peak = k->live;
	return p + 2;
}

static void
k_free(void *ctx, void *q)
{
	struct counting *k = ctx;
	size_t *p = q;

	if (!p)
		return;
	p -= 2;
	k->live -= p[0];
	free(p);
}

/* The largest peak/payload seen, overall and for payloads >= 1 KiB. */
static struct {
	double ratio, ratio_1k;
	size_t peak, payload, peak_1k, payload_1k, max_peak, max_peak_payload;
} mem;

__attribute__((destructor)) static void
report_memory(void)
{
	if (!mem.payload)
		return;
	fprintf(stderr,
		"decode_fuzz: decoder memory: max %.1f bytes per payload byte (%zu bytes for "
		"a %zu-byte payload); payloads >= 1 KiB: max %.1f (%zu for %zu); largest "
		"peak %zu bytes (payload %zu)\n",
		mem.ratio, mem.peak, mem.payload, mem.ratio_1k, mem.peak_1k, mem.payload_1k,
		mem.max_peak, mem.max_peak_payload);
}

static void
note_memory(size_t peak, size_t payload)
{
	double r;

	if (!payload)
		return;
	r = (double)peak / (double)payload;
	if (r > mem.ratio) {
		mem.ratio = r;
		mem.peak = peak;
		mem.payload = payload;
	}
	if (payload >= 1024 && r > mem.ratio_1k) {
		mem.ratio_1k = r;
		mem.peak_1k = peak;
		mem.payload_1k = payload;
	}
	if (peak > mem.max_peak) {
		mem.max_peak = peak;
		mem.max_peak_payload = payload;
	}
	/* SPEC.md §7.3: a constant factor plus a constant.  libchan's own
	 * estimate (c/src/decode.c) is ~45 arena bytes per payload byte in
	 * doubling chunks; 256 per byte + 64 KiB would mean it is not. */
	CHECK(peak <= 256 * payload + 65536);
}

struct failing {
	long n, fail_at, failed, live;
};

static void *
f_alloc(void *ctx, size_t size)
{
	struct failing *f = ctx;

	if (++f->n == f->fail_at) {
		f->failed++;
		return NULL;
	}
	f->live++;
	return malloc(size);
}

static void
f_free(void *ctx, void *p)
{
	((struct failing *)ctx)->live--;
	free(p);
}

/* With CHAN_DECODE_BORROW, bytes values of CHAN_BORROW_MIN bytes or more
 * point into the frame; every other string and bytes value is a copy. */
static void
check_borrow(const chan_value *v, const uint8_t *frame, size_t len, int borrow)
{
	const char *p = NULL;
	size_t n = 0;
	int inside;

	switch (chan_value_type(v)) {
	case CHAN_STRING:
		CHECK(chan_value_get_string(v, &p, &n) == 0);
		break;
	case CHAN_BYTES: {
		const void *b = NULL;

		CHECK(chan_value_get_bytes(v, &b, &n) == 0);
		p = b;
		break;
	}
	case CHAN_LIST:
	case CHAN_MAP:
		for (size_t i = 0; i < chan_value_count(v); i++)
			check_borrow(chan_value_at(v, i), frame, len, borrow);
		return;
	default:
		return;
	}
	inside = (const uint8_t *)p >= frame && (const uint8_t *)p < frame + len;
	if (borrow && chan_value_type(v) == CHAN_BYTES && n >= CHAN_BORROW_MIN)
		CHECK(inside && (const uint8_t *)p + n <= frame + len);
	else
		CHECK(!inside || n == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fdset s = {.n = 0};
	struct chan_limits lim = {0}, eff;
	const uint8_t *frame;
	size_t flen, nfds, consumed = 0, ref_len = 0;
	unsigned flags, dflags;
	int detached, borrow, rev11, expect, r, before;
	chan_msg *msg = NULL;
	struct ref_input in;

	if (size < 5)
		return 0;
	nfds = data[0] % (MAX_FDS + 1);
	rev11 = (data[0] / (MAX_FDS + 1)) & 1;
	flags = data[1];
	detached = flags & 1;
	if (detached)
		nfds = 0;
	borrow = !(flags & 8) && (flags & 16);
	dflags = (detached ? CHAN_DECODE_DETACHED : 0) | (borrow ? CHAN_DECODE_BORROW : 0) |
		 (rev11 ? CHAN_DECODE_REVISION_1_1 : 0);
	if (flags & 2) {
		lim.max_depth = 1 + data[2] % 32;
		lim.max_handles = 1 + data[3] % 253;
		lim.max_payload = data[4] <= 64 ? data[4] : 1u << (data[4] % 31);
	}
	if (size < 5 + nfds)
		return 0;
	frame = data + 5 + nfds;
	flen = size - 5 - nfds;

	before = hu_count_fds();
	CHECK(before >= 0);
	for (size_t i = 0; i < nfds; i++) {
		s.type[i] = (uint8_t)(data[5 + i] % HU_NTYPES);
		s.fds[i] = hu_make_fd((enum hu_fd_type)s.type[i], &s.other[i]);
		CHECK(s.fds[i] >= 0);
		s.n++;
	}

	eff.max_payload = lim.max_payload ? lim.max_payload : CHAN_DEFAULT_MAX_PAYLOAD;
	eff.max_handles = lim.max_handles ? lim.max_handles : CHAN_DEFAULT_MAX_HANDLES;
	eff.max_depth = lim.max_depth ? lim.max_depth : CHAN_DEFAULT_MAX_DEPTH;
	in = (struct ref_input){frame, flen, eff, detached, nfds, conn_ok, &s, rev11};
	expect = ref_decode_ex(&in, &ref_len, &ref_out);

	if (flags & 8) {
		struct failing f = {0, 1 + (flags >> 4), 0, 0};
		struct chan_allocator fa = {f_alloc, f_free, &f};

		r = chan_decode(frame, flen, nfds ? s.fds : NULL, nfds,
				(detached ? CHAN_DECODE_DETACHED : 0) |
					(rev11 ? CHAN_DECODE_REVISION_1_1 : 0),
				(flags & 2) ? &lim : NULL, &fa, &msg, &consumed);
		if (f.failed && r != expect) {
			if (r != CHAN_E_NO_MEMORY) {
				fprintf(stderr, "decode_fuzz: allocation %ld failed: "
						"chan_decode says %s, want NO_MEMORY or %s\n",
					f.fail_at, chan_errname(r) ? chan_errname(r) : "?",
					chan_errname(expect) ? chan_errname(expect) : "OK");
				abort();
			}
			for (size_t i = 0; i < nfds; i++)
				CHECK(!hu_fd_is_open(s.fds[i]));
			CHECK(f.live == 0);
			close_others(&s);
			CHECK(hu_count_fds() == before);
			return 0;
		}
		if (r == 0) {
			/* the rest of the checks use malloc'd messages */
			chan_msg_free(msg);
			CHECK(f.live == 0);
			msg = NULL;
			for (size_t i = 0; i < nfds; i++)
				CHECK(!hu_fd_is_open(s.fds[i]));
			close_others(&s);
			CHECK(hu_count_fds() == before);
			return 0;
		}
		CHECK(f.live == 0);
	} else {
		r = chan_decode(frame, flen, nfds ? s.fds : NULL, nfds, dflags,
				(flags & 2) ? &lim : NULL, NULL, &msg, &consumed);
	}
	if (r != expect) {
		fprintf(stderr, "decode_fuzz: chan_decode (revision %s) says %s, SPEC.md says %s\n",
			rev11 ? "1.1" : "1.0", r ? (chan_errname(r) ? chan_errname(r) : "?") : "OK",
			expect ? (chan_errname(expect) ? chan_errname(expect) : "?") : "OK");
		abort();
	}
	if (r < 0) {
		CHECK(hu_is_registry_error(r));
		CHECK(chan_error_scope(r) == CHAN_SCOPE_FATAL ||
		      chan_error_scope(r) == CHAN_SCOPE_FRAME);
		for (size_t i = 0; i < nfds; i++)
			CHECK(!hu_fd_is_open(s.fds[i]));
		close_others(&s);
		CHECK(hu_count_fds() == before);
		return 0;
	}

	/* Success: every delivered fd is in the message, in table order. */
	CHECK(consumed == ref_len && consumed <= flen);
	{
		int tab[CHAN_HARD_MAX_HANDLES];
		size_t n = hu_handles(msg, tab);
		uint16_t hc = (uint16_t)(frame[6] | frame[7] << 8);

		CHECK(n == hc);
		for (size_t i = 0; i < n; i++)
			CHECK(tab[i] == (detached ? -1 : s.fds[i]));
	}
	/* The value is the one the reference read: its channel handles (ids,
	 * walk order) and its handles' kinds (walk order = index order). */
	memset(&got_out, 0, sizeof(got_out));
	collect(chan_msg_root(msg), &got_out);
	CHECK(got_out.nchannels == ref_out.nchannels);
	CHECK(got_out.nhandles == ref_out.nhandles);
	for (size_t i = 0; i < got_out.nchannels && i < REF_MAX_CHANNELS; i++)
		CHECK(got_out.ids[i] == ref_out.ids[i]);
	for (size_t i = 0; i < got_out.nhandles && i < CHAN_HARD_MAX_HANDLES; i++)
		CHECK(got_out.kinds[i] == ref_out.kinds[i]);
	check_oracle(frame + CHAN_HEADER_SIZE, consumed - CHAN_HEADER_SIZE);
	check_borrow(chan_msg_root(msg), frame, consumed, borrow);

	/* Canonical: re-encoding gives the input frame back, and so on. */
	{
		size_t len1 = 0, len2 = 0, n2 = 0;
		uint8_t *enc1 = encode(msg, &len1), *enc2;
		chan_msg *msg2 = NULL;
		int dups[MAX_FDS];
		int tab2[CHAN_HARD_MAX_HANDLES];
		struct counting k = {0, 0};
		struct chan_allocator ka = {k_alloc, k_free, &k};

		/* chan_encode writes flags 0 and channel 0 (SPEC.md §5.2: a
		 * connection sets them); everything else is the input's */
		CHECK(len1 == consumed);
		CHECK(memcmp(enc1, frame, 5) == 0 && enc1[5] == 0);
		CHECK(memcmp(enc1 + 6, frame + 6, 2) == 0);
		CHECK(enc1[8] == 0 && enc1[9] == 0 && enc1[10] == 0 && enc1[11] == 0);
		CHECK(memcmp(enc1 + 12, frame + 12, consumed - 12) == 0);
		CHECK(rev11 || memcmp(enc1, frame, consumed) == 0);
		for (size_t i = 0; i < nfds; i++) {
			dups[i] = fcntl(s.fds[i], F_DUPFD_CLOEXEC, 3);
			CHECK(dups[i] >= 0);
		}
		r = chan_decode(enc1, len1, nfds ? dups : NULL, nfds, dflags,
				(flags & 2) ? &lim : NULL, &ka, &msg2, NULL);
		CHECK(r == 0);
		note_memory(k.peak, len1 - CHAN_HEADER_SIZE);
		CHECK(fz_value_equal(chan_msg_root(msg), chan_msg_root(msg2)));
		n2 = hu_handles(msg2, tab2);
		CHECK(n2 >= nfds);
		for (size_t i = 0; i < nfds; i++)
			CHECK(tab2[i] == dups[i] && hu_same_file(dups[i], s.fds[i]));
		enc2 = encode(msg2, &len2);
		CHECK(len2 == len1 && memcmp(enc2, enc1, len1) == 0);
		chan_msg_free(msg2);
		CHECK(k.live == 0);
		for (size_t i = 0; i < nfds; i++)
			CHECK(!hu_fd_is_open(dups[i]));
		free(enc1);
		free(enc2);
	}

	/* Ownership: a taken fd survives chan_msg_free; the rest are closed. */
	{
		int taken = -1;

		if ((flags & 4) && nfds) {
			chan_value *v = NULL;
			/* find the handle with index 0 by walking the tree */
			chan_value *stack[64];
			size_t sp = 0;

			stack[sp++] = chan_msg_root(msg);
			while (sp && !v) {
				chan_value *x = stack[--sp];

				if (chan_value_type(x) == CHAN_HANDLE &&
				    chan_value_handle_index(x) == 0)
					v = x;
				for (size_t i = chan_value_count(x); i-- > 0 && sp < 64;)
					stack[sp++] = chan_value_at(x, i);
			}
			if (v) {
				CHECK(chan_value_move_fd(v, &taken) == 0);
				CHECK(taken == s.fds[0]);
				CHECK(hu_value_fd(v) == -1);
				CHECK(chan_value_move_fd(v, &taken) ==
				      CHAN_E_INVALID_ARGUMENT);
			}
		}
		chan_msg_free(msg);
		for (size_t i = 0; i < nfds; i++) {
			if ((int)s.fds[i] == taken) {
				CHECK(hu_fd_is_open(taken));
				close(taken);
			} else {
				CHECK(!hu_fd_is_open(s.fds[i]));
			}
		}
	}
	close_others(&s);
	CHECK(hu_count_fds() == before);
	return 0;
}
