/*
 * dump.c - chancodec dump: annotated hex of frames.
 *
 * One field per line: the bytes in hex, then a '#' comment naming the field
 * (message.field (number:wire type)) and its value.  Nested messages are
 * indented by two spaces per level.  The walk is tolerant: it annotates
 * invalid frames as far as they can be parsed, prints what it cannot parse
 * as raw bytes, and ends each frame with the decoder's verdict, so a dump of
 * any captured frame can be pasted into a conformance vector.
 */
#include "chancodec.h"

#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define COMMENT_COLUMN 44

enum mtype { M_VALUE, M_NULL, M_LIST, M_MAP, M_ENTRY, M_HANDLE, M_CHANNEL };
enum ftype { F_MSG, F_BOOL, F_SINT, F_UINT, F_KIND, F_DOUBLE, F_TEXT, F_BYTES, F_CHID };

struct fdef {
	const char *name;
	unsigned wt; /* 0 varint, 1 fixed64, 2 LEN */
	enum ftype type;
	enum mtype sub;
};

struct mdef {
	const char *name;
	unsigned nfields;
	struct fdef fields[11]; /* index = field number */
};

/* --revision 1.1: Value field 10 (channel_value) is known (SPEC.md §18.2
 * rule 2); the header's flags and channel are read as §17.1 and §18.1 say. */
static int rev11;

static const struct mdef MDEFS[] = {
	[M_VALUE] = {"Value",
		     10,
		     {{0},
		      {"null_value", 2, F_MSG, M_NULL},
		      {"bool_value", 0, F_BOOL, 0},
		      {"int_value", 0, F_SINT, 0},
		      {"float_value", 1, F_DOUBLE, 0},
		      {"string_value", 2, F_TEXT, 0},
		      {"bytes_value", 2, F_BYTES, 0},
		      {"list_value", 2, F_MSG, M_LIST},
		      {"map_value", 2, F_MSG, M_MAP},
		      {"handle_value", 2, F_MSG, M_HANDLE},
		      {"channel_value", 2, F_MSG, M_CHANNEL}}},
	[M_NULL] = {"Null", 0, {{0}}},
	[M_LIST] = {"List", 1, {{0}, {"items", 2, F_MSG, M_VALUE}}},
	[M_MAP] = {"Map", 1, {{0}, {"entries", 2, F_MSG, M_ENTRY}}},
	[M_ENTRY] = {"Entry",
		     2,
		     {{0},
		      {"key", 2, F_TEXT, 0},
		      {"value", 2, F_MSG, M_VALUE}}},
	[M_HANDLE] = {"Handle",
		      2,
		      {{0},
		       {"index", 0, F_UINT, 0},
		       {"kind", 0, F_KIND, 0}}},
	[M_CHANNEL] = {"Channel", 1, {{0}, {"id", 0, F_CHID, 0}}},
};

static const char *const WT_NAMES[8] = {"VARINT", "I64", "LEN",
					"SGROUP", "EGROUP", "I32",
					"wt6",    "wt7"};

/* Read a varint.  0 ok; -1 runs past end; -2 longer than 10 bytes or the
 * 10th byte > 1.  *ret_n = bytes used (or available on error). */
static int
varint(const unsigned char *p, const unsigned char *end, uint64_t *ret,
       size_t *ret_n)
{
	uint64_t v = 0;
	size_t i;

	for (i = 0; i < 10; i++) {
		if (p + i >= end) {
			*ret_n = i;
			return -1;
		}
		if (i == 9 && p[i] > 1) {
			*ret_n = i + 1;
			return -2;
		}
		v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
		if (!(p[i] & 0x80)) {
			*ret = v;
			*ret_n = i + 1;
			return 0;
		}
	}
	*ret_n = 10;
	return -2;
}

static size_t
varint_len(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

/* One output line in the layout of the conformance vectors (.vec): two spaces
 * plus two per level, the hex, and the comment from column 46. */
static void line(FILE *out, int level, const unsigned char *p, size_t n,
		 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void
line(FILE *out, int level, const unsigned char *p, size_t n, const char *fmt,
     ...)
{
	int col = 2, i;
	size_t k;
	va_list ap;

	fputs("  ", out);
	for (i = 0; i < level; i++)
		col += fprintf(out, "  ");
	for (k = 0; k < n; k++)
		col += fprintf(out, k ? " %02x" : "%02x", p[k]);
	if (fmt) {
		if (col <= COMMENT_COLUMN)
			fprintf(out, "%*s # ", COMMENT_COLUMN - col, "");
		else
			fputs("  # ", out);
		va_start(ap, fmt);
		vfprintf(out, fmt, ap);
		va_end(ap);
	}
	putc('\n', out);
}

/* Bytes quoted for comments: printable ASCII as is, the rest \xNN. */
static void
qstr(char *dst, size_t cap, const unsigned char *p, size_t n)
{
	size_t o = 0, i;

	dst[o++] = '"';
	for (i = 0; i < n && o + 6 < cap; i++) {
		unsigned char c = p[i];

		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
			dst[o++] = (char)c;
		else
			o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", c);
	}
	snprintf(dst + o, cap - o, "\"");
}

/* String, key or bytes contents: 16 bytes a line, each with a comment
 * ("UTF-8 "..."" or "bytes A-B", plus " [A..B]" when there are more than
 * 16 bytes). */
static void
data_lines(FILE *out, int level, const unsigned char *p, size_t n,
	   const char *what)
{
	size_t off;

	for (off = 0; off < n; off += 16) {
		size_t m = n - off < 16 ? n - off : 16;
		char cm[160], q[80];
		int len;

		if (what) {
			qstr(q, sizeof(q), p + off, m);
			len = snprintf(cm, sizeof(cm), "%s %s", what, q);
		} else {
			len = snprintf(cm, sizeof(cm), "bytes %zu-%zu", off,
				       off + m - 1);
		}
		if (n > 16)
			snprintf(cm + len, sizeof(cm) - (size_t)len,
				 " [%zu..%zu]", off, off + m - 1);
		line(out, level, p + off, m, "%s", cm);
	}
}

/* Raw bytes that cannot be parsed, 16 per line, the reason on the first. */
static void
raw(FILE *out, int level, const unsigned char *p, size_t n, const char *what)
{
	size_t k;

	for (k = 0; k < n; k += 16) {
		size_t m = n - k < 16 ? n - k : 16;

		if (k == 0)
			line(out, level, p, m, "%s", what);
		else
			line(out, level, p + k, m, NULL);
	}
	if (n == 0)
		line(out, level, p, 0, "%s (no bytes)", what);
}

static const char *
nonmin(size_t used, uint64_t v)
{
	return used > varint_len(v) ? " (non-minimal varint)" : "";
}

/* ------------------------------------------------------------------------ */
/* Revision 1.1: flags, channel field, control messages (SPEC.md §16-§18) */

#define FLAG_CONTROL 0x01u
#define FLAG_END 0x02u
#define FLAGS_CRITICAL 0x0cu
#define FLAGS_OPTIONAL 0xf0u
#define CHANNEL_THEIRS 0x80000000u

/* Append to buf (at *o, of cap). */
static void appendf(char *buf, size_t cap, size_t *o, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void
appendf(char *buf, size_t cap, size_t *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*o >= cap)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf + *o, cap - *o, fmt, ap);
	va_end(ap);
	if (n > 0)
		*o = *o + (size_t)n < cap ? *o + (size_t)n : cap - 1;
}

void
describe_flags(char *buf, size_t cap, unsigned flags, uint32_t channel)
{
	size_t o = 0;
	const char *sep = "";

	buf[0] = '\0';
	if (flags & FLAG_CONTROL)
		appendf(buf, cap, &o, "%sCONTROL", sep), sep = "|";
	if (flags & FLAG_END)
		appendf(buf, cap, &o, "%sEND", sep), sep = "|";
	if (flags & (FLAGS_CRITICAL | FLAGS_OPTIONAL))
		appendf(buf, cap, &o, "%s0x%02x", sep, flags & (FLAGS_CRITICAL | FLAGS_OPTIONAL));
	if (flags & FLAGS_CRITICAL)
		appendf(buf, cap, &o, " ?? reserved critical bits (RESERVED_FIELD_NONZERO)");
	else if (flags & FLAGS_OPTIONAL)
		appendf(buf, cap, &o, " (reserved optional bits: ignored)");
	if ((flags & FLAG_END) && !channel)
		appendf(buf, cap, &o, " ?? END on channel 0 (RESERVED_FIELD_NONZERO)");
}

void
describe_channel(char *buf, size_t cap, uint32_t channel)
{
	uint32_t id = channel & ~CHANNEL_THEIRS;

	if (!channel)
		snprintf(buf, cap, "0 = the main stream");
	else if (!id)
		snprintf(buf, cap, "0x%08" PRIx32 " ?? id 0 (UNKNOWN_CHANNEL)", channel);
	else if (channel & CHANNEL_THEIRS)
		snprintf(buf, cap, "0x%08" PRIx32 " = id %" PRIu32 ", opened by the receiver of "
			 "this frame", channel, id);
	else
		snprintf(buf, cap, "%" PRIu32 " = id %" PRIu32 ", opened by the sender of this frame",
			 channel, id);
}

/* A string value quoted for a comment (at most 80 bytes shown). */
static void
quoted(char *buf, size_t cap, size_t *o, const chan_value *v)
{
	const char *s = NULL;
	size_t n = 0;
	char q[400];

	chan_value_get_string(v, &s, &n);
	qstr(q, sizeof(q), (const unsigned char *)s, n < 80 ? n : 80);
	appendf(buf, cap, o, "%s%s", q, n > 80 ? "..." : "");
}

static const char *
code_name(int64_t code)
{
	const char *name = code >= 1 && code <= 255 ? chan_errname(-(int)code) : NULL;

	return name ? name : "unregistered";
}

void
describe_control(char *buf, size_t cap, const struct chan_header *h, const chan_value *root)
{
	const chan_value *v = NULL;
	const char *op = NULL, *k;
	size_t o = 0, oplen = 0, i, n;
	int64_t code;
	bool crit = false;

	buf[0] = '\0';
	if (chan_value_type(root) == CHAN_MAP && chan_value_count(root) > 0 &&
	    (k = chan_map_key_at(root, 0, &n)) && n == 2 && !memcmp(k, "op", 2))
		chan_value_get_string(chan_value_at(root, 0), &op, &oplen);
	if (!op) {
		appendf(buf, cap, &o, "?? not a control message: a map whose first entry is "
			"\"op\" with a string (UNSUPPORTED_FEATURE)");
		return;
	}
	if (oplen == 5 && !memcmp(op, "hello", 5)) {
		appendf(buf, cap, &o, "hello");
		if (!(v = chan_map_get(root, "features")) ||
		    chan_value_type(v) != CHAN_MAP) {
			appendf(buf, cap, &o, " ?? \"features\" is not a map: not a well-formed "
				"HELLO");
		} else {
			appendf(buf, cap, &o, ", features:");
			for (i = 0; i < chan_value_count(v); i++) {
				k = chan_map_key_at(v, i, &n);
				appendf(buf, cap, &o, " %.*s", (int)n, k);
			}
			if (!chan_value_count(v))
				appendf(buf, cap, &o, " none");
		}
		if ((v = chan_map_get(root, "require"))) {
			appendf(buf, cap, &o, ", require:");
			for (i = 0; chan_value_type(v) == CHAN_LIST && i < chan_value_count(v);
			     i++) {
				const char *s;

				if (chan_value_get_string(chan_value_at(v, i), &s, &n) == 0)
					appendf(buf, cap, &o, " %.*s", (int)n, s);
				else
					appendf(buf, cap, &o, " ?? not a string");
			}
			if (chan_value_type(v) != CHAN_LIST)
				appendf(buf, cap, &o, " ?? not a list: not a well-formed HELLO");
		}
		if (h->channel)
			appendf(buf, cap, &o, " ?? not on channel 0 (UNSUPPORTED_FEATURE)");
	} else if (oplen == 7 && !memcmp(op, "epitaph", 7)) {
		appendf(buf, cap, &o, "epitaph");
		if (chan_map_get_int(root, "code", &code) == 0 && code >= 1 && code <= 255)
			appendf(buf, cap, &o, ", code %" PRId64 " %s", code, code_name(code));
		else
			appendf(buf, cap, &o, ", no code in 1..255 (reported as CONNECTION_CLOSED)");
		if ((v = chan_map_get(root, "message")) &&
		    chan_value_type(v) == CHAN_STRING) {
			appendf(buf, cap, &o, ", message ");
			quoted(buf, cap, &o, v);
		}
		if (h->channel)
			appendf(buf, cap, &o, " ?? not on channel 0 (UNSUPPORTED_FEATURE)");
	} else if (oplen == 5 && !memcmp(op, "close", 5)) {
		appendf(buf, cap, &o, "close");
		if (h->channel)
			appendf(buf, cap, &o, " channel id %" PRIu32,
				h->channel & ~CHANNEL_THEIRS);
		if (chan_map_get_int(root, "code", &code) == 0 && code >= 1 && code <= 255)
			appendf(buf, cap, &o, ", code %" PRId64 " %s", code, code_name(code));
		if (!h->channel || !(h->flags & FLAG_END))
			appendf(buf, cap, &o, " ?? close needs a channel other than 0 and END "
				"(UNSUPPORTED_FEATURE)");
	} else {
		if ((v = chan_map_get(root, "critical")))
			chan_value_get_bool(v, &crit);
		appendf(buf, cap, &o, "unknown operation \"%.*s\"", (int)(oplen < 40 ? oplen : 40),
			op);
		appendf(buf, cap, &o, crit ? " ?? critical (UNSUPPORTED_FEATURE)" : ": ignored");
	}
	if ((h->flags & FLAG_END) && !(oplen == 5 && !memcmp(op, "close", 5)))
		appendf(buf, cap, &o, " ?? CONTROL with END on an operation other than close "
			"(RESERVED_FIELD_NONZERO)");
	if (h->handle_count)
		appendf(buf, cap, &o, " ?? a control frame carries no handles "
			"(UNSUPPORTED_FEATURE)");
}

static void walk(FILE *out, const unsigned char *p, const unsigned char *end,
		 enum mtype mt, int level);

/* A LEN field: the tag and length on one line, the contents below. */
static void
field_len(FILE *out, const struct mdef *md, unsigned num,
	  const struct fdef *fd, unsigned rep, const unsigned char *tagp,
	  size_t taglen, const unsigned char *p, const unsigned char *end,
	  int level)
{
	uint64_t len;
	size_t n;
	int r = varint(p, end, &len, &n);
	const unsigned char *data = p + n;
	char fname[64];

	/* List.items and Map.entries repeat: number them */
	if (md == &MDEFS[M_LIST] || md == &MDEFS[M_MAP])
		snprintf(fname, sizeof(fname), "%s.%s[%u]", md->name,
			 fd->name, rep);
	else
		snprintf(fname, sizeof(fname), "%s.%s", md->name, fd->name);
	if (r < 0) {
		raw(out, level, tagp, (size_t)(end - tagp),
		    r == -1 ? "?? length varint runs past the end (MALFORMED)"
			    : "?? length varint too long (MALFORMED)");
		return;
	}
	if (len > (uint64_t)(end - data)) {
		line(out, level, tagp, taglen + n,
		     "%s (%u:LEN) len %" PRIu64
		     " ?? but only %zu bytes are left (MALFORMED)",
		     fname, num, len, (size_t)(end - data));
		if (end > data)
			raw(out, level + 1, data, (size_t)(end - data),
			    "?? the bytes left");
		return;
	}
	line(out, level, tagp, taglen + n,
	     "%s (%u:LEN) len %" PRIu64 "%s%s%s", fname, num, len,
	     fd->type == F_MSG && fd->sub == M_NULL && len == 0 ? " = Null{}"
	     : fd->type == F_MSG && fd->sub == M_CHANNEL && len == 0
		     ? " = Channel{} ?? no id (UNKNOWN_CHANNEL)"
		     : "",
	     nonmin(taglen, (uint64_t)num << 3 | 2), nonmin(n, len));
	if (fd->type == F_MSG)
		walk(out, data, data + len, fd->sub, level + 1);
	else
		data_lines(out, level + 1, data, (size_t)len,
			   fd->type == F_TEXT ? "UTF-8" : NULL);
}

static void
walk(FILE *out, const unsigned char *p, const unsigned char *end,
     enum mtype mt, int level)
{
	const struct mdef *md = &MDEFS[mt];
	unsigned rep = 0;

	while (p < end) {
		const unsigned char *tagp = p;
		uint64_t tag, v;
		size_t n, tn;
		unsigned num, wt;
		const struct fdef *fd;
		int r = varint(p, end, &tag, &tn);

		if (r < 0 || tag > UINT32_MAX) {
			raw(out, level, p, (size_t)(end - p),
			    r == -1 ? "?? tag varint runs past the end "
				      "(MALFORMED)"
				    : "?? tag varint too long (MALFORMED)");
			return;
		}
		p += tn;
		num = (unsigned)(tag >> 3);
		wt = (unsigned)(tag & 7);
		if (num == 0 || wt == 3 || wt == 4 || wt == 6 || wt == 7) {
			char what[96];

			snprintf(what, sizeof(what),
				 "?? tag %" PRIu64 ": field %u, wire type %u "
				 "(MALFORMED)",
				 tag, num, wt);
			raw(out, level, tagp, (size_t)(end - tagp), what);
			return;
		}
		fd = num <= md->nfields ? &md->fields[num] : NULL;
		/* Value.channel_value is a field of revision 1.1 only */
		if (fd && fd->sub == M_CHANNEL && fd->type == F_MSG && !rev11)
			fd = NULL;
		if (!fd || fd->wt != wt) {
			/* show the field, skipped by its wire type */
			const char *why = fd ? "?? wrong wire type (MALFORMED)"
					  : mt == M_VALUE && num == 10 && wt == 2
						  ? "?? unknown field (UNKNOWN_FIELD; "
						    "Value.channel_value in revision "
						    "1.1: --revision 1.1)"
						  : "?? unknown field "
						    "(UNKNOWN_FIELD)";
			uint64_t skip = 0;

			if (wt == 0) {
				r = varint(p, end, &v, &n);
			} else if (wt == 1 || wt == 5) {
				n = 0;
				skip = wt == 1 ? 8 : 4;
				r = (uint64_t)(end - p) < skip ? -1 : 0;
			} else {
				r = varint(p, end, &v, &n);
				skip = v;
				if (!r && v > (uint64_t)(end - p - n))
					r = -1;
			}
			if (r < 0) {
				raw(out, level, tagp, (size_t)(end - tagp),
				    "?? truncated field");
				return;
			}
			line(out, level, tagp, tn + n + (size_t)skip,
			     "%s field %u (%u:%s) %s", md->name, num, num,
			     WT_NAMES[wt], why);
			p += n + skip;
			continue;
		}
		switch (wt) {
		case 0:
			r = varint(p, end, &v, &n);
			if (r < 0) {
				raw(out, level, tagp, (size_t)(end - tagp),
				    "?? varint runs past the end or is too "
				    "long (MALFORMED)");
				return;
			}
			if (fd->type == F_SINT)
				line(out, level, tagp, tn + n,
				     "%s.%s (%u:VARINT) zigzag(%" PRId64
				     ") = %" PRIu64 "%s%s",
				     md->name, fd->name, num,
				     (int64_t)(v >> 1) ^ -(int64_t)(v & 1), v,
				     nonmin(tn, tag), nonmin(n, v));
			else if (fd->type == F_BOOL)
				line(out, level, tagp, tn + n,
				     "%s.%s (%u:VARINT) = %s%s%s", md->name,
				     fd->name, num,
				     v == 0   ? "false"
				     : v == 1 ? "true"
					      : "?? not 0 or 1 (NONCANONICAL)",
				     nonmin(tn, tag), nonmin(n, v));
			else if (fd->type == F_KIND)
				line(out, level, tagp, tn + n,
				     "%s.%s (%u:VARINT) = %" PRIu64 " (%s)%s%s",
				     md->name, fd->name, num, v,
				     v == CHAN_KIND_FD	   ? "fd"
				     : v == CHAN_KIND_CONN ? "conn"
							   : "unregistered",
				     nonmin(tn, tag), nonmin(n, v));
			else if (fd->type == F_CHID)
				line(out, level, tagp, tn + n,
				     "%s.%s (%u:VARINT) = %" PRIu64 "%s%s%s",
				     md->name, fd->name, num, v,
				     v == 0 ? " ?? 0 is written by leaving id out "
					      "(NONCANONICAL)"
				     : v > 0x7fffffffu
					     ? " ?? above 2^31-1 (UNKNOWN_CHANNEL)"
					     : "",
				     nonmin(tn, tag), nonmin(n, v));
			else
				line(out, level, tagp, tn + n,
				     "%s.%s (%u:VARINT) = %" PRIu64 "%s%s",
				     md->name, fd->name, num, v,
				     nonmin(tn, tag), nonmin(n, v));
			p += n;
			break;
		case 1: {
			uint64_t bits = 0;
			double d;
			char fb[48];
			int k;

			line(out, level, tagp, tn, "%s.%s (%u:I64)%s",
			     md->name, fd->name, num, nonmin(tn, tag));
			if (end - p < 8) {
				raw(out, level + 1, p, (size_t)(end - p),
				    "?? fixed64 runs past the end (MALFORMED)");
				return;
			}
			for (k = 7; k >= 0; k--)
				bits = bits << 8 | p[k];
			memcpy(&d, &bits, 8);
			if (isnan(d))
				snprintf(fb, sizeof(fb), "{\"$float\":\"NaN\"}");
			else if (isinf(d))
				snprintf(fb, sizeof(fb),
					 "{\"$float\":\"%sInfinity\"}",
					 d < 0 ? "-" : "");
			else
				tf_format_double(d, fb);
			line(out, level + 1, p, 8, "binary64 0x%016" PRIx64
			     " = %s%s", bits, fb,
			     isnan(d) && bits != 0x7ff8000000000000u
				     ? " ?? not the canonical NaN "
				       "(NONCANONICAL)"
				     : "");
			p += 8;
			break;
		}
		default:
			field_len(out, md, num, fd, rep, tagp, tn, p, end,
				  level);
			r = varint(p, end, &v, &n);
			if (r < 0 || v > (uint64_t)(end - p - n))
				return;
			p += n + v;
			break;
		}
		if (num == 1 && (mt == M_LIST || mt == M_MAP))
			rep++;
	}
}

static void
dump_header(FILE *out, const unsigned char *b, size_t len,
	    const struct chan_header *h)
{
	char q[40];

	if (len < CHAN_HEADER_SIZE) {
		raw(out, 0, b, len, "?? header: fewer than 16 bytes");
		return;
	}
	qstr(q, sizeof(q), b, 4);
	line(out, 0, b, 4, "magic %s%s", q,
	     memcmp(b, "CHAN", 4) ? " ?? not \"CHAN\"" : "");
	line(out, 0, b + 4, 1, "version %u", h->version);
	if (h->flags) {
		char f[200];

		describe_flags(f, sizeof(f), h->flags, h->channel);
		line(out, 0, b + 5, 1, "flags 0x%02x = %s%s", h->flags, f,
		     rev11 ? "" : " ?? must be 0 in revision 1.0 (RESERVED_FIELD_NONZERO; "
				  "--revision 1.1 reads it)");
	} else {
		line(out, 0, b + 5, 1, "flags 0x%02x", h->flags);
	}
	line(out, 0, b + 6, 2, "handle_count %u", h->handle_count);
	if (h->channel) {
		char ch[120];

		describe_channel(ch, sizeof(ch), h->channel);
		line(out, 0, b + 8, 4, "channel %s%s", ch,
		     rev11 ? "" : " ?? must be 0 in revision 1.0 (RESERVED_FIELD_NONZERO; "
				  "--revision 1.1 reads it)");
	} else {
		line(out, 0, b + 8, 4, "channel %" PRIu32, h->channel);
	}
	line(out, 0, b + 12, 4, "payload_length %" PRIu32, h->payload_length);
}

static void
verdict(FILE *out, const struct frame_reader *fr, int rc, chan_msg *msg)
{
	if (rc < 0) {
		fprintf(out, "# => %s: %s\n", chan_errname(rc),
			chan_strerror(rc));
		return;
	}
	fputs("# => OK: ", out);
	{
		char *text = NULL;
		size_t n = 0;
		FILE *m = open_memstream(&text, &n);

		if (m) {
			tf_render(m, chan_msg_root(msg), 0);
			fclose(m);
		}
		if (text && n <= 200)
			fputs(text, out);
		else
			fprintf(out, "(%zu bytes of text)", n);
		free(text);
	}
	(void)fr;
	putc('\n', out);
}

static int
dump_stream(FILE *in, const char *name, const struct common_opts *o)
{
	struct frame_reader fr = {0};
	int rc, status = EXIT_OK;

	fr.fp = in;
	rev11 = !!(o->decode_flags & CHAN_DECODE_REVISION_1_1);
	while (!o->count || fr.index < o->count) {
		chan_msg *msg = NULL;
		int drc;

		rc = frame_next(&fr, &o->limits);
		if (rc == 0)
			break;
		if (rc == CHAN_E_SYSTEM || rc == CHAN_E_NO_MEMORY) {
			report(name, chan_errname(rc), "%s",
			       rc == CHAN_E_SYSTEM ? strerror(fr.read_errno)
						   : "out of memory");
			status = EXIT_USAGE;
			break;
		}
		printf("# frame %lu at byte %llu\n", fr.index,
		       (unsigned long long)fr.offset);
		dump_header(stdout, fr.buf, fr.len, &fr.header);
		if (fr.len > CHAN_HEADER_SIZE &&
		    rc != CHAN_E_PAYLOAD_TOO_LARGE) {
			if (rc == CHAN_E_TRUNCATED)
				printf("# payload: %zu of %" PRIu32
				       " bytes present\n",
				       fr.len - CHAN_HEADER_SIZE,
				       fr.header.payload_length);
			walk(stdout, fr.buf + CHAN_HEADER_SIZE,
			     fr.buf + fr.len, M_VALUE, 0);
		}
		if (rc < 0) {
			/* fatal for the stream: nothing after it is framed */
			verdict(stdout, &fr, rc, NULL);
			status = EXIT_REJECTED;
			break;
		}
		if (fr.header.flags & FLAG_CONTROL) {
			/* what the control message says, whatever the
			 * revision read (the verdict below is that
			 * revision's) */
			char what[1200];

			if (chan_decode(fr.buf, fr.len, NULL, 0,
					CHAN_DECODE_DETACHED | CHAN_DECODE_REVISION_1_1,
					&o->limits, NULL, &msg, NULL) == 0) {
				describe_control(what, sizeof(what), &fr.header,
						 chan_msg_root(msg));
				printf("# control: %s\n", what);
			}
			chan_msg_free(msg);
			msg = NULL;
		}
		drc = chan_decode(fr.buf, fr.len, NULL, 0,
				  CHAN_DECODE_DETACHED | o->decode_flags,
				  &o->limits, NULL, &msg, NULL);
		verdict(stdout, &fr, drc, msg);
		chan_msg_free(msg);
		if (drc < 0)
			status = EXIT_REJECTED;
		fr.index++;
	}
	frame_reader_free(&fr);
	return status;
}

static void
usage_dump(FILE *out)
{
	fprintf(out,
		"Usage: %s dump [OPTIONS] [FILE...]\n"
		"Print the frames in each FILE or standard input as annotated "
		"hex: one field\nper line, '#' comments naming header fields, "
		"protobuf tags, lengths and\nhandle references, then the "
		"decoder's verdict (\"# => OK: TEXT\" or\n\"# => NAME: ...\").  "
		"Exit status 1 if a frame is invalid.\n\n"
		"  -n, --count=N         stop after N frames\n"
		LIMIT_OPTIONS_HELP
		REVISION_OPTION_HELP
		"  -h, --help            show this help\n",
		program_name);
}

int
cmd_dump(int argc, char **argv)
{
	static const struct option longopts[] = {
		COMMON_LONGOPTS,
		REVISION_LONGOPT,
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}};
	struct common_opts o = {{0, 0, 0}, 0, 0, 0};
	int c, i, status = EXIT_OK;

	while ((c = getopt_long(argc, argv, "+n:h", longopts, NULL)) != -1) {
		int r = common_option(&o, c, optarg);

		if (r < 0)
			return EXIT_USAGE;
		if (r > 0 && c != OPT_PRETTY)
			continue;
		if (c == 'h') {
			usage_dump(stdout);
			return EXIT_OK;
		}
		return usage_hint("dump");
	}
	for (i = optind; i < argc || i == optind; i++) {
		const char *path = i < argc ? argv[i] : "-", *name;
		FILE *in = open_input(path, &name);
		int s;

		if (!in) {
			status = EXIT_USAGE;
			continue;
		}
		s = dump_stream(in, name, &o);
		close_input(in);
		if (s > status)
			status = s;
	}
	if (fflush(stdout) == EOF || ferror(stdout)) {
		report("<stdout>", "SYSTEM", "write error");
		status = EXIT_USAGE;
	}
	return status;
}
