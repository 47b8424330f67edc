/*
 * conn.c - chan connections over AF_UNIX stream sockets (SPEC.md §10, §11.2).
 *
 * Threading model.  A chan_conn may be shared by threads.  Two mutexes guard
 * it: the send lock (chan_conn_send, chan_conn_flush, chan_conn_pending and
 * the send-side state: the committed remainder, the peer's socket id, the
 * sticky send error) and the receive lock (chan_conn_recv, limits, allocator
 * and the receive-side state: the partial frame and its fds, the sticky
 * receive error).  A whole frame is written under the send lock, so frames
 * of concurrent senders never interleave; a whole frame is read under the
 * receive lock, so each receiver gets whole frames.  A send and a receive
 * proceed in parallel.  Waiting for a lock counts against the caller's
 * timeout (timeout 0 never waits for it either).  chan_conn_free must not
 * race with any other call on the same connection.  A chan_listener is for
 * one thread at a time.
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
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "platform.h"

/* Room for every descriptor one recvmsg can return: the control buffer
 * holds 253 ints, rounded up by CMSG_SPACE. */
#define RECV_CMSG_SPACE CMSG_SPACE(CHAN_HARD_MAX_HANDLES * sizeof(int))
#define RECV_MAX_FDS (RECV_CMSG_SPACE / sizeof(int))

/* A buffer larger than this is released once this many frames in a row
 * used less than a quarter of it: a stream of large frames keeps its buffer
 * (no fresh pages to fault in for every frame), an idle connection does not
 * hold a large one for ever. */
#define KEEP_BUFFER (256u * 1024u)
#define SHRINK_AFTER 16u

enum { PEER_UNKNOWN = 0, PEER_KNOWN = 1, PEER_UNAVAILABLE = 2 };

struct chan_conn {
	int fd;
	_Atomic uint64_t id; /* the socket's inode; 0 until first needed */

	pthread_mutex_t send_lock;
	unsigned char *sbuf; /* the frame being sent */
	size_t scap;
	unsigned sbuf_idle; /* frames in a row that used < 1/4 of sbuf */
	size_t slen; /* frame size; 0 when nothing is pending */
	size_t soff; /* bytes written */
	atomic_int pending;
	int send_err; /* sticky */
	int peer_state;
	uint64_t peer_id;

	pthread_mutex_t recv_lock;
	struct chan_limits limits;
	struct chan_allocator allocator;
	int has_allocator;
	unsigned char *rbuf; /* header, then payload, of the frame being read */
	size_t rcap;
	unsigned rbuf_idle;
	size_t rgot;  /* bytes of the frame read so far */
	size_t rsize; /* frame size once the header is read, else 0 */
	int fds[RECV_MAX_FDS]; /* descriptors of the frame being read */
	size_t nfds;
	int recv_err; /* sticky */
};

struct chan_listener {
	int fd;
	char *path; /* bound filesystem path, NULL for abstract names */
	dev_t dev;  /* the socket file we created, so free unlinks only it */
	ino_t ino;
};

/* ---- deadlines ---- */

struct deadline {
	int timeout_ms; /* as given: -1 forever, 0 never wait */
	struct timespec at;
};

/* Finite timeouts use MSG_DONTWAIT and poll; -1 blocks in the call. */
#define DONTWAIT(d) ((d)->timeout_ms >= 0)

static void
deadline_start(struct deadline *d, int timeout_ms)
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
deadline_expired_error(const struct deadline *d)
{
	return d->timeout_ms == 0 ? CHAN_E_WOULD_BLOCK : CHAN_E_TIMEOUT;
}

/* Milliseconds left, rounded up; -1 for forever; 0 when expired. */
static int
deadline_left(const struct deadline *d)
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

/* Wait until fd is ready for events or the deadline passes. */
static int
wait_fd(int fd, short events, const struct deadline *d)
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

static int
lock(pthread_mutex_t *m, const struct deadline *d)
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

static int
grow(unsigned char **buf, size_t *cap, size_t need)
{
	unsigned char *p;

	if (*cap >= need)
		return 0;
	p = realloc(*buf, need);
	if (!p)
		return CHAN_E_NO_MEMORY;
	*buf = p;
	*cap = need;
	return 0;
}

/* After a frame that used `used` bytes of the buffer. */
static void
trim(unsigned char **buf, size_t *cap, size_t used, unsigned *idle)
{
	if (*cap <= KEEP_BUFFER || used >= *cap / 4) {
		*idle = 0;
		return;
	}
	if (++*idle >= SHRINK_AFTER) {
		free(*buf);
		*buf = NULL;
		*cap = 0;
		*idle = 0;
	}
}

/* ---- construction ---- */

/* A connection on fd, which the caller knows to be an AF_UNIX stream
 * socket.  Takes fd on success only. */
static int
conn_alloc(int fd, chan_conn **ret)
{
	chan_conn *c = calloc(1, sizeof(*c));
	int r;

	if (!c)
		return CHAN_E_NO_MEMORY;
	if ((r = pthread_mutex_init(&c->send_lock, NULL)) != 0) {
		free(c);
		errno = r;
		return CHAN_E_SYSTEM;
	}
	if ((r = pthread_mutex_init(&c->recv_lock, NULL)) != 0) {
		pthread_mutex_destroy(&c->send_lock);
		free(c);
		errno = r;
		return CHAN_E_SYSTEM;
	}
	c->fd = fd;
	atomic_init(&c->id, 0);
	c->limits = chan__limits(NULL);
	atomic_init(&c->pending, 0);
	*ret = c;
	return 0;
}

/* The socket's inode, looked up once (either lock may ask first: both
 * would store the same value).  0 if it cannot be had. */
static uint64_t
conn_id(chan_conn *c)
{
	uint64_t id = atomic_load(&c->id);

	if (!id && chan_plat_socket_id(c->fd, &id) == 0)
		atomic_store(&c->id, id);
	return id;
}

CHAN_EXPORT int
chan_conn_from_fd(int fd, chan_conn **ret)
{
	int r;

	if (fd < 0 || !ret)
		return CHAN_E_INVALID_ARGUMENT;
	if ((r = chan__check_conn_fd(fd)) < 0)
		return r;
	return conn_alloc(fd, ret);
}

CHAN_EXPORT int
chan_conn_pair(chan_conn **ret_a, chan_conn **ret_b)
{
	chan_conn *a = NULL, *b = NULL;
	int sv[2], r;

	if (!ret_a || !ret_b)
		return CHAN_E_INVALID_ARGUMENT;
	if (chan_plat_socketpair(sv) < 0)
		return CHAN_E_SYSTEM;
	if ((r = conn_alloc(sv[0], &a)) < 0 || (r = conn_alloc(sv[1], &b)) < 0) {
		int saved = errno;

		if (a) {
			a->fd = -1;
			chan_conn_free(a);
		}
		close(sv[0]);
		close(sv[1]);
		errno = saved;
		return r;
	}
	/* Each end knows the other: no sock_diag lookup needed later. */
	if (conn_id(a) && conn_id(b)) {
		a->peer_id = conn_id(b);
		a->peer_state = PEER_KNOWN;
		b->peer_id = conn_id(a);
		b->peer_state = PEER_KNOWN;
	}
	*ret_a = a;
	*ret_b = b;
	return 0;
}

CHAN_EXPORT int
chan_conn_from_value(chan_value *v, chan_conn **ret)
{
	chan_conn *c;
	int fd, r;

	if (!v || !ret)
		return CHAN_E_INVALID_ARGUMENT;
	if (chan_value_type(v) != CHAN_HANDLE || chan_value_kind(v) != CHAN_KIND_CONN)
		return CHAN_E_WRONG_HANDLE_KIND;
	fd = chan_value_fd(v);
	if (fd < 0)
		return CHAN_E_INVALID_ARGUMENT; /* taken, or decoded detached */
	/* Wrap first, take second: a failure steals nothing.  The fd's kind
	 * was verified when the handle was made (chan_handle) or received
	 * (chan_decode). */
	if ((r = conn_alloc(fd, &c)) < 0)
		return r;
	if ((r = chan_value_take_fd(v, &fd)) < 0) {
		c->fd = -1;
		chan_conn_free(c);
		return r;
	}
	*ret = c;
	return 0;
}

CHAN_EXPORT chan_value *
chan_conn_handle(chan_msg *msg, chan_conn **conn)
{
	chan_conn *c = conn ? *conn : NULL;
	chan_value *v;

	if (!msg)
		return NULL;
	if (!c || c->fd < 0 || atomic_load(&c->pending) || c->rgot || c->nfds) {
		chan__poison(msg, CHAN_E_INVALID_ARGUMENT);
		return NULL;
	}
	v = chan__handle_new(msg, CHAN_KIND_CONN, c->fd, HANDLE_KIND_KNOWN);
	if (!v)
		return NULL;
	v->u.h.socket_id = atomic_load(&c->id); /* spares the self-send fstat */
	c->fd = -1; /* the message owns the socket now */
	*conn = chan_conn_free(c);
	return v;
}

CHAN_EXPORT chan_conn *
chan_conn_free(chan_conn *c)
{
	if (!c)
		return NULL;
	if (c->fd >= 0)
		close(c->fd);
	chan__close_fds(c->fds, c->nfds);
	free(c->sbuf);
	free(c->rbuf);
	pthread_mutex_destroy(&c->send_lock);
	pthread_mutex_destroy(&c->recv_lock);
	free(c);
	return NULL;
}

CHAN_EXPORT int
chan_conn_fd(const chan_conn *c)
{
	return c ? c->fd : -1;
}

CHAN_EXPORT int
chan_conn_set_limits(chan_conn *c, const struct chan_limits *limits)
{
	struct deadline d;
	int r;

	if (!c)
		return CHAN_E_INVALID_ARGUMENT;
	if (limits && (limits->max_payload > CHAN_HARD_MAX_PAYLOAD ||
		       limits->max_handles > CHAN_HARD_MAX_HANDLES ||
		       limits->max_depth > CHAN_HARD_MAX_DEPTH))
		return CHAN_E_INVALID_ARGUMENT;
	deadline_start(&d, -1);
	if ((r = lock(&c->recv_lock, &d)) < 0)
		return r;
	c->limits = chan__limits(limits);
	pthread_mutex_unlock(&c->recv_lock);
	return 0;
}

CHAN_EXPORT void
chan_conn_set_allocator(chan_conn *c, const struct chan_allocator *a)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->recv_lock);
	c->has_allocator = a && a->alloc && a->free;
	if (c->has_allocator)
		c->allocator = *a;
	pthread_mutex_unlock(&c->recv_lock);
}

CHAN_EXPORT int
chan_conn_peer_cred(const chan_conn *c, struct chan_peer_cred *ret)
{
	pid_t pid;
	uid_t uid;
	gid_t gid;

	if (!c || !ret)
		return CHAN_E_INVALID_ARGUMENT;
	if (chan_plat_peer_cred(c->fd, &pid, &uid, &gid) < 0)
		return CHAN_E_SYSTEM;
	ret->pid = pid;
	ret->uid = uid;
	ret->gid = gid;
	return 0;
}

/* ---- listeners ---- */

CHAN_EXPORT int
chan_listen(const char *path, chan_listener **ret)
{
	struct chan_plat_addr addr;
	chan_listener *l;
	struct stat st;
	int saved;

	if (!path || !ret)
		return CHAN_E_INVALID_ARGUMENT;
	if (chan_plat_addr(path, &addr) < 0)
		return CHAN_E_INVALID_ARGUMENT;
	l = calloc(1, sizeof(*l));
	if (!l)
		return CHAN_E_NO_MEMORY;
	if (addr.is_path && !(l->path = strdup(path))) {
		free(l);
		return CHAN_E_NO_MEMORY;
	}
	l->fd = chan_plat_listen(&addr);
	if (l->fd < 0)
		goto fail;
	if (l->path) {
		if (stat(l->path, &st) < 0) {
			saved = errno;
			close(l->fd);
			errno = saved;
			goto fail;
		}
		l->dev = st.st_dev;
		l->ino = st.st_ino;
	}
	*ret = l;
	return 0;
fail:
	saved = errno;
	free(l->path);
	free(l);
	errno = saved;
	return CHAN_E_SYSTEM;
}

CHAN_EXPORT int
chan_listener_accept(chan_listener *l, int timeout_ms, chan_conn **ret)
{
	struct deadline d;
	int fd, r;

	if (!l || !ret)
		return CHAN_E_INVALID_ARGUMENT;
	deadline_start(&d, timeout_ms);
	for (;;) {
		fd = chan_plat_accept(l->fd);
		if (fd >= 0)
			break;
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return CHAN_E_SYSTEM;
		if ((r = wait_fd(l->fd, POLLIN, &d)) < 0)
			return r;
	}
	if ((r = conn_alloc(fd, ret)) < 0) {
		int saved = errno;

		close(fd);
		errno = saved;
	}
	return r;
}

CHAN_EXPORT int
chan_listener_fd(const chan_listener *l)
{
	return l ? l->fd : -1;
}

CHAN_EXPORT chan_listener *
chan_listener_free(chan_listener *l)
{
	struct stat st;

	if (!l)
		return NULL;
	close(l->fd);
	/* Unlink only the socket file we created, not one that replaced it. */
	if (l->path && stat(l->path, &st) == 0 && st.st_dev == l->dev &&
	    st.st_ino == l->ino)
		unlink(l->path);
	free(l->path);
	free(l);
	return NULL;
}

CHAN_EXPORT int
chan_connect(const char *path, chan_conn **ret)
{
	struct chan_plat_addr addr;
	int fd, r;

	if (!path || !ret)
		return CHAN_E_INVALID_ARGUMENT;
	if (chan_plat_addr(path, &addr) < 0)
		return CHAN_E_INVALID_ARGUMENT;
	fd = chan_plat_connect(&addr);
	if (fd < 0)
		return CHAN_E_SYSTEM;
	if ((r = conn_alloc(fd, ret)) < 0) {
		int saved = errno;

		close(fd);
		errno = saved;
	}
	return r;
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
 * Does msg carry, as a conn handle that goes on the wire, this connection's
 * own socket or (when check_peer) its peer's?  Only conn handles are looked
 * at (one fstat each); fd handles are not connections (§10.6).  0: no;
 * CHAN_E_SELF_SEND: yes; CHAN_E_SYSTEM: an identity could not be had, and
 * the check fails closed.
 */
static int
check_self_send(chan_conn *c, const chan_msg *msg, int check_peer)
{
	uint64_t own = 0;

	for (const chan_value *v = msg->handles_head; v; v = v->u.h.next) {
		uint64_t id;

		/* Only handles in the frame's table (not detached values). */
		if (v->kind != CHAN_KIND_CONN || v->u.h.fd < 0 ||
		    v->u.h.index >= msg->handle_count ||
		    msg->handle_fds[v->u.h.index] != v->u.h.fd)
			continue;
		if (!own && !(own = conn_id(c)))
			return CHAN_E_SYSTEM;
		if (!(id = v->u.h.socket_id) && chan_plat_socket_id(v->u.h.fd, &id) < 0)
			return CHAN_E_SYSTEM;
		if (id == own)
			return CHAN_E_SELF_SEND;
		if (!check_peer)
			continue;
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

static int
send_errno_error(chan_conn *c)
{
	if (errno == EPIPE || errno == ECONNRESET)
		return send_fatal(c, CHAN_E_CONNECTION_CLOSED);
	return CHAN_E_SYSTEM;
}

static void
pending_done(chan_conn *c)
{
	trim(&c->sbuf, &c->scap, c->slen, &c->sbuf_idle);
	c->slen = c->soff = 0;
	atomic_store(&c->pending, 0);
}

/* Write the committed remainder with plain sends (never fds again). */
static int
flush_locked(chan_conn *c, const struct deadline *d)
{
	while (c->soff < c->slen) {
		struct iovec iov = {c->sbuf + c->soff, c->slen - c->soff};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
		ssize_t n = chan_plat_sendmsg(c->fd, &mh, DONTWAIT(d));
		int r;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				/* Mid-frame: the stream cannot be repaired. */
				r = send_errno_error(c);
				if (r == CHAN_E_SYSTEM)
					send_fatal(c, r);
				return r;
			}
			if ((r = wait_fd(c->fd, POLLOUT, d)) < 0)
				return r;
			continue;
		}
		c->soff += (size_t)n;
	}
	pending_done(c);
	return 0;
}

/* The first write: all of the frame offered, every fd on its first byte. */
static int
send_first(chan_conn *c, const int *fds, size_t nfds, const struct deadline *d)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(CHAN_HARD_MAX_HANDLES * sizeof(int))];
	} ctl;
	struct iovec iov = {c->sbuf, c->slen};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t n;
	int r;

	if (nfds) {
		struct cmsghdr *cm;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
	}
	for (;;) {
		n = chan_plat_sendmsg(c->fd, &mh, DONTWAIT(d));
		if (n >= 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return send_errno_error(c); /* nothing was sent */
		if ((r = wait_fd(c->fd, POLLOUT, d)) < 0)
			return r;
	}
	c->soff = (size_t)n;
	return 0;
}

CHAN_EXPORT int
chan_conn_send(chan_conn *c, chan_msg *msg, int timeout_ms)
{
	struct deadline d;
	const int *fds;
	size_t len = 0, nfds = 0;
	int r;

	if (!c || !msg)
		return CHAN_E_INVALID_ARGUMENT;
	deadline_start(&d, timeout_ms);
	if ((r = lock(&c->send_lock, &d)) < 0)
		return r;
	if (c->send_err) {
		r = c->send_err;
		goto out;
	}
	/* A committed frame goes out before any new one. */
	if (c->slen && (r = flush_locked(c, &d)) < 0)
		goto out;

	r = chan_encode(msg, c->sbuf, c->scap, &len);
	if (r == CHAN_E_BUFFER_TOO_SMALL) {
		if ((r = grow(&c->sbuf, &c->scap, len)) < 0)
			goto out;
		r = chan_encode(msg, c->sbuf, c->scap, &len);
	}
	if (r < 0)
		goto out;
	fds = chan_msg_handles(msg, &nfds);
	for (size_t i = 0; i < nfds; i++) {
		if (fds[i] < 0) { /* a handle whose fd was taken */
			r = CHAN_E_INVALID_ARGUMENT;
			goto out;
		}
	}
	if (nfds && (r = check_self_send(c, msg, 1)) < 0)
		goto out;

	c->slen = len;
	r = send_first(c, fds, nfds, &d);
	if (r < 0) {
		c->slen = 0;
		goto out;
	}
	/* Committed: from here on the frame is the connection's to finish. */
	atomic_store(&c->pending, 1);
	r = flush_locked(c, &d);
	if (r == CHAN_E_TIMEOUT || r == CHAN_E_WOULD_BLOCK)
		r = 0;
out:
	pthread_mutex_unlock(&c->send_lock);
	return r;
}

CHAN_EXPORT int
chan_conn_flush(chan_conn *c, int timeout_ms)
{
	struct deadline d;
	int r;

	if (!c)
		return CHAN_E_INVALID_ARGUMENT;
	deadline_start(&d, timeout_ms);
	if ((r = lock(&c->send_lock, &d)) < 0)
		return r;
	if (c->send_err)
		r = c->send_err;
	else
		r = flush_locked(c, &d);
	pthread_mutex_unlock(&c->send_lock);
	return r;
}

CHAN_EXPORT int
chan_conn_pending(const chan_conn *c)
{
	return c ? atomic_load(&c->pending) : 0;
}

/* ---- receiving (SPEC.md §10.3-§10.5) ---- */

static int
recv_fatal(chan_conn *c, int err)
{
	chan__close_fds(c->fds, c->nfds);
	c->nfds = 0;
	c->recv_err = err;
	return err;
}

/*
 * One recvmsg of at most want bytes into the frame buffer.  Returns the
 * byte count, or an error.  Descriptors are accepted only with the read that
 * returns the frame's first byte; anything else about them is fatal.
 */
static ssize_t
recv_part(chan_conn *c, size_t want, const struct deadline *d)
{
	union {
		struct cmsghdr align;
		char buf[RECV_CMSG_SPACE];
	} ctl;
	int first = c->rgot == 0;

	for (;;) {
		struct iovec iov = {c->rbuf + c->rgot, want};
		struct msghdr mh = {
			.msg_iov = &iov,
			.msg_iovlen = 1,
			.msg_control = ctl.buf,
			/* CMSG_LEN, not the buffer's CMSG_SPACE: no descriptor
			 * can land in the alignment padding (CVE-2014-3635,
			 * SPEC.md §10.4). */
			.msg_controllen = CMSG_LEN(CHAN_HARD_MAX_HANDLES * sizeof(int)),
		};
		int got[RECV_MAX_FDS];
		size_t ngot = 0;
		ssize_t n = chan_plat_recvmsg(c->fd, &mh, DONTWAIT(d));
		int r;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				if ((r = wait_fd(c->fd, POLLIN, d)) < 0)
					return r;
				continue;
			}
			/* The peer went away with data of ours unread: the
			 * stream ended here, exactly like an EOF. */
			if (errno != ECONNRESET)
				return CHAN_E_SYSTEM;
			n = 0;
			mh.msg_controllen = 0;
			mh.msg_flags = 0;
		}
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm;
		     cm = CMSG_NXTHDR(&mh, cm)) {
			size_t k;

			if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
				continue;
			k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			if (k > RECV_MAX_FDS - ngot) /* cannot happen */
				k = RECV_MAX_FDS - ngot;
			memcpy(got + ngot, CMSG_DATA(cm), k * sizeof(int));
			ngot += k;
		}
		if (mh.msg_flags & MSG_CTRUNC) {
			chan__close_fds(got, ngot);
			return recv_fatal(c, CHAN_E_HANDLES_TRUNCATED);
		}
		if (ngot && !first) {
			chan__close_fds(got, ngot);
			return recv_fatal(c, CHAN_E_MISATTACHED_HANDLES);
		}
		if (ngot) {
			memcpy(c->fds, got, ngot * sizeof(int));
			c->nfds = ngot;
		}
		if (n == 0)
			return recv_fatal(c, first ? CHAN_E_CONNECTION_CLOSED
						   : CHAN_E_TRUNCATED);
		return n;
	}
}

/* The header is complete: fatal header errors now, before the payload is
 * read; frame-scope ones after it (chan_decode reports them in order). */
static int
header_done(chan_conn *c)
{
	struct chan_header h;
	int r;

	if ((r = chan_header_parse(c->rbuf, CHAN_HEADER_SIZE, &h)) < 0)
		return recv_fatal(c, r); /* BAD_MAGIC, UNSUPPORTED_VERSION */
	r = chan_header_check(&h, &c->limits);
	if (r == CHAN_E_PAYLOAD_TOO_LARGE)
		return recv_fatal(c, r);
	if ((r = grow(&c->rbuf, &c->rcap,
		      CHAN_HEADER_SIZE + (size_t)h.payload_length)) < 0)
		return r; /* local; the next call tries again */
	c->rsize = CHAN_HEADER_SIZE + (size_t)h.payload_length;
	return 0;
}

CHAN_EXPORT int
chan_conn_recv(chan_conn *c, chan_msg **ret_msg, int timeout_ms)
{
	struct deadline d;
	chan_msg *msg = NULL;
	bool large;
	int r;

	if (!c || !ret_msg)
		return CHAN_E_INVALID_ARGUMENT;
	deadline_start(&d, timeout_ms);
	if ((r = lock(&c->recv_lock, &d)) < 0)
		return r;
	if (c->recv_err) {
		r = c->recv_err;
		goto out;
	}
	if ((r = grow(&c->rbuf, &c->rcap, CHAN_HEADER_SIZE)) < 0)
		goto out;
	for (;;) {
		size_t want;
		ssize_t n;

		if (c->rgot == CHAN_HEADER_SIZE && !c->rsize &&
		    (r = header_done(c)) < 0)
			goto out;
		want = (c->rsize ? c->rsize : CHAN_HEADER_SIZE) - c->rgot;
		if (!want)
			break;
		if ((n = recv_part(c, want, &d)) < 0) {
			r = (int)n;
			goto out;
		}
		c->rgot += (size_t)n;
	}

	/* A whole frame.  On NO_MEMORY the decoder leaves the descriptors
	 * open and the frame stays here, so the next call decodes it again
	 * (NO_MEMORY is a local error: nothing is lost). */
	/* A large frame's bytes values are not copied: the message borrows
	 * them and takes the receive buffer (one copy fewer per large frame;
	 * the next one is read into a new buffer). */
	large = c->rsize - CHAN_HEADER_SIZE > KEEP_BUFFER;
	r = chan__decode(c->rbuf, c->rsize, c->fds, c->nfds, large ? CHAN_DECODE_BORROW : 0,
			 &c->limits, c->has_allocator ? &c->allocator : NULL, &msg, NULL,
			 true);
	if (r == CHAN_E_NO_MEMORY)
		goto out;
	c->nfds = 0; /* chan_decode took them */
	if (r == 0 && msg->borrowed) {
		msg->adopted = c->rbuf;
		c->rbuf = NULL;
		c->rcap = 0;
	} else {
		trim(&c->rbuf, &c->rcap, c->rsize, &c->rbuf_idle);
	}
	c->rgot = c->rsize = 0;
	if (r < 0)
		goto out;
	/* A conn handle that is this very socket (SPEC.md §10.6 rule 3). */
	if ((r = check_self_send(c, msg, 0)) < 0) {
		chan_msg_free(msg); /* closes every fd of the frame */
		goto out;
	}
	*ret_msg = msg;
out:
	pthread_mutex_unlock(&c->recv_lock);
	return r;
}
