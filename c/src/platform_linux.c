/*
 * platform_linux.c - the Linux system calls of the transport (platform.h).
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>

#include "platform.h"

int
chan_plat_addr(const char *name, struct chan_plat_addr *ret)
{
	size_t n = strlen(name);

	memset(ret, 0, sizeof(*ret));
	ret->sun.sun_family = AF_UNIX;
	if (n == 0 || (name[0] == '@' && n == 1)) {
		errno = EINVAL;
		return -1;
	}
	if (n > sizeof(ret->sun.sun_path) - 1) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if (name[0] == '@') {
		/* Abstract: a leading NUL, then the name without terminator;
		 * the length counts exactly the name's bytes. */
		memcpy(ret->sun.sun_path + 1, name + 1, n - 1);
		ret->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
		ret->is_path = 0;
	} else {
		memcpy(ret->sun.sun_path, name, n);
		ret->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
		ret->is_path = 1;
	}
	return 0;
}

int
chan_plat_socketpair(int sv[2])
{
	return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
}

int
chan_plat_listen(const struct chan_plat_addr *addr)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (fd < 0)
		return -1;
	if (bind(fd, (const struct sockaddr *)&addr->sun, addr->len) < 0)
		goto fail;
	if (listen(fd, SOMAXCONN) < 0) {
		int saved = errno;

		if (addr->is_path)
			unlink(addr->sun.sun_path);
		errno = saved;
		goto fail;
	}
	return fd;
fail:;
	int saved = errno;

	close(fd);
	errno = saved;
	return -1;
}

int
chan_plat_accept(int listen_fd)
{
	/* No SOCK_NONBLOCK: the connection's socket stays blocking; libchan
	 * uses MSG_DONTWAIT per call. */
	return accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
}

int
chan_plat_connect(const struct chan_plat_addr *addr)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	while (connect(fd, (const struct sockaddr *)&addr->sun, addr->len) < 0) {
		if (errno == EINTR)
			continue;
		if (errno == EISCONN) /* an interrupted attempt completed */
			break;
		int saved = errno;

		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

ssize_t
chan_plat_recvmsg(int fd, struct msghdr *msg, int dontwait)
{
	return recvmsg(fd, msg, MSG_CMSG_CLOEXEC | (dontwait ? MSG_DONTWAIT : 0));
}

ssize_t
chan_plat_sendmsg(int fd, const struct msghdr *msg, int dontwait)
{
	return sendmsg(fd, msg, MSG_NOSIGNAL | (dontwait ? MSG_DONTWAIT : 0));
}

int
chan_plat_socket_id(int fd, uint64_t *ret)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -1;
	if (!S_ISSOCK(st.st_mode)) {
		errno = ENOTSOCK;
		return -1;
	}
	*ret = (uint64_t)st.st_ino;
	return 0;
}

/*
 * Ask NETLINK_SOCK_DIAG for the unix socket with inode own_id and its
 * UNIX_DIAG_PEER attribute.  Needs the unix_diag module (CONFIG_UNIX_DIAG);
 * without it the request fails and the caller compares own ids only.
 */
int
chan_plat_peer_id(int fd, uint64_t own_id, uint64_t *ret)
{
	struct {
		struct nlmsghdr nlh;
		struct unix_diag_req req;
	} rq;
	union {
		struct nlmsghdr align;
		char buf[1024];
	} rs;
	struct sockaddr_nl nladdr = {.nl_family = AF_NETLINK};
	int nl, found = 0;
	ssize_t n;

	(void)fd;
	if (own_id > UINT32_MAX) { /* udiag_ino is 32 bits */
		errno = EOVERFLOW;
		return -1;
	}
	nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (nl < 0)
		return -1;
	memset(&rq, 0, sizeof(rq));
	rq.nlh.nlmsg_len = sizeof(rq);
	rq.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	rq.nlh.nlmsg_flags = NLM_F_REQUEST;
	rq.nlh.nlmsg_seq = 1;
	rq.req.sdiag_family = AF_UNIX;
	rq.req.udiag_states = ~0u;
	rq.req.udiag_ino = (uint32_t)own_id;
	rq.req.udiag_show = UDIAG_SHOW_PEER;
	rq.req.udiag_cookie[0] = rq.req.udiag_cookie[1] = ~0u;
	do
		n = sendto(nl, &rq, sizeof(rq), 0, (struct sockaddr *)&nladdr,
			   sizeof(nladdr));
	while (n < 0 && errno == EINTR);
	if (n < 0)
		goto fail;
	do
		n = recv(nl, rs.buf, sizeof(rs.buf), 0);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		goto fail;
	for (struct nlmsghdr *h = &rs.align; NLMSG_OK(h, n);
	     h = NLMSG_NEXT(h, n)) {
		if (h->nlmsg_type == NLMSG_ERROR) {
			const struct nlmsgerr *e = NLMSG_DATA(h);

			errno = e->error ? -e->error : ENOENT;
			goto fail;
		}
		if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
		    h->nlmsg_len < NLMSG_LENGTH(sizeof(struct unix_diag_msg)))
			continue;
		const struct unix_diag_msg *m = NLMSG_DATA(h);
		int len = (int)(h->nlmsg_len -
				NLMSG_LENGTH(sizeof(struct unix_diag_msg)));

		if (m->udiag_ino != own_id)
			continue;
		for (const struct rtattr *a = (const void *)(m + 1);
		     RTA_OK(a, len); a = RTA_NEXT(a, len)) {
			if (a->rta_type == UNIX_DIAG_PEER &&
			    RTA_PAYLOAD(a) >= sizeof(uint32_t)) {
				uint32_t peer;

				memcpy(&peer, RTA_DATA(a), sizeof(peer));
				*ret = peer;
				found = 1;
			}
		}
	}
	close(nl);
	if (!found) {
		errno = ENOENT;
		return -1;
	}
	return 0;
fail:;
	int saved = errno;

	close(nl);
	errno = saved;
	return -1;
}

int
chan_plat_peer_cred(int fd, pid_t *pid, uid_t *uid, gid_t *gid)
{
	struct ucred uc;
	socklen_t len = sizeof(uc);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
		return -1;
	*pid = uc.pid;
	*uid = uc.uid;
	*gid = uc.gid;
	return 0;
}
