/* util.c - see util.h. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util.h"

/*
 * Counting is on every fuzz iteration's path, so the directory stays open
 * (rewound for each count) instead of costing an opendir each time; it is
 * reopened after a fork, since /proc/self was resolved in the parent.  Its
 * own fd is not counted.
 */
int
hu_count_fds(void)
{
	static int dfd = -1;
	static pid_t owner;
	union {
		struct dirent64 align;
		char b[8192];
	} buf;
	int n = 0;
	long got;

	if (dfd >= 0 && owner != getpid()) {
		close(dfd);
		dfd = -1;
	}
	if (dfd < 0) {
		dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			return -1;
		owner = getpid();
	}
	if (lseek(dfd, 0, SEEK_SET) < 0)
		return -1;
	while ((got = syscall(SYS_getdents64, dfd, buf.b, sizeof(buf.b))) > 0) {
		for (long off = 0; off < got;) {
			struct dirent64 *e = (struct dirent64 *)(void *)(buf.b + off);

			if (e->d_name[0] != '.')
				n++;
			off += e->d_reclen;
		}
	}
	if (got < 0)
		return -1;
	return n - 1; /* the directory's own fd */
}

int
hu_fd_is_open(int fd)
{
	return fd >= 0 && (fcntl(fd, F_GETFD) >= 0 || errno != EBADF);
}

int
hu_fd_cloexec(int fd)
{
	int f = fcntl(fd, F_GETFD);

	return f >= 0 && (f & FD_CLOEXEC);
}

int
hu_same_file(int a, int b)
{
	struct stat sa, sb;

	if (fstat(a, &sa) < 0 || fstat(b, &sb) < 0)
		return 0;
	return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int
hu_make_fd(enum hu_fd_type type, int *other)
{
	int p[2];

	*other = -1;
	switch (type) {
	case HU_PIPE_READ:
	case HU_PIPE_WRITE:
		if (pipe2(p, O_CLOEXEC) < 0)
			return -1;
		*other = type == HU_PIPE_READ ? p[1] : p[0];
		return type == HU_PIPE_READ ? p[0] : p[1];
	case HU_UNIX_STREAM:
	case HU_UNIX_DGRAM:
	case HU_UNIX_SEQPACKET:
		if (socketpair(AF_UNIX,
			       (type == HU_UNIX_STREAM	  ? SOCK_STREAM
				: type == HU_UNIX_DGRAM ? SOCK_DGRAM
							: SOCK_SEQPACKET) |
				       SOCK_CLOEXEC,
			       0, p) < 0)
			return -1;
		*other = p[1];
		return p[0];
	case HU_EVENTFD:
		return eventfd(0, EFD_CLOEXEC);
	case HU_MEMFD:
		return memfd_create("hu", MFD_CLOEXEC);
	case HU_DEVNULL:
		return open("/dev/null", O_RDONLY | O_CLOEXEC);
	case HU_NTYPES:
		break;
	}
	errno = EINVAL;
	return -1;
}

const char *
hu_fd_type_name(enum hu_fd_type type)
{
	static const char *const names[HU_NTYPES] = {
		"pipe_read", "pipe_write", "unix_stream", "unix_dgram",
		"unix_seqpacket", "eventfd", "memfd", "devnull"};

	return (unsigned)type < HU_NTYPES ? names[type] : "?";
}

int
hu_value_equal(const chan_value *a, const chan_value *b)
{
	enum chan_type t = chan_value_type(a);
	size_t na, nb, n;
	const char *sa, *sb;
	const void *pa, *pb;
	double fa, fb;
	int64_t ia, ib;
	bool ba, bb;

	if (!a || !b || t != chan_value_type(b))
		return 0;
	switch (t) {
	case CHAN_NULL:
		return 1;
	case CHAN_BOOL:
		return chan_value_get_bool(a, &ba) == 0 && chan_value_get_bool(b, &bb) == 0 &&
		       ba == bb;
	case CHAN_INT:
		return chan_value_get_int(a, &ia) == 0 && chan_value_get_int(b, &ib) == 0 &&
		       ia == ib;
	case CHAN_FLOAT:
		return chan_value_get_float(a, &fa) == 0 && chan_value_get_float(b, &fb) == 0 &&
		       memcmp(&fa, &fb, sizeof(fa)) == 0;
	case CHAN_STRING:
		return chan_value_get_string(a, &sa, &na) == 0 &&
		       chan_value_get_string(b, &sb, &nb) == 0 && na == nb &&
		       memcmp(sa, sb, na) == 0 && sa[na] == '\0' && sb[nb] == '\0';
	case CHAN_BYTES:
		return chan_value_get_bytes(a, &pa, &na) == 0 &&
		       chan_value_get_bytes(b, &pb, &nb) == 0 && na == nb &&
		       (na == 0 || memcmp(pa, pb, na) == 0);
	case CHAN_LIST:
	case CHAN_MAP:
		n = chan_value_count(a);
		if (n != chan_value_count(b))
			return 0;
		for (size_t i = 0; i < n; i++) {
			if (t == CHAN_MAP) {
				size_t ka, kb;
				const char *xa = chan_map_key_at(a, i, &ka);
				const char *xb = chan_map_key_at(b, i, &kb);

				if (!xa || !xb || ka != kb || memcmp(xa, xb, ka))
					return 0;
				if (chan_map_get_n(a, xa, ka) != chan_value_at(a, i) ||
				    chan_map_get_n(b, xb, kb) != chan_value_at(b, i))
					return 0;
			}
			if (!hu_value_equal(chan_value_at(a, i), chan_value_at(b, i)))
				return 0;
		}
		return chan_value_at(a, n) == NULL && chan_value_at(b, n) == NULL;
	case CHAN_HANDLE:
		/* equal trees put their handles at equal wire positions */
		return chan_value_kind(a) == chan_value_kind(b);
	case CHAN_CHANNEL:
		return chan_value_channel_id(a) == chan_value_channel_id(b);
	}
	return 0;
}

long
hu_rss_pages(void)
{
	FILE *f = fopen("/proc/self/statm", "re");
	long size, rss;

	if (!f)
		return -1;
	if (fscanf(f, "%ld %ld", &size, &rss) != 2)
		rss = -1;
	fclose(f);
	return rss;
}

int
hu_is_registry_error(int err)
{
	return err < 0 && chan_errname(err) != NULL;
}

size_t
hu_handles(const chan_msg *msg, int *fds)
{
	size_t n = 0;

	if (chan_msg_borrow_handles(msg, fds, CHAN_HARD_MAX_HANDLES, &n) < 0)
		return 0;
	return n;
}

int
hu_value_fd(const chan_value *v)
{
	int fd;

	return chan_value_borrow_fd(v, &fd) == 0 ? fd : -1;
}
