/*
 * sock.c - one sendmsg or recvmsg with descriptors (SPEC.md §10.2-§10.4).
 *
 * The only place in libchan that builds or parses SCM_RIGHTS control
 * messages.  The transport (io.c) frames with these two calls; tools and
 * tests that write frames byte by byte use them too (chan.h).
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "platform.h"

/* Room for the most descriptors a frame may carry, plus the other control
 * messages a receiver may be sent without asking for them in a way that
 * matters here: SCM_CREDENTIALS (SO_PASSCRED) and SCM_PIDFD (SO_PASSPIDFD). */
#define MAX_FDS CHAN_HARD_MAX_HANDLES
#define CTL_SPACE                                                              \
	(CMSG_SPACE(MAX_FDS * sizeof(int)) + CMSG_SPACE(sizeof(struct ucred)) +   \
	 CMSG_SPACE(sizeof(int)))

#ifndef SCM_PIDFD
#define SCM_PIDFD 0x04
#endif

ssize_t
chan__sock_sendv(int sock, const struct iovec *iov, size_t niov, const int *fds, size_t nfds,
		 bool dontwait)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
	} ctl;
	struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = niov};
	ssize_t n;

	if ((!fds && nfds) || nfds > MAX_FDS)
		return CHAN_E_INVALID_ARGUMENT;
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
	do
		n = chan_plat_sendmsg(sock, &mh, dontwait);
	while (n < 0 && errno == EINTR);
	if (n >= 0)
		return n;
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return CHAN_E_WOULD_BLOCK;
	if (errno == EPIPE || errno == ECONNRESET)
		return CHAN_E_CONNECTION_CLOSED;
	if (errno == EBADF)
		return CHAN_E_INVALID_ARGUMENT; /* sock, or a descriptor to pass */
	return CHAN_E_SYSTEM;
}

CHAN_EXPORT ssize_t
chan_sock_send(int sock, const void *buf, size_t len, const int *fds, size_t nfds,
	       bool dontwait)
{
	struct iovec iov = {(void *)buf, len};

	if (!buf && len)
		return CHAN_E_INVALID_ARGUMENT;
	return chan__sock_sendv(sock, &iov, 1, fds, nfds, dontwait);
}

CHAN_EXPORT ssize_t
chan_sock_recv(int sock, void *buf, size_t cap, int *fds, size_t fds_cap, bool dontwait,
	       size_t *ret_nfds)
{
	union {
		struct cmsghdr align;
		char buf[CTL_SPACE];
	} ctl;
	struct iovec iov = {buf, cap};
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = ctl.buf,
		/* CMSG_LEN, not CMSG_SPACE, for the descriptors' part: no
		 * descriptor can land in alignment padding (CVE-2014-3635,
		 * SPEC.md §10.4). */
		.msg_controllen = CTL_SPACE - (CMSG_SPACE(MAX_FDS * sizeof(int)) -
					       CMSG_LEN(MAX_FDS * sizeof(int))),
	};
	int got[MAX_FDS + 1];
	size_t ngot = 0;
	ssize_t n;

	if ((!buf && cap) || (!fds && fds_cap) || !ret_nfds)
		return CHAN_E_INVALID_ARGUMENT;
	do
		n = chan_plat_recvmsg(sock, &mh, dontwait);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return CHAN_E_WOULD_BLOCK;
		return CHAN_E_SYSTEM;
	}
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		size_t k;

		if (cm->cmsg_level != SOL_SOCKET)
			continue;
		if (cm->cmsg_type == SCM_PIDFD && cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
			int pidfd;

			/* Sent because the receiver set SO_PASSPIDFD: not
			 * part of any frame, and ours to close. */
			memcpy(&pidfd, CMSG_DATA(cm), sizeof(int));
			chan__close_fds(&pidfd, 1);
			continue;
		}
		if (cm->cmsg_type != SCM_RIGHTS)
			continue; /* SCM_CREDENTIALS (SO_PASSCRED): no descriptor */
		k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t j = 0; j < k; j++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + j * sizeof(int), sizeof(int));
			if (ngot < MAX_FDS)
				got[ngot++] = fd;
			else
				chan__close_fds(&fd, 1);
		}
	}
	if ((mh.msg_flags & MSG_CTRUNC) || ngot > fds_cap) {
		chan__close_fds(got, ngot);
		return CHAN_E_HANDLES_TRUNCATED;
	}
	memcpy(fds, got, ngot * sizeof(int));
	*ret_nfds = ngot;
	return n;
}
