/* peer.h - support for the transport tests: raw peers that write frames
 * with their own sendmsg, child processes, sample messages. */
#ifndef CHAN_TEST_PEER_H
#define CHAN_TEST_PEER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <unistd.h>

#include "chan.h"

/* In a child process: report and exit 1 if cond is false. */
#define TP_CHECK(cond)                                                         \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: child %d: check failed: %s\n", \
				__FILE__, __LINE__, (int)getpid(), #cond);     \
			_exit(1);                                              \
		}                                                              \
	} while (0)

/* fork() after flushing stdio; the child dies by SIGALRM after 20 s so a
 * bug cannot hang the suite. */
pid_t tp_fork(void);
/* Wait for pid: its exit status, or 128 + signal number. */
int tp_wait(pid_t pid);

/* Write n bytes with one sendmsg carrying fds (if nfds) on the first byte,
 * then plain sends for any rest.  Blocking.  0, or -1 with errno. */
int tp_send_raw(int fd, const void *p, size_t n, const int *fds, size_t nfds);

/* A sample message: {"seq": seq, "text": "...", "blob": <pad bytes>,
 * "fds": [fd handles of fds[0..nfds)]}.  The blob's bytes derive from seq. */
chan_msg *tp_sample(int64_t seq, size_t pad, const int *fds, size_t nfds);
/* 1 if m is tp_sample(seq, pad, want, nfds) with handles referring to the
 * same open files as want[] and close-on-exec; 0 otherwise (and says why). */
int tp_sample_ok(chan_msg *m, int64_t seq, size_t pad, const int *want,
		 size_t nfds);
/* The encoded frame of tp_sample (malloc'd). */
uint8_t *tp_sample_frame(int64_t seq, size_t pad, size_t nhandles,
			 size_t *ret_len);

/* 1 if a and b are the same open file (device and inode). */
int tp_same_file(int a, int b);
/* Connected raw socketpair (CLOEXEC). */
void tp_socketpair(int sv[2]);

#endif
