/* fd.c - descriptor helpers used by the codec (the transport's own calls are
 * in platform_linux.c). */
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

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
chan__check_conn_fd(int fd)
{
	int domain = 0, type = 0;
	socklen_t len = sizeof(domain);

	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0) {
		/* ENOTSOCK: an fd that is not a socket is simply the wrong kind. */
		return errno == ENOTSOCK ? CHAN_E_WRONG_HANDLE_KIND : CHAN_E_SYSTEM;
	}
	len = sizeof(type);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
		return CHAN_E_SYSTEM;
	if (domain != AF_UNIX || type != SOCK_STREAM)
		return CHAN_E_WRONG_HANDLE_KIND;
	return 0;
}
