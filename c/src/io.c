/*
 * io.c - frames over a connection (SPEC.md §10.2-§10.5, §11.2): sending,
 * receiving, and the deadlines both wait by.
 *
 * Blocking.  The socket is never made O_NONBLOCK (the flag belongs to the
 * open file description, which other processes may share).  With timeout -1
 * a call makes plain blocking recvmsg/sendmsg calls; with a finite timeout
 * it passes MSG_DONTWAIT and waits in poll(2) until its deadline.  (Should
 * someone else set O_NONBLOCK on the socket, the blocking path sees EAGAIN
 * and waits in poll(2) as well.)
 *
 * Errors.  Fatal receive errors (SPEC.md §9.2) stick: every later receive
 * returns the same code.  A send that fails once a frame is committed (its
 * first byte written) leaves the stream unusable; that error sticks for
 * sends.  The two sides stick separately, so a peer that closed its writing
 * side can still be written to.
 *
 * Receiving a frame: the header is read and checked once (chan__header_read),
 * the payload is read into the same buffer, the codec validates it
 * (chan__decode_payload), and handles.c gives the frame's descriptors to the
 * message in one pass (kinds and the self-send rule).  A read takes the rest
 * of the current frame and reads ahead into the next ones (one recvmsg per
 * small frame); the descriptors a read returns belong to the last frame
 * whose first byte it returned, and a read that returns descriptors with no
 * frame's first byte is fatal (SPEC.md §10.3).
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "conn.h"
#include "platform.h"

/* A buffer larger than this is released once this many frames in a row
 * used less than a quarter of it: a stream of large frames keeps its buffer
 * (no fresh pages to fault in for every frame), an idle connection does not
 * hold a large one for ever. */
#define KEEP_BUFFER (256u * 1024u)
#define SHRINK_AFTER 16u
/* A frame's receive buffer starts at most this large and grows sixteenfold
 * each time the bytes that arrived fill it: a peer makes us reserve at most
 * 16 times what it sent (plus 64 KiB), and a 16 MiB frame costs two
 * regrowths, whose copies move about 1 MiB. */
#define GROW_MIN (64u * 1024u)
#define GROW_FACTOR 16u
/* How far a read of a small frame reads ahead into the frames after it. */
#define READ_AHEAD 4096u

static inline uint32_t
le32u(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- deadlines ---- */

void
chan__deadline_start(struct chan__deadline *d, int timeout_ms)
{
	d->timeout_ms = timeout_ms < 0 ? -1 : timeout_ms;
	if (d->timeout_ms > 0) {
		clock_gettime(CLOCK_MONOTONIC, &d->at);
		d->at.tv_sec += timeout_ms / 1000;
		d->at.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
		if (d->at.tv_nsec >= 1000000000L) {
			d->at.tv_sec++;
			d->at.tv_nsec -= 1000000000L;
		}
	}
}

static int
deadline_expired_error(const struct chan__deadline *d)
{
	return d->timeout_ms == 0 ? CHAN_E_WOULD_BLOCK : CHAN_E_TIMEOUT;
}

/* Milliseconds left, rounded up; -1 for forever; 0 when expired. */
static int
deadline_left(const struct chan__deadline *d)
{
	struct timespec now;
	int64_t ns;

	if (d->timeout_ms <= 0)
		return d->timeout_ms;
	clock_gettime(CLOCK_MONOTONIC, &now);
	ns = (int64_t)(d->at.tv_sec - now.tv_sec) * 1000000000 +
	     (d->at.tv_nsec - now.tv_nsec);
	if (ns <= 0)
		return 0;
	return (int)((ns + 999999) / 1000000);
}

int
chan__wait_fd(int fd, short events, const struct chan__deadline *d)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = events};
		int left = deadline_left(d);
		int n;

		if (left == 0)
			return deadline_expired_error(d);
		n = poll(&p, 1, left);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return CHAN_E_SYSTEM;
		}
		if (n == 0)
			continue; /* deadline_left decides */
		if (p.revents & POLLNVAL) {
			errno = EBADF;
			return CHAN_E_SYSTEM;
		}
		return 0; /* ready, or an error/hangup the next call reports */
	}
}

int
chan__lock(pthread_mutex_t *m, const struct chan__deadline *d)
{
	int r;

	if (d->timeout_ms < 0) {
		r = pthread_mutex_lock(m);
	} else if (d->timeout_ms == 0) {
		r = pthread_mutex_trylock(m);
		if (r == EBUSY)
			return CHAN_E_WOULD_BLOCK;
	} else {
		r = pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &d->at);
		if (r == ETIMEDOUT)
			return CHAN_E_TIMEOUT;
	}
	if (r) {
		errno = r;
		return CHAN_E_SYSTEM;
	}
	return 0;
}

/* Grow *buf to need bytes through the connection's allocator, keeping its
 * first `keep` bytes.  With the default allocator this is realloc, which
 * moves large buffers by remapping pages, not by copying them. */
static int
grow(chan_conn *c, unsigned char **buf, size_t *cap, size_t need, size_t keep)
{
	unsigned char *p;

	if (*cap >= need)
		return 0;
	if (!c->allocator.alloc) {
		if (!(p = realloc(*buf, need)))
			return CHAN_E_NO_MEMORY;
		*buf = p;
		*cap = need;
		return 0;
	}
	p = chan__alloc(&c->allocator, need);
	if (!p)
		return CHAN_E_NO_MEMORY;
	if (keep)
		memcpy(p, *buf, keep);
	chan__free(&c->allocator, *buf);
	*buf = p;
	*cap = need;
	return 0;
}

/* After a frame that used `used` bytes of the buffer. */
static void
trim(chan_conn *c, unsigned char **buf, size_t *cap, size_t used, unsigned *idle)
{
	if (*cap <= KEEP_BUFFER || used >= *cap / 4) {
		*idle = 0;
		return;
	}
	if (++*idle >= SHRINK_AFTER) {
		chan__free(&c->allocator, *buf);
		*buf = NULL;
		*cap = 0;
		*idle = 0;
	}
}

/* ---- self-send (SPEC.md §10.6) ---- */

/* An error from chan_plat_peer_id that will not change by asking again:
 * the kernel has no sock_diag for AF_UNIX, or cannot name this socket. */
static int
peer_lookup_final(int err)
{
	return err == EPROTONOSUPPORT || err == EAFNOSUPPORT || err == EINVAL ||
	       err == ENOENT || err == EOPNOTSUPP || err == EOVERFLOW;
}

/*
 * Does the frame carry, as a conn handle, this connection's own socket or
 * its peer's (SPEC.md §10.6 rule 1)?  table[] is the frame's handle table
 * from the encoder, with each conn handle's socket identity when known (else
 * one fstat).  0: no;
 * CHAN_E_SELF_SEND: yes; CHAN_E_SYSTEM: an identity could not be had, and
 * the check fails closed.
 */
static int
check_self_send(chan_conn *c, const struct chan__wire_handle *table, size_t n)
{
	uint64_t own = 0;

	for (size_t i = 0; i < n; i++) {
		uint64_t id = table[i].socket_id;

		if (table[i].kind != CHAN_KIND_CONN)
			continue;
		if (id & CHAN__BIRTH_TAG) { /* an end of a pair made here */
			uint64_t birth = id & ~CHAN__BIRTH_TAG;

			if (c->fresh_pair && birth == c->birth)
				return CHAN_E_SELF_SEND; /* c itself, or its peer */
			if (birth > c->birth)
				continue; /* made after c: neither c nor its peer */
			id = 0; /* older: ask the kernel */
		}
		if (!own && !(own = chan__conn_id(c)))
			return CHAN_E_SYSTEM;
		if (!id && chan_plat_socket_id(table[i].fd, &id) < 0)
			return CHAN_E_SYSTEM;
		if (id == own)
			return CHAN_E_SELF_SEND;
		if (c->peer_state == PEER_UNKNOWN) {
			if (chan_plat_peer_id(c->fd, own, &c->peer_id) == 0)
				c->peer_state = PEER_KNOWN;
			else if (peer_lookup_final(errno))
				c->peer_state = PEER_UNAVAILABLE;
			/* else: a passing failure; ask again next time */
		}
		if (c->peer_state == PEER_KNOWN && id == c->peer_id)
			return CHAN_E_SELF_SEND;
	}
	return 0;
}

/* ---- sending (SPEC.md §10.2) ---- */

static int
send_fatal(chan_conn *c, int err)
{
	c->send_err = err;
	return err;
}

static void
pending_done(chan_conn *c)
{
	trim(c, &c->sbuf, &c->scap, c->slen, &c->sbuf_idle);
	c->slen = c->soff = 0;
	atomic_store(&c->pending, 0);
}

/* Write the committed remainder with plain sends (never fds again). */
static int
flush_locked(chan_conn *c, const struct chan__deadline *d)
{
	while (c->soff < c->slen) {
		struct iovec iov = {c->sbuf + c->soff, c->slen - c->soff};
		ssize_t n = chan__sock_sendv(c->fd, &iov, 1, NULL, 0, CHAN__DONTWAIT(d));
		int r;

		if (n >= 0) {
			c->soff += (size_t)n;
			continue;
		}
		if (n != CHAN_E_WOULD_BLOCK) /* mid-frame: the stream cannot be repaired */
			return send_fatal(c, n == CHAN_E_CONNECTION_CLOSED ? (int)n : CHAN_E_SYSTEM);
		if ((r = chan__wait_fd(c->fd, POLLOUT, d)) < 0)
			return r;
	}
	pending_done(c);
	return 0;
}

/* Drop n written bytes from the front of the pieces. */
static void
advance(struct iovec **iov, size_t *niov, size_t n)
{
	while (n && *niov) {
		size_t k = n < (*iov)->iov_len ? n : (*iov)->iov_len;

		(*iov)->iov_base = (char *)(*iov)->iov_base + k;
		(*iov)->iov_len -= k;
		n -= k;
		if (!(*iov)->iov_len) {
			++*iov;
			--*niov;
		}
	}
	while (*niov && !(*iov)->iov_len) { /* empty pieces */
		++*iov;
		--*niov;
	}
}

/*
 * Send one frame of len bytes, given as pieces, with its handle table: the
 * rules of chan_conn_send (SPEC.md §10.2).  The pieces are written in place
 * (one gathered sendmsg, then more if the socket takes less); only when the
 * deadline passes with the frame committed is the remainder copied into
 * sbuf (unless in_sbuf: the pieces are sbuf itself).  Under the send lock.
 */
static int
send_frame_locked(chan_conn *c, struct iovec *iov, size_t niov, size_t len, bool in_sbuf,
		  const struct chan__wire_handle *table, size_t nfds,
		  const struct chan__deadline *d)
{
	int fds[CHAN_HARD_MAX_HANDLES];
	size_t written = 0;
	int r;

	for (size_t i = 0; i < nfds; i++) {
		if (table[i].fd < 0) /* a handle whose fd was moved out */
			return CHAN_E_INVALID_ARGUMENT;
		fds[i] = table[i].fd;
	}
	if (nfds && (r = check_self_send(c, table, nfds)) < 0)
		return r;
	/* The first write: all of the frame offered, every fd on its first
	 * byte.  Nothing written: nothing sent, not even on error. */
	for (;;) {
		ssize_t n = chan__sock_sendv(c->fd, iov, niov, fds, nfds, CHAN__DONTWAIT(d));

		if (n >= 0) {
			written = (size_t)n;
			break;
		}
		if (n == CHAN_E_CONNECTION_CLOSED)
			return send_fatal(c, (int)n);
		if (n != CHAN_E_WOULD_BLOCK)
			return (int)n;
		if ((r = chan__wait_fd(c->fd, POLLOUT, d)) < 0)
			return r;
	}
	/* Committed: from here on the frame is the connection's to finish. */
	advance(&iov, &niov, written);
	while (niov) {
		ssize_t n = chan__sock_sendv(c->fd, iov, niov, NULL, 0, CHAN__DONTWAIT(d));

		if (n >= 0) {
			written += (size_t)n;
			advance(&iov, &niov, (size_t)n);
			continue;
		}
		if (n != CHAN_E_WOULD_BLOCK)
			return send_fatal(c, n == CHAN_E_CONNECTION_CLOSED ? (int)n : CHAN_E_SYSTEM);
		if (chan__wait_fd(c->fd, POLLOUT, d) < 0)
			break; /* deadline: keep the rest */
	}
	if (written == len) {
		if (in_sbuf)
			trim(c, &c->sbuf, &c->scap, len, &c->sbuf_idle);
		return 0;
	}
	if (!in_sbuf) {
		size_t o = 0;

		/* The caller's pieces must not be needed after we return. */
		if ((r = grow(c, &c->sbuf, &c->scap, len - written, 0)) < 0)
			return send_fatal(c, r); /* committed, and cannot be kept */
		for (size_t i = 0; i < niov; i++) {
			memcpy(c->sbuf + o, iov[i].iov_base, iov[i].iov_len);
			o += iov[i].iov_len;
		}
		c->slen = len - written;
		c->soff = 0;
	} else {
		c->slen = len;
		c->soff = written;
	}
	atomic_store(&c->pending, 1);
	return 0;
}

/* Write the outbox (control frames: a HELLO answer, closes, an epitaph).
 * Under the send lock with nothing pending.  d NULL: what goes without
 * blocking, the rest of a started frame kept as the committed remainder;
 * else everything, by d's deadline. */
int
chan__outbox_write_locked(chan_conn *c, const struct chan__deadline *d)
{
	unsigned char *buf;
	size_t len, off = 0;
	int r = 0;

	pthread_mutex_lock(&c->mux_lock);
	buf = c->outbox;
	len = c->outlen;
	c->outbox = NULL;
	c->outlen = c->outcap = 0;
	pthread_mutex_unlock(&c->mux_lock);
	if (!len) {
		chan__free(&c->allocator, buf);
		return 0;
	}
	while (off < len) {
		struct iovec iov = {buf + off, len - off};
		ssize_t n = chan__sock_sendv(c->fd, &iov, 1, NULL, 0, !d || CHAN__DONTWAIT(d));

		if (n >= 0) {
			off += (size_t)n;
			continue;
		}
		if (n != CHAN_E_WOULD_BLOCK) {
			r = send_fatal(c, n == CHAN_E_CONNECTION_CLOSED ? (int)n : CHAN_E_SYSTEM);
			break;
		}
		if (d && (r = chan__wait_fd(c->fd, POLLOUT, d)) == 0)
			continue;
		/* Control frames carry no descriptors, so any byte boundary
		 * is a place to stop: what is left becomes the committed
		 * remainder, written before any later frame. */
		if ((r = grow(c, &c->sbuf, &c->scap, len - off, 0)) < 0) {
			r = send_fatal(c, r);
			break;
		}
		memcpy(c->sbuf, buf + off, len - off);
		c->slen = len - off;
		c->soff = 0;
		atomic_store(&c->pending, 1);
		r = d ? r : 0;
		break;
	}
	chan__free(&c->allocator, buf);
	return r;
}

/* The common start of a send: the lock, a sticky error, an earlier
 * committed frame first, then control frames waiting in the outbox. */
static int
send_begin(chan_conn *c, const struct chan__deadline *d)
{
	int r = chan__lock(&c->send_lock, d);

	if (r < 0)
		return r;
	if (c->send_err)
		r = c->send_err;
	else if (c->slen)
		r = flush_locked(c, d);
	if (r == 0 && c->outlen) /* racy peek; the write takes the lock */
		r = chan__outbox_write_locked(c, d);
	if (r == 0 && c->slen) /* an outbox that did not go out whole */
		r = flush_locked(c, d);
	if (r == 0 && c->send_sealed)
		r = CHAN_E_CONNECTION_CLOSED;
	if (r < 0)
		pthread_mutex_unlock(&c->send_lock);
	return r;
}

/* Revision 1.1 header fields of a frame about to be sent. */
static void
patch_header(uint8_t *h, uint8_t flags, uint32_t channel)
{
	h[5] = flags;
	h[8] = (uint8_t)channel;
	h[9] = (uint8_t)(channel >> 8);
	h[10] = (uint8_t)(channel >> 16);
	h[11] = (uint8_t)(channel >> 24);
}

int
chan__send_msg(chan_conn *c, struct chan__chan *ch, const chan_msg *msg, bool last,
	       int timeout_ms)
{
	struct chan__wire_handle table[CHAN_HARD_MAX_HANDLES];
	struct chan__deadline d;
	struct iovec iov;
	uint32_t nfds = 0, channel = 0;
	uint8_t flags = 0;
	size_t len = 0;
	bool channels;
	int r;

	chan__deadline_start(&d, timeout_ms);
	if ((r = send_begin(c, &d)) < 0)
		return r;
	if ((r = chan__frame_route(c, ch, last, &flags, &channel)) < 0)
		goto out;
	channels = chan__msg_channels(msg) != NULL;
	if (channels && (r = chan__channels_assign(c, msg)) < 0)
		goto out;
	/* Sized once, written once, straight into the send buffer. */
	if ((r = chan__encode_size(msg, &c->enc, &len, &nfds)) == 0 &&
	    (r = grow(c, &c->sbuf, &c->scap, len, 0)) == 0) {
		chan__encode_write(msg, &c->enc, c->sbuf, table);
		if (flags || channel)
			patch_header(c->sbuf, flags, channel);
		iov = (struct iovec){c->sbuf, len};
		r = send_frame_locked(c, &iov, 1, len, true, table, nfds, &d);
	}
	if (channels)
		chan__channels_commit(c, msg, r == 0);
	if (r == 0)
		chan__frame_sent(c, ch, last);
out:
	pthread_mutex_unlock(&c->send_lock);
	return r;
}

int
chan__send_writer(chan_conn *c, struct chan__chan *ch, const chan_writer *w, bool last,
		  int timeout_ms)
{
	struct iovec iov[64], *v = iov;
	const struct chan__wire_handle *table;
	uint8_t header[CHAN_HEADER_SIZE], flags = 0;
	struct chan__deadline d;
	size_t len = 0, nfds, n;
	uint32_t channel = 0;
	int r;

	if ((r = chan__writer_seal(w, header, &len)) < 0)
		return r;
	n = chan__writer_pieces(w, iov + 1, 63);
	if (n > 63) { /* many borrowed pieces: more iovecs than we keep here */
		v = chan__alloc(&c->allocator, (n + 1) * sizeof(*v));
		if (!v)
			return CHAN_E_NO_MEMORY;
		chan__writer_pieces(w, v + 1, n);
	}
	v[0] = (struct iovec){header, CHAN_HEADER_SIZE};
	table = chan__writer_handles(w, &nfds);
	chan__deadline_start(&d, timeout_ms);
	if ((r = send_begin(c, &d)) == 0) {
		if ((r = chan__frame_route(c, ch, last, &flags, &channel)) == 0) {
			if (flags || channel)
				patch_header(header, flags, channel);
			r = send_frame_locked(c, v, n + 1, len, false, table, nfds, &d);
			if (r == 0)
				chan__frame_sent(c, ch, last);
		}
		pthread_mutex_unlock(&c->send_lock);
	}
	if (v != iov)
		chan__free(&c->allocator, v);
	return r;
}

/* A chan_conn * given by the application: a connection, or an endpoint and
 * its connection. */
static chan_conn *
resolve(chan_conn *c, struct chan__chan **ret_ch)
{
	if (CHAN__IS_CHANNEL(c)) {
		*ret_ch = (struct chan__chan *)(void *)c;
		return chan__chan_conn(*ret_ch);
	}
	*ret_ch = NULL;
	return c;
}

CHAN_EXPORT int
chan_conn_send(chan_conn *c, const chan_msg *msg, int timeout_ms)
{
	struct chan__chan *ch;

	if (!c || !msg)
		return CHAN_E_INVALID_ARGUMENT;
	c = resolve(c, &ch);
	return chan__send_msg(c, ch, msg, false, timeout_ms);
}

CHAN_EXPORT int
chan_conn_send_last(chan_conn *c, const chan_msg *msg, int timeout_ms)
{
	struct chan__chan *ch;

	if (!c || !msg)
		return CHAN_E_INVALID_ARGUMENT;
	c = resolve(c, &ch);
	if (!ch)
		return CHAN_E_INVALID_ARGUMENT; /* the main stream has no END */
	return chan__send_msg(c, ch, msg, true, timeout_ms);
}

CHAN_EXPORT int
chan_conn_send_writer(chan_conn *c, const chan_writer *w, int timeout_ms)
{
	struct chan__chan *ch;

	if (!c || !w)
		return CHAN_E_INVALID_ARGUMENT;
	c = resolve(c, &ch);
	return chan__send_writer(c, ch, w, false, timeout_ms);
}

CHAN_EXPORT int
chan_conn_send_writer_last(chan_conn *c, const chan_writer *w, int timeout_ms)
{
	struct chan__chan *ch;

	if (!c || !w)
		return CHAN_E_INVALID_ARGUMENT;
	c = resolve(c, &ch);
	if (!ch)
		return CHAN_E_INVALID_ARGUMENT;
	return chan__send_writer(c, ch, w, true, timeout_ms);
}

CHAN_EXPORT int
chan_conn_flush(chan_conn *c, int timeout_ms)
{
	struct chan__deadline d;
	int r;

	if (!c)
		return CHAN_E_INVALID_ARGUMENT;
	if (CHAN__IS_CHANNEL(c))
		c = chan__chan_conn((struct chan__chan *)(void *)c);
	chan__deadline_start(&d, timeout_ms);
	if ((r = chan__lock(&c->send_lock, &d)) < 0)
		return r;
	if (c->send_err)
		r = c->send_err;
	else if ((r = flush_locked(c, &d)) == 0 && c->outlen &&
		 (r = chan__outbox_write_locked(c, &d)) == 0)
		r = flush_locked(c, &d);
	pthread_mutex_unlock(&c->send_lock);
	return r;
}

CHAN_EXPORT int
chan_conn_pending(const chan_conn *c)
{
	if (c && CHAN__IS_CHANNEL(c))
		c = chan__chan_conn((struct chan__chan *)(void *)c);
	return c ? atomic_load(&c->pending) : 0;
}

_Static_assert(CHAN_EVENT_READ == POLLIN && CHAN_EVENT_WRITE == POLLOUT,
	       "chan.h documents the event bits as poll(2)'s");

CHAN_EXPORT unsigned
chan_conn_events(const chan_conn *c)
{
	if (!c)
		return 0;
	if (CHAN__IS_CHANNEL(c))
		c = chan__chan_conn((struct chan__chan *)(void *)c);
	/* c->outlen is a racy peek: an outbox filled by a receive is written
	 * by the next send or flush. */
	return CHAN_EVENT_READ |
	       (atomic_load(&c->pending) || c->outlen ? CHAN_EVENT_WRITE : 0u);
}

/* ---- receiving (SPEC.md §10.3-§10.5) ---- */

static int
recv_fatal(chan_conn *c, int err)
{
	chan__close_fds(c->fds, c->nfds);
	chan__close_fds(c->pfds, c->npfds);
	c->nfds = c->npfds = 0;
	c->recv_err = err;
	return err;
}

/* The frame is over (delivered or rejected): ready for the next one, whose
 * first bytes may already be here. */
static void
frame_done(chan_conn *c)
{
	size_t extra = c->rgot > c->rsize ? c->rgot - c->rsize : 0;

	chan__close_fds(c->fds, c->nfds); /* only those not handed over */
	c->nfds = 0;
	if (extra) {
		memmove(c->rbuf, c->rbuf + c->rsize, extra);
		if (c->npfds) {
			c->pfds_at -= c->rsize;
			if (!c->pfds_at) { /* the next frame's descriptors */
				memcpy(c->fds, c->pfds, c->npfds * sizeof(int));
				c->nfds = c->npfds;
				c->npfds = 0;
			}
		}
	} else {
		trim(c, &c->rbuf, &c->rcap, c->rsize, &c->rbuf_idle);
	}
	c->rgot = extra;
	c->rsize = 0;
}

/*
 * Where the last frame that starts in rbuf[from, to) starts, or SIZE_MAX if
 * none does.  Frames are found from the current one's length and each
 * later header's: the current frame starts at 0.
 */
static size_t
last_start(const chan_conn *c, size_t from, size_t to)
{
	size_t pos = 0, last = SIZE_MAX;

	for (;;) {
		if (pos >= to)
			return last;
		if (pos >= from)
			last = pos;
		if (to - pos < CHAN_HEADER_SIZE)
			return last; /* no later start can be known yet */
		pos += CHAN_HEADER_SIZE + (size_t)le32u(c->rbuf + pos + 12);
	}
}

/*
 * One recvmsg of at most want bytes into rbuf after the bytes it holds.
 * Returns the byte count, or an error.  The descriptors a read returns
 * belong to the last frame whose first byte that read returned (SPEC.md
 * §10.3: a read stops after the segment that carries descriptors, and a
 * sender starts every frame with descriptors in a sendmsg of its own); a
 * read that returns descriptors and no frame's first byte is fatal.
 */
static ssize_t
recv_part(chan_conn *c, size_t want, const struct chan__deadline *d)
{
	for (;;) {
		int got[CHAN_HARD_MAX_HANDLES];
		size_t ngot = 0, at;
		ssize_t n = chan_sock_recv(c->fd, c->rbuf + c->rgot, want, got,
					   CHAN_HARD_MAX_HANDLES, CHAN__DONTWAIT(d), &ngot);
		int r;

		if (n == CHAN_E_WOULD_BLOCK) {
			if ((r = chan__wait_fd(c->fd, POLLIN, d)) < 0)
				return r;
			continue;
		}
		if (n == CHAN_E_HANDLES_TRUNCATED)
			return recv_fatal(c, CHAN_E_HANDLES_TRUNCATED);
		if (n < 0) {
			/* The peer went away with data of ours unread: the
			 * stream ended here, exactly like an EOF. */
			if (errno != ECONNRESET)
				return n;
			n = 0;
			ngot = 0;
		}
		if (n == 0)
			return recv_fatal(c, c->rgot ? CHAN_E_TRUNCATED : CHAN_E_CONNECTION_CLOSED);
		if (!ngot)
			return n;
		at = last_start(c, c->rgot, c->rgot + (size_t)n);
		if (at == SIZE_MAX || (at == 0 && c->nfds) || (at && c->npfds)) {
			chan__close_fds(got, ngot);
			return recv_fatal(c, CHAN_E_MISATTACHED_HANDLES);
		}
		if (at == 0) {
			memcpy(c->fds, got, ngot * sizeof(int));
			c->nfds = ngot;
		} else {
			memcpy(c->pfds, got, ngot * sizeof(int));
			c->npfds = ngot;
			c->pfds_at = at;
		}
		return n;
	}
}

/* The header is complete: read and check it once.  Errors that end the
 * stream are reported now, before the payload is read; frame-scope ones
 * after it (SPEC.md §9.3). */
static int
header_done(chan_conn *c)
{
	int r = chan__header_read(c->rbuf, &c->limits, atomic_load(&c->accept), &c->rh,
				  &c->rframe_err);

	if (r < 0)
		return recv_fatal(c, r); /* BAD_MAGIC, UNSUPPORTED_VERSION, PAYLOAD_TOO_LARGE */
	c->rsize = CHAN_HEADER_SIZE + (size_t)c->rh.payload_length;
	return 0;
}

CHAN_EXPORT int
chan_conn_recv(chan_conn *c, int timeout_ms, chan_msg **ret_msg)
{
	struct chan__chan *ch;

	if (!c || !ret_msg)
		return CHAN_E_INVALID_ARGUMENT;
	c = resolve(c, &ch);
	return chan__recv(c, ch, timeout_ms, ret_msg);
}

int
chan__read_frame(chan_conn *c, const struct chan__deadline *d, struct chan_header *ret_header,
		 chan_msg **ret_msg)
{
	chan_msg *msg = NULL;
	unsigned accept;
	bool large;
	int r;

	if ((r = chan__lock(&c->recv_lock, d)) < 0)
		return r;
	if (c->recv_err) {
		r = c->recv_err;
		goto out;
	}
	if ((r = grow(c, &c->rbuf, &c->rcap, READ_AHEAD, c->rgot)) < 0)
		goto out;
	for (;;) {
		size_t want;
		ssize_t n;

		if (c->rgot >= CHAN_HEADER_SIZE && !c->rsize && (r = header_done(c)) < 0)
			goto out; /* fatal */
		if (c->rsize && c->rgot >= c->rsize)
			break;
		want = (c->rsize ? c->rsize : CHAN_HEADER_SIZE) - c->rgot;
		/* A small frame is read whole with the header, and what
		 * follows it with it (one recvmsg per frame, not two); a
		 * large one exactly, so that its buffer can go to the
		 * message. */
		if (!c->rsize || c->rh.payload_length <= KEEP_BUFFER)
			want += READ_AHEAD;
		/* The buffer grows as bytes arrive, never from the declared
		 * length alone: a peer that announces 16 MiB and sends
		 * nothing costs 64 KiB here, not 16 MiB. */
		if (c->rgot == c->rcap) {
			size_t to = c->rcap < GROW_MIN ? GROW_MIN : c->rcap * GROW_FACTOR;

			if (to > c->rgot + want)
				to = c->rgot + want;
			if ((r = grow(c, &c->rbuf, &c->rcap, to, c->rgot)) < 0)
				goto out; /* local; the next call tries again */
		}
		if (want > c->rcap - c->rgot)
			want = c->rcap - c->rgot;
		if ((n = recv_part(c, want, d)) < 0) {
			r = (int)n;
			goto out;
		}
		c->rgot += (size_t)n;
	}

	/* A whole frame.  Header errors of frame scope come first (§9.3). */
	*ret_header = c->rh;
	accept = atomic_load(&c->accept);
	if ((r = c->rframe_err) < 0) {
		frame_done(c);
		goto out;
	}
	/* A large frame's bytes values are not copied: the message borrows
	 * them and takes the receive buffer (one copy fewer per large frame;
	 * the next one is read into a new buffer). */
	large = c->rh.payload_length > KEEP_BUFFER && c->rgot == c->rsize;
	r = chan__decode_payload(c->rbuf + CHAN_HEADER_SIZE, &c->rh, c->nfds,
				 (large ? CHAN_DECODE_BORROW : 0) |
					 (accept & CHAN__ACCEPT_CHANNELS ? CHAN_DECODE_REVISION_1_1
									 : 0),
				 &c->limits, &c->allocator, &msg);
	/* On NO_MEMORY the frame and its descriptors stay here, so the next
	 * call decodes it again (NO_MEMORY is a local error: nothing is lost). */
	if (r == CHAN_E_NO_MEMORY)
		goto out;
	if (r == 0) {
		/* The receive-side self-send rule needs this socket's identity;
		 * without it the check fails closed (SYSTEM), never open. */
		uint64_t own = c->rh.handle_count ? chan__conn_id(c) : 0;

		if (c->rh.handle_count && !own) {
			msg = chan_msg_free(msg);
			r = CHAN_E_SYSTEM;
		} else {
			r = chan__handles_attach(msg, c->fds, c->nfds, own);
			c->nfds = 0; /* the message has them, or they are closed */
		}
	}
	if (r == 0 && chan__msg_adopt(msg, c->rbuf)) {
		c->rbuf = NULL;
		c->rcap = 0;
	}
	frame_done(c);
	if (r == 0)
		*ret_msg = msg;
out:
	pthread_mutex_unlock(&c->recv_lock);
	return r;
}
