/*
 * writer.c - a frame encoded while the caller builds it (SPEC.md §7.2).
 *
 * The bytes go front to back into one buffer.  A length prefix that is not
 * known yet (a container's body, a list item or map value holding one, a map
 * entry) gets one placeholder byte, "reserved" at its position; when the
 * thing it covers ends, the length is written there, and in the rare case
 * that it needs more than one byte (>= 128), what follows moves right.  So
 * small containers cost nothing beyond their bytes, and the output is the
 * canonical encoding that chan_encode writes for the same value.
 *
 * Borrowed bytes (chan_writer_bytes_borrow) are not copied: the frame is the
 * buffer with external segments spliced in at recorded positions; the send
 * path gives the kernel one iovec per piece.
 *
 * Checks are the tree builder's: UTF-8 and U+0000 in keys, UTF-8 in
 * strings, duplicate keys (a hash index once a map has many), depth, handle
 * count, payload size.  The first failure poisons the writer.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "internal.h"
#include "writer.h"

#define MAX_LEVELS (CHAN_HARD_MAX_DEPTH + 1)
#define KEY_INDEX_MIN 16u

enum { IN_TOP = 0, IN_LIST = CHAN_LIST, IN_MAP = CHAN_MAP };

/* A placeholder byte for a length, and what it covers: everything after it
 * up to the end of the thing it prefixes (external segments included). */
struct reservation {
	size_t pos;
	size_t ext_at; /* ext_total when reserved */
	size_t seg_at; /* segments when reserved */
};

struct key_rec {
	uint64_t hash;
	size_t off; /* in buf, once its entry is complete */
	uint32_t len;
};

struct level {
	uint8_t type;      /* IN_TOP, IN_LIST, IN_MAP */
	bool want_value;   /* a map: a key was written, its value is due */
	struct reservation own, slot, entry; /* container body; item/value; entry */
	bool has_slot, has_entry;
	size_t key_first;  /* a map: its keys are keys[key_first..] */
	uint32_t *index;   /* a map with many keys: hash slots (key number + 1) */
	uint64_t seen;     /* a map: one bit per key hash (hash & 63): a clear bit
			    * proves a key new without a scan */
	uint32_t index_mask;
	/* the key being filled (a map, between chan_writer_key and its value) */
	uint64_t pend_hash;
	uint32_t pend_len;
	size_t pend_keypos; /* offset of the key bytes from the entry placeholder */
};

static void *
w_alloc(const chan_writer *w, size_t n)
{
	return chan__alloc(&w->allocator, n);
}

static void
w_free(const chan_writer *w, void *p)
{
	chan__free(&w->allocator, p);
}

static int
poison(chan_writer *w, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int
poison(chan_writer *w, int err, const char *fmt, ...)
{
	va_list ap;

	if (w->error)
		return w->error;
	w->error = err;
	va_start(ap, fmt);
	vsnprintf(w->error_message, sizeof(w->error_message), fmt, ap);
	va_end(ap);
	return err;
}

CHAN_EXPORT chan_writer *
chan_writer_new(const struct chan_allocator *allocator)
{
	struct chan_allocator a = {0};
	chan_writer *w;

	if (allocator && allocator->alloc && allocator->free)
		a = *allocator;
	w = chan__alloc(&a, sizeof(*w));
	if (!w)
		return NULL;
	memset(w, 0, sizeof(*w));
	w->allocator = a;
	w->levels = chan__alloc(&a, MAX_LEVELS * sizeof(struct level));
	if (!w->levels) {
		chan__free(&a, w);
		return NULL;
	}
	chan_writer_reset(w);
	return w;
}

CHAN_EXPORT chan_writer *
chan_writer_free(chan_writer *w)
{
	if (!w)
		return NULL;
	chan_writer_reset(w);
	w_free(w, w->buf);
	w_free(w, w->segs);
	w_free(w, w->keys);
	w_free(w, w->levels);
	w_free(w, w);
	return NULL;
}

CHAN_EXPORT void
chan_writer_reset(chan_writer *w)
{
	struct level *top;

	if (!w)
		return;
	for (size_t i = 0; i < w->depth; i++)
		w_free(w, ((struct level *)w->levels)[i].index);
	w->len = CHAN_HEADER_SIZE; /* the header is written by chan__writer_seal */
	w->nsegs = 0;
	w->ext_total = 0;
	w->nkeys = 0;
	w->nhandles = 0;
	w->error = 0;
	w->error_message[0] = '\0';
	w->done = false;
	w->depth = 1;
	top = w->cur = w->levels;
	memset(top, 0, sizeof(*top));
	top->type = IN_TOP;
}

CHAN_EXPORT int
chan_writer_error(const chan_writer *w)
{
	return w ? w->error : CHAN_E_INVALID_ARGUMENT;
}

CHAN_EXPORT const char *
chan_writer_error_message(const chan_writer *w)
{
	return w ? w->error_message : "chan_writer_error_message: w is NULL";
}

/* ---- the buffer ---- */

static int
grow_buf(chan_writer *w, size_t n)
{
	size_t cap;
	uint8_t *p;

	if (w->len + n <= w->cap)
		return 0;
	cap = w->cap ? w->cap : 256;
	while (cap < w->len + n)
		cap *= 2;
	p = w_alloc(w, cap);
	if (!p)
		return CHAN_E_NO_MEMORY;
	if (w->buf)
		memcpy(p, w->buf, w->len);
	w_free(w, w->buf);
	w->buf = p;
	w->cap = cap;
	return 0;
}

static inline int
reserve_bytes(chan_writer *w, size_t n)
{
	return __builtin_expect(w->len + n <= w->cap, 1) ? 0 : grow_buf(w, n);
}

static inline uint8_t *
put_varint(uint8_t *p, uint64_t v)
{
	if (v < 0x80) {
		*p++ = (uint8_t)v;
		return p;
	}
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

static inline struct level *
cur(chan_writer *w)
{
	return w->cur;
}

static inline struct reservation
reserve(chan_writer *w)
{
	struct reservation r = {w->len, w->ext_total, w->nsegs};

	w->buf[w->len++] = 0;
	return r;
}

/* Write the length of what r covers into its placeholder; returns the
 * placeholder's final size (1-5 bytes). */
static inline unsigned
patch(chan_writer *w, const struct reservation *r)
{
	size_t covered = (w->len - r->pos - 1) + (w->ext_total - r->ext_at);
	unsigned k;

	if (__builtin_expect(covered < 0x80, 1)) {
		w->buf[r->pos] = (uint8_t)covered;
		return 1;
	}
	k = varint_size(covered);
	{
		/* reserve_bytes cannot fail here: the caller made room for the
		 * worst case (see MAX_GROWTH) before it started. */
		memmove(w->buf + r->pos + k, w->buf + r->pos + 1, w->len - r->pos - 1);
		w->len += k - 1;
		for (size_t i = r->seg_at; i < w->nsegs; i++)
			w->segs[i].at += k - 1;
	}
	put_varint(w->buf + r->pos, covered);
	return k;
}

/* Worst-case growth of the patches that closing one level makes (three
 * placeholders, each to at most 5 bytes). */
#define MAX_GROWTH 12u

/* Before a value: is one allowed here?  Then the prefix a list item needs
 * (its Value's length, known: a scalar of body size n) or nothing. */
static int
value_start(chan_writer *w, const char *caller, size_t body, bool known)
{
	struct level *l = cur(w);
	int r;

	if (w->error)
		return w->error;
	if (l->type == IN_TOP && w->done)
		return poison(w, CHAN_E_INVALID_ARGUMENT, "%s: the frame already has its value",
			      caller);
	if (l->type == IN_MAP && !l->want_value)
		return poison(w, CHAN_E_INVALID_ARGUMENT, "%s: a map value needs chan_writer_key first",
			      caller);
	if ((r = reserve_bytes(w, 24 + (known ? body : 0) + MAX_GROWTH)) < 0)
		return poison(w, r, "%s: out of memory", caller);
	if (l->type == IN_LIST) {
		w->buf[w->len++] = 1 << 3 | WT_LEN; /* List.items */
		if (known) {
			w->len = (size_t)(put_varint(w->buf + w->len, body) - w->buf);
		} else {
			l->slot = reserve(w);
			l->has_slot = true;
		}
	} else if (l->type == IN_MAP) {
		w->buf[w->len++] = 2 << 3 | WT_LEN; /* Entry.value */
		if (known) {
			w->len = (size_t)(put_varint(w->buf + w->len, body) - w->buf);
		} else {
			l->slot = reserve(w);
			l->has_slot = true;
		}
	}
	return 0;
}

static int
frame_size_check(chan_writer *w, const char *caller)
{
	if (w->len - CHAN_HEADER_SIZE + w->ext_total > CHAN_HARD_MAX_PAYLOAD)
		return poison(w, CHAN_E_PAYLOAD_TOO_LARGE, "%s: the frame passes %u bytes", caller,
			      CHAN_HARD_MAX_PAYLOAD);
	return 0;
}

static inline __attribute__((always_inline)) void remember_key(chan_writer *w, struct level *l,
							   unsigned placeholder);

/* After a complete value: close the map entry it completes. */
static int
value_done(chan_writer *w, const char *caller)
{
	struct level *l = cur(w);

	if (l->type == IN_TOP) {
		w->done = true;
	} else if (l->type == IN_MAP) {
		unsigned k = patch(w, &l->entry);

		remember_key(w, l, k);
		l->want_value = false;
	}
	return frame_size_check(w, caller);
}

/* The slow exits of the hot paths, kept out of line so that the hot ones
 * stay small. */
static __attribute__((noinline, cold)) int
misplaced(chan_writer *w, const char *caller)
{
	return value_start(w, caller, 0, true); /* names the mistake */
}

static __attribute__((noinline, cold)) int
out_of_memory(chan_writer *w, const char *caller)
{
	return poison(w, CHAN_E_NO_MEMORY, "%s: out of memory", caller);
}

/*
 * A scalar Value of `body` bytes: scalar_begin writes the prefix its place
 * needs and returns where the body goes (NULL: an error, returned by
 * scalar_end); the caller writes the body; scalar_end completes the map
 * entry it fills.  The writer's hot path, inlined into each caller.
 */
static inline __attribute__((always_inline)) uint8_t *
scalar_begin(chan_writer *w, const char *caller, size_t body, int *ret_err)
{
	struct level *l = cur(w);
	uint8_t *p;

	if (__builtin_expect(w->error != 0, 0)) {
		*ret_err = w->error;
		return NULL;
	}
	if (__builtin_expect(l->type == IN_TOP ? w->done : l->type == IN_MAP && !l->want_value, 0)) {
		*ret_err = misplaced(w, caller);
		return NULL;
	}
	if (__builtin_expect(w->len + 16 + body + MAX_GROWTH > w->cap, 0) &&
	    grow_buf(w, 16 + body + MAX_GROWTH) < 0) {
		*ret_err = out_of_memory(w, caller);
		return NULL;
	}
	p = w->buf + w->len;
	if (l->type != IN_TOP) {
		*p++ = l->type == IN_LIST ? (1 << 3 | WT_LEN) : (2 << 3 | WT_LEN);
		p = put_varint(p, body);
	}
	return p;
}

static inline __attribute__((always_inline)) int
scalar_end(chan_writer *w, const char *caller, uint8_t *p, int err)
{
	struct level *l = cur(w);

	if (__builtin_expect(!p, 0))
		return err;
	w->len = (size_t)(p - w->buf);
	if (l->type == IN_MAP) {
		unsigned k = patch(w, &l->entry);

		remember_key(w, l, k);
		l->want_value = false;
	} else if (l->type == IN_TOP) {
		w->done = true;
	}
	if (__builtin_expect(w->len + w->ext_total > CHAN_HARD_MAX_PAYLOAD, 0))
		return frame_size_check(w, caller);
	return 0;
}

/* A scalar Value whose body is hdr[0..nh) then tail[0..ntail). */
static int
scalar(chan_writer *w, const char *caller, const uint8_t *hdr, size_t nh, const void *tail,
       size_t ntail)
{
	int err = 0;
	uint8_t *p = scalar_begin(w, caller, nh + ntail, &err);

	if (p) {
		memcpy(p, hdr, nh);
		p += nh;
		if (ntail) {
			memcpy(p, tail, ntail);
			p += ntail;
		}
	}
	return scalar_end(w, caller, p, err);
}

CHAN_EXPORT int
chan_writer_null(chan_writer *w)
{
	int err = 0;
	uint8_t *p;

	if (!w)
		return CHAN_E_INVALID_ARGUMENT;
	if ((p = scalar_begin(w, "chan_writer_null", 2, &err))) {
		*p++ = CHAN_NULL << 3 | WT_LEN;
		*p++ = 0;
	}
	return scalar_end(w, "chan_writer_null", p, err);
}

CHAN_EXPORT int
chan_writer_bool(chan_writer *w, bool v)
{
	int err = 0;
	uint8_t *p;

	if (!w)
		return CHAN_E_INVALID_ARGUMENT;
	if ((p = scalar_begin(w, "chan_writer_bool", 2, &err))) {
		*p++ = CHAN_BOOL << 3 | WT_VARINT;
		*p++ = v ? 1 : 0;
	}
	return scalar_end(w, "chan_writer_bool", p, err);
}

CHAN_EXPORT int
chan_writer_int(chan_writer *w, int64_t i)
{
	uint64_t z = zigzag_encode(i);
	int err = 0;
	uint8_t *p;

	if (!w)
		return CHAN_E_INVALID_ARGUMENT;
	if ((p = scalar_begin(w, "chan_writer_int", 1 + varint_size(z), &err))) {
		*p++ = CHAN_INT << 3 | WT_VARINT;
		p = put_varint(p, z);
	}
	return scalar_end(w, "chan_writer_int", p, err);
}

CHAN_EXPORT int
chan_writer_float(chan_writer *w, double f)
{
	uint64_t bits;
	int err = 0;
	uint8_t *p;

	if (!w)
		return CHAN_E_INVALID_ARGUMENT;
	if (isnan(f))
		bits = CHAN_CANONICAL_NAN_BITS; /* the data model has one NaN */
	else
		memcpy(&bits, &f, 8);
	if ((p = scalar_begin(w, "chan_writer_float", 9, &err))) {
		*p++ = CHAN_FLOAT << 3 | WT_FIXED64;
		for (int k = 0; k < 8; k++)
			*p++ = (uint8_t)(bits >> (8 * k));
	}
	return scalar_end(w, "chan_writer_float", p, err);
}

static int
blob(chan_writer *w, const char *caller, enum chan_type type, const void *p, size_t n,
     bool borrow)
{
	uint8_t b[16];
	size_t nh;
	int r;

	if (!w)
		return CHAN_E_INVALID_ARGUMENT;
	if (w->error)
		return w->error;
	if (!p && (n || type == CHAN_STRING))
		return poison(w, CHAN_E_INVALID_ARGUMENT, "%s: NULL %s", caller,
			      type == CHAN_STRING ? "string" : "data with a length");
	if (n > CHAN_HARD_MAX_PAYLOAD)
		return poison(w, CHAN_E_PAYLOAD_TOO_LARGE, "%s: %zu bytes", caller, n);
	if (type == CHAN_STRING && !chan__utf8_valid(p, n)) {
		char q[64];

		return poison(w, CHAN_E_INVALID_UTF8, "%s: %s is not valid UTF-8", caller,
			      chan__quote(q, sizeof(q), p, n));
	}
	b[0] = (uint8_t)(type << 3 | WT_LEN);
	nh = (size_t)(put_varint(b + 1, n) - b);
	if (!borrow) {
		int err = 0;
		uint8_t *o = scalar_begin(w, caller, nh + n, &err);

		if (o) {
			memcpy(o, b, nh);
			o += nh;
			for (size_t i = 0; i < n && i < 16; i++) /* short ones: no call */
				o[i] = ((const uint8_t *)p)[i];
			if (n > 16)
				memcpy(o + 16, (const uint8_t *)p + 16, n - 16);
			o += n;
		}
		return scalar_end(w, caller, o, err);
	}
	/* Borrowed: the header bytes here, the contents spliced in later. */
	if ((r = value_start(w, caller, nh + n, false)) < 0)
		return r;
	if (w->nsegs == w->segcap) {
		size_t cap = w->segcap ? w->segcap * 2 : 8;
		struct chan__seg *s = w_alloc(w, cap * sizeof(*s));

		if (!s)
			return poison(w, CHAN_E_NO_MEMORY, "%s: out of memory", caller);
		if (w->nsegs)
			memcpy(s, w->segs, w->nsegs * sizeof(*s));
		w_free(w, w->segs);
		w->segs = s;
		w->segcap = cap;
	}
	memcpy(w->buf + w->len, b, nh);
	w->len += nh;
	w->segs[w->nsegs++] = (struct chan__seg){w->len, p, n};
	w->ext_total += n;
	/* the slot value_start reserved (inside a list or map) covers it */
	if (cur(w)->type != IN_TOP) {
		struct level *l = cur(w);

		patch(w, &l->slot);
		l->has_slot = false;
	}
	return value_done(w, caller);
}

CHAN_EXPORT int
chan_writer_string(chan_writer *w, const char *s)
{
	return blob(w, "chan_writer_string", CHAN_STRING, s, s ? strlen(s) : 0, false);
}

CHAN_EXPORT int
chan_writer_string_n(chan_writer *w, const char *s, size_t len)
{
	return blob(w, "chan_writer_string_n", CHAN_STRING, s, len, false);
}

CHAN_EXPORT int
chan_writer_bytes(chan_writer *w, const void *p, size_t len)
{
	return blob(w, "chan_writer_bytes", CHAN_BYTES, p, len, false);
}

CHAN_EXPORT int
chan_writer_bytes_borrow(chan_writer *w, const void *p, size_t len)
{
	/* Small ones are cheaper copied than spliced. */
	return blob(w, "chan_writer_bytes_borrow", CHAN_BYTES, p, len, len >= CHAN_BORROW_MIN);
}

int
chan__writer_handle(chan_writer *w, const char *caller, enum chan_kind kind, int fd,
		    uint64_t socket_id)
{
	uint8_t b[16];
	uint32_t index;
	size_t n = 0;

	if (w->error)
		return w->error;
	if (fd < 0)
		return poison(w, CHAN_E_INVALID_ARGUMENT, "%s: no descriptor (a NULL or closed %s)",
			      caller, kind == CHAN_KIND_CONN ? "connection" : "fd");
	if (w->nhandles >= CHAN_HARD_MAX_HANDLES)
		return poison(w, CHAN_E_HANDLE_LIMIT_EXCEEDED, "%s: more than %u handles", caller,
			      CHAN_HARD_MAX_HANDLES);
	index = (uint32_t)w->nhandles;
	b[n++] = CHAN_HANDLE << 3 | WT_LEN;
	b[n++] = (uint8_t)((index ? 1 + varint_size(index) : 0) + 2);
	if (index) {
		b[n++] = 1 << 3 | WT_VARINT;
		n = (size_t)(put_varint(b + n, index) - b);
	}
	b[n++] = 2 << 3 | WT_VARINT;
	b[n++] = (uint8_t)kind;
	w->handles[index] = (struct chan__wire_handle){fd, kind, socket_id};
	w->nhandles++;
	return scalar(w, caller, b, n, NULL, 0);
}

CHAN_EXPORT int
chan_writer_handle_borrow(chan_writer *w, enum chan_kind kind, int fd)
{
	uint64_t id = 0;
	int r;

	if (!w)
		return CHAN_E_INVALID_ARGUMENT;
	if (w->error)
		return w->error;
	if ((kind != CHAN_KIND_FD && kind != CHAN_KIND_CONN) || fd < 0)
		return poison(w, CHAN_E_INVALID_ARGUMENT, "chan_writer_handle_borrow: %s",
			      fd < 0 ? "a negative fd" : "not a handle kind");
	if (kind == CHAN_KIND_CONN && (r = chan__conn_fd_check(fd, &id)) < 0)
		return poison(w, r, "chan_writer_handle_borrow: fd %d %s", fd,
			      r == CHAN_E_INVALID_ARGUMENT ? "is not open"
			      : r == CHAN_E_WRONG_HANDLE_KIND
				      ? "is not a connected AF_UNIX stream socket"
				      : "could not be checked");
	return chan__writer_handle(w, "chan_writer_handle_borrow", kind, fd, id);
}

/* ---- containers ---- */

static int
begin(chan_writer *w, const char *caller, enum chan_type type)
{
	struct level *l;
	int r;

	if (!w)
		return CHAN_E_INVALID_ARGUMENT;
	if ((r = value_start(w, caller, 0, false)) < 0)
		return r;
	if (w->depth >= MAX_LEVELS)
		return poison(w, CHAN_E_DEPTH_EXCEEDED, "%s: values nest deeper than %u", caller,
			      CHAN_HARD_MAX_DEPTH);
	w->buf[w->len++] = (uint8_t)(type << 3 | WT_LEN);
	l = cur(w) + 1;
	memset(l, 0, sizeof(*l));
	l->type = (uint8_t)type;
	l->own = reserve(w);
	l->key_first = w->nkeys;
	w->depth++;
	w->cur = l;
	return 0;
}

static int
end(chan_writer *w, const char *caller, enum chan_type type)
{
	struct level *l, *up;
	int r;

	if (!w)
		return CHAN_E_INVALID_ARGUMENT;
	if (w->error)
		return w->error;
	l = cur(w);
	if (l->type != type)
		return poison(w, CHAN_E_INVALID_ARGUMENT, "%s: no %s is open", caller,
			      chan_type_name(type));
	if (l->want_value)
		return poison(w, CHAN_E_EMPTY_VALUE, "%s: the last key has no value", caller);
	if ((r = reserve_bytes(w, MAX_GROWTH)) < 0)
		return poison(w, r, "%s: out of memory", caller);
	patch(w, &l->own);
	w_free(w, l->index);
	l->index = NULL;
	w->nkeys = l->key_first; /* this map's keys are checked: forget them */
	w->depth--;
	up = w->cur = l - 1;
	if (up->has_slot) { /* the list item or map value that holds it */
		patch(w, &up->slot);
		up->has_slot = false;
	}
	return value_done(w, caller);
}

CHAN_EXPORT int
chan_writer_list_begin(chan_writer *w)
{
	return begin(w, "chan_writer_list_begin", CHAN_LIST);
}

CHAN_EXPORT int
chan_writer_list_end(chan_writer *w)
{
	return end(w, "chan_writer_list_end", CHAN_LIST);
}

CHAN_EXPORT int
chan_writer_map_begin(chan_writer *w)
{
	return begin(w, "chan_writer_map_begin", CHAN_MAP);
}

CHAN_EXPORT int
chan_writer_map_end(chan_writer *w)
{
	return end(w, "chan_writer_map_end", CHAN_MAP);
}

/* ---- keys ---- */

static bool
key_eq(const chan_writer *w, const struct key_rec *k, uint64_t hash, const char *key, size_t len)
{
	return k->hash == hash && k->len == len && !memcmp(w->buf + k->off, key, len);
}

static int
index_build(chan_writer *w, struct level *l)
{
	size_t n = w->nkeys - l->key_first, slots = 64;
	uint32_t *ix;

	while (slots < n * 2)
		slots *= 2;
	if (!(ix = w_alloc(w, slots * sizeof(*ix))))
		return CHAN_E_NO_MEMORY;
	memset(ix, 0, slots * sizeof(*ix));
	for (size_t i = 0; i < n; i++) {
		size_t s = w->keys[l->key_first + i].hash & (slots - 1);

		while (ix[s])
			s = (s + 1) & (slots - 1);
		ix[s] = (uint32_t)i + 1;
	}
	w_free(w, l->index);
	l->index = ix;
	l->index_mask = (uint32_t)(slots - 1);
	return 0;
}

static bool
key_seen(const chan_writer *w, const struct level *l, uint64_t hash, const char *key, size_t len)
{
	if (!l->index) {
		if (!(l->seen & (UINT64_C(1) << (hash & 63))))
			return false;
		for (size_t i = l->key_first; i < w->nkeys; i++)
			if (key_eq(w, &w->keys[i], hash, key, len))
				return true;
		return false;
	}
	for (size_t s = hash & l->index_mask;; s = (s + 1) & l->index_mask) {
		uint32_t k = l->index[s];

		if (!k)
			return false;
		if (key_eq(w, &w->keys[l->key_first + k - 1], hash, key, len))
			return true;
	}
}

/* The entry is complete and its bytes will not move again while the map is
 * open: remember where its key is (pend_keypos bytes after the entry's
 * placeholder, which is now `placeholder` bytes long). */
static inline __attribute__((always_inline)) void
remember_key(chan_writer *w, struct level *l, unsigned placeholder)
{
	struct key_rec *k = &w->keys[w->nkeys++];

	k->hash = l->pend_hash;
	k->len = l->pend_len;
	l->seen |= UINT64_C(1) << (k->hash & 63);
	k->off = l->entry.pos + placeholder + l->pend_keypos;
	if (l->index) {
		size_t s = k->hash & l->index_mask;

		while (l->index[s])
			s = (s + 1) & l->index_mask;
		l->index[s] = (uint32_t)(w->nkeys - l->key_first);
	}
}

/*
 * A key of at most 16 bytes, already copied to p (with room to read 16
 * bytes there): its hash, and whether it is plain ASCII without U+0000 (0)
 * or needs the full check (-1).  Two loads and a few operations, whatever
 * the length.
 */
static inline int
short_key(const uint8_t *p, size_t len, uint64_t *ret_hash)
{
	const uint64_t ones = UINT64_C(0x0101010101010101), highs = ones << 7;
	uint64_t a, b, ma, mb;

	memcpy(&a, p, 8);
	memcpy(&b, p + 8, 8);
	ma = len >= 8 ? ~UINT64_C(0) : (UINT64_C(1) << (8 * len)) - 1;
	mb = len >= 16 ? ~UINT64_C(0) : len <= 8 ? 0 : (UINT64_C(1) << (8 * (len - 8))) - 1;
	a &= ma;
	b &= mb;
	*ret_hash = ((a * UINT64_C(0x9e3779b97f4a7c15)) ^ (b * UINT64_C(0xc2b2ae3d27d4eb4f)) ^ len) *
		    UINT64_C(0x94d049bb133111eb);
	*ret_hash ^= *ret_hash >> 31;
	/* bytes outside the key read as 0x01 for the U+0000 test */
	a |= ~ma & ones;
	b |= ~mb & ones;
	if ((a | b) & highs)
		return -1; /* not ASCII: the full UTF-8 check decides */
	if (((a - ones) & ~a & highs) || ((b - ones) & ~b & highs))
		return -1; /* a U+0000 */
	return 0;
}

static int
key_slow(chan_writer *w, const char *key, size_t len, uint64_t *ret_hash)
{
	char q[64];
	int r;

	if (!key)
		return poison(w, CHAN_E_INVALID_ARGUMENT, "chan_writer_key: the key is NULL");
	if (len > CHAN_HARD_MAX_PAYLOAD)
		return poison(w, CHAN_E_PAYLOAD_TOO_LARGE, "chan_writer_key: a key of %zu bytes", len);
	if ((r = chan__key_check((const uint8_t *)key, len)) < 0)
		return poison(w, r, "chan_writer_key: key %s %s", chan__quote(q, sizeof(q), key, len),
			      r == CHAN_E_INVALID_KEY ? "contains U+0000" : "is not valid UTF-8");
	*ret_hash = chan__hash(key, len); /* keys of one length always take one way */
	return 0;
}

static int
grow_keys(chan_writer *w, struct level *l)
{
	if (w->nkeys == w->keycap) {
		size_t cap = w->keycap ? w->keycap * 2 : 32;
		struct key_rec *k = w_alloc(w, cap * sizeof(*k));

		if (!k)
			return CHAN_E_NO_MEMORY;
		if (w->nkeys)
			memcpy(k, w->keys, w->nkeys * sizeof(*k));
		w_free(w, w->keys);
		w->keys = k;
		w->keycap = cap;
	}
	if (w->nkeys - l->key_first + 1 > KEY_INDEX_MIN &&
	    (!l->index || (w->nkeys - l->key_first + 1) * 2 > (size_t)l->index_mask + 1))
		return index_build(w, l);
	return 0;
}

static __attribute__((noinline, cold)) int
duplicate_key(chan_writer *w, const char *key, size_t len)
{
	char q[64];

	return poison(w, CHAN_E_DUPLICATE_KEY, "chan_writer_key: duplicate key %s",
		      chan__quote(q, sizeof(q), key, len));
}

CHAN_EXPORT int
chan_writer_key_n(chan_writer *w, const char *key, size_t len)
{
	struct level *l;
	uint64_t hash = 0;
	uint8_t *p;
	int r;

	if (!w)
		return CHAN_E_INVALID_ARGUMENT;
	if (w->error)
		return w->error;
	l = cur(w);
	if (l->type != IN_MAP || l->want_value)
		return poison(w, CHAN_E_INVALID_ARGUMENT, "chan_writer_key: %s",
			      l->type != IN_MAP ? "no map is open" : "the last key has no value");
	if (!key)
		return key_slow(w, key, len, &hash);
	if ((r = reserve_bytes(w, 24 + len + MAX_GROWTH)) < 0)
		return poison(w, r, "chan_writer_key: out of memory");
	/* The entry's bytes go in place at once; w->len moves only once the
	 * key is accepted. */
	p = w->buf + w->len;
	p[0] = 1 << 3 | WT_LEN; /* Map.entries */
	p[1] = 0;               /* its length, when the value is written */
	p[2] = 1 << 3 | WT_LEN; /* Entry.key */
	if (__builtin_expect(len <= 16, 1)) {
		p[3] = (uint8_t)len;
		for (size_t i = 0; i < len; i++) /* short keys: no call */
			p[4 + i] = (uint8_t)key[i];
		if (short_key(p + 4, len, &hash) < 0 && (r = key_slow(w, key, len, &hash)) < 0)
			return r;
	} else {
		if ((r = key_slow(w, key, len, &hash)) < 0)
			return r;
		memcpy(put_varint(p + 3, len), key, len);
	}
	if (key_seen(w, l, hash, key, len))
		return duplicate_key(w, key, len);
	if ((w->nkeys == w->keycap || w->nkeys - l->key_first >= KEY_INDEX_MIN) &&
	    grow_keys(w, l) < 0)
		return poison(w, CHAN_E_NO_MEMORY, "chan_writer_key: out of memory");
	l->entry = (struct reservation){w->len + 1, w->ext_total, w->nsegs};
	if (len) {
		l->pend_keypos = 1 + varint_size(len); /* after the placeholder */
		w->len += 3 + varint_size(len) + len;
	} else { /* an empty key is the default: omitted */
		l->pend_keypos = 0;
		w->len += 2;
	}
	l->pend_hash = hash;
	l->pend_len = (uint32_t)len;
	l->want_value = true;
	return 0;
}

CHAN_EXPORT int
chan_writer_key(chan_writer *w, const char *key)
{
	return chan_writer_key_n(w, key, key ? strlen(key) : 0);
}

/* ---- the finished frame ---- */

int
chan__writer_seal(const chan_writer *w, uint8_t header[CHAN_HEADER_SIZE], size_t *ret_len)
{
	size_t payload;

	if (!w)
		return CHAN_E_INVALID_ARGUMENT;
	if (w->error)
		return w->error;
	if (w->depth != 1)
		return CHAN_E_INVALID_ARGUMENT; /* a list or map is still open */
	if (!w->done)
		return CHAN_E_EMPTY_VALUE;
	payload = w->len - CHAN_HEADER_SIZE + w->ext_total;
	header[0] = CHAN_MAGIC0;
	header[1] = CHAN_MAGIC1;
	header[2] = CHAN_MAGIC2;
	header[3] = CHAN_MAGIC3;
	header[4] = CHAN_WIRE_VERSION;
	header[5] = 0;
	header[6] = (uint8_t)w->nhandles;
	header[7] = (uint8_t)(w->nhandles >> 8);
	memset(header + 8, 0, 4);
	header[12] = (uint8_t)payload;
	header[13] = (uint8_t)(payload >> 8);
	header[14] = (uint8_t)(payload >> 16);
	header[15] = (uint8_t)(payload >> 24);
	*ret_len = CHAN_HEADER_SIZE + payload;
	return 0;
}

size_t
chan__writer_pieces(const chan_writer *w, struct iovec *iov, size_t max)
{
	size_t from = CHAN_HEADER_SIZE, n = 0;

	for (size_t i = 0; i < w->nsegs; i++) {
		if (w->segs[i].at > from) {
			if (n < max)
				iov[n] = (struct iovec){w->buf + from, w->segs[i].at - from};
			n++;
		}
		if (n < max)
			iov[n] = (struct iovec){(void *)w->segs[i].p, w->segs[i].n};
		n++;
		from = w->segs[i].at;
	}
	if (w->len > from) {
		if (n < max)
			iov[n] = (struct iovec){w->buf + from, w->len - from};
		n++;
	}
	return n;
}

int
chan__writer_fail(chan_writer *w, int err, const char *what)
{
	return w->error ? w->error : poison(w, err, "%s", what);
}

const struct chan__wire_handle *
chan__writer_handles(const chan_writer *w, size_t *ret_count)
{
	*ret_count = w->nhandles;
	return w->handles;
}

CHAN_EXPORT int
chan_writer_frame(const chan_writer *w, void *buf, size_t cap, int *fds, size_t fds_cap,
		  size_t *ret_len, size_t *ret_nfds)
{
	uint8_t *out = buf;
	size_t len, from = CHAN_HEADER_SIZE, o = CHAN_HEADER_SIZE;
	int r;

	if (!ret_len || !ret_nfds || (!buf && cap) || (!fds && fds_cap))
		return CHAN_E_INVALID_ARGUMENT;
	if ((r = chan__writer_seal(w, out && cap >= CHAN_HEADER_SIZE ? out : (uint8_t[16]){0},
				   &len)) < 0)
		return r;
	*ret_len = len;
	*ret_nfds = w->nhandles;
	if (cap < len || fds_cap < w->nhandles)
		return CHAN_E_BUFFER_TOO_SMALL;
	for (size_t i = 0; i < w->nsegs; i++) {
		memcpy(out + o, w->buf + from, w->segs[i].at - from);
		o += w->segs[i].at - from;
		memcpy(out + o, w->segs[i].p, w->segs[i].n);
		o += w->segs[i].n;
		from = w->segs[i].at;
	}
	memcpy(out + o, w->buf + from, w->len - from);
	for (size_t i = 0; i < w->nhandles; i++)
		fds[i] = w->handles[i].fd;
	return 0;
}
