/* encode.c - value tree -> one frame in canonical form (SPEC.md §5, §7.2).
 *
 * Two passes over a tree that is never modified (one message may be encoded
 * by several threads at once): size_value() computes the body size of every
 * list and map bottom-up (protobuf length prefixes need them) into the
 * caller's scratch array, in pre-order, and checks the limits; write_value()
 * then emits bytes front to back, taking the sizes in the same order.  A
 * handle's size follows from its index (its position in the walk), so it
 * needs no slot. */
#include <stdbool.h>
#include <string.h>

#include "internal.h"

struct sizer {
	struct chan__enc *e;
	uint32_t handles;
	int error;
};

static size_t
len_field(unsigned tag_size, size_t body)
{
	return tag_size + varint_size(body) + body;
}

static inline bool
is_container(const chan_value *v)
{
	return v->type == CHAN_LIST || v->type == CHAN_MAP;
}

/* The Value body size of a scalar (null, bool, int, float, string, bytes);
 * 0 for a list, map or handle, whose size depends on the walk. */
static inline size_t
scalar_size(const chan_value *v)
{
	switch (v->type) {
	case CHAN_NULL:
	case CHAN_BOOL:
		return 2;
	case CHAN_INT:
		return 1 + varint_size(zigzag_encode(v->u.i));
	case CHAN_FLOAT:
		return 9;
	case CHAN_STRING:
	case CHAN_BYTES:
		return len_field(1, v->u.s.n);
	case CHAN_CHANNEL: /* Channel{id = 1}: at most 7 bytes */
		return 3 + varint_size(v->u.ch.id);
	}
	return 0;
}

static inline size_t
handle_body(uint32_t index, unsigned kind)
{
	return (index ? 1 + varint_size(index) : 0) + 1 + varint_size(kind);
}

void
chan__enc_init(struct chan__enc *e, const struct chan_allocator *a)
{
	e->sizes = e->small;
	e->cap = sizeof(e->small) / sizeof(e->small[0]);
	e->n = e->next = 0;
	e->allocator = a;
}

void
chan__enc_fini(struct chan__enc *e)
{
	if (e->sizes != e->small)
		chan__free(e->allocator, e->sizes);
	e->sizes = e->small;
	e->cap = sizeof(e->small) / sizeof(e->small[0]);
}

/* A slot for the next container's size; -1 on NO_MEMORY. */
static long
reserve_slot(struct sizer *s)
{
	struct chan__enc *e = s->e;

	if (e->n == e->cap) {
		size_t cap = e->cap * 2;
		uint32_t *p = chan__alloc(e->allocator, cap * sizeof(*p));

		if (!p) {
			s->error = CHAN_E_NO_MEMORY;
			return -1;
		}
		memcpy(p, e->sizes, e->n * sizeof(*p));
		if (e->sizes != e->small)
			chan__free(e->allocator, e->sizes);
		e->sizes = p;
		e->cap = cap;
	}
	return (long)e->n++;
}

/* Size of the Value body of v; 0 with s->error set on failure. */
static size_t
size_value(struct sizer *s, const chan_value *v, uint32_t depth)
{
	size_t n = 0, sum = 0;
	long slot;

	if (depth > CHAN_HARD_MAX_DEPTH) {
		s->error = CHAN_E_DEPTH_EXCEEDED;
		return 0;
	}
	if (v->type == CHAN_CHANNEL && !v->u.ch.id) {
		/* Opened, not sent: its id is assigned when it is sent on its
		 * connection (SPEC.md §18.3 rule 1). */
		s->error = CHAN_E_CHANNEL_NOT_TRANSFERABLE;
		return 0;
	}
	if ((n = scalar_size(v)))
		return n;
	if (v->type == CHAN_HANDLE) {
		if (s->handles >= CHAN_HARD_MAX_HANDLES) {
			s->error = CHAN_E_HANDLE_LIMIT_EXCEEDED;
			return 0;
		}
		return len_field(1, handle_body(s->handles++, v->kind));
	}
	/* A list or a map. */
	if ((slot = reserve_slot(s)) < 0)
		return 0;
	for (uint32_t i = 0; i < v->u.c.count; i++) {
		const chan_value *e = v->u.c.items[i];
		size_t item;

		if (e->type == CHAN_INT && v->type == CHAN_LIST) { /* inline, as written */
			sum += 3 + varint_size(zigzag_encode(e->u.i));
			continue;
		}
		item = size_value(s, e, depth + 1);

		if (s->error)
			return 0;
		if (v->type == CHAN_LIST)
			sum += len_field(1, item);
		else
			sum += len_field(1, (e->key_len ? len_field(1, e->key_len) : 0) +
						    len_field(1, item));
		/* Any payload within the hard maximum keeps these sums far
		 * from overflow; bound them as we go so a huge tree cannot
		 * wrap. */
		if (sum > CHAN_HARD_MAX_PAYLOAD) {
			s->error = CHAN_E_PAYLOAD_TOO_LARGE;
			return 0;
		}
	}
	if (sum > CHAN_HARD_MAX_PAYLOAD) { /* inline int items skip the check above */
		s->error = CHAN_E_PAYLOAD_TOO_LARGE;
		return 0;
	}
	s->e->sizes[slot] = (uint32_t)sum;
	n = len_field(1, sum);
	return n;
}

static uint8_t *
put_varint(uint8_t *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

static uint8_t *
put_len(uint8_t *p, uint8_t tag, size_t len)
{
	*p++ = tag;
	return put_varint(p, len);
}

#define TAG(field, wt) ((uint8_t)((field) << 3 | (wt)))

struct writer {
	struct chan__enc *e;
	uint32_t handles;
	struct chan__wire_handle *table;
};

/* Size of item's Value body; a container's is the next unread slot (it is
 * the next container of the pre-order walk). */
static inline size_t
item_size(const struct writer *w, const chan_value *v)
{
	size_t n = scalar_size(v);

	if (n)
		return n;
	if (v->type == CHAN_HANDLE)
		return len_field(1, handle_body(w->handles, v->kind));
	return len_field(1, w->e->sizes[w->e->next]);
}

/* Write the Value body of v; returns the new end. */
static uint8_t *
write_value(struct writer *w, uint8_t *p, const chan_value *v)
{
	uint64_t bits;
	uint32_t index;

	switch (v->type) {
	case CHAN_NULL:
		*p++ = TAG(CHAN_NULL, WT_LEN);
		*p++ = 0;
		break;
	case CHAN_BOOL:
		*p++ = TAG(CHAN_BOOL, WT_VARINT);
		*p++ = (uint8_t)v->u.b;
		break;
	case CHAN_INT:
		*p++ = TAG(CHAN_INT, WT_VARINT);
		p = put_varint(p, zigzag_encode(v->u.i));
		break;
	case CHAN_FLOAT:
		*p++ = TAG(CHAN_FLOAT, WT_FIXED64);
		memcpy(&bits, &v->u.f, 8);
		for (int i = 0; i < 8; i++)
			*p++ = (uint8_t)(bits >> (8 * i));
		break;
	case CHAN_STRING:
	case CHAN_BYTES:
		p = put_len(p, TAG(v->type, WT_LEN), v->u.s.n);
		if (v->u.s.n)
			memcpy(p, v->u.s.p, v->u.s.n);
		p += v->u.s.n;
		break;
	case CHAN_LIST:
		p = put_len(p, TAG(CHAN_LIST, WT_LEN), w->e->sizes[w->e->next++]);
		for (uint32_t i = 0; i < v->u.c.count; i++) {
			const chan_value *item = v->u.c.items[i];

			if (item->type == CHAN_INT) { /* the commonest item, inline */
				uint64_t z = zigzag_encode(item->u.i);

				*p++ = TAG(F_LIST_ITEMS, WT_LEN);
				*p++ = (uint8_t)(1 + varint_size(z)); /* at most 11 */
				*p++ = TAG(CHAN_INT, WT_VARINT);
				p = put_varint(p, z);
				continue;
			}
			p = put_len(p, TAG(F_LIST_ITEMS, WT_LEN), item_size(w, item));
			p = write_value(w, p, item);
		}
		break;
	case CHAN_MAP:
		p = put_len(p, TAG(CHAN_MAP, WT_LEN), w->e->sizes[w->e->next++]);
		for (uint32_t i = 0; i < v->u.c.count; i++) {
			const chan_value *e = v->u.c.items[i];
			size_t val = item_size(w, e);

			p = put_len(p, TAG(F_MAP_ENTRIES, WT_LEN),
				    (e->key_len ? len_field(1, e->key_len) : 0) +
					    len_field(1, val));
			if (e->key_len) {
				p = put_len(p, TAG(F_ENTRY_KEY, WT_LEN), e->key_len);
				memcpy(p, e->key, e->key_len);
				p += e->key_len;
			}
			p = put_len(p, TAG(F_ENTRY_VALUE, WT_LEN), val);
			p = write_value(w, p, e);
		}
		break;
	case CHAN_CHANNEL:
		*p++ = TAG(CHAN_CHANNEL, WT_LEN);
		*p++ = (uint8_t)(1 + varint_size(v->u.ch.id));
		*p++ = TAG(F_CHANNEL_ID, WT_VARINT);
		p = put_varint(p, v->u.ch.id);
		break;
	case CHAN_HANDLE:
		index = w->handles++;
		p = put_len(p, TAG(CHAN_HANDLE, WT_LEN), handle_body(index, v->kind));
		if (index) {
			*p++ = TAG(F_HANDLE_INDEX, WT_VARINT);
			p = put_varint(p, index);
		}
		*p++ = TAG(F_HANDLE_KIND, WT_VARINT);
		p = put_varint(p, v->kind);
		if (w->table) {
			w->table[index].fd = v->u.h.fd;
			w->table[index].kind = (enum chan_kind)v->kind;
			w->table[index].socket_id = v->u.h.socket_id;
		}
		break;
	}
	return p;
}

int
chan__encode_size(const chan_msg *msg, struct chan__enc *e, size_t *ret_len,
		  uint32_t *ret_nhandles)
{
	struct sizer s = {.e = e};
	size_t n;

	if (!msg)
		return CHAN_E_INVALID_ARGUMENT;
	if (msg->error)
		return msg->error;
	if (!msg->root)
		return CHAN_E_EMPTY_VALUE;
	e->n = e->next = 0;
	n = size_value(&s, msg->root, 1);
	if (s.error)
		return s.error;
	if (n > CHAN_HARD_MAX_PAYLOAD)
		return CHAN_E_PAYLOAD_TOO_LARGE;
	*ret_len = CHAN_HEADER_SIZE + n;
	*ret_nhandles = s.handles;
	return 0;
}

void
chan__encode_write(const chan_msg *msg, struct chan__enc *e, void *buf,
		   struct chan__wire_handle *table)
{
	struct writer w = {.e = e, .table = table};
	uint8_t *p = buf, *end;
	size_t payload;
	uint32_t handles;

	e->next = 0;
	end = write_value(&w, p + CHAN_HEADER_SIZE, msg->root);
	payload = (size_t)(end - p) - CHAN_HEADER_SIZE;
	handles = w.handles;
	p[0] = CHAN_MAGIC0;
	p[1] = CHAN_MAGIC1;
	p[2] = CHAN_MAGIC2;
	p[3] = CHAN_MAGIC3;
	p[4] = CHAN_WIRE_VERSION;
	p[5] = 0; /* flags */
	p[6] = (uint8_t)handles;
	p[7] = (uint8_t)(handles >> 8);
	memset(p + 8, 0, 4); /* channel */
	p[12] = (uint8_t)payload;
	p[13] = (uint8_t)(payload >> 8);
	p[14] = (uint8_t)(payload >> 16);
	p[15] = (uint8_t)(payload >> 24);
}

CHAN_EXPORT int
chan_encoded_size(const chan_msg *msg, size_t *ret_len)
{
	struct chan__enc e;
	uint32_t handles;
	size_t len;
	int r;

	if (!msg || !ret_len)
		return CHAN_E_INVALID_ARGUMENT;
	chan__enc_init(&e, &msg->arena.allocator);
	r = chan__encode_size(msg, &e, &len, &handles);
	chan__enc_fini(&e);
	if (r == 0)
		*ret_len = len;
	return r;
}

CHAN_EXPORT int
chan_encode(const chan_msg *msg, void *buf, size_t cap, size_t *ret_len)
{
	struct chan__enc e;
	uint32_t handles;
	size_t len;
	int r;

	if (!msg || !ret_len || (!buf && cap))
		return CHAN_E_INVALID_ARGUMENT;
	chan__enc_init(&e, &msg->arena.allocator);
	r = chan__encode_size(msg, &e, &len, &handles);
	if (r == 0) {
		*ret_len = len;
		if (cap < len)
			r = CHAN_E_BUFFER_TOO_SMALL;
		else
			chan__encode_write(msg, &e, buf, NULL);
	}
	chan__enc_fini(&e);
	return r;
}

/* The handle table in wire order: the depth-first order of the tree. */
static int
collect_handles(const chan_value *v, int *fds, size_t cap, size_t *n, uint32_t depth)
{
	int r = 0;

	if (depth > CHAN_HARD_MAX_DEPTH)
		return CHAN_E_DEPTH_EXCEEDED;
	if (v->type == CHAN_HANDLE) {
		if (*n < cap)
			fds[*n] = v->u.h.fd;
		++*n;
	} else if (is_container(v)) {
		for (uint32_t i = 0; i < v->u.c.count && r == 0; i++)
			r = collect_handles(v->u.c.items[i], fds, cap, n, depth + 1);
	}
	return r;
}

CHAN_EXPORT int
chan_msg_borrow_handles(const chan_msg *msg, int *fds, size_t cap, size_t *ret_count)
{
	size_t n = 0;
	int r;

	if (!msg || !ret_count || (!fds && cap))
		return CHAN_E_INVALID_ARGUMENT;
	if (msg->error)
		return msg->error;
	if (!msg->root)
		return CHAN_E_EMPTY_VALUE;
	if ((r = collect_handles(msg->root, fds, cap, &n, 1)) < 0)
		return r;
	*ret_count = n;
	return 0;
}
