/* utf8.c - RFC 3629 validation: no overlongs, no surrogates, <= U+10FFFF.
 * U+0000 is valid text in chan (SPEC.md §4.1). */
#include <string.h>

#include "internal.h"

bool
chan__utf8_valid_slow(const uint8_t *p, size_t n)
{
	const uint8_t *end = p + n;

	while (p < end) {
		/* ASCII fast path, 8 bytes at a time. */
		while (end - p >= 8) {
			uint64_t w;

			memcpy(&w, p, 8);
			if (w & UINT64_C(0x8080808080808080))
				break;
			p += 8;
		}
		if (p >= end)
			break;
		uint8_t c = *p;
		if (c < 0x80) {
			p++;
			continue;
		}
		size_t need;
		uint8_t lo = 0x80, hi = 0xbf;
		if (c >= 0xc2 && c <= 0xdf) {
			need = 1;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2;
			if (c == 0xe0)
				lo = 0xa0; /* overlong */
			else if (c == 0xed)
				hi = 0x9f; /* surrogates */
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3;
			if (c == 0xf0)
				lo = 0x90; /* overlong */
			else if (c == 0xf4)
				hi = 0x8f; /* > U+10FFFF */
		} else {
			return false;
		}
		if ((size_t)(end - p) <= need)
			return false;
		if (p[1] < lo || p[1] > hi)
			return false;
		for (size_t i = 2; i <= need; i++)
			if ((p[i] & 0xc0) != 0x80)
				return false;
		p += need + 1;
	}
	return true;
}

int
chan__key_check_slow(const uint8_t *p, size_t n)
{
	if (!chan__utf8_valid_slow(p, n))
		return CHAN_E_INVALID_UTF8;
	return memchr(p, 0, n) ? CHAN_E_INVALID_KEY : 0;
}
