/*
 * decode.c - one frame -> value tree (SPEC.md §5-§9).
 *
 * Pass 1 (walk_*) is the validation walk of SPEC.md §7.3, front to back; the
 * first failing check is the error (§9.3).  It never recurses deeper than the
 * depth limit allows (3 calls per map level), so hostile nesting cannot
 * exhaust the stack (protobuf-c's unpack has no such bound).  It also counts
 * exactly what the tree needs, so pass 2 (build_*) fills one allocation.
 *
 * fds: the caller's array belongs to chan_decode from entry.  They are
 * attached to the message only after every check passed; every failure
 * closes all of them exactly once.
 */
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

struct msgdef {
	uint8_t max_field;
	uint8_t oneof;         /* at most one field in total (Value) */
	uint8_t repeated_mask; /* bit n: field n may repeat */
	uint8_t wt[10];        /* wire type of field n */
};

static const struct msgdef VALUE_DEF = {
	9, 1, 0, {0, WT_LEN, WT_VARINT, WT_VARINT, WT_FIXED64, WT_LEN, WT_LEN, WT_LEN, WT_LEN, WT_LEN}};
static const struct msgdef NULL_DEF = {0, 0, 0, {0}};
static const struct msgdef LIST_DEF = {1, 0, 1u << F_LIST_ITEMS, {0, WT_LEN}};
static const struct msgdef MAP_DEF = {1, 0, 1u << F_MAP_ENTRIES, {0, WT_LEN}};
static const struct msgdef ENTRY_DEF = {2, 0, 0, {0, WT_LEN, WT_LEN}};
static const struct msgdef HANDLE_DEF = {2, 0, 0, {0, WT_VARINT, WT_VARINT}};

struct field {
	uint32_t number;
	uint64_t value;      /* varint value, fixed64 bits, or LEN length */
	const uint8_t *data; /* LEN: first byte of the data */
};

struct walk {
	uint32_t max_depth;
	uint32_t handle_count;
	int64_t prev_index;
	uint32_t refs;
	size_t bytes; /* arena bytes pass 2 will allocate */
};

/*
 * Read a varint.  MALFORMED if it runs past end, is longer than 10 bytes or
 * overflows 64 bits; *nonminimal is set if it has trailing zero groups.
 */
static inline int
get_varint(const uint8_t **pp, const uint8_t *end, uint64_t *ret, bool *nonminimal)
{
	const uint8_t *p = *pp;
	uint64_t v = 0;

	if (p < end && *p < 0x80) {
		*ret = *p;
		*pp = p + 1;
		*nonminimal = false;
		return 0;
	}
	for (unsigned i = 0; i < 10; i++) {
		uint8_t b;

		if (p >= end)
			return CHAN_E_MALFORMED;
		b = *p++;
		if (i == 9 && b > 1)
			return CHAN_E_MALFORMED;
		v |= (uint64_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80)) {
			*nonminimal = i > 0 && b == 0;
			*ret = v;
			*pp = p;
			return 0;
		}
	}
	return CHAN_E_MALFORMED;
}

/* Steps 1-6 of SPEC.md §7.3 for one field of a message of type def. */
static int
next_field(const uint8_t **pp, const uint8_t *end, const struct msgdef *def,
	   uint32_t *prev, struct field *f)
{
	uint64_t tag;
	bool nonmin;
	uint32_t number, wt;
	int r;

	if ((r = get_varint(pp, end, &tag, &nonmin)) < 0 || tag > UINT32_MAX)
		return CHAN_E_MALFORMED;
	if (nonmin)
		return CHAN_E_NONCANONICAL;
	number = (uint32_t)(tag >> 3);
	wt = (uint32_t)(tag & 7);
	if (number == 0 || wt == 3 || wt == 4 || wt > 5)
		return CHAN_E_MALFORMED;
	if (number > def->max_field)
		return CHAN_E_UNKNOWN_FIELD;
	if (wt != def->wt[number])
		return CHAN_E_MALFORMED;
	if (def->oneof ? *prev != 0
		       : number < *prev ||
				 (number == *prev && !(def->repeated_mask & (1u << number))))
		return CHAN_E_NONCANONICAL;
	*prev = number;
	f->number = number;
	switch (wt) {
	case WT_VARINT:
		if ((r = get_varint(pp, end, &f->value, &nonmin)) < 0)
			return r;
		return nonmin ? CHAN_E_NONCANONICAL : 0;
	case WT_FIXED64:
		if (end - *pp < 8)
			return CHAN_E_MALFORMED;
		f->value = 0;
		for (int i = 7; i >= 0; i--)
			f->value = f->value << 8 | (*pp)[i];
		*pp += 8;
		return 0;
	default: /* WT_LEN */
		if ((r = get_varint(pp, end, &f->value, &nonmin)) < 0)
			return r;
		if (nonmin)
			return CHAN_E_NONCANONICAL;
		if (f->value > (uint64_t)(end - *pp))
			return CHAN_E_MALFORMED;
		f->data = *pp;
		*pp += f->value;
		return 0;
	}
}

/* ---- pass 1: validate and count ---- */

static int walk_value(struct walk *w, const uint8_t *p, const uint8_t *end,
		      uint32_t depth);

static int
walk_text(struct walk *w, const struct field *f, bool utf8)
{
	if (utf8 && !chan__utf8_valid(f->data, f->value))
		return CHAN_E_INVALID_UTF8;
	w->bytes += align8(f->value + 1);
	return 0;
}

static int
walk_null(const uint8_t *p, const uint8_t *end)
{
	uint32_t prev = 0;
	struct field f = {0};

	if (p < end)
		return next_field(&p, end, &NULL_DEF, &prev, &f);
	return 0;
}

static size_t
index_bytes(uint32_t count)
{
	uint32_t slots = 16;

	while (slots < count * 2u)
		slots *= 2;
	return align8(sizeof(struct map_index) + (size_t)slots * sizeof(uint32_t));
}

static int
walk_child(struct walk *w, const struct field *f, uint32_t depth)
{
	if (depth + 1 > w->max_depth)
		return CHAN_E_DEPTH_EXCEEDED;
	return walk_value(w, f->data, f->data + f->value, depth + 1);
}

static int
walk_list(struct walk *w, const uint8_t *p, const uint8_t *end, uint32_t depth)
{
	uint32_t prev = 0, n = 0;
	struct field f = {0};
	int r;

	while (p < end) {
		if ((r = next_field(&p, end, &LIST_DEF, &prev, &f)) < 0)
			return r;
		if ((r = walk_child(w, &f, depth)) < 0)
			return r;
		n++;
	}
	w->bytes += align8((size_t)n * sizeof(chan_value *));
	return 0;
}

static int
walk_entry(struct walk *w, const uint8_t *p, const uint8_t *end, uint32_t depth)
{
	uint32_t prev = 0;
	bool has_value = false;
	struct field f = {0};
	int r;

	while (p < end) {
		if ((r = next_field(&p, end, &ENTRY_DEF, &prev, &f)) < 0)
			return r;
		if (f.number == F_ENTRY_KEY) {
			if (f.value == 0)
				return CHAN_E_NONCANONICAL;
			if ((r = walk_text(w, &f, true)) < 0)
				return r;
		} else {
			if ((r = walk_child(w, &f, depth)) < 0)
				return r;
			has_value = true;
		}
	}
	return has_value ? 0 : CHAN_E_EMPTY_VALUE;
}

static int
walk_map(struct walk *w, const uint8_t *p, const uint8_t *end, uint32_t depth)
{
	uint32_t prev = 0, n = 0;
	struct field f = {0};
	int r;

	while (p < end) {
		if ((r = next_field(&p, end, &MAP_DEF, &prev, &f)) < 0)
			return r;
		if ((r = walk_entry(w, f.data, f.data + f.value, depth)) < 0)
			return r;
		n++;
	}
	w->bytes += align8((size_t)n * sizeof(chan_value *));
	if (n > CHAN_MAP_INDEX_MIN)
		w->bytes += index_bytes(n);
	return 0;
}

static int
walk_handle(struct walk *w, const uint8_t *p, const uint8_t *end)
{
	uint32_t prev = 0;
	uint64_t index = 0, kind = 0;
	struct field f = {0};
	int r;

	while (p < end) {
		if ((r = next_field(&p, end, &HANDLE_DEF, &prev, &f)) < 0)
			return r;
		if (f.value == 0)
			return CHAN_E_NONCANONICAL; /* default value written out */
		if (f.number == F_HANDLE_INDEX)
			index = f.value;
		else
			kind = f.value;
	}
	if (kind != CHAN_KIND_FD && kind != CHAN_KIND_CONN)
		return CHAN_E_UNKNOWN_HANDLE_KIND;
	if (index >= w->handle_count)
		return CHAN_E_HANDLE_INDEX_OUT_OF_RANGE;
	if ((int64_t)index <= w->prev_index)
		return CHAN_E_HANDLE_INDEX_OUT_OF_ORDER;
	w->prev_index = (int64_t)index;
	w->refs++;
	return 0;
}

static int
walk_value(struct walk *w, const uint8_t *p, const uint8_t *end, uint32_t depth)
{
	uint32_t prev = 0;
	struct field f = {0};
	int r = 0;

	w->bytes += align8(sizeof(chan_value));
	while (p < end) {
		if ((r = next_field(&p, end, &VALUE_DEF, &prev, &f)) < 0)
			return r;
		switch (f.number) {
		case CHAN_NULL:
			r = walk_null(f.data, f.data + f.value);
			break;
		case CHAN_BOOL:
			r = f.value > 1 ? CHAN_E_NONCANONICAL : 0;
			break;
		case CHAN_INT:
			break;
		case CHAN_FLOAT: {
			double d;

			memcpy(&d, &f.value, sizeof(d));
			if (isnan(d) && f.value != CHAN_CANONICAL_NAN_BITS)
				r = CHAN_E_NONCANONICAL;
			break;
		}
		case CHAN_STRING:
			r = walk_text(w, &f, true);
			break;
		case CHAN_BYTES:
			r = walk_text(w, &f, false);
			break;
		case CHAN_LIST:
			r = walk_list(w, f.data, f.data + f.value, depth);
			break;
		case CHAN_MAP:
			r = walk_map(w, f.data, f.data + f.value, depth);
			break;
		case CHAN_HANDLE:
			r = walk_handle(w, f.data, f.data + f.value);
			break;
		}
		if (r < 0)
			return r;
	}
	return prev ? 0 : CHAN_E_EMPTY_VALUE;
}

/* ---- pass 2: build (input already validated) ---- */

struct build {
	chan_msg *msg;
	int error; /* DUPLICATE_KEY, or NO_MEMORY if pass 1 miscounted */
};

static void *
build_alloc(struct build *b, size_t n)
{
	void *p = arena_alloc(&b->msg->arena, n);

	if (!p && !b->error)
		b->error = CHAN_E_NO_MEMORY;
	return p;
}

static const char *
build_text(struct build *b, const uint8_t *p, size_t n)
{
	char *s = build_alloc(b, n + 1);

	if (!s)
		return NULL;
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

static uint32_t
count_fields(const uint8_t *p, const uint8_t *end)
{
	uint32_t n = 0;
	uint64_t v = 0;
	bool nonmin;

	while (p < end) {
		(void)get_varint(&p, end, &v, &nonmin); /* tag */
		(void)get_varint(&p, end, &v, &nonmin); /* length */
		p += v;
		n++;
	}
	return n;
}

static chan_value *build_value(struct build *b, const uint8_t *p, const uint8_t *end);

static bool
build_container(struct build *b, chan_value *v, const uint8_t *p, const uint8_t *end)
{
	uint32_t n = count_fields(p, end), prev = 0, i = 0;
	struct field f = {0};

	v->u.c.count = v->u.c.cap = n;
	if (!n)
		return true;
	v->u.c.items = build_alloc(b, (size_t)n * sizeof(chan_value *));
	if (!v->u.c.items)
		return false;
	while (p < end) {
		chan_value *item;

		(void)next_field(&p, end, v->type == CHAN_LIST ? &LIST_DEF : &MAP_DEF,
				 &prev, &f);
		if (v->type == CHAN_LIST) {
			item = build_value(b, f.data, f.data + f.value);
		} else {
			const uint8_t *ep = f.data, *eend = f.data + f.value;
			uint32_t eprev = 0;
			struct field ef = {0};
			const char *key = "";
			uint32_t key_len = 0;

			item = NULL;
			while (ep < eend) {
				(void)next_field(&ep, eend, &ENTRY_DEF, &eprev, &ef);
				if (ef.number == F_ENTRY_KEY) {
					key = build_text(b, ef.data, ef.value);
					key_len = (uint32_t)ef.value;
					if (!key)
						return false;
				} else {
					item = build_value(b, ef.data, ef.data + ef.value);
				}
			}
			if (item) {
				item->key = key;
				item->key_len = key_len;
			}
		}
		if (!item)
			return false;
		item->attached = 1;
		v->u.c.items[i++] = item;
	}
	if (v->type == CHAN_MAP) {
		if (n > CHAN_MAP_INDEX_MIN) {
			int r = map_index_build(b->msg, v);

			if (r < 0) {
				b->error = r;
				return false;
			}
		} else {
			for (uint32_t x = 1; x < n; x++)
				for (uint32_t y = 0; y < x; y++)
					if (v->u.c.items[x]->key_len == v->u.c.items[y]->key_len &&
					    !memcmp(v->u.c.items[x]->key, v->u.c.items[y]->key,
						    v->u.c.items[x]->key_len)) {
						b->error = CHAN_E_DUPLICATE_KEY;
						return false;
					}
		}
	}
	return true;
}

static chan_value *
build_value(struct build *b, const uint8_t *p, const uint8_t *end)
{
	chan_value *v = build_alloc(b, sizeof(*v));
	uint32_t prev = 0;
	struct field f = {0};

	if (!v)
		return NULL;
	memset(v, 0, sizeof(*v));
	v->msg = b->msg;
	(void)next_field(&p, end, &VALUE_DEF, &prev, &f);
	v->type = (uint8_t)f.number;
	switch (f.number) {
	case CHAN_NULL:
		break;
	case CHAN_BOOL:
		v->u.b = (int)f.value;
		break;
	case CHAN_INT:
		v->u.i = zigzag_decode(f.value);
		break;
	case CHAN_FLOAT:
		memcpy(&v->u.f, &f.value, sizeof(v->u.f));
		break;
	case CHAN_STRING:
	case CHAN_BYTES:
		v->u.s.p = build_text(b, f.data, f.value);
		v->u.s.n = f.value;
		if (!v->u.s.p)
			return NULL;
		break;
	case CHAN_LIST:
	case CHAN_MAP:
		if (!build_container(b, v, f.data, f.data + f.value))
			return NULL;
		break;
	case CHAN_HANDLE: {
		const uint8_t *hp = f.data, *hend = f.data + f.value;
		uint32_t hprev = 0;
		struct field hf = {0};

		while (hp < hend) {
			(void)next_field(&hp, hend, &HANDLE_DEF, &hprev, &hf);
			if (hf.number == F_HANDLE_INDEX)
				v->u.h.index = (uint32_t)hf.value;
			else
				v->kind = (uint8_t)hf.value;
		}
		v->u.h.fd = -1; /* attached after every check passed */
		msg_add_handle(b->msg, v);
		break;
	}
	}
	return v;
}

/* ---- entry point ---- */

static int
fail(int err, int *fds, size_t nfds)
{
	if (fds)
		chan__close_fds(fds, nfds);
	return err;
}

CHAN_EXPORT int
chan_decode(const void *buf, size_t len, int *fds, size_t nfds, unsigned flags,
	    const struct chan_limits *limits, const struct chan_allocator *allocator,
	    chan_msg **ret_msg, size_t *ret_consumed)
{
	const uint8_t *p = buf, *payload, *end;
	struct chan_limits lim = chan__limits(limits);
	struct chan_header h;
	struct walk w = {0};
	struct build b = {0};
	struct arena arena = {0};
	struct arena_chunk *chunk;
	size_t hdr = align8(sizeof(struct arena_chunk)), total;
	bool detached = flags & CHAN_DECODE_DETACHED;
	int r;

	if (!ret_msg || (!buf && len) || (!fds && nfds) || (detached && nfds) ||
	    (flags & ~(unsigned)CHAN_DECODE_DETACHED))
		return fail(CHAN_E_INVALID_ARGUMENT, fds, nfds);
	/* SPEC.md §9.3: the frame-level checks, in order. */
	if ((r = chan_header_parse(buf, len, &h)) < 0)
		return fail(r, fds, nfds);
	if (h.payload_length > lim.max_payload)
		return fail(CHAN_E_PAYLOAD_TOO_LARGE, fds, nfds);
	if (len - CHAN_HEADER_SIZE < h.payload_length)
		return fail(CHAN_E_TRUNCATED, fds, nfds);
	if ((r = chan_header_check(&h, &lim)) < 0)
		return fail(r, fds, nfds);
	if (!detached && nfds < h.handle_count)
		return fail(CHAN_E_TOO_FEW_HANDLES, fds, nfds);
	if (!detached && nfds > h.handle_count)
		return fail(CHAN_E_TOO_MANY_HANDLES, fds, nfds);

	payload = p + CHAN_HEADER_SIZE;
	end = payload + h.payload_length;
	w.max_depth = lim.max_depth;
	w.handle_count = h.handle_count;
	w.prev_index = -1;
	w.bytes = align8(sizeof(chan_msg)) + align8((size_t)h.handle_count * sizeof(int));
	if ((r = walk_value(&w, payload, end, 1)) < 0)
		return fail(r, fds, nfds);
	if (w.refs < h.handle_count)
		return fail(CHAN_E_UNREFERENCED_HANDLE, fds, nfds);

	/* Pass 2 into one chunk of exactly the size pass 1 counted. */
	total = w.bytes;
	if (allocator && allocator->alloc && allocator->free)
		arena.allocator = *allocator;
	chunk = chan__alloc(&arena.allocator, hdr + total);
	if (!chunk)
		return fail(CHAN_E_NO_MEMORY, fds, nfds);
	chunk->next = NULL;
	chunk->size = total;
	chunk->used = 0;
	arena.head = chunk;
	b.msg = arena_alloc(&arena, sizeof(chan_msg));
	msg_init(b.msg, allocator);
	b.msg->arena = arena;
	b.msg->handle_count = b.msg->handle_cap = h.handle_count;
	b.msg->handle_fds = arena_alloc(&b.msg->arena, (size_t)h.handle_count * sizeof(int));
	b.msg->root = build_value(&b, payload, end);
	if (!b.msg->root) {
		chan_msg_free(b.msg); /* no fd is attached yet */
		return fail(b.error ? b.error : CHAN_E_NO_MEMORY, fds, nfds);
	}
	b.msg->root->attached = 1;

	/* Kinds are checked last (SPEC.md §7.3): they need the descriptors. */
	if (!detached) {
		for (chan_value *v = b.msg->handles_head; v; v = v->u.h.next) {
			if (v->kind == CHAN_KIND_CONN &&
			    (r = chan__check_conn_fd(fds[v->u.h.index])) < 0) {
				chan_msg_free(b.msg);
				return fail(r == CHAN_E_SYSTEM ? CHAN_E_WRONG_HANDLE_KIND : r,
					    fds, nfds);
			}
		}
	}
	for (chan_value *v = b.msg->handles_head; v; v = v->u.h.next) {
		v->u.h.fd = detached ? -1 : fds[v->u.h.index];
		b.msg->handle_fds[v->u.h.index] = v->u.h.fd;
	}
	*ret_msg = b.msg;
	if (ret_consumed)
		*ret_consumed = CHAN_HEADER_SIZE + h.payload_length;
	return 0;
}
