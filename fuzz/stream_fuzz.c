/*
 * stream_fuzz.c - libFuzzer target for the stream reader, chan_conn_recv
 * (SPEC.md §10.3-§10.5), fed through a real socketpair.
 *
 * Input layout (fuzz/README.md):
 *   byte 0   config: bits 0-1 limits (0 default; 1 max_payload 64,
 *            max_handles 2, max_depth 2; 2 max_handles 1; 3 max_payload
 *            4096), bit 2 receive with a counting allocator
 *   then chunks, each:  ctl  len  data[len']
 *     ctl bits 0-2  number of descriptors attached to this chunk's sendmsg
 *                   (only when it carries data)
 *     ctl bits 3-5  type of the first descriptor (the next ones cycle);
 *                   type 7 is the receiving socket itself (SELF_SEND)
 *     ctl bit 6     after writing, receive until WOULD_BLOCK or a fatal
 *                   error
 *     ctl bit 7     len' = len * 16 (else len' = len); data is what is left
 *                   if the input is shorter
 *   At the end the writer closes and the reader drains to the end.
 *
 * Config bit 3: revision 1.1 traffic (SPEC.md §16-§18) instead of raw
 * chunks; see rev11_run below for its layout and invariants.
 *
 * Invariants: every chan_conn_recv result is a registry error allowed for
 * a receive (a frame-scope error, a fatal one of SPEC.md §9.2, WOULD_BLOCK
 * while data is missing, SELF_SEND) or success; fatal errors stick; after
 * every completed frame (success, frame error or fatal error) the
 * connection holds no descriptor but those of a later frame that a read
 * returned with it (read-ahead); every received descriptor is
 * close-on-exec; a received message re-encodes and decodes to the same
 * value; with the counting allocator every allocation is freed; when all is
 * done the process has exactly the descriptors it had before.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chan.h"
#include "conn.h" /* white box: dead_error() */
#include "fzutil.h"
#include "util.h"

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "stream_fuzz: %s:%d: invariant failed: %s\n", \
				__FILE__, __LINE__, #cond);                    \
			abort();                                               \
		}                                                              \
	} while (0)

#define SELF_TYPE 7
#define MAX_CHUNK_FDS 7

struct counting {
	long live;
};

static void *
c_alloc(void *ctx, size_t n)
{
	((struct counting *)ctx)->live++;
	return malloc(n);
}

static void
c_free(void *ctx, void *p)
{
	((struct counting *)ctx)->live--;
	free(p);
}

struct r11;

struct state {
	chan_conn *rx;
	struct r11 *r11; /* revision 1.1 mode */
	int epitaph_seen;
	int wfd, rfd;
	int fatal;       /* the sticky error once seen */
	int base_fds;    /* fds open with rx idle (no frame in progress) */
	int extra;       /* fds the harness holds for a chunk being written */
	long frames, frame_errors;
};

static int epitaph_ok(struct state *st, int r);
static void r11_drain_main(struct r11 *x);

static int
allowed_recv_error(int r)
{
	if (r == CHAN_E_WOULD_BLOCK || r == CHAN_E_SELF_SEND)
		return 1;
	/* HANDLES_TRUNCATED cannot happen here: at most 7 fds per read and a
	 * control buffer for 253 */
	if (r == CHAN_E_HANDLES_TRUNCATED)
		return 0;
	switch (chan_error_scope(r)) {
	case CHAN_SCOPE_FRAME:
		return 1;
	case CHAN_SCOPE_FATAL:
		return 1;
	default:
		return 0;
	}
}

/*
 * Is r, returned by a receive on c, the connection's end?  Fatal-scope
 * errors are; so are UNSUPPORTED_FEATURE (an unmet require, SPEC.md §16.2
 * rule 6) and CHANNEL_LIMIT_EXCEEDED (the main stream's queue reset,
 * §18.6 rule 3) when they killed the connection, which their frame scope
 * does not tell: every later receive returns them again at once.  The
 * public API has no way to tell (see fuzz/CAMPAIGN.md), so the harness
 * looks inside.
 */
static int
dead_error(chan_conn *c, int r)
{
	int dead;

	if (chan_error_scope(r) == CHAN_SCOPE_FATAL)
		return 1;
	pthread_mutex_lock(&c->mux_lock);
	dead = c->dead;
	pthread_mutex_unlock(&c->mux_lock);
	return dead == r;
}

/* Descriptors the connection holds for a frame whose first byte a read
 * returned after the frame it completed (read-ahead, SPEC.md §10.3: they
 * belong to that later frame).  White box, as dead_error. */
static int
held_fds(const chan_conn *c)
{
	return (int)(c->nfds + c->npfds);
}

static void
check_msg(chan_msg *m)
{
	int tab[CHAN_HARD_MAX_HANDLES];
	size_t n = hu_handles(m, tab), len = 0, need = 0, n2 = 0;
	int tab2[CHAN_HARD_MAX_HANDLES];
	chan_msg *m2 = NULL;
	uint8_t *buf;
	int r;

	for (size_t i = 0; i < n; i++)
		CHECK(tab[i] >= 0 && hu_fd_is_open(tab[i]) && hu_fd_cloexec(tab[i]));
	CHECK(chan_encoded_size(m, &need) == 0);
	buf = malloc(need);
	CHECK(buf);
	CHECK(chan_encode(m, buf, need, &len) == 0 && len == need);
	r = chan_decode(buf, len, NULL, 0, CHAN_DECODE_DETACHED | CHAN_DECODE_REVISION_1_1,
			NULL, NULL, &m2, NULL);
	CHECK(r == 0);
	CHECK(fz_value_equal(chan_msg_root(m), chan_msg_root(m2)));
	n2 = hu_handles(m2, tab2);
	CHECK(n2 == n);
	chan_msg_free(m2);
	free(buf);
}

/* Receive until WOULD_BLOCK (or, with until_end, until a fatal error). */
static void
drain(struct state *st, int until_end)
{
	for (;;) {
		chan_msg *m = NULL;
		int r = chan_conn_recv(st->rx, until_end ? -1 : 0, &m);

		if (st->fatal) {
			CHECK(r == st->fatal);
			return;
		}
		if (r == 0) {
			CHECK(m != NULL);
			check_msg(m);
			chan_msg_free(m);
			st->frames++;
			CHECK(hu_count_fds() == st->base_fds + st->extra + held_fds(st->rx));
			continue;
		}
		if (epitaph_ok(st, r)) {
			/* the peer's epitaph (raw bytes can hold a HELLO and
			 * then one): fatal whatever its code, then
			 * CONNECTION_CLOSED (SPEC.md §17.3 rule 3) */
			st->fatal = CHAN_E_CONNECTION_CLOSED;
			m = NULL;
			CHECK(chan_conn_recv(st->rx, 0, &m) == CHAN_E_CONNECTION_CLOSED && !m);
			return;
		}
		CHECK(hu_is_registry_error(r));
		if (!allowed_recv_error(r)) {
			fprintf(stderr, "stream_fuzz: chan_conn_recv: %s (errno %d)\n",
				chan_errname(r), errno);
			abort();
		}
		if (r == CHAN_E_WOULD_BLOCK) {
			CHECK(!until_end);
			return;
		}
		if (dead_error(st->rx, r)) {
			st->fatal = r;
			CHECK(hu_count_fds() == st->base_fds + st->extra + held_fds(st->rx));
			m = NULL;
			CHECK(chan_conn_recv(st->rx, 0, &m) == r && m == NULL);
			return;
		}
		st->frame_errors++;
		CHECK(hu_count_fds() == st->base_fds + st->extra + held_fds(st->rx));
	}
}

/* r is the code of an epitaph the receive just read (SPEC.md §17.3 rule 3:
 * any code 1..255, reported once). */
static int
epitaph_ok(struct state *st, int r)
{
	int code = 0;

	if (st->epitaph_seen || !chan_conn_epitaph(st->rx, &code) || code != r)
		return 0;
	CHECK(r < 0 && r >= -255);
	st->epitaph_seen = 1;
	return 1;
}

/* One sendmsg of n bytes with nfds descriptors; returns bytes written. */
static size_t
write_chunk(struct state *st, const uint8_t *p, size_t n, const int *fds, size_t nfds)
{
	size_t off = 0;
	int stuck = 0;

	while (off < n) {
		/* libchan's SCM_RIGHTS helper: the fds ride on the first byte */
		ssize_t w = chan_sock_send(st->wfd, p + off, n - off, off ? NULL : fds,
					   off ? 0 : nfds, true);

		if (w > 0) {
			off += (size_t)w;
			stuck = 0;
			continue;
		}
		CHECK(w < 0);
		if (w == CHAN_E_WOULD_BLOCK) {
			/* the socket is full: let the reader make room (it must
			 * be able to: a full socket has bytes to read) */
			if (st->r11)
				r11_drain_main(st->r11);
			else
				drain(st, 0);
			if (st->fatal)
				return off; /* nobody reads any more */
			if (++stuck > 1000) {
				fprintf(stderr, "stream_fuzz: writer stuck: socket full, reader idle\n");
				abort();
			}
			continue;
		}
		/* EPIPE etc.: the reader is gone (cannot happen here) */
		CHECK(0);
	}
	return off;
}

/* ---- revision 1.1 traffic (config bit 3) ----
 *
 * Layout after byte 0:
 *   byte 1   bit 0: the peer sends a HELLO first, announcing "epitaph"
 *            (bit 1) and "channels" (bit 2), requiring "channels" (bit 3);
 *            bits 4-5: channel limits (0 defaults; 1 max_channels 2;
 *            2 max_queued_bytes 600; 3 max_channels 6 and max_queued_bytes
 *            4096); bit 6: the receiver sends its HELLO first
 *   then ops: one byte (op % 10), then its argument bytes (0 past the end):
 *     0 raw     ctl len data: a chunk of the 1.0 layout (any bytes)
 *     1 hello   a: features, require, malformed forms (hello_msg)
 *     2 epitaph a: code (0: none), b: bit 0 message, bit 1 code as a string
 *     3 close   s: channel, a: code (0: none), f: bit 0 CONTROL without
 *               END, bits 4-7 optional flag bits
 *     4 control s: channel, a: bits 0-2 variant (unknown op, critical,
 *               hello/epitaph/close out of place, not a map, op not a
 *               string), bit 3 with an fd, bit 4 END
 *     5 data    s: channel, f: the flags byte as is, n: bits 0-5 bytes
 *               value of 8n bytes, bit 6 with an fd, bit 7 with a channel
 *               handle (the next id)
 *     6 open    s: channel, a: bits 0-1 handles - 1, bits 2-3 ids (next,
 *               the last one again, skipping 5, 2^31-1), bit 4 END
 *     7 rx      a: a % 7 what the receiving side does, on endpoint a >> 3:
 *               drain the main stream, drain an endpoint, free one (close),
 *               open a channel and send its handle, send on an endpoint
 *               (bit 6 of a: last), send an epitaph, send a HELLO
 *     8 check   the queue bound (below)
 *     9 peer    read what the receiver sent
 *   channel selector s: s & 7 mode, s >> 3 index (sel_channel).
 *
 * Invariants: every receive (main stream or endpoint) returns a message, a
 * registry error a receive may give (frame scope, fatal, WOULD_BLOCK,
 * SELF_SEND; on an endpoint also CHANNEL_CLOSED and the code of a close the
 * peer sent), or the peer's epitaph code once (chan_conn_epitaph agrees),
 * then CONNECTION_CLOSED; after a fatal error every receive fails (no
 * message is delivered after the connection died, SPEC.md §9.2, §18.5
 * rule 5; end of stream excepted), and the main stream repeats it; an
 * endpoint that reported CHANNEL_CLOSED keeps reporting it (§18.5 rule 2);
 * every message re-encodes and decodes equal and its descriptors are
 * CLOEXEC; queued bytes: after the main stream is drained (no whole frame
 * left in the socket), the frames and errors the endpoints then return
 * total at most max_queued_bytes (16 + payload + 64 each, §18.6) plus one
 * frame; every frame the receiver sends is a valid 1.1 frame, its first
 * one a HELLO, control frames only HELLO/close/epitaph, an epitaph only to
 * a peer that announced "epitaph" and nothing after it; at the end, with
 * every endpoint and the connection freed, the allocator hook balances and
 * the process has exactly the descriptors it had before.
 */
#define MAX_EP 12
#define MAX_KEYS 64
#define THEIRS 0x80000000u

struct r11 {
	struct state *st;
	chan_conn *ep[MAX_EP];
	int ep_closed[MAX_EP];
	size_t nep;
	uint32_t keys[MAX_KEYS]; /* channel fields that named a channel once */
	size_t nkeys;
	uint32_t peer_next;      /* the next id the peer opens */
	int announced_epitaph;   /* a HELLO of the peer announced it */
	uint8_t codes[256];      /* codes the peer put in a close or epitaph */
	int raw;                 /* raw bytes were sent: any code may have been */
	int dead;                /* the first fatal error any receive saw */
	int ep_dead[MAX_EP];     /* this endpoint reported the fatal error */
	int main_dead;           /* the main stream did */
	size_t max_queued, max_frame;
	/* what the receiver sent, as the peer reads it */
	uint8_t in[1 << 16];
	size_t inlen;
	long rx_frames;
	int rx_epitaph;
};

static long after_end;  /* kept for the report: always 0 now */
static long after_dead; /* frames delivered after another endpoint saw the error */

__attribute__((destructor)) static void
report_after_end(void)
{
	if (after_dead)
		fprintf(stderr, "stream_fuzz: %ld frames delivered after a fatal error\n",
			after_dead);
	if (after_end)
		fprintf(stderr, "stream_fuzz: %ld frames delivered on an endpoint after it "
				"reported CHANNEL_CLOSED\n", after_end);
}

static const uint8_t *r11_data;
static size_t r11_size, r11_pos;

static uint8_t
arg(void)
{
	return r11_pos < r11_size ? r11_data[r11_pos++] : 0;
}

static void
add_key(struct r11 *x, uint32_t key)
{
	if (x->nkeys < MAX_KEYS)
		x->keys[x->nkeys++] = key;
}

static uint32_t
sel_channel(struct r11 *x, uint8_t s)
{
	uint32_t idx = s >> 3;

	switch (s & 7) {
	case 0:
		return 0;
	case 1: /* a channel the receiver holds an endpoint of */
		return x->nep ? chan_conn_channel_id(x->ep[idx % x->nep]) ^ THEIRS : 1;
	case 2: /* one that was named once (maybe closed since) */
		return x->nkeys ? x->keys[idx % x->nkeys] : 1;
	case 3: /* not opened yet by the peer */
		return (x->peer_next + idx) & ~THEIRS ? (x->peer_next + idx) & ~THEIRS : 1;
	case 4: /* never allocated by the receiver */
		return THEIRS | (1000 + idx);
	case 5:
		return THEIRS;
	case 6:
		return idx + 1;
	default:
		return THEIRS | (idx + 1);
	}
}

/* Read what the receiver sent and check it frame by frame. */
static void
peer_read(struct r11 *x)
{
	for (;;) {
		int fds[CHAN_HARD_MAX_HANDLES];
		size_t nfds = 0, off = 0;
		ssize_t n;

		if (x->inlen == sizeof(x->in))
			break; /* a frame larger than we read: never sent here */
		n = chan_sock_recv(x->st->wfd, x->in + x->inlen, sizeof(x->in) - x->inlen, fds,
				   CHAN_HARD_MAX_HANDLES, true, &nfds);
		for (size_t i = 0; i < nfds; i++)
			close(fds[i]);
		if (n <= 0)
			break;
		x->inlen += (size_t)n;
		while (x->inlen - off >= CHAN_HEADER_SIZE) {
			const uint8_t *f = x->in + off;
			uint32_t plen = (uint32_t)f[12] | (uint32_t)f[13] << 8 |
					(uint32_t)f[14] << 16 | (uint32_t)f[15] << 24;
			uint32_t channel = (uint32_t)f[8] | (uint32_t)f[9] << 8 |
					   (uint32_t)f[10] << 16 | (uint32_t)f[11] << 24;
			chan_msg *m = NULL;
			const char *op = "";
			size_t oplen = 0;

			if (x->inlen - off < CHAN_HEADER_SIZE + (size_t)plen)
				break;
			CHECK(!x->rx_epitaph); /* the epitaph is the last frame */
			CHECK(chan_decode(f, CHAN_HEADER_SIZE + plen, NULL, 0,
					  CHAN_DECODE_DETACHED | CHAN_DECODE_REVISION_1_1, NULL,
					  NULL, &m, NULL) == 0);
			CHECK(f[5] == 0 || f[5] == 0x01 || f[5] == 0x02 || f[5] == 0x03);
			if (f[5] & 0x01) {
				chan_value *root = chan_msg_root(m);

				CHECK(chan_value_type(root) == CHAN_MAP);
				CHECK(strcmp(chan_map_key_at(root, 0, NULL), "op") == 0);
				CHECK(chan_value_get_string(chan_value_at(root, 0), &op, &oplen) == 0);
				if (!strcmp(op, "close")) {
					CHECK(f[5] == 0x03 && channel != 0);
				} else if (!strcmp(op, "epitaph")) {
					CHECK(f[5] == 0x01 && channel == 0);
					CHECK(x->announced_epitaph || x->raw); /* raw bytes may hold a HELLO */
					x->rx_epitaph = 1;
				} else {
					CHECK(!strcmp(op, "hello") && f[5] == 0x01 && channel == 0);
				}
			}
			/* SPEC.md §16.2 rule 4 (and rule 3: the receiver sends
			 * nothing 1.1 before a HELLO): its first frame is one */
			if (x->rx_frames++ == 0)
				CHECK((f[5] & 0x01) && !strcmp(op, "hello"));
			chan_msg_free(m);
			off += CHAN_HEADER_SIZE + plen;
		}
		memmove(x->in, x->in + off, x->inlen - off);
		x->inlen -= off;
	}
}

/* Send m as one frame with flags and channel as given. */
static void
send_frame(struct r11 *x, chan_msg *m, uint8_t flags, uint32_t channel)
{
	size_t len = 0, nfds = 0;
	int fds[CHAN_HARD_MAX_HANDLES];
	uint8_t *buf;

	if (chan_msg_error(m) || chan_encoded_size(m, &len) < 0) {
		/* e.g. a channel id past 2^31-1: nothing to send */
		chan_msg_free(m);
		return;
	}
	CHECK((buf = malloc(len)) != NULL);
	CHECK(chan_encode(m, buf, len, &len) == 0);
	CHECK(chan_msg_borrow_handles(m, fds, CHAN_HARD_MAX_HANDLES, &nfds) == 0);
	buf[5] = flags;
	for (int i = 0; i < 4; i++)
		buf[8 + i] = (uint8_t)(channel >> (8 * i));
	if (len > x->max_frame)
		x->max_frame = len;
	peer_read(x);
	write_chunk(x->st, buf, len, fds, nfds);
	free(buf);
	chan_msg_free(m);
}

static void
put(chan_value *map, const char *key, chan_value *v)
{
	chan_map_put(map, key, v);
}

static chan_msg *
hello_msg(struct r11 *x, uint8_t a)
{
	chan_msg *m = chan_msg_new(NULL);
	chan_value *root = chan_map(m), *f;

	if (a & 0x40)
		put(root, "x", chan_int(m, 1)); /* op not first: not a HELLO */
	put(root, "op", chan_string(m, "hello"));
	if (a & 0x20) {
		f = chan_list(m); /* features not a map */
	} else {
		f = chan_map(m);
		if (a & 1)
			put(f, "epitaph", chan_map(m));
		if (a & 2)
			put(f, "channels", chan_map(m));
		if (a & 0x10)
			put(f, "x_other", chan_map(m));
	}
	put(root, "features", f);
	if (a & 0x80) {
		put(root, "require", chan_string(m, "channels")); /* not a list */
	} else if (a & 0x0c) {
		chan_value *l = chan_list(m);

		if (a & 4)
			chan_list_append(l, chan_string(m, "channels"));
		if (a & 8)
			chan_list_append(l, chan_string(m, "x_zz"));
		put(root, "require", l);
	}
	chan_msg_set_root(m, root);
	if ((a & 1) && !(a & 0x60) && !(a & 0x80))
		x->announced_epitaph = 1; /* maybe: a later HELLO is ignored */
	return m;
}

static chan_value *
fd_handle(chan_msg *m, int *fd)
{
	*fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	CHECK(*fd >= 0);
	return chan_handle_move(m, CHAN_KIND_FD, *fd);
}

/* Take the channel handles of a received value as endpoints. */
static void
take_channels(struct r11 *x, chan_value *v)
{
	chan_conn *e = NULL;

	switch (chan_value_type(v)) {
	case CHAN_CHANNEL:
		if (x->nep < MAX_EP && chan_conn_move_from_value(v, &e) == 0) {
			CHECK(chan_conn_borrow_fd(e) == -1);
			add_key(x, chan_conn_channel_id(e) ^ THEIRS);
			x->ep_closed[x->nep] = 0;
			x->ep_dead[x->nep] = 0;
			x->ep[x->nep++] = e;
		}
		break;
	case CHAN_LIST:
	case CHAN_MAP:
		for (size_t i = 0; i < chan_value_count(v); i++)
			take_channels(x, chan_value_at(v, i));
		break;
	default:
		break;
	}
}

/* One receive's result on the main stream (ep < 0) or endpoint ep.
 * Returns 1 to go on receiving, 0 to stop (WOULD_BLOCK, closed, fatal). */
static int
r11_result(struct r11 *x, int ep, int r, chan_msg *m, size_t *bytes)
{
	struct state *st = x->st;
	int code = 0;

	if (r == 0) {
		size_t len = 0;

		CHECK(m != NULL);
		/* Frames accepted before the connection died are still
		 * delivered, each endpoint's before it reports the error
		 * (SPEC.md §18.5 rule 5); never one after it reported it. */
		if (x->dead)
			after_dead++;
		CHECK(ep >= 0 ? !x->ep_dead[ep] : !x->main_dead);
		/* an endpoint that reported CHANNEL_CLOSED stays closed: a
		 * frame the peer sent after its END is not delivered (§18.5
		 * rules 1-2) */
		CHECK(ep < 0 || !x->ep_closed[ep]);
		check_msg(m);
		CHECK(chan_encoded_size(m, &len) == 0);
		if (bytes)
			*bytes += len + 64;
		take_channels(x, chan_msg_root(m));
		chan_msg_free(m);
		st->frames++;
		return 1;
	}
	CHECK(m == NULL);
	if (r == CHAN_E_WOULD_BLOCK)
		return 0;
	if (!st->epitaph_seen && chan_conn_epitaph(st->rx, &code) && code == r) {
		/* the peer's epitaph: its code once (a code we sent, or
		 * CONNECTION_CLOSED for one without a valid code), then
		 * CONNECTION_CLOSED (SPEC.md §17.3 rule 3) */
		CHECK(r < 0 && r >= -255);
		CHECK(x->raw || x->codes[-r] || r == CHAN_E_CONNECTION_CLOSED);
		st->epitaph_seen = 1;
		if (!x->dead)
			x->dead = CHAN_E_CONNECTION_CLOSED;
		if (ep < 0) {
			st->fatal = CHAN_E_CONNECTION_CLOSED;
			x->main_dead = 1;
		} else {
			x->ep_dead[ep] = 1;
		}
		return 0;
	}
	if (ep >= 0) {
		/* no queued error of a frame sent after END either */
		if (x->ep_closed[ep] && r != CHAN_E_CHANNEL_CLOSED)
			fprintf(stderr, "after CHANNEL_CLOSED: %s\n", chan_errname(r));
		CHECK(!x->ep_closed[ep] || r == CHAN_E_CHANNEL_CLOSED);
		if (r == CHAN_E_CHANNEL_CLOSED) {
			x->ep_closed[ep] = 1;
			return 0;
		}
		int sent = r < 0 && r >= -255 && (x->raw || x->codes[-r]);

		if (sent && !hu_is_registry_error(r))
			return 1; /* a close's code that is no registry error */
		if (r == CHAN_E_CHANNEL_LIMIT_EXCEEDED ||
		    (sent && chan_error_scope(r) != CHAN_SCOPE_FATAL))
			return 1; /* a reset or a close's code, then CHANNEL_CLOSED */
	}
	CHECK(hu_is_registry_error(r));
	if (!allowed_recv_error(r)) {
		fprintf(stderr, "stream_fuzz: chan_conn_recv (%s): %s\n",
			ep < 0 ? "main stream" : "endpoint", chan_errname(r));
		abort();
	}
	if (dead_error(st->rx, r)) {
		if (getenv("STREAM_FUZZ_TRACE"))
			fprintf(stderr, "trace: %s reports %s\n", ep < 0 ? "main" : "endpoint", chan_errname(r));
		if (!x->dead)
			x->dead = r;
		else if (ep < 0 && r != x->dead)
			fprintf(stderr, "main stream: %s after %s\n", chan_errname(r), chan_errname(x->dead));
		if (x->dead && ep < 0)
			CHECK(r == x->dead);
		if (ep < 0) {
			st->fatal = r;
			x->main_dead = 1;
		} else {
			x->ep_dead[ep] = 1;
		}
		return 0;
	}
	if (bytes)
		*bytes += CHAN_HEADER_SIZE + 64; /* a queued error: at least this */
	st->frame_errors++;
	return 1;
}

static void
r11_drain_main(struct r11 *x)
{
	for (int i = 0; i < 4096; i++) {
		chan_msg *m = NULL;
		int r = chan_conn_recv(x->st->rx, 0, &m);

		if (!r11_result(x, -1, r, m, NULL))
			return;
	}
}

static size_t
r11_drain_ep(struct r11 *x, size_t i)
{
	size_t bytes = 0;

	for (int k = 0; k < 4096; k++) {
		chan_msg *m = NULL;
		int r = chan_conn_recv(x->ep[i], 0, &m);

		if (!r11_result(x, (int)i, r, m, &bytes))
			break;
	}
	return bytes;
}

static void
ep_free(struct r11 *x, size_t i)
{
	chan_conn_free(x->ep[i]);
	x->ep[i] = x->ep[--x->nep];
	x->ep_closed[i] = x->ep_closed[x->nep];
	x->ep_dead[i] = x->ep_dead[x->nep];
}

/* SPEC.md §18.6: with the main stream drained (no whole frame in the
 * socket), what the endpoints hold is what is queued. */
static void
check_queues(struct r11 *x)
{
	size_t total = 0;

	r11_drain_main(x);
	if (x->dead)
		return;
	for (size_t i = 0; i < x->nep; i++)
		total += r11_drain_ep(x, i);
	if (total > x->max_queued + x->max_frame + 64) {
		fprintf(stderr, "stream_fuzz: %zu bytes queued, max_queued_bytes %zu\n", total,
			x->max_queued);
		abort();
	}
}

static void
rx_action(struct r11 *x, uint8_t a)
{
	chan_conn *rx = x->st->rx, *e = NULL;
	chan_msg *m;
	size_t i = x->nep ? (a >> 3) % x->nep : 0;
	int r;

	switch (a % 7) {
	case 0:
		r11_drain_main(x);
		break;
	case 1:
		if (x->nep)
			r11_drain_ep(x, i);
		break;
	case 2:
		if (x->nep)
			ep_free(x, i);
		break;
	case 3:
		m = chan_msg_new(NULL);
		if (chan_msg_set_root(m, chan_channel_open(m, rx, &e)) == 0) {
			r = chan_conn_send(rx, m, 0);
			CHECK(r == 0 || hu_is_registry_error(r));
			if (r == 0 && x->nep < MAX_EP) {
				add_key(x, chan_conn_channel_id(e) ^ THEIRS);
				x->ep_closed[x->nep] = 0;
				x->ep_dead[x->nep] = 0;
				x->ep[x->nep++] = e;
				e = NULL;
			}
			chan_conn_free(e);
		}
		chan_msg_free(m);
		break;
	case 4:
		if (!x->nep)
			break;
		m = chan_msg_new(NULL);
		chan_msg_set_root(m, chan_int(m, a));
		r = (a & 0x40) ? chan_conn_send_last(x->ep[i], m, 0) : chan_conn_send(x->ep[i], m, 0);
		CHECK(r == 0 || hu_is_registry_error(r));
		chan_msg_free(m);
		break;
	case 5:
		r = chan_conn_send_epitaph(rx, CHAN_E_UNKNOWN_CHANNEL, "fuzz", 0);
		CHECK(r == 0 || hu_is_registry_error(r));
		break;
	default:
		r = chan_conn_hello(rx, (a & 0x40) ? CHAN_FEATURE_CHANNELS : 0, 0);
		CHECK(r == 0 || hu_is_registry_error(r));
		break;
	}
	peer_read(x);
}

static void
rev11_op(struct r11 *x, uint8_t op)
{
	chan_msg *m;
	chan_value *root, *l;
	uint8_t s, a, b, f;
	uint32_t ch;
	int fd;

	switch (op % 10) {
	case 0: { /* raw bytes, with descriptors */
		uint8_t ctl = arg(), len8 = arg();
		size_t len = (ctl & 0x80) ? (size_t)len8 * 16 : len8, nfds = ctl & 7;
		int fds[MAX_CHUNK_FDS], others[MAX_CHUNK_FDS];

		if (len > r11_size - r11_pos)
			len = r11_size - r11_pos;
		if (!len)
			nfds = 0;
		x->raw = 1;
		for (size_t k = 0; k < nfds; k++) {
			unsigned type = ((ctl >> 3) + k) % HU_NTYPES;

			CHECK((fds[k] = hu_make_fd((enum hu_fd_type)type, &others[k])) >= 0);
		}
		peer_read(x);
		write_chunk(x->st, r11_data + r11_pos, len, fds, nfds);
		for (size_t k = 0; k < nfds; k++) {
			close(fds[k]);
			if (others[k] >= 0)
				close(others[k]);
		}
		r11_pos += len;
		if (len > x->max_frame)
			x->max_frame = len; /* frames it completes are at most the input */
		break;
	}
	case 1:
		send_frame(x, hello_msg(x, arg()), 0x01, 0);
		break;
	case 2:
		a = arg();
		b = arg();
		m = chan_msg_new(NULL);
		root = chan_map(m);
		put(root, "op", chan_string(m, "epitaph"));
		if (a) {
			char code[4];

			snprintf(code, sizeof(code), "%u", a);
			put(root, "code", (b & 2) ? chan_string(m, code) : chan_int(m, a));
			if (!(b & 2))
				x->codes[a] = 1;
		}
		if (b & 1)
			put(root, "message", chan_string(m, "fuzz"));
		chan_msg_set_root(m, root);
		send_frame(x, m, 0x01, 0);
		break;
	case 3:
		s = arg();
		a = arg();
		f = arg();
		m = chan_msg_new(NULL);
		root = chan_map(m);
		put(root, "op", chan_string(m, "close"));
		if (a) {
			put(root, "code", chan_int(m, a));
			x->codes[a] = 1;
		}
		chan_msg_set_root(m, root);
		send_frame(x, m, (uint8_t)(((f & 1) ? 0x01 : 0x03) | (f & 0xf0)), sel_channel(x, s));
		break;
	case 4:
		s = arg();
		a = arg();
		m = chan_msg_new(NULL);
		root = chan_map(m);
		switch (a & 7) {
		case 0:
			put(root, "op", chan_string(m, "frob"));
			break;
		case 1:
			put(root, "op", chan_string(m, "frob"));
			put(root, "critical", chan_bool(m, true));
			break;
		case 2:
			put(root, "op", chan_string(m, "frob"));
			put(root, "critical", chan_int(m, 1));
			break;
		case 3:
			put(root, "op", chan_string(m, "hello"));
			put(root, "features", chan_map(m));
			break;
		case 4:
			put(root, "op", chan_string(m, "epitaph"));
			put(root, "code", chan_int(m, 5));
			x->codes[5] = 1;
			break;
		case 5:
			put(root, "op", chan_string(m, "close"));
			break;
		case 6:
			root = chan_int(m, 5); /* not a map */
			break;
		default:
			put(root, "op", chan_int(m, 5)); /* op not a string */
			break;
		}
		if ((a & 8) && chan_value_type(root) == CHAN_MAP)
			put(root, "h", fd_handle(m, &fd));
		chan_msg_set_root(m, root);
		send_frame(x, m, (a & 0x10) ? 0x03 : 0x01, sel_channel(x, s));
		break;
	case 5:
		s = arg();
		f = arg();
		b = arg();
		ch = sel_channel(x, s);
		m = chan_msg_new(NULL);
		{
			uint8_t bytes[63 * 8];

			memset(bytes, b, sizeof(bytes));
			root = chan_bytes(m, bytes, (size_t)(b & 63) * 8);
		}
		if (b & 0xc0) {
			l = chan_list(m);
			chan_list_append(l, root);
			if (b & 0x40)
				chan_list_append(l, fd_handle(m, &fd));
			if (b & 0x80) {
				chan_list_append(l, chan_channel_ref(m, x->peer_next));
				add_key(x, x->peer_next++);
			}
			root = l;
		}
		chan_msg_set_root(m, root);
		send_frame(x, m, f, ch);
		break;
	case 6: {
		uint32_t id;

		s = arg();
		a = arg();
		ch = sel_channel(x, s);
		m = chan_msg_new(NULL);
		l = chan_list(m);
		switch ((a >> 2) & 3) {
		case 0:
			id = x->peer_next;
			break;
		case 1:
			id = x->peer_next > 1 ? x->peer_next - 1 : 1;
			break;
		case 2:
			id = x->peer_next + 5;
			break;
		default:
			id = 0x7fffffff;
			break;
		}
		for (int k = 0; k <= (a & 3); k++) {
			chan_list_append(l, chan_channel_ref(m, id));
			add_key(x, id);
			if (id >= x->peer_next)
				x->peer_next = id + 1;
			if (id < 0x7fffffff)
				id++;
		}
		chan_msg_set_root(m, l);
		send_frame(x, m, (a & 0x10) ? 0x02 : 0, ch);
		break;
	}
	case 7:
		rx_action(x, arg());
		break;
	case 8:
		check_queues(x);
		break;
	default:
		peer_read(x);
		break;
	}
}

static void
rev11_run(struct state *st, const uint8_t *data, size_t size)
{
	static struct r11 x;
	uint8_t cfg = size > 1 ? data[1] : 0;

	memset(&x, 0, sizeof(x));
	x.st = st;
	x.peer_next = 1;
	x.max_queued = CHAN_DEFAULT_MAX_QUEUED_BYTES;
	st->r11 = &x;
	r11_data = data;
	r11_size = size;
	r11_pos = 2;
	switch ((cfg >> 4) & 3) {
	case 1:
		CHECK(chan_conn_set_channel_limits(st->rx, 2, 0) == 0);
		break;
	case 2:
		CHECK(chan_conn_set_channel_limits(st->rx, 0, 600) == 0);
		x.max_queued = 600;
		break;
	case 3:
		CHECK(chan_conn_set_channel_limits(st->rx, 6, 4096) == 0);
		x.max_queued = 4096;
		break;
	}
	if (cfg & 0x40)
		CHECK(chan_conn_hello(st->rx, 0, 0) == 0);
	if (cfg & 1)
		send_frame(&x, hello_msg(&x, (uint8_t)(((cfg >> 1) & 1) | ((cfg >> 1) & 2) |
						      ((cfg & 8) ? 4 : 0))),
			   0x01, 0);
	while (r11_pos < r11_size && !st->fatal)
		rev11_op(&x, arg());
	/* End of stream: the main stream reads to the end; then every
	 * endpoint drains and is freed. */
	peer_read(&x);
	close(st->wfd);
	if (!st->fatal) {
		for (int i = 0; i < 100000 && !st->fatal; i++) {
			chan_msg *m = NULL;
			int r = chan_conn_recv(st->rx, -1, &m);

			CHECK(r != CHAN_E_WOULD_BLOCK);
			if (!r11_result(&x, -1, r, m, NULL))
				CHECK(st->fatal);
		}
	}
	CHECK(st->fatal == CHAN_E_CONNECTION_CLOSED || st->fatal == CHAN_E_TRUNCATED ||
	      dead_error(st->rx, st->fatal));
	while (x.nep) {
		r11_drain_ep(&x, x.nep - 1);
		ep_free(&x, x.nep - 1);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct state st = {0};
	struct counting cnt = {0};
	struct chan_allocator alloc = {c_alloc, c_free, &cnt};
	struct chan_limits lim = {0};
	int sv[2], before;
	size_t i = 1;

	if (size < 1)
		return 0;
	before = hu_count_fds();
	CHECK(before >= 0);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	st.wfd = sv[0];
	st.rfd = sv[1];
	CHECK(chan_conn_move_from_fd(sv[1], &st.rx) == 0);
	switch (data[0] & 3) {
	case 1:
		lim = (struct chan_limits){64, 2, 2};
		break;
	case 2:
		lim = (struct chan_limits){0, 1, 0};
		break;
	case 3:
		lim = (struct chan_limits){4096, 0, 0};
		break;
	}
	if (data[0] & 3)
		CHECK(chan_conn_set_limits(st.rx, &lim) == 0);
	if (data[0] & 4)
		chan_conn_set_allocator(st.rx, &alloc);
	st.base_fds = hu_count_fds();

	if (data[0] & 8) {
		rev11_run(&st, data, size);
		chan_conn_free(st.rx);
		CHECK(cnt.live == 0);
		CHECK(hu_count_fds() == before);
		return 0;
	}
	while (i + 2 <= size && !st.fatal) {
		uint8_t ctl = data[i], len8 = data[i + 1];
		size_t len = (ctl & 0x80) ? (size_t)len8 * 16 : len8;
		size_t nfds = ctl & 7;
		int fds[MAX_CHUNK_FDS], others[MAX_CHUNK_FDS];

		i += 2;
		if (len > size - i)
			len = size - i;
		if (!len)
			nfds = 0;
		for (size_t k = 0; k < nfds; k++) {
			unsigned type = ((ctl >> 3) + k) & 7;

			others[k] = -1;
			if (type == SELF_TYPE) {
				fds[k] = st.rfd; /* borrowed, not closed below */
			} else {
				CHECK((fds[k] = hu_make_fd((enum hu_fd_type)type, &others[k])) >= 0);
				st.extra += others[k] >= 0 ? 2 : 1;
			}
		}
		write_chunk(&st, data + i, len, fds, nfds);
		for (size_t k = 0; k < nfds; k++) {
			if (fds[k] != st.rfd)
				close(fds[k]);
			if (others[k] >= 0)
				close(others[k]);
		}
		st.extra = 0;
		i += len;
		if ((ctl & 0x40) && !st.fatal)
			drain(&st, 0);
	}
	/* End of stream: the reader sees the rest, then CONNECTION_CLOSED or
	 * TRUNCATED. */
	close(st.wfd);
	st.base_fds--;
	if (!st.fatal)
		drain(&st, 1);
	CHECK(st.fatal == CHAN_E_CONNECTION_CLOSED || st.fatal == CHAN_E_TRUNCATED ||
	      dead_error(st.rx, st.fatal));
	chan_conn_free(st.rx);
	CHECK(cnt.live == 0);
	CHECK(hu_count_fds() == before);
	return 0;
}
