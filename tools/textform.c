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
/* Reading.
 *
 * jansson reads from a callback that is fed ONE byte per call: its internal
 * read-ahead buffer is dropped when a value ends, so anything buffered there
 * would be lost for the next value.  jansson looks one byte past a number or
 * a literal (true, false, null); that byte must be whitespace.
 */

struct tf_reader {
	FILE *fp;
	int io_errno;     /* errno of a failed read, 0 if none */
	int hit_eof;      /* the feed reported end of input */
	int last_out;     /* last byte handed to jansson, -1 if none */
	unsigned long line, col;             /* position of the next byte */
	unsigned long start_line, start_col; /* where the current value began */
	unsigned long last_line, last_col;   /* position of the last byte read */
	unsigned char *doc;                  /* the bytes of the current value so far */
	size_t doc_len, doc_cap;
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
	r->last_line = r->line;
	r->last_col = r->col;
	if (c == '\n') {
		r->line++;
		r->col = 1;
	} else {
		r->col++;
	}
}

static size_t
feed(void *buffer, size_t buflen, void *data)
{
	struct tf_reader *r = data;
	int c;

	if (buflen == 0)
		return 0;
	c = getc(r->fp);
	if (c == EOF) {
		if (ferror(r->fp)) {
			r->io_errno = errno ? errno : EIO;
			return (size_t)-1;
		}
		r->hit_eof = 1;
		return 0;
	}
	advance(r, c);
	((unsigned char *)buffer)[0] = (unsigned char)c;
	r->last_out = c;
	/* Kept so that a fault jansson meets before the end of the value can
	 * be checked against the whole value's syntax (syntax_first). */
	if (r->doc_len == r->doc_cap) {
		size_t cap = r->doc_cap ? 2 * r->doc_cap : 4096;
		unsigned char *d = realloc(r->doc, cap);

		if (!d) {
			r->io_errno = ENOMEM;
			return (size_t)-1;
		}
		r->doc = d;
		r->doc_cap = cap;
	}
	r->doc[r->doc_len++] = (unsigned char)c;
	return 1;
}

/*
 * SPEC.md §12.4 rule 4: a document that is not JSON is INVALID_JSON, whatever
 * else is wrong with it.  jansson stops at the first fault it meets, and some
 * of its faults are not syntax (a duplicate key, a lone surrogate, invalid
 * UTF-8, a number out of range, nesting deeper than it recurses): for those,
 * the rest of the value is read and its syntax checked here, without
 * recursion, from the value's first byte.  Bytes come from r->doc (what
 * jansson read), then from the stream.
 */
static int is_ws(int c);

struct scan {
	struct tf_reader *r;
	size_t pos;        /* next byte of r->doc */
	int pushed;        /* a byte given back, or -2 */
	unsigned long line, col;
};

static int
scan_get(struct scan *sc)
{
	int c;

	if (sc->pushed != -2) {
		c = sc->pushed;
		sc->pushed = -2;
	} else if (sc->pos < sc->r->doc_len) {
		c = sc->r->doc[sc->pos++];
	} else {
		c = getc(sc->r->fp);
		if (c == EOF)
			return EOF;
		advance(sc->r, c);
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

/* 0: the value r->doc starts is JSON (and has been read to its end); -1:
 * it is not, and err says where. */
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
	if (r->io_errno)
		tf_seterr(err, "SYSTEM", "read error: %s", strerror(r->io_errno));
	else if (c == EOF)
		tf_seterr(err, TF_INVALID_JSON, "line %lu column %lu: not JSON: the input ends "
			  "inside the value", sc.line, sc.col);
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

static int
is_ws(int c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int
tf_reader_next(struct tf_reader *r, json_t **ret, struct tf_error *err)
{
	json_error_t je;
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
	r->last_out = -1;
	r->hit_eof = 0;
	r->doc_len = 0;

	j = json_load_callback(feed, r,
			       JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK |
				       JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
			       &je);
	if (!j) {
		const char *name = TF_INVALID_JSON;

		if (r->io_errno) {
			tf_seterr(err, "SYSTEM", "read error: %s",
				  strerror(r->io_errno));
			return -1;
		}
		switch (json_error_code(&je)) {
		case json_error_invalid_utf8:
			name = "INVALID_UTF8";
			break;
		case json_error_invalid_syntax:
			/* a lone surrogate escape such as "\ud800" */
			if (strncmp(je.text, "invalid Unicode", 15) == 0)
				name = "INVALID_UTF8";
			break;
		case json_error_duplicate_key:
			name = "DUPLICATE_KEY";
			break;
		case json_error_null_byte_in_key:
			/* "\u0000" in a key: keys are names (SPEC.md §4.1) */
			name = "INVALID_KEY";
			break;
		case json_error_numeric_overflow:
			name = TF_INVALID_TEXT;
			break;
		case json_error_stack_overflow:
			name = "DEPTH_EXCEEDED";
			break;
		case json_error_out_of_memory:
			name = "NO_MEMORY";
			break;
		default:
			break;
		}
		/* Not a syntax fault: the whole value's syntax comes first. */
		if (strcmp(name, TF_INVALID_JSON) != 0 && strcmp(name, "NO_MEMORY") != 0) {
			unsigned long at_line = r->last_line, at_col = r->last_col;

			if (syntax_first(r, err) < 0)
				return -1;
			r->last_line = at_line; /* the fault's position, for its message */
			r->last_col = at_col;
		}
		if (json_error_code(&je) == json_error_null_byte_in_key)
			tf_seterr(err, name,
				  "line %lu column %lu: a map key cannot "
				  "contain U+0000 (\\u0000)",
				  r->last_line, r->last_col);
		else if (json_error_code(&je) == json_error_numeric_overflow)
			tf_seterr(err, name, "line %lu column %lu: %s: %s", r->last_line,
				  r->last_col, je.text,
				  strstr(je.text, "integer")
					  ? "a number without a fraction or exponent is an "
					    "int, and chan ints are signed 64-bit "
					    "(-9223372036854775808..9223372036854775807); "
					    "write 1e20 for a float"
					  : "a float must be finite; {\"$float\":\"Infinity\"} "
					    "is infinity");
		else
			tf_seterr(err, name, "line %lu column %lu: %s",
				  r->last_line, r->last_col, je.text);
		return -1;
	}
	if ((json_is_number(j) || json_is_boolean(j) || json_is_null(j)) &&
	    !r->hit_eof && r->last_out >= 0 && !is_ws(r->last_out)) {
		tf_seterr(err, TF_INVALID_JSON,
			  "line %lu column %lu: a number, true, false or null "
			  "must be followed by whitespace or the end of input",
			  r->last_line, r->last_col);
		json_decref(j);
		return -1;
	}
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
	uint64_t nhandles; /* handle references in the whole value */
	int64_t prev;      /* previous index met, -1 before the first */
	struct tf_error *err;
	char path[512]; /* JSON Pointer of the value being built */
	size_t pathlen;
};

static const char *const markers[] = {"$int", "$float", "$bytes", "$fd",
				      "$conn"};

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

static int
is_marker(const char *key)
{
	size_t i;

	for (i = 0; i < sizeof(markers) / sizeof(markers[0]); i++)
		if (strcmp(key, markers[i]) == 0)
			return 1;
	return 0;
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

static size_t
path_push(struct build *b, const char *seg, size_t len)
{
	size_t old = b->pathlen, i;
	char *p = b->path;
	size_t cap = sizeof(b->path) - 4;

	if (b->pathlen < cap)
		p[b->pathlen++] = '/';
	for (i = 0; i < len && b->pathlen < cap; i++) {
		unsigned char c = (unsigned char)seg[i];

		/* RFC 6901 escapes; control bytes shown as '?' */
		if (c == '~' || c == '/') {
			p[b->pathlen++] = '~';
			if (b->pathlen < cap)
				p[b->pathlen++] = c == '~' ? '0' : '1';
		} else {
			p[b->pathlen++] = c < 0x20 ? '?' : (char)c;
		}
	}
	if (i < len)
		memcpy(p + cap, "...", 3), b->pathlen = cap + 3;
	p[b->pathlen] = '\0';
	return old;
}

static void
path_pop(struct build *b, size_t old)
{
	b->pathlen = old;
	b->path[old] = '\0';
}

__attribute__((format(printf, 3, 4))) static chan_value *
fail(struct build *b, const char *name, const char *fmt, ...)
{
	char m[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	if (b->pathlen)
		tf_seterr(b->err, name, "at %s: %s", b->path, m);
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

static chan_value *build(struct build *b, json_t *j);

static chan_value *
build_marker(struct build *b, const char *key, json_t *v)
{
	const char *s = json_is_string(v) ? json_string_value(v) : NULL;
	chan_value *r;

	/* A marker's string is read whole: "12\u00003" is not the number 12
	 * (a C string would stop at the U+0000), and no marker takes one. */
	if (s && strlen(s) != json_string_length(v))
		return fail(b, TF_INVALID_TEXT,
			    "\"%s\" takes a string without U+0000 (\\u0000)", key);
	if (strcmp(key, "$int") == 0) {
		int64_t i;

		if (!s || parse_int64(s, &i) < 0)
			return fail(b, TF_INVALID_TEXT,
				    "\"$int\" takes a string holding a decimal "
				    "integer in the int64 range");
		r = chan_int(b->msg, i);
	} else if (strcmp(key, "$float") == 0) {
		double d;

		if (s && strcmp(s, "NaN") == 0)
			d = NAN;
		else if (s && strcmp(s, "Infinity") == 0)
			d = INFINITY;
		else if (s && strcmp(s, "-Infinity") == 0)
			d = -INFINITY;
		else
			return fail(b, TF_INVALID_TEXT,
				    "\"$float\" takes \"NaN\", \"Infinity\" "
				    "or \"-Infinity\"");
		r = chan_float(b->msg, d);
	} else if (strcmp(key, "$bytes") == 0) {
		unsigned char *p;
		size_t n;

		if (!s)
			return fail(b, TF_INVALID_TEXT,
				    "\"$bytes\" takes a base64 string");
		p = tf_base64_decode(s, json_string_length(v), &n);
		if (!p && n == SIZE_MAX)
			return fail(b, "NO_MEMORY", "out of memory");
		if (!p)
			return fail(b, TF_INVALID_TEXT,
				    "\"$bytes\" is not standard padded base64 "
				    "(RFC 4648 section 4, zero pad bits)");
		r = chan_bytes(b->msg, p, n);
		free(p);
	} else {
		enum chan_kind kind = strcmp(key, "$fd") == 0 ? CHAN_KIND_FD
							      : CHAN_KIND_CONN;
		json_int_t idx;
		int fd;

		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return fail(b, TF_INVALID_TEXT,
				    "\"%s\" takes a handle table index (an "
				    "integer >= 0)",
				    key);
		idx = json_integer_value(v);
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
		old = path_push(b, key, strlen(key));
		item = build_marker(b, key, v);
		path_pop(b, old);
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
		/* jansson keys hold no U+0000: it rejects "\u0000" in keys */
		old = path_push(b, key, klen);
		item = build(b, v);
		if (!item)
			return NULL;
		if (key[0] == '$') /* "$$x" -> "$x" */
			rc = chan_map_put_n(map, key + 1, klen - 1, item);
		else
			rc = chan_map_put_n(map, key, klen, item);
		if (rc < 0)
			return fail_chan(b, rc);
		path_pop(b, old);
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
			old = path_push(b, seg, strlen(seg));
			item = build(b, v);
			if (!item)
				return NULL;
			rc = chan_list_append(r, item);
			if (rc < 0)
				return fail_chan(b, rc);
			path_pop(b, old);
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
	struct build b;
	chan_value *root;
	int rc;

	memset(&b, 0, sizeof(b));
	b.msg = msg;
	b.src = src;
	b.src_ctx = src_ctx;
	b.err = err;
	b.prev = -1;
	b.nhandles = count_handles(json);
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

unsigned char *
tf_base64_decode(const char *s, size_t len, size_t *ret_len)
{
	unsigned char *o;
	size_t i, n = 0, pad = 0;

	*ret_len = 0;
	if (len % 4)
		return NULL;
	if (len >= 4 && s[len - 1] == '=')
		pad = s[len - 2] == '=' ? 2 : 1;
	o = malloc(len / 4 * 3 + 1);
	if (!o) {
		*ret_len = SIZE_MAX;
		return NULL;
	}
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
				goto bad;
		}
		w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
		    (uint32_t)v[2] << 6 | (uint32_t)v[3];
		o[n++] = (unsigned char)(w >> 16);
		if (i + 4 < len || pad < 2)
			o[n++] = (unsigned char)(w >> 8);
		if (i + 4 < len || pad < 1)
			o[n++] = (unsigned char)w;
		/* canonical: the bits the padding leaves over are zero */
		if (i + 4 == len && ((pad == 1 && (w & 0xff)) ||
				     (pad == 2 && (w & 0xffff))))
			goto bad;
	}
	*ret_len = n;
	return o;
bad:
	free(o);
	return NULL;
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
	}
}

void
tf_render(FILE *out, const chan_value *v, int pretty)
{
	uint32_t next_handle = 0;

	render(out, v, pretty, 0, &next_handle);
}
