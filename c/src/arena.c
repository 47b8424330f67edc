/* arena.c - the per-message chunk allocator and the allocator hook. */
#include <stdlib.h>

#include "internal.h"

void *
chan__alloc(const struct chan_allocator *a, size_t size)
{
	if (a && a->alloc)
		return a->alloc(a->ctx, size ? size : 1);
	return malloc(size ? size : 1);
}

void
chan__free(const struct chan_allocator *a, void *p)
{
	if (!p)
		return;
	if (a && a->alloc)
		a->free(a->ctx, p);
	else
		free(p);
}

#define ARENA_MIN_CHUNK 1024u
#define ARENA_MAX_CHUNK (64u * 1024u)

void *
chan__arena_alloc_slow(struct arena *arena, size_t size)
{
	struct arena_chunk *c = arena->head;
	size_t hdr = align8(sizeof(struct arena_chunk));
	void *p;

	size = align8(size);
	if (!c || c->size - c->used < size) {
		size_t want = arena->next_chunk < ARENA_MIN_CHUNK ? ARENA_MIN_CHUNK
								   : arena->next_chunk;

		if (want < size)
			want = size;
		if (want > SIZE_MAX - hdr)
			return NULL;
		c = chan__alloc(&arena->allocator, hdr + want);
		if (!c)
			return NULL;
		c->next = arena->head;
		c->size = want;
		c->used = 0;
		arena->head = c;
		if (arena->next_chunk < ARENA_MAX_CHUNK)
			arena->next_chunk = arena->next_chunk ? arena->next_chunk * 2
							      : ARENA_MIN_CHUNK * 2;
	}
	p = (char *)c + hdr + c->used;
	c->used += size;
	return p;
}

/* Free every chunk except `keep` (the one holding the chan_msg itself, which
 * the caller frees last). */
void
chan__arena_release(struct arena *arena, struct arena_chunk *keep)
{
	struct arena_chunk *c = arena->head;

	while (c) {
		struct arena_chunk *next = c->next;

		if (c != keep)
			chan__free(&arena->allocator, c);
		c = next;
	}
	arena->head = NULL;
}
