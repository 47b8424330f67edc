/*
 * conn.c - the connection object (SPEC.md §10, §11): making one (a pair, a
 * socket, a received handle), moving it into a message, options, freeing.
 * Framing is in io.c, listening and connecting in listener.c; conn.h has
 * the threading model.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "platform.h"

static _Atomic uint64_t births;

int
chan__conn_new(int fd, chan_conn **ret_conn)
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
	if ((r = chan__mux_init(c)) < 0) {
		pthread_mutex_destroy(&c->recv_lock);
		pthread_mutex_destroy(&c->send_lock);
		free(c);
		return r;
	}
	c->obj = CHAN__OBJ_CONN;
	c->fd = fd;
	c->birth = atomic_fetch_add(&births, 1) + 1;
	atomic_init(&c->id, 0);
	c->limits = chan__limits(NULL);
	atomic_init(&c->pending, 0);
	chan__enc_init(&c->enc, &c->allocator);
	*ret_conn = c;
	return 0;
}

uint64_t
chan__conn_handle_id(const chan_conn *c)
{
	return c->fresh_pair ? CHAN__BIRTH_TAG | c->birth : atomic_load(&c->id);
}

uint64_t
chan__conn_id(chan_conn *c)
{
	uint64_t id = atomic_load(&c->id);

	/* Either lock may ask first: both would store the same value. */
	if (!id && chan_plat_socket_id(c->fd, &id) == 0)
		atomic_store(&c->id, id);
	return id;
}

CHAN_EXPORT int
chan_conn_move_from_fd(int fd, chan_conn **ret_conn)
{
	uint64_t id;
	int r;

	if (fd < 0 || !ret_conn)
		return CHAN_E_INVALID_ARGUMENT;
	if ((r = chan__conn_fd_check(fd, &id)) < 0)
		return r;
	if ((r = chan__conn_new(fd, ret_conn)) == 0)
		atomic_store(&(*ret_conn)->id, id);
	return r;
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
	if ((r = chan__conn_new(sv[0], &a)) < 0 || (r = chan__conn_new(sv[1], &b)) < 0) {
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
	/* Both sockets are new: no system call learns their identities; the
	 * self-send check tells them apart by birth (chan__conn_handle_id). */
	b->birth = a->birth;
	a->fresh_pair = b->fresh_pair = true;
	*ret_a = a;
	*ret_b = b;
	return 0;
}

CHAN_EXPORT int
chan_conn_move_from_value(chan_value *v, chan_conn **ret_conn)
{
	chan_conn *c;
	int fd, r;

	if (!v || !ret_conn)
		return CHAN_E_INVALID_ARGUMENT;
	if (chan_value_type(v) == CHAN_CHANNEL) /* a received channel (SPEC.md §18.3) */
		return chan__channel_take(v, ret_conn);
	if (chan_value_type(v) != CHAN_HANDLE)
		return CHAN_E_WRONG_TYPE;
	if (chan_value_kind(v) != CHAN_KIND_CONN)
		return CHAN_E_WRONG_HANDLE_KIND;
	if ((r = chan_value_borrow_fd(v, &fd)) < 0)
		return r; /* moved out, or decoded detached */
	/* Wrap first, move second: a failure steals nothing.  The fd's kind
	 * was verified when the handle was made or received. */
	if ((r = chan__conn_new(fd, &c)) < 0)
		return r;
	if ((r = chan_value_move_fd(v, &fd)) < 0) { /* a borrowed handle */
		c->fd = -1;
		chan_conn_free(c);
		return r;
	}
	*ret_conn = c;
	return 0;
}

CHAN_EXPORT int
chan_map_move_conn(chan_value *map, const char *key, chan_conn **ret_conn)
{
	chan_value *v;
	int r = chan_map_get_value(map, key, &v);

	return r < 0 ? r : chan_conn_move_from_value(v, ret_conn);
}

/* A connection that is between frames can change hands; one with a frame
 * half written or half read cannot (the stream would tear). */
static bool
conn_idle(chan_conn *c)
{
	return c->fd >= 0 && !atomic_load(&c->pending) && !c->rgot && !c->nfds && !c->npfds;
}

CHAN_EXPORT chan_value *
chan_handle_move_conn(chan_msg *msg, chan_conn **conn)
{
	chan_conn *c = conn ? *conn : NULL;
	chan_value *v;

	if (!msg || chan_msg_error(msg))
		return NULL;
	if (c && CHAN__IS_CHANNEL(c)) {
		chan__poison(msg, CHAN_E_CHANNEL_NOT_TRANSFERABLE,
			     "chan_handle_move_conn: a channel endpoint has no socket of its own "
			     "(SPEC.md §18.7: send a conn, or relay)");
		return NULL;
	}
	if (!c || !conn_idle(c)) {
		chan__poison(msg, CHAN_E_INVALID_ARGUMENT, "chan_handle_move_conn: %s",
			     c ? "the connection is mid-frame (a frame partly sent or received, "
				 "or bytes of later frames already read)"
			       : "the connection is NULL");
		return NULL;
	}
	v = chan__handle_new(msg, "chan_handle_move_conn", CHAN_KIND_CONN, c->fd, false,
			     chan__conn_handle_id(c));
	if (!v)
		return NULL;
	c->fd = -1; /* the message owns the socket now */
	*conn = chan_conn_free(c);
	return v;
}

CHAN_EXPORT chan_value *
chan_handle_borrow_conn(chan_msg *msg, const chan_conn *conn)
{
	if (!msg || chan_msg_error(msg))
		return NULL;
	if (conn && CHAN__IS_CHANNEL(conn)) {
		chan__poison(msg, CHAN_E_CHANNEL_NOT_TRANSFERABLE,
			     "chan_handle_borrow_conn: a channel endpoint has no socket of its own "
			     "(SPEC.md §18.7)");
		return NULL;
	}
	if (!conn || conn->fd < 0) {
		chan__poison(msg, CHAN_E_INVALID_ARGUMENT,
			     "chan_handle_borrow_conn: the connection is NULL");
		return NULL;
	}
	return chan__handle_new(msg, "chan_handle_borrow_conn", CHAN_KIND_CONN, conn->fd,
				true, chan__conn_handle_id(conn));
}

void
chan__conn_free_struct(chan_conn *c)
{
	pthread_mutex_destroy(&c->send_lock);
	pthread_mutex_destroy(&c->recv_lock);
	free(c);
}

CHAN_EXPORT chan_conn *
chan_conn_free(chan_conn *c)
{
	if (!c)
		return NULL;
	if (CHAN__IS_CHANNEL(c)) {
		chan__chan_free((struct chan__chan *)(void *)c);
		return NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	chan__close_fds(c->fds, c->nfds);
	chan__close_fds(c->pfds, c->npfds);
	c->nfds = c->npfds = 0;
	chan__free(&c->allocator, c->sbuf);
	chan__free(&c->allocator, c->rbuf);
	c->sbuf = c->rbuf = NULL;
	chan__enc_fini(&c->enc);
	/* Channel endpoints still held keep the struct (not the socket):
	 * they report CONNECTION_CLOSED until they are freed too. */
	if (chan__mux_app_free(c)) {
		chan__mux_fini(c);
		chan__conn_free_struct(c);
	}
	return NULL;
}

CHAN_EXPORT int
chan_conn_borrow_fd(const chan_conn *c)
{
	return c && !CHAN__IS_CHANNEL(c) ? c->fd : -1;
}

CHAN_EXPORT int
chan_conn_set_limits(chan_conn *c, const struct chan_limits *limits)
{
	struct chan__deadline d;
	int r;

	if (!c || CHAN__IS_CHANNEL(c))
		return CHAN_E_INVALID_ARGUMENT;
	if (limits && (limits->max_payload > CHAN_HARD_MAX_PAYLOAD ||
		       limits->max_handles > CHAN_HARD_MAX_HANDLES ||
		       limits->max_depth > CHAN_HARD_MAX_DEPTH))
		return CHAN_E_INVALID_ARGUMENT;
	chan__deadline_start(&d, -1);
	if ((r = chan__lock(&c->recv_lock, &d)) < 0)
		return r;
	c->limits = chan__limits(limits);
	pthread_mutex_unlock(&c->recv_lock);
	return 0;
}

CHAN_EXPORT int
chan_conn_set_allocator(chan_conn *c, const struct chan_allocator *a)
{
	int r = 0;

	if (!c || CHAN__IS_CHANNEL(c) || (a && (!a->alloc || !a->free)))
		return CHAN_E_INVALID_ARGUMENT;
	pthread_mutex_lock(&c->send_lock);
	pthread_mutex_lock(&c->recv_lock);
	pthread_mutex_lock(&c->mux_lock);
	if (atomic_load(&c->pending) || c->rgot || c->nfds || c->npfds || c->nchans ||
	    c->mainq.head || c->outlen) {
		r = CHAN_E_INVALID_ARGUMENT; /* buffers in use came from the old one */
	} else {
		/* the channel table and the spare entry go back as well */
		chan__free(&c->allocator, c->tab);
		chan__free(&c->allocator, c->spare);
		chan__free(&c->allocator, c->outbox);
		c->tab = NULL;
		c->tabcap = 0;
		c->spare = NULL;
		c->outbox = NULL;
		c->outcap = 0;
		/* The idle buffers go back to the allocator they came from. */
		chan__free(&c->allocator, c->sbuf);
		chan__free(&c->allocator, c->rbuf);
		chan__enc_fini(&c->enc);
		c->sbuf = c->rbuf = NULL;
		c->scap = c->rcap = 0;
		memset(&c->allocator, 0, sizeof(c->allocator));
		if (a)
			c->allocator = *a;
	}
	pthread_mutex_unlock(&c->mux_lock);
	pthread_mutex_unlock(&c->recv_lock);
	pthread_mutex_unlock(&c->send_lock);
	return r;
}

CHAN_EXPORT int
chan_conn_peer_cred(const chan_conn *c, struct chan_peer_cred *ret_cred)
{
	pid_t pid;
	uid_t uid;
	gid_t gid;

	if (!c || !ret_cred)
		return CHAN_E_INVALID_ARGUMENT;
	if (CHAN__IS_CHANNEL(c)) /* the peer of its connection */
		c = chan__chan_conn((struct chan__chan *)(void *)(uintptr_t)c);
	if (chan_plat_peer_cred(c->fd, &pid, &uid, &gid) < 0)
		return CHAN_E_SYSTEM;
	ret_cred->pid = pid;
	ret_cred->uid = uid;
	ret_cred->gid = gid;
	return 0;
}

CHAN_EXPORT int
chan_writer_handle_borrow_conn(chan_writer *w, const chan_conn *conn)
{
	if (!w)
		return CHAN_E_INVALID_ARGUMENT;
	if (conn && CHAN__IS_CHANNEL(conn))
		return chan__writer_fail(w, CHAN_E_CHANNEL_NOT_TRANSFERABLE,
					 "chan_writer_handle_borrow_conn: a channel endpoint has no "
					 "socket of its own (SPEC.md §18.7)");
	return chan__writer_handle(w, "chan_writer_handle_borrow_conn", CHAN_KIND_CONN,
				   conn ? conn->fd : -1, conn ? chan__conn_handle_id(conn) : 0);
}
