/* helpers.c - shared test support. */
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "helpers.h"

int
chan_test_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own fd */
}

int
chan_test_fd_is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

int
chan_test_fd_cloexec(int fd)
{
	int f = fcntl(fd, F_GETFD);

	return f >= 0 && (f & FD_CLOEXEC);
}

long
chan_test_hex(const char *hex, uint8_t **ret)
{
	size_t cap = strlen(hex) / 2 + 1, n = 0;
	uint8_t *buf = malloc(cap);
	int hi = -1;

	if (!buf)
		return -1;
	for (const char *p = hex; *p; p++) {
		int d;

		if (*p == '#') {
			while (*p && *p != '\n')
				p++;
			if (!*p)
				break;
			continue;
		}
		if (isspace((unsigned char)*p))
			continue;
		if (*p >= '0' && *p <= '9')
			d = *p - '0';
		else if (*p >= 'a' && *p <= 'f')
			d = *p - 'a' + 10;
		else if (*p >= 'A' && *p <= 'F')
			d = *p - 'A' + 10;
		else {
			free(buf);
			return -1;
		}
		if (hi < 0) {
			hi = d;
		} else {
			buf[n++] = (uint8_t)(hi << 4 | d);
			hi = -1;
		}
	}
	if (hi >= 0) {
		free(buf);
		return -1;
	}
	*ret = buf;
	return (long)n;
}

static void
dump(const char *label, const uint8_t *p, size_t n)
{
	fprintf(stderr, "  %s (%zu):", label, n);
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, "%s%02x", i % 32 ? " " : "\n    ", p[i]);
	fprintf(stderr, "\n");
}

int
chan_test_same_bytes(const void *got, size_t got_len, const void *want, size_t want_len)
{
	if (got_len == want_len && (!got_len || memcmp(got, want, got_len) == 0))
		return 1;
	fprintf(stderr, "\nbyte mismatch:\n");
	dump("got", got, got_len);
	dump("want", want, want_len);
	return 0;
}

int
chan_test_encode(chan_msg *msg, uint8_t **ret, size_t *ret_len)
{
	size_t n = 0;
	uint8_t *buf;
	int r = chan_encoded_size(msg, &n);

	if (r < 0)
		return r;
	buf = malloc(n);
	if (!buf)
		return CHAN_E_NO_MEMORY;
	r = chan_encode(msg, buf, n, ret_len);
	if (r < 0) {
		free(buf);
		return r;
	}
	*ret = buf;
	return 0;
}

void
chan_test_pipes(int *fds, size_t npipes)
{
	for (size_t i = 0; i < npipes; i++)
		CU_ASSERT_FATAL(pipe2(fds + 2 * i, O_CLOEXEC) == 0);
}

static void *
test_alloc(void *ctx, size_t n)
{
	struct chan_test_alloc *t = ctx;

	t->allocs++;
	if (t->fail_at && t->allocs == t->fail_at)
		return NULL;
	t->live++;
	if (n > t->max_size)
		t->max_size = n;
	return malloc(n);
}

static void
test_free(void *ctx, void *p)
{
	struct chan_test_alloc *t = ctx;

	t->frees++;
	t->live--;
	free(p);
}

void
chan_test_alloc_init(struct chan_test_alloc *t, long fail_at)
{
	memset(t, 0, sizeof(*t));
	t->a.alloc = test_alloc;
	t->a.free = test_free;
	t->a.ctx = t;
	t->fail_at = fail_at;
}

const int *
tv_handles(const chan_msg *msg, size_t *ret_count)
{
	static int fds[CHAN_HARD_MAX_HANDLES];

	*ret_count = 0;
	if (chan_msg_borrow_handles(msg, fds, CHAN_HARD_MAX_HANDLES, ret_count) < 0)
		*ret_count = 0;
	return fds;
}
