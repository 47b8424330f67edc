/*
 * platform.h - the operating-system calls of the transport (SPEC.md §10).
 *
 * conn.c is written against this small interface; platform_linux.c is the
 * only file that knows Linux (SOCK_CLOEXEC, accept4, MSG_CMSG_CLOEXEC,
 * MSG_NOSIGNAL, SO_PEERCRED, abstract names, sock_diag).  A port to BSD or
 * macOS supplies another platform_*.c (SPEC.md §10.8).
 *
 * Conventions: like the system calls they wrap, these return -1 (or NULL)
 * with errno set on failure.  Every descriptor they create is close-on-exec
 * from birth.  None of them blocks except chan_plat_connect (a connect to a
 * listener whose backlog is full waits, as connect(2) does) and send and
 * receive when asked to.
 */
#ifndef CHAN_PLATFORM_H
#define CHAN_PLATFORM_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

/* A resolved listener name: a path or, on Linux, "@name" (abstract). */
struct chan_plat_addr {
	struct sockaddr_un sun;
	socklen_t len;
	int is_path; /* 1: a filesystem path that bind creates */
};

/* Resolve name; -1/EINVAL if empty, ENAMETOOLONG if it does not fit. */
int chan_plat_addr(const char *name, struct chan_plat_addr *ret);

/* A connected pair of AF_UNIX SOCK_STREAM sockets. */
int chan_plat_socketpair(int sv[2]);
/* A listening socket bound to addr.  The listening socket is non-blocking
 * (accept is driven by poll); accepted sockets are not. */
int chan_plat_listen(const struct chan_plat_addr *addr);
/* Accept one connection: the new socket, or -1 (EAGAIN when none waits). */
int chan_plat_accept(int listen_fd);
/* A new socket connected to addr (EINTR handled). */
int chan_plat_connect(const struct chan_plat_addr *addr);

/* recvmsg with received descriptors close-on-exec; MSG_DONTWAIT if
 * dontwait (the socket itself is never made non-blocking). */
ssize_t chan_plat_recvmsg(int fd, struct msghdr *msg, int dontwait);
/* sendmsg that never raises SIGPIPE (EPIPE instead); MSG_DONTWAIT if
 * dontwait. */
ssize_t chan_plat_sendmsg(int fd, const struct msghdr *msg, int dontwait);

/* The socket's identity (its inode on Linux). */
int chan_plat_socket_id(int fd, uint64_t *ret);
/* The identity of the socket fd is connected to, as chan_plat_socket_id
 * would report it in the peer's process; -1 if the system cannot tell. */
int chan_plat_peer_id(int fd, uint64_t own_id, uint64_t *ret);
/* pid, uid, gid of the peer at connect time. */
int chan_plat_peer_cred(int fd, pid_t *pid, uid_t *uid, gid_t *gid);

#endif /* CHAN_PLATFORM_H */
