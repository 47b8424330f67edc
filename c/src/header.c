/* header.c - the 16-byte frame header (SPEC.md §5.1, §5.2). */
#include "internal.h"

static int
parse(const uint8_t *p, struct chan_header *ret)
{
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

CHAN_EXPORT int
chan_header_parse(const void *buf, size_t len, struct chan_header *ret_header)
{
	if (!ret_header || (!buf && len))
		return CHAN_E_INVALID_ARGUMENT;
	if (len < CHAN_HEADER_SIZE)
		return CHAN_E_TRUNCATED;
	return parse(buf, ret_header);
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

/* flags and channel (SPEC.md §5.2; revision 1.1: §16.2 rule 2, §17.1
 * rule 1, §18.1 rule 2).  A possible HELLO before agreement passes here
 * and is checked whole once its payload is decoded. */
static int
reserved_checks(const struct chan_header *h, unsigned accept)
{
	unsigned f = h->flags;

	if (!f && !h->channel)
		return 0;
	if (!(accept & CHAN__ACCEPT_AGREED))
		return (accept & CHAN__ACCEPT_HELLO) && f == CHAN__FLAG_CONTROL && !h->channel
			       ? 0
			       : CHAN_E_RESERVED_FIELD_NONZERO;
	f &= ~CHAN__FLAGS_OPTIONAL; /* ignored once the peer is known to be 1.1 */
	if (f & CHAN__FLAGS_CRITICAL)
		return CHAN_E_RESERVED_FIELD_NONZERO;
	if ((f & CHAN__FLAG_END) && (!(accept & CHAN__ACCEPT_CHANNELS) || !h->channel))
		return CHAN_E_RESERVED_FIELD_NONZERO;
	if (h->channel && !(accept & CHAN__ACCEPT_CHANNELS))
		return CHAN_E_RESERVED_FIELD_NONZERO;
	if (h->channel == CHAN__CHANNEL_THEIRS)
		return CHAN_E_UNKNOWN_CHANNEL;
	return 0;
}

/* The frame-scope header checks, in the order of SPEC.md §9.3. */
static int
frame_checks(const struct chan_header *h, const struct chan_limits *l, unsigned accept)
{
	int r = reserved_checks(h, accept);

	if (r < 0)
		return r;
	if (h->handle_count > l->max_handles)
		return CHAN_E_HANDLE_LIMIT_EXCEEDED;
	return 0;
}

CHAN_EXPORT int
chan_header_check(const struct chan_header *h, const struct chan_limits *limits)
{
	struct chan_limits l = chan__limits(limits);

	if (!h)
		return CHAN_E_INVALID_ARGUMENT;
	if (h->payload_length > l.max_payload)
		return CHAN_E_PAYLOAD_TOO_LARGE;
	return frame_checks(h, &l, 0);
}

int
chan__header_read(const void *p, const struct chan_limits *limits, unsigned accept,
		  struct chan_header *ret_header, int *ret_frame_error)
{
	struct chan_limits l = chan__limits(limits);
	int r = parse(p, ret_header);

	*ret_frame_error = 0;
	if (r < 0)
		return r;
	if (ret_header->payload_length > l.max_payload)
		return CHAN_E_PAYLOAD_TOO_LARGE;
	*ret_frame_error = frame_checks(ret_header, &l, accept);
	return 0;
}
