/*
 * inject.c - the inj_* functions libchan_inj.a calls instead of the C
 * library's (see inject.h).  Each asks the plan, then fails, shortens or
 * passes the call, and keeps the books: calls, live heap blocks, bad
 * closes, bytes and descriptors through sendmsg/recvmsg.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "inject.h"

/* Prototypes of the renamed symbols (they exist only in this program). */
void *inj_malloc(size_t n);
void *inj_calloc(size_t n, size_t m);
void *inj_realloc(void *p, size_t n);
void inj_free(void *p);
char *inj_strdup(const char *s);
ssize_t inj_sendmsg(int fd, const struct msghdr *mh, int flags);
ssize_t inj_recvmsg(int fd, struct msghdr *mh, int flags);
int inj_poll(struct pollfd *p, nfds_t n, int timeout);
int inj_fcntl(int fd, int cmd, ...);
int inj_fstat(int fd, struct stat *st);
int inj_getsockopt(int fd, int level, int name, void *val, socklen_t *len);
int inj_socket(int domain, int type, int proto);
int inj_socketpair(int domain, int type, int proto, int sv[2]);
ssize_t inj_sendto(int fd, const void *p, size_t n, int flags,
		   const struct sockaddr *to, socklen_t tolen);
ssize_t inj_recv(int fd, void *p, size_t n, int flags);
int inj_close(int fd);
int inj_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
int inj_getpeername(int fd, struct sockaddr *addr, socklen_t *len);

static inj_plan_fn plan;
static void *plan_ctx;
static struct inj_stats st;

void
inj_set_plan(inj_plan_fn p, void *ctx)
{
	plan = p;
	plan_ctx = ctx;
}

void
inj_reset(void)
{
	struct inj_stats keep = st;

	memset(&st, 0, sizeof(st));
	st.live_blocks = keep.live_blocks;
	memcpy(st.total_calls, keep.total_calls, sizeof(st.total_calls));
	memcpy(st.total_injected, keep.total_injected, sizeof(st.total_injected));
}

const char *
inj_fn_name(enum inj_fn fn)
{
	static const char *const names[INJ_NFN] = {
		"malloc/calloc/realloc/strdup", "sendmsg", "recvmsg", "poll",
		"fcntl(F_DUPFD_CLOEXEC)", "fstat", "getsockopt",
		"socket/socketpair", "sendto", "recv", "close", "accept4", "getpeername"};

	return (unsigned)fn < INJ_NFN ? names[fn] : "?";
}

const struct inj_stats *
inj_stats(void)
{
	return &st;
}

struct inj_action
inj_plan_fail_nth(enum inj_fn fn, long nth, int fd, size_t size, void *ctx)
{
	const struct inj_fail_nth *f = ctx;

	(void)fd;
	(void)size;
	if (fn == f->fn && nth == f->nth)
		return (struct inj_action){INJ_FAIL, f->err, 0};
	return (struct inj_action){INJ_PASS, 0, 0};
}

static struct inj_action
ask(enum inj_fn fn, int fd, size_t size)
{
	long nth = ++st.calls[fn];
	struct inj_action a = {INJ_PASS, 0, 0};

	st.total_calls[fn]++;
	if (plan)
		a = plan(fn, nth, fd, size, plan_ctx);
	if (a.kind != INJ_PASS) {
		st.injected[fn]++;
		st.total_injected[fn]++;
	}
	return a;
}

/* ---- heap ---- */

void *
inj_malloc(size_t n)
{
	struct inj_action a = ask(INJ_MALLOC, -1, n);
	void *p;

	if (a.kind == INJ_FAIL) {
		errno = ENOMEM;
		return NULL;
	}
	if ((p = malloc(n)) != NULL)
		st.live_blocks++;
	return p;
}

void *
inj_calloc(size_t n, size_t m)
{
	struct inj_action a = ask(INJ_MALLOC, -1, n * m);
	void *p;

	if (a.kind == INJ_FAIL) {
		errno = ENOMEM;
		return NULL;
	}
	if ((p = calloc(n, m)) != NULL)
		st.live_blocks++;
	return p;
}

void *
inj_realloc(void *p, size_t n)
{
	struct inj_action a = ask(INJ_MALLOC, -1, n);
	void *q;

	if (a.kind == INJ_FAIL) {
		errno = ENOMEM;
		return NULL;
	}
	q = realloc(p, n);
	if (q && !p)
		st.live_blocks++;
	return q;
}

void
inj_free(void *p)
{
	if (p)
		st.live_blocks--;
	free(p);
}

char *
inj_strdup(const char *s)
{
	struct inj_action a = ask(INJ_MALLOC, -1, strlen(s) + 1);
	char *p;

	if (a.kind == INJ_FAIL) {
		errno = ENOMEM;
		return NULL;
	}
	if ((p = strdup(s)) != NULL)
		st.live_blocks++;
	return p;
}

/* ---- I/O ---- */

static size_t
iov_total(const struct msghdr *mh)
{
	size_t n = 0;

	for (size_t i = 0; i < mh->msg_iovlen; i++)
		n += mh->msg_iov[i].iov_len;
	return n;
}

static size_t
count_fds(const struct msghdr *mh)
{
	size_t n = 0;

	if (!mh->msg_control || mh->msg_controllen < sizeof(struct cmsghdr))
		return 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR((struct msghdr *)mh); c;
	     c = CMSG_NXTHDR((struct msghdr *)mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			n += (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
	return n;
}

ssize_t
inj_sendmsg(int fd, const struct msghdr *mh, int flags)
{
	struct inj_action a = ask(INJ_SENDMSG, fd, iov_total(mh));
	struct msghdr m = *mh;
	struct iovec iov[8];
	ssize_t n;

	if (a.kind == INJ_FAIL) {
		errno = a.err;
		return -1;
	}
	if (a.kind == INJ_LIMIT) {
		size_t left = a.limit;

		if (!left) {
			errno = EAGAIN;
			return -1;
		}
		if (m.msg_iovlen > 8)
			m.msg_iovlen = 8;
		memcpy(iov, mh->msg_iov, m.msg_iovlen * sizeof(*iov));
		for (size_t i = 0; i < m.msg_iovlen; i++) {
			if (iov[i].iov_len > left)
				iov[i].iov_len = left;
			left -= iov[i].iov_len;
		}
		m.msg_iov = iov;
	}
	n = sendmsg(fd, &m, flags);
	if (n > 0) {
		st.bytes_sent += n;
		st.fds_sent += (long)count_fds(mh);
	}
	return n;
}

ssize_t
inj_recvmsg(int fd, struct msghdr *mh, int flags)
{
	struct inj_action a = ask(INJ_RECVMSG, fd, iov_total(mh));
	size_t saved_len = 0;
	ssize_t n;

	if (a.kind == INJ_FAIL) {
		errno = a.err;
		return -1;
	}
	if (a.kind == INJ_LIMIT && mh->msg_iovlen >= 1) {
		saved_len = mh->msg_iov[0].iov_len;
		if (a.limit < saved_len)
			mh->msg_iov[0].iov_len = a.limit;
		if (mh->msg_iov[0].iov_len == 0) {
			mh->msg_iov[0].iov_len = saved_len;
			errno = EAGAIN;
			return -1;
		}
	}
	if (a.kind == INJ_CTRL && a.limit < mh->msg_controllen)
		mh->msg_controllen = a.limit;
	n = recvmsg(fd, mh, flags);
	if (a.kind == INJ_LIMIT && mh->msg_iovlen >= 1)
		mh->msg_iov[0].iov_len = saved_len;
	if (n >= 0) {
		st.bytes_received += n;
		st.fds_received += (long)count_fds(mh);
	}
	return n;
}

int
inj_poll(struct pollfd *p, nfds_t n, int timeout)
{
	struct inj_action a = ask(INJ_POLL, n ? p[0].fd : -1, (size_t)timeout);

	if (a.kind == INJ_FAIL) {
		errno = a.err;
		return -1;
	}
	if (a.kind == INJ_TIMEOUT) {
		for (nfds_t i = 0; i < n; i++)
			p[i].revents = 0;
		return 0;
	}
	if (a.kind == INJ_REVENTS && n) {
		for (nfds_t i = 0; i < n; i++)
			p[i].revents = 0;
		p[0].revents = (short)a.limit;
		return 1;
	}
	return poll(p, n, timeout);
}

int
inj_fcntl(int fd, int cmd, ...)
{
	va_list ap;
	int arg = 0;

	switch (cmd) {
	case F_DUPFD:
	case F_DUPFD_CLOEXEC:
	case F_SETFD:
	case F_SETFL:
		va_start(ap, cmd);
		arg = va_arg(ap, int);
		va_end(ap);
		break;
	default:
		break;
	}
	if (cmd == F_DUPFD_CLOEXEC) {
		struct inj_action a = ask(INJ_FCNTL, fd, 0);

		if (a.kind == INJ_FAIL) {
			errno = a.err;
			return -1;
		}
	}
	return fcntl(fd, cmd, arg);
}

int
inj_fstat(int fd, struct stat *s)
{
	struct inj_action a = ask(INJ_FSTAT, fd, 0);

	if (a.kind == INJ_FAIL) {
		errno = a.err;
		return -1;
	}
	return fstat(fd, s);
}

int
inj_getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	struct inj_action a = ask(INJ_GETSOCKOPT, fd, 0);

	if (a.kind == INJ_FAIL) {
		errno = a.err;
		return -1;
	}
	return getsockopt(fd, level, name, val, len);
}

int
inj_getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
	struct inj_action a = ask(INJ_GETPEERNAME, fd, 0);

	if (a.kind == INJ_FAIL) {
		errno = a.err;
		return -1;
	}
	return getpeername(fd, addr, len);
}

int
inj_socket(int domain, int type, int proto)
{
	struct inj_action a = ask(INJ_SOCKET, -1, 0);

	if (a.kind == INJ_FAIL) {
		errno = a.err;
		return -1;
	}
	return socket(domain, type, proto);
}

int
inj_socketpair(int domain, int type, int proto, int sv[2])
{
	struct inj_action a = ask(INJ_SOCKET, -1, 0);

	if (a.kind == INJ_FAIL) {
		errno = a.err;
		return -1;
	}
	return socketpair(domain, type, proto, sv);
}

ssize_t
inj_sendto(int fd, const void *p, size_t n, int flags, const struct sockaddr *to,
	   socklen_t tolen)
{
	struct inj_action a = ask(INJ_SENDTO, fd, n);

	if (a.kind == INJ_FAIL) {
		errno = a.err;
		return -1;
	}
	return sendto(fd, p, n, flags, to, tolen);
}

ssize_t
inj_recv(int fd, void *p, size_t n, int flags)
{
	struct inj_action a = ask(INJ_RECV, fd, n);

	if (a.kind == INJ_FAIL) {
		errno = a.err;
		return -1;
	}
	return recv(fd, p, n, flags);
}

int
inj_close(int fd)
{
	int r;

	ask(INJ_CLOSE, fd, 0); /* counted, never failed: close must not fail */
	r = close(fd);
	if (r < 0 && errno == EBADF)
		st.bad_closes++;
	return r;
}

int
inj_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	struct inj_action a = ask(INJ_ACCEPT4, fd, 0);

	if (a.kind == INJ_FAIL) {
		errno = a.err;
		return -1;
	}
	return accept4(fd, addr, len, flags);
}
