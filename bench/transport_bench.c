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
 *   sd-bus    the peer chan's reply_to idiom is compared with (issue 15):
 *             systemd's sd-bus, peer to peer on a socketpair of its own
 *             (no dbus-daemon: sd_bus_set_server on the child's end, a
 *             plain client on the parent's, SASL EXTERNAL once per run,
 *             unix fds negotiated).  Round trips only, no "data":
 *             rtt-plain is a method call Ping(x seq) answered by a method
 *             return (x seq, b true); rtt-fd1 the same with the
 *             descriptors as an "ah" argument (sd_bus_message_append dups
 *             each, as chan_handle_copy does); rtt-reply_to a Ping(x seq,
 *             h reply_to) sent without expecting a reply, answered by
 *             writing a reply of chan's reply frame's size (seq in its
 *             first 8 bytes) on the received socket, as raw does.  The
 *             server takes messages from sd_bus_process (no vtable) and
 *             answers with sd_bus_reply_method_return; the client uses
 *             sd_bus_call.
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
 *
 * rtt-channel (issue 13): "reply_to" is a channel handle (SPEC.md §18): the
 * client opens a channel in the request, the server answers on it with END
 * (chan_conn_send_last) and both free their endpoints; no descriptor moves.
 * Its raw row is a plain ping-pong of the same bytes (the request frame with
 * a 3-byte channel id, the reply frame), the floor chan is compared with.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "bench.h"
#include "chan.h"

enum impl { IMPL_CHAN, IMPL_CHAN_PRE, IMPL_RAW, IMPL_CHAN_WRITE, IMPL_SDBUS };
static const char *const IMPL_NAMES[] = {"chan", "chan-pre", "raw", "chan-write", "sd-bus"};
#define MAX_IMPLS 5
enum kind { K_RTT = 1, K_ONEWAY = 2, K_EXIT = 3 };

#define MAX_FDS 253
#define MAX_SIZE (16u * 1024u * 1024u)

enum { RT_NONE = 0, RT_CONN = 1, RT_CHANNEL = 2 }; /* spec.reply_to */

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
static sd_bus *sdbus;     /* sd-bus peer-to-peer connection (server in the child) */
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
 * connection moved into the message (chan_conn_handle, the reply_to idiom);
 * RT_CHANNEL: a channel opened on `on` (its endpoint in *ret_channel), or,
 * without a connection, a channel handle with a 3-byte id (for sizes). */
static chan_msg *
build_request_on(uint64_t seq, const struct spec *s, const int *fds, int reply_fd,
		 chan_conn **reply_conn, chan_conn *on, chan_conn **ret_channel)
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
	if (s->reply_to == RT_CHANNEL)
		chan_map_put(root, "reply_to",
			     on ? chan_channel_open(m, on, ret_channel) : chan_channel_ref(m, 16384));
	else if (reply_conn && *reply_conn)
		chan_map_put(root, "reply_to", chan_handle_move_conn(m, reply_conn));
	else if (reply_fd >= 0)
		chan_map_put(root, "reply_to", chan_handle_copy(m, CHAN_KIND_CONN, reply_fd));
	BENCH_CHECK(chan_msg_set_root(m, root) == 0);
	return m;
}

static chan_msg *
build_request(uint64_t seq, const struct spec *s, const int *fds, int reply_fd,
	      chan_conn **reply_conn);

static chan_msg *
build_request(uint64_t seq, const struct spec *s, const int *fds, int reply_fd,
	      chan_conn **reply_conn)
{
	return build_request_on(seq, s, fds, reply_fd, reply_conn, NULL, NULL);
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

/* ---- sd-bus ----
 * The peer chan's reply_to idiom is compared with (issue 15 target 2): a
 * D-Bus method call on a peer-to-peer connection, no daemon. */

#define SDBUS_PATH   "/chan/bench"
#define SDBUS_IFACE  "chan.Bench"
#define SDBUS_MEMBER "Ping"

static void
sdbus_fail(const char *file, int line, const char *what, int r)
{
	char msg[256];

	snprintf(msg, sizeof(msg), "%s: %s", what, strerror(-r));
	bench_fail(file, line, msg);
}

/* sd-bus calls return -errno on failure */
#define SDBUS_CHECK(call)                                                      \
	do {                                                                   \
		int sdbus_r_ = (call);                                         \
		if (sdbus_r_ < 0)                                              \
			sdbus_fail(__FILE__, __LINE__, #call, sdbus_r_);       \
	} while (0)

/* A peer-to-peer connection on fd (taken over: the bus closes it). */
static sd_bus *
sdbus_open(int fd, int is_server)
{
	sd_bus *bus = NULL;

	SDBUS_CHECK(sd_bus_new(&bus));
	SDBUS_CHECK(sd_bus_set_fd(bus, fd, fd));
	if (is_server) {
		sd_id128_t id;

		SDBUS_CHECK(sd_id128_randomize(&id));
		SDBUS_CHECK(sd_bus_set_server(bus, 1, id));
	}
	SDBUS_CHECK(sd_bus_negotiate_fds(bus, 1));
	SDBUS_CHECK(sd_bus_start(bus));
	return bus;
}

/* Ping(x seq [, ah fds] [, h reply_to]); with a reply_to no reply on the
 * bus is expected.  Every descriptor is dup'ed into the message (the
 * sender keeps its own, as with chan_handle_copy). */
static sd_bus_message *
sdbus_request(sd_bus *bus, uint64_t seq, const struct spec *s, const int *fds, int reply_fd)
{
	sd_bus_message *m = NULL;

	SDBUS_CHECK(sd_bus_message_new_method_call(bus, &m, NULL, SDBUS_PATH, SDBUS_IFACE,
						   SDBUS_MEMBER));
	SDBUS_CHECK(sd_bus_message_append(m, "x", (int64_t)seq));
	if (s->nfds) {
		SDBUS_CHECK(sd_bus_message_open_container(m, 'a', "h"));
		for (uint32_t k = 0; k < s->nfds; k++)
			SDBUS_CHECK(sd_bus_message_append_basic(m, 'h', &fds[k]));
		SDBUS_CHECK(sd_bus_message_close_container(m));
	}
	if (reply_fd >= 0) {
		SDBUS_CHECK(sd_bus_message_append(m, "h", reply_fd));
		SDBUS_CHECK(sd_bus_message_set_expect_reply(m, 0));
	}
	return m;
}

/* The next message on the bus, waiting for it. */
static sd_bus_message *
sdbus_next(sd_bus *bus)
{
	for (;;) {
		sd_bus_message *m = NULL;
		int r = sd_bus_process(bus, &m);

		SDBUS_CHECK(r);
		if (m)
			return m;
		if (r == 0)
			SDBUS_CHECK(sd_bus_wait(bus, UINT64_MAX));
	}
}

/* The server's side of one request: checks it like check_request (seq,
 * descriptor count), answers on the bus or through the reply_to socket,
 * and frees it (which closes the descriptors it brought). */
static void
sdbus_serve_one(sd_bus *bus, const struct spec *s)
{
	sd_bus_message *req = sdbus_next(bus);
	int64_t seq = -1;

	BENCH_CHECK(sd_bus_message_is_method_call(req, SDBUS_IFACE, SDBUS_MEMBER) > 0);
	SDBUS_CHECK(sd_bus_message_read(req, "x", &seq));
	if (s->nfds) {
		uint32_t n = 0;
		int fd = -1, r;

		SDBUS_CHECK(sd_bus_message_enter_container(req, 'a', "h"));
		while ((r = sd_bus_message_read_basic(req, 'h', &fd)) > 0)
			n++;
		SDBUS_CHECK(r);
		BENCH_CHECK(n == s->nfds && fd >= 0);
		SDBUS_CHECK(sd_bus_message_exit_container(req));
	}
	if (s->reply_to) {
		int out = -1;

		SDBUS_CHECK(sd_bus_message_read(req, "h", &out));
		BENCH_CHECK(out >= 0 && s->rep_len >= sizeof(seq));
		memcpy(rawbuf + s->req_len, &seq, sizeof(seq));
		raw_send(out, rawbuf + s->req_len, s->rep_len, NULL, 0);
	} else {
		SDBUS_CHECK(sd_bus_reply_method_return(req, "xb", seq, 1));
	}
	sd_bus_message_unref(req);
}

/* The client's side of one round trip. */
static void
sdbus_call_one(sd_bus *bus, uint64_t seq, const struct spec *s)
{
	sd_bus_message *req, *rep = NULL;
	int sv[2] = {-1, -1};
	int64_t got = -1;

	if (s->reply_to)
		BENCH_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	req = sdbus_request(bus, seq, s, pool, sv[1]);
	if (s->reply_to) {
		int fds[MAX_FDS];

		SDBUS_CHECK(sd_bus_send(bus, req, NULL));
		SDBUS_CHECK(sd_bus_flush(bus)); /* a no-op unless queued (first call: auth) */
		sd_bus_message_unref(req);      /* closes its dup of sv[1] */
		close(sv[1]);
		BENCH_CHECK(raw_recv(sv[0], rawbuf, s->rep_len, fds) == 0);
		memcpy(&got, rawbuf, sizeof(got));
		close(sv[0]);
	} else {
		sd_bus_error err = SD_BUS_ERROR_NULL;
		int ok = 0, r = sd_bus_call(bus, req, 0, &err, &rep);

		if (r < 0)
			fprintf(stderr, "sd_bus_call: %s\n", err.message ? err.message : "");
		SDBUS_CHECK(r);
		SDBUS_CHECK(sd_bus_message_read(rep, "xb", &got, &ok));
		BENCH_CHECK(ok);
		sd_bus_error_free(&err);
		sd_bus_message_unref(rep);
		sd_bus_message_unref(req);
	}
	BENCH_CHECK(got == (int64_t)seq);
}

/* The bytes sd-bus puts on the wire for a spec's request and reply: one
 * exchange between two buses on a socketpair in this process, the socket's
 * queue read with FIONREAD (the reply_to reply is the rep_len bytes the
 * server writes).  Also checks that unix fds are negotiated. */
static void
sdbus_wire_sizes(const struct spec *s, uint64_t *req_len, uint64_t *rep_len)
{
	sd_bus *cli, *srv;
	sd_bus_message *req;
	int q[2], n = 0;

	BENCH_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, q) == 0);
	cli = sdbus_open(q[0], 0);
	srv = sdbus_open(q[1], 1);
	for (int k = 0; k < 100 && !(sd_bus_is_ready(cli) > 0 && sd_bus_is_ready(srv) > 0); k++) {
		SDBUS_CHECK(sd_bus_process(cli, NULL));
		SDBUS_CHECK(sd_bus_process(srv, NULL));
	}
	BENCH_CHECK(sd_bus_is_ready(cli) > 0 && sd_bus_is_ready(srv) > 0);
	BENCH_CHECK(sd_bus_can_send(cli, SD_BUS_TYPE_UNIX_FD) > 0);
	BENCH_CHECK(sd_bus_can_send(srv, SD_BUS_TYPE_UNIX_FD) > 0);
	uint64_t cookie = 0;

	req = sdbus_request(cli, 0, s, pool, s->reply_to ? pool[0] : -1);
	/* a cookie: with NULL sd_bus_send marks the call "no reply expected" */
	SDBUS_CHECK(sd_bus_send(cli, req, &cookie));
	SDBUS_CHECK(sd_bus_flush(cli));
	sd_bus_message_unref(req);
	BENCH_CHECK(ioctl(q[1], FIONREAD, &n) == 0 && n > 0);
	*req_len = (uint64_t)n;
	if (s->reply_to) {
		*rep_len = s->rep_len;
	} else {
		sd_bus_message *m = sdbus_next(srv);

		SDBUS_CHECK(sd_bus_reply_method_return(m, "xb", (int64_t)0, 1));
		SDBUS_CHECK(sd_bus_flush(srv));
		sd_bus_message_unref(m);
		BENCH_CHECK(ioctl(q[0], FIONREAD, &n) == 0 && n > 0);
		*rep_len = (uint64_t)n;
	}
	sd_bus_flush_close_unref(cli); /* closes q[0] */
	sd_bus_flush_close_unref(srv); /* closes q[1] */
}

/* Descriptors open in this process; every one it opened itself must be
 * close-on-exec (those inherited at start, stdio and whatever the caller
 * left open, are not ours to judge). */
#define CENSUS_MAX 4096
static uint8_t inherited[CENSUS_MAX];

static int
fd_census(int at_start)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	BENCH_CHECK(d);
	while ((e = readdir(d))) {
		int fd;

		if (e->d_name[0] == '.')
			continue;
		fd = atoi(e->d_name);
		if (fd == dirfd(d))
			continue;
		n++;
		if (at_start && fd < CENSUS_MAX)
			inherited[fd] = 1;
		else if (fd >= CENSUS_MAX || !inherited[fd])
			BENCH_CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	}
	closedir(d);
	return n;
}

/* ---- the server (child) ---- */

static void
serve_rtt(const struct spec *s)
{
	chan_msg *pre_reply = s->impl == IMPL_CHAN_PRE ? build_reply(0) : NULL;
	int fds[MAX_FDS + 1];

	for (uint64_t i = 0; i < s->iters; i++) {
		if (s->impl == IMPL_SDBUS) {
			sdbus_serve_one(sdbus, s);
		} else if (s->impl == IMPL_RAW) {
			size_t n = raw_recv(rawfd, rawbuf, s->req_len, fds);
			int out = rawfd;

			BENCH_CHECK(n == s->nfds + (s->reply_to == RT_CONN));
			if (s->reply_to == RT_CONN)
				out = fds[--n];
			for (size_t k = 0; k < n; k++)
				close(fds[k]);
			raw_send(out, rawbuf + s->req_len, s->rep_len, NULL, 0);
			if (s->reply_to == RT_CONN)
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
			if (s->reply_to == RT_CHANNEL) /* one frame: the reply, END */
				BENCH_CHECK(chan_conn_send_last(rc, rep, -1) == 0);
			else
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

	int nfds_open = fd_census(0);

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
		if (bench_opt.smoke) /* every descriptor received was closed */
			BENCH_CHECK(fd_census(0) == nfds_open);
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
		if (s->impl == IMPL_SDBUS) {
			sdbus_call_one(sdbus, i, s);
		} else if (s->impl == IMPL_RAW) {
			int sv[2] = {-1, -1}, in = rawfd;
			size_t n;

			memcpy(fds, pool, s->nfds * sizeof(int));
			if (s->reply_to == RT_CONN) {
				BENCH_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
				fds[s->nfds] = sv[1];
				in = sv[0];
			}
			raw_send(rawfd, r->raw_req, s->req_len, fds,
				 s->nfds + (s->reply_to == RT_CONN));
			if (s->reply_to == RT_CONN)
				close(sv[1]);
			n = raw_recv(in, rawbuf, s->rep_len, fds);
			BENCH_CHECK(n == 0);
			if (s->reply_to == RT_CONN)
				close(sv[0]);
		} else {
			chan_conn *rx = NULL, *tx = NULL;
			chan_msg *req, *rep = NULL;
			int64_t want = s->impl == IMPL_CHAN_PRE ? 0 : (int64_t)i;

			if (s->reply_to == RT_CONN)
				BENCH_CHECK(chan_conn_pair(&rx, &tx) == 0);
			if (s->reply_to == RT_CHANNEL) {
				req = build_request_on(i, s, pool, -1, NULL, cconn, &rx);
				BENCH_CHECK(rx && chan_conn_send(cconn, req, -1) == 0);
				chan_msg_free(req);
			} else if (r->w) { /* chan-write: tx borrowed, closed once sent */
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
	if (reply_to == RT_CONN)
		BENCH_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	req = build_request(0, &r->s, pool, sv[1], NULL);
	BENCH_CHECK(chan_encoded_size(req, &len) == 0);
	r->s.req_len = len;
	BENCH_CHECK(chan_encoded_size(rep, &len) == 0);
	r->s.rep_len = len;
	chan_msg_free(rep);
	if (impl == IMPL_SDBUS) {
		/* round trips only; the reply_to reply is chan's reply's size */
		BENCH_CHECK(kind == K_RTT && size == 0);
		sdbus_wire_sizes(&r->s, &r->s.req_len, &r->s.rep_len);
	}
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
	if (reply_to == RT_CONN) {
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
	struct run runs[MAX_IMPLS];
	uint64_t iters[MAX_IMPLS];
	double *ns[MAX_IMPLS];
	double saved_ms = bench_opt.run_ms;

	if (bench_opt.only && !strstr(cas, bench_opt.only))
		return;
	BENCH_CHECK(nimpl <= MAX_IMPLS);
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
	static const enum impl cpr[] = {IMPL_CHAN, IMPL_CHAN_WRITE, IMPL_CHAN_PRE, IMPL_RAW};
	/* channels: the tree API opens them (the writer cannot) */
	static const enum impl cr[] = {IMPL_CHAN, IMPL_RAW};
	/* the round trips sd-bus is compared in (issue 15 target 2) */
	static const enum impl crs[] = {IMPL_CHAN, IMPL_CHAN_WRITE, IMPL_RAW, IMPL_SDBUS};
	static const enum impl cprs[] = {IMPL_CHAN, IMPL_CHAN_WRITE, IMPL_CHAN_PRE, IMPL_RAW,
					 IMPL_SDBUS};
	/* More, shorter runs than the codec: a cross-CPU wake-up on a shared
	 * VM is bursty, and the median of many short runs holds better. */
	int reps = bench_opt.smoke ? 1 : bench_opt.reps * 5 / 3;
	double ms = bench_opt.run_ms * 0.6;

	measure("transport", "rtt-plain", K_RTT, cprs, 5, 0, 0, 0, reps, ms);
	measure("transport", "rtt-fd1", K_RTT, cprs, 5, 0, 1, 0, reps, ms);
	measure("transport", "rtt-reply_to", K_RTT, crs, 4, 0, 0, RT_CONN, reps, ms);
	measure("transport", "rtt-channel", K_RTT, cr, 2, 0, 0, RT_CHANNEL, reps, ms);
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
	int raw[2], ctl[2], bus[2], status = 0, nfds_open = fd_census(0);
	struct spec quit = {.kind = K_EXIT};
	pid_t pid;

	BENCH_CHECK(chan_conn_pair(&a, &b) == 0);
	BENCH_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, raw) == 0);
	BENCH_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) == 0);
	BENCH_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, bus) == 0);
	fflush(stdout);
	pid = fork();
	BENCH_CHECK(pid >= 0);
	if (pid == 0) {
		chan_conn_free(a);
		close(raw[0]);
		close(ctl[0]);
		close(bus[0]);
		cconn = b;
		rawfd = raw[1];
		ctlfd = ctl[1];
		/* sd-bus objects must not cross a fork: each side makes its own */
		sdbus = sdbus_open(bus[1], 1);
		server(server_cpu);
		sdbus = sd_bus_flush_close_unref(sdbus);
		chan_conn_free(b);
		_exit(0);
	}
	chan_conn_free(b);
	close(raw[1]);
	close(ctl[1]);
	close(bus[1]);
	cconn = a;
	rawfd = raw[0];
	ctlfd = ctl[0];
	sdbus = sdbus_open(bus[0], 0);
	pin_label = label;
	bench_pin(0);
	{
		struct chan_limits lim = {.max_payload = 2 * MAX_SIZE, .max_handles = MAX_FDS};

		BENCH_CHECK(chan_conn_set_limits(cconn, &lim) == 0);
	}
	/* Both ends are this program: announce revision 1.1, requiring
	 * channels (usable at once; the server answers on its own). Frames
	 * that use no 1.1 feature are unchanged by it. */
	BENCH_CHECK(chan_conn_hello(cconn, CHAN_FEATURE_CHANNELS, -1) == 0);
	if (do_main)
		main_cases();
	if (do_scale)
		scaling_cases();
	ctl_write(&quit, sizeof(quit));
	BENCH_CHECK(waitpid(pid, &status, 0) == pid);
	BENCH_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	sdbus = sd_bus_flush_close_unref(sdbus);
	chan_conn_free(a);
	close(raw[0]);
	close(ctl[0]);
	BENCH_CHECK(fd_census(0) == nfds_open); /* nothing leaked */
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
	fd_census(1);
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
