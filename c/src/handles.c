/*
 * handles.c - descriptors in messages (SPEC.md §4.2, §4.3, §6, §10.6).
 *
 * Everything that looks at a handle's descriptor is here: making handle
 * values from a caller's fd (copy, move, borrow), checking that a conn
 * handle's fd is a connected AF_UNIX stream socket, and giving a received
 * frame's descriptors to its message in one pass that also applies the
 * receive-side self-send rule.  The codec proper (value.c, encode.c,
 * decode.c) never calls the operating system.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"
#include "platform.h"

int
chan__dup_cloexec(int fd)
{
	/* >= 3: never land on a closed stdin/stdout/stderr slot. */
	return fcntl(fd, F_DUPFD_CLOEXEC, 3);
}

void
chan__close_fds(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (fds[i] >= 0) {
			int saved = errno;

			close(fds[i]);
			errno = saved;
			fds[i] = -1;
		}
	}
}

int
chan__conn_fd_check(int fd, uint64_t *ret_id)
{
	struct sockaddr_un peer;
	socklen_t len = sizeof(peer);
	int type = 0;

	/* One getpeername answers three questions: is it a socket
	 * (ENOTSOCK), is it connected (ENOTCONN: a listening or an unconnected
	 * socket), and of which family. */
	if (getpeername(fd, (struct sockaddr *)&peer, &len) < 0) {
		if (errno == ENOTSOCK || errno == ENOTCONN)
			return CHAN_E_WRONG_HANDLE_KIND;
		return errno == EBADF ? CHAN_E_INVALID_ARGUMENT : CHAN_E_SYSTEM;
	}
	if (len < sizeof(sa_family_t) || peer.sun_family != AF_UNIX)
		return CHAN_E_WRONG_HANDLE_KIND;
	len = sizeof(type);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
		return CHAN_E_SYSTEM;
	if (type != SOCK_STREAM)
		return CHAN_E_WRONG_HANDLE_KIND;
	if (ret_id && chan_plat_socket_id(fd, ret_id) < 0)
		return CHAN_E_SYSTEM;
	return 0;
}

/* ---- handle constructors ---- */

enum verb { COPY, MOVE, BORROW };

static chan_value *
handle_from_fd(chan_msg *msg, const char *caller, enum chan_kind kind, int fd,
	       enum verb verb)
{
	uint64_t id = 0;
	chan_value *v;
	int r, own_fd = fd;

	if (!msg || chan_msg_error(msg))
		return NULL;
	if (fd < 0 || (kind != CHAN_KIND_FD && kind != CHAN_KIND_CONN))
		return chan__handle_new(msg, caller, kind, fd, false, 0); /* poisons */
	if (kind == CHAN_KIND_CONN) {
		r = chan__conn_fd_check(fd, &id);
		if (r < 0) {
			chan__poison(msg, r, "%s: fd %d %s", caller, fd,
				     r == CHAN_E_INVALID_ARGUMENT ? "is not open"
				     : r == CHAN_E_WRONG_HANDLE_KIND
					     ? "is not a connected AF_UNIX stream socket"
					     : "could not be checked");
			return NULL;
		}
	}
	if (verb == COPY) {
		own_fd = chan__dup_cloexec(fd);
		if (own_fd < 0) {
			chan__poison(msg, errno == EBADF ? CHAN_E_INVALID_ARGUMENT : CHAN_E_SYSTEM,
				     "%s: fd %d %s", caller, fd,
				     errno == EBADF ? "is not open" : "could not be duplicated");
			return NULL;
		}
	} else if (verb == MOVE && kind == CHAN_KIND_FD && fcntl(fd, F_GETFD) < 0) {
		/* Taking a closed fd would make chan_msg_free close a number
		 * that may be reused by then. */
		chan__poison(msg, CHAN_E_INVALID_ARGUMENT, "%s: fd %d is not open", caller, fd);
		return NULL;
	}
	v = chan__handle_new(msg, caller, kind, own_fd, verb == BORROW, id);
	if (!v && verb == COPY)
		close(own_fd);
	return v;
}

CHAN_EXPORT chan_value *
chan_handle_copy(chan_msg *msg, enum chan_kind kind, int fd)
{
	return handle_from_fd(msg, "chan_handle_copy", kind, fd, COPY);
}

CHAN_EXPORT chan_value *
chan_handle_move(chan_msg *msg, enum chan_kind kind, int fd)
{
	return handle_from_fd(msg, "chan_handle_move", kind, fd, MOVE);
}

CHAN_EXPORT chan_value *
chan_handle_borrow(chan_msg *msg, enum chan_kind kind, int fd)
{
	return handle_from_fd(msg, "chan_handle_borrow", kind, fd, BORROW);
}

/* ---- a received frame's descriptors ---- */

int
chan__handles_attach(chan_msg *msg, int *fds, size_t nfds, uint64_t own_id)
{
	int kind_err = 0, self_err = 0;
	size_t k = 0;

	if (!fds) /* decoded detached: the handles keep fd -1 */
		return 0;
	/* A decoded message lists its handles in wire order, and the walk
	 * proved that the k-th one has index k.  Each fd moves into its value
	 * as it is checked, so whatever happens every fd is closed exactly
	 * once: by chan_msg_free if it moved, below if not. */
	for (chan_value *v = msg->handles_head; v; v = v->u.h.next, k++) {
		uint64_t id = 0;

		if (v->kind == CHAN_KIND_CONN) {
			int r = chan__conn_fd_check(fds[k], own_id ? &id : NULL);

			if (r < 0) {
				/* SPEC.md §9.3 item 12: WRONG_HANDLE_KIND, or
				 * SYSTEM if the check itself failed. */
				kind_err = r;
				break;
			}
			if (own_id && id == own_id && !self_err)
				self_err = CHAN_E_SELF_SEND; /* item 13: after every kind */
		}
		v->u.h.fd = fds[k];
		v->u.h.socket_id = id;
	}
	if (kind_err || self_err) {
		chan_msg_free(msg);
		chan__close_fds(fds + k, nfds - k);
		return kind_err ? kind_err : self_err;
	}
	return 0;
}

/* ---- chan_decode: a frame in memory with its descriptors ---- */

CHAN_EXPORT int
chan_decode(const void *buf, size_t len, int *fds, size_t nfds, unsigned flags,
	    const struct chan_limits *limits, const struct chan_allocator *allocator,
	    chan_msg **ret_msg, size_t *ret_consumed)
{
	struct chan_limits lim = chan__limits(limits);
	bool detached = flags & CHAN_DECODE_DETACHED;
	struct chan_header h;
	chan_msg *msg = NULL;
	int r, frame_err;

	if (!ret_msg || (!buf && len) || (!fds && nfds) || (detached && nfds) ||
	    (flags & ~(unsigned)(CHAN_DECODE_DETACHED | CHAN_DECODE_BORROW |
				 CHAN_DECODE_REVISION_1_1))) {
		r = CHAN_E_INVALID_ARGUMENT;
		goto fail;
	}
	/* SPEC.md §9.3, items 1-7. */
	if (len < CHAN_HEADER_SIZE) {
		r = CHAN_E_TRUNCATED;
		goto fail;
	}
	if ((r = chan__header_read(buf, &lim,
				   flags & CHAN_DECODE_REVISION_1_1
					   ? CHAN__ACCEPT_HELLO | CHAN__ACCEPT_AGREED |
						     CHAN__ACCEPT_CHANNELS
					   : 0,
				   &h, &frame_err)) < 0)
		goto fail;
	if (len - CHAN_HEADER_SIZE < h.payload_length) {
		r = CHAN_E_TRUNCATED;
		goto fail;
	}
	if ((r = frame_err) < 0)
		goto fail;
	r = chan__decode_payload((const uint8_t *)buf + CHAN_HEADER_SIZE, &h, nfds, flags,
				 &lim, allocator, &msg);
	if (r < 0)
		goto fail;
	if ((r = chan__handles_attach(msg, detached ? NULL : fds, nfds, 0)) < 0)
		return r; /* msg freed, fds closed */
	/* A control frame's value must be a control message (SPEC.md §17.2),
	 * checked after every rule of §9.3. */
	if ((flags & CHAN_DECODE_REVISION_1_1) && (h.flags & CHAN__FLAG_CONTROL) &&
	    (r = chan__control_check(&h, msg)) < 0) {
		chan_msg_free(msg);
		return r;
	}
	*ret_msg = msg;
	if (ret_consumed)
		*ret_consumed = CHAN_HEADER_SIZE + h.payload_length;
	return 0;
fail:
	if (fds)
		chan__close_fds(fds, nfds);
	return r;
}
