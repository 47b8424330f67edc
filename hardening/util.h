/*
 * util.h - support shared by the hardening programs (hardening/) and the
 * fuzz targets (fuzz/): fd accounting, fd factories, value comparison,
 * memory sampling.  Nothing here prints unless asked.
 */
#ifndef CHAN_HARDENING_UTIL_H
#define CHAN_HARDENING_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "chan.h"

/* Open fds of this process (/proc/self/fd, the directory's own fd not
 * counted); -1 if /proc cannot be read. */
int hu_count_fds(void);
/* 1 if fd is open. */
int hu_fd_is_open(int fd);
/* 1 if fd has FD_CLOEXEC set. */
int hu_fd_cloexec(int fd);
/* 1 if a and b are the same open file (st_dev and st_ino). */
int hu_same_file(int a, int b);

/* Kinds of descriptor the fd factory makes. */
enum hu_fd_type {
	HU_PIPE_READ,
	HU_PIPE_WRITE,
	HU_UNIX_STREAM, /* a valid conn: one end of an AF_UNIX stream pair */
	HU_UNIX_DGRAM,
	HU_UNIX_SEQPACKET,
	HU_EVENTFD,
	HU_MEMFD,
	HU_DEVNULL,
	HU_NTYPES
};
/* Make one descriptor of the given type (CLOEXEC).  *other receives the
 * companion the caller must close too (pipe's other end, socket peer), or
 * -1.  Returns the fd or -1. */
int hu_make_fd(enum hu_fd_type type, int *other);
const char *hu_fd_type_name(enum hu_fd_type type);

/* 1 if the two trees are the same value (type, contents, map order, handle
 * kind and index); 0 otherwise.  Also checks the readers agree with each
 * other (chan_map_get finds every key at its position). */
int hu_value_equal(const chan_value *a, const chan_value *b);
/* The handle table of msg in wire order, borrowed, into fds (room for 253);
 * returns the count (0 if msg cannot be walked). */
size_t hu_handles(const chan_msg *msg, int *fds);
/* The fd a handle value holds (borrowed); -1 if it has none. */
int hu_value_fd(const chan_value *v);

/* Resident set size in pages (/proc/self/statm), -1 on error. */
long hu_rss_pages(void);

/* 1 if err is a registry error code (chan_errname knows it). */
int hu_is_registry_error(int err);

#endif
