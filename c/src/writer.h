/*
 * writer.h - struct chan_writer, private to writer.c (the transport reaches
 * a writer through codec.h).
 */
#ifndef CHAN_WRITER_H
#define CHAN_WRITER_H

#include "codec.h"

struct key_rec;

struct chan_writer {
	struct chan_allocator allocator;
	uint8_t *buf; /* header space, then the payload's own bytes */
	size_t len, cap;
	struct chan__seg *segs; /* borrowed bytes spliced into buf */
	size_t nsegs, segcap;
	size_t ext_total;       /* their total size */
	struct key_rec *keys;   /* keys of the open maps, innermost last */
	size_t nkeys, keycap;
	void *levels;           /* struct level[CHAN_HARD_MAX_DEPTH + 1] */
	size_t depth;           /* levels in use; 1 = the top */
	void *cur;              /* &levels[depth - 1] */
	bool done;              /* the top-level value is written */
	int error;
	char error_message[128];
	size_t nhandles;
	struct chan__wire_handle handles[CHAN_HARD_MAX_HANDLES];
};

#endif
