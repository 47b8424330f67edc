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
 * Invariants: every chan_conn_recv result is a registry error allowed for
 * a receive (a frame-scope error, a fatal one of SPEC.md §9.2, WOULD_BLOCK
 * while data is missing, SELF_SEND) or success; fatal errors stick; after
 * every completed frame (success, frame error or fatal error) the
 * connection holds no descriptor; every received descriptor is
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

struct state {
	chan_conn *rx;
	int wfd, rfd;
	int fatal;       /* the sticky error once seen */
	int base_fds;    /* fds open with rx idle (no frame in progress) */
	int extra;       /* fds the harness holds for a chunk being written */
	long frames, frame_errors;
};

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
	r = chan_decode(buf, len, NULL, 0, CHAN_DECODE_DETACHED, NULL, NULL, &m2, NULL);
	CHECK(r == 0);
	CHECK(hu_value_equal(chan_msg_root(m), chan_msg_root(m2)));
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
			CHECK(hu_count_fds() == st->base_fds + st->extra);
			continue;
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
		if (chan_error_scope(r) == CHAN_SCOPE_FATAL) {
			st->fatal = r;
			CHECK(hu_count_fds() == st->base_fds + st->extra);
			m = NULL;
			CHECK(chan_conn_recv(st->rx, 0, &m) == r && m == NULL);
			return;
		}
		st->frame_errors++;
		CHECK(hu_count_fds() == st->base_fds + st->extra);
	}
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
	      chan_error_scope(st.fatal) == CHAN_SCOPE_FATAL);
	chan_conn_free(st.rx);
	CHECK(cnt.live == 0);
	CHECK(hu_count_fds() == before);
	return 0;
}
