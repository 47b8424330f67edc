/*
 * textform.c - the chan text form: strict JSON <-> chan values.
 * Normative text: SPEC.md §12.
 */
#include "textform.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SAFE_INT ((int64_t)9007199254740991) /* 2^53 - 1 */

void
tf_seterr(struct tf_error *err, const char *name, const char *fmt, ...)
{
	va_list ap;

	err->name = name;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

/* ------------------------------------------------------------------------ */
/* What reading and building share: the markers, JSON Pointer paths, the
 * check of a marker's argument (SPEC.md §12.1, §12.3). */

static const char *const markers[] = {"$int", "$float", "$bytes", "$fd",
				      "$conn", "$channel"};

static int
is_marker(const char *key)
{
	size_t i;

	for (i = 0; i < sizeof(markers) / sizeof(markers[0]); i++)
		if (strcmp(key, markers[i]) == 0)
			return 1;
	return 0;
}

/* A JSON Pointer (RFC 6901) of the value being read or built, for messages. */
struct tpath {
	char s[512];
	size_t len;
};

static size_t
path_push(struct tpath *t, const char *seg, size_t len)
{
	size_t old = t->len, i;
	char *p = t->s;
	size_t cap = sizeof(t->s) - 4;

	if (t->len < cap)
		p[t->len++] = '/';
	for (i = 0; i < len && t->len < cap; i++) {
		unsigned char c = (unsigned char)seg[i];

		/* RFC 6901 escapes; control bytes shown as '?' */
		if (c == '~' || c == '/') {
			p[t->len++] = '~';
			if (t->len < cap)
				p[t->len++] = c == '~' ? '0' : '1';
		} else {
			p[t->len++] = c < 0x20 ? '?' : (char)c;
		}
	}
	if (i < len)
		memcpy(p + cap, "...", 3), t->len = cap + 3;
	p[t->len] = '\0';
	return old;
}

static void
path_pop(struct tpath *t, size_t old)
{
	t->len = old;
	t->s[old] = '\0';
}

static int
parse_int64(const char *s, int64_t *ret)
{
	const char *p = s;
	long long v;
	char *end;

	if (*p == '-')
		p++;
	/* -?(0|[1-9][0-9]*), and not "-0" (SPEC.md §12.1) */
	if (*p < '0' || *p > '9' || (p[0] == '0' && (p[1] != '\0' || p != s)))
		return -1;
	for (; *p; p++)
		if (*p < '0' || *p > '9')
			return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end)
		return -1;
	*ret = v;
	return 0;
}

static int b64_decode(const char *s, size_t len, unsigned char *o, size_t *ret_len);

#define F_NUL 1 /* a string holds U+0000 */
#define F_BAD 2 /* a string holds invalid UTF-8 or a lone surrogate escape */

/* A marker's argument as read: a string (s, len, F_ flags), a bare int in the
 * int64 range, or anything else (another JSON type, a float, an int outside
 * int64: SPEC.md §12.1 rule 2). */
struct marg {
	enum { MARG_STRING, MARG_INT, MARG_OTHER } type;
	const char *s; /* NUL-terminated after len bytes */
	size_t len;
	int flags;
	int64_t i;
};

/* 0 if a is a valid argument of the marker key; else -1 and why. */
static int
marker_check(const char *key, const struct marg *a, char *why, size_t n)
{
	const char *s = a->type == MARG_STRING && !(a->flags & F_BAD) ? a->s : NULL;
	size_t blen;
	int64_t i;

	if (!strcmp(key, "$fd") || !strcmp(key, "$conn")) {
		if (a->type == MARG_INT && a->i >= 0)
			return 0;
		snprintf(why, n, "\"%s\" takes a handle table index (an integer >= 0 "
			 "in the int64 range)", key);
		return -1;
	}
	/* SPEC.md §18.2 rule 3: an id under the rules of $fd, so -0 is 0 (not
	 * an id) and 1.0 is a float */
	if (!strcmp(key, "$channel")) {
		if (a->type == MARG_INT && a->i >= 1 && a->i <= INT32_MAX)
			return 0;
		snprintf(why, n, "\"$channel\" takes a channel id (an integer from 1 to "
			 "2147483647)");
		return -1;
	}
	/* A marker's string is read whole: "12\u00003" is not the number 12
	 * (a C string would stop at the U+0000), and no marker takes one. */
	if (s && (a->flags & F_NUL)) {
		snprintf(why, n, "\"%s\" takes a string without U+0000 (\\u0000)", key);
		return -1;
	}
	if (strcmp(key, "$int") == 0) {
		if (s && parse_int64(s, &i) == 0)
			return 0;
		snprintf(why, n, "\"$int\" takes a string holding a decimal integer in the int64 range");
	} else if (strcmp(key, "$float") == 0) {
		if (s && (!strcmp(s, "NaN") || !strcmp(s, "Infinity") || !strcmp(s, "-Infinity")))
			return 0;
		snprintf(why, n, "\"$float\" takes \"NaN\", \"Infinity\" or \"-Infinity\"");
	} else {
		if (s && b64_decode(s, a->len, NULL, &blen) == 0)
			return 0;
		snprintf(why, n, a->type == MARG_STRING
					 ? "\"$bytes\" is not standard padded base64 (RFC 4648 section 4, zero pad bits)"
					 : "\"$bytes\" takes a base64 string");
	}
	return -1;
}

/* ------------------------------------------------------------------------ */
/* Reading.
 *
 * SPEC.md §12.4 rule 4 fixes the error of a faulty document: INVALID_JSON if
 * it is not RFC 8259 JSON, whatever else is wrong with it; else the first
 * fault met walking the value in document order; the handle count and index
 * rules last (tf_build).  So a document is read in two passes, neither of
 * them recursive:
 *
 *   1. syntax_first reads the value's bytes from the stream into r->doc and
 *      checks its syntax (a stack of one byte per open container);
 *   2. walk_doc reads r->doc, which is now known to be JSON, in document
 *      order and stops at the first fault: a string that is not Unicode, a
 *      bad key ('$' rule, U+0000, not Unicode, repeated), a number out of
 *      range, a bad marker, nesting deeper than the depth limit.  It builds
 *      the json_t tree tf_build takes.
 *
 * jansson's loader is not used: it stops at a duplicate key, invalid UTF-8,
 * a lone surrogate, a number out of range or U+0000 in a key (no flag makes
 * it go on, and with duplicates allowed it silently keeps the last), so the
 * faults after such a point are unknown to it and the ones before it (a bad
 * marker, a '$' key, too deep) are not yet checked: the order of §12.4 cannot
 * be had from it.  jansson still holds the tree.
 */

struct tf_reader {
	FILE *fp;
	int io_errno;  /* errno of a failed read, 0 if none */
	int no_memory; /* r->doc could not grow */
	unsigned long line, col;             /* position of the next byte */
	unsigned long start_line, start_col; /* where the current value began */
	unsigned char *doc;                  /* the bytes of the current value */
	size_t doc_len, doc_cap;             /* doc_cap > doc_len: room for a NUL */
};

struct tf_reader *
tf_reader_new(FILE *fp)
{
	struct tf_reader *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->fp = fp;
	r->line = 1;
	r->col = 1;
	return r;
}

void
tf_reader_free(struct tf_reader *r)
{
	if (r)
		free(r->doc);
	free(r);
}

void
tf_reader_where(const struct tf_reader *r, unsigned long *line,
		unsigned long *col)
{
	*line = r->start_line;
	*col = r->start_col;
}

static void
advance(struct tf_reader *r, int c)
{
	if (c == '\n') {
		r->line++;
		r->col = 1;
	} else {
		r->col++;
	}
}

static int
is_ws(int c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* ---- pass 1: syntax ---- */

struct scan {
	struct tf_reader *r;
	int pushed; /* a byte given back, or -2 */
	unsigned long line, col;
};

/* The next byte of the value, read from the stream and kept in r->doc. */
static int
scan_get(struct scan *sc)
{
	struct tf_reader *r = sc->r;
	int c;

	if (sc->pushed != -2) {
		c = sc->pushed;
		sc->pushed = -2;
	} else {
		c = getc(r->fp);
		if (c == EOF) {
			if (ferror(r->fp) && !r->io_errno)
				r->io_errno = errno ? errno : EIO;
			return EOF;
		}
		advance(r, c);
		if (r->doc_len + 1 >= r->doc_cap) {
			size_t cap = r->doc_cap ? 2 * r->doc_cap : 4096;
			unsigned char *d = realloc(r->doc, cap);

			if (!d) {
				r->no_memory = 1;
				return EOF;
			}
			r->doc = d;
			r->doc_cap = cap;
		}
		r->doc[r->doc_len++] = (unsigned char)c;
	}
	if (c == '\n') {
		sc->line++;
		sc->col = 1;
	} else {
		sc->col++;
	}
	return c;
}

static void
scan_unget(struct scan *sc, int c)
{
	if (c == EOF)
		return;
	sc->pushed = c;
	if (c == '\n')
		sc->line--; /* the column is not needed again before the next get */
	else
		sc->col--;
}

static int
scan_ws(struct scan *sc)
{
	int c;

	do
		c = scan_get(sc);
	while (is_ws(c));
	return c;
}

static int
is_digit(int c)
{
	return c >= '0' && c <= '9';
}

/* A string after its opening quote: 0, or -1 with *bad the byte at fault. */
static int
scan_string(struct scan *sc, int *bad)
{
	int c;

	for (;;) {
		c = scan_get(sc);
		if (c == EOF || c < 0x20)
			break;
		if (c == '"')
			return 0;
		if (c != '\\')
			continue;
		c = scan_get(sc);
		if (c == 'u') {
			int i;

			for (i = 0; i < 4; i++) {
				c = scan_get(sc);
				if (!is_digit(c) && !((c | 0x20) >= 'a' && (c | 0x20) <= 'f'))
					break;
			}
			if (i < 4)
				break;
		} else if (c == EOF || !c || !strchr("\"\\/bfnrt", c)) {
			break;
		}
	}
	*bad = c;
	return -1;
}

/* A number from its first byte *pc; the byte after it is given back.  -1
 * with *pc the byte at fault. */
static int
scan_number(struct scan *sc, int *pc)
{
	int c = *pc;

	if (c == '-')
		c = scan_get(sc);
	if (c == '0') {
		c = scan_get(sc);
	} else if (is_digit(c)) {
		while (is_digit(c))
			c = scan_get(sc);
	} else {
		goto bad;
	}
	if (c == '.') {
		if (!is_digit(c = scan_get(sc)))
			goto bad;
		while (is_digit(c))
			c = scan_get(sc);
	}
	if (c == 'e' || c == 'E') {
		c = scan_get(sc);
		if (c == '+' || c == '-')
			c = scan_get(sc);
		if (!is_digit(c))
			goto bad;
		while (is_digit(c))
			c = scan_get(sc);
	}
	scan_unget(sc, c);
	return 0;
bad:
	*pc = c;
	return -1;
}

/* A member's key and colon, from the byte *c: 0, or -1 with *c the byte
 * at fault. */
static int
scan_key(struct scan *sc, int *c)
{
	if (*c != '"' || scan_string(sc, c) < 0)
		return -1;
	*c = scan_ws(sc);
	return *c == ':' ? 0 : -1;
}

/* 0: the value that starts at the stream's next byte is JSON, and its bytes
 * are in r->doc; -1: it is not (or it could not be read), and err says
 * where. */
static int
syntax_first(struct tf_reader *r, struct tf_error *err)
{
	struct scan sc = {.r = r, .pushed = -2, .line = r->start_line, .col = r->start_col};
	unsigned char *stack = NULL; /* '[' or '{' per open container */
	size_t depth = 0, cap = 0;
	int c, scalar_top = 0, rc = -1;

	for (;;) {
		/* a value */
		c = scan_ws(&sc);
		if (c == '[' || c == '{') {
			if (depth == cap) {
				size_t ncap = cap ? 2 * cap : 64;
				unsigned char *ns = realloc(stack, ncap);

				if (!ns) {
					free(stack);
					tf_seterr(err, "NO_MEMORY", "out of memory");
					return -1;
				}
				stack = ns;
				cap = ncap;
			}
			stack[depth++] = (unsigned char)c;
			c = scan_ws(&sc);
			if (c == (stack[depth - 1] == '[' ? ']' : '}')) {
				depth--;
				goto after_value;
			}
			if (stack[depth - 1] == '{') {
				if (scan_key(&sc, &c) < 0)
					goto fault;
				continue;
			}
			scan_unget(&sc, c);
			continue;
		}
		if (c == '"') {
			if (scan_string(&sc, &c) < 0)
				goto fault;
		} else if (c == '-' || is_digit(c)) {
			if (scan_number(&sc, &c) < 0)
				goto fault;
			scalar_top = depth == 0;
		} else if (c == 't' || c == 'f' || c == 'n') {
			const char *lit = c == 't' ? "rue" : c == 'f' ? "alse" : "ull";

			for (; *lit; lit++)
				if ((c = scan_get(&sc)) != *lit)
					goto fault;
			scalar_top = depth == 0;
		} else {
			goto fault;
		}
after_value:
		for (;;) {
			if (depth == 0) {
				if (scalar_top) { /* followed by whitespace or the end */
					c = scan_get(&sc);
					if (c != EOF && !is_ws(c))
						goto fault;
				}
				rc = 0;
				if (r->io_errno || r->no_memory)
					goto fault;
				goto out;
			}
			c = scan_ws(&sc);
			if (c == ',') {
				if (stack[depth - 1] == '{' && (c = scan_ws(&sc), scan_key(&sc, &c) < 0))
					goto fault;
				break; /* the next value */
			}
			if (c != (stack[depth - 1] == '[' ? ']' : '}'))
				goto fault;
			depth--;
		}
	}
fault:
	rc = -1;
	if (r->io_errno)
		tf_seterr(err, "SYSTEM", "read error: %s", strerror(r->io_errno));
	else if (r->no_memory)
		tf_seterr(err, "NO_MEMORY", "out of memory (a value of %zu bytes)", r->doc_len);
	else if (c == EOF)
		tf_seterr(err, TF_INVALID_JSON, "line %lu column %lu: not JSON: the input ends "
			  "inside the value", sc.line, sc.col);
	else if (depth == 0 && scalar_top)
		tf_seterr(err, TF_INVALID_JSON,
			  "line %lu column %lu: a number, true, false or null "
			  "must be followed by whitespace or the end of input",
			  sc.line, sc.col - 1);
	else if (c == 'N' || c == 'I')
		tf_seterr(err, TF_INVALID_JSON, "line %lu column %lu: not JSON: unexpected '%c' "
			  "(NaN and Infinity are not JSON: write {\"$float\":\"NaN\"})",
			  sc.line, sc.col - 1, c);
	else if (c > 0x20 && c < 0x7f)
		tf_seterr(err, TF_INVALID_JSON, "line %lu column %lu: not JSON: unexpected '%c'",
			  sc.line, sc.col - 1, c);
	else
		tf_seterr(err, TF_INVALID_JSON, "line %lu column %lu: not JSON: unexpected byte 0x%02x",
			  sc.line, sc.col - 1, c);
out:
	free(stack);
	return rc;
}

/* ---- pass 2: the walk, in document order ---- */

struct sbuf {
	char *s;
	size_t len, cap;
};

struct walk {
	struct tf_reader *r;
	unsigned char *p;   /* the next byte of r->doc */
	unsigned char *end; /* r->doc + r->doc_len; *end is NUL */
	struct tf_error *err;
	struct tpath path;
	struct sbuf str;   /* the last string value decoded */
	struct sbuf key;   /* the key of the member being read */
	struct sbuf first; /* an object's first key, before the object is known */
};

static int
sbuf_put(struct sbuf *b, const void *p, size_t n)
{
	if (b->len + n >= b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		char *s;

		while (b->len + n >= cap)
			cap *= 2;
		s = realloc(b->s, cap);
		if (!s)
			return -1;
		b->s = s;
		b->cap = cap;
	}
	memcpy(b->s + b->len, p, n);
	b->len += n;
	return 0;
}

/* Up to 60 bytes of s for a message: control bytes, DEL and (when s is not
 * UTF-8) bytes >= 0x80 escaped. */
static const char *
show(char *out, size_t n, const char *s, size_t len, int flags)
{
	size_t i, o = 0;

	for (i = 0; i < len && o + 8 < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (i == 60) {
			o += (size_t)snprintf(out + o, n - o, "...");
			break;
		}
		if (c < 0x20 || c == 0x7f || (c >= 0x80 && (flags & F_BAD)))
			o += (size_t)snprintf(out + o, n - o, c < 0x80 ? "\\u%04x" : "\\x%02x", c);
		else
			out[o++] = (char)c;
	}
	out[o] = '\0';
	return out;
}

__attribute__((format(printf, 4, 5))) static void
wfail(struct walk *w, const unsigned char *at, const char *name, const char *fmt, ...)
{
	const unsigned char *q;
	unsigned long line = w->r->start_line, col = w->r->start_col;
	char m[400];
	va_list ap;

	for (q = w->r->doc; q < at; q++) {
		if (*q == '\n') {
			line++;
			col = 1;
		} else {
			col++;
		}
	}
	va_start(ap, fmt);
	vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	if (w->path.len)
		tf_seterr(w->err, name, "line %lu column %lu at %s: %s", line, col, w->path.s, m);
	else
		tf_seterr(w->err, name, "line %lu column %lu: %s", line, col, m);
}

static void
skip_ws(struct walk *w)
{
	while (is_ws(*w->p))
		w->p++;
}

/* The end of the string token at p (its opening quote). */
static const unsigned char *
string_end(const unsigned char *p)
{
	for (p++; *p != '"'; p++)
		if (*p == '\\')
			p++;
	return p + 1;
}

static int
hex4(const unsigned char *p)
{
	int v = 0, i;

	for (i = 0; i < 4; i++) {
		int c = p[i];

		v = v * 16 + (is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10);
	}
	return v;
}

/* The length of the UTF-8 sequence at p (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), or 0 if there is none. */
static size_t
utf8_len(const unsigned char *p, const unsigned char *end)
{
	unsigned c = p[0], lo = 0x80, hi = 0xbf;
	size_t n, i;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
	else
		return 0;
	if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi)
		return 0;
	for (i = 2; i < n; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	return n;
}

/* The string at w->p (its opening quote), decoded into b (NUL-terminated);
 * *flags gets F_NUL and F_BAD.  Invalid bytes and lone surrogates are left
 * out.  -1: out of memory. */
static int
decode_string(struct walk *w, struct sbuf *b, int *flags)
{
	unsigned char *p = w->p + 1, *q;

	b->len = 0;
	*flags = 0;
	for (;;) {
		unsigned char u[4];
		size_t n;
		int cp;

		for (q = p; *p != '"' && *p != '\\' && *p < 0x80; p++)
			;
		if (p > q && sbuf_put(b, q, (size_t)(p - q)) < 0)
			return -1;
		if (*p == '"')
			break;
		if (*p >= 0x80) {
			n = utf8_len(p, w->end);
			if (!n)
				*flags |= F_BAD;
			else if (sbuf_put(b, p, n) < 0)
				return -1;
			p += n ? n : 1;
			continue;
		}
		switch (*++p) { /* after a backslash */
		case 'b':
			cp = '\b';
			break;
		case 'f':
			cp = '\f';
			break;
		case 'n':
			cp = '\n';
			break;
		case 'r':
			cp = '\r';
			break;
		case 't':
			cp = '\t';
			break;
		case 'u':
			cp = hex4(p + 1);
			p += 4;
			if (cp >= 0xd800 && cp <= 0xdbff && p[1] == '\\' && p[2] == 'u') {
				int lo = hex4(p + 3);

				if (lo >= 0xdc00 && lo <= 0xdfff) {
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
					p += 6;
				}
			}
			break;
		default: /* '"', '\\', '/' */
			cp = *p;
		}
		p++;
		if (cp >= 0xd800 && cp <= 0xdfff) {
			*flags |= F_BAD;
			continue;
		}
		if (cp == 0)
			*flags |= F_NUL;
		if (cp < 0x80) {
			u[0] = (unsigned char)cp, n = 1;
		} else if (cp < 0x800) {
			u[0] = (unsigned char)(0xc0 | cp >> 6), n = 2;
		} else if (cp < 0x10000) {
			u[0] = (unsigned char)(0xe0 | cp >> 12), n = 3;
		} else {
			u[0] = (unsigned char)(0xf0 | cp >> 18), n = 4;
			u[1] = (unsigned char)(0x80 | (cp >> 12 & 63));
		}
		if (n >= 3)
			u[n - 2] = (unsigned char)(0x80 | (cp >> 6 & 63));
		if (n >= 2)
			u[n - 1] = (unsigned char)(0x80 | (cp & 63));
		if (sbuf_put(b, u, n) < 0)
			return -1;
	}
	w->p = p + 1;
	if (sbuf_put(b, "", 1) < 0)
		return -1;
	b->len--; /* NUL-terminated, the NUL not counted */
	return 0;
}

/* The number at w->p: *is_int, and its value (*i: 0 if the int is outside
 * int64, *ovf set; *d: +-inf if the float's magnitude rounds to infinity). */
static void
read_number(struct walk *w, int *is_int, int64_t *i, int *ovf, double *d)
{
	unsigned char *start = w->p, *p = start, save;
	int neg = *p == '-';
	uint64_t acc = 0, lim;

	if (neg)
		p++;
	lim = neg ? (uint64_t)1 << 63 : ((uint64_t)1 << 63) - 1;
	*ovf = 0;
	for (; is_digit(*p); p++) {
		unsigned dig = (unsigned)(*p - '0');

		if (acc > (lim - dig) / 10)
			*ovf = 1;
		else
			acc = acc * 10 + dig;
	}
	*is_int = *p != '.' && *p != 'e' && *p != 'E';
	if (*is_int) {
		*i = *ovf ? 0 : neg ? (int64_t)(0 - acc) : (int64_t)acc;
		w->p = p;
		return;
	}
	while (is_digit(*p) || *p == '.' || *p == 'e' || *p == 'E' || *p == '+' || *p == '-')
		p++;
	save = *p; /* r->doc is ours: end the token for strtod */
	*p = '\0';
	*d = strtod((const char *)start, NULL);
	*p = save;
	w->p = p;
}

/* Past the container at w->p (JSON already checked): no recursion. */
static void
skip_container(struct walk *w)
{
	unsigned char *p = w->p;
	size_t depth = 0;

	do {
		if (*p == '"') {
			for (p++; *p != '"'; p++)
				if (*p == '\\')
					p++;
		} else if (*p == '[' || *p == '{') {
			depth++;
		} else if (*p == ']' || *p == '}') {
			depth--;
		}
		p++;
	} while (depth);
	w->p = p;
}

/* A value whose JSON is no marker argument: only its end matters. */
static void
skip_value(struct walk *w)
{
	int is_int, ovf;
	int64_t i;
	double d;

	if (*w->p == '[' || *w->p == '{')
		skip_container(w);
	else if (*w->p == 't' || *w->p == 'n')
		w->p += 4;
	else if (*w->p == 'f')
		w->p += 5;
	else
		read_number(w, &is_int, &i, &ovf, &d);
}

/* The object that starts at obj has one member so far, key at key_at, a
 * marker name (in w->first); w->p is at its value.  The object is that
 * marker's value if it has no other member and the value is a valid
 * argument; else the document is rejected (SPEC.md §12.3).  NULL after
 * filling w->err. */
static json_t *
read_marker(struct walk *w, const unsigned char *obj, const unsigned char *key_at,
	    size_t depth)
{
	const unsigned char *arg_at = w->p;
	struct marg a = {.type = MARG_OTHER};
	char key[16], why[200];
	json_t *m, *v;
	size_t old;

	memcpy(key, w->first.s, w->first.len + 1);
	if (*w->p == '"') {
		if (decode_string(w, &w->str, &a.flags) < 0)
			goto nomem;
		a.type = MARG_STRING;
		a.s = w->str.s;
		a.len = w->str.len;
	} else if (*w->p == '-' || is_digit(*w->p)) {
		int is_int, ovf;
		double d;

		read_number(w, &is_int, &a.i, &ovf, &d);
		if (is_int && !ovf)
			a.type = MARG_INT;
	} else {
		skip_value(w);
	}
	skip_ws(w);
	if (*w->p == ',') {
		/* not a marker: a map whose first key starts with a single '$' */
		if (depth >= CHAN_HARD_MAX_DEPTH) {
			wfail(w, obj, "DEPTH_EXCEEDED", "values nest deeper than the depth limit (%u)",
			      CHAN_HARD_MAX_DEPTH);
			return NULL;
		}
		wfail(w, key_at, TF_INVALID_TEXT,
		      "map key \"%s\": a marker must be alone in its object (a map key "
		      "that starts with '$' is written with one more '$')", key);
		return NULL;
	}
	w->p++; /* '}' */
	old = path_push(&w->path, key, strlen(key));
	if (marker_check(key, &a, why, sizeof(why)) < 0) {
		wfail(w, arg_at, TF_INVALID_TEXT, "%s", why);
		return NULL;
	}
	path_pop(&w->path, old);
	v = a.type == MARG_INT ? json_integer(a.i) : json_stringn_nocheck(a.s, a.len);
	m = json_object();
	if (!v || !m || json_object_set_new_nocheck(m, key, v) < 0) {
		json_decref(m);
		goto nomem;
	}
	return m;
nomem:
	tf_seterr(w->err, "NO_MEMORY", "out of memory");
	return NULL;
}

/* The key at key_at (decoded in w->key, flags) of a member of obj: 0 if it
 * can be a map key there (SPEC.md §12.3 rule 3, §12.4 rule 2), else -1 after
 * filling w->err. */
static int
check_key(struct walk *w, json_t *obj, const unsigned char *key_at, int flags)
{
	const char *k = w->key.s;
	char s[500];

	if (k[0] == '$' && k[1] != '$') {
		if (!flags && is_marker(k))
			wfail(w, key_at, TF_INVALID_TEXT,
			      "map key \"%s\": a marker must be alone in its object (a map "
			      "key that starts with '$' is written with one more '$')", k);
		else
			wfail(w, key_at, TF_INVALID_TEXT,
			      "map key \"%s\": not a marker ($int, $float, $bytes, $fd, $conn, "
			      "$channel), "
			      "and a map key that starts with '$' is written with one more '$'",
			      show(s, sizeof(s), k, w->key.len, flags));
		return -1;
	}
	if (flags & F_NUL) {
		wfail(w, key_at, "INVALID_KEY", "a map key cannot contain U+0000 (\\u0000)");
		return -1;
	}
	if (flags & F_BAD) {
		wfail(w, key_at, "INVALID_UTF8",
		      "the map key %s is not Unicode: invalid UTF-8, or a lone surrogate "
		      "escape such as \\ud800",
		      show(s, sizeof(s), (const char *)key_at,
			   (size_t)(string_end(key_at) - key_at), F_BAD));
		return -1;
	}
	if (json_object_get(obj, k)) {
		wfail(w, key_at, "DUPLICATE_KEY", "the object repeats the key \"%s\"",
		      show(s, sizeof(s), k, w->key.len, flags));
		return -1;
	}
	return 0;
}

/* The value r->doc holds, already known to be JSON: the tree, or NULL after
 * filling err with the first fault in document order. */
static json_t *
walk_doc(struct tf_reader *r, struct tf_error *err)
{
	struct walk w = {.r = r, .p = r->doc, .end = r->doc + r->doc_len, .err = err};
	struct frame {
		json_t *c;      /* an open array or object */
		size_t pathlen; /* w.path's length at its value */
		size_t index;   /* of the current item of an array */
	} st[CHAN_HARD_MAX_DEPTH];
	size_t n = 0; /* open containers; a value met now is at depth n + 1 */
	json_t *root = NULL, *v = NULL;
	unsigned char *at, *key_at = NULL;
	int flags;
	char seg[24];

	r->doc[r->doc_len] = '\0';
next_value:
	skip_ws(&w);
	at = w.p;
	switch (*at) {
	case '[':
	case '{':
		w.p++;
		skip_ws(&w);
		if (*w.p == (*at == '[' ? ']' : '}')) {
			w.p++;
			v = *at == '[' ? json_array() : json_object();
			break;
		}
		if (*at == '{') {
			key_at = w.p;
			if (decode_string(&w, &w.first, &flags) < 0)
				goto nomem;
			skip_ws(&w);
			w.p++; /* ':' */
			skip_ws(&w);
			/* a marker: not a container, and nothing in it is walked */
			if (!flags && is_marker(w.first.s)) {
				if (!(v = read_marker(&w, at, key_at, n + 1)))
					goto fail;
				break;
			}
		}
		/* a non-empty container: the depth limit (SPEC.md §8.3) */
		if (n + 1 >= CHAN_HARD_MAX_DEPTH) {
			wfail(&w, at, "DEPTH_EXCEEDED", "values nest deeper than the depth limit (%u)",
			      CHAN_HARD_MAX_DEPTH);
			goto fail;
		}
		v = *at == '[' ? json_array() : json_object();
		if (!v)
			goto nomem;
		if (!n)
			root = v;
		else if (json_is_array(st[n - 1].c) ? json_array_append_new(st[n - 1].c, v)
						    : json_object_set_new_nocheck(st[n - 1].c, w.key.s, v))
			goto nomem;
		st[n].c = v;
		v = NULL;
		st[n].pathlen = w.path.len;
		st[n].index = 0;
		n++;
		if (*at == '[') {
			path_push(&w.path, "0", 1);
		} else {
			struct sbuf t = w.key; /* the first key is the current one now */

			w.key = w.first;
			w.first = t;
			if (check_key(&w, st[n - 1].c, key_at, flags) < 0)
				goto fail;
			path_push(&w.path, w.key.s, w.key.len);
		}
		goto next_value;
	case '"':
		if (decode_string(&w, &w.str, &flags) < 0)
			goto nomem;
		if (flags & F_BAD) {
			char s[500];

			wfail(&w, at, "INVALID_UTF8",
			      "the string %s is not Unicode: invalid UTF-8, or a lone surrogate "
			      "escape such as \\ud800",
			      show(s, sizeof(s), (const char *)at, (size_t)(w.p - at), F_BAD));
			goto fail;
		}
		v = json_stringn_nocheck(w.str.s, w.str.len);
		break;
	case 't':
	case 'n':
		w.p += 4;
		v = *at == 't' ? json_true() : json_null();
		break;
	case 'f':
		w.p += 5;
		v = json_false();
		break;
	default: {
		int is_int, ovf;
		int64_t i;
		double d;

		read_number(&w, &is_int, &i, &ovf, &d);
		if (is_int && ovf) {
			wfail(&w, at, TF_INVALID_TEXT,
			      "the integer %.*s%s is outside int64: a number without a fraction "
			      "or exponent is an int, and chan ints are signed 64-bit "
			      "(-9223372036854775808..9223372036854775807); write 1e20 for a float",
			      (int)(w.p - at > 40 ? 40 : w.p - at), (const char *)at,
			      w.p - at > 40 ? "..." : "");
			goto fail;
		}
		if (!is_int && isinf(d)) {
			wfail(&w, at, TF_INVALID_TEXT,
			      "the number %.*s%s rounds to infinity: a float must be finite; "
			      "{\"$float\":\"Infinity\"} is infinity",
			      (int)(w.p - at > 40 ? 40 : w.p - at), (const char *)at,
			      w.p - at > 40 ? "..." : "");
			goto fail;
		}
		v = is_int ? json_integer(i) : json_real(d);
	}
	}
	/* v is a complete value: into its container */
	if (!v)
		goto nomem;
	if (!n)
		root = v;
	else if (json_is_array(st[n - 1].c) ? json_array_append_new(st[n - 1].c, v)
					    : json_object_set_new_nocheck(st[n - 1].c, w.key.s, v))
		goto nomem;
	v = NULL;
	for (;;) {
		struct frame *top;

		if (!n) {
			free(w.str.s);
			free(w.key.s);
			free(w.first.s);
			return root;
		}
		top = &st[n - 1];
		path_pop(&w.path, top->pathlen);
		skip_ws(&w);
		if (*w.p++ != ',') { /* ']' or '}' */
			n--;
			continue;
		}
		skip_ws(&w);
		if (json_is_array(top->c)) {
			snprintf(seg, sizeof(seg), "%zu", ++top->index);
			path_push(&w.path, seg, strlen(seg));
		} else {
			key_at = w.p;
			if (decode_string(&w, &w.key, &flags) < 0)
				goto nomem;
			skip_ws(&w);
			w.p++; /* ':' */
			if (check_key(&w, top->c, key_at, flags) < 0)
				goto fail;
			path_push(&w.path, w.key.s, w.key.len);
		}
		goto next_value;
	}
nomem:
	tf_seterr(err, "NO_MEMORY", "out of memory");
fail:
	json_decref(root); /* and every value in it: each is put in at once */
	free(w.str.s);
	free(w.key.s);
	free(w.first.s);
	return NULL;
}

int
tf_reader_next(struct tf_reader *r, json_t **ret, struct tf_error *err)
{
	json_t *j;
	int c;

	for (;;) {
		c = getc(r->fp);
		if (c == EOF) {
			if (ferror(r->fp)) {
				tf_seterr(err, "SYSTEM", "read error: %s",
					  strerror(errno ? errno : EIO));
				return -1;
			}
			return 0;
		}
		if (!is_ws(c))
			break;
		advance(r, c);
	}
	ungetc(c, r->fp);
	r->start_line = r->line;
	r->start_col = r->col;
	r->doc_len = 0;
	if (syntax_first(r, err) < 0)
		return -1;
	j = walk_doc(r, err);
	if (!j)
		return -1;
	*ret = j;
	return 1;
}

json_t *
tf_parse_string(const char *s, struct tf_error *err)
{
	FILE *fp = fmemopen((void *)s, strlen(s), "r");
	struct tf_reader *r;
	json_t *j = NULL, *extra = NULL;
	int rc;

	if (!fp || !(r = tf_reader_new(fp))) {
		if (fp)
			fclose(fp);
		tf_seterr(err, "NO_MEMORY", "out of memory");
		return NULL;
	}
	rc = tf_reader_next(r, &j, err);
	if (rc == 0)
		tf_seterr(err, TF_INVALID_JSON, "no JSON value");
	if (rc == 1) {
		rc = tf_reader_next(r, &extra, err);
		if (rc != 0) {
			if (rc == 1)
				tf_seterr(err, TF_INVALID_JSON,
					  "more than one JSON value");
			json_decref(extra);
			json_decref(j);
			j = NULL;
		}
	}
	tf_reader_free(r);
	fclose(fp);
	return j;
}

/* ------------------------------------------------------------------------ */
/* Building */

struct build {
	chan_msg *msg;
	tf_fd_source src;
	void *src_ctx;
	tf_channel_source chsrc; /* NULL: chan_channel_ref */
	void *chsrc_ctx;
	uint64_t nhandles; /* handle references in the whole value */
	int64_t prev;      /* previous index met, -1 before the first */
	struct tf_error *err;
	struct tpath path; /* of the value being built */
};

/* If obj is a one-member object whose key starts with a single '$', its
 * key; else NULL. */
static const char *
marker_key(json_t *obj, json_t **ret_val)
{
	void *it;
	const char *key;

	if (json_object_size(obj) != 1)
		return NULL;
	it = json_object_iter(obj);
	key = json_object_iter_key(it);
	if (key[0] != '$' || key[1] == '$')
		return NULL;
	*ret_val = json_object_iter_value(it);
	return key;
}

static uint64_t
count_handles(json_t *j)
{
	uint64_t n = 0;
	json_t *v;
	size_t i;
	const char *key;

	if (json_is_array(j)) {
		json_array_foreach(j, i, v) n += count_handles(v);
	} else if (json_is_object(j)) {
		key = marker_key(j, &v);
		if (key && (strcmp(key, "$fd") == 0 || strcmp(key, "$conn") == 0))
			return 1;
		if (key)
			return 0;
		json_object_foreach(j, key, v) n += count_handles(v);
	}
	return n;
}

__attribute__((format(printf, 3, 4))) static chan_value *
fail(struct build *b, const char *name, const char *fmt, ...)
{
	char m[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	if (b->path.len)
		tf_seterr(b->err, name, "at %s: %s", b->path.s, m);
	else
		tf_seterr(b->err, name, "%s", m);
	return NULL;
}

/* A constructor or attach call of libchan failed. */
static chan_value *
fail_chan(struct build *b, int rc)
{
	const char *name = chan_errname(rc);

	return fail(b, name ? name : "SYSTEM", "%s", chan_strerror(rc));
}

static chan_value *build(struct build *b, json_t *j);

static chan_value *
build_marker(struct build *b, const char *key, json_t *v)
{
	struct marg a = {.type = MARG_OTHER};
	char why[200];
	chan_value *r;

	if (json_is_string(v)) {
		a.type = MARG_STRING;
		a.s = json_string_value(v);
		a.len = json_string_length(v);
		a.flags = strlen(a.s) != a.len ? F_NUL : 0;
	} else if (json_is_integer(v)) {
		a.type = MARG_INT;
		a.i = json_integer_value(v);
	}
	/* tf_reader_next has checked this already, in document order */
	if (marker_check(key, &a, why, sizeof(why)) < 0)
		return fail(b, TF_INVALID_TEXT, "%s", why);
	if (strcmp(key, "$int") == 0) {
		int64_t i = 0;

		(void)parse_int64(a.s, &i);
		r = chan_int(b->msg, i);
	} else if (strcmp(key, "$float") == 0) {
		r = chan_float(b->msg, !strcmp(a.s, "NaN")        ? NAN
				       : !strcmp(a.s, "Infinity") ? INFINITY
								  : -INFINITY);
	} else if (strcmp(key, "$bytes") == 0) {
		unsigned char *p;
		size_t n;

		p = tf_base64_decode(a.s, a.len, &n);
		if (!p)
			return fail(b, "NO_MEMORY", "out of memory");
		r = chan_bytes(b->msg, p, n);
		free(p);
	} else if (strcmp(key, "$channel") == 0) {
		r = b->chsrc ? b->chsrc(b->chsrc_ctx, b->msg, (uint32_t)a.i, b->err)
			     : chan_channel_ref(b->msg, (uint32_t)a.i);
		if (!r && b->chsrc)
			return NULL; /* b->err filled */
	} else {
		enum chan_kind kind = strcmp(key, "$fd") == 0 ? CHAN_KIND_FD
							      : CHAN_KIND_CONN;
		int64_t idx = a.i;
		int fd;

		/* SPEC.md §12.1 rule 5: checked after the walk (tf_reader_next) */
		if ((uint64_t)idx >= b->nhandles)
			return fail(b, "HANDLE_INDEX_OUT_OF_RANGE",
				    "handle index %lld, but the value holds "
				    "%llu handle(s): number them 0, 1, ... in "
				    "order",
				    (long long)idx,
				    (unsigned long long)b->nhandles);
		if (idx <= b->prev)
			return fail(b, "HANDLE_INDEX_OUT_OF_ORDER",
				    "handle index %lld after %lld: number them "
				    "0, 1, ... in order",
				    (long long)idx, (long long)b->prev);
		b->prev = idx;
		if (b->src(b->src_ctx, kind, (uint32_t)idx, &fd, b->err) < 0)
			return NULL;
		r = chan_handle_copy(b->msg, kind, fd);
	}
	if (!r)
		return fail_chan(b, chan_msg_error(b->msg));
	return r;
}

static chan_value *
build_object(struct build *b, json_t *j)
{
	const char *key;
	json_t *v;
	chan_value *map, *item;
	int rc;

	key = marker_key(j, &v);
	if (key) {
		size_t old;

		if (!is_marker(key))
			return fail(b, TF_INVALID_TEXT,
				    "unknown marker \"%s\" (a map key that "
				    "starts with '$' is written with one more "
				    "'$')",
				    key);
		old = path_push(&b->path, key, strlen(key));
		item = build_marker(b, key, v);
		path_pop(&b->path, old);
		return item;
	}
	map = chan_map(b->msg);
	if (!map)
		return fail_chan(b, chan_msg_error(b->msg));
	json_object_foreach(j, key, v)
	{
		size_t klen = strlen(key), old;

		if (key[0] == '$' && key[1] != '$')
			return fail(b, TF_INVALID_TEXT,
				    "map key \"%s\": a key that starts with "
				    "'$' is written with one more '$' (a "
				    "marker such as \"$int\" must be alone in "
				    "its object)",
				    key);
		/* no U+0000 in keys: tf_reader_next rejects them (INVALID_KEY) */
		old = path_push(&b->path, key, klen);
		item = build(b, v);
		if (!item)
			return NULL;
		if (key[0] == '$') /* "$$x" -> "$x" */
			rc = chan_map_put_n(map, key + 1, klen - 1, item);
		else
			rc = chan_map_put_n(map, key, klen, item);
		if (rc < 0)
			return fail_chan(b, rc);
		path_pop(&b->path, old);
	}
	return map;
}

static chan_value *
build(struct build *b, json_t *j)
{
	chan_value *r = NULL, *item;
	json_t *v;
	size_t i;
	int rc;

	switch (json_typeof(j)) {
	case JSON_NULL:
		r = chan_null(b->msg);
		break;
	case JSON_TRUE:
		r = chan_bool(b->msg, 1);
		break;
	case JSON_FALSE:
		r = chan_bool(b->msg, 0);
		break;
	case JSON_INTEGER:
		r = chan_int(b->msg, json_integer_value(j));
		break;
	case JSON_REAL:
		r = chan_float(b->msg, json_real_value(j));
		break;
	case JSON_STRING:
		r = chan_string_n(b->msg, json_string_value(j),
				  json_string_length(j));
		break;
	case JSON_ARRAY:
		r = chan_list(b->msg);
		if (!r)
			break;
		json_array_foreach(j, i, v)
		{
			char seg[24];
			size_t old;

			snprintf(seg, sizeof(seg), "%zu", i);
			old = path_push(&b->path, seg, strlen(seg));
			item = build(b, v);
			if (!item)
				return NULL;
			rc = chan_list_append(r, item);
			if (rc < 0)
				return fail_chan(b, rc);
			path_pop(&b->path, old);
		}
		break;
	case JSON_OBJECT:
		return build_object(b, j);
	}
	if (!r)
		return fail_chan(b, chan_msg_error(b->msg));
	return r;
}

int
tf_build(chan_msg *msg, json_t *json, tf_fd_source src, void *src_ctx,
	 struct tf_error *err)
{
	return tf_build_channels(msg, json, src, src_ctx, NULL, NULL, err);
}

int
tf_build_channels(chan_msg *msg, json_t *json, tf_fd_source src, void *src_ctx,
		  tf_channel_source chsrc, void *chsrc_ctx, struct tf_error *err)
{
	struct build b;
	chan_value *root;
	int rc;

	memset(&b, 0, sizeof(b));
	b.msg = msg;
	b.src = src;
	b.src_ctx = src_ctx;
	b.chsrc = chsrc;
	b.chsrc_ctx = chsrc_ctx;
	b.err = err;
	b.prev = -1;
	b.nhandles = count_handles(json);
	/* SPEC.md §12.1 rule 5, §12.4 rule 3: the count before the indices */
	if (b.nhandles > CHAN_HARD_MAX_HANDLES) {
		fail(&b, "HANDLE_LIMIT_EXCEEDED",
		     "%llu handle markers: a frame carries at most %u handles",
		     (unsigned long long)b.nhandles, CHAN_HARD_MAX_HANDLES);
		return -1;
	}
	root = build(&b, json);
	if (!root)
		return -1;
	rc = chan_msg_set_root(msg, root);
	if (rc < 0) {
		fail_chan(&b, rc);
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Rendering */

/* A JSON string: prefix (raw, no escapes needed) then s escaped. */
static void
put_string(FILE *out, const char *prefix, const char *s, size_t len)
{
	static const char hexd[] = "0123456789abcdef";
	size_t i, run = 0;

	putc('"', out);
	fputs(prefix, out);
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		const char *esc = NULL;
		char u[7];

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		fwrite(s + run, 1, i - run, out);
		run = i + 1;
		switch (c) {
		case '"':
			esc = "\\\"";
			break;
		case '\\':
			esc = "\\\\";
			break;
		case '\b':
			esc = "\\b";
			break;
		case '\f':
			esc = "\\f";
			break;
		case '\n':
			esc = "\\n";
			break;
		case '\r':
			esc = "\\r";
			break;
		case '\t':
			esc = "\\t";
			break;
		default:
			memcpy(u, "\\u00", 4);
			u[4] = hexd[c >> 4];
			u[5] = hexd[c & 15];
			u[6] = '\0';
			esc = u;
		}
		fputs(esc, out);
	}
	fwrite(s + run, 1, len - run, out);
	putc('"', out);
}

void
tf_base64_write(FILE *out, const unsigned char *p, size_t len)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				  "abcdefghijklmnopqrstuvwxyz0123456789+/";
	char buf[4096];
	size_t n = 0, i;

	for (i = 0; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 |
			     p[i + 2];

		buf[n++] = tab[v >> 18];
		buf[n++] = tab[(v >> 12) & 63];
		buf[n++] = tab[(v >> 6) & 63];
		buf[n++] = tab[v & 63];
		if (n == sizeof(buf)) {
			fwrite(buf, 1, n, out);
			n = 0;
		}
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)p[i] << 16;

		buf[n++] = tab[v >> 18];
		buf[n++] = tab[(v >> 12) & 63];
		buf[n++] = '=';
		buf[n++] = '=';
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;

		buf[n++] = tab[v >> 18];
		buf[n++] = tab[(v >> 12) & 63];
		buf[n++] = tab[(v >> 6) & 63];
		buf[n++] = '=';
	}
	fwrite(buf, 1, n, out);
}

static int
b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Strict decode of s into o (o == NULL: only check): 0 and *ret_len, or -1
 * if s is not canonical padded base64. */
static int
b64_decode(const char *s, size_t len, unsigned char *o, size_t *ret_len)
{
	size_t i, n = 0, pad = 0;

	if (len % 4)
		return -1;
	if (len >= 4 && s[len - 1] == '=')
		pad = s[len - 2] == '=' ? 2 : 1;
	for (i = 0; i < len; i += 4) {
		int v[4], k;
		uint32_t w;

		for (k = 0; k < 4; k++) {
			if (i + 4 == len && k >= 4 - (int)pad) {
				v[k] = 0;
				continue;
			}
			v[k] = b64val((unsigned char)s[i + k]);
			if (v[k] < 0)
				return -1;
		}
		w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
		    (uint32_t)v[2] << 6 | (uint32_t)v[3];
		/* canonical: the bits the padding leaves over are zero */
		if (i + 4 == len && ((pad == 1 && (w & 0xff)) ||
				     (pad == 2 && (w & 0xffff))))
			return -1;
		if (o)
			o[n] = (unsigned char)(w >> 16);
		n++;
		if (i + 4 < len || pad < 2) {
			if (o)
				o[n] = (unsigned char)(w >> 8);
			n++;
		}
		if (i + 4 < len || pad < 1) {
			if (o)
				o[n] = (unsigned char)w;
			n++;
		}
	}
	*ret_len = n;
	return 0;
}

unsigned char *
tf_base64_decode(const char *s, size_t len, size_t *ret_len)
{
	unsigned char *o;

	*ret_len = 0;
	if (b64_decode(s, len, NULL, ret_len) < 0)
		return NULL;
	o = malloc(*ret_len + 1);
	if (!o) {
		*ret_len = SIZE_MAX;
		return NULL;
	}
	(void)b64_decode(s, len, o, ret_len);
	return o;
}

/* Is there a p-digit decimal that reads back as x?  The candidates are the
 * correctly rounded p-digit decimal (nearest) and its neighbour on the other
 * side of x: the round-trip interval is asymmetric at powers of two, so the
 * nearest can miss it while the other one hits (46 powers of two need this).
 * On success *m * 10^*e10 is the decimal, the nearest one if both work. */
static int
try_digits(double x, int p, uint64_t *m, int *e10)
{
	char buf[48], *q;
	uint64_t v = 0, v2;
	double back;
	int e;

	snprintf(buf, sizeof(buf), "%.*e", p - 1, x);
	back = strtod(buf, NULL);
	for (q = buf; *q != 'e'; q++)
		if (*q >= '0' && *q <= '9')
			v = v * 10 + (uint64_t)(*q - '0');
	e = atoi(q + 1) - (p - 1);
	if (back != x) {
		v2 = back < x ? v + 1 : v - 1;
		snprintf(buf, sizeof(buf), "%" PRIu64 "e%d", v2, e);
		if (v2 == 0 || strtod(buf, NULL) != x)
			return 0;
		v = v2;
	}
	*m = v;
	*e10 = e;
	return 1;
}

/* Shortest decimal digits that round-trip: x = 0.DIGITS * 10^n, x > 0 and
 * finite; ties between two shortest go to the nearest, as ECMAScript's
 * Number::toString and David Gay's shortest mode require.  If p digits
 * round-trip, so do p + 1, so the length is found by binary search; 17
 * digits always round-trip. */
static void
shortest(double x, char *digits, int *ret_k, int *ret_n)
{
	uint64_t m = 0, mt;
	int e10 = 0, et, lo = 1, hi = 17, k, have = 0;

	while (lo < hi) {
		int mid = (lo + hi) / 2;

		if (try_digits(x, mid, &mt, &et)) {
			hi = mid;
			m = mt;
			e10 = et;
			have = 1;
		} else {
			lo = mid + 1;
		}
	}
	if (!have || hi == 17)
		try_digits(x, hi, &m, &e10);
	while (m % 10 == 0) {
		m /= 10;
		e10++;
	}
	k = snprintf(digits, 24, "%" PRIu64, m);
	*ret_k = k;
	*ret_n = e10 + k;
}

char *
tf_format_double(double d, char *buf)
{
	char s[24], *o = buf;
	int k, n, i;

	if (signbit(d)) {
		*o++ = '-';
		d = -d;
	}
	if (d == 0) {
		strcpy(o, "0.0");
		return buf;
	}
	shortest(d, s, &k, &n);
	if (k <= n && n <= 21) {
		memcpy(o, s, (size_t)k);
		o += k;
		for (i = 0; i < n - k; i++)
			*o++ = '0';
		strcpy(o, ".0");
	} else if (0 < n && n <= 21) {
		memcpy(o, s, (size_t)n);
		o += n;
		*o++ = '.';
		memcpy(o, s + n, (size_t)(k - n));
		o[k - n] = '\0';
	} else if (-6 < n && n <= 0) {
		*o++ = '0';
		*o++ = '.';
		for (i = 0; i < -n; i++)
			*o++ = '0';
		memcpy(o, s, (size_t)k);
		o[k] = '\0';
	} else {
		int e = n - 1;

		*o++ = s[0];
		if (k > 1) {
			*o++ = '.';
			memcpy(o, s + 1, (size_t)(k - 1));
			o += k - 1;
		}
		sprintf(o, "e%c%d", e < 0 ? '-' : '+', e < 0 ? -e : e);
	}
	return buf;
}

static void
newline(FILE *out, int pretty, int level)
{
	int i;

	if (!pretty)
		return;
	putc('\n', out);
	for (i = 0; i < level; i++)
		fputs("  ", out);
}

/* {"$name":<text>} with the text already formatted. */
static void
put_marker(FILE *out, const char *name, const char *text, int quoted,
	   int pretty, int level)
{
	putc('{', out);
	newline(out, pretty, level + 1);
	fprintf(out, "\"%s\":%s", name, pretty ? " " : "");
	if (quoted)
		putc('"', out);
	fputs(text, out);
	if (quoted)
		putc('"', out);
	newline(out, pretty, level);
	putc('}', out);
}

/* Handles are numbered in the order the walk meets them: the wire order
 * (SPEC.md §6.2), for a decoded message and for a built one alike. */
static void
render(FILE *out, const chan_value *v, int pretty, int level, uint32_t *next_handle)
{
	char buf[48];
	size_t i, n;

	switch (chan_value_type(v)) {
	case CHAN_NULL:
		fputs("null", out);
		break;
	/* The type is known here, so each checked read succeeds. */
	case CHAN_BOOL: {
		bool b = false;

		(void)chan_value_get_bool(v, &b);
		fputs(b ? "true" : "false", out);
		break;
	}
	case CHAN_INT: {
		int64_t x = 0;

		(void)chan_value_get_int(v, &x);

		snprintf(buf, sizeof(buf), "%" PRId64, x);
		if (x >= -MAX_SAFE_INT && x <= MAX_SAFE_INT)
			fputs(buf, out);
		else
			put_marker(out, "$int", buf, 1, pretty, level);
		break;
	}
	case CHAN_FLOAT: {
		double d = 0;

		(void)chan_value_get_float(v, &d);

		if (isnan(d))
			put_marker(out, "$float", "NaN", 1, pretty, level);
		else if (isinf(d))
			put_marker(out, "$float",
				   d < 0 ? "-Infinity" : "Infinity", 1,
				   pretty, level);
		else
			fputs(tf_format_double(d, buf), out);
		break;
	}
	case CHAN_STRING: {
		const char *s = "";

		(void)chan_value_get_string(v, &s, &n);

		put_string(out, "", s, n);
		break;
	}
	case CHAN_BYTES: {
		const void *raw = NULL;
		const unsigned char *p;

		(void)chan_value_get_bytes(v, &raw, &n);
		p = raw;

		putc('{', out);
		newline(out, pretty, level + 1);
		fprintf(out, "\"$bytes\":%s\"", pretty ? " " : "");
		tf_base64_write(out, p, n);
		putc('"', out);
		newline(out, pretty, level);
		putc('}', out);
		break;
	}
	case CHAN_LIST:
		n = chan_value_count(v);
		putc('[', out);
		for (i = 0; i < n; i++) {
			if (i)
				putc(',', out);
			newline(out, pretty, level + 1);
			render(out, chan_value_at(v, i), pretty, level + 1, next_handle);
		}
		if (n)
			newline(out, pretty, level);
		putc(']', out);
		break;
	case CHAN_MAP:
		n = chan_value_count(v);
		putc('{', out);
		for (i = 0; i < n; i++) {
			size_t klen;
			const char *k = chan_map_key_at(v, i, &klen);

			if (i)
				putc(',', out);
			newline(out, pretty, level + 1);
			/* "$x" -> "$$x": one more '$' */
			put_string(out, klen > 0 && k[0] == '$' ? "$" : "", k,
				   klen);
			fputs(pretty ? ": " : ":", out);
			render(out, chan_value_at(v, i), pretty, level + 1, next_handle);
		}
		if (n)
			newline(out, pretty, level);
		putc('}', out);
		break;
	case CHAN_HANDLE:
		snprintf(buf, sizeof(buf), "%" PRIu32, (*next_handle)++);
		put_marker(out,
			   chan_value_kind(v) == CHAN_KIND_CONN ? "$conn"
								: "$fd",
			   buf, 0, pretty, level);
		break;
	case CHAN_CHANNEL: /* SPEC.md §18.2 rule 3 */
		snprintf(buf, sizeof(buf), "%" PRIu32, chan_value_channel_id(v));
		put_marker(out, "$channel", buf, 0, pretty, level);
		break;
	}
}

void
tf_render(FILE *out, const chan_value *v, int pretty)
{
	uint32_t next_handle = 0;

	render(out, v, pretty, 0, &next_handle);
}
