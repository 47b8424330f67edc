/*
 * decode.c - one frame -> value tree (SPEC.md §5-§9).
 *
 * One pass (dec_*) is the validation walk of SPEC.md §7.3, front to back,
 * building the tree as it goes; the first failing check is the error (§9.3).
 * It never recurses deeper than the depth limit allows (3 calls per map
 * level), so hostile nesting cannot exhaust the stack (protobuf-c's unpack has
 * no such bound).  The fast path expects the one canonical byte at each
 * position; anything else goes through next_field(), which applies steps 1-6
 * with every check and so names the precise error.
 *
 * Descriptors are not the codec's business: the walk checks the index rules
 * against the header's handle count, and handles.c gives the frame's fds to
 * the message afterwards (chan__handles_attach).
 */
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

struct msgdef {
	uint8_t max_field;
	uint8_t oneof;         /* at most one field in total (Value) */
	uint8_t repeated_mask; /* bit n: field n may repeat */
	uint8_t wt[11];        /* wire type of field n */
};

static const struct msgdef VALUE_DEF = {
	9, 1, 0, {0, WT_LEN, WT_VARINT, WT_VARINT, WT_FIXED64, WT_LEN, WT_LEN, WT_LEN, WT_LEN, WT_LEN}};
/* Revision 1.1 with "channels" accepted: Value.channel_value (SPEC.md §18.2). */
static const struct msgdef VALUE_DEF_11 = {
	10, 1, 0,
	{0, WT_LEN, WT_VARINT, WT_VARINT, WT_FIXED64, WT_LEN, WT_LEN, WT_LEN, WT_LEN, WT_LEN, WT_LEN}};
static const struct msgdef CHANNEL_DEF = {1, 0, 0, {0, WT_VARINT}};
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

/* ---- the walk: validate and build in one pass ---- */

struct dec {
	chan_msg *msg;
	uint32_t max_depth;
	uint32_t handle_count;
	int64_t prev_index;
	uint32_t refs;
	int error;          /* the first error; the walk stops there */
	bool duplicate_key; /* reported after the walk (SPEC.md §7.3 step 10) */
	bool borrow;        /* CHAN_DECODE_BORROW */
	const struct msgdef *vdef; /* VALUE_DEF, or VALUE_DEF_11 */
};

/* The precise error for a field that the fast path did not expect: run
 * steps 1-6 on it (they must fail: the fast path accepts every valid field
 * of its position). */
static int
field_error(const uint8_t *p, const uint8_t *end, const struct msgdef *def, uint32_t prev)
{
	struct field f;
	int r = next_field(&p, end, def, &prev, &f);

	return r < 0 ? r : CHAN_E_MALFORMED; /* not reached on valid input */
}

static inline int
read_len(const uint8_t **pp, const uint8_t *end, uint64_t *len)
{
	bool nonmin;
	int r;

	if (*pp < end && **pp < 0x80) {
		*len = *(*pp)++;
	} else {
		if ((r = get_varint(pp, end, len, &nonmin)) < 0)
			return r;
		if (nonmin)
			return CHAN_E_NONCANONICAL;
	}
	return *len > (uint64_t)(end - *pp) ? CHAN_E_MALFORMED : 0;
}

static inline void *
dec_alloc(struct dec *d, size_t n)
{
	void *p = arena_alloc(&d->msg->arena, n);

	if (!p && !d->error)
		d->error = CHAN_E_NO_MEMORY;
	return p;
}

static const char *
dec_text(struct dec *d, const uint8_t *p, size_t n)
{
	char *s = dec_alloc(d, n + 1);

	if (s) {
		memcpy(s, p, n);
		s[n] = '\0';
	}
	return s;
}

static chan_value *dec_value(struct dec *d, const uint8_t *p, const uint8_t *end,
			     uint32_t depth);

static inline int
fail_dec(struct dec *d, int err)
{
	if (!d->error)
		d->error = err;
	return d->error;
}

/* Move a container's children from the decode-time list into its array. */
static bool
finish_container(struct dec *d, chan_value *v, chan_value *first, uint32_t n)
{
	v->u.c.count = v->u.c.cap = n;
	if (!n)
		return true;
	v->u.c.items = dec_alloc(d, (size_t)n * sizeof(chan_value *));
	if (!v->u.c.items)
		return false;
	for (uint32_t i = 0; i < n; i++, first = first->aux.next)
		v->u.c.items[i] = first;
	return true;
}

/* A new node of the tree; the caller sets its contents. */
static inline chan_value *
dec_node(struct dec *d, unsigned type)
{
	chan_value *v = dec_alloc(d, sizeof(*v));

	if (v) {
		v->type = (uint8_t)type;
		v->kind = 0;
		v->attached = 1;
		v->borrowed = 0;
		v->key = NULL;
		v->key_len = 0;
		v->msg = d->msg;
	}
	return v;
}

/* A Value that is an int or a bool (the commonest list items and map
 * values) in canonical form, built without the general walk.  NULL: take
 * the general path, which also names any error. */
static inline chan_value *
dec_small_scalar(struct dec *d, const uint8_t *p, uint64_t len)
{
	chan_value *v;
	uint64_t x;

	if (len < 2 || len > 11)
		return NULL;
	if (p[0] == (CHAN_INT << 3 | WT_VARINT)) {
		/* p[1..len): a minimal varint that fills the Value exactly */
		uint8_t lastb = p[len - 1];

		if ((lastb & 0x80) || (len > 2 && lastb == 0) || (len == 11 && lastb > 1))
			return NULL;
		x = lastb;
		for (uint64_t i = len - 2; i >= 1; i--) {
			if (!(p[i] & 0x80))
				return NULL;
			x = x << 7 | (p[i] & 0x7f);
		}
		if (!(v = dec_node(d, CHAN_INT)))
			return NULL;
		v->u.i = zigzag_decode(x);
		return v;
	}
	if (len != 2 || p[0] != (CHAN_BOOL << 3 | WT_VARINT) || p[1] > 1)
		return NULL;
	if (!(v = dec_node(d, CHAN_BOOL)))
		return NULL;
	v->u.b = p[1];
	return v;
}

static bool
keys_unique(struct dec *d, chan_value *map)
{
	uint32_t n = map->u.c.count;

	if (n > CHAN_MAP_INDEX_MIN) {
		int r = chan__map_index_build(d->msg, map);

		if (r == CHAN_E_NO_MEMORY)
			fail_dec(d, r);
		return r == 0;
	}
	/* A 64-bit filter on (length, first and last byte) leaves the pairwise
	 * comparison to the keys that might collide. */
	uint64_t seen = 0;

	for (uint32_t x = 0; x < n; x++) {
		const chan_value *a = map->u.c.items[x];
		unsigned h = a->key_len ? (a->key_len * 31u + (uint8_t)a->key[0] * 7u +
					   (uint8_t)a->key[a->key_len - 1]) & 63u
					: 0;
		uint64_t bit = UINT64_C(1) << h;

		if (!(seen & bit)) {
			seen |= bit;
			continue;
		}
		for (uint32_t y = 0; y < x; y++) {
			const chan_value *b = map->u.c.items[y];

			if (a->key_len == b->key_len &&
			    (!a->key_len || (a->key[0] == b->key[0] &&
					     !memcmp(a->key, b->key, a->key_len))))
				return false;
		}
	}
	return true;
}

/* One Entry: the key (omitted when empty), then the value. */
static chan_value *
dec_entry(struct dec *d, const uint8_t *p, const uint8_t *end, uint32_t depth)
{
	const char *key = "";
	uint64_t key_len = 0, len;
	uint32_t prev = 0;
	chan_value *v;
	int r;

	if (p < end && *p == (F_ENTRY_KEY << 3 | WT_LEN)) {
		p++;
		if ((r = read_len(&p, end, &key_len)) < 0) {
			fail_dec(d, r);
			return NULL;
		}
		if (key_len == 0) {
			fail_dec(d, CHAN_E_NONCANONICAL);
			return NULL;
		}
		if ((r = chan__key_check(p, key_len)) < 0) {
			fail_dec(d, r);
			return NULL;
		}
		if (!(key = dec_text(d, p, key_len)))
			return NULL;
		p += key_len;
		prev = F_ENTRY_KEY;
	}
	if (p >= end) {
		fail_dec(d, CHAN_E_EMPTY_VALUE);
		return NULL;
	}
	if (*p != (F_ENTRY_VALUE << 3 | WT_LEN)) {
		fail_dec(d, field_error(p, end, &ENTRY_DEF, prev));
		return NULL;
	}
	p++;
	if ((r = read_len(&p, end, &len)) < 0) {
		fail_dec(d, r);
		return NULL;
	}
	if (depth + 1 > d->max_depth) {
		fail_dec(d, CHAN_E_DEPTH_EXCEEDED);
		return NULL;
	}
	if (!(v = dec_small_scalar(d, p, len)) &&
	    (d->error || !(v = dec_value(d, p, p + len, depth + 1))))
		return NULL;
	p += len;
	if (p < end) {
		fail_dec(d, field_error(p, end, &ENTRY_DEF, F_ENTRY_VALUE));
		return NULL;
	}
	v->key = key;
	v->key_len = (uint32_t)key_len;
	return v;
}

/* List.items or Map.entries: one repeated LEN field 1, in order. */
static bool
dec_container(struct dec *d, chan_value *v, const uint8_t *p, const uint8_t *end,
	      uint32_t depth)
{
	bool is_list = v->type == CHAN_LIST;
	chan_value *first = NULL, *last = NULL, *item;
	uint32_t n = 0;
	uint64_t len;
	int r;

	while (p < end) {
		if (*p != (1 << 3 | WT_LEN)) {
			fail_dec(d, field_error(p, end, is_list ? &LIST_DEF : &MAP_DEF, n ? 1 : 0));
			return false;
		}
		p++;
		if ((r = read_len(&p, end, &len)) < 0) {
			fail_dec(d, r);
			return false;
		}
		if (!is_list) {
			item = dec_entry(d, p, p + len, depth);
		} else if (depth + 1 > d->max_depth) {
			fail_dec(d, CHAN_E_DEPTH_EXCEEDED);
			return false;
		} else if (!(item = dec_small_scalar(d, p, len)) && !d->error) {
			item = dec_value(d, p, p + len, depth + 1);
		}
		if (!item)
			return false;
		p += len;
		item->aux.next = NULL;
		if (last)
			last->aux.next = item;
		else
			first = item;
		last = item;
		n++;
	}
	if (!finish_container(d, v, first, n))
		return false;
	if (!is_list && !d->duplicate_key && !keys_unique(d, v)) {
		if (d->error)
			return false;
		d->duplicate_key = true; /* reported after the walk */
	}
	return true;
}

/* Handle{index = 1 (omitted when 0), kind = 2}, then the index rules. */
static bool
dec_handle(struct dec *d, chan_value *v, const uint8_t *p, const uint8_t *end)
{
	uint64_t index = 0, kind = 0;
	uint32_t prev = 0;
	struct field f;
	int r = 0;

	while (p < end) {
		if ((r = next_field(&p, end, &HANDLE_DEF, &prev, &f)) < 0) {
			fail_dec(d, r);
			return false;
		}
		if (f.value == 0) {
			fail_dec(d, CHAN_E_NONCANONICAL); /* default value written out */
			return false;
		}
		if (f.number == F_HANDLE_INDEX)
			index = f.value;
		else
			kind = f.value;
	}
	if (kind != CHAN_KIND_FD && kind != CHAN_KIND_CONN)
		r = CHAN_E_UNKNOWN_HANDLE_KIND;
	else if (index >= d->handle_count)
		r = CHAN_E_HANDLE_INDEX_OUT_OF_RANGE;
	else if ((int64_t)index <= d->prev_index)
		r = CHAN_E_HANDLE_INDEX_OUT_OF_ORDER;
	if (r < 0) {
		fail_dec(d, r);
		return false;
	}
	d->prev_index = (int64_t)index;
	d->refs++;
	v->kind = (uint8_t)kind;
	v->u.h.index = (uint32_t)index;
	v->u.h.fd = -1; /* attached after every check passed */
	v->u.h.socket_id = 0;
	chan__msg_add_handle(d->msg, v);
	return true;
}

/* Channel{id = 1}: SPEC.md §18.2 rule 2. */
static bool
dec_channel(struct dec *d, chan_value *v, const uint8_t *p, const uint8_t *end)
{
	uint64_t id = 0;
	uint32_t prev = 0;
	struct field f;
	int r;

	while (p < end) {
		if ((r = next_field(&p, end, &CHANNEL_DEF, &prev, &f)) < 0) {
			fail_dec(d, r);
			return false;
		}
		if (f.value == 0) {
			fail_dec(d, CHAN_E_NONCANONICAL); /* default value written out */
			return false;
		}
		id = f.value;
	}
	if (id == 0 || id > 0x7fffffffu) {
		fail_dec(d, CHAN_E_UNKNOWN_CHANNEL);
		return false;
	}
	v->u.ch.id = (uint32_t)id;
	v->u.ch.rec = NULL;
	chan__msg_add_channel(d->msg, v);
	return true;
}

static chan_value *
dec_value(struct dec *d, const uint8_t *p, const uint8_t *end, uint32_t depth)
{
	chan_value *v;
	uint32_t number, prev = 0;
	struct field f;
	int r;
	bool ok = true;

	if (p >= end) {
		fail_dec(d, CHAN_E_EMPTY_VALUE);
		return NULL;
	}
	/* Every canonical member is a one-byte tag followed by its value: read
	 * those directly; anything else goes through next_field, which does
	 * steps 1-6 with every check and names the error. */
	switch (*p) {
	case CHAN_BOOL << 3 | WT_VARINT:
	case CHAN_INT << 3 | WT_VARINT:
		if (p + 1 < end && p[1] < 0x80) {
			f.number = *p >> 3;
			f.value = p[1];
			p += 2;
			break;
		}
		goto slow;
	case CHAN_FLOAT << 3 | WT_FIXED64:
		if (end - p >= 9) {
			f.number = CHAN_FLOAT;
			memcpy(&f.value, p + 1, 8); /* little-endian hosts; see below */
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
			f.value = __builtin_bswap64(f.value);
#endif
			p += 9;
			break;
		}
		goto slow;
	case CHAN_NULL << 3 | WT_LEN:
	case CHAN_STRING << 3 | WT_LEN:
	case CHAN_BYTES << 3 | WT_LEN:
	case CHAN_LIST << 3 | WT_LEN:
	case CHAN_MAP << 3 | WT_LEN:
	case CHAN_HANDLE << 3 | WT_LEN:
		f.number = *p++ >> 3;
		if ((r = read_len(&p, end, &f.value)) < 0) {
			fail_dec(d, r);
			return NULL;
		}
		f.data = p;
		p += f.value;
		break;
	default:
	slow:
		if ((r = next_field(&p, end, d->vdef, &prev, &f)) < 0) {
			fail_dec(d, r);
			return NULL;
		}
	}
	number = f.number;
	if (!(v = dec_node(d, number)))
		return NULL;
	switch (number) {
	case CHAN_NULL:
		if (f.value) {
			fail_dec(d, field_error(f.data, f.data + f.value, &NULL_DEF, 0));
			return NULL;
		}
		break;
	case CHAN_BOOL:
		if (f.value > 1) {
			fail_dec(d, CHAN_E_NONCANONICAL);
			return NULL;
		}
		v->u.b = (int)f.value;
		break;
	case CHAN_INT:
		v->u.i = zigzag_decode(f.value);
		break;
	case CHAN_FLOAT:
		memcpy(&v->u.f, &f.value, sizeof(v->u.f));
		if (isnan(v->u.f) && f.value != CHAN_CANONICAL_NAN_BITS) {
			fail_dec(d, CHAN_E_NONCANONICAL);
			return NULL;
		}
		break;
	case CHAN_STRING:
		if (!chan__utf8_valid(f.data, f.value)) {
			fail_dec(d, CHAN_E_INVALID_UTF8);
			return NULL;
		}
		/* fall through */
	case CHAN_BYTES:
		v->u.s.n = f.value;
		if (d->borrow && number == CHAN_BYTES && f.value >= CHAN_BORROW_MIN) {
			v->u.s.p = (const char *)f.data; /* the caller keeps buf alive */
			d->msg->borrowed = true;
		} else if (!(v->u.s.p = dec_text(d, f.data, f.value)))
			return NULL;
		break;
	case CHAN_LIST:
	case CHAN_MAP:
		v->u.c.index = NULL;
		ok = dec_container(d, v, f.data, f.data + f.value, depth);
		break;
	case CHAN_HANDLE:
		ok = dec_handle(d, v, f.data, f.data + f.value);
		break;
	case CHAN_CHANNEL:
		ok = dec_channel(d, v, f.data, f.data + f.value);
		break;
	}
	if (!ok)
		return NULL;
	if (p < end) { /* a second member: steps 1-5 say which error */
		fail_dec(d, field_error(p, end, d->vdef, number));
		return NULL;
	}
	return v;
}

/* ---- entry point ---- */

/* First arena chunk: small payloads (the common case) fit it whole, so
 * they cost one allocation.  A large payload is usually a few big strings
 * or bytes values, which need about its size; a large tree of tiny values needs more, and gets it from
 * doubling chunks.  Values cost at most ~45 arena bytes per payload byte (a
 * 2-byte Value becomes a 56-byte node, a pointer and rounding), so any
 * payload needs a bounded number of allocations: at most 7. */
static size_t
first_chunk_size(uint32_t payload)
{
	size_t base = align8(sizeof(chan_msg)) + 512;

	return base + (payload <= 65536 ? (size_t)payload * 8
					: (size_t)payload + (size_t)payload / 4);
}

int
chan__decode_payload(const void *payload, const struct chan_header *h, size_t nfds,
		     unsigned flags, const struct chan_limits *limits,
		     const struct chan_allocator *allocator, chan_msg **ret_msg)
{
	const uint8_t *p = payload, *end = p + h->payload_length;
	struct chan_limits lim = chan__limits(limits);
	struct dec d = {0};
	struct arena arena = {0};
	struct arena_chunk *chunk;
	size_t hdr = align8(sizeof(struct arena_chunk)), size;
	bool detached = flags & CHAN_DECODE_DETACHED;

	/* SPEC.md §9.3: descriptors delivered vs declared, before the walk. */
	if (!detached && nfds < h->handle_count)
		return CHAN_E_TOO_FEW_HANDLES;
	if (!detached && nfds > h->handle_count)
		return CHAN_E_TOO_MANY_HANDLES;

	if (allocator && allocator->alloc && allocator->free)
		arena.allocator = *allocator;
	size = first_chunk_size(h->payload_length);
	chunk = chan__alloc(&arena.allocator, hdr + size);
	if (!chunk)
		return CHAN_E_NO_MEMORY;
	chunk->next = NULL;
	chunk->size = size;
	chunk->used = 0;
	arena.head = chunk;
	arena.next_chunk = size * 2;
	d.msg = arena_alloc(&arena, sizeof(chan_msg));
	chan__msg_init(d.msg, allocator);
	d.msg->arena = arena;
	d.max_depth = lim.max_depth;
	d.borrow = flags & CHAN_DECODE_BORROW;
	d.handle_count = h->handle_count;
	d.prev_index = -1;
	d.vdef = flags & CHAN_DECODE_REVISION_1_1 ? &VALUE_DEF_11 : &VALUE_DEF;

	d.msg->root = dec_value(&d, p, end, 1);
	/* After the walk (SPEC.md §7.3 steps 9-11). */
	if (!d.error && d.refs < h->handle_count)
		d.error = CHAN_E_UNREFERENCED_HANDLE;
	if (!d.error && d.duplicate_key)
		d.error = CHAN_E_DUPLICATE_KEY;
	if (d.error) {
		chan_msg_free(d.msg); /* no fd is attached yet */
		return d.error;
	}
	*ret_msg = d.msg;
	return 0;
}

bool
chan__msg_adopt(chan_msg *msg, void *buf)
{
	if (!msg->borrowed)
		return false;
	msg->adopted = buf;
	return true;
}
