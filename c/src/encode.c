/* encode.c - value tree -> one frame in canonical form (SPEC.md §5, §7.2).
 *
 * Two passes: size() computes every Value body's size bottom-up (protobuf
 * length prefixes need them), checks the limits and numbers the handles in
 * depth-first order; write() then emits bytes front to back with no checks. */
#include <stdbool.h>
#include <string.h>

#include "internal.h"

struct sizer {
	uint32_t handles;
	int error;
};

static size_t
len_field(unsigned tag_size, size_t body)
{
	return tag_size + varint_size(body) + body;
}

static inline bool
is_submessage(const chan_value *v)
{
	return v->type == CHAN_LIST || v->type == CHAN_MAP || v->type == CHAN_HANDLE;
}

/* Size of v's Value body, from what size_value stored. */
static inline size_t
value_size(const chan_value *v)
{
	return is_submessage(v) ? len_field(1, v->aux.enc_size) : v->aux.enc_size;
}

static inline size_t
entry_size(const chan_value *e)
{
	return (e->key_len ? len_field(1, e->key_len) : 0) + len_field(1, value_size(e));
}

/* Size of the Value body of v; 0 with s->error set on failure.  Stores the
 * size of v's sub-message (list, map, handle) or Value body (others) in
 * v->aux.enc_size for write_value. */
static size_t
size_value(struct sizer *s, chan_value *v, uint32_t depth)
{
	size_t n = 0, sum = 0;

	if (depth > CHAN_HARD_MAX_DEPTH) {
		s->error = CHAN_E_DEPTH_EXCEEDED;
		return 0;
	}
	switch (v->type) {
	case CHAN_NULL:
	case CHAN_BOOL:
		n = 2;
		break;
	case CHAN_INT:
		n = 1 + varint_size(zigzag_encode(v->u.i));
		break;
	case CHAN_FLOAT:
		n = 9;
		break;
	case CHAN_STRING:
	case CHAN_BYTES:
		n = len_field(1, v->u.s.n);
		break;
	case CHAN_LIST:
		for (uint32_t i = 0; i < v->u.c.count; i++) {
			size_t item = size_value(s, v->u.c.items[i], depth + 1);

			if (s->error)
				return 0;
			sum += len_field(1, item);
		}
		break;
	case CHAN_MAP:
		for (uint32_t i = 0; i < v->u.c.count; i++) {
			chan_value *e = v->u.c.items[i];
			size_t val = size_value(s, e, depth + 1);

			if (s->error)
				return 0;
			sum += len_field(1, (e->key_len ? len_field(1, e->key_len) : 0) +
						    len_field(1, val));
		}
		break;
	case CHAN_HANDLE:
		if (s->handles >= CHAN_HARD_MAX_HANDLES) {
			s->error = CHAN_E_HANDLE_LIMIT_EXCEEDED;
			return 0;
		}
		v->u.h.index = s->handles++;
		sum = (v->u.h.index ? 1 + varint_size(v->u.h.index) : 0) + 1 +
		      varint_size(v->kind);
		break;
	}
	if (is_submessage(v)) {
		v->aux.enc_size = sum;
		n = len_field(1, sum);
	} else {
		v->aux.enc_size = n;
	}
	/* Any payload within the hard maximum keeps these sums far from
	 * overflow; bound them as we go so a huge tree cannot wrap. */
	if (n > CHAN_HARD_MAX_PAYLOAD) {
		s->error = CHAN_E_PAYLOAD_TOO_LARGE;
		return 0;
	}
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

/* Write the Value body of v; returns the new end.  fds[] receives handle
 * fds in wire order. */
static uint8_t *
write_value(uint8_t *p, const chan_value *v, int *fds)
{
	uint64_t bits;

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
		p = put_len(p, TAG(CHAN_LIST, WT_LEN), v->aux.enc_size);
		for (uint32_t i = 0; i < v->u.c.count; i++) {
			const chan_value *item = v->u.c.items[i];

			p = put_len(p, TAG(F_LIST_ITEMS, WT_LEN), value_size(item));
			p = write_value(p, item, fds);
		}
		break;
	case CHAN_MAP:
		p = put_len(p, TAG(CHAN_MAP, WT_LEN), v->aux.enc_size);
		for (uint32_t i = 0; i < v->u.c.count; i++) {
			const chan_value *e = v->u.c.items[i];

			p = put_len(p, TAG(F_MAP_ENTRIES, WT_LEN), entry_size(e));
			if (e->key_len) {
				p = put_len(p, TAG(F_ENTRY_KEY, WT_LEN), e->key_len);
				memcpy(p, e->key, e->key_len);
				p += e->key_len;
			}
			p = put_len(p, TAG(F_ENTRY_VALUE, WT_LEN), value_size(e));
			p = write_value(p, e, fds);
		}
		break;
	case CHAN_HANDLE:
		p = put_len(p, TAG(CHAN_HANDLE, WT_LEN), v->aux.enc_size);
		if (v->u.h.index) {
			*p++ = TAG(F_HANDLE_INDEX, WT_VARINT);
			p = put_varint(p, v->u.h.index);
		}
		*p++ = TAG(F_HANDLE_KIND, WT_VARINT);
		p = put_varint(p, v->kind);
		fds[v->u.h.index] = v->u.h.fd;
		break;
	}
	return p;
}

static int
encode_size(chan_msg *msg, size_t *ret_payload, uint32_t *ret_handles)
{
	struct sizer s = {0};
	size_t n;

	if (!msg)
		return CHAN_E_INVALID_ARGUMENT;
	if (msg->error)
		return msg->error;
	if (!msg->root)
		return CHAN_E_EMPTY_VALUE;
	n = size_value(&s, msg->root, 1);
	if (s.error)
		return s.error;
	*ret_payload = n;
	*ret_handles = s.handles;
	return 0;
}

CHAN_EXPORT int
chan_encoded_size(chan_msg *msg, size_t *ret_len)
{
	size_t payload = 0;
	uint32_t handles = 0;
	int r = encode_size(msg, &payload, &handles);

	if (r < 0)
		return r;
	if (!ret_len)
		return CHAN_E_INVALID_ARGUMENT;
	*ret_len = CHAN_HEADER_SIZE + payload;
	return 0;
}

CHAN_EXPORT int
chan_encode(chan_msg *msg, void *buf, size_t cap, size_t *ret_len)
{
	size_t payload = 0;
	uint32_t handles = 0;
	uint8_t *p = buf;
	int r = encode_size(msg, &payload, &handles);

	if (r < 0)
		return r;
	if (!ret_len || (!buf && cap))
		return CHAN_E_INVALID_ARGUMENT;
	*ret_len = CHAN_HEADER_SIZE + payload;
	if (cap < CHAN_HEADER_SIZE + payload)
		return CHAN_E_BUFFER_TOO_SMALL;
	if (handles > msg->handle_cap) {
		int *fds = arena_alloc(&msg->arena, handles * sizeof(int));

		if (!fds)
			return CHAN_E_NO_MEMORY;
		msg->handle_fds = fds;
		msg->handle_cap = handles;
	}
	msg->handle_count = handles;
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
	write_value(p + CHAN_HEADER_SIZE, msg->root, msg->handle_fds);
	return 0;
}

CHAN_EXPORT const int *
chan_msg_handles(const chan_msg *msg, size_t *ret_count)
{
	if (!msg)
		return NULL;
	if (ret_count)
		*ret_count = msg->handle_count;
	return msg->handle_fds;
}
