/*
 * inject.h - fault injection under libchan (issue 7 §2).
 *
 * hardening.mk makes build/.../hardening/libchan_inj.a: a copy of libchan.a
 * whose references to the C library's allocation and I/O functions are
 * renamed (objcopy --redefine-sym) to the inj_* functions of inject.c.  Only
 * libchan's own calls go through them; the test program, libc's internals
 * and the sanitizers call the real functions.  So the injection binary sees
 * every allocation libchan makes behind the allocator hook too, and every
 * system call of its send and receive paths.
 */
#ifndef CHAN_HARDENING_INJECT_H
#define CHAN_HARDENING_INJECT_H

#include <stddef.h>
#include <sys/types.h>

/* Wrapped functions. */
enum inj_fn {
	INJ_MALLOC, /* malloc, calloc, realloc, strdup: one counter */
	INJ_SENDMSG,
	INJ_RECVMSG,
	INJ_POLL,
	INJ_FCNTL,      /* fcntl(F_DUPFD_CLOEXEC) only */
	INJ_FSTAT,
	INJ_GETSOCKOPT,
	INJ_SOCKET,     /* socket, socketpair */
	INJ_SENDTO,
	INJ_RECV,
	INJ_CLOSE,
	INJ_ACCEPT4,
	INJ_GETPEERNAME, /* the conn handle check */
	INJ_NFN
};

/* What a wrapped call does. */
enum inj_kind {
	INJ_PASS = 0,  /* call the real function */
	INJ_FAIL,      /* return -1 (NULL) with errno = err, call nothing */
	INJ_LIMIT,     /* sendmsg/recvmsg: at most `limit` bytes this call */
	INJ_CTRL,      /* recvmsg: control buffer of `limit` bytes */
	INJ_TIMEOUT,   /* poll: return 0 at once */
	INJ_REVENTS,   /* poll: return 1 with revents = `limit` at once */
	INJ_RESET,     /* recvmsg: as ECONNRESET */
};

struct inj_action {
	enum inj_kind kind;
	int err;
	size_t limit;
};

/*
 * The plan: called before every wrapped call libchan makes (except free),
 * with the function, the 1-based number of that function's calls since
 * inj_reset(), the fd (or -1) and the bytes asked for (sendmsg/recvmsg
 * payload, allocation size).  NULL = pass everything.
 */
typedef struct inj_action (*inj_plan_fn)(enum inj_fn fn, long nth, int fd,
					 size_t size, void *ctx);

struct inj_stats {
	long calls[INJ_NFN];
	long injected[INJ_NFN];
	long live_blocks; /* libchan's malloc'd blocks not yet freed */
	long bad_closes;  /* close() by libchan that failed with EBADF */
	long bytes_sent, bytes_received;
	long fds_sent, fds_received; /* SCM_RIGHTS descriptors through libchan */
	/* since the program started (inj_reset keeps them) */
	long total_calls[INJ_NFN];
	long total_injected[INJ_NFN];
};

void inj_set_plan(inj_plan_fn plan, void *ctx);
/* Zero the call counters (not live_blocks, which tracks the heap). */
void inj_reset(void);
const struct inj_stats *inj_stats(void);
const char *inj_fn_name(enum inj_fn fn);

/* A plan that fails the nth call of fn (1-based) with err. */
struct inj_fail_nth {
	enum inj_fn fn;
	long nth;
	int err;
};
struct inj_action inj_plan_fail_nth(enum inj_fn fn, long nth, int fd, size_t size,
				    void *ctx);

#endif
