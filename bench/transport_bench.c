/*
 * transport_bench.c - chan connections between two processes against raw
 * sendmsg/recvmsg on a socketpair doing the same exchange.
 *
 * The parent is the client, a forked child the server.  Every figure is
 * taken with both processes pinned to one CPU ("1cpu") and pinned to two
 * different CPUs ("2cpu"): on a small VM placement decides latency.
 *
 * Implementations (impl column):
 *   chan      libchan, every message built per request/frame from C data
 *             (chan_msg_new, map, chan_handle dups each fd since the sender
 *             keeps its own; a reply_to connection is moved in with
 *             chan_conn_handle), sent with chan_conn_send, received with
 *             chan_conn_recv, then freed
 *   chan-write libchan's writer, every message written per request/frame
 *             straight into the frame (chan_writer: no tree; descriptors,
 *             the reply_to connection and the data bytes borrowed, so the
 *             payload is not copied before the gathered sendmsg), sent with
 *             chan_conn_send_writer; received like chan
 *   chan-pre  libchan, messages built once and sent again and again: the
 *             transport alone (framing, encode into the send buffer,
 *             decode, fd checks), no building
 *   raw       the limit: the same bytes (a pre-encoded chan frame of the
 *             same size) and the same descriptors with blocking
 *             sendmsg/recvmsg (MSG_CMSG_CLOEXEC), no encoding, no checks;
 *             the receiver reads exactly one frame and closes the fds
 *
 * Exchanges:
 *   rtt       request -> reply on the same connection (or through a fresh
 *             reply_to: the client makes a socketpair, sends one end in the
 *             request, waits for the reply on the other end; the server
 *             answers through the received end and closes it)
 *   oneway    the client streams frames; the server receives and frees
 *             them; the clock stops at the server's final ack.  With
 *             descriptors, the client stays at most `window` frames ahead
 *             (acks on the control socket) so descriptors in flight stay
 *             below RLIMIT_NOFILE (ETOOMANYREFS otherwise, for non-root).
 *
 * Request: {"seq": i, "method": "ping", "data": <size bytes>, "fds": [fd...],
 * "reply_to": <conn>} (members present as the case needs); reply:
 * {"seq": i, "ok": true}.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "chan.h"

enum impl { IMPL_CHAN, IMPL_CHAN_PRE, IMPL_RAW, IMPL_CHAN_WRITE };
static const char *const IMPL_NAMES[] = {"chan", "chan-pre", "raw", "chan-write"};
enum kind { K_RTT = 1, K_ONEWAY = 2, K_EXIT = 3 };

#define MAX_FDS 253
#define MAX_SIZE (16u * 1024u * 1024u)

struct spec {
	uint32_t kind, impl, nfds, reply_to;
	uint64_t size;  /* bytes of the "data" member, 0 = absent */
	uint64_t iters;
	uint64_t req_len, rep_len; /* frame sizes, for raw */
	uint64_t window; /* oneway: frames ahead of the acks */
};

/* The parent's and the child's ends. */
static chan_conn *cconn;  /* chan data connection */
static int rawfd = -1;    /* raw data socket */
static int ctlfd = -1;    /* control socket: specs and acks */
static int pool[MAX_FDS]; /* descriptors to send (parent) */
static uint8_t *data;     /* MAX_SIZE bytes of payload */
static uint8_t *rawbuf;   /* raw receive/send buffer */
static size_t rawbuf_cap;

/* ---- raw I/O ----
 * The baseline writes its own sendmsg/recvmsg and control messages on
 * purpose: it measures the kernel, so it must not go through libchan's
 * helpers (chan_sock_send/recv). */

static void
raw_send(int fd, const void *buf, size_t len, const int *fds, size_t nfds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
	} ctl;
	struct iovec iov = {(void *)buf, len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	size_t off;
	ssize_t n;

	if (nfds) {
		struct cmsghdr *cm;

		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
	}
	do
		n = sendmsg(fd, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	BENCH_CHECK(n > 0);
	for (off = (size_t)n; off < len; off += (size_t)n) {
		do
			n = send(fd, (const char *)buf + off, len - off, MSG_NOSIGNAL);
		while (n < 0 && errno == EINTR);
		BENCH_CHECK(n > 0);
	}
}

/* Read exactly len bytes (one frame); returns the number of descriptors,
 * which must all come with the first read. */
static size_t
raw_recv(int fd, void *buf, size_t len, int *fds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
	} ctl;
	size_t got = 0, nfds = 0;

	while (got < len) {
		struct iovec iov = {(char *)buf + got, len - got};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
				    .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf)};
		ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);

		if (n < 0 && errno == EINTR)
			continue;
		BENCH_CHECK(n > 0);
		BENCH_CHECK(!(mh.msg_flags & MSG_CTRUNC));
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
			size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);

			BENCH_CHECK(got == 0 && cm->cmsg_type == SCM_RIGHTS);
			memcpy(fds + nfds, CMSG_DATA(cm), k * sizeof(int));
			nfds += k;
		}
		got += (size_t)n;
	}
	return nfds;
}

static void
ctl_write(const void *p, size_t n)
{
	BENCH_CHECK(write(ctlfd, p, n) == (ssize_t)n);
}

static void
ctl_read(void *p, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t k = read(ctlfd, (char *)p + got, n - got);

		if (k < 0 && errno == EINTR)
			continue;
		BENCH_CHECK(k > 0);
		got += (size_t)k;
	}
}

static void
rawbuf_reserve(size_t n)
{
	if (rawbuf_cap < n) {
		free(rawbuf);
		rawbuf = malloc(n);
		BENCH_CHECK(rawbuf);
		rawbuf_cap = n;
		memset(rawbuf, 0x5a, n); /* fault it in once */
	}
}

/* ---- chan messages ---- */

/* reply_fd >= 0: a conn handle holding a dup of it; *reply_conn != NULL: the
 * connection moved into the message (chan_conn_handle, the reply_to idiom). */
static chan_msg *
build_request(uint64_t seq, const struct spec *s, const int *fds, int reply_fd,
	      chan_conn **reply_conn)
{
	chan_msg *m = chan_msg_new(NULL);
	chan_value *root = chan_map(m);

	chan_map_put(root, "seq", chan_int(m, (int64_t)seq));
	chan_map_put(root, "method", chan_string(m, "ping"));
	if (s->size)
		chan_map_put(root, "data", chan_bytes(m, data, s->size));
	if (s->nfds) {
		chan_value *l = chan_list(m);

		for (uint32_t k = 0; k < s->nfds; k++)
			chan_list_append(l, chan_handle_copy(m, CHAN_KIND_FD, fds[k]));
		chan_map_put(root, "fds", l);
	}
	if (reply_conn && *reply_conn)
		chan_map_put(root, "reply_to", chan_handle_move_conn(m, reply_conn));
	else if (reply_fd >= 0)
		chan_map_put(root, "reply_to", chan_handle_copy(m, CHAN_KIND_CONN, reply_fd));
	BENCH_CHECK(chan_msg_set_root(m, root) == 0);
	return m;
}

/* The same request written straight into a frame (chan-write): every
 * descriptor and the data borrowed; the caller keeps them open until the
 * send has returned. */
static void
write_request(chan_writer *w, uint64_t seq, const struct spec *s, const int *fds,
	      const chan_conn *reply_conn)
{
	chan_writer_reset(w);
	chan_writer_map_begin(w);
	chan_writer_key(w, "seq");
	chan_writer_int(w, (int64_t)seq);
	chan_writer_key(w, "method");
	chan_writer_string(w, "ping");
	if (s->size) {
		chan_writer_key(w, "data");
		chan_writer_bytes_borrow(w, data, s->size);
	}
	if (s->nfds) {
		chan_writer_key(w, "fds");
		chan_writer_list_begin(w);
		for (uint32_t k = 0; k < s->nfds; k++)
			chan_writer_handle_borrow(w, CHAN_KIND_FD, fds[k]);
		chan_writer_list_end(w);
	}
	if (reply_conn) {
		chan_writer_key(w, "reply_to");
		chan_writer_handle_borrow_conn(w, reply_conn);
	}
	chan_writer_map_end(w);
	BENCH_CHECK(chan_writer_error(w) == 0);
}

static chan_msg *
build_reply(int64_t seq)
{
	chan_msg *m = chan_msg_new(NULL);
	chan_value *root = chan_map(m);

	chan_map_put(root, "seq", chan_int(m, seq));
	chan_map_put(root, "ok", chan_bool(m, 1));
	BENCH_CHECK(chan_msg_set_root(m, root) == 0);
	return m;
}

/* The request as the server checks it: seq, size, handle count. */
static int64_t
check_request(chan_msg *req, const struct spec *s)
{
	chan_value *root = chan_msg_root(req), *v;
	int64_t seq = -1;

	if (s->size) {
		size_t n = 0;
		const void *raw = NULL;
		const uint8_t *p;

		BENCH_CHECK(chan_map_get_bytes(root, "data", &raw, &n) == 0);
		p = raw;
		BENCH_CHECK(n == s->size && p[0] == data[0] && p[n - 1] == data[n - 1]);
	}
	if (s->nfds) {
		int fd = -1;

		v = chan_map_get(root, "fds");
		BENCH_CHECK(chan_value_count(v) == s->nfds);
		BENCH_CHECK(chan_value_borrow_fd(chan_value_at(v, s->nfds - 1), &fd) == 0 && fd >= 0);
	}
	BENCH_CHECK(chan_map_get_int(root, "seq", &seq) == 0);
	return seq;
}

/* ---- the server (child) ---- */

static void
serve_rtt(const struct spec *s)
{
	chan_msg *pre_reply = s->impl == IMPL_CHAN_PRE ? build_reply(0) : NULL;
	int fds[MAX_FDS + 1];

	for (uint64_t i = 0; i < s->iters; i++) {
		if (s->impl == IMPL_RAW) {
			size_t n = raw_recv(rawfd, rawbuf, s->req_len, fds);
			int out = rawfd;

			BENCH_CHECK(n == s->nfds + s->reply_to);
			if (s->reply_to)
				out = fds[--n];
			for (size_t k = 0; k < n; k++)
				close(fds[k]);
			raw_send(out, rawbuf + s->req_len, s->rep_len, NULL, 0);
			if (s->reply_to)
				close(out);
		} else {
			chan_msg *req = NULL, *rep;
			chan_conn *rc = NULL;
			int64_t seq;

			BENCH_CHECK(chan_conn_recv(cconn, -1, &req) == 0);
			seq = check_request(req, s);
			if (s->reply_to)
				BENCH_CHECK(chan_conn_move_from_value(chan_map_get(chan_msg_root(req),
									      "reply_to"),
								 &rc) == 0);
			rep = pre_reply ? pre_reply : build_reply(seq);
			BENCH_CHECK(chan_conn_send(rc ? rc : cconn, rep, -1) == 0);
			if (!pre_reply)
				chan_msg_free(rep);
			chan_msg_free(req);
			chan_conn_free(rc);
		}
	}
	chan_msg_free(pre_reply);
}

static void
serve_oneway(const struct spec *s)
{
	uint64_t batch = s->window / 2;
	int fds[MAX_FDS];
	char ack = 'a';

	for (uint64_t i = 0; i < s->iters; i++) {
		if (s->impl == IMPL_RAW) {
			size_t n = raw_recv(rawfd, rawbuf, s->req_len, fds);

			BENCH_CHECK(n == s->nfds);
			for (size_t k = 0; k < n; k++)
				close(fds[k]);
		} else {
			chan_msg *req = NULL;

			BENCH_CHECK(chan_conn_recv(cconn, -1, &req) == 0);
			check_request(req, s);
			chan_msg_free(req);
		}
		if ((i + 1) % batch == 0)
			ctl_write(&ack, 1);
	}
	ack = 'd';
	ctl_write(&ack, 1);
}

static void
server(int cpu)
{
	struct spec s;
	struct chan_limits lim = {.max_payload = 2 * MAX_SIZE, .max_handles = MAX_FDS};

	bench_pin(cpu);
	BENCH_CHECK(chan_conn_set_limits(cconn, &lim) == 0);
	for (;;) {
		ctl_read(&s, sizeof(s));
		if (s.kind == K_EXIT)
			break;
		rawbuf_reserve(s.req_len + s.rep_len);
		if (s.kind == K_RTT)
			serve_rtt(&s);
		else
			serve_oneway(&s);
	}
}

/* ---- the client (parent) ---- */

struct run {
	struct spec s;
	chan_msg *pre_req;  /* chan-pre */
	chan_writer *w;     /* chan-write */
	uint8_t *raw_req;   /* raw: the bytes to send (a chan frame) */
};

static void
client_rtt(struct run *r)
{
	const struct spec *s = &r->s;
	int fds[MAX_FDS + 1];

	for (uint64_t i = 0; i < s->iters; i++) {
		if (s->impl == IMPL_RAW) {
			int sv[2] = {-1, -1}, in = rawfd;
			size_t n;

			memcpy(fds, pool, s->nfds * sizeof(int));
			if (s->reply_to) {
				BENCH_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
				fds[s->nfds] = sv[1];
				in = sv[0];
			}
			raw_send(rawfd, r->raw_req, s->req_len, fds, s->nfds + s->reply_to);
			if (s->reply_to)
				close(sv[1]);
			n = raw_recv(in, rawbuf, s->rep_len, fds);
			BENCH_CHECK(n == 0);
			if (s->reply_to)
				close(sv[0]);
		} else {
			chan_conn *rx = NULL, *tx = NULL;
			chan_msg *req, *rep = NULL;
			int64_t want = s->impl == IMPL_CHAN_PRE ? 0 : (int64_t)i;

			if (s->reply_to)
				BENCH_CHECK(chan_conn_pair(&rx, &tx) == 0);
			if (r->w) { /* chan-write: tx borrowed, closed once sent */
				write_request(r->w, i, s, pool, tx);
				BENCH_CHECK(chan_conn_send_writer(cconn, r->w, -1) == 0);
				tx = chan_conn_free(tx);
			} else {
				req = r->pre_req ? r->pre_req : build_request(i, s, pool, -1, &tx);
				BENCH_CHECK(!tx); /* moved into the request */
				BENCH_CHECK(chan_conn_send(cconn, req, -1) == 0);
				if (!r->pre_req)
					chan_msg_free(req); /* closes our copy of tx's socket */
			}
			BENCH_CHECK(chan_conn_recv(rx ? rx : cconn, -1, &rep) == 0);
			{
				int64_t got = -1;

				BENCH_CHECK(chan_map_get_int(chan_msg_root(rep), "seq", &got) == 0 &&
					    got == want);
			}
			chan_msg_free(rep);
			chan_conn_free(rx);
		}
	}
}

static void
client_oneway(struct run *r)
{
	const struct spec *s = &r->s;
	uint64_t batch = s->window / 2, acks = 0;
	char ack;

	for (uint64_t i = 0; i < s->iters; i++) {
		while (i - acks * batch >= s->window) {
			ctl_read(&ack, 1);
			BENCH_CHECK(ack == 'a');
			acks++;
		}
		if (s->impl == IMPL_RAW) {
			raw_send(rawfd, r->raw_req, s->req_len, pool, s->nfds);
		} else if (r->w) {
			write_request(r->w, i, s, pool, NULL);
			BENCH_CHECK(chan_conn_send_writer(cconn, r->w, -1) == 0);
		} else {
			chan_msg *req = r->pre_req ? r->pre_req : build_request(i, s, pool, -1, NULL);

			BENCH_CHECK(chan_conn_send(cconn, req, -1) == 0);
			if (!r->pre_req)
				chan_msg_free(req);
		}
	}
	for (;;) {
		ctl_read(&ack, 1);
		if (ack == 'd')
			break;
		BENCH_CHECK(ack == 'a');
	}
}

static void
run_n(void *ctx, uint64_t n)
{
	struct run *r = ctx;

	r->s.iters = n;
	ctl_write(&r->s, sizeof(r->s));
	if (r->s.kind == K_RTT)
		client_rtt(r);
	else
		client_oneway(r);
}

static uint64_t window_for(uint32_t nfds);

/* Prepare the request of a spec (chan-pre and raw) and its sizes. */
static void
run_init(struct run *r, enum kind kind, enum impl impl, uint64_t size, uint32_t nfds,
	 int reply_to)
{
	chan_msg *rep = build_reply(0);
	chan_msg *req;
	int sv[2] = {-1, -1};
	size_t len = 0;

	memset(r, 0, sizeof(*r));
	r->s.kind = kind;
	r->s.impl = impl;
	r->s.size = size;
	r->s.nfds = nfds;
	r->s.reply_to = (uint32_t)reply_to;
	r->s.window = window_for(nfds);
	if (reply_to)
		BENCH_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	req = build_request(0, &r->s, pool, sv[1], NULL);
	BENCH_CHECK(chan_encoded_size(req, &len) == 0);
	r->s.req_len = len;
	BENCH_CHECK(chan_encoded_size(rep, &len) == 0);
	r->s.rep_len = len;
	chan_msg_free(rep);
	if (impl == IMPL_RAW) {
		r->raw_req = malloc(r->s.req_len);
		BENCH_CHECK(r->raw_req);
		BENCH_CHECK(chan_encode(req, r->raw_req, r->s.req_len, &len) == 0);
	}
	if (impl == IMPL_CHAN_WRITE) {
		uint8_t *a = malloc(r->s.req_len), *b = malloc(r->s.req_len);
		size_t la = 0, lb = 0;
		chan_conn *rx = NULL, *tx = NULL;

		/* The writer's frame is the tree's, byte for byte (descriptor
		 * numbers are not in the bytes). */
		r->w = chan_writer_new(NULL);
		BENCH_CHECK(r->w && a && b);
		if (reply_to)
			BENCH_CHECK(chan_conn_pair(&rx, &tx) == 0);
		write_request(r->w, 0, &r->s, pool, tx);
		int wfds[MAX_FDS + 1];
		size_t wn = 0;

		BENCH_CHECK(chan_writer_frame(r->w, a, r->s.req_len, wfds, MAX_FDS + 1, &la, &wn) == 0);
		BENCH_CHECK(wn == nfds + (uint32_t)reply_to);
		BENCH_CHECK(chan_encode(req, b, r->s.req_len, &lb) == 0);
		BENCH_CHECK(la == lb && la == r->s.req_len && !memcmp(a, b, la));
		chan_conn_free(rx);
		chan_conn_free(tx);
		free(a);
		free(b);
	}
	if (impl == IMPL_CHAN_PRE && !reply_to) {
		r->pre_req = req;
		req = NULL;
	}
	chan_msg_free(req);
	if (reply_to) {
		close(sv[0]);
		close(sv[1]);
	}
	rawbuf_reserve(r->s.req_len + r->s.rep_len);
}

static void
run_free(struct run *r)
{
	chan_msg_free(r->pre_req);
	chan_writer_free(r->w);
	free(r->raw_req);
}

static uint64_t nofile_limit;

static uint64_t
window_for(uint32_t nfds)
{
	uint64_t w;

	if (nfds == 0)
		return UINT64_C(1) << 40; /* no flow control needed */
	w = nofile_limit / 4 / nfds;
	if (w > 4096)
		w = 4096;
	return w < 2 ? 2 : w;
}

/* ---- figures ---- */

static const char *pin_label;

/* Time the impls of one case interleaved and emit one line each. */
static void
measure(const char *group, const char *cas, enum kind kind, const enum impl *impls,
	size_t nimpl, uint64_t size, uint32_t nfds, int reply_to, int reps, double run_ms)
{
	struct run runs[4];
	uint64_t iters[4];
	double *ns[4];
	double saved_ms = bench_opt.run_ms;

	if (bench_opt.only && !strstr(cas, bench_opt.only))
		return;
	bench_opt.run_ms = run_ms;
	if (bench_opt.impl) { /* profiling one implementation */
		for (size_t k = 0; k < nimpl; k++) {
			if (!strcmp(IMPL_NAMES[impls[k]], bench_opt.impl)) {
				impls += k;
				nimpl = 1;
				break;
			}
		}
		if (nimpl != 1 || strcmp(IMPL_NAMES[impls[0]], bench_opt.impl))
			return;
	}
	for (size_t k = 0; k < nimpl; k++) {
		run_init(&runs[k], kind, impls[k], size, nfds, reply_to);
		iters[k] = bench_calibrate(run_n, &runs[k], 2, 1000000);
		ns[k] = calloc((size_t)reps, sizeof(double));
		BENCH_CHECK(ns[k]);
	}
	for (int rep = 0; rep < reps; rep++) {
		for (size_t k = 0; k < nimpl; k++) {
			uint64_t t0 = bench_now_ns();

			run_n(&runs[k], iters[k]);
			ns[k][rep] = (double)(bench_now_ns() - t0) / (double)iters[k];
		}
	}
	for (size_t k = 0; k < nimpl; k++) {
		double bytes = (double)runs[k].s.req_len +
			       (kind == K_RTT ? (double)runs[k].s.rep_len : 0);

		bench_emit(group, cas, IMPL_NAMES[impls[k]], kind == K_RTT ? "rtt" : "oneway",
			   pin_label, ns[k], reps, bytes, -1, iters[k]);
		free(ns[k]);
		run_free(&runs[k]);
	}
	bench_opt.run_ms = saved_ms;
}

static void
main_cases(void)
{
	static const enum impl cr[] = {IMPL_CHAN, IMPL_CHAN_WRITE, IMPL_RAW};
	static const enum impl cpr[] = {IMPL_CHAN, IMPL_CHAN_WRITE, IMPL_CHAN_PRE, IMPL_RAW};
	/* More, shorter runs than the codec: a cross-CPU wake-up on a shared
	 * VM is bursty, and the median of many short runs holds better. */
	int reps = bench_opt.smoke ? 1 : bench_opt.reps * 5 / 3;
	double ms = bench_opt.run_ms * 0.6;

	measure("transport", "rtt-plain", K_RTT, cpr, 4, 0, 0, 0, reps, ms);
	measure("transport", "rtt-fd1", K_RTT, cpr, 4, 0, 1, 0, reps, ms);
	measure("transport", "rtt-reply_to", K_RTT, cr, 3, 0, 0, 1, reps, ms);
	measure("transport", "oneway-fd1", K_ONEWAY, cpr, 4, 0, 1, 0, reps, ms);
	measure("transport", "oneway-fd253", K_ONEWAY, cpr, 4, 0, 253, 0, reps, ms);
	measure("transport", "stream-1MiB", K_ONEWAY, cpr, 4, 1u << 20, 0, 0, reps, ms);
	measure("transport", "stream-16MiB", K_ONEWAY, cpr, 4, 16u << 20, 0, 0, reps,
		ms * 2);
}

static void
scaling_cases(void)
{
	static const enum impl pr[] = {IMPL_CHAN_PRE, IMPL_RAW};
	static const uint32_t all_nfds[] = {0, 1, 2, 4, 8, 16, 32, 64, 128, 253};
	static const uint32_t smoke_nfds[] = {0, 1, 253};
	int reps = bench_opt.reps > 7 ? 7 : bench_opt.reps;
	double ms = bench_opt.run_ms * 0.6;
	char name[64];

	/* smoke: the code paths, not the curve */
	uint64_t max_size = bench_opt.smoke ? 4096 : MAX_SIZE;
	const uint32_t *nfds = bench_opt.smoke ? smoke_nfds : all_nfds;
	size_t n_nfds = bench_opt.smoke ? 3 : sizeof(all_nfds) / sizeof(all_nfds[0]);

	for (uint64_t size = 64; size <= max_size; size *= 4) {
		snprintf(name, sizeof(name), "rtt-size-%llu", (unsigned long long)size);
		measure("scale", name, K_RTT, pr, 2, size, 0, 0, reps, ms);
		snprintf(name, sizeof(name), "oneway-size-%llu", (unsigned long long)size);
		measure("scale", name, K_ONEWAY, pr, 2, size, 0, 0, reps, ms);
	}
	for (size_t k = 0; k < n_nfds; k++) {
		snprintf(name, sizeof(name), "rtt-fds-%u", nfds[k]);
		measure("scale", name, K_RTT, pr, 2, 0, nfds[k], 0, reps, ms);
		snprintf(name, sizeof(name), "oneway-fds-%u", nfds[k]);
		measure("scale", name, K_ONEWAY, pr, 2, 0, nfds[k], 0, reps, ms);
	}
}

static void
run_mode(const char *label, int server_cpu, int do_main, int do_scale)
{
	chan_conn *a = NULL, *b = NULL;
	int raw[2], ctl[2], status = 0;
	struct spec quit = {.kind = K_EXIT};
	pid_t pid;

	BENCH_CHECK(chan_conn_pair(&a, &b) == 0);
	BENCH_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, raw) == 0);
	BENCH_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) == 0);
	fflush(stdout);
	pid = fork();
	BENCH_CHECK(pid >= 0);
	if (pid == 0) {
		chan_conn_free(a);
		close(raw[0]);
		close(ctl[0]);
		cconn = b;
		rawfd = raw[1];
		ctlfd = ctl[1];
		server(server_cpu);
		chan_conn_free(b);
		_exit(0);
	}
	chan_conn_free(b);
	close(raw[1]);
	close(ctl[1]);
	cconn = a;
	rawfd = raw[0];
	ctlfd = ctl[0];
	pin_label = label;
	bench_pin(0);
	{
		struct chan_limits lim = {.max_payload = 2 * MAX_SIZE, .max_handles = MAX_FDS};

		BENCH_CHECK(chan_conn_set_limits(cconn, &lim) == 0);
	}
	if (do_main)
		main_cases();
	if (do_scale)
		scaling_cases();
	ctl_write(&quit, sizeof(quit));
	BENCH_CHECK(waitpid(pid, &status, 0) == pid);
	BENCH_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	chan_conn_free(a);
	close(raw[0]);
	close(ctl[0]);
	bench_pin(-1);
}

/* What a system call costs on this machine: the unit most transport
 * overheads are counted in (page-table isolation on a VM makes it large). */
static void
syscall_n(void *ctx, uint64_t n)
{
	int fd = *(int *)ctx;

	for (uint64_t k = 0; k < n; k++) {
		if (fd < 0) {
			(void)getppid();
		} else {
			int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);

			BENCH_CHECK(d >= 0);
			close(d);
		}
	}
}

static void
syscall_cost(void)
{
	int fds[2] = {-1, pool[0]};
	const char *names[2] = {"getppid", "dup+close"};

	for (int k = 0; k < 2; k++) {
		double ns[16];
		int reps = bench_opt.reps < 16 ? bench_opt.reps : 16;
		uint64_t n = bench_calibrate(syscall_n, &fds[k], 100, 10000000);

		if (bench_opt.iters) /* profiling runs: not this */
			return;
		for (int r = 0; r < reps; r++) {
			uint64_t t0 = bench_now_ns();

			syscall_n(&fds[k], n);
			ns[r] = (double)(bench_now_ns() - t0) / (double)n;
		}
		bench_emit("machine", "syscall", names[k], "call", "-", ns, reps, 0, -1, n);
	}
}

int
main(int argc, char **argv)
{
	int i = bench_parse_args(argc, argv), do_main = 0, do_scale = 0;
	struct rlimit rl;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	for (; i < argc; i++) {
		if (!strcmp(argv[i], "main")) {
			do_main = 1;
		} else if (!strcmp(argv[i], "scale")) {
			do_scale = 1;
		} else {
			fprintf(stderr, "usage: %s [--smoke] [--reps N] [--ms X] [--only CASE] [main] [scale]\n",
				argv[0]);
			return 2;
		}
	}
	if (!do_main && !do_scale)
		do_main = do_scale = 1;
	signal(SIGPIPE, SIG_IGN);
	BENCH_CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
		BENCH_CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
	}
	nofile_limit = rl.rlim_cur == RLIM_INFINITY ? 1u << 20 : rl.rlim_cur;
	BENCH_CHECK(nofile_limit >= 2 * MAX_FDS + 64);
	data = malloc(MAX_SIZE);
	BENCH_CHECK(data);
	for (uint32_t k = 0; k < MAX_SIZE; k++)
		data[k] = (uint8_t)(k * 131 + 17);
	for (int k = 0; k < MAX_FDS; k++) {
		pool[k] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		BENCH_CHECK(pool[k] >= 0);
	}
	printf("# transport: chan %s, %ld CPUs, RLIMIT_NOFILE %llu\n", chan_version(), ncpu,
	       (unsigned long long)nofile_limit);
	syscall_cost();
	run_mode("1cpu", 0, do_main, do_scale);
	if (ncpu > 1)
		run_mode("2cpu", 1, do_main, do_scale);
	else
		printf("# one CPU only: no 2cpu figures\n");
	for (int k = 0; k < MAX_FDS; k++)
		close(pool[k]);
	free(data);
	free(rawbuf);
	return 0;
}
