/* peer.c - support for the transport tests (peer.h). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <CUnit/CUnit.h>

#include "helpers.h"
#include "peer.h"

pid_t
tp_fork(void)
{
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid == 0)
		alarm(20);
	return pid;
}

int
tp_wait(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return 128 + WTERMSIG(st);
}

int
tp_send_raw(int fd, const void *p, size_t n, const int *fds, size_t nfds)
{
	/* libchan's one SCM_RIGHTS helper: fds on the first byte, the rest
	 * with plain sends. */
	ssize_t k = chan_sock_send(fd, p, n, fds, nfds, false);
	size_t off;

	if (k < 0) {
		if (k != CHAN_E_SYSTEM)
			errno = k == CHAN_E_CONNECTION_CLOSED ? EPIPE : EINVAL;
		return -1;
	}
	for (off = (size_t)k; off < n; off += (size_t)k) {
		k = chan_sock_send(fd, (const char *)p + off, n - off, NULL, 0, false);
		if (k < 0)
			return -1;
	}
	return 0;
}

static void
fill_blob(uint8_t *b, size_t n, int64_t seq)
{
	uint32_t x = (uint32_t)seq * 2654435761u + 1;

	for (size_t i = 0; i < n; i++) {
		x = x * 1103515245u + 12345u;
		b[i] = (uint8_t)(x >> 16);
	}
}

chan_msg *
tp_sample(int64_t seq, size_t pad, const int *fds, size_t nfds)
{
	chan_msg *m = chan_msg_new(NULL);
	chan_value *root, *list;
	uint8_t *blob = malloc(pad ? pad : 1);

	if (!m || !blob) {
		free(blob);
		return chan_msg_free(m);
	}
	fill_blob(blob, pad, seq);
	root = chan_map(m);
	list = chan_list(m);
	chan_map_put(root, "seq", chan_int(m, seq));
	chan_map_put(root, "text", chan_string(m, "frames carry handles"));
	chan_map_put(root, "blob", chan_bytes(m, blob, pad));
	for (size_t i = 0; i < nfds; i++)
		chan_list_append(list, chan_handle_copy(m, CHAN_KIND_FD, fds[i]));
	chan_map_put(root, "fds", list);
	free(blob);
	if (chan_msg_set_root(m, root) < 0)
		return chan_msg_free(m);
	return m;
}

#define WHY(cond)                                                              \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "\n%s:%d: sample mismatch: %s\n",      \
				__FILE__, __LINE__, #cond);                    \
			return 0;                                              \
		}                                                              \
	} while (0)

int
tp_sample_ok(chan_msg *m, int64_t seq, size_t pad, const int *want, size_t nfds)
{
	chan_value *root = chan_msg_root(m), *list;
	const void *blob;
	uint8_t *expect;
	size_t n = 0;
	int same;

	WHY(root && chan_value_type(root) == CHAN_MAP);
	WHY(tv_int(chan_map_get(root, "seq")) == seq);
	WHY(strcmp(tv_string(chan_map_get(root, "text"), NULL),
		   "frames carry handles") == 0);
	blob = tv_bytes(chan_map_get(root, "blob"), &n);
	WHY(n == pad);
	expect = malloc(pad ? pad : 1);
	WHY(expect);
	fill_blob(expect, pad, seq);
	same = pad == 0 || memcmp(blob, expect, pad) == 0;
	free(expect);
	WHY(same);
	list = chan_map_get(root, "fds");
	WHY(chan_value_count(list) == nfds);
	for (size_t i = 0; i < nfds; i++) {
		int fd = tv_fd(chan_value_at(list, i));

		WHY(chan_value_kind(chan_value_at(list, i)) == CHAN_KIND_FD);
		WHY(fd >= 0);
		WHY(chan_test_fd_cloexec(fd));
		WHY(tp_same_file(fd, want[i]));
	}
	return 1;
}

uint8_t *
tp_sample_frame(int64_t seq, size_t pad, size_t nhandles, size_t *ret_len)
{
	int fds[253];
	uint8_t *buf = NULL;
	chan_msg *m;
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

	/* Any open fd will do to encode: the bytes do not depend on it. */
	if (null < 0 || nhandles > 253)
		return NULL;
	for (size_t i = 0; i < nhandles; i++)
		fds[i] = null;
	m = tp_sample(seq, pad, fds, nhandles);
	if (!m || chan_test_encode(m, &buf, ret_len) < 0)
		buf = NULL;
	chan_msg_free(m);
	close(null);
	return buf;
}

int
tp_same_file(int a, int b)
{
	struct stat sa, sb;

	if (fstat(a, &sa) < 0 || fstat(b, &sb) < 0)
		return 0;
	return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

void
tp_socketpair(int sv[2])
{
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
}
