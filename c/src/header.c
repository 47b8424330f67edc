/* header.c - the 16-byte frame header (SPEC.md §5.1, §5.2). */
#include "internal.h"

CHAN_EXPORT int
chan_header_parse(const void *buf, size_t len, struct chan_header *ret)
{
	const uint8_t *p = buf;

	if (!ret || (!buf && len))
		return CHAN_E_INVALID_ARGUMENT;
	if (len < CHAN_HEADER_SIZE)
		return CHAN_E_TRUNCATED;
	ret->version = p[4];
	ret->flags = p[5];
	ret->handle_count = le16(p + 6);
	ret->channel = le32(p + 8);
	ret->payload_length = le32(p + 12);
	if (p[0] != CHAN_MAGIC0 || p[1] != CHAN_MAGIC1 || p[2] != CHAN_MAGIC2 ||
	    p[3] != CHAN_MAGIC3)
		return CHAN_E_BAD_MAGIC;
	if (p[4] != CHAN_WIRE_VERSION)
		return CHAN_E_UNSUPPORTED_VERSION;
	return 0;
}

/* Effective limits: zero fields take the default, and nothing exceeds the
 * hard maximum. */
static uint32_t
pick(uint32_t asked, uint32_t dflt, uint32_t hard)
{
	if (!asked)
		return dflt;
	return asked > hard ? hard : asked;
}

struct chan_limits
chan__limits(const struct chan_limits *l)
{
	struct chan_limits r = {0};

	r.max_payload = pick(l ? l->max_payload : 0, CHAN_DEFAULT_MAX_PAYLOAD,
			     CHAN_HARD_MAX_PAYLOAD);
	r.max_handles = pick(l ? l->max_handles : 0, CHAN_DEFAULT_MAX_HANDLES,
			     CHAN_HARD_MAX_HANDLES);
	r.max_depth = pick(l ? l->max_depth : 0, CHAN_DEFAULT_MAX_DEPTH,
			   CHAN_HARD_MAX_DEPTH);
	return r;
}

CHAN_EXPORT int
chan_header_check(const struct chan_header *h, const struct chan_limits *limits)
{
	struct chan_limits l = chan__limits(limits);

	if (!h)
		return CHAN_E_INVALID_ARGUMENT;
	if (h->payload_length > l.max_payload)
		return CHAN_E_PAYLOAD_TOO_LARGE;
	if (h->flags || h->channel)
		return CHAN_E_RESERVED_FIELD_NONZERO;
	if (h->handle_count > l.max_handles)
		return CHAN_E_HANDLE_LIMIT_EXCEEDED;
	return 0;
}
