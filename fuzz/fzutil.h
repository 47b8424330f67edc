/*
 * fzutil.h - helpers shared by the fuzz targets (static: each target is
 * one translation unit plus libchan and hardening/util.c).
 */
#ifndef CHAN_FUZZ_FZUTIL_H
#define CHAN_FUZZ_FZUTIL_H

#include <string.h>

#include "chan.h"
#include "util.h"

/* hu_value_equal (hardening/util.c) predates channel values (revision
 * 1.1): compare those here, containers recursively, and leave every other
 * type to it. */
static inline int
fz_value_equal(const chan_value *a, const chan_value *b)
{
	enum chan_type t = chan_value_type(a);

	if (!a || !b || t != chan_value_type(b))
		return 0;
	if (t == CHAN_CHANNEL)
		return chan_value_channel_id(a) == chan_value_channel_id(b) &&
		       chan_value_channel_id(a) != 0;
	if (t == CHAN_LIST || t == CHAN_MAP) {
		size_t n = chan_value_count(a);

		if (n != chan_value_count(b))
			return 0;
		for (size_t i = 0; i < n; i++) {
			if (t == CHAN_MAP) {
				size_t ka, kb;
				const char *xa = chan_map_key_at(a, i, &ka);
				const char *xb = chan_map_key_at(b, i, &kb);

				if (!xa || !xb || ka != kb || memcmp(xa, xb, ka))
					return 0;
				if (chan_map_get_n(a, xa, ka) != chan_value_at(a, i) ||
				    chan_map_get_n(b, xb, kb) != chan_value_at(b, i))
					return 0;
			}
			if (!fz_value_equal(chan_value_at(a, i), chan_value_at(b, i)))
				return 0;
		}
		return chan_value_at(a, n) == NULL && chan_value_at(b, n) == NULL;
	}
	return hu_value_equal(a, b);
}

#endif
