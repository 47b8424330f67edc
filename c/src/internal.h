/*
 * internal.h - the codec's own declarations: the value tree, messages and
 * their arena (value.c, encode.c, decode.c, header.c, arena.c, utf8.c, and
 * handles.c, which gives descriptors to values).  The transport never
 * includes this file: it sees the codec through codec.h.  Never installed.
 *
 * Memory: every chan_msg owns one arena (a list of chunks).  Values, their
 * strings and container arrays live in it and die with the message.  A
 * decoded message is one single chunk sized exactly by the validation pass,
 * so decoding costs one allocation whatever the payload.
 *
 * fds: a message owns the fd of every handle value copied or moved into it
 * or decoded into it, attached to the tree or not; they are linked on
 * msg->handles_head and closed by chan_msg_free() unless moved out (fd ==
 * -1) or borrowed (the lender's).
 */
#ifndef CHAN_INTERNAL_H
#define CHAN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chan.h"
#include "codec.h"


/* ---- wire constants (SPEC.md §5, §7) ---- */
#define CHAN_MAGIC0 0x43 /* 'C' */
#define CHAN_MAGIC1 0x48 /* 'H' */
#define CHAN_MAGIC2 0x41 /* 'A' */
#define CHAN_MAGIC3 0x4e /* 'N' */

enum { WT_VARINT = 0, WT_FIXED64 = 1, WT_LEN = 2 };

/* Value field numbers equal enum chan_type (chan.proto's oneof). */
enum {
	F_LIST_ITEMS = 1,
	F_MAP_ENTRIES = 1,
	F_ENTRY_KEY = 1,
	F_ENTRY_VALUE = 2,
	F_HANDLE_INDEX = 1,
	F_HANDLE_KIND = 2,
	F_CHANNEL_ID = 1,
};

#define CHAN_CANONICAL_NAN_BITS UINT64_C(0x7ff8000000000000)

/* Maps with more entries than this get a hash index for lookups and
 * duplicate detection; smaller ones are scanned. */
#define CHAN_MAP_INDEX_MIN 16u

/* ---- arena ---- */
struct arena_chunk {
	struct arena_chunk *next;
	size_t size; /* usable bytes after the header */
	size_t used;
};

struct arena {
	struct arena_chunk *head; /* chunk allocations are served from */
	struct chan_allocator allocator;
	size_t next_chunk;
};

CHAN_HIDDEN void *chan__arena_alloc_slow(struct arena *arena, size_t size);
CHAN_HIDDEN void chan__arena_release(struct arena *arena, struct arena_chunk *keep);

static inline size_t
align8(size_t n)
{
	return (n + 7u) & ~(size_t)7u;
}

/* Bump allocation from the current chunk; a new chunk when it is full. */
static inline void *
arena_alloc(struct arena *arena, size_t size)
{
	struct arena_chunk *c = arena->head;

	size = align8(size);
	if (c && c->size - c->used >= size) {
		void *p = (char *)c + align8(sizeof(struct arena_chunk)) + c->used;

		c->used += size;
		return p;
	}
	return chan__arena_alloc_slow(arena, size);
}

/* ---- values ---- */
struct map_index {
	uint32_t mask;    /* slots - 1 */
	uint32_t *slots;  /* item position + 1, 0 = empty */
};

struct chan_value {
	uint8_t type;     /* enum chan_type */
	uint8_t kind;     /* enum chan_kind, for handles */
	uint8_t attached; /* linked into a container or the root */
	uint8_t borrowed; /* a handle whose fd the message does not own */
	uint32_t key_len; /* as a map entry's value: its key */
	const char *key;
	chan_msg *msg;
	union {
		chan_value *next;  /* sibling link while a container is decoded */
	} aux;
	union {
		int64_t i;
		double f;
		int b;
		struct {
			const char *p;
			size_t n;
		} s;
		struct {
			chan_value **items;
			uint32_t count;
			uint32_t cap;
			struct map_index *index;
		} c;
		struct {
			int fd;       /* -1: moved out, or decoded detached */
			uint32_t index; /* decoded messages: wire position */
			chan_value *next; /* msg->handles_head list */
			uint64_t socket_id; /* conn: its identity (inode), 0 if unknown */
		} h;
		struct {
			uint32_t id;      /* 0: not assigned yet (opened, not sent) */
			void *rec;        /* the transport's channel record, or NULL */
			chan_value *next; /* msg->channels_head list */
		} ch;
	} u;
};

struct chan_msg {
	struct arena arena;
	chan_value *root;
	int error;                /* poison: first failure of a builder call */
	chan_value *handles_head; /* every handle value, in creation order (for
				   * a decoded message: wire order) */
	chan_value *handles_tail;
	chan_value *channels_head; /* every channel value, in creation order
				    * (for a decoded message: walk order) */
	chan_value *channels_tail;
	bool borrowed; /* decode left values pointing into its input buffer */
	void *adopted; /* that buffer, when the message owns it (its allocator) */
	char error_message[128]; /* where the poison came from */
};

CHAN_HIDDEN void chan__msg_init(chan_msg *msg, const struct chan_allocator *a);
/* Quote s (n bytes) for an error message: printable ASCII as is, the rest
 * escaped, at most about 40 characters. */
CHAN_HIDDEN const char *chan__quote(char *buf, size_t cap, const char *s, size_t n);
CHAN_HIDDEN void chan__msg_add_handle(chan_msg *msg, chan_value *v);
CHAN_HIDDEN void chan__msg_add_channel(chan_msg *msg, chan_value *v);
CHAN_HIDDEN int chan__map_index_build(chan_msg *msg, chan_value *map);
CHAN_HIDDEN uint64_t chan__hash(const char *p, size_t n);


/* ---- helpers ---- */
CHAN_HIDDEN bool chan__utf8_valid_slow(const uint8_t *p, size_t n);
CHAN_HIDDEN int chan__key_check_slow(const uint8_t *p, size_t n);

/* A map key: 0, CHAN_E_INVALID_UTF8, or CHAN_E_INVALID_KEY (U+0000), in
 * that order of precedence (SPEC.md §7.3 step 7).  Short ASCII keys are
 * checked inline. */
static inline int
chan__key_check(const uint8_t *p, size_t n)
{
	if (n <= 16) {
		uint8_t any = 0, nul = 0;

		for (size_t i = 0; i < n; i++) {
			any |= p[i];
			nul |= p[i] == 0;
		}
		if (!(any & 0x80))
			return nul ? CHAN_E_INVALID_KEY : 0;
	}
	return chan__key_check_slow(p, n);
}

/* Short ASCII strings (most keys) are checked inline. */
static inline bool
chan__utf8_valid(const uint8_t *p, size_t n)
{
	if (n <= 16) {
		uint8_t any = 0;

		for (size_t i = 0; i < n; i++)
			any |= p[i];
		if (!(any & 0x80))
			return true;
	}
	return chan__utf8_valid_slow(p, n);
}

static inline uint32_t
le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static inline uint16_t
le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline unsigned
varint_size(uint64_t v)
{
	/* Most lengths and values fit one byte; otherwise 1 + floor(bits / 7)
	 * without a loop (as upb does). */
	if (v < 0x80)
		return 1;
	return (unsigned)(70 - __builtin_clzll(v)) / 7u;
}

static inline uint64_t
zigzag_encode(int64_t v)
{
	return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static inline int64_t
zigzag_decode(uint64_t v)
{
	return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

#endif /* CHAN_INTERNAL_H */
