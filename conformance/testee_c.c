/*
 * testee_c.c - the conformance testee for libchan (protocol: spec/vectors.md §4).
 *
 * Requests arrive on stdin, responses leave on stdout, both as a 4-byte
 * little-endian length and "key value" lines; descriptors travel over the
 * AF_UNIX socket on fd 3 as one-byte messages carrying SCM_RIGHTS.
 * Values in requests are in the text form of SPEC.md §12 (own small JSON reader).
 *
 * Revision 1.1 (hello answers "revision 1.1"): decode with CHAN_DECODE_REVISION_1_1
 * when asked, {"$channel":ID} in text, received channel handles become endpoints
 * ("channels" line), send "last 1" sends with END, an epitaph is reported as such.
 *
 * CHAN_TESTEE_BREAK=leak|order|swapfd|noread|hide|hello makes it deliberately wrong, for the
 * runner's self-test (conformance/conformance.mk; hello: sends a HELLO unprompted on
 * every attached connection); issue 14 §5: reattach (its own send loop attaches the
 * descriptors to every write of a partial send), sigpipe (sends without MSG_NOSIGNAL),
 * recurse (walks a payload recursively before decoding, with no depth check), pidfd
 * (peeks at a received frame without closing the SCM_PIDFD), typeonly (a conn handle
 * passes when it is an AF_UNIX stream socket, connected or not), lenientb64 (ignores
 * the unused bits of base64), lenientjson (accepts a trailing comma in a list);
 * =opennull makes it open /dev/null
 * before every request and keep it (not wrong: descriptors of its own are its business).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chan.h"

#define MAXFDS 1024
#define MAXCONNS 64

static const char *break_mode = "";
static chan_msg *held;                 /* released at the next request */
static chan_conn *conns[MAXCONNS];     /* id = index */
static struct chan_limits climits[MAXCONNS];
static int epitaph_told[MAXCONNS];      /* the peer's epitaph was reported once */
static chan_msg *stash[MAXCONNS];       /* a receive made by the probe below */
static int stash_rc[MAXCONNS];

/* UNSUPPORTED_FEATURE and CHANNEL_LIMIT_EXCEEDED are frame scope in the
 * registry but fatal in some cases (SPEC.md §16.2 rule 6, §18.6 rule 3), and
 * chan.h has no call that says which one a receive met: a fatal receive error
 * sticks, so a receive that does not wait tells (its result, if it read a
 * frame after all, is kept for the next recv request). */
static int recv_was_fatal(chan_conn *c, int id, int rc)
{
	if (chan_error_scope(rc) == CHAN_SCOPE_FATAL)
		return 1;
	if (rc != CHAN_E_UNSUPPORTED_FEATURE && rc != CHAN_E_CHANNEL_LIMIT_EXCEEDED)
		return 0;
	chan_msg *m = NULL;
	int r2 = chan_conn_recv(c, 0, &m);
	/* libchan 0.3 answers CONNECTION_CLOSED here after a fatal unmet require,
	 * not the same error (SPEC.md §9.2): either way the connection is dead */
	if (r2 == rc || r2 == CHAN_E_CONNECTION_CLOSED)
		return 1;
	if (r2 != CHAN_E_WOULD_BLOCK) {
		stash[id] = m;
		stash_rc[id] = r2;
	}
	return 0;
}

/* ---- output ---------------------------------------------------------- */

static char *out;
static size_t outlen, outcap;

static void put(const char *s, size_t n)
{
	if (outlen + n + 1 > outcap) {
		outcap = (outlen + n + 1) * 2;
		out = realloc(out, outcap);
		if (!out)
			abort();
	}
	memcpy(out + outlen, s, n);
	outlen += n;
}

static void putf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void putf(const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	put(tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void puthex(const unsigned char *p, size_t n)
{
	static const char d[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		char h[2] = {d[p[i] >> 4], d[p[i] & 15]};
		put(h, 2);
	}
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *q = p;
	while (n) {
		ssize_t w = write(fd, q, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		q += w;
		n -= (size_t)w;
	}
	return 0;
}

static void flush_response(void)
{
	unsigned char len[4] = {(unsigned char)outlen, (unsigned char)(outlen >> 8),
				(unsigned char)(outlen >> 16), (unsigned char)(outlen >> 24)};
	if (write_all(1, len, 4) || write_all(1, out, outlen))
		exit(1);
	outlen = 0;
}

static void error_response(int err)
{
	const char *n = chan_errname(err);
	putf("error %s\n", n ? n : "SYSTEM");
}

/* ---- descriptors over fd 3 -------------------------------------------- */

/* One-byte messages, each with up to 253 descriptors: libchan's own
 * SCM_RIGHTS helpers (chan_sock_recv, chan_sock_send). */
static int recv_fds(int *fds, int n)
{
	int got = 0;
	while (got < n) {
		char b;
		int tmp[CHAN_HARD_MAX_HANDLES];
		size_t k = 0;
		ssize_t r = chan_sock_recv(3, &b, 1, tmp, CHAN_HARD_MAX_HANDLES, false, &k);
		if (r != 1)
			return -1;
		for (size_t i = 0; i < k; i++) {
			if (got < n)
				fds[got++] = tmp[i];
			else
				close(tmp[i]);
		}
	}
	return 0;
}

static void send_fds(const int *fds, int n)
{
	for (int off = 0; off < n; off += 253) {
		int k = n - off > 253 ? 253 : n - off;
		if (chan_sock_send(3, "F", 1, fds + off, (size_t)k, false) != 1)
			exit(1);
	}
}

/* ---- text form (SPEC.md §12) -> chan_value ----------------------------- */
/* A small strict JSON reader (RFC 8259) that builds chan values directly.
 * Own code rather than jansson: jansson refuses U+0000 in object keys, which
 * chan map keys allow. */

static int b64val(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '+' ? 62 : c == '/' ? 63 : -1;
}

static chan_value *from_bytes(chan_msg *m, const char *s, size_t n, int *err)
{
	if (n % 4) {
		*err = CHAN_E_INVALID_TEXT;
		return NULL;
	}
	unsigned char *b = malloc(n / 4 * 3 + 1);
	size_t len = 0;
	for (size_t i = 0; i < n; i += 4) {
		int v[4];
		for (int k = 0; k < 4; k++)
			v[k] = s[i + k] == '=' && i + 4 == n && k >= 2 ? 0 : b64val(s[i + k]);
		int pad = (s[i + 2] == '=') + (s[i + 3] == '=');
		if (v[0] < 0 || v[1] < 0 || v[2] < 0 || v[3] < 0 || (s[i + 2] == '=' && s[i + 3] != '=')) {
			free(b);
			*err = CHAN_E_INVALID_TEXT;
			return NULL;
		}
		/* SPEC.md §12.1 rule 4: the unused bits of the last symbol are zero */
		if (((pad == 2 && (v[1] & 15)) || (pad == 1 && (v[2] & 3))) &&
		    strcmp(break_mode, "lenientb64")) {
			free(b);
			*err = CHAN_E_INVALID_TEXT;
			return NULL;
		}
		unsigned w = (unsigned)(v[0] << 18 | v[1] << 12 | v[2] << 6 | v[3]);
		b[len++] = (unsigned char)(w >> 16);
		if (pad < 2)
			b[len++] = (unsigned char)(w >> 8);
		if (pad < 1)
			b[len++] = (unsigned char)w;
	}
	chan_value *r = chan_bytes(m, b, len);
	free(b);
	return r;
}

struct rd {
	const char *p, *end;
	chan_msg *m;
	const int *fds;
	int nfds;
	int err;
};

static void ws(struct rd *r)
{
	while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
		r->p++;
}

/* The first error wins: a failed chan_* constructor poisons the message
 * with its own error (e.g. WRONG_HANDLE_KIND); anything else is input that
 * is not JSON (SPEC.md §12.4 rule 4). */
static int bad(struct rd *r)
{
	if (!r->err)
		r->err = chan_msg_error(r->m);
	if (!r->err)
		r->err = CHAN_E_INVALID_JSON;
	return -1;
}

/* JSON, but not the text form of a value (a bad marker, a bare "$" key). */
static int bad_text(struct rd *r)
{
	if (!r->err)
		r->err = chan_msg_error(r->m);
	if (!r->err)
		r->err = CHAN_E_INVALID_TEXT;
	return -1;
}

static int hex4(struct rd *r, unsigned *u)
{
	*u = 0;
	for (int i = 0; i < 4; i++, r->p++) {
		if (r->p >= r->end)
			return bad(r);
		int c = *r->p, v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
				  : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
		if (v < 0)
			return bad(r);
		*u = *u * 16 + (unsigned)v;
	}
	return 0;
}

/* Reads a JSON string; *ret is malloc'd (NUL-terminated), *len its length. */
static int jstring(struct rd *r, char **ret, size_t *len)
{
	if (r->p >= r->end || *r->p != '"')
		return bad(r);
	r->p++;
	size_t cap = 16, n = 0;
	char *s = malloc(cap);
	for (;;) {
		if (r->p >= r->end)
			goto fail;
		unsigned char c = (unsigned char)*r->p++;
		char tmp[4];
		size_t k = 1;
		tmp[0] = (char)c;
		if (c == '"')
			break;
		if (c < 0x20)
			goto fail;
		if (c == '\\') {
			if (r->p >= r->end)
				goto fail;
			c = (unsigned char)*r->p++;
			const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
			const char *q = c ? strchr(from, c) : NULL;
			if (q) {
				tmp[0] = to[q - from];
			} else if (c == 'u') {
				unsigned u, lo;
				if (hex4(r, &u))
					goto fail;
				if (u >= 0xD800 && u <= 0xDBFF) {
					if (r->end - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u')
						goto lone;
					r->p += 2;
					if (hex4(r, &lo))
						goto fail;
					if (lo < 0xDC00 || lo > 0xDFFF)
						goto lone;
					u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
				} else if (u >= 0xDC00 && u <= 0xDFFF) {
					goto lone;
				}
				if (u < 0x80) {
					tmp[0] = (char)u;
				} else if (u < 0x800) {
					tmp[0] = (char)(0xC0 | u >> 6);
					tmp[1] = (char)(0x80 | (u & 63));
					k = 2;
				} else if (u < 0x10000) {
					tmp[0] = (char)(0xE0 | u >> 12);
					tmp[1] = (char)(0x80 | (u >> 6 & 63));
					tmp[2] = (char)(0x80 | (u & 63));
					k = 3;
				} else {
					tmp[0] = (char)(0xF0 | u >> 18);
					tmp[1] = (char)(0x80 | (u >> 12 & 63));
					tmp[2] = (char)(0x80 | (u >> 6 & 63));
					tmp[3] = (char)(0x80 | (u & 63));
					k = 4;
				}
			} else {
				goto fail;
			}
		}
		if (n + k + 1 > cap) {
			cap = (n + k + 1) * 2;
			s = realloc(s, cap);
		}
		memcpy(s + n, tmp, k);
		n += k;
	}
	s[n] = 0;
	*ret = s;
	*len = n;
	return 0;
lone: /* SPEC.md §12.4: a \u escape that yields a lone surrogate */
	if (!r->err)
		r->err = CHAN_E_INVALID_UTF8;
fail:
	free(s);
	return bad(r);
}

static chan_value *jvalue(struct rd *r, int depth);

static chan_value *jnumber(struct rd *r)
{
	const char *q = r->p;
	int isfloat = 0;
	if (q < r->end && *q == '-')
		q++;
	if (q >= r->end || !(*q >= '0' && *q <= '9'))
		return bad(r), NULL;
	if (*q == '0')
		q++;
	else
		while (q < r->end && *q >= '0' && *q <= '9')
			q++;
	if (q < r->end && *q == '.') {
		isfloat = 1;
		q++;
		if (q >= r->end || !(*q >= '0' && *q <= '9'))
			return bad_text(r), NULL;
		while (q < r->end && *q >= '0' && *q <= '9')
			q++;
	}
	if (q < r->end && (*q == 'e' || *q == 'E')) {
		isfloat = 1;
		q++;
		if (q < r->end && (*q == '+' || *q == '-'))
			q++;
		if (q >= r->end || !(*q >= '0' && *q <= '9'))
			return bad_text(r), NULL;
		while (q < r->end && *q >= '0' && *q <= '9')
			q++;
	}
	char buf[400];
	size_t n = (size_t)(q - r->p);
	if (n >= sizeof buf)
		return bad(r), NULL;
	memcpy(buf, r->p, n);
	buf[n] = 0;
	r->p = q;
	errno = 0;
	if (isfloat) {
		double d = strtod(buf, NULL);
		if (isinf(d)) /* SPEC.md §12.1 rule 3: rounds to infinity */
			return bad_text(r), NULL;
		return chan_float(r->m, d);
	}
	long long v = strtoll(buf, NULL, 10);
	if (errno)
		return bad(r), NULL;
	return chan_int(r->m, v);
}

static chan_value *marker(struct rd *r, const char *key)
{
	char *s = NULL;
	size_t n = 0;
	chan_value *v = NULL;
	if (!strcmp(key, "$channel")) { /* SPEC.md §18.2 rule 3: 1..2^31-1 as for $fd */
		const char *q = r->p;
		unsigned long id = 0;
		if (q >= r->end || !(*q >= '1' && *q <= '9'))
			return bad_text(r), NULL;
		while (q < r->end && *q >= '0' && *q <= '9' && id <= 0x7fffffffUL)
			id = id * 10 + (unsigned long)(*q++ - '0');
		r->p = q;
		if (id > 0x7fffffffUL || (q < r->end && (*q == '.' || *q == 'e' || *q == 'E')))
			return bad_text(r), NULL;
		return chan_channel_ref(r->m, (uint32_t)id);
	}
	if (!strcmp(key, "$fd") || !strcmp(key, "$conn")) {
		const char *q = r->p;
		long idx = 0;
		if (q >= r->end || !(*q >= '0' && *q <= '9'))
			return bad_text(r), NULL;
		while (q < r->end && *q >= '0' && *q <= '9' && idx < 100000)
			idx = idx * 10 + (*q++ - '0');
		r->p = q;
		if (idx >= r->nfds)
			return bad_text(r), NULL;
		return chan_handle_copy(r->m, key[1] == 'f' ? CHAN_KIND_FD : CHAN_KIND_CONN, r->fds[idx]);
	}
	if (jstring(r, &s, &n))
		return NULL;
	if (!strcmp(key, "$int")) {
		char *e;
		errno = 0;
		/* SPEC.md §12.1 rule 2: -?(0|[1-9][0-9]*), not -0, read whole (§12.3 rule 4) */
		const char *d = s + (s[0] == '-');
		size_t nd = n - (size_t)(d - s);
		int ok = nd > 0 && strspn(d, "0123456789") == nd && (d[0] != '0' || nd == 1) &&
			 strcmp(s, "-0");
		long long i = ok ? strtoll(s, &e, 10) : 0;
		if (ok && !errno && e == s + n)
			v = chan_int(r->m, i);
	} else if (!strcmp(key, "$float")) {
		if (!strcmp(s, "NaN"))
			v = chan_float(r->m, NAN);
		else if (!strcmp(s, "Infinity"))
			v = chan_float(r->m, INFINITY);
		else if (!strcmp(s, "-Infinity"))
			v = chan_float(r->m, -INFINITY);
	} else {
		int e2 = 0;
		v = from_bytes(r->m, s, n, &e2);
		if (e2)
			r->err = e2;
	}
	free(s);
	if (!v)
		bad_text(r);
	return v;
}

static int is_marker(const char *k)
{
	return !strcmp(k, "$int") || !strcmp(k, "$float") || !strcmp(k, "$bytes") ||
	       !strcmp(k, "$fd") || !strcmp(k, "$conn") || !strcmp(k, "$channel");
}

static chan_value *jobject(struct rd *r, int depth)
{
	r->p++; /* '{' */
	ws(r);
	chan_value *map = chan_map(r->m);
	if (r->p < r->end && *r->p == '}') {
		r->p++;
		return map;
	}
	for (int first = 1;; first = 0) {
		char *k;
		size_t kl;
		ws(r);
		if (jstring(r, &k, &kl))
			return NULL;
		ws(r);
		if (r->p >= r->end || *r->p++ != ':') {
			free(k);
			return bad(r), NULL;
		}
		ws(r);
		if (first && is_marker(k)) {
			chan_value *v = marker(r, k);
			free(k);
			ws(r);
			if (!v || r->p >= r->end || *r->p++ != '}')
				return bad(r), NULL;
			return v;
		}
		const char *key = k;
		if (k[0] == '$') {
			if (k[1] != '$') {
				free(k);
				return bad_text(r), NULL;
			}
			key++;
			kl--;
		}
		chan_value *v = jvalue(r, depth + 1);
		int rc = v ? chan_map_put_n(map, key, kl, v) : -1;
		free(k);
		if (rc) {
			if (rc != -1 && !r->err)
				r->err = rc;
			return NULL;
		}
		ws(r);
		if (r->p < r->end && *r->p == ',') {
			r->p++;
			continue;
		}
		if (r->p < r->end && *r->p == '}') {
			r->p++;
			return map;
		}
		return bad(r), NULL;
	}
}

static chan_value *jvalue(struct rd *r, int depth)
{
	ws(r);
	if (r->p >= r->end)
		return bad(r), NULL;
	if (depth >= (int)CHAN_HARD_MAX_DEPTH) {
		/* a value deeper than the hard maximum (SPEC.md §12.4 rule 3); the
		 * syntax of the whole document was checked first */
		if (!r->err)
			r->err = CHAN_E_DEPTH_EXCEEDED;
		return NULL;
	}
	size_t left = (size_t)(r->end - r->p);
	switch (*r->p) {
	case 'n':
		if (left >= 4 && !memcmp(r->p, "null", 4))
			return r->p += 4, chan_null(r->m);
		break;
	case 't':
		if (left >= 4 && !memcmp(r->p, "true", 4))
			return r->p += 4, chan_bool(r->m, 1);
		break;
	case 'f':
		if (left >= 5 && !memcmp(r->p, "false", 5))
			return r->p += 5, chan_bool(r->m, 0);
		break;
	case '"': {
		char *s;
		size_t n;
		if (jstring(r, &s, &n))
			return NULL;
		chan_value *v = chan_string_n(r->m, s, n);
		free(s);
		return v;
	}
	case '[': {
		r->p++;
		chan_value *l = chan_list(r->m);
		ws(r);
		if (r->p < r->end && *r->p == ']') {
			r->p++;
			return l;
		}
		for (;;) {
			chan_value *v = jvalue(r, depth + 1);
			if (!v || chan_list_append(l, v))
				return NULL;
			ws(r);
			if (r->p < r->end && *r->p == ',') {
				r->p++;
				ws(r);
				if (!strcmp(break_mode, "lenientjson") && r->p < r->end && *r->p == ']') {
					r->p++; /* wrong on purpose: a trailing comma */
					return l;
				}
				continue;
			}
			if (r->p < r->end && *r->p == ']') {
				r->p++;
				return l;
			}
			return bad(r), NULL;
		}
	}
	case '{':
		return jobject(r, depth);
	default:
		return jnumber(r);
	}
	return bad(r), NULL;
}

/* JSON syntax (RFC 8259), without recursion: a stack of one byte per open
 * container.  SPEC.md §12.4 rule 4: the document is parsed as JSON first, so
 * INVALID_JSON wins over every other fault, at any depth. */
static int skip_string(const char **pp, const char *end)
{
	const char *p = *pp + 1;
	while (p < end) {
		unsigned char c = (unsigned char)*p++;
		if (c == '"') {
			*pp = p;
			return 1;
		}
		if (c < 0x20)
			return 0;
		if (c == '\\') {
			if (p >= end)
				return 0;
			c = (unsigned char)*p++;
			if (c == 'u') {
				for (int i = 0; i < 4; i++, p++)
					if (p >= end || !strchr("0123456789abcdefABCDEF", *p) || !*p)
						return 0;
			} else if (!c || !strchr("\"\\/bfnrt", c)) {
				return 0;
			}
		}
	}
	return 0;
}

static int skip_scalar(const char **pp, const char *end)
{
	const char *p = *pp;
	size_t left = (size_t)(end - p);
	static const char *const words[] = {"true", "false", "null"};
	for (int i = 0; i < 3; i++)
		if (left >= strlen(words[i]) && !memcmp(p, words[i], strlen(words[i]))) {
			*pp = p + strlen(words[i]);
			return 1;
		}
	if (p < end && *p == '-')
		p++;
	if (p >= end || *p < '0' || *p > '9')
		return 0;
	if (*p == '0')
		p++;
	else
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	if (p < end && *p == '.') {
		p++;
		if (p >= end || *p < '0' || *p > '9')
			return 0;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (p >= end || *p < '0' || *p > '9')
			return 0;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}
	*pp = p;
	return 1;
}

static int json_syntax_ok(const char *p, const char *end)
{
	enum { W_VALUE, W_VALUE_OR_CLOSE, W_KEY, W_KEY_OR_CLOSE, W_COLON, W_COMMA_OR_CLOSE } want = W_VALUE;
	size_t cap = 64, sp = 0;
	char *st = malloc(cap);
	int ok = 0;
	for (;;) {
		while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
			p++;
		if (p >= end || !st)
			break;
		char c = *p;
		if (want == W_COLON) {
			if (c != ':')
				break;
			p++;
			want = W_VALUE;
			continue;
		}
		if (want == W_COMMA_OR_CLOSE && c == ',') {
			p++;
			want = st[sp - 1] == '[' ? W_VALUE : W_KEY;
			continue;
		}
		if ((want == W_COMMA_OR_CLOSE || want == W_VALUE_OR_CLOSE || want == W_KEY_OR_CLOSE) &&
		    c == (st[sp - 1] == '[' ? ']' : '}') &&
		    (want == W_COMMA_OR_CLOSE || (want == W_VALUE_OR_CLOSE) == (c == ']'))) {
			p++;
			sp--;
		} else if (want == W_KEY || want == W_KEY_OR_CLOSE) {
			if (c != '"' || !skip_string(&p, end))
				break;
			want = W_COLON;
			continue;
		} else if (want == W_VALUE || want == W_VALUE_OR_CLOSE) {
			if (c == '[' || c == '{') {
				if (sp == cap) {
					cap *= 2;
					char *n2 = realloc(st, cap);
					if (!n2)
						break;
					st = n2;
				}
				st[sp++] = c;
				p++;
				want = c == '[' ? W_VALUE_OR_CLOSE : W_KEY_OR_CLOSE;
				continue;
			}
			if (!(c == '"' ? skip_string(&p, end) : skip_scalar(&p, end)))
				break;
		} else {
			break;
		}
		/* a value or a container ended */
		if (sp == 0) {
			while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
				p++;
			ok = p == end;
			break;
		}
		want = W_COMMA_OR_CLOSE;
	}
	free(st);
	return ok;
}

/* Build a message from text; closes the request's fds (chan_handle dups). */
static int text_to_msg(const char *text, int *fds, int nfds, chan_msg **ret)
{
	int err = 0;
	chan_msg *m = chan_msg_new(NULL);
	size_t tlen = strlen(text);
	if (!m) {
		err = CHAN_E_NO_MEMORY;
	} else if (!json_syntax_ok(text, text + tlen) && strcmp(break_mode, "lenientjson")) {
		err = CHAN_E_INVALID_JSON;
	} else {
		struct rd r = {text, text + tlen, m, fds, nfds, 0};
		chan_value *v = jvalue(&r, 0);
		ws(&r);
		if (v && r.p != r.end)
			bad(&r);
		if (!v)
			bad(&r);
		err = r.err;
		/* the document is JSON: what the reader refuses is not the text form
		 * (a marker with a second member, "$fd":0.0, ...) */
		if (err == CHAN_E_INVALID_JSON)
			err = CHAN_E_INVALID_TEXT;
		if (!err)
			err = chan_msg_error(m);
		if (!err)
			err = v ? chan_msg_set_root(m, v) : CHAN_E_INVALID_ARGUMENT;
	}
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	if (err) {
		chan_msg_free(m);
		return err;
	}
	*ret = m;
	return 0;
}

/* ---- responses with frames --------------------------------------------- */

/* Encode m, send its handle table over fd 3, write "ok", frame, fds. */
static int respond_frame(chan_msg *m)
{
	size_t need;
	int rc = chan_encoded_size(m, &need);
	if (rc)
		return rc;
	unsigned char *buf = malloc(need ? need : 1);
	rc = chan_encode(m, buf, need, &need);
	if (rc) {
		free(buf);
		return rc;
	}
	size_t n = 0;
	int fds[MAXFDS];
	rc = chan_msg_borrow_handles(m, fds, MAXFDS, &n);
	if (rc) {
		free(buf);
		return rc;
	}
	int tmp = -1;
	if (!strcmp(break_mode, "swapfd") && n > 0) {
		tmp = open("/dev/null", O_RDONLY | O_CLOEXEC);
		fds[0] = tmp;
	}
	send_fds(fds, (int)n);
	if (tmp >= 0)
		close(tmp);
	putf("ok\nframe ");
	puthex(buf, need);
	putf("\nfds %zu\n", n);
	free(buf);
	return 0;
}

static void walk_conns(chan_value *v, chan_value **list, int *n)
{
	switch (chan_value_type(v)) {
	case CHAN_LIST:
	case CHAN_MAP:
		for (size_t i = 0; i < chan_value_count(v); i++)
			walk_conns(chan_value_at(v, i), list, n);
		break;
	case CHAN_HANDLE:
		if (chan_value_kind(v) == CHAN_KIND_CONN && *n < MAXFDS)
			list[(*n)++] = v;
		break;
	default:
		break;
	}
}

/* Channel handles of a value in walk order (revision 1.1). */
static void walk_channels(chan_value *v, chan_value **list, int *n)
{
	switch (chan_value_type(v)) {
	case CHAN_LIST:
	case CHAN_MAP:
		for (size_t i = 0; i < chan_value_count(v); i++)
			walk_channels(chan_value_at(v, i), list, n);
		break;
	case CHAN_CHANNEL:
		if (*n < MAXFDS)
			list[(*n)++] = v;
		break;
	default:
		break;
	}
}

static int new_conn_id(void)
{
	for (int i = 1; i < MAXCONNS; i++)
		if (!conns[i])
			return i;
	return -1;
}

/* ---- requests ---------------------------------------------------------- */

struct req {
	char op[16];
	unsigned char *frame;
	size_t framelen;
	char *value;
	int nfds, conn;
	int rev11, last;
	uint32_t max_channels;
	struct chan_limits lim;
};

static void parse_req(char *body, struct req *r)
{
	memset(r, 0, sizeof *r);
	for (char *l = strtok(body, "\n"); l; l = strtok(NULL, "\n")) {
		char *v = strchr(l, ' ');
		if (v)
			*v++ = 0;
		else
			v = l + strlen(l);
		if (!strcmp(l, "op"))
			snprintf(r->op, sizeof r->op, "%s", v);
		else if (!strcmp(l, "fds"))
			r->nfds = atoi(v);
		else if (!strcmp(l, "conn"))
			r->conn = atoi(v);
		else if (!strcmp(l, "value"))
			r->value = v;
		else if (!strcmp(l, "max_payload"))
			r->lim.max_payload = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(l, "max_handles"))
			r->lim.max_handles = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(l, "max_depth"))
			r->lim.max_depth = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(l, "max_channels"))
			r->max_channels = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(l, "revision"))
			r->rev11 = !strcmp(v, "1.1");
		else if (!strcmp(l, "last"))
			r->last = atoi(v);
		else if (!strcmp(l, "frame")) {
			size_t n = strlen(v) / 2;
			r->frame = malloc(n + 1);
			for (size_t i = 0; i < n; i++) {
				unsigned x;
				sscanf(v + 2 * i, "%2x", &x);
				r->frame[i] = (unsigned char)x;
			}
			r->framelen = n;
		}
	}
}

/* ---- deliberately wrong helpers for the runner's self-test ------------- */

/* reattach / sigpipe: the testee's own send of m on c.  reattach: non-blocking
 * writes that carry the descriptors on every call (SPEC.md §10.2 rule 2 broken);
 * sigpipe: one blocking sendmsg without MSG_NOSIGNAL (rule 3 broken). */
static int raw_send(chan_conn *c, chan_msg *m, int reattach)
{
	size_t need;
	int rc = chan_encoded_size(m, &need);
	if (rc)
		return rc;
	unsigned char *buf = malloc(need);
	rc = chan_encode(m, buf, need, &need);
	size_t n = 0;
	int fds[MAXFDS];
	if (!rc)
		rc = chan_msg_borrow_handles(m, fds, MAXFDS, &n);
	int sock = chan_conn_borrow_fd(c);
	for (size_t off = 0; !rc && off < need;) {
		struct iovec iov = {buf + off, need - off};
		union {
			char b[CMSG_SPACE(253 * sizeof(int))];
			struct cmsghdr align;
		} u;
		struct msghdr mh = {0};
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		if (n && (reattach || off == 0)) {
			mh.msg_control = u.b;
			mh.msg_controllen = CMSG_SPACE(n * sizeof(int));
			struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(n * sizeof(int));
			memcpy(CMSG_DATA(cm), fds, n * sizeof(int));
		}
		ssize_t w = sendmsg(sock, &mh, reattach ? MSG_NOSIGNAL | MSG_DONTWAIT : 0);
		if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
			struct pollfd pf = {sock, POLLOUT, 0};
			poll(&pf, 1, 1000);
			continue;
		}
		if (w < 0)
			rc = errno == EPIPE ? CHAN_E_CONNECTION_CLOSED : CHAN_E_SYSTEM;
		else
			off += (size_t)w;
	}
	free(buf);
	return rc;
}

/* recurse: a walk of the payload that follows every LEN field of a Value
 * (list_value 7, map_value 8) and of a List/Map/Entry, with no depth check and
 * a frame of some size: 100,000 nested lists overflow the stack. */
static size_t naive_walk(const unsigned char *p, size_t n)
{
	volatile char pad[256];
	pad[0] = 0;
	size_t items = 0;
	while (n >= 2) {
		unsigned t = p[0];
		uint64_t len = 0;
		size_t k = 1;
		for (int sh = 0; k < n && sh < 63; sh += 7) {
			len |= (uint64_t)(p[k] & 127) << sh;
			if (!(p[k++] & 128))
				break;
		}
		if ((t & 7) != 2 || len > n - k)
			break;
		items += 1 + naive_walk(p + k, (size_t)len) + (size_t)pad[0];
		p += k + len;
		n -= k + len;
	}
	return items;
}

/* pidfd: peek at what is queued on the connection with room for SCM_CREDENTIALS
 * and SCM_PIDFD only, and never close the pidfd (SPEC.md §10.4 rule 4 broken). */
static void peek_leaking_pidfd(chan_conn *c)
{
	int sock = chan_conn_borrow_fd(c);
	struct pollfd pf = {sock, POLLIN, 0};
	poll(&pf, 1, 2000);
	char b[16];
	struct iovec iov = {b, sizeof b};
	union {
		char buf[CMSG_SPACE(sizeof(int) * 3) + CMSG_SPACE(sizeof(int)) +
			 CMSG_SPACE(253 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh = {0};
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = u.buf;
	mh.msg_controllen = sizeof u.buf;
	if (recvmsg(sock, &mh, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC) < 0)
		return;
	/* the peeked copies of the frame's descriptors are closed; the pidfd is not */
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
			for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
				close(fd);
			}
}

/* typeonly: every descriptor a conn handle could name is an AF_UNIX stream socket */
static int all_unix_stream(const int *fds, int n)
{
	for (int i = 0; i < n; i++) {
		int type = 0, dom = 0;
		socklen_t l = sizeof type, l2 = sizeof dom;
		if (getsockopt(fds[i], SOL_SOCKET, SO_TYPE, &type, &l) ||
		    getsockopt(fds[i], SOL_SOCKET, SO_DOMAIN, &dom, &l2) || type != SOCK_STREAM ||
		    dom != AF_UNIX)
			return 0;
	}
	return n > 0;
}

static chan_conn *get_conn(int id)
{
	return id > 0 && id < MAXCONNS ? conns[id] : NULL;
}

static void handle(struct req *r, int *fds)
{
	int rc;
	chan_msg *m = NULL;
	if (!strcmp(r->op, "hello")) {
		/* CHAN_TESTEE_REVISION=1.0: answer as a testee written before revision
		 * 1.1 (no revision line), for the runner's self-test (issue 14) */
		const char *rv = getenv("CHAN_TESTEE_REVISION");
		putf("ok\nbinding c-libchan %s\n", chan_version());
		if (!rv || strcmp(rv, "1.0"))
			putf("revision 1.1\n");
	} else if (!strcmp(r->op, "reset")) {
		for (int i = 0; i < MAXCONNS; i++) {
			conns[i] = chan_conn_free(conns[i]);
			stash[i] = chan_msg_free(stash[i]);
			stash_rc[i] = epitaph_told[i] = 0;
		}
		putf("ok\n");
	} else if (!strcmp(r->op, "decode")) {
		size_t used = 0;
		int unixonly = !strcmp(break_mode, "typeonly") && all_unix_stream(fds, r->nfds);
		rc = chan_decode(r->frame, r->framelen, fds, (size_t)r->nfds,
				 r->rev11 ? CHAN_DECODE_REVISION_1_1 : 0, &r->lim, NULL, &m, &used);
		if (!strcmp(break_mode, "recurse") && r->framelen > 16)
			(void)naive_walk(r->frame + 16, r->framelen - 16);
		if ((rc == CHAN_E_HANDLE_INDEX_OUT_OF_ORDER && !strcmp(break_mode, "order")) ||
		    (rc == CHAN_E_WRONG_HANDLE_KIND && unixonly)) {
			putf("ok\nframe ");
			puthex(r->frame, r->framelen);
			putf("\nfds 0\n");
			return;
		}
		if (rc) {
			error_response(rc);
			return;
		}
		if (!strcmp(break_mode, "leak") && r->nfds > 0)
			(void)fcntl(fds[0], F_DUPFD_CLOEXEC, 0); /* never closed */
		if (!strcmp(break_mode, "hide") && r->nfds > 0) {
			/* a copy of descriptor 0 parked in a socket's queue, where
			 * /proc/PID/fd does not show it; the socketpair is kept */
			int sv[2];
			if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
				char b = 'H';
				struct iovec iov = {&b, 1};
				union {
					char buf[CMSG_SPACE(sizeof(int))];
					struct cmsghdr align;
				} u;
				struct msghdr mh = {0};
				mh.msg_iov = &iov;
				mh.msg_iovlen = 1;
				mh.msg_control = u.buf;
				mh.msg_controllen = sizeof u.buf;
				struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
				cm->cmsg_level = SOL_SOCKET;
				cm->cmsg_type = SCM_RIGHTS;
				cm->cmsg_len = CMSG_LEN(sizeof(int));
				memcpy(CMSG_DATA(cm), &fds[0], sizeof(int));
				(void)sendmsg(sv[0], &mh, 0);
			}
		}
		rc = respond_frame(m);
		if (rc) {
			outlen = 0;
			error_response(rc);
			chan_msg_free(m);
			return;
		}
		putf("consumed %zu\n", used);
		held = m;
	} else if (!strcmp(r->op, "encode")) {
		rc = text_to_msg(r->value ? r->value : "", fds, r->nfds, &m);
		if (!rc)
			rc = respond_frame(m);
		if (rc) {
			outlen = 0;
			error_response(rc);
			chan_msg_free(m);
			return;
		}
		held = m;
	} else if (!strcmp(r->op, "attach")) {
		int id = new_conn_id();
		chan_conn *c = NULL;
		rc = r->nfds == 1 && id > 0 ? chan_conn_move_from_fd(fds[0], &c) : CHAN_E_INVALID_ARGUMENT;
		if (!rc)
			rc = chan_conn_set_limits(c, &r->lim);
		if (!rc && r->max_channels)
			rc = chan_conn_set_channel_limits(c, r->max_channels, 0);
		if (!rc && !strcmp(break_mode, "hello"))
			rc = chan_conn_hello(c, 0, -1); /* wrong: the runner may be a 1.0 peer */
		if (rc) {
			if (c)
				chan_conn_free(c);
			else
				for (int i = 0; i < r->nfds; i++)
					close(fds[i]);
			error_response(rc);
			return;
		}
		conns[id] = c;
		climits[id] = r->lim;
		epitaph_told[id] = 0;
		putf("ok\nconn %d\n", id);
	} else if (!strcmp(r->op, "recv")) {
		chan_conn *c = get_conn(r->conn);
		if (c && (stash[r->conn] || stash_rc[r->conn])) {
			m = stash[r->conn];
			rc = stash_rc[r->conn];
			stash[r->conn] = NULL;
			stash_rc[r->conn] = 0;
		} else {
			if (c && !strcmp(break_mode, "pidfd"))
				peek_leaking_pidfd(c);
			rc = c ? chan_conn_recv(c, -1, &m) : CHAN_E_INVALID_ARGUMENT;
		}
		if (rc) {
			int code = 0;
			const char *epi = c ? chan_conn_epitaph(c, &code) : NULL;
			error_response(rc);
			if (epi && rc == code && !epitaph_told[r->conn]) {
				epitaph_told[r->conn] = 1;
				/* the peer's epitaph: reported once; the next receive on the
				 * connection says CONNECTION_CLOSED (spec/vectors.md §4.2) */
				putf("epitaph 1\n");
				if (!strchr(epi, '\n'))
					putf("message %s\n", epi);
			} else if (c && recv_was_fatal(c, r->conn, rc)) {
				conns[r->conn] = chan_conn_free(c);
			}
			return;
		}
		rc = respond_frame(m);
		if (rc) {
			outlen = 0;
			error_response(rc);
			chan_msg_free(m);
			return;
		}
		chan_value *list[MAXFDS];
		int n = 0;
		walk_conns(chan_msg_root(m), list, &n);
		putf("conns");
		for (int i = 0; i < n; i++) {
			chan_conn *nc = NULL;
			int id = new_conn_id();
			if (id > 0 && chan_conn_move_from_value(list[i], &nc) == 0) {
				conns[id] = nc;
				climits[id] = climits[r->conn];
				chan_conn_set_limits(nc, &climits[id]);
				putf(" %d", id);
			}
		}
		putf("\n");
		n = 0;
		walk_channels(chan_msg_root(m), list, &n);
		if (n) {
			putf("channels");
			for (int i = 0; i < n; i++) {
				chan_conn *nc = NULL;
				int id = new_conn_id();
				if (id > 0 && chan_conn_move_from_value(list[i], &nc) == 0) {
					conns[id] = nc;
					putf(" %d", id);
				}
			}
			putf("\n");
		}
		held = m;
	} else if (!strcmp(r->op, "send")) {
		chan_conn *c = get_conn(r->conn);
		rc = text_to_msg(r->value ? r->value : "", fds, r->nfds, &m);
		if (!rc)
			rc = !c ? CHAN_E_INVALID_ARGUMENT
			     : !strcmp(break_mode, "reattach") ? raw_send(c, m, 1)
			     : !strcmp(break_mode, "sigpipe") ? raw_send(c, m, 0)
			     : r->last ? chan_conn_send_last(c, m, -1) : chan_conn_send(c, m, -1);
		chan_msg_free(m);
		if (rc)
			error_response(rc);
		else
			putf("ok\n");
	} else if (!strcmp(r->op, "close")) {
		chan_conn *c = get_conn(r->conn);
		if (c)
			conns[r->conn] = chan_conn_free(c);
		putf(c ? "ok\n" : "error INVALID_ARGUMENT\n");
	} else {
		for (int i = 0; i < r->nfds; i++)
			close(fds[i]);
		putf("error UNSUPPORTED\n");
	}
}

int main(void)
{
	const char *b = getenv("CHAN_TESTEE_BREAK");
	if (b)
		break_mode = b;
	for (;;) {
		unsigned char len[4];
		size_t got = 0;
		while (got < 4) {
			ssize_t n = read(0, len + got, 4 - got);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				goto done;
			got += (size_t)n;
		}
		size_t n = len[0] | (size_t)len[1] << 8 | (size_t)len[2] << 16 | (size_t)len[3] << 24;
		char *body = malloc(n + 1);
		for (got = 0; got < n;) {
			ssize_t k = read(0, body + got, n - got);
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				exit(1);
			got += (size_t)k;
		}
		body[n] = 0;
		if (!strcmp(break_mode, "opennull"))
			(void)open("/dev/null", O_RDONLY); /* never closed, not close-on-exec */
		held = chan_msg_free(held);
		struct req r;
		parse_req(body, &r);
		static int fds[MAXFDS];
		if (!strcmp(break_mode, "noread")) /* never reads fd 3: they stay queued */
			r.nfds = 0;
		if (r.nfds < 0 || r.nfds > MAXFDS || (r.nfds && recv_fds(fds, r.nfds)))
			exit(1);
		handle(&r, fds);
		flush_response();
		free(r.frame);
		free(body);
	}
done:
	held = chan_msg_free(held);
	for (int i = 0; i < MAXCONNS; i++)
		conns[i] = chan_conn_free(conns[i]);
	free(out);
	return 0;
}
