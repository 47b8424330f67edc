/*
 * ref.c - reference frame validation from SPEC.md (see ref.h).
 *
 * Written as a literal reading of the specification: one function per step
 * of §7.3, recursion for sub-messages (bounded: every nested Value passes
 * the depth check of step 7 first, and max_depth <= 32).
 *
 * Revision 1.1 (in->rev11): Value field 10 `channel_value`, a Channel{uint64
 * id = 1} (§4.4, §18.2 rule 2; §7.3 steps 3, 7, 8), and the header checks of
 * §9.3's revision note for a receiver that has the peer's HELLO and
 * implements `channels`: item 6 becomes the flag checks of §17.1 rule 1 then
 * the channel checks of §18.4.  A buffer decoder knows no connection state,
 * so of §18.1/§18.4 only `channel` 0x80000000 (§18.1 rule 2: bit 31 with id
 * 0) is decidable; of §17.1 rule 1, the critical bits and END on channel 0
 * (`channels` is implemented).  A control frame (CONTROL set) of a valid
 * payload then meets §17.2 rules 1-3 and the last clause of §17.1 rule 1
 * (control_rules below, read from the payload bytes).
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ref.h"

enum msgtype { M_VALUE, M_NULL, M_LIST, M_MAP, M_ENTRY, M_HANDLE, M_CHANNEL };

/* The schema of SPEC.md §4.4: field number -> wire type (-1: undefined),
 * whether it repeats, and the sub-message type of LEN fields. */
struct fdef {
	int wt;
	bool repeated;
	int sub; /* enum msgtype for sub-messages, -1 for scalars/bytes */
	int kind; /* for Value: 1 NULL .. 9 HANDLE, 10 CHANNEL */
};

static const struct fdef *
field_def(enum msgtype m, uint64_t number, int rev11)
{
	static const struct fdef value_fields[10] = {
		{-1, 0, -1, 0},	     {2, 0, M_NULL, 1}, {0, 0, -1, 2},
		{0, 0, -1, 3},	     {1, 0, -1, 4},	{2, 0, -1, 5},
		{2, 0, -1, 6},	     {2, 0, M_LIST, 7}, {2, 0, M_MAP, 8},
		{2, 0, M_HANDLE, 9},
	};
	static const struct fdef list_items = {2, 1, M_VALUE, 0};
	static const struct fdef map_entries = {2, 1, M_ENTRY, 0};
	static const struct fdef entry_key = {2, 0, -1, 0};
	static const struct fdef entry_value = {2, 0, M_VALUE, 0};
	static const struct fdef handle_index = {0, 0, -1, 0};
	static const struct fdef handle_kind = {0, 0, -1, 0};
	/* §4.4: Value.channel_value = 10 (Channel), Channel.id = 1 (uint64) */
	static const struct fdef channel_value = {2, 0, M_CHANNEL, 10};
	static const struct fdef channel_id = {0, 0, -1, 0};

	switch (m) {
	case M_VALUE:
		/* §18.2 rule 2: field 10 is known only where `channels` is
		 * accepted */
		if (number == 10 && rev11)
			return &channel_value;
		return number >= 1 && number <= 9 ? &value_fields[number] : NULL;
	case M_NULL:
		return NULL;
	case M_LIST:
		return number == 1 ? &list_items : NULL;
	case M_MAP:
		return number == 1 ? &map_entries : NULL;
	case M_ENTRY:
		return number == 1 ? &entry_key : number == 2 ? &entry_value : NULL;
	case M_HANDLE:
		return number == 1 ? &handle_index : number == 2 ? &handle_kind : NULL;
	case M_CHANNEL:
		return number == 1 ? &channel_id : NULL;
	}
	return NULL;
}

struct span {
	const uint8_t *p;
	size_t n;
};

struct ref {
	const struct ref_input *in;
	uint32_t handle_count;
	int64_t prev_index;
	uint64_t handles_met;
	/* maps (bodies) for the DUPLICATE_KEY check, handles' kinds in walk
	 * order for WRONG_HANDLE_KIND */
	struct span *maps;
	size_t nmaps, capmaps;
	uint8_t *kinds;
	size_t nkinds, capkinds;
	/* channel handles' ids, walk order (revision 1.1) */
	struct ref_result *out;
	size_t nchannels;
	int oom;
};

/* A varint as in SPEC.md §7.1.  Returns 0 and sets *v, *nbytes; -1 if it
 * runs past end; -2 if it has more than 10 bytes; -3 if it has 10 bytes
 * and the 10th is greater than 1. */
static int
varint(const uint8_t *p, const uint8_t *end, uint64_t *v, size_t *nbytes)
{
	uint64_t r = 0;
	size_t i;

	for (i = 0;; i++) {
		if (p + i >= end)
			return -1;
		if (i == 10)
			return -2;
		if (i == 9 && p[i] > 1) {
			/* keep reading: "more than 10 bytes" is also MALFORMED,
			 * and so is this; both give the same error */
			return -3;
		}
		r |= (uint64_t)(p[i] & 0x7f) << (7 * i);
		if (!(p[i] & 0x80))
			break;
	}
	*v = r;
	*nbytes = i + 1;
	return 0;
}

static bool
minimal(const uint8_t *p, size_t nbytes)
{
	return nbytes == 1 || p[nbytes - 1] != 0;
}

/* RFC 3629, written out by code point ranges. */
static bool
utf8_ok(const uint8_t *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint32_t cp;
		size_t len;

		if (s[i] < 0x80) {
			i++;
			continue;
		} else if ((s[i] & 0xe0) == 0xc0) {
			len = 2;
			cp = s[i] & 0x1f;
		} else if ((s[i] & 0xf0) == 0xe0) {
			len = 3;
			cp = s[i] & 0x0f;
		} else if ((s[i] & 0xf8) == 0xf0) {
			len = 4;
			cp = s[i] & 0x07;
		} else {
			return false;
		}
		if (n - i < len)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
		    (len == 4 && cp < 0x10000))
			return false; /* overlong */
		if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += len;
	}
	return true;
}

static void
note_map(struct ref *r, const uint8_t *p, size_t n)
{
	if (r->nmaps == r->capmaps) {
		size_t cap = r->capmaps ? 2 * r->capmaps : 16;
		struct span *m = realloc(r->maps, cap * sizeof(*m));

		if (!m) {
			r->oom = 1;
			return;
		}
		r->maps = m;
		r->capmaps = cap;
	}
	r->maps[r->nmaps++] = (struct span){p, n};
}

static void
note_kind(struct ref *r, uint64_t kind)
{
	if (r->nkinds == r->capkinds) {
		size_t cap = r->capkinds ? 2 * r->capkinds : 16;
		uint8_t *k = realloc(r->kinds, cap);

		if (!k) {
			r->oom = 1;
			return;
		}
		r->kinds = k;
		r->capkinds = cap;
	}
	r->kinds[r->nkinds++] = (uint8_t)kind;
}

static int walk(struct ref *r, enum msgtype m, const uint8_t *p, const uint8_t *end,
		uint32_t depth);

/* SPEC.md §7.3, steps 1-8, over one message body of type m.  depth is the
 * depth of the Value this body belongs to (for Value, List, Map, Entry,
 * Null, Handle bodies alike). */
static int
walk(struct ref *r, enum msgtype m, const uint8_t *p, const uint8_t *end, uint32_t depth)
{
	uint64_t prev = 0;
	int members = 0, has_value = 0;
	uint64_t index = 0, kind = 0, chan_id = 0;
	int e;

	if (m == M_MAP)
		note_map(r, p, (size_t)(end - p));
	while (p < end) {
		uint64_t tag, number, wt, v = 0;
		size_t nb;
		const struct fdef *d;
		const uint8_t *data = NULL;

		/* 1. tag */
		e = varint(p, end, &tag, &nb);
		if (e < 0 || tag > UINT32_MAX)
			return CHAN_E_MALFORMED;
		if (!minimal(p, nb))
			return CHAN_E_NONCANONICAL;
		p += nb;
		number = tag >> 3;
		wt = tag & 7;
		/* 2. */
		if (number == 0 || wt == 3 || wt == 4 || wt == 6 || wt == 7)
			return CHAN_E_MALFORMED;
		/* 3. */
		d = field_def(m, number, r->in->rev11);
		if (!d)
			return CHAN_E_UNKNOWN_FIELD;
		/* 4. */
		if ((int)wt != d->wt)
			return CHAN_E_MALFORMED;
		/* 5. */
		if (number < prev || (number == prev && !d->repeated) ||
		    (m == M_VALUE && members > 0))
			return CHAN_E_NONCANONICAL;
		prev = number;
		/* 6. */
		if (wt == 0) {
			e = varint(p, end, &v, &nb);
			if (e < 0)
				return CHAN_E_MALFORMED;
			if (!minimal(p, nb))
				return CHAN_E_NONCANONICAL;
			p += nb;
		} else if (wt == 1) {
			if (end - p < 8)
				return CHAN_E_MALFORMED;
			v = 0;
			for (int i = 0; i < 8; i++)
				v |= (uint64_t)p[i] << (8 * i);
			p += 8;
		} else {
			e = varint(p, end, &v, &nb);
			if (e < 0)
				return CHAN_E_MALFORMED;
			if (!minimal(p, nb))
				return CHAN_E_NONCANONICAL;
			p += nb;
			if (v > (uint64_t)(end - p))
				return CHAN_E_MALFORMED;
			data = p;
			p += v;
		}
		/* 7. */
		if (m == M_VALUE) {
			members++;
			switch (d->kind) {
			case 2: /* bool */
				if (v > 1)
					return CHAN_E_NONCANONICAL;
				break;
			case 4: { /* float */
				uint64_t exp = (v >> 52) & 0x7ff, frac = v & ((UINT64_C(1) << 52) - 1);

				if (exp == 0x7ff && frac != 0 && v != UINT64_C(0x7FF8000000000000))
					return CHAN_E_NONCANONICAL;
				break;
			}
			case 5: /* string */
				if (!utf8_ok(data, v))
					return CHAN_E_INVALID_UTF8;
				break;
			case 1:
			case 7:
			case 8:
			case 9:
			case 10:
				if ((e = walk(r, d->sub, data, data + v, depth)) < 0)
					return e;
				break;
			default:
				break;
			}
		} else if (m == M_LIST || (m == M_ENTRY && number == 2)) {
			/* an item of a list / the value of an entry: a Value one
			 * level deeper */
			if (depth + 1 > r->in->limits.max_depth)
				return CHAN_E_DEPTH_EXCEEDED;
			if ((e = walk(r, M_VALUE, data, data + v, depth + 1)) < 0)
				return e;
			if (m == M_ENTRY)
				has_value = 1;
		} else if (m == M_MAP) {
			if ((e = walk(r, M_ENTRY, data, data + v, depth)) < 0)
				return e;
		} else if (m == M_ENTRY) { /* key */
			if (!utf8_ok(data, v))
				return CHAN_E_INVALID_UTF8;
			if (memchr(data, 0, v))
				return CHAN_E_INVALID_KEY;
			if (v == 0)
				return CHAN_E_NONCANONICAL;
		} else if (m == M_HANDLE) {
			if (v == 0)
				return CHAN_E_NONCANONICAL;
			if (number == 1)
				index = v;
			else
				kind = v;
		} else if (m == M_CHANNEL) {
			/* §7.3 step 7, §18.2 rule 2 */
			if (v == 0)
				return CHAN_E_NONCANONICAL;
			chan_id = v;
		}
	}
	/* 8. */
	if (m == M_VALUE && members == 0)
		return CHAN_E_EMPTY_VALUE;
	if (m == M_ENTRY && !has_value)
		return CHAN_E_EMPTY_VALUE;
	if (m == M_HANDLE) {
		if (kind != 1 && kind != 2)
			return CHAN_E_UNKNOWN_HANDLE_KIND;
		if (index >= r->handle_count)
			return CHAN_E_HANDLE_INDEX_OUT_OF_RANGE;
		if ((int64_t)index <= r->prev_index)
			return CHAN_E_HANDLE_INDEX_OUT_OF_ORDER;
		r->prev_index = (int64_t)index;
		r->handles_met++;
		note_kind(r, kind);
	}
	if (m == M_CHANNEL) {
		/* §7.3 step 8: absent (0) or above 2^31-1 */
		if (chan_id == 0 || chan_id > UINT32_C(0x7fffffff))
			return CHAN_E_UNKNOWN_CHANNEL;
		if (r->out && r->nchannels < REF_MAX_CHANNELS)
			r->out->ids[r->nchannels] = (uint32_t)chan_id;
		r->nchannels++;
	}
	return 0;
}

static int
cmp_span(const void *a, const void *b)
{
	const struct span *x = a, *y = b;
	size_t n = x->n < y->n ? x->n : y->n;
	int c = memcmp(x->p, y->p, n);

	return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* Does the (valid) map body hold a key twice? */
static int
map_has_dup(const uint8_t *p, size_t n, int *oom)
{
	const uint8_t *end = p + n;
	struct span *keys = NULL;
	size_t nk = 0, cap = 0;
	int dup = 0;

	while (p < end) {
		uint64_t tag, len;
		size_t nb;
		const uint8_t *e, *eend;
		struct span key = {(const uint8_t *)"", 0};

		varint(p, end, &tag, &nb);
		p += nb;
		varint(p, end, &len, &nb);
		p += nb;
		e = p;
		eend = p + len;
		p += len;
		while (e < eend) {
			uint64_t t, l;

			varint(e, eend, &t, &nb);
			e += nb;
			varint(e, eend, &l, &nb);
			e += nb;
			if (t >> 3 == 1)
				key = (struct span){e, (size_t)l};
			e += l;
		}
		if (nk == cap) {
			size_t c = cap ? cap * 2 : 16;
			struct span *k = realloc(keys, c * sizeof(*k));

			if (!k) {
				*oom = 1;
				free(keys);
				return 0;
			}
			keys = k;
			cap = c;
		}
		keys[nk++] = key;
	}
	if (nk > 1) {
		qsort(keys, nk, sizeof(*keys), cmp_span);
		for (size_t i = 1; i < nk && !dup; i++)
			dup = cmp_span(&keys[i - 1], &keys[i]) == 0;
	}
	free(keys);
	return dup;
}

int
ref_decode(const struct ref_input *in, size_t *ret_frame_len)
{
	return ref_decode_ex(in, ret_frame_len, NULL);
}

/* §9.3 item 6 (1.0), or what replaces it in revision 1.1 (§9.3's note,
 * §17.1 rule 1, §18.1 rule 2, §18.4). */
static int
reserved_fields(const struct ref_input *in, uint8_t flags, uint32_t channel)
{
	if (!in->rev11)
		return flags != 0 || channel != 0 ? CHAN_E_RESERVED_FIELD_NONZERO : 0;
	/* §17.1 rule 1, in its order: a critical reserved bit (0x04, 0x08);
	 * END (0x02) on channel 0; (END without `channels`: implemented);
	 * (CONTROL with END on an op other than close: see the top).
	 * Optional bits 0x10-0x80 are ignored. */
	if (flags & 0x0c)
		return CHAN_E_RESERVED_FIELD_NONZERO;
	if ((flags & 0x02) && channel == 0)
		return CHAN_E_RESERVED_FIELD_NONZERO;
	/* §18.1 rule 2 */
	if (channel == UINT32_C(0x80000000))
		return CHAN_E_UNKNOWN_CHANNEL;
	return 0;
}

/* One LEN or varint field of a canonical body: its tag's number and wire
 * type, and its data (LEN) or value (varint). */
struct rfield {
	uint64_t number, wt, value;
	const uint8_t *data;
};

static bool
next_rfield(const uint8_t **p, const uint8_t *end, struct rfield *f)
{
	uint64_t tag;
	size_t n;

	if (*p >= end || varint(*p, end, &tag, &n) < 0)
		return false;
	*p += n;
	f->number = tag >> 3;
	f->wt = tag & 7;
	if (f->wt == 1) {
		*p += 8;
		return *p <= end;
	}
	if (varint(*p, end, &f->value, &n) < 0)
		return false;
	*p += n;
	if (f->wt == 2) {
		f->data = *p;
		*p += f->value;
	}
	return *p <= end;
}

/* The Value of a map entry named key (a valid map body), or NULL. */
static bool
map_entry(const uint8_t *map, const uint8_t *end, const char *key, const uint8_t **ret_v,
	  const uint8_t **ret_vend, bool *ret_first)
{
	struct rfield e, f;
	bool first = true;

	while (next_rfield(&map, end, &e)) {
		const uint8_t *q = e.data, *qe = e.data + e.value;
		const uint8_t *k = (const uint8_t *)"";
		size_t kl = 0;

		while (next_rfield(&q, qe, &f)) {
			if (f.number == 1) {
				k = f.data;
				kl = (size_t)f.value;
			} else if (strlen(key) == kl && !memcmp(k, key, kl)) {
				*ret_v = f.data;
				*ret_vend = f.data + f.value;
				*ret_first = first;
				return true;
			}
		}
		first = false;
	}
	return false;
}

/* A Value body's single member: its field number and data. */
static uint64_t
value_member(const uint8_t *v, const uint8_t *end, struct rfield *f)
{
	return next_rfield(&v, end, f) ? f->number : 0;
}

/* SPEC.md §17.2 rules 1-3, §17.1 rule 1 (last clause), §16.2 rule 5: what a
 * control frame's value must be.  payload is valid (§7.3 passed). */
static int
control_rules(const uint8_t *payload, uint32_t plen, uint8_t flags, uint32_t channel,
	      uint16_t count)
{
	const uint8_t *end = payload + plen, *v, *ve;
	struct rfield root, m;
	bool first;
	char op[16];
	size_t opn;

	if (count)
		return CHAN_E_UNSUPPORTED_FEATURE;
	if (value_member(payload, end, &root) != 8) /* map_value */
		return CHAN_E_UNSUPPORTED_FEATURE;
	if (!map_entry(root.data, root.data + root.value, "op", &v, &ve, &first) || !first ||
	    value_member(v, ve, &m) != 5) /* string_value */
		return CHAN_E_UNSUPPORTED_FEATURE;
	opn = m.value < sizeof(op) - 1 ? (size_t)m.value : sizeof(op) - 1;
	memcpy(op, m.data, opn);
	op[opn] = 0;
	if (m.value >= sizeof(op))
		op[0] = 0; /* not a known operation */
	if ((flags & 0x02) && strcmp(op, "close") != 0)
		return CHAN_E_RESERVED_FIELD_NONZERO;
	if (!strcmp(op, "hello")) {
		if (channel)
			return CHAN_E_UNSUPPORTED_FEATURE;
		if (!map_entry(root.data, root.data + root.value, "features", &v, &ve, &first) ||
		    value_member(v, ve, &m) != 8)
			return CHAN_E_UNSUPPORTED_FEATURE;
		if (map_entry(root.data, root.data + root.value, "require", &v, &ve, &first)) {
			const uint8_t *q;
			struct rfield it, s;

			if (value_member(v, ve, &m) != 7) /* list_value */
				return CHAN_E_UNSUPPORTED_FEATURE;
			q = m.data;
			while (next_rfield(&q, m.data + m.value, &it))
				if (value_member(it.data, it.data + it.value, &s) != 5)
					return CHAN_E_UNSUPPORTED_FEATURE;
		}
		return 0;
	}
	if (!strcmp(op, "epitaph"))
		return channel ? CHAN_E_UNSUPPORTED_FEATURE : 0;
	if (!strcmp(op, "close"))
		return !channel || !(flags & 0x02) ? CHAN_E_UNSUPPORTED_FEATURE : 0;
	/* unknown: ignored unless "critical": true */
	if (map_entry(root.data, root.data + root.value, "critical", &v, &ve, &first) &&
	    value_member(v, ve, &m) == 2 && m.value == 1)
		return CHAN_E_UNSUPPORTED_FEATURE;
	return 0;
}

int
ref_decode_ex(const struct ref_input *in, size_t *ret_frame_len, struct ref_result *out)
{
	const uint8_t *b = in->buf;
	uint32_t plen, channel;
	uint16_t count;
	struct ref r;
	int e;

	/* SPEC.md §9.3 items 1-8 */
	if (in->len < 16)
		return CHAN_E_TRUNCATED;
	if (memcmp(b, "CHAN", 4) != 0)
		return CHAN_E_BAD_MAGIC;
	if (b[4] != 1)
		return CHAN_E_UNSUPPORTED_VERSION;
	count = (uint16_t)(b[6] | b[7] << 8);
	channel = (uint32_t)b[8] | (uint32_t)b[9] << 8 | (uint32_t)b[10] << 16 |
		  (uint32_t)b[11] << 24;
	plen = (uint32_t)b[12] | (uint32_t)b[13] << 8 | (uint32_t)b[14] << 16 |
	       (uint32_t)b[15] << 24;
	if (ret_frame_len)
		*ret_frame_len = 16 + (size_t)plen;
	if (plen > in->limits.max_payload)
		return CHAN_E_PAYLOAD_TOO_LARGE;
	if (in->len - 16 < plen)
		return CHAN_E_TRUNCATED;
	if ((e = reserved_fields(in, b[5], channel)) < 0)
		return e;
	if (count > in->limits.max_handles)
		return CHAN_E_HANDLE_LIMIT_EXCEEDED;
	if (!in->detached && in->nfds < count)
		return CHAN_E_TOO_FEW_HANDLES;
	if (!in->detached && in->nfds > count)
		return CHAN_E_TOO_MANY_HANDLES;

	/* item 9: the walk; the root Value's body is the whole payload */
	memset(&r, 0, sizeof(r));
	r.in = in;
	r.handle_count = count;
	r.prev_index = -1;
	r.out = out;
	e = walk(&r, M_VALUE, b + 16, b + 16 + plen, 1);
	/* 10-12 */
	if (!e && r.handles_met < count)
		e = CHAN_E_UNREFERENCED_HANDLE;
	for (size_t i = 0; !e && i < r.nmaps; i++)
		if (map_has_dup(r.maps[i].p, r.maps[i].n, &r.oom))
			e = CHAN_E_DUPLICATE_KEY;
	if (!e && !in->detached)
		for (size_t i = 0; i < r.nkinds && !e; i++)
			if (r.kinds[i] == 2 && !in->is_conn_ok(in->ctx, i))
				e = CHAN_E_WRONG_HANDLE_KIND;
	if (!e && in->rev11 && (b[5] & 0x01))
		e = control_rules(b + 16, plen, b[5], channel, count);
	if (r.oom)
		abort(); /* the oracle itself must not guess */
	if (!e && out) {
		out->nchannels = r.nchannels;
		out->nhandles = r.nkinds;
		for (size_t i = 0; i < r.nkinds && i < CHAN_HARD_MAX_HANDLES; i++)
			out->kinds[i] = r.kinds[i];
	}
	free(r.maps);
	free(r.kinds);
	return e;
}
