/*
 * fzutil.h - helpers shared by the fuzz targets (static: each target is
 * one translation unit plus libchan and hardening/util.c).
 */
#ifndef CHAN_FUZZ_FZUTIL_H
#define CHAN_FUZZ_FZUTIL_H

#include <string.h>

#include "chan.h"
#include "util.h"

/* Two values are the same tree (hardening/util.c compares channel handles
 * by id, and every other type, since revision 1.1). */
static inline int
fz_value_equal(const chan_value *a, const chan_value *b)
{
	return hu_value_equal(a, b);
}

#endif
