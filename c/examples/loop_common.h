/*
 * loop_common.h - what the event-loop examples share: the service (one
 * request, one answer) and two process facts.  Each example's loop is its
 * own; this is only the part that does not depend on the loop.
 */
#ifndef CHAN_LOOP_COMMON_H
#define CHAN_LOOP_COMMON_H

#include <dirent.h>
#include <sys/resource.h>

#include "chan.h"

/*
 * {"n": N, "reply_to": <conn>} -> {"n": N}.  Moves reply_to out of req into
 * *ret_to.  NULL if the request is not of that shape (then *ret_to is NULL:
 * nothing to answer on).
 */
static inline chan_msg *
loop_answer(chan_msg *req, chan_conn **ret_to)
{
	chan_value *root = chan_msg_root(req);
	chan_msg *answer;
	chan_value *map;
	int64_t n;

	*ret_to = NULL;
	if (chan_map_get_int(root, "n", &n) < 0 || chan_map_move_conn(root, "reply_to", ret_to) < 0)
		return NULL;
	answer = chan_msg_new(NULL);
	map = chan_map(answer);
	chan_map_put(map, "n", chan_int(answer, n));
	if (chan_msg_set_root(answer, map) < 0) { /* poisoned: out of memory */
		*ret_to = chan_conn_free(*ret_to);
		return chan_msg_free(answer);
	}
	return answer;
}

/* Open descriptors of this process. */
static inline int
loop_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n - 3; /* ".", ".." and the directory's own descriptor */
}

/* A server of many clients needs more than the default 1024 descriptors. */
static inline void
loop_raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

#endif
