/* value.c - chan_msg and the value tree: building and reading (SPEC.md §4). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

void
chan__msg_init(chan_msg *msg, const struct chan_allocator *a)
{
	memset(msg, 0, sizeof(*msg));
	if (a && a->alloc && a->free)
		msg->arena.allocator = *a;
}

CHAN_EXPORT chan_msg *
chan_msg_new(const struct chan_allocator *allocator)
{
	struct arena arena = {0};
	chan_msg *msg;

	if (allocator && allocator->alloc && allocator->free)
		arena.allocator = *allocator;
	/* The message lives in its own arena's first chunk. */
	msg = arena_alloc(&arena, sizeof(*msg));
	if (!msg)
		return NULL;
	chan__msg_init(msg, allocator);
	msg->arena = arena;
	return msg;
}

CHAN_EXPORT chan_msg *
chan_msg_free(chan_msg *msg)
{
	struct arena_chunk *c, *owner = NULL;
	struct chan_allocator a;

	if (!msg)
		return NULL;
	for (chan_value *ch = msg->channels_head; ch; ch = ch->u.ch.next) {
		if (ch->u.ch.rec) {
			void *rec = ch->u.ch.rec;

			ch->u.ch.rec = NULL;
			chan__chan_release(rec);
		}
	}
	for (chan_value *h = msg->handles_head; h; h = h->u.h.next) {
		if (h->u.h.fd >= 0 && !h->borrowed) {
			int saved = errno;

			close(h->u.h.fd);
			errno = saved;
			h->u.h.fd = -1;
		}
	}
	/* Find the chunk that holds msg itself; free it last. */
	for (c = msg->arena.head; c; c = c->next) {
		char *lo = (char *)c, *hi = lo + align8(sizeof(*c)) + c->size;

		if ((char *)msg >= lo && (char *)msg < hi)
			owner = c;
	}
	a = msg->arena.allocator;
	chan__free(&a, msg->adopted);
	chan__arena_release(&msg->arena, owner);
	chan__free(&a, owner);
	return NULL;
}

int
chan__poison(chan_msg *msg, int err, const char *fmt, ...)
{
	va_list ap;

	if (msg->error)
		return err;
	msg->error = err;
	va_start(ap, fmt);
	vsnprintf(msg->error_message, sizeof(msg->error_message), fmt, ap);
	va_end(ap);
	return err;
}

#define poison chan__poison

const char *
chan__quote(char *buf, size_t cap, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0, i;

	if (cap < 8)
		return "";
	buf[o++] = '"';
	for (i = 0; i < n && o + 6 < cap && o < 44; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
			buf[o++] = (char)ch;
		} else {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[ch >> 4];
			buf[o++] = hex[ch & 15];
		}
	}
	if (i < n && o + 4 < cap) {
		buf[o++] = '.';
		buf[o++] = '.';
		buf[o++] = '.';
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}

static chan_value *
new_value(chan_msg *msg, enum chan_type type)
{
	chan_value *v;

	if (!msg)
		return NULL;
	v = arena_alloc(&msg->arena, sizeof(*v));
	if (!v) {
		poison(msg, CHAN_E_NO_MEMORY, "chan_%s: out of memory",
		       chan_type_name(type));
		return NULL;
	}
	memset(v, 0, sizeof(*v));
	v->type = (uint8_t)type;
	v->msg = msg;
	return v;
}

void
chan__msg_add_handle(chan_msg *msg, chan_value *v)
{
	v->u.h.next = NULL;
	if (msg->handles_tail)
		msg->handles_tail->u.h.next = v;
	else
		msg->handles_head = v;
	msg->handles_tail = v;
}

void
chan__msg_add_channel(chan_msg *msg, chan_value *v)
{
	v->u.ch.next = NULL;
	if (msg->channels_tail)
		msg->channels_tail->u.ch.next = v;
	else
		msg->channels_head = v;
	msg->channels_tail = v;
}

chan_value *
chan__channel_new(chan_msg *msg, const char *caller, uint32_t id, void *rec)
{
	chan_value *v;

	if (!msg || msg->error)
		return NULL;
	if (!rec && (id == 0 || id > 0x7fffffffu)) {
		poison(msg, CHAN_E_INVALID_ARGUMENT, "%s: %u is not a channel id (1..2^31-1)",
		       caller, id);
		return NULL;
	}
	if (!(v = new_value(msg, CHAN_CHANNEL)))
		return NULL;
	v->u.ch.id = id;
	v->u.ch.rec = rec;
	chan__msg_add_channel(msg, v);
	return v;
}

CHAN_EXPORT chan_value *
chan_channel_ref(chan_msg *msg, uint32_t id)
{
	return chan__channel_new(msg, "chan_channel_ref", id, NULL);
}

CHAN_EXPORT uint32_t
chan_value_channel_id(const chan_value *v)
{
	return v && v->type == CHAN_CHANNEL ? v->u.ch.id : 0;
}

chan_value *
chan__msg_channels(const chan_msg *msg)
{
	return msg->channels_head;
}

chan_value *
chan__channel_next(const chan_value *v)
{
	return v->u.ch.next;
}

void *
chan__channel_rec(const chan_value *v)
{
	return v->u.ch.rec;
}

void
chan__channel_set(chan_value *v, uint32_t id, void *rec)
{
	v->u.ch.id = id;
	v->u.ch.rec = rec;
}

static int
walk_channels(const chan_value *v, int (*fn)(chan_value *, void *), void *ctx,
	      uint32_t depth)
{
	int r = 0;

	if (depth > CHAN_HARD_MAX_DEPTH)
		return CHAN_E_DEPTH_EXCEEDED;
	if (v->type == CHAN_CHANNEL)
		return fn((chan_value *)v, ctx);
	if (v->type == CHAN_LIST || v->type == CHAN_MAP)
		for (uint32_t i = 0; i < v->u.c.count && r == 0; i++)
			r = walk_channels(v->u.c.items[i], fn, ctx, depth + 1);
	return r;
}

int
chan__msg_walk_channels(const chan_msg *msg, int (*fn)(chan_value *, void *), void *ctx)
{
	if (!msg->channels_head || !msg->root)
		return 0;
	return walk_channels(msg->root, fn, ctx, 1);
}

CHAN_EXPORT chan_value *
chan_null(chan_msg *msg)
{
	return new_value(msg, CHAN_NULL);
}

CHAN_EXPORT chan_value *
chan_bool(chan_msg *msg, bool b)
{
	chan_value *v = new_value(msg, CHAN_BOOL);

	if (v)
		v->u.b = b ? 1 : 0;
	return v;
}

CHAN_EXPORT chan_value *
chan_int(chan_msg *msg, int64_t i)
{
	chan_value *v = new_value(msg, CHAN_INT);

	if (v)
		v->u.i = i;
	return v;
}

CHAN_EXPORT chan_value *
chan_float(chan_msg *msg, double f)
{
	chan_value *v = new_value(msg, CHAN_FLOAT);

	if (v) {
		/* The data model has one NaN (SPEC.md §4.1). */
		if (isnan(f)) {
			uint64_t bits = CHAN_CANONICAL_NAN_BITS;

			memcpy(&f, &bits, sizeof(f));
		}
		v->u.f = f;
	}
	return v;
}

static char *
copy_text(chan_msg *msg, const void *p, size_t n)
{
	char *s = arena_alloc(&msg->arena, n + 1);

	if (!s)
		return NULL;
	if (n)
		memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

static chan_value *
new_blob(chan_msg *msg, const char *caller, enum chan_type type, const void *p,
	 size_t n)
{
	chan_value *v;
	char *s;

	if (!msg)
		return NULL;
	if (!p && (n || type == CHAN_STRING)) {
		poison(msg, CHAN_E_INVALID_ARGUMENT, "%s: NULL %s", caller,
		       type == CHAN_STRING ? "string" : "data with a length");
		return NULL;
	}
	if (type == CHAN_STRING && !chan__utf8_valid(p, n)) {
		char q[64];

		poison(msg, CHAN_E_INVALID_UTF8, "%s: %s is not valid UTF-8", caller,
		       chan__quote(q, sizeof(q), p, n));
		return NULL;
	}
	if (n > CHAN_HARD_MAX_PAYLOAD) {
		poison(msg, CHAN_E_PAYLOAD_TOO_LARGE,
		       "%s: %zu bytes is more than a frame can hold (%u)", caller, n,
		       CHAN_HARD_MAX_PAYLOAD);
		return NULL;
	}
	v = new_value(msg, type);
	if (!v)
		return NULL;
	s = copy_text(msg, p, n);
	if (!s) {
		poison(msg, CHAN_E_NO_MEMORY, "%s: out of memory for %zu bytes", caller, n);
		return NULL;
	}
	v->u.s.p = s;
	v->u.s.n = n;
	return v;
}

CHAN_EXPORT chan_value *
chan_string(chan_msg *msg, const char *s)
{
	return new_blob(msg, "chan_string", CHAN_STRING, s, s ? strlen(s) : 0);
}

CHAN_EXPORT chan_value *
chan_string_n(chan_msg *msg, const char *s, size_t len)
{
	return new_blob(msg, "chan_string_n", CHAN_STRING, s, len);
}

CHAN_EXPORT chan_value *
chan_bytes(chan_msg *msg, const void *p, size_t len)
{
	return new_blob(msg, "chan_bytes", CHAN_BYTES, p, len);
}

CHAN_EXPORT chan_value *
chan_list(chan_msg *msg)
{
	return new_value(msg, CHAN_LIST);
}

CHAN_EXPORT chan_value *
chan_map(chan_msg *msg)
{
	return new_value(msg, CHAN_MAP);
}

chan_value *
chan__handle_new(chan_msg *msg, const char *caller, enum chan_kind kind, int fd,
		 bool borrowed, uint64_t socket_id)
{
	chan_value *v;

	if (!msg)
		return NULL;
	if (msg->error)
		return NULL; /* the message is poisoned: do not take fd */
	if ((kind != CHAN_KIND_FD && kind != CHAN_KIND_CONN) || fd < 0) {
		if (fd < 0)
			poison(msg, CHAN_E_INVALID_ARGUMENT, "%s: fd %d is not a descriptor",
			       caller, fd);
		else
			poison(msg, CHAN_E_INVALID_ARGUMENT, "%s: %d is not a handle kind",
			       caller, (int)kind);
		return NULL;
	}
	v = new_value(msg, CHAN_HANDLE);
	if (!v)
		return NULL;
	v->kind = (uint8_t)kind;
	v->borrowed = borrowed;
	v->u.h.fd = fd;
	v->u.h.socket_id = socket_id;
	chan__msg_add_handle(msg, v);
	return v;
}

/* ---- containers ---- */

static int
grow_items(chan_value *c)
{
	uint32_t cap = c->u.c.cap ? c->u.c.cap * 2 : 4;
	chan_value **items;

	if (c->u.c.cap >= UINT32_MAX / 2)
		return CHAN_E_NO_MEMORY;
	items = arena_alloc(&c->msg->arena, (size_t)cap * sizeof(*items));
	if (!items)
		return CHAN_E_NO_MEMORY;
	if (c->u.c.count)
		memcpy(items, c->u.c.items, c->u.c.count * sizeof(*items));
	c->u.c.items = items;
	c->u.c.cap = cap;
	return 0;
}

static int
check_attachable(const char *caller, chan_value *container, chan_value *item,
		 enum chan_type type)
{
	chan_msg *msg;

	if (!container)
		return CHAN_E_INVALID_ARGUMENT;
	msg = container->msg;
	if (msg->error)
		return msg->error;
	if (!item)
		return poison(msg, CHAN_E_INVALID_ARGUMENT, "%s: the value is NULL", caller);
	if (container->type != type)
		return poison(msg, CHAN_E_WRONG_TYPE, "%s: the container is a %s, not a %s",
			      caller, chan_type_name((enum chan_type)container->type),
			      chan_type_name(type));
	if (item->msg != msg)
		return poison(msg, CHAN_E_INVALID_ARGUMENT,
			      "%s: the value belongs to another message", caller);
	if (item->attached || item == msg->root)
		return poison(msg, CHAN_E_INVALID_ARGUMENT,
			      "%s: the %s value is already attached (a value has one place)",
			      caller, chan_type_name((enum chan_type)item->type));
	if (item == container)
		return poison(msg, CHAN_E_INVALID_ARGUMENT,
			      "%s: a container cannot hold itself", caller);
	return 0;
}

CHAN_EXPORT int
chan_list_append(chan_value *list, chan_value *item)
{
	int r = check_attachable("chan_list_append", list, item, CHAN_LIST);

	if (r < 0)
		return r;
	if (list->u.c.count == list->u.c.cap && (r = grow_items(list)) < 0)
		return poison(list->msg, r, "chan_list_append: out of memory for item %u",
			      list->u.c.count);
	list->u.c.items[list->u.c.count++] = item;
	item->attached = 1;
	return 0;
}

uint64_t
chan__hash(const char *p, size_t n)
{
	/* FNV-1a: keys are short; this only needs to spread them. */
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (size_t i = 0; i < n; i++) {
		h ^= (uint8_t)p[i];
		h *= UINT64_C(0x100000001b3);
	}
	return h;
}

static bool
key_eq(const chan_value *v, const char *key, size_t len)
{
	return v->key_len == len && memcmp(v->key, key, len) == 0;
}

/* Position of key in map, or -1.  Index slots hold position + 1. */
static long
map_find(const chan_value *map, const char *key, size_t len)
{
	const struct map_index *ix = map->u.c.index;

	if (!ix) {
		for (uint32_t i = 0; i < map->u.c.count; i++)
			if (key_eq(map->u.c.items[i], key, len))
				return (long)i;
		return -1;
	}
	for (uint64_t s = chan__hash(key, len) & ix->mask;; s = (s + 1) & ix->mask) {
		uint32_t slot = ix->slots[s];

		if (!slot)
			return -1;
		if (key_eq(map->u.c.items[slot - 1], key, len))
			return (long)slot - 1;
	}
}

static void
map_index_insert(struct map_index *ix, const chan_value *map, uint32_t pos)
{
	const chan_value *v = map->u.c.items[pos];
	uint64_t s = chan__hash(v->key, v->key_len) & ix->mask;

	while (ix->slots[s])
		s = (s + 1) & ix->mask;
	ix->slots[s] = pos + 1;
}

/*
 * (Re)build the hash index of a map sized for twice its capacity.  Returns
 * CHAN_E_DUPLICATE_KEY if two entries share a key (the decoder's check),
 * CHAN_E_NO_MEMORY on allocation failure.
 */
int
chan__map_index_build(chan_msg *msg, chan_value *map)
{
	uint32_t want = map->u.c.cap > map->u.c.count ? map->u.c.cap : map->u.c.count;
	uint32_t slots = 16;
	struct map_index *ix;

	while (slots < want * 2u)
		slots *= 2;
	ix = arena_alloc(&msg->arena, sizeof(*ix) + (size_t)slots * sizeof(uint32_t));
	if (!ix)
		return CHAN_E_NO_MEMORY;
	ix->mask = slots - 1;
	ix->slots = (uint32_t *)(ix + 1);
	memset(ix->slots, 0, (size_t)slots * sizeof(uint32_t));
	map->u.c.index = NULL;
	for (uint32_t i = 0; i < map->u.c.count; i++) {
		const chan_value *v = map->u.c.items[i];
		uint64_t s = chan__hash(v->key, v->key_len) & ix->mask;

		for (; ix->slots[s]; s = (s + 1) & ix->mask)
			if (key_eq(map->u.c.items[ix->slots[s] - 1], v->key, v->key_len))
				return CHAN_E_DUPLICATE_KEY;
		ix->slots[s] = i + 1;
	}
	map->u.c.index = ix;
	return 0;
}

static int
map_put(const char *caller, chan_value *map, const char *key, size_t key_len,
	chan_value *v)
{
	int r = check_attachable(caller, map, v, CHAN_MAP);
	chan_msg *msg;
	char q[64];
	char *k;

	if (r < 0)
		return r;
	msg = map->msg;
	if (!key)
		return poison(msg, CHAN_E_INVALID_ARGUMENT, "%s: the key is NULL", caller);
	if (key_len > UINT32_MAX)
		return poison(msg, CHAN_E_PAYLOAD_TOO_LARGE, "%s: a key of %zu bytes", caller,
			      key_len);
	if ((r = chan__key_check((const uint8_t *)key, key_len)) < 0)
		return poison(msg, r, "%s: key %s %s", caller,
			      chan__quote(q, sizeof(q), key, key_len),
			      r == CHAN_E_INVALID_KEY ? "contains U+0000"
						      : "is not valid UTF-8");
	/* Every failure poisons: a builder that chains calls and checks once
	 * must not end with a value silently missing (SPEC.md §11). */
	if (map_find(map, key, key_len) >= 0)
		return poison(msg, CHAN_E_DUPLICATE_KEY, "%s: duplicate key %s", caller,
			      chan__quote(q, sizeof(q), key, key_len));
	k = copy_text(msg, key, key_len);
	if (!k)
		return poison(msg, CHAN_E_NO_MEMORY, "%s: out of memory for key %s", caller,
			      chan__quote(q, sizeof(q), key, key_len));
	if (map->u.c.count == map->u.c.cap) {
		if ((r = grow_items(map)) < 0 ||
		    (map->u.c.cap > CHAN_MAP_INDEX_MIN &&
		     (r = chan__map_index_build(msg, map)) < 0))
			return poison(msg, r, "%s: out of memory for key %s", caller,
				      chan__quote(q, sizeof(q), key, key_len));
	}
	v->key = k;
	v->key_len = (uint32_t)key_len;
	map->u.c.items[map->u.c.count] = v;
	if (map->u.c.index)
		map_index_insert(map->u.c.index, map, map->u.c.count);
	map->u.c.count++;
	v->attached = 1;
	return 0;
}

CHAN_EXPORT int
chan_map_put_n(chan_value *map, const char *key, size_t key_len, chan_value *v)
{
	return map_put("chan_map_put_n", map, key, key_len, v);
}

CHAN_EXPORT int
chan_map_put(chan_value *map, const char *key, chan_value *v)
{
	return map_put("chan_map_put", map, key, key ? strlen(key) : 0, v);
}

CHAN_EXPORT int
chan_msg_set_root(chan_msg *msg, chan_value *v)
{
	if (!msg)
		return CHAN_E_INVALID_ARGUMENT;
	if (msg->error)
		return msg->error;
	if (!v)
		return poison(msg, CHAN_E_INVALID_ARGUMENT, "chan_msg_set_root: the value is NULL");
	if (v->msg != msg)
		return poison(msg, CHAN_E_INVALID_ARGUMENT,
			      "chan_msg_set_root: the value belongs to another message");
	if (msg->root)
		return poison(msg, CHAN_E_INVALID_ARGUMENT,
			      "chan_msg_set_root: the root is already set");
	if (v->attached)
		return poison(msg, CHAN_E_INVALID_ARGUMENT,
			      "chan_msg_set_root: the value is already attached");
	v->attached = 1;
	msg->root = v;
	return 0;
}

CHAN_EXPORT chan_value *
chan_msg_root(const chan_msg *msg)
{
	return msg ? msg->root : NULL;
}

CHAN_EXPORT int
chan_msg_error(const chan_msg *msg)
{
	return msg ? msg->error : CHAN_E_INVALID_ARGUMENT;
}

CHAN_EXPORT const char *
chan_msg_error_message(const chan_msg *msg)
{
	return msg ? msg->error_message : "chan_msg_error_message: msg is NULL";
}

/* ---- readers ---- */

CHAN_EXPORT enum chan_type
chan_value_type(const chan_value *v)
{
	return v ? (enum chan_type)v->type : (enum chan_type)0;
}

static inline int
expect(const chan_value *v, enum chan_type type)
{
	if (!v)
		return CHAN_E_INVALID_ARGUMENT;
	return v->type == type ? 0 : CHAN_E_WRONG_TYPE;
}

CHAN_EXPORT int
chan_value_get_bool(const chan_value *v, bool *ret)
{
	int r = expect(v, CHAN_BOOL);

	if (r == 0 && !ret)
		r = CHAN_E_INVALID_ARGUMENT;
	if (r == 0)
		*ret = v->u.b != 0;
	return r;
}

CHAN_EXPORT int
chan_value_get_int(const chan_value *v, int64_t *ret)
{
	int r = expect(v, CHAN_INT);

	if (r == 0 && !ret)
		r = CHAN_E_INVALID_ARGUMENT;
	if (r == 0)
		*ret = v->u.i;
	return r;
}

CHAN_EXPORT int
chan_value_get_float(const chan_value *v, double *ret)
{
	int r = expect(v, CHAN_FLOAT);

	if (r == 0 && !ret)
		r = CHAN_E_INVALID_ARGUMENT;
	if (r == 0)
		*ret = v->u.f;
	return r;
}

static int
get_blob(const chan_value *v, enum chan_type type, const void **ret, size_t *ret_len)
{
	int r = expect(v, type);

	if (r == 0 && !ret)
		r = CHAN_E_INVALID_ARGUMENT;
	if (r == 0) {
		*ret = v->u.s.p;
		if (ret_len)
			*ret_len = v->u.s.n;
	}
	return r;
}

CHAN_EXPORT int
chan_value_get_string(const chan_value *v, const char **ret_str, size_t *ret_len)
{
	return get_blob(v, CHAN_STRING, (const void **)ret_str, ret_len);
}

CHAN_EXPORT int
chan_value_get_bytes(const chan_value *v, const void **ret_data, size_t *ret_len)
{
	return get_blob(v, CHAN_BYTES, ret_data, ret_len);
}

CHAN_EXPORT int
chan_map_get_value(const chan_value *map, const char *key, chan_value **ret_value)
{
	chan_value *v;

	if (!map || !key || !ret_value)
		return CHAN_E_INVALID_ARGUMENT;
	if (map->type != CHAN_MAP)
		return CHAN_E_WRONG_TYPE;
	if (!(v = chan_map_get(map, key)))
		return CHAN_E_NOT_FOUND;
	*ret_value = v;
	return 0;
}

/* chan_map_get_<type>: a lookup, then the value reader. */
#define MAP_GETTER(name, ...)                                                  \
	{                                                                      \
		chan_value *v;                                                 \
		int r = chan_map_get_value(map, key, &v);                      \
		return r < 0 ? r : name(v, __VA_ARGS__);                       \
	}

CHAN_EXPORT int
chan_map_get_bool(const chan_value *map, const char *key, bool *ret)
MAP_GETTER(chan_value_get_bool, ret)

CHAN_EXPORT int
chan_map_get_int(const chan_value *map, const char *key, int64_t *ret)
MAP_GETTER(chan_value_get_int, ret)

CHAN_EXPORT int
chan_map_get_float(const chan_value *map, const char *key, double *ret)
MAP_GETTER(chan_value_get_float, ret)

CHAN_EXPORT int
chan_map_get_string(const chan_value *map, const char *key, const char **ret_str,
		    size_t *ret_len)
MAP_GETTER(chan_value_get_string, ret_str, ret_len)

CHAN_EXPORT int
chan_map_get_bytes(const chan_value *map, const char *key, const void **ret_data,
		   size_t *ret_len)
MAP_GETTER(chan_value_get_bytes, ret_data, ret_len)

CHAN_EXPORT size_t
chan_value_count(const chan_value *v)
{
	return v && (v->type == CHAN_LIST || v->type == CHAN_MAP) ? v->u.c.count : 0;
}

CHAN_EXPORT chan_value *
chan_value_at(const chan_value *v, size_t i)
{
	if (!v || (v->type != CHAN_LIST && v->type != CHAN_MAP) || i >= v->u.c.count)
		return NULL;
	return v->u.c.items[i];
}

CHAN_EXPORT const char *
chan_map_key_at(const chan_value *map, size_t i, size_t *ret_len)
{
	const chan_value *v;

	if (!map || map->type != CHAN_MAP || i >= map->u.c.count)
		return NULL;
	v = map->u.c.items[i];
	if (ret_len)
		*ret_len = v->key_len;
	return v->key;
}

CHAN_EXPORT chan_value *
chan_map_get_n(const chan_value *map, const char *key, size_t key_len)
{
	long i;

	if (!map || map->type != CHAN_MAP || (!key && key_len))
		return NULL;
	i = map_find(map, key ? key : "", key_len);
	return i < 0 ? NULL : map->u.c.items[i];
}

CHAN_EXPORT chan_value *
chan_map_get(const chan_value *map, const char *key)
{
	return key ? chan_map_get_n(map, key, strlen(key)) : NULL;
}

CHAN_EXPORT enum chan_kind
chan_value_kind(const chan_value *v)
{
	return v && v->type == CHAN_HANDLE ? (enum chan_kind)v->kind : (enum chan_kind)0;
}

CHAN_EXPORT uint32_t
chan_value_handle_index(const chan_value *v)
{
	return v && v->type == CHAN_HANDLE ? v->u.h.index : 0;
}

CHAN_EXPORT int
chan_value_borrow_fd(const chan_value *v, int *ret_fd)
{
	int r = expect(v, CHAN_HANDLE);

	if (r < 0)
		return r;
	if (!ret_fd || v->u.h.fd < 0)
		return CHAN_E_INVALID_ARGUMENT; /* moved out, or decoded detached */
	*ret_fd = v->u.h.fd;
	return 0;
}

CHAN_EXPORT int
chan_value_move_fd(chan_value *v, int *ret_fd)
{
	int r = expect(v, CHAN_HANDLE);

	if (r < 0)
		return r;
	if (!ret_fd || v->u.h.fd < 0 || v->borrowed)
		return CHAN_E_INVALID_ARGUMENT;
	*ret_fd = v->u.h.fd;
	v->u.h.fd = -1;
	return 0;
}

CHAN_EXPORT const char *
chan_type_name(enum chan_type type)
{
	static const char *const names[] = {
		[CHAN_NULL] = "null",	[CHAN_BOOL] = "bool",   [CHAN_INT] = "int",
		[CHAN_FLOAT] = "float", [CHAN_STRING] = "string", [CHAN_BYTES] = "bytes",
		[CHAN_LIST] = "list",	[CHAN_MAP] = "map",	    [CHAN_HANDLE] = "handle",
		[CHAN_CHANNEL] = "channel",
	};

	return (unsigned)type < sizeof(names) / sizeof(names[0]) ? names[type] : NULL;
}

CHAN_EXPORT const char *
chan_kind_name(enum chan_kind kind)
{
	switch (kind) {
	case CHAN_KIND_FD:
		return "fd";
	case CHAN_KIND_CONN:
		return "conn";
	}
	return NULL;
}
