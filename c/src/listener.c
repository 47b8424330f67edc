/*
 * listener.c - listening on a socket name, accepting, connecting
 * (SPEC.md §10.1).
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conn.h"
#include "platform.h"

struct chan_listener {
	int fd;
	char *path; /* bound filesystem path, NULL for abstract names */
	dev_t dev;  /* the socket file we created, so free unlinks only it */
	ino_t ino;
};


CHAN_EXPORT int
chan_listen(const char *path, chan_listener **ret_listener)
{
	struct chan_plat_addr addr;
	chan_listener *l;
	struct stat st;
	int saved;

	if (!path || !ret_listener)
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
	*ret_listener = l;
	return 0;
fail:
	saved = errno;
	free(l->path);
	free(l);
	errno = saved;
	return CHAN_E_SYSTEM;
}

CHAN_EXPORT int
chan_listener_accept(chan_listener *l, int timeout_ms, chan_conn **ret_conn)
{
	struct chan__deadline d;
	int fd, r;

	if (!l || !ret_conn)
		return CHAN_E_INVALID_ARGUMENT;
	chan__deadline_start(&d, timeout_ms);
	for (;;) {
		fd = chan_plat_accept(l->fd);
		if (fd >= 0)
			break;
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return CHAN_E_SYSTEM;
		if ((r = chan__wait_fd(l->fd, POLLIN, &d)) < 0)
			return r;
	}
	if ((r = chan__conn_new(fd, ret_conn)) < 0) {
		int saved = errno;

		close(fd);
		errno = saved;
	}
	return r;
}

CHAN_EXPORT int
chan_listener_borrow_fd(const chan_listener *l)
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
chan_connect(const char *path, chan_conn **ret_conn)
{
	struct chan_plat_addr addr;
	int fd, r;

	if (!path || !ret_conn)
		return CHAN_E_INVALID_ARGUMENT;
	if (chan_plat_addr(path, &addr) < 0)
		return CHAN_E_INVALID_ARGUMENT;
	fd = chan_plat_connect(&addr);
	if (fd < 0)
		return CHAN_E_SYSTEM;
	if ((r = chan__conn_new(fd, ret_conn)) < 0) {
		int saved = errno;

		close(fd);
		errno = saved;
	}
	return r;
}
