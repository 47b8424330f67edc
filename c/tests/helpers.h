/* helpers.h - shared test support: fd counting, hex, fixtures. */
#ifndef CHAN_TEST_HELPERS_H
#define CHAN_TEST_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chan.h"

/* Number of open fds of this process (/proc/self/fd). */
int chan_test_count_fds(void);
/* 1 if fd is open, 0 if not. */
int chan_test_fd_is_open(int fd);
/* 1 if fd has FD_CLOEXEC. */
int chan_test_fd_cloexec(int fd);
/* Parse hex (whitespace and '#'-to-end-of-line comments ignored) into a new
 * buffer; returns its length, -1 on bad input.  Caller frees *ret. */
long chan_test_hex(const char *hex, uint8_t **ret);
/* Print both buffers in hex if they differ; returns 1 if equal. */
int chan_test_same_bytes(const void *got, size_t got_len, const void *want,
			 size_t want_len);
/* Encode msg into a new malloc'd buffer; returns error or 0. */
int chan_test_encode(chan_msg *msg, uint8_t **ret, size_t *ret_len);
/* Open n pipes; fills fds[2n] (read, write pairs). */
void chan_test_pipes(int *fds, size_t npipes);
/* An allocator that counts calls and can fail the Nth allocation (1-based;
 * 0 = never). */
struct chan_test_alloc {
	struct chan_allocator a;
	long allocs, frees, fail_at;
	long live;
	size_t max_size; /* the largest allocation so far */
};
void chan_test_alloc_init(struct chan_test_alloc *t, long fail_at);

/*
 * Readers for tests that have already checked a value's type, or expect a
 * specific value: a failed checked read yields a value no test expects
 * (INT64_MIN + 7, NaN, "<not a string>", NULL, -1), so the comparison that
 * follows fails.
 */
static inline int64_t
tv_int(const chan_value *v)
{
	int64_t x;

	return chan_value_get_int(v, &x) == 0 ? x : INT64_MIN + 7;
}

static inline int
tv_bool(const chan_value *v)
{
	bool b;

	return chan_value_get_bool(v, &b) == 0 ? b : -1;
}

static inline double
tv_float(const chan_value *v)
{
	double d;

	return chan_value_get_float(v, &d) == 0 ? d : __builtin_nan("");
}

static inline const char *
tv_string(const chan_value *v, size_t *ret_len)
{
	const char *s;

	return chan_value_get_string(v, &s, ret_len) == 0 ? s : "<not a string>";
}

static inline const void *
tv_bytes(const chan_value *v, size_t *ret_len)
{
	const void *p;

	return chan_value_get_bytes(v, &p, ret_len) == 0 ? p : NULL;
}

static inline int
tv_fd(const chan_value *v)
{
	int fd;

	return chan_value_borrow_fd(v, &fd) == 0 ? fd : -1;
}

/* The handle table of msg in wire order (a static buffer). */
const int *tv_handles(const chan_msg *msg, size_t *ret_count);

#endif
