/*
 * runner.c - the chan/1 conformance runner.
 *
 * Reads conformance/vectors/ *.vec files (grammar: spec/vectors.md), creates each
 * case's handles as real kernel objects, and drives a testee program (any
 * language) over the testee protocol of spec/vectors.md §4: requests and
 * responses on the testee's stdin/stdout, descriptors over an AF_UNIX socket
 * on the testee's fd 3.  It does not use libchan: it checks bytes against the
 * vectors, descriptors by (st_dev, st_ino), close-on-exec and leaks of the
 * case's own objects through /proc/PID/fd and /proc/PID/fdinfo, and the
 * release of every sent pipe or socket by the hang-up of its other end.
 * A testee of class codec (declared in its hello answer) gets no descriptors:
 * handle tables travel as kinds and ids, and the cases that need descriptors
 * are reported as not applicable (conformance/README.md).
 *
 * Usage: runner [--vectors DIR] [--errors FILE] [--failing FILE] [--only GLOB]
 *               [--no-stream] [--verbose] -- TESTEE [ARG...]
 * Last line: "conformance: N passed, M failed"; exit status 0 iff M == 0.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_OBJS 256
#define HANG_MS 20000 /* guard against a hung testee; never a verdict on speed */
#define BATCH 253

/* ------------------------------------------------------------------------ */
/* small utilities                                                          */

static int verbose;

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p) {
		fprintf(stderr, "runner: out of memory\n");
		exit(2);
	}
	return p;
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p) {
		fprintf(stderr, "runner: out of memory\n");
		exit(2);
	}
	return p;
}

static char *xstrdup(const char *s)
{
	size_t n = strlen(s);
	char *p = xmalloc(n + 1);
	memcpy(p, s, n + 1);
	return p;
}

/* A growable byte buffer. */
struct buf {
	unsigned char *p;
	size_t len, cap;
};

static void buf_add(struct buf *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = 0;
}

static void buf_printf(struct buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	char tmp[512];
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n < (int)sizeof tmp) {
		buf_add(b, tmp, (size_t)n);
		return;
	}
	char *big = xmalloc((size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	buf_add(b, big, (size_t)n);
	free(big);
}

static void buf_hex(struct buf *b, const unsigned char *p, size_t n)
{
	static const char d[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		char h[2] = {d[p[i] >> 4], d[p[i] & 15]};
		buf_add(b, h, 2);
	}
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Failure message of the current check (first one wins). */
static char failmsg[4096];
static int failed;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
	if (failed)
		return;
	failed = 1;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(failmsg, sizeof failmsg, fmt, ap);
	va_end(ap);
}

/* ------------------------------------------------------------------------ */
/* error registry (spec/errors.tsv): name -> scope                          */

/* Input files the run cannot do without: a missing one ends it (exit 2). */
static FILE *open_or_exit(const char *path)
{
	FILE *f = fopen(path, "r");

	if (!f) {
		fprintf(stderr, "runner: %s: %s\n", path, strerror(errno));
		exit(2);
	}
	return f;
}

struct errdef {
	long code;
	char name[40];
	char scope[8];
};
static struct errdef errdefs[64];
static int nerrdefs;

static void load_errors(const char *path)
{
	FILE *f = open_or_exit(path);
	char line[1024];
	while (fgets(line, sizeof line, f)) {
		if (line[0] == '#' || !strncmp(line, "code\t", 5))
			continue;
		char *t1 = strchr(line, '\t');
		if (!t1)
			continue;
		char *t2 = strchr(t1 + 1, '\t');
		if (!t2)
			continue;
		char *t3 = strchr(t2 + 1, '\t');
		if (!t3)
			continue;
		char *t4 = strchr(t3 + 1, '\t');
		if (!t4 || nerrdefs == 64)
			continue;
		struct errdef *e = &errdefs[nerrdefs++];
		e->code = strtol(line, NULL, 10);
		snprintf(e->name, sizeof e->name, "%.*s", (int)(t2 - t1 - 1), t1 + 1);
		snprintf(e->scope, sizeof e->scope, "%.*s", (int)(t4 - t3 - 1), t3 + 1);
	}
	fclose(f);
	if (nerrdefs < 20) {
		fprintf(stderr, "runner: %s: not an error registry\n", path);
		exit(2);
	}
}

static const char *err_scope(const char *name)
{
	for (int i = 0; i < nerrdefs; i++)
		if (!strcmp(errdefs[i].name, name))
			return errdefs[i].scope;
	return "?";
}

/* ------------------------------------------------------------------------ */
/* .vec parsing (spec/vectors.md §2)                                        */

enum kind { K_SUCCESS, K_DECODE_SUCCESS, K_DECODE_FAILURE, K_ENCODE_FAILURE };
static const char *const kind_names[] = {"success", "decode_success",
					 "decode_failure", "encode_failure"};

enum obj {
	O_CONN, O_PIPE_READ, O_PIPE_WRITE, O_MEMFD, O_EVENTFD, O_FILE,
	O_DGRAM, O_SEQPACKET, O_TCP, O_LISTENER, O_UNCONNECTED, O_NONE
};
static const char *const obj_names[] = {"conn", "pipe_read", "pipe_write", "memfd",
					"eventfd", "file", "dgram", "seqpacket",
					"tcp", "listener", "unconnected"};

struct vcase {
	char *name;
	char *file;
	int line;
	enum kind kind;
	char *value;
	enum obj objs[MAX_OBJS];
	int nobjs;
	uint32_t max_payload, max_handles, max_depth;
	char *error;
	char *transport; /* delivery name or NULL */
	long targ[4];
	int ntarg;
	struct buf bytes;
	int has_bytes;
	struct buf canonical;
	int has_canonical;
	int rev11;             /* "revision 1.1": only for a testee that implements 1.1 */
	uint32_t max_channels; /* limits max_channels=N (revision 1.1), 0 = default */
};

static struct vcase *cases;
static int ncases, capcases;

static void vec_die(const char *file, int line, const char *msg)
{
	fprintf(stderr, "runner: %s:%d: %s\n", file, line, msg);
	exit(2);
}

static enum obj obj_from(const char *s)
{
	for (int i = 0; i < O_NONE; i++)
		if (!strcmp(obj_names[i], s))
			return (enum obj)i;
	return O_NONE;
}

static void parse_hexline(const char *file, int ln, const char *s, struct buf *b)
{
	while (*s && *s != '#') {
		if (*s == ' ' || *s == '\t' || *s == '\r') {
			s++;
			continue;
		}
		int h = hexval(s[0]), l = s[0] ? hexval(s[1]) : -1;
		if (h < 0 || l < 0 || (s[2] && s[2] != ' ' && s[2] != '\t' && s[2] != '#'))
			vec_die(file, ln, "bad hex byte");
		unsigned char c = (unsigned char)(h * 16 + l);
		buf_add(b, &c, 1);
		s += 2;
	}
}

static void parse_file(const char *path)
{
	FILE *f = open_or_exit(path);
	char *line = NULL;
	size_t lcap = 0;
	ssize_t n;
	int ln = 0;
	struct vcase *c = NULL;
	struct buf *hexdst = NULL;
	while ((n = getline(&line, &lcap, f)) >= 0) {
		ln++;
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = 0;
		if (line[0] == ' ' || line[0] == '\t') {
			if (!hexdst) {
				const char *p = line;
				while (*p == ' ' || *p == '\t')
					p++;
				if (*p)
					vec_die(path, ln, "indented line outside a bytes block");
				continue;
			}
			parse_hexline(path, ln, line, hexdst);
			continue;
		}
		hexdst = NULL;
		if (line[0] == 0 || line[0] == '#')
			continue;
		char *sp = strchr(line, ' ');
		char *rest = sp ? sp + 1 : line + n;
		if (sp)
			*sp = 0;
		if (!strcmp(line, "case")) {
			if (c)
				vec_die(path, ln, "case inside case");
			if (ncases == capcases) {
				capcases = capcases ? capcases * 2 : 256;
				cases = xrealloc(cases, (size_t)capcases * sizeof *cases);
			}
			c = &cases[ncases];
			memset(c, 0, sizeof *c);
			c->name = xstrdup(rest);
			c->file = xstrdup(path);
			c->line = ln;
			c->kind = (enum kind) - 1;
			continue;
		}
		if (!c)
			vec_die(path, ln, "line outside a case");
		if (!strcmp(line, "end")) {
			if ((int)c->kind < 0)
				vec_die(path, ln, "case without kind");
			ncases++;
			c = NULL;
		} else if (!strcmp(line, "kind")) {
			for (int k = 0; k < 4; k++)
				if (!strcmp(rest, kind_names[k]))
					c->kind = (enum kind)k;
			if ((int)c->kind < 0)
				vec_die(path, ln, "bad kind");
		} else if (!strcmp(line, "value")) {
			c->value = xstrdup(rest);
		} else if (!strcmp(line, "handle")) {
			int idx;
			char on[32];
			if (sscanf(rest, "#%d = %31s", &idx, on) != 2 || idx != c->nobjs ||
			    obj_from(on) == O_NONE || c->nobjs >= MAX_OBJS)
				vec_die(path, ln, "bad handle line");
			c->objs[c->nobjs++] = obj_from(on);
		} else if (!strcmp(line, "handles")) {
			int a, b;
			char on[32];
			if (sscanf(rest, "#%d..#%d = %31s", &a, &b, on) != 3 || a != c->nobjs ||
			    b < a || b >= MAX_OBJS || obj_from(on) == O_NONE)
				vec_die(path, ln, "bad handles line");
			for (int i = a; i <= b; i++)
				c->objs[c->nobjs++] = obj_from(on);
		} else if (!strcmp(line, "limits")) {
			char *save = NULL;
			for (char *t = strtok_r(rest, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
				unsigned long v;
				char k[32];
				if (sscanf(t, "%31[a-z_]=%lu", k, &v) != 2)
					vec_die(path, ln, "bad limit");
				if (!strcmp(k, "max_payload"))
					c->max_payload = (uint32_t)v;
				else if (!strcmp(k, "max_handles"))
					c->max_handles = (uint32_t)v;
				else if (!strcmp(k, "max_depth"))
					c->max_depth = (uint32_t)v;
				else if (!strcmp(k, "max_channels"))
					c->max_channels = (uint32_t)v;
				else
					vec_die(path, ln, "unknown limit");
			}
		} else if (!strcmp(line, "error")) {
			c->error = xstrdup(rest);
		} else if (!strcmp(line, "transport")) {
			char *save = NULL;
			char *t = strtok_r(rest, " ", &save);
			if (!t)
				vec_die(path, ln, "empty transport");
			c->transport = xstrdup(t);
			while ((t = strtok_r(NULL, " ", &save)) && c->ntarg < 4)
				c->targ[c->ntarg++] = strtol(t, NULL, 10);
		} else if (!strcmp(line, "bytes")) {
			c->has_bytes = 1;
			hexdst = &c->bytes;
		} else if (!strcmp(line, "canonical")) {
			c->has_canonical = 1;
			hexdst = &c->canonical;
		} else if (!strcmp(line, "revision")) {
			if (!strcmp(rest, "1.1"))
				c->rev11 = 1;
			else if (strcmp(rest, "1.0"))
				vec_die(path, ln, "bad revision");
		} else if (!strcmp(line, "section") || !strcmp(line, "note")) {
			/* informative for the runner */
		} else {
			vec_die(path, ln, "unknown key");
		}
	}
	if (c)
		vec_die(path, ln, "case without end");
	free(line);
	fclose(f);
}

static int cmpstr(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void load_vectors(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d) {
		fprintf(stderr, "runner: %s: %s\n", dir, strerror(errno));
		exit(2);
	}
	char **names = NULL;
	int nn = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);
		if (l > 4 && !strcmp(e->d_name + l - 4, ".vec")) {
			names = xrealloc(names, (size_t)(nn + 1) * sizeof *names);
			char *p = xmalloc(strlen(dir) + l + 2);
			sprintf(p, "%s/%s", dir, e->d_name);
			names[nn++] = p;
		}
	}
	closedir(d);
	qsort(names, (size_t)nn, sizeof *names, cmpstr);
	for (int i = 0; i < nn; i++) {
		parse_file(names[i]);
		free(names[i]);
	}
	free(names);
	for (int i = 0; i < ncases; i++)
		for (int j = i + 1; j < ncases; j++)
			if (!strcmp(cases[i].name, cases[j].name)) {
				fprintf(stderr, "runner: duplicate case %s\n", cases[i].name);
				exit(2);
			}
}

/* ------------------------------------------------------------------------ */
/* kernel objects                                                           */

/* Every object the runner creates for the current case run is tracked by
 * identity (st_dev, st_ino).  The holdings checks look only at the testee's
 * descriptors of these identities: a runtime that opens files of its own
 * (Node reads /proc/sys/vm/overcommit_memory at random moments) is never taken
 * for a leaking testee.  Where the object has another end, the runner keeps a
 * copy of that end (`watch`): once the testee has released the object and the
 * runner holds no copy of the sent end either, the watch sees the hang-up
 * (POLLHUP on a pipe's read end or a socket, POLLERR on a pipe's write end),
 * which also proves that no copy is left where /proc/PID/fd cannot see it (in
 * a socket's queue, in a child process). */
struct tracked {
	dev_t dev;
	ino_t ino;
	int watch;   /* runner's copy of the other end, or -1 */
	int sent;    /* passed to the testee (fd 3 or a connection) */
	char what[24];
};
static struct tracked *trk;
static int ntrk, captrk;

static struct tracked *track_find(dev_t dev, ino_t ino)
{
	for (int i = ntrk - 1; i >= 0; i--)
		if (trk[i].dev == dev && trk[i].ino == ino)
			return &trk[i];
	return NULL;
}

static struct tracked *track_add(dev_t dev, ino_t ino, int other, const char *what)
{
	struct tracked *t = track_find(dev, ino);
	if (t)
		return t;
	if (ntrk == captrk) {
		captrk = captrk ? captrk * 2 : 256;
		trk = xrealloc(trk, (size_t)captrk * sizeof *trk);
	}
	t = &trk[ntrk++];
	t->dev = dev;
	t->ino = ino;
	t->watch = other >= 0 ? fcntl(other, F_DUPFD_CLOEXEC, 0) : -1;
	t->sent = 0;
	snprintf(t->what, sizeof t->what, "%s", what);
	return t;
}

/* Mark descriptors as passed to the testee (tracking them if new). */
static void track_sent(const int *fds, int n)
{
	for (int i = 0; i < n; i++) {
		struct stat st;
		if (fds[i] >= 0 && fstat(fds[i], &st) == 0)
			track_add(st.st_dev, st.st_ino, -1, "object")->sent = 1;
	}
}

/* A new case run: forget the previous one (its objects were checked closed). */
static void track_reset(void)
{
	for (int i = 0; i < ntrk; i++)
		if (trk[i].watch >= 0)
			close(trk[i].watch);
	ntrk = 0;
}

struct object {
	int fd;    /* the descriptor sent to the testee */
	int other; /* the runner's other end (pipe, socketpair) or -1 */
	dev_t dev;
	ino_t ino;
};

static int make_object(enum obj o, struct object *ob)
{
	int p[2];
	ob->fd = ob->other = -1;
	switch (o) {
	case O_CONN:
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p))
			return -1;
		ob->fd = p[0];
		ob->other = p[1];
		break;
	case O_SEQPACKET:
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p))
			return -1;
		ob->fd = p[0];
		ob->other = p[1];
		break;
	case O_PIPE_READ:
	case O_PIPE_WRITE:
		if (pipe2(p, O_CLOEXEC))
			return -1;
		ob->fd = o == O_PIPE_READ ? p[0] : p[1];
		ob->other = o == O_PIPE_READ ? p[1] : p[0];
		break;
	case O_MEMFD:
		ob->fd = memfd_create("chan-conformance", MFD_CLOEXEC);
		break;
	case O_EVENTFD:
		ob->fd = eventfd(0, EFD_CLOEXEC);
		break;
	case O_FILE:
		ob->fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		if (ob->fd < 0)
			ob->fd = open("/dev/null", O_RDWR | O_CLOEXEC);
		break;
	case O_DGRAM:
		ob->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		break;
	case O_TCP:
		ob->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		break;
	case O_LISTENER:
		ob->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		/* an autobound abstract address (only sun_family given), then listen */
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		if (ob->fd >= 0 && (bind(ob->fd, (struct sockaddr *)&sa, sizeof(sa_family_t)) ||
				    listen(ob->fd, 1))) {
			close(ob->fd);
			ob->fd = -1;
		}
		break;
	case O_UNCONNECTED:
		ob->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		break;
	case O_NONE:
		break;
	}
	if (ob->fd < 0)
		return -1;
	struct stat st;
	if (fstat(ob->fd, &st))
		return -1;
	ob->dev = st.st_dev;
	ob->ino = st.st_ino;
	track_add(ob->dev, ob->ino, ob->other, obj_names[o]);
	return 0;
}

static void free_objects(struct object *obs, int n)
{
	for (int i = 0; i < n; i++) {
		if (obs[i].fd >= 0)
			close(obs[i].fd);
		if (obs[i].other >= 0)
			close(obs[i].other);
		obs[i].fd = obs[i].other = -1;
	}
}

static int make_objects(const struct vcase *c, struct object *obs)
{
	for (int i = 0; i < c->nobjs; i++)
		if (make_object(c->objs[i], &obs[i])) {
			fprintf(stderr, "runner: cannot create %s: %s\n", obj_names[c->objs[i]],
				strerror(errno));
			free_objects(obs, i);
			return -1;
		}
	return 0;
}

static int same_object(int fd, dev_t dev, ino_t ino)
{
	struct stat st;
	return fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

/* ------------------------------------------------------------------------ */
/* descriptor passing                                                       */

/* Send fds in batches of at most 253, each batch one byte 'F'. */
static int send_fd_batches(int sock, const int *fds, int n)
{
	int off = 0;
	track_sent(fds, n);
	while (off < n) {
		int k = n - off > BATCH ? BATCH : n - off;
		char byte = 'F';
		struct iovec iov = {&byte, 1};
		union {
			char buf[CMSG_SPACE(BATCH * sizeof(int))];
			struct cmsghdr align;
		} u;
		memset(&u, 0, sizeof u);
		struct msghdr mh = {0};
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE((size_t)k * sizeof(int));
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN((size_t)k * sizeof(int));
		memcpy(CMSG_DATA(cm), fds + off, (size_t)k * sizeof(int));
		ssize_t r;
		do
			r = sendmsg(sock, &mh, MSG_NOSIGNAL);
		while (r < 0 && errno == EINTR);
		if (r != 1)
			return -1;
		off += k;
	}
	return 0;
}

static int wait_readable(int fd, int ms)
{
	struct pollfd p = {fd, POLLIN, 0};
	int r;
	do
		r = poll(&p, 1, ms);
	while (r < 0 && errno == EINTR);
	return r;
}

/* Receive exactly n fds in batches; returns 0 or -1 (fail() set). */
static int recv_fd_batches(int sock, int *fds, int n)
{
	int got = 0;
	while (got < n) {
		if (wait_readable(sock, HANG_MS) <= 0) {
			fail("testee announced %d descriptors but sent %d", n, got);
			goto bad;
		}
		char byte;
		struct iovec iov = {&byte, 1};
		union {
			char buf[CMSG_SPACE(256 * sizeof(int))];
			struct cmsghdr align;
		} u;
		struct msghdr mh = {0};
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof u.buf;
		ssize_t r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
		if (r != 1) {
			fail("descriptor socket: %s", r < 0 ? strerror(errno) : "closed");
			goto bad;
		}
		int k = 0;
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
			if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
				continue;
			int m = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			for (int i = 0; i < m; i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(cm) + (size_t)i * sizeof(int), sizeof fd);
				if (got < n)
					fds[got++] = fd;
				else
					close(fd);
				k++;
			}
		}
		if (k == 0 || (mh.msg_flags & MSG_CTRUNC)) {
			fail("descriptor batch without descriptors or truncated");
			goto bad;
		}
	}
	return 0;
bad:
	for (int i = 0; i < got; i++)
		close(fds[i]);
	return -1;
}

/* ------------------------------------------------------------------------ */
/* the testee process                                                       */

static char **testee_argv;
/* The testee's conformance class, from its hello answer (spec/vectors.md §4,
 * conformance/README.md): transport (the default: descriptors, connections)
 * or codec (no descriptors: handle tables are given as kinds). */
enum tclass { C_TRANSPORT, C_CODEC };
static enum tclass tclass;
static int tclass_declared;
/* The revision of SPEC.md the testee implements, from its hello answer
 * (`revision 1.1`; absent: 1.0).  A 1.0 testee is never sent a 1.1 case. */
static int trev11;
static pid_t tpid = -1;
static int tin = -1, tout = -1, tsock = -1;

static int list_fds(pid_t pid, int **ret)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	int *v = NULL, n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		v = xrealloc(v, (size_t)(n + 1) * sizeof *v);
		v[n++] = atoi(e->d_name);
	}
	closedir(d);
	*ret = v;
	return n;
}

static void testee_stop(void)
{
	if (tpid > 0) {
		if (tin >= 0)
			close(tin);
		tin = -1;
		/* give it the chance to exit on EOF, then make sure */
		int st;
		for (int i = 0; i < 200; i++) {
			if (waitpid(tpid, &st, WNOHANG) == tpid) {
				tpid = -1;
				break;
			}
			struct timespec ts = {0, 5 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
		if (tpid > 0) {
			kill(tpid, SIGKILL);
			waitpid(tpid, &st, 0);
		}
	}
	tpid = -1;
	if (tout >= 0)
		close(tout);
	if (tsock >= 0)
		close(tsock);
	tout = tsock = -1;
}

struct resp {
	char status[48];  /* "ok" or "error" */
	char error[48];   /* NAME */
	char cls[48];     /* hello: the testee's conformance class, "" if undeclared */
	char rev[16];     /* hello: the revision it implements, "" if undeclared (1.0) */
	int epitaph;      /* recv error: "epitaph 1", the error came from the peer's epitaph */
	int chans[MAX_OBJS]; /* recv: "channels ID...", endpoints of received channel handles */
	int nchans;
	long hids[MAX_OBJS]; /* codec class: handle_ids of the returned table */
	int nhids;
	int has_hids;
	struct buf frame; /* decoded hex */
	int has_frame;
	int nfds;
	int conns[MAX_OBJS];
	int nconns;
	int conn;
	char *value;
	long consumed;
};

static void resp_free(struct resp *r)
{
	free(r->frame.p);
	free(r->value);
	memset(r, 0, sizeof *r);
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *q = p;
	while (n) {
		ssize_t w = write(fd, q, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		q += w;
		n -= (size_t)w;
	}
	return 0;
}

static int read_all(int fd, void *p, size_t n)
{
	char *q = p;
	while (n) {
		if (wait_readable(fd, HANG_MS) <= 0)
			return -1;
		ssize_t r = read(fd, q, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		q += r;
		n -= (size_t)r;
	}
	return 0;
}

static void held_drop_transient(void);

static int testee_send(struct buf *req)
{
	held_drop_transient();
	unsigned char len[4] = {(unsigned char)req->len, (unsigned char)(req->len >> 8),
				(unsigned char)(req->len >> 16), (unsigned char)(req->len >> 24)};
	if (verbose > 1)
		fprintf(stderr, ">> %s", req->p);
	if (write_all(tin, len, 4) || write_all(tin, req->p, req->len)) {
		fail("testee: cannot write request (%s)", strerror(errno));
		return -1;
	}
	return 0;
}

/* Why the testee gave no response: it died (of which signal), or it hangs. */
static const char *testee_death(void)
{
	static char why[128];
	for (int i = 0; tpid > 0 && i < 100; i++) {
		int st;
		pid_t w = waitpid(tpid, &st, WNOHANG);
		if (w == tpid) {
			tpid = -1;
			if (WIFSIGNALED(st))
				snprintf(why, sizeof why, "the testee died of signal %d (%s)", WTERMSIG(st),
					 WTERMSIG(st) == SIGPIPE ? "SIGPIPE" : strsignal(WTERMSIG(st)));
			else
				snprintf(why, sizeof why, "the testee exited with status %d",
					 WIFEXITED(st) ? WEXITSTATUS(st) : -1);
			return why;
		}
		if (w < 0)
			break;
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	return "exited, closed stdout or hung";
}

static int testee_read(struct resp *r)
{
	memset(r, 0, sizeof *r);
	r->consumed = -1;
	unsigned char len[4];
	if (read_all(tout, len, 4)) {
		fail("testee: no response (%s)", testee_death());
		return -1;
	}
	size_t n = len[0] | (size_t)len[1] << 8 | (size_t)len[2] << 16 | (size_t)len[3] << 24;
	if (n > (64u << 20)) {
		fail("testee: response of %zu bytes", n);
		return -1;
	}
	char *body = xmalloc(n + 1);
	if (read_all(tout, body, n)) {
		free(body);
		fail("testee: short response");
		return -1;
	}
	body[n] = 0;
	if (verbose > 1)
		fprintf(stderr, "<< %s", body);
	char *save = NULL;
	int first = 1;
	for (char *l = strtok_r(body, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char *sp = strchr(l, ' ');
		char *val = sp ? sp + 1 : l + strlen(l);
		if (sp)
			*sp = 0;
		if (first) {
			first = 0;
			if (!strcmp(l, "ok")) {
				strcpy(r->status, "ok");
			} else if (!strcmp(l, "error")) {
				strcpy(r->status, "error");
				snprintf(r->error, sizeof r->error, "%s", val);
			} else {
				fail("testee: response starts with %.40s", l);
				free(body);
				return -1;
			}
		} else if (!strcmp(l, "frame")) {
			r->has_frame = 1;
			size_t m = strlen(val);
			for (size_t i = 0; i + 1 < m + 1 && i < m; i += 2) {
				int h = hexval(val[i]), lo = hexval(val[i + 1]);
				if (h < 0 || lo < 0) {
					fail("testee: bad hex in frame");
					free(body);
					return -1;
				}
				unsigned char c = (unsigned char)(h * 16 + lo);
				buf_add(&r->frame, &c, 1);
			}
			if (!r->frame.p)
				buf_add(&r->frame, "", 0);
		} else if (!strcmp(l, "fds")) {
			r->nfds = atoi(val);
		} else if (!strcmp(l, "conns")) {
			char *s2 = NULL;
			for (char *t = strtok_r(val, " ", &s2); t && r->nconns < MAX_OBJS;
			     t = strtok_r(NULL, " ", &s2))
				r->conns[r->nconns++] = atoi(t);
		} else if (!strcmp(l, "conn")) {
			r->conn = atoi(val);
		} else if (!strcmp(l, "value")) {
			free(r->value);
			r->value = xstrdup(val);
		} else if (!strcmp(l, "consumed")) {
			r->consumed = atol(val);
		} else if (!strcmp(l, "class")) {
			snprintf(r->cls, sizeof r->cls, "%s", val);
		} else if (!strcmp(l, "revision")) {
			snprintf(r->rev, sizeof r->rev, "%s", val);
		} else if (!strcmp(l, "epitaph")) {
			r->epitaph = atoi(val);
		} else if (!strcmp(l, "channels")) {
			char *s2 = NULL;
			for (char *t = strtok_r(val, " ", &s2); t && r->nchans < MAX_OBJS;
			     t = strtok_r(NULL, " ", &s2))
				r->chans[r->nchans++] = atoi(t);
		} else if (!strcmp(l, "handle_ids")) {
			r->has_hids = 1;
			char *s2 = NULL;
			for (char *t = strtok_r(val, " ", &s2); t; t = strtok_r(NULL, " ", &s2)) {
				if (r->nhids == MAX_OBJS) {
					fail("testee: more than %d handle_ids", MAX_OBJS);
					free(body);
					return -1;
				}
				r->hids[r->nhids++] = strtol(t, NULL, 10);
			}
		}
	}
	free(body);
	if (first) {
		fail("testee: empty response");
		return -1;
	}
	if (r->nfds < 0 || r->nfds > 1024) {
		fail("testee: fds %d", r->nfds);
		return -1;
	}
	return 0;
}

static int testee_start(void)
{
	int in[2], out[2], sv[2];
	if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
		perror("runner: pipe");
		exit(2);
	}
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0) {
		perror("runner: fork");
		exit(2);
	}
	if (pid == 0) {
		/* dup2 clears FD_CLOEXEC on the new numbers */
		if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(sv[1], 3) < 0)
			_exit(127);
		/* the runner ignores SIGPIPE; the testee must not inherit that, or a
		 * send without MSG_NOSIGNAL could not be told apart (SPEC.md §10.2 r3) */
		signal(SIGPIPE, SIG_DFL);
		execvp(testee_argv[0], testee_argv);
		fprintf(stderr, "runner: exec %s: %s\n", testee_argv[0], strerror(errno));
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	close(sv[1]);
	tpid = pid;
	tin = in[1];
	tout = out[0];
	tsock = sv[0];
	struct buf req = {0};
	buf_printf(&req, "op hello\n");
	struct resp r;
	int rc = testee_send(&req) || testee_read(&r);
	free(req.p);
	if (rc) {
		fprintf(stderr, "runner: testee did not answer hello: %s\n", failmsg);
		return -1;
	}
	if (strcmp(r.status, "ok")) {
		fprintf(stderr, "runner: testee refused hello\n");
		resp_free(&r);
		return -1;
	}
	static int started;
	enum tclass was = tclass;
	if (!r.cls[0] || !strcmp(r.cls, "transport")) {
		tclass = C_TRANSPORT;
	} else if (!strcmp(r.cls, "codec")) {
		tclass = C_CODEC;
	} else {
		fprintf(stderr, "runner: testee declares unknown class '%s' (codec or transport)\n",
			r.cls);
		resp_free(&r);
		exit(2);
	}
	tclass_declared = r.cls[0] != 0;
	int was_rev = trev11;
	if (!r.rev[0] || !strcmp(r.rev, "1.0")) {
		trev11 = 0;
	} else if (!strcmp(r.rev, "1.1")) {
		trev11 = 1;
	} else {
		fprintf(stderr, "runner: testee declares unknown revision '%s' (1.0 or 1.1)\n", r.rev);
		resp_free(&r);
		exit(2);
	}
	resp_free(&r);
	if (started > 0 && trev11 != was_rev) {
		fprintf(stderr, "runner: the restarted testee declares another revision\n");
		exit(2);
	}
	if (started++ && tclass != was) {
		fprintf(stderr, "runner: the restarted testee declares another class\n");
		exit(2);
	}
	int *v;
	int n = list_fds(tpid, &v);
	if (n < 0) {
		fprintf(stderr, "runner: cannot read /proc/%d/fd\n", (int)tpid);
		return -1;
	}
	free(v);
	return 0;
}

/* One request with descriptors; reads the response. */
static int transact(struct buf *req, const int *fds, int nfds, struct resp *r)
{
	if (nfds && send_fd_batches(tsock, fds, nfds)) {
		fail("cannot pass descriptors to the testee: %s", strerror(errno));
		return -1;
	}
	if (testee_send(req))
		return -1;
	if (testee_read(r))
		return -1;
	/* A testee that never reads fd 3 leaves the descriptors queued in its
	 * socket, where /proc/PID/fd does not show them: it would pass the
	 * holdings checks as if it had closed them.  By the time it answers, it
	 * must have taken every byte (and so every descriptor) sent to it. */
	if (nfds) {
		int q = 0;
		if (ioctl(tsock, SIOCOUTQ, &q) == 0 && q > 0) {
			fail("testee answered without reading the %d descriptor(s) sent on fd 3 "
			     "(they are still queued in its socket)", nfds);
			return -1;
		}
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* /proc checks                                                             */

/* The testee must hold, of the objects of this case run (tracked), exactly
 * those in want[0..nwant) (a multiset by inode), each close-on-exec.  Its
 * other descriptors are not the runner's business: they are not counted. */
struct held {
	dev_t dev;
	ino_t ino;
};

static void check_holdings(const struct held *want, int nwant, const char *when)
{
	if (failed)
		return;
	int *v;
	int n = list_fds(tpid, &v);
	if (n < 0) {
		fail("cannot read /proc/%d/fd %s", (int)tpid, when);
		return;
	}
	int used[MAX_OBJS * 2] = {0};
	int extra = 0;
	char extra_desc[256] = "";
	for (int i = 0; i < n; i++) {
		char p[96];
		struct stat st;
		snprintf(p, sizeof p, "/proc/%d/fd/%d", (int)tpid, v[i]);
		if (stat(p, &st))
			continue; /* closed meanwhile */
		if (!track_find(st.st_dev, st.st_ino))
			continue; /* not an object of this case: the testee's own */
		int found = 0;
		for (int j = 0; j < nwant && j < MAX_OBJS * 2; j++)
			if (!used[j] && want[j].dev == st.st_dev && want[j].ino == st.st_ino) {
				used[j] = 1;
				found = 1;
				break;
			}
		if (!found) {
			extra++;
			char t[64];
			char lnk[128] = "";
			ssize_t l = readlink(p, lnk, sizeof lnk - 1);
			if (l > 0)
				lnk[l] = 0;
			snprintf(t, sizeof t, " fd %d (%s)", v[i], lnk);
			if (strlen(extra_desc) + strlen(t) < sizeof extra_desc)
				strcat(extra_desc, t);
		}
		/* close-on-exec, from /proc/PID/fdinfo/N "flags: <octal>" */
		snprintf(p, sizeof p, "/proc/%d/fdinfo/%d", (int)tpid, v[i]);
		FILE *f = fopen(p, "r");
		if (f) {
			char line[128];
			while (fgets(line, sizeof line, f)) {
				unsigned long fl;
				if (sscanf(line, "flags: %lo", &fl) == 1) {
					if (!(fl & O_CLOEXEC))
						fail("%s: testee fd %d is not close-on-exec", when, v[i]);
					break;
				}
			}
			fclose(f);
		}
	}
	free(v);
	int missing = 0;
	for (int j = 0; j < nwant; j++)
		if (!used[j])
			missing++;
	if (extra)
		fail("%s: testee holds %d unexpected descriptor(s) of this case:%s", when, extra,
		     extra_desc);
	else if (missing)
		fail("%s: testee should hold %d more descriptor(s) of this case", when, missing);
}

/* Does the runner itself hold the sent end of t (same inode, same access
 * mode: a pipe's two ends share an inode)?  Then its watch cannot hang up. */
static int runner_holds(const struct tracked *t, int mode)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return 1;
	int holds = 0;
	struct dirent *e;
	while (!holds && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		int fd = atoi(e->d_name);
		struct stat st;
		if (fd == dirfd(d) || fd == t->watch || fstat(fd, &st))
			continue;
		if (st.st_dev == t->dev && st.st_ino == t->ino &&
		    (fcntl(fd, F_GETFL) & O_ACCMODE) == mode)
			holds = 1;
	}
	closedir(d);
	return holds;
}

/* Everything of this case run that went to the testee must now be released
 * everywhere: for each sent object with another end, that end hangs up. */
static void check_released(const char *when)
{
	if (failed)
		return;
	for (int i = 0; i < ntrk; i++) {
		struct tracked *t = &trk[i];
		if (!t->sent || t->watch < 0)
			continue;
		int wmode = fcntl(t->watch, F_GETFL) & O_ACCMODE;
		struct stat st;
		int pipe_end = fstat(t->watch, &st) == 0 && S_ISFIFO(st.st_mode);
		/* the sent end: a pipe's opposite mode; a socket's peer (own inode) */
		int smode = !pipe_end ? O_RDWR : wmode == O_RDONLY ? O_WRONLY : O_RDONLY;
		if (runner_holds(t, smode))
			continue;
		struct pollfd p = {t->watch, 0, 0};
		int r;
		do
			r = poll(&p, 1, 1000);
		while (r < 0 && errno == EINTR);
		if (r <= 0 || !(p.revents & (POLLHUP | POLLERR)))
			fail("%s: a %s sent to the testee is still open somewhere (its other end "
			     "sees no hang-up), though the testee holds no descriptor of it",
			     when, t->what);
	}
}

/* ------------------------------------------------------------------------ */
/* case execution                                                           */

static const char *vtext(const struct vcase *c)
{
	return c->value ? c->value : "";
}

static void add_limits(struct buf *b, const struct vcase *c)
{
	buf_printf(b, "max_payload %u\nmax_handles %u\nmax_depth %u\n",
		   c->max_payload ? c->max_payload : 16777216u,
		   c->max_handles ? c->max_handles : 64u, c->max_depth ? c->max_depth : 32u);
	/* revision 1.1 cases only: a 1.0 testee never sees these keys */
	if (c->rev11)
		buf_printf(b, "revision 1.1\n");
	if (c->max_channels)
		buf_printf(b, "max_channels %u\n", c->max_channels);
}

static void frame_diff(const char *what, const struct buf *want, const struct buf *got)
{
	size_t i = 0;
	while (i < want->len && i < got->len && want->p[i] == got->p[i])
		i++;
	fail("%s: frame differs at byte %zu (want %zu bytes, got %zu)", what, i, want->len,
	     got->len);
}

/* A decode the case expects to succeed: the testee's answer is ok, its
 * re-encoded frame is the canonical one, its value the case's text and its
 * consumed count the frame's size (both classes). */
static void check_decode_success(const struct vcase *c, const struct resp *r)
{
	const struct buf *want = c->kind == K_SUCCESS ? &c->bytes : &c->canonical;

	if (strcmp(r->status, "ok"))
		fail("decode: expected success, got error %s", r->error);
	else if (!r->has_frame)
		fail("decode: response without frame");
	else if (r->frame.len != want->len || memcmp(r->frame.p, want->p, want->len))
		frame_diff("decode, re-encoded", want, &r->frame);
	else if (r->value && strcmp(r->value, vtext(c)))
		fail("decode: value %s, expected %s", r->value, vtext(c));
	else if (r->consumed >= 0 && (size_t)r->consumed != want->len)
		fail("decode: consumed %ld bytes, the frame has %zu", r->consumed, want->len);
}

/* Receive the fds a response announces and compare them with objs, in order. */
static void check_returned_fds(const char *what, const struct resp *r, const struct object *objs,
			       int nobjs)
{
	if (failed)
		return;
	if (r->nfds != nobjs) {
		int tmp[1024];
		if (r->nfds > 0 && recv_fd_batches(tsock, tmp, r->nfds) == 0)
			for (int i = 0; i < r->nfds; i++)
				close(tmp[i]);
		fail("%s: testee returned %d descriptors, expected %d", what, r->nfds, nobjs);
		return;
	}
	int *fds = xmalloc((size_t)(nobjs + 1) * sizeof(int));
	if (recv_fd_batches(tsock, fds, nobjs) == 0) {
		for (int i = 0; i < nobjs; i++) {
			if (!same_object(fds[i], objs[i].dev, objs[i].ino))
				fail("%s: descriptor %d returned by the testee is not the object #%d sent",
				     what, i, i);
			close(fds[i]);
		}
	}
	free(fds);
}

static void objs_to_held(const struct object *objs, int n, struct held *h)
{
	for (int i = 0; i < n; i++) {
		h[i].dev = objs[i].dev;
		h[i].ino = objs[i].ino;
	}
}

static int obj_fds(const struct object *objs, int n, int *fds)
{
	for (int i = 0; i < n; i++)
		fds[i] = objs[i].fd;
	return n;
}

static int simple_request(const char *op)
{
	struct buf req = {0};
	buf_printf(&req, "op %s\n", op);
	struct resp r;
	int rc = transact(&req, NULL, 0, &r);
	free(req.p);
	if (rc)
		return -1;
	if (strcmp(r.status, "ok")) {
		fail("%s: testee answered error %s", op, r.error);
		resp_free(&r);
		return -1;
	}
	resp_free(&r);
	return 0;
}

/* Release everything; the testee must hold nothing of this case run. */
static void reset_and_check(const char *when)
{
	if (simple_request("reset") == 0) {
		check_holdings(NULL, 0, when);
		check_released(when);
	}
}

static void run_decode(const struct vcase *c)
{
	struct object objs[MAX_OBJS];
	if (make_objects(c, objs)) {
		fail("cannot create the case's objects");
		return;
	}
	struct buf req = {0};
	int fds[MAX_OBJS];
	buf_printf(&req, "op decode\nname %s\n", c->name);
	add_limits(&req, c);
	buf_printf(&req, "fds %d\nframe ", c->nobjs);
	buf_hex(&req, c->bytes.p, c->bytes.len);
	buf_printf(&req, "\n");
	struct resp r;
	int rc = transact(&req, fds, obj_fds(objs, c->nobjs, fds), &r);
	free(req.p);
	/* the testee has its own copies now */
	for (int i = 0; i < c->nobjs; i++) {
		close(objs[i].fd);
		objs[i].fd = -1;
	}
	if (rc)
		goto out;
	if (c->kind == K_DECODE_FAILURE) {
		if (strcmp(r.status, "error"))
			fail("decode: expected error %s, testee accepted the frame", c->error);
		else if (strcmp(r.error, c->error))
			fail("decode: expected error %s, got %s", c->error, r.error);
		else
			check_holdings(NULL, 0, "after decode error");
	} else {
		check_decode_success(c, &r);
		check_returned_fds("decode", &r, objs, c->nobjs);
		struct held h[MAX_OBJS];
		objs_to_held(objs, c->nobjs, h);
		check_holdings(h, c->nobjs, "after decode");
	}
	free_objects(objs, c->nobjs);
	if (!failed)
		reset_and_check("after reset");
out:
	resp_free(&r);
	free_objects(objs, c->nobjs);
}

static void run_encode(const struct vcase *c)
{
	struct object objs[MAX_OBJS];
	if (make_objects(c, objs)) {
		fail("cannot create the case's objects");
		return;
	}
	struct buf req = {0};
	int fds[MAX_OBJS];
	buf_printf(&req, "op encode\nname %s\nfds %d\nvalue %s\n", c->name, c->nobjs, vtext(c));
	struct resp r;
	int rc = transact(&req, fds, obj_fds(objs, c->nobjs, fds), &r);
	free(req.p);
	free_objects(objs, c->nobjs); /* the testee has its copies; identities stay known */
	if (rc)
		goto out;
	if (c->kind == K_ENCODE_FAILURE) {
		if (strcmp(r.status, "error"))
			fail("encode: expected error %s, testee encoded the value", c->error);
		else if (strcmp(r.error, c->error))
			fail("encode: expected error %s, got %s", c->error, r.error);
		else
			check_holdings(NULL, 0, "after encode error");
	} else {
		if (strcmp(r.status, "ok"))
			fail("encode: expected success, got error %s", r.error);
		else if (!r.has_frame)
			fail("encode: response without frame");
		else if (r.frame.len != c->bytes.len || memcmp(r.frame.p, c->bytes.p, c->bytes.len))
			frame_diff("encode", &c->bytes, &r.frame);
		check_returned_fds("encode", &r, objs, c->nobjs);
		struct held h[MAX_OBJS];
		objs_to_held(objs, c->nobjs, h);
		check_holdings(h, c->nobjs, "after encode");
	}
	free_objects(objs, c->nobjs);
	if (!failed)
		reset_and_check("after reset");
out:
	resp_free(&r);
	free_objects(objs, c->nobjs);
}

/* ---- codec class ------------------------------------------------------- */

/* A codec-class testee has no descriptors.  Instead of objects, a request
 * carries the case's handle table as kinds (conn for a conn object, fd for any
 * other) and as ids, one per entry, unique within the run: `handle_kinds` and
 * `handle_ids`.  A successful response names the table of the value it
 * returns by those ids, in table order (`handle_ids`), as a transport testee
 * returns the objects themselves. */
static long next_hid = 1;

static const char *codec_kind(enum obj o)
{
	return o == O_CONN ? "conn" : "fd";
}

static void add_handle_table(struct buf *req, const struct vcase *c, long *ids)
{
	buf_printf(req, "handle_kinds");
	for (int i = 0; i < c->nobjs; i++)
		buf_printf(req, " %s", codec_kind(c->objs[i]));
	buf_printf(req, "\nhandle_ids");
	for (int i = 0; i < c->nobjs; i++) {
		ids[i] = next_hid++;
		buf_printf(req, " %ld", ids[i]);
	}
	buf_printf(req, "\n");
}

/* Why a case does not apply to a codec-class testee, or NULL if it does. */
static const char *codec_not_applicable(const struct vcase *c)
{
	if (c->transport)
		return "a transport case";
	if (c->error && !strcmp(c->error, "WRONG_HANDLE_KIND"))
		for (int i = 0; i < c->nobjs; i++)
			if (c->objs[i] == O_DGRAM || c->objs[i] == O_SEQPACKET ||
			    c->objs[i] == O_TCP || c->objs[i] == O_LISTENER ||
			    c->objs[i] == O_UNCONNECTED)
				return "its verdict needs a check of a real socket (SPEC.md 4.2 rule 2)";
	return NULL;
}

static void check_returned_ids(const char *what, const struct resp *r, const long *ids, int n)
{
	if (failed)
		return;
	if (r->nfds) {
		fail("%s: a codec-class testee announced %d descriptors", what, r->nfds);
		return;
	}
	if (!r->has_hids) {
		fail("%s: response without handle_ids", what);
		return;
	}
	if (r->nhids != n) {
		fail("%s: testee returned %d handle table entries, expected %d", what, r->nhids, n);
		return;
	}
	for (int i = 0; i < n; i++)
		if (r->hids[i] != ids[i]) {
			fail("%s: handle table entry %d returned by the testee (id %ld) is not entry "
			     "#%d sent (id %ld)", what, i, r->hids[i], i, ids[i]);
			return;
		}
}

static void run_decode_codec(const struct vcase *c)
{
	long ids[MAX_OBJS];
	struct buf req = {0};
	buf_printf(&req, "op decode\nname %s\n", c->name);
	add_limits(&req, c);
	add_handle_table(&req, c, ids);
	buf_printf(&req, "frame ");
	buf_hex(&req, c->bytes.p, c->bytes.len);
	buf_printf(&req, "\n");
	struct resp r;
	int rc = transact(&req, NULL, 0, &r);
	free(req.p);
	if (rc)
		return;
	if (c->kind == K_DECODE_FAILURE) {
		if (strcmp(r.status, "error"))
			fail("decode: expected error %s, testee accepted the frame", c->error);
		else if (strcmp(r.error, c->error))
			fail("decode: expected error %s, got %s", c->error, r.error);
	} else {
		check_decode_success(c, &r);
		check_returned_ids("decode", &r, ids, c->nobjs);
	}
	resp_free(&r);
}

static void run_encode_codec(const struct vcase *c)
{
	long ids[MAX_OBJS];
	struct buf req = {0};
	buf_printf(&req, "op encode\nname %s\n", c->name);
	add_handle_table(&req, c, ids);
	buf_printf(&req, "value %s\n", vtext(c));
	struct resp r;
	int rc = transact(&req, NULL, 0, &r);
	free(req.p);
	if (rc)
		return;
	if (c->kind == K_ENCODE_FAILURE) {
		if (strcmp(r.status, "error"))
			fail("encode: expected error %s, testee encoded the value", c->error);
		else if (strcmp(r.error, c->error))
			fail("encode: expected error %s, got %s", c->error, r.error);
	} else {
		if (strcmp(r.status, "ok"))
			fail("encode: expected success, got error %s", r.error);
		else if (!r.has_frame)
			fail("encode: response without frame");
		else if (r.frame.len != c->bytes.len || memcmp(r.frame.p, c->bytes.p, c->bytes.len))
			frame_diff("encode", &c->bytes, &r.frame);
		check_returned_ids("encode", &r, ids, c->nobjs);
	}
	resp_free(&r);
}

/* ---- stream helpers ---------------------------------------------------- */

/* Held objects of the testee during a stream case: connections (attached or
 * adopted) persist; the descriptors of a received message are held only until
 * the next request (spec/vectors.md §4.3). */
static struct held sheld[MAX_OBJS * 2];
static int stransient[MAX_OBJS * 2];
static int nsheld;

static void held_add2(dev_t dev, ino_t ino, int transient)
{
	if (nsheld < MAX_OBJS * 2) {
		sheld[nsheld].dev = dev;
		sheld[nsheld].ino = ino;
		stransient[nsheld] = transient;
		nsheld++;
	}
}

static void held_add(dev_t dev, ino_t ino)
{
	held_add2(dev, ino, 0);
}

static void held_drop_transient(void)
{
	for (int i = 0; i < nsheld;)
		if (stransient[i]) {
			sheld[i] = sheld[nsheld - 1];
			stransient[i] = stransient[nsheld - 1];
			nsheld--;
		} else {
			i++;
		}
}

/* Table indices of the conn markers {"$conn":N} of a canonical text value.
 * In canonical text the sequence {"$conn": only ever starts a marker. */
static int conn_indices(const char *value, int *isconn, int n)
{
	int k = 0;
	for (int i = 0; i < n; i++)
		isconn[i] = 0;
	for (const char *p = value; p && (p = strstr(p, "{\"$conn\":")); p += 9) {
		int idx = atoi(p + 9);
		if (idx >= 0 && idx < n) {
			isconn[idx] = 1;
			k++;
		}
	}
	return k;
}

static void held_remove(dev_t dev, ino_t ino)
{
	for (int i = 0; i < nsheld; i++)
		if (sheld[i].dev == dev && sheld[i].ino == ino) {
			sheld[i] = sheld[nsheld - 1];
			stransient[i] = stransient[nsheld - 1];
			nsheld--;
			return;
		}
}

/* A connection the testee holds: the runner's end and the testee's end. */
struct tconn {
	int id;
	int peer; /* runner's end */
	dev_t dev;
	ino_t ino; /* testee's end */
	int keep; /* runner's copy of the testee's end, or -1 */
};

#ifndef SO_PASSPIDFD
#define SO_PASSPIDFD 76
#endif
/* Set by the delivery passcred: the testee's end gets SO_PASSCRED and, where
 * the kernel has it, SO_PASSPIDFD before it is handed over (the options belong
 * to the socket, SPEC.md §10.4 rule 4). */
static int attach_passcred, passpidfd_set;

static int attach(const struct vcase *c, struct tconn *tc, int keep_copy)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
		fail("socketpair: %s", strerror(errno));
		return -1;
	}
	passpidfd_set = 0;
	if (attach_passcred) {
		int one = 1;
		if (setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof one)) {
			fail("SO_PASSCRED: %s", strerror(errno));
			close(sv[0]);
			close(sv[1]);
			return -1;
		}
		passpidfd_set = setsockopt(sv[1], SOL_SOCKET, SO_PASSPIDFD, &one, sizeof one) == 0;
	}
	struct stat st;
	fstat(sv[1], &st);
	track_add(st.st_dev, st.st_ino, sv[0], "connection");
	tc->peer = sv[0];
	tc->dev = st.st_dev;
	tc->ino = st.st_ino;
	tc->keep = -1;
	struct buf req = {0};
	buf_printf(&req, "op attach\nfds 1\n");
	add_limits(&req, c);
	struct resp r;
	int rc = transact(&req, &sv[1], 1, &r);
	free(req.p);
	if (keep_copy)
		tc->keep = sv[1];
	else
		close(sv[1]);
	if (rc) {
		resp_free(&r);
		return -1;
	}
	if (strcmp(r.status, "ok")) {
		fail("attach: testee answered error %s", r.error);
		resp_free(&r);
		return -1;
	}
	tc->id = r.conn;
	resp_free(&r);
	held_add(tc->dev, tc->ino);
	return 0;
}

static void tconn_close(struct tconn *tc)
{
	if (tc->peer >= 0)
		close(tc->peer);
	if (tc->keep >= 0)
		close(tc->keep);
	tc->peer = tc->keep = -1;
}

/* Wait until the peer has consumed everything written on sock. */
static int wait_consumed(int sock)
{
	for (int i = 0; i < HANG_MS * 10; i++) {
		int q = 0;
		if (ioctl(sock, SIOCOUTQ, &q) == 0 && q == 0)
			return 0;
		int st;
		if (waitpid(tpid, &st, WNOHANG) == tpid) {
			tpid = -1;
			fail("testee died");
			return -1;
		}
		struct timespec ts = {0, 100 * 1000};
		nanosleep(&ts, NULL);
	}
	fail("testee does not read the connection");
	return -1;
}

static int send_with_fds(int sock, const unsigned char *p, size_t n, const int *fds, int nfds)
{
	struct iovec iov = {(void *)p, n};
	union {
		char buf[CMSG_SPACE(BATCH * sizeof(int))];
		struct cmsghdr align;
	} u;
	memset(&u, 0, sizeof u);
	struct msghdr mh = {0};
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	track_sent(fds, nfds);
	if (nfds) {
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, (size_t)nfds * sizeof(int));
	}
	while (n > 0) {
		ssize_t w = sendmsg(sock, &mh, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			fail("sendmsg to the testee: %s", strerror(errno));
			return -1;
		}
		/* the rest without descriptors (SPEC.md §10.2) */
		mh.msg_control = NULL;
		mh.msg_controllen = 0;
		iov.iov_base = (char *)iov.iov_base + w;
		iov.iov_len -= (size_t)w;
		n -= (size_t)w;
	}
	return 0;
}

/* Set by the delivery slow_read: read_frame reads at most 16 KiB a call and
 * pauses between calls, so that a testee's sendmsg of a large frame is partial. */
static int read_slowly;

/* Read one frame the testee sent on sock; fds received into *fds. */
static int read_frame(int sock, struct buf *out, int *fds, int *nfds)
{
	size_t need = 16;
	int got_hdr = 0;
	*nfds = 0;
	out->len = 0;
	while (out->len < need) {
		if (wait_readable(sock, HANG_MS) <= 0) {
			fail("no frame from the testee");
			return -1;
		}
		unsigned char tmp[65536];
		size_t want = need - out->len;
		if (want > sizeof tmp)
			want = sizeof tmp;
		if (read_slowly && want > 16384)
			want = 16384;
		if (read_slowly) {
			struct timespec ts = {0, 200 * 1000};
			nanosleep(&ts, NULL);
		}
		struct iovec iov = {tmp, want};
		union {
			char buf[CMSG_SPACE(256 * sizeof(int))];
			struct cmsghdr align;
		} u;
		struct msghdr mh = {0};
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof u.buf;
		ssize_t r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
		if (r <= 0) {
			fail("reading the testee's frame: %s", r ? strerror(errno) : "end of stream");
			return -1;
		}
		int first = out->len == 0;
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
			if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
				continue;
			int m = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			for (int i = 0; i < m; i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(cm) + (size_t)i * sizeof(int), sizeof fd);
				if (!first && !failed)
					fail("testee attached descriptors to byte %zu of its frame (a second "
					     "write carried them again? SPEC.md §10.2 rules 1-2)", out->len);
				if (*nfds < MAX_OBJS)
					fds[(*nfds)++] = fd;
				else
					close(fd);
			}
		}
		buf_add(out, tmp, (size_t)r);
		if (!got_hdr && out->len >= 16) {
			got_hdr = 1;
			uint32_t pl = out->p[12] | (uint32_t)out->p[13] << 8 |
				      (uint32_t)out->p[14] << 16 | (uint32_t)out->p[15] << 24;
			need = 16 + (size_t)pl;
		}
	}
	return 0;
}

/* The testee must have closed its end: EOF or ECONNRESET, now. */
static void expect_closed(int sock, const char *when)
{
	if (failed)
		return;
	char b[256];
	for (;;) {
		ssize_t r = recv(sock, b, sizeof b, MSG_DONTWAIT);
		if (r == 0 || (r < 0 && errno == ECONNRESET))
			return;
		if (r > 0)
			continue; /* data the testee sent before closing */
		fail("%s: the testee did not close the connection after a fatal error", when);
		return;
	}
}

static void expect_nothing_sent(int sock, const char *when)
{
	if (failed)
		return;
	char b;
	ssize_t r = recv(sock, &b, 1, MSG_DONTWAIT | MSG_PEEK);
	if (r >= 0)
		fail("%s: the testee wrote to the connection", when);
	else if (errno != EAGAIN && errno != EWOULDBLOCK)
		fail("%s: connection: %s", when, strerror(errno));
}

static int do_recv_req(int id)
{
	struct buf req = {0};
	buf_printf(&req, "op recv\nconn %d\n", id);
	int rc = testee_send(&req);
	free(req.p);
	return rc;
}

/* Check an ok recv response: frame, fds, adopted conns.  objs are the
 * objects the frame carried; their inodes become testee holdings. */
static void check_recv_ok(const char *what, struct resp *r, const struct buf *want,
			  const char *value, const struct object *objs, int nobjs)
{
	int isconn[MAX_OBJS];
	int nconn = conn_indices(value, isconn, nobjs);
	if (failed)
		return;
	if (strcmp(r->status, "ok")) {
		fail("%s: expected a frame, got error %s", what, r->error);
		return;
	}
	if (!r->has_frame) {
		fail("%s: response without frame", what);
		return;
	}
	if (r->frame.len != want->len || memcmp(r->frame.p, want->p, want->len)) {
		frame_diff(what, want, &r->frame);
		return;
	}
	if (r->nconns != nconn) {
		fail("%s: testee adopted %d conns, the frame has %d conn handles", what, r->nconns,
		     nconn);
		return;
	}
	check_returned_fds(what, r, objs, nobjs);
	for (int i = 0; i < nobjs; i++)
		held_add2(objs[i].dev, objs[i].ino, !isconn[i]);
	check_holdings(sheld, nsheld, what);
}

static const unsigned char followup_bytes[] = {
	0x43, 0x48, 0x41, 0x4e, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x04, 0x00, 0x00, 0x00, 0x4a, 0x02, 0x10, 0x01, /* {"$fd":0} */
};

/* A frame with one pipe handle must arrive next on tc: the stream is in sync
 * and descriptors are attributed to the right frame. */
static void followup(struct tconn *tc, const char *when)
{
	if (failed)
		return;
	struct object ob;
	if (make_object(O_PIPE_READ, &ob)) {
		fail("pipe: %s", strerror(errno));
		return;
	}
	struct buf want = {0};
	buf_add(&want, followup_bytes, sizeof followup_bytes);
	struct resp r = {0};
	if (send_with_fds(tc->peer, want.p, want.len, &ob.fd, 1) == 0 && do_recv_req(tc->id) == 0 &&
	    testee_read(&r) == 0) {
		char what[128];
		snprintf(what, sizeof what, "next frame %s", when);
		check_recv_ok(what, &r, &want, "{\"$fd\":0}", &ob, 1);
	}
	resp_free(&r);
	free(want.p);
	free_objects(&ob, 1);
}

/* Set: the testee owes the runner its HELLO, which must come before the frame. */
static int hello_first;
static int expect_hello_frame(int sock, const char *when);

/* The testee sends value (objects objs) on tc; the runner reads and checks it. */
static void send_and_check(struct tconn *tc, const char *value, const struct buf *want,
			   const struct object *objs, int nobjs, const char *what)
{
	if (failed)
		return;
	struct buf req = {0};
	int fds[MAX_OBJS];
	buf_printf(&req, "op send\nconn %d\nfds %d\nvalue %s\n", tc->id, nobjs, value);
	struct resp r;
	int rc = transact(&req, fds, obj_fds(objs, nobjs, fds), &r);
	free(req.p);
	if (rc)
		return;
	if (strcmp(r.status, "ok")) {
		fail("%s: send failed with %s", what, r.error);
		resp_free(&r);
		return;
	}
	resp_free(&r);
	check_holdings(sheld, nsheld, what);
	if (hello_first && expect_hello_frame(tc->peer, what))
		return;
	struct buf got = {0};
	int rfds[MAX_OBJS], nr = 0;
	if (read_frame(tc->peer, &got, rfds, &nr) == 0) {
		if (got.len != want->len || memcmp(got.p, want->p, want->len))
			frame_diff(what, want, &got);
		else if (nr != nobjs)
			fail("%s: %d descriptors came with the frame, expected %d", what, nr, nobjs);
		for (int i = 0; i < nr; i++) {
			if (i < nobjs && !same_object(rfds[i], objs[i].dev, objs[i].ino))
				fail("%s: descriptor %d on the wire is not object #%d", what, i, i);
			close(rfds[i]);
		}
	}
	free(got.p);
}

static int is_fatal(const char *err)
{
	return !strcmp(err_scope(err), "fatal");
}

/* After a receive error: fatal -> the testee closed the connection;
 * frame -> the next frame arrives. */
static void after_error(struct tconn *tc, const char *err)
{
	if (failed)
		return;
	if (is_fatal(err)) {
		held_remove(tc->dev, tc->ino);
		check_holdings(sheld, nsheld, "after fatal error");
		expect_closed(tc->peer, "after fatal error");
	} else {
		check_holdings(sheld, nsheld, "after frame error");
		followup(tc, "after a frame-scope error");
	}
}

static void check_error(const struct resp *r, const char *want, const char *what)
{
	if (failed)
		return;
	if (strcmp(r->status, "error"))
		fail("%s: expected error %s, the testee succeeded", what, want);
	else if (strcmp(r->error, want))
		fail("%s: expected error %s, got %s", what, want, r->error);
}

/* Lower the testee's RLIMIT_NOFILE so that exactly `slots` descriptor
 * numbers are free below the limit. */
static int squeeze_fd_limit(int slots, struct rlimit *old)
{
	int *v;
	int n = list_fds(tpid, &v);
	if (n < 0)
		return -1;
	int lim = 0, free_slots = 0;
	for (;;) {
		int used = 0;
		for (int i = 0; i < n; i++)
			if (v[i] == lim)
				used = 1;
		if (!used) {
			if (free_slots == slots)
				break;
			free_slots++;
		}
		lim++;
	}
	free(v);
	if (prlimit(tpid, RLIMIT_NOFILE, NULL, old))
		return -1;
	struct rlimit nl = {(rlim_t)lim, old->rlim_max};
	return prlimit(tpid, RLIMIT_NOFILE, &nl, NULL);
}


/* ------------------------------------------------------------------------ */
/* revision 1.1 deliveries (spec/vectors.md §3.3): the runner is the peer   */

static int is_r11_delivery(const char *tr)
{
	static const char *const names[] = {"peer10", "hello", "hello_require", "epitaph",
					    "channel_reply", "frames", "refused_channels",
					    "readahead", NULL};
	for (int i = 0; names[i]; i++)
		if (!strcmp(tr, names[i]))
			return 1;
	return 0;
}

static uint32_t le32(const unsigned char *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The frames of bytes written back to back: offsets and lengths. */
static int split_frames(const struct buf *b, size_t *off, size_t *len, int max)
{
	int n = 0;
	for (size_t pos = 0; pos + 16 <= b->len && n < max; n++) {
		off[n] = pos;
		len[n] = 16 + (size_t)le32(b->p + pos + 12);
		if (pos + len[n] > b->len)
			len[n] = b->len - pos;
		pos += len[n];
	}
	return n;
}

/* A tiny reader of canonical protobuf, enough for the control messages the
 * testee sends (SPEC.md §16.2, §17.3, §18.5): the runner has no libchan. */
static int pb_varint(const unsigned char **p, const unsigned char *e, uint64_t *v)
{
	*v = 0;
	for (int sh = 0; *p < e && sh < 64; sh += 7) {
		unsigned char b = *(*p)++;
		*v |= (uint64_t)(b & 0x7f) << sh;
		if (!(b & 0x80))
			return 0;
	}
	return -1;
}

/* Field num (LEN) of a message body: its bytes. */
static int pb_len_field(const unsigned char *p, size_t n, unsigned num, const unsigned char **vp,
			size_t *vn)
{
	const unsigned char *e = p + n;
	while (p < e) {
		uint64_t tag, v;
		if (pb_varint(&p, e, &tag))
			return -1;
		if ((tag & 7) == 0) {
			if (pb_varint(&p, e, &v))
				return -1;
		} else if ((tag & 7) == 1) {
			if (e - p < 8)
				return -1;
			p += 8;
		} else if ((tag & 7) == 2) {
			if (pb_varint(&p, e, &v) || v > (uint64_t)(e - p))
				return -1;
			if ((tag >> 3) == num) {
				*vp = p;
				*vn = (size_t)v;
				return 0;
			}
			p += v;
		} else {
			return -1;
		}
	}
	return -1;
}

/* The Value of entry `key` of the map that the Value body (p, n) holds; the
 * entry's position in *pos. */
static int map_get(const unsigned char *p, size_t n, const char *key, const unsigned char **vp,
		   size_t *vn, int *pos)
{
	const unsigned char *m;
	size_t mn;
	if (pb_len_field(p, n, 8, &m, &mn))
		return -1;
	const unsigned char *e = m + mn;
	for (int i = 0; m < e; i++) {
		uint64_t tag, l;
		if (pb_varint(&m, e, &tag) || tag != 0x0a || pb_varint(&m, e, &l) ||
		    l > (uint64_t)(e - m))
			return -1;
		const unsigned char *k, *v;
		size_t kn, vn2;
		if (pb_len_field(m, (size_t)l, 1, &k, &kn) == 0 && kn == strlen(key) &&
		    !memcmp(k, key, kn) && pb_len_field(m, (size_t)l, 2, &v, &vn2) == 0) {
			*vp = v;
			*vn = vn2;
			if (pos)
				*pos = i;
			return 0;
		}
		m += l;
	}
	return -1;
}

static int value_is_str(const unsigned char *p, size_t n, const char *want)
{
	const unsigned char *s;
	size_t sn;
	return pb_len_field(p, n, 5, &s, &sn) == 0 && sn == strlen(want) && !memcmp(s, want, sn);
}

static int value_int(const unsigned char *p, size_t n, long *ret)
{
	const unsigned char *e = p + n;
	uint64_t tag, v;
	if (pb_varint(&p, e, &tag) || tag != 0x18 || pb_varint(&p, e, &v))
		return -1;
	*ret = (long)((v >> 1) ^ (~(v & 1) + 1));
	return 0;
}

/* A control frame of the testee (no handles) whose op (first entry) is op. */
static int control_op(const struct buf *f, const char *op)
{
	const unsigned char *v;
	size_t vn;
	int pos;
	return f->len >= 16 && (f->p[5] & 0x01) && f->p[6] == 0 && f->p[7] == 0 &&
	       map_get(f->p + 16, f->len - 16, "op", &v, &vn, &pos) == 0 && pos == 0 &&
	       value_is_str(v, vn, op);
}

/* A well-formed HELLO (SPEC.md §16.2 rule 1) on channel 0. */
static int is_hello(const struct buf *f)
{
	const unsigned char *v, *m;
	size_t vn, mn;
	return control_op(f, "hello") && f->p[5] == 0x01 && le32(f->p + 8) == 0 &&
	       map_get(f->p + 16, f->len - 16, "features", &v, &vn, NULL) == 0 &&
	       pb_len_field(v, vn, 8, &m, &mn) == 0;
}

static long code_of(const char *name)
{
	for (int i = 0; i < nerrdefs; i++)
		if (!strcmp(errdefs[i].name, name))
			return errdefs[i].code;
	return -1;
}

/* Channel ids named by a Value body, in walk order (List items, Map values). */
static void value_channels(const unsigned char *p, size_t n, uint32_t *ids, int *nids)
{
	const unsigned char *e = p + n, *q = p;
	uint64_t tag, l;
	if (pb_varint(&q, e, &tag) || (tag & 7) != 2 || pb_varint(&q, e, &l) ||
	    l > (uint64_t)(e - q))
		return;
	const unsigned char *b = q, *be = q + l;
	if (tag >> 3 == 10) {
		uint64_t t2, id;
		if (pb_varint(&b, be, &t2) == 0 && t2 == 0x08 && pb_varint(&b, be, &id) == 0 &&
		    *nids < MAX_OBJS)
			ids[(*nids)++] = (uint32_t)id;
	} else if (tag >> 3 == 7 || tag >> 3 == 8) {
		while (b < be) {
			uint64_t t2, l2;
			if (pb_varint(&b, be, &t2) || pb_varint(&b, be, &l2) ||
			    l2 > (uint64_t)(be - b))
				return;
			if (tag >> 3 == 7) {
				value_channels(b, (size_t)l2, ids, nids);
			} else {
				const unsigned char *v;
				size_t vn;
				if (pb_len_field(b, (size_t)l2, 2, &v, &vn) == 0)
					value_channels(v, vn, ids, nids);
			}
			b += l2;
		}
	}
}

/* Write the case's frames, each with its own sendmsg; the descriptors go with
 * the last one (SPEC.md §10.2 rule 1). */
static int write_frames(int sock, const struct buf *b, const int *fds, int nfds)
{
	size_t off[64], len[64];
	int n = split_frames(b, off, len, 64);
	for (int i = 0; i < n; i++)
		if (send_with_fds(sock, b->p + off[i], len[i], fds, i == n - 1 ? nfds : 0))
			return -1;
	return 0;
}

/* The last frame of the case with flags and channel 0: what a receive of it
 * returns, re-encoded (a re-encoding is a frame on channel 0 with flags 0). */
static void last_frame_plain(const struct vcase *c, struct buf *out)
{
	size_t off[64], len[64];
	int n = split_frames(&c->bytes, off, len, 64);
	out->len = 0;
	buf_add(out, c->bytes.p + off[n - 1], len[n - 1]);
	out->p[5] = 0;
	memset(out->p + 8, 0, 4);
}

/* Everything the testee writes until it closes. */
static int read_to_eof(int sock, struct buf *all)
{
	for (;;) {
		if (wait_readable(sock, HANG_MS) <= 0) {
			fail("the testee did not close the connection after a fatal error");
			return -1;
		}
		unsigned char tmp[4096];
		ssize_t r = recv(sock, tmp, sizeof tmp, 0);
		if (r == 0 || (r < 0 && errno == ECONNRESET))
			return 0;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			fail("reading the testee's connection: %s", strerror(errno));
			return -1;
		}
		buf_add(all, tmp, (size_t)r);
	}
}

/* The testee's next frame must be its HELLO (SPEC.md §16.2 rule 4). */
static int expect_hello_frame(int sock, const char *when)
{
	struct buf f = {0};
	int fds[MAX_OBJS], nfds = 0, rc = -1;
	if (read_frame(sock, &f, fds, &nfds) == 0) {
		if (!is_hello(&f))
			fail("%s: the testee's first frame after the runner's HELLO is not its HELLO "
			     "(flags 0x%02x, %zu bytes)", when, f.len > 5 ? f.p[5] : 0, f.len);
		else
			rc = 0;
	}
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	free(f.p);
	return rc;
}

static int recv_resp(struct tconn *tc, struct resp *r)
{
	resp_free(r);
	return do_recv_req(tc->id) || testee_read(r);
}

/* After a fatal receive error: the testee closes; before that it may write its
 * HELLO answer, and an epitaph (required when want_epi, forbidden otherwise). */
static void fatal_epilogue(struct tconn *tc, int want_epi)
{
	held_remove(tc->dev, tc->ino);
	check_holdings(sheld, nsheld, "after fatal error");
	struct buf all = {0}, f = {0};
	if (failed || read_to_eof(tc->peer, &all)) {
		free(all.p);
		return;
	}
	size_t off[64], len[64];
	int n = split_frames(&all, off, len, 64), other = 0, epi = 0;
	long want = code_of("UNSUPPORTED_FEATURE");
	for (int i = 0; i < n && !failed; i++) {
		f.len = 0;
		buf_add(&f, all.p + off[i], len[i]);
		if (i == 0 && is_hello(&f))
			continue;
		const unsigned char *v;
		size_t vn;
		long code = 0;
		if (control_op(&f, "epitaph") &&
		    map_get(f.p + 16, f.len - 16, "code", &v, &vn, NULL) == 0 &&
		    value_int(v, vn, &code) == 0) {
			epi++;
			if (code != want)
				fail("the testee's epitaph has code %ld, expected %ld", code, want);
		} else {
			other++;
		}
	}
	if (!failed && other)
		fail("the testee wrote %d frame(s) that are neither its HELLO nor an epitaph", other);
	else if (!failed && want_epi && epi != 1)
		fail("no epitaph with code %ld (UNSUPPORTED_FEATURE) came before the close "
		     "(the runner's HELLO announced epitaph)", want);
	else if (!failed && !want_epi && epi)
		fail("the testee sent an epitaph, but the runner did not announce epitaph");
	free(f.p);
	free(all.p);
}

static void run_stream11(const struct vcase *c, struct tconn *tc, struct object *objs, int *fds)
{
	const char *tr = c->transport;
	struct resp r = {0};
	struct buf plain = {0};
	/* SPEC.md §16.2 rule 3: nothing may come before the runner's first frame */
	expect_nothing_sent(tc->peer, "right after attach (a HELLO unprompted?)");
	if (failed)
		return;
	if (!strcmp(tr, "readahead")) {
		/* both frames queued before the first receive, each its own sendmsg */
		size_t off[2], len[2];
		if (split_frames(&c->bytes, off, len, 2) != 2) {
			fail("readahead: two frames");
			return;
		}
		struct buf f1 = {0}, f2 = {0};
		buf_add(&f1, c->bytes.p, len[0]);
		buf_add(&f2, c->bytes.p + off[1], len[1]);
		if (send_with_fds(tc->peer, f1.p, f1.len, NULL, 0) == 0 &&
		    send_with_fds(tc->peer, f2.p, f2.len, fds, c->nobjs) == 0 &&
		    recv_resp(tc, &r) == 0) {
			/* frame 2's descriptors may be held by the connection already
			 * (read ahead): no holdings check until frame 2 is received */
			if (strcmp(r.status, "ok"))
				fail("receive of frame 1: error %s", r.error);
			else if (!r.has_frame || r.frame.len != f1.len || memcmp(r.frame.p, f1.p, f1.len))
				frame_diff("receive of frame 1", &f1, &r.frame);
			else if (r.nfds)
				fail("receive of frame 1 (no descriptors): the testee returned %d descriptors "
				     "(frame 2's, attributed to the wrong frame)", r.nfds);
			if (r.nfds) {
				int tmp[MAX_OBJS];
				recv_fd_batches(tsock, tmp, r.nfds < MAX_OBJS ? r.nfds : MAX_OBJS);
				for (int i = 0; i < r.nfds && i < MAX_OBJS; i++)
					close(tmp[i]);
			}
			if (!failed && recv_resp(tc, &r) == 0)
				check_recv_ok("receive of frame 2 (its descriptors)", &r, &f2, vtext(c),
					      objs, c->nobjs);
		}
		free(f1.p);
		free(f2.p);
		resp_free(&r);
		return;
	}
	if (write_frames(tc->peer, &c->bytes, fds, c->nobjs) || recv_resp(tc, &r))
		goto out;
	last_frame_plain(c, &plain);
	if (!strcmp(tr, "peer10")) {
		check_recv_ok("receive", &r, &c->bytes, vtext(c), objs, c->nobjs);
		struct object back[MAX_OBJS];
		if (!failed && make_objects(c, back) == 0) {
			send_and_check(tc, vtext(c), &c->bytes, back, c->nobjs, "send to a 1.0 peer");
			free_objects(back, c->nobjs);
		}
		expect_nothing_sent(tc->peer, "a 1.0 peer got more than the reply (a HELLO?)");
	} else if (!strcmp(tr, "hello")) {
		check_recv_ok("receive after the runner's HELLO", &r, &plain, vtext(c), objs, c->nobjs);
		struct object back[MAX_OBJS];
		if (!failed && make_objects(c, back) == 0) {
			hello_first = 1;
			send_and_check(tc, vtext(c), &plain, back, c->nobjs, "reply after the HELLO");
			hello_first = 0;
			free_objects(back, c->nobjs);
		}
	} else if (!strcmp(tr, "hello_require")) {
		check_error(&r, c->error, "receive");
		if (!failed)
			fatal_epilogue(tc, c->ntarg && c->targ[0]);
	} else if (!strcmp(tr, "epitaph")) {
		check_error(&r, c->error, "receive of the peer's epitaph");
		if (!failed && strcmp(c->error, "CONNECTION_CLOSED") && r.epitaph != 1)
			fail("receive: %s, but not as the peer's epitaph (no 'epitaph 1')", c->error);
		if (!failed && r.epitaph == 1) {
			/* SPEC.md §17.3 rule 3: every later receive: CONNECTION_CLOSED */
			if (recv_resp(tc, &r))
				goto out;
			check_error(&r, "CONNECTION_CLOSED", "receive after the epitaph");
		}
		if (!failed)
			fatal_epilogue(tc, 0);
	} else if (!strcmp(tr, "channel_reply")) {
		check_recv_ok("receive of a request opening channel 1", &r, &plain, vtext(c), objs,
			      c->nobjs);
		if (failed)
			goto out;
		if (r.nchans != 1) {
			fail("receive: the testee reported %d channel endpoints ('channels' line), "
			     "expected 1", r.nchans);
			goto out;
		}
		struct buf req = {0};
		struct resp r2;
		buf_printf(&req, "op send\nconn %d\nlast 1\nfds 0\nvalue \"done\"\n", r.chans[0]);
		int rc = transact(&req, NULL, 0, &r2);
		free(req.p);
		if (rc)
			goto out;
		if (strcmp(r2.status, "ok"))
			fail("send with END on the received channel: error %s", r2.error);
		resp_free(&r2);
		if (failed || expect_hello_frame(tc->peer, "reply on the channel"))
			goto out;
		static const unsigned char want_reply[] = {
			0x43, 0x48, 0x41, 0x4e, 0x01, 0x02 /* END */, 0x00, 0x00,
			0x01, 0x00, 0x00, 0x80 /* channel 1, opened by the receiver */,
			0x06, 0x00, 0x00, 0x00, 0x2a, 0x04, 'd', 'o', 'n', 'e'};
		struct buf want = {0}, got = {0};
		buf_add(&want, want_reply, sizeof want_reply);
		int rfds[MAX_OBJS], nr = 0;
		if (read_frame(tc->peer, &got, rfds, &nr) == 0) {
			if (got.len != want.len || memcmp(got.p, want.p, want.len))
				frame_diff("the reply with END on channel 0x80000001", &want, &got);
			for (int i = 0; i < nr; i++)
				close(rfds[i]);
			if (nr && !failed)
				fail("the reply carries %d descriptors", nr);
			expect_nothing_sent(tc->peer, "after the reply with END (a close frame?)");
		}
		free(want.p);
		free(got.p);
	} else if (!strcmp(tr, "frames") || !strcmp(tr, "refused_channels")) {
		if (c->kind == K_SUCCESS) {
			check_recv_ok("receive", &r, &plain, vtext(c), objs, c->nobjs);
			goto out;
		}
		check_error(&r, c->error, "receive");
		if (failed)
			goto out;
		check_holdings(sheld, nsheld, "after frame error");
		if (!strcmp(tr, "refused_channels")) {
			/* SPEC.md §18.3 rule 2: close with the error's code for every id */
			uint32_t ids[MAX_OBJS];
			int nids = 0;
			value_channels(plain.p + 16, plain.len - 16, ids, &nids);
			if (expect_hello_frame(tc->peer, "after a refused frame"))
				goto out;
			for (int i = 0; i < nids && !failed; i++) {
				struct buf f = {0};
				int rfds[MAX_OBJS], nr = 0;
				const unsigned char *v;
				size_t vn;
				long code = 0;
				if (read_frame(tc->peer, &f, rfds, &nr) == 0 &&
				    !(control_op(&f, "close") && f.p[5] == 0x03 &&
				      le32(f.p + 8) == (ids[i] | 0x80000000u) &&
				      map_get(f.p + 16, f.len - 16, "code", &v, &vn, NULL) == 0 &&
				      value_int(v, vn, &code) == 0 && code == code_of(c->error)))
					fail("expected close with code %ld on channel 0x%08x (refused), "
					     "got a frame of %zu bytes on channel 0x%08x",
					     code_of(c->error), ids[i] | 0x80000000u, f.len,
					     f.len >= 16 ? le32(f.p + 8) : 0);
				for (int j = 0; j < nr; j++)
					close(rfds[j]);
				free(f.p);
			}
		}
		followup(tc, "after a frame-scope error");
	} else {
		fail("unknown transport %s", tr);
	}
out:
	free(plain.p);
	resp_free(&r);
}

/* Descriptors the testee holds that are pidfds of the runner (SCM_PIDFD of a
 * receive on a socket with SO_PASSPIDFD, which the receiver must close). */
static int runner_pidfds(void)
{
	int *v;
	int n = list_fds(tpid, &v), k = 0;
	for (int i = 0; i < n; i++) {
		char path[64], link[64], line[128];
		snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)tpid, v[i]);
		ssize_t m = readlink(path, link, sizeof link - 1);
		if (m <= 0)
			continue;
		link[m] = 0;
		if (strcmp(link, "anon_inode:[pidfd]"))
			continue;
		snprintf(path, sizeof path, "/proc/%d/fdinfo/%d", (int)tpid, v[i]);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		while (fgets(line, sizeof line, f))
			if (!strncmp(line, "Pid:", 4) && atoi(line + 4) == (int)getpid())
				k++;
		fclose(f);
	}
	if (n > 0)
		free(v);
	return k;
}

static void check_pidfds(const char *when)
{
	if (failed || !passpidfd_set)
		return;
	int k = runner_pidfds();
	if (k)
		fail("%s: the testee holds %d pidfd(s) of the runner: an SCM_PIDFD it received "
		     "(SO_PASSPIDFD) was not closed (SPEC.md §10.4 rule 4)", when, k);
}

/* peer_closed: the runner shuts its end down (both directions), then asks the
 * testee to send: EPIPE -> CONNECTION_CLOSED, and the testee must still answer
 * (MSG_NOSIGNAL, SPEC.md §10.2 rule 3). */
static void run_peer_closed(const struct vcase *c, struct tconn *tc, const int *fds, struct resp *r)
{
	shutdown(tc->peer, SHUT_RDWR);
	struct buf req = {0};
	buf_printf(&req, "op send\nconn %d\nfds %d\nvalue %s\n", tc->id, c->nobjs, vtext(c));
	int rc = transact(&req, fds, c->nobjs, r);
	free(req.p);
	if (rc)
		return;
	check_error(r, c->error, "send to a peer that closed");
	/* the reset that ends every case run must be answered too */
}

/* slow_read: a frame of several MiB both ways.  The runner asks recv first and
 * writes (its blocking write completes as the testee reads); then asks send and
 * reads the testee's frame slowly before the response: the testee's first
 * sendmsg is partial, and its descriptors must come once, with byte 0. */
static void run_slow_read(const struct vcase *c, struct tconn *tc, struct object *objs, const int *fds,
			  struct resp *r)
{
	const struct buf *bytes = &c->bytes;
	if (do_recv_req(tc->id) || send_with_fds(tc->peer, bytes->p, bytes->len, fds, c->nobjs) ||
	    testee_read(r))
		return;
	check_recv_ok("receive", r, bytes, vtext(c), objs, c->nobjs);
	resp_free(r);
	if (failed)
		return;
	struct object back[MAX_OBJS];
	int bfds[MAX_OBJS];
	if (make_objects(c, back)) {
		fail("cannot create the case's objects");
		return;
	}
	obj_fds(back, c->nobjs, bfds);
	struct buf req = {0};
	buf_printf(&req, "op send\nconn %d\nfds %d\nvalue %s\n", tc->id, c->nobjs, vtext(c));
	struct buf got = {0};
	int rfds[MAX_OBJS], nr = 0;
	if (send_fd_batches(tsock, bfds, c->nobjs)) {
		fail("cannot pass descriptors to the testee: %s", strerror(errno));
	} else if (testee_send(&req) == 0) {
		/* let the testee fill the socket buffer: its first sendmsg is partial */
		struct timespec ts = {0, 50 * 1000 * 1000};
		nanosleep(&ts, NULL);
		read_slowly = 1;
		int rc = read_frame(tc->peer, &got, rfds, &nr);
		read_slowly = 0;
		int frame_failed = failed;
		if (rc == 0 && testee_read(r) == 0) {
			if (strcmp(r->status, "ok"))
				fail("send: send failed with %s", r->error);
			else if (!frame_failed) {
				if (got.len != bytes->len || memcmp(got.p, bytes->p, bytes->len))
					frame_diff("send", bytes, &got);
				else if (nr != c->nobjs)
					fail("send: %d descriptors came with the frame, expected %d once", nr,
					     c->nobjs);
				for (int i = 0; i < nr && !failed; i++)
					if (i < c->nobjs && !same_object(rfds[i], back[i].dev, back[i].ino))
						fail("send: descriptor %d on the wire is not object #%d", i, i);
				check_holdings(sheld, nsheld, "send");
			}
		}
		for (int i = 0; i < nr; i++)
			close(rfds[i]);
	}
	free(req.p);
	free(got.p);
	free_objects(back, c->nobjs);
}

static void run_stream(const struct vcase *c)
{
	const char *tr = c->transport ? c->transport : "whole";
	struct object objs[MAX_OBJS];
	int fds[MAX_OBJS];
	struct tconn tc = {.peer = -1, .keep = -1};
	struct resp r = {0};
	nsheld = 0;
	if (make_objects(c, objs)) {
		fail("cannot create the case's objects");
		return;
	}
	int self = !strcmp(tr, "self_send") || !strcmp(tr, "peer_send");
	attach_passcred = !strcmp(tr, "passcred");
	int arc = attach(c, &tc, self);
	attach_passcred = 0;
	if (arc)
		goto out;
	if (!strcmp(tr, "self_send")) {
		/* replace object #last conn by a copy of the testee's own endpoint */
		for (int i = 0; i < c->nobjs; i++)
			if (c->objs[i] == O_CONN) {
				close(objs[i].fd);
				close(objs[i].other);
				objs[i].other = -1;
				objs[i].fd = fcntl(tc.keep, F_DUPFD_CLOEXEC, 0);
				objs[i].dev = tc.dev;
				objs[i].ino = tc.ino;
			}
	} else if (!strcmp(tr, "peer_send")) {
		for (int i = 0; i < c->nobjs; i++)
			if (c->objs[i] == O_CONN) {
				struct stat st;
				close(objs[i].fd);
				close(objs[i].other);
				objs[i].other = -1;
				objs[i].fd = fcntl(tc.peer, F_DUPFD_CLOEXEC, 0);
				fstat(objs[i].fd, &st);
				objs[i].dev = st.st_dev;
				objs[i].ino = st.st_ino;
			}
	}
	obj_fds(objs, c->nobjs, fds);

	if (c->rev11 && is_r11_delivery(tr)) {
		run_stream11(c, &tc, objs, fds);
		goto out;
	}

	if (!strcmp(tr, "peer_closed")) {
		run_peer_closed(c, &tc, fds, &r);
		goto out;
	}
	if (!strcmp(tr, "slow_read")) {
		run_slow_read(c, &tc, objs, fds, &r);
		goto out;
	}

	if (c->kind == K_ENCODE_FAILURE) {
		struct buf req = {0};
		buf_printf(&req, "op send\nconn %d\nfds %d\nvalue %s\n", tc.id, c->nobjs, vtext(c));
		int rc = transact(&req, fds, c->nobjs, &r);
		free(req.p);
		if (rc)
			goto out;
		check_error(&r, c->error, "send");
		check_holdings(sheld, nsheld, "after send error");
		expect_nothing_sent(tc.peer, "after send error");
		followup(&tc, "after a refused send");
		goto out;
	}

	const struct buf *bytes = &c->bytes;
	if (!strcmp(tr, "whole") || !strcmp(tr, "echo") || !strcmp(tr, "max_handles") ||
	    !strcmp(tr, "self_send") || !strcmp(tr, "closed_at_boundary") || !strcmp(tr, "passcred")) {
		/* a frame larger than a socket buffer: the testee must be reading
		 * before the runner's blocking write can complete */
		int big = bytes->len > 65536;
		if (big && do_recv_req(tc.id))
			goto out;
		if (send_with_fds(tc.peer, bytes->p, bytes->len, fds, c->nobjs))
			goto out;
		if (c->kind == K_DECODE_FAILURE && !strcmp(c->error, "TRUNCATED"))
			shutdown(tc.peer, SHUT_WR);
		if ((!big && do_recv_req(tc.id)) || testee_read(&r))
			goto out;
	} else if (!strcmp(tr, "bytewise")) {
		if (do_recv_req(tc.id))
			goto out;
		for (size_t i = 0; i < bytes->len; i++) {
			if (send_with_fds(tc.peer, bytes->p + i, 1, fds, i == 0 ? c->nobjs : 0) ||
			    wait_consumed(tc.peer))
				goto out;
		}
		if (testee_read(&r))
			goto out;
	} else if (!strcmp(tr, "fds_at")) {
		size_t at = c->ntarg ? (size_t)c->targ[0] : 1;
		if (at == 0 || at >= bytes->len) {
			fail("fds_at %zu outside the frame", at);
			goto out;
		}
		if (do_recv_req(tc.id) || send_with_fds(tc.peer, bytes->p, at, NULL, 0) ||
		    wait_consumed(tc.peer) ||
		    send_with_fds(tc.peer, bytes->p + at, bytes->len - at, fds, c->nobjs) ||
		    testee_read(&r))
			goto out;
	} else if (!strcmp(tr, "close_after")) {
		size_t at = c->ntarg ? (size_t)c->targ[0] : 1;
		if (at == 0 || at >= bytes->len) {
			fail("close_after %zu outside the frame", at);
			goto out;
		}
		if (send_with_fds(tc.peer, bytes->p, at, fds, c->nobjs))
			goto out;
		shutdown(tc.peer, SHUT_WR);
		if (do_recv_req(tc.id) || testee_read(&r))
			goto out;
	} else if (!strcmp(tr, "fd_limit")) {
		struct rlimit old;
		int slots = c->ntarg ? (int)c->targ[0] : 1;
		if (squeeze_fd_limit(slots, &old)) {
			fail("prlimit on the testee: %s", strerror(errno));
			goto out;
		}
		int rc = send_with_fds(tc.peer, bytes->p, bytes->len, fds, c->nobjs) ||
			 do_recv_req(tc.id) || testee_read(&r);
		if (tpid > 0)
			prlimit(tpid, RLIMIT_NOFILE, &old, NULL);
		if (rc)
			goto out;
	} else if (!strcmp(tr, "reply") || !strcmp(tr, "nested")) {
		/* handled below */
	} else {
		fail("unknown transport %s", tr);
		goto out;
	}

	if (!strcmp(tr, "reply") || !strcmp(tr, "nested")) {
		/* level k: a fresh conn object travels over the conn of level k-1 */
		int levels = !strcmp(tr, "nested") ? (c->ntarg ? (int)c->targ[0] : 3) : 1;
		struct tconn chain[8];
		int nchain = 0;
		struct tconn *cur = &tc;
		for (int k = 0; k < levels && k < 8 && !failed; k++) {
			struct object lvl[MAX_OBJS];
			if (make_objects(c, lvl)) {
				fail("cannot create objects");
				break;
			}
			int lfds[MAX_OBJS];
			obj_fds(lvl, c->nobjs, lfds);
			resp_free(&r);
			char what[64];
			snprintf(what, sizeof what, "level %d receive", k + 1);
			if (send_with_fds(cur->peer, bytes->p, bytes->len, lfds, c->nobjs) == 0 &&
			    do_recv_req(cur->id) == 0 && testee_read(&r) == 0) {
				check_recv_ok(what, &r, bytes, vtext(c), lvl, c->nobjs);
				/* the first conn object is the next level */
				int ci = -1;
				for (int i = 0; i < c->nobjs; i++)
					if (c->objs[i] == O_CONN) {
						ci = i;
						break;
					}
				if (!failed && (ci < 0 || r.nconns < 1))
					fail("%s: the testee reported no received conn", what);
				if (!failed) {
					struct tconn *nx = &chain[nchain++];
					nx->id = r.conns[0];
					nx->peer = lvl[ci].other;
					lvl[ci].other = -1;
					nx->keep = -1;
					nx->dev = lvl[ci].dev;
					nx->ino = lvl[ci].ino;
					cur = nx;
				}
			}
			free_objects(lvl, c->nobjs);
		}
		/* answer through the innermost received conn, the value of the case */
		if (!failed) {
			struct object ans[MAX_OBJS];
			if (make_objects(c, ans) == 0) {
				send_and_check(cur, vtext(c), bytes, ans, c->nobjs,
					       "send through the received conn");
				free_objects(ans, c->nobjs);
			}
		}
		for (int i = 0; i < nchain; i++)
			tconn_close(&chain[i]);
		goto out;
	}

	if (c->kind == K_DECODE_FAILURE && !strcmp(c->error, "CONNECTION_CLOSED")) {
		/* the frame arrives; then the runner closes at the boundary */
		check_recv_ok("receive", &r, bytes, vtext(c), objs, c->nobjs);
		resp_free(&r);
		if (failed)
			goto out;
		shutdown(tc.peer, SHUT_WR);
		if (do_recv_req(tc.id) || testee_read(&r))
			goto out;
		check_error(&r, c->error, "receive at end of stream");
		after_error(&tc, c->error);
	} else if (c->kind == K_DECODE_FAILURE) {
		check_error(&r, c->error, "receive");
		after_error(&tc, c->error);
	} else {
		check_recv_ok("receive", &r, bytes, vtext(c), objs, c->nobjs);
		check_pidfds("receive");
		/* and back: the testee sends the value it was given */
		struct object back[MAX_OBJS];
		if (!failed && make_objects(c, back) == 0) {
			send_and_check(&tc, vtext(c), bytes, back, c->nobjs, "send");
			free_objects(back, c->nobjs);
		}
	}
out:
	/* the runner lets go of everything first, so that the hang-ups it then
	 * expects can only be held back by the testee */
	tconn_close(&tc);
	free_objects(objs, c->nobjs);
	if (!failed && tpid > 0)
		reset_and_check("after reset");
	resp_free(&r);
}

/* ------------------------------------------------------------------------ */
/* results, failure lists                                                   */

struct pattern {
	char *pat;
	char *reason;
	int matched;
};
static struct pattern *pats;
static int npats;

static void load_failing(const char *path)
{
	FILE *f = open_or_exit(path);
	char line[1024];
	while (fgets(line, sizeof line, f)) {
		line[strcspn(line, "\r\n")] = 0;
		char *h = strchr(line, '#');
		char *reason = "";
		if (h) {
			*h = 0;
			reason = h + 1;
		}
		char *s = line;
		while (*s == ' ' || *s == '\t')
			s++;
		char *e = s + strlen(s);
		while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
			*--e = 0;
		if (!*s)
			continue;
		pats = xrealloc(pats, (size_t)(npats + 1) * sizeof *pats);
		pats[npats].pat = xstrdup(s);
		pats[npats].reason = xstrdup(reason);
		pats[npats].matched = 0;
		npats++;
	}
	fclose(f);
}

static int expected_to_fail(const char *name)
{
	int hit = 0;
	for (int i = 0; i < npats; i++)
		if (!fnmatch(pats[i].pat, name, 0)) {
			pats[i].matched++;
			hit = 1;
		}
	return hit;
}

static int npass, nfail, nxfail, nna, nrun;

/* A case that does not apply to the testee's class: neither run nor passed,
 * and never matched against the failure list. */
static int nna_rev;

static void report_na(const char *name, const char *why)
{
	nna++;
	if (verbose)
		printf("N/A %s: not applicable to class codec (%s)\n", name, why);
	fflush(stdout);
}

/* A revision 1.1 case and a 1.0 testee: neither run nor passed. */
static void report_na_rev(const char *name)
{
	nna_rev++;
	if (verbose)
		printf("N/A %s: a revision 1.1 case; the testee implements 1.0\n", name);
	fflush(stdout);
}

static void report(const char *name, int ok)
{
	int xf = expected_to_fail(name);
	nrun++;
	if (ok && !xf) {
		npass++;
		if (verbose)
			printf("PASS %s\n", name);
	} else if (!ok && xf) {
		nxfail++;
		if (verbose)
			printf("XFAIL %s: %s\n", name, failmsg);
	} else if (ok && xf) {
		nfail++;
		printf("FAIL %s: listed as failing but passes (remove it from the list)\n", name);
	} else {
		nfail++;
		printf("FAIL %s: %s\n", name, failmsg);
	}
	fflush(stdout);
}

static void ensure_testee(void)
{
	if (tpid > 0) {
		int st;
		if (waitpid(tpid, &st, WNOHANG) != tpid)
			return;
		tpid = -1;
	}
	testee_stop();
	if (testee_start()) {
		fprintf(stderr, "runner: cannot start the testee\n");
		exit(2);
	}
}

/* A failed check may leave the testee in any state: start a fresh one. */
static void after_check(void)
{
	if (failed) {
		testee_stop();
		ensure_testee();
	}
}

static void run_case_codec(const struct vcase *c, int stream)
{
	char name[600];
	int has_stream = stream && !c->transport && c->kind != K_DECODE_SUCCESS && !c->rev11;
	snprintf(name, sizeof name, "%s@stream", c->name);
	const char *why = codec_not_applicable(c);
	if (why) {
		report_na(c->name, why);
		if (has_stream)
			report_na(name, why);
		return;
	}
	failed = 0;
	failmsg[0] = 0;
	switch (c->kind) {
	case K_SUCCESS:
		run_encode_codec(c);
		if (!failed)
			run_decode_codec(c);
		break;
	case K_DECODE_SUCCESS:
	case K_DECODE_FAILURE:
		run_decode_codec(c);
		break;
	case K_ENCODE_FAILURE:
		run_encode_codec(c);
		break;
	}
	report(c->name, !failed);
	after_check();
	if (has_stream)
		report_na(name, "over a connection");
}

static void run_case(const struct vcase *c, int stream)
{
	char name[600];
	track_reset();
	if (c->rev11 && !trev11) {
		/* issue 14: a testee that says nothing of revisions is a 1.0 testee */
		report_na_rev(c->name); /* 1.1 in-memory cases have no @stream run (below) */
		return;
	}
	if (tclass == C_CODEC) {
		run_case_codec(c, stream);
		return;
	}
	if (c->transport) {
		failed = 0;
		failmsg[0] = 0;
		run_stream(c);
		report(c->name, !failed);
		after_check();
		return;
	}
	failed = 0;
	failmsg[0] = 0;
	switch (c->kind) {
	case K_SUCCESS:
		run_encode(c);
		if (!failed)
			run_decode(c);
		break;
	case K_DECODE_SUCCESS:
	case K_DECODE_FAILURE:
		run_decode(c);
		break;
	case K_ENCODE_FAILURE:
		run_encode(c);
		break;
	}
	report(c->name, !failed);
	after_check();
	/* A 1.1 codec-level case over a connection would need the runner's HELLO
	 * first: the transport-level 1.1 cases do that. */
	if (!stream || c->kind == K_DECODE_SUCCESS || c->rev11)
		return;
	track_reset();
	failed = 0;
	failmsg[0] = 0;
	run_stream(c);
	snprintf(name, sizeof name, "%s@stream", c->name);
	report(name, !failed);
	after_check();
}

int main(int argc, char **argv)
{
	const char *vecdir = "conformance/vectors", *errors = "spec/errors.tsv";
	const char *failing = NULL, *only = NULL;
	int stream = 1, i;
	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--")) {
			i++;
			break;
		} else if (!strcmp(argv[i], "--vectors") && i + 1 < argc) {
			vecdir = argv[++i];
		} else if (!strcmp(argv[i], "--errors") && i + 1 < argc) {
			errors = argv[++i];
		} else if (!strcmp(argv[i], "--failing") && i + 1 < argc) {
			failing = argv[++i];
		} else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
			only = argv[++i];
		} else if (!strcmp(argv[i], "--no-stream")) {
			stream = 0;
		} else if (!strcmp(argv[i], "--verbose") || !strcmp(argv[i], "-v")) {
			verbose++;
		} else {
			fprintf(stderr,
				"usage: %s [--vectors DIR] [--errors FILE] [--failing FILE] "
				"[--only GLOB] [--no-stream] [-v] -- TESTEE [ARG...]\n",
				argv[0]);
			return 2;
		}
	}
	if (i >= argc) {
		fprintf(stderr, "runner: no testee given (-- TESTEE ...)\n");
		return 2;
	}
	testee_argv = argv + i;
	signal(SIGPIPE, SIG_IGN);
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max && rl.rlim_cur < 4096) {
		rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	load_errors(errors);
	load_vectors(vecdir);
	if (failing)
		load_failing(failing);
	ensure_testee();
	int run = 0;
	for (int k = 0; k < ncases; k++) {
		if (only && fnmatch(only, cases[k].name, 0))
			continue;
		run++;
		run_case(&cases[k], stream);
	}
	testee_stop();
	for (int k = 0; k < npats && !only; k++)
		if (!pats[k].matched) {
			nfail++;
			printf("FAIL %s: failure list entry matches no case (remove it)\n", pats[k].pat);
		}
	if (tclass == C_CODEC)
		printf("conformance: class codec (declared by the testee): %d cases apply, %d not "
		       "applicable to class codec (not run, not counted as passed)\n",
		       nrun, nna);
	else
		printf("conformance: class transport (%s): %d cases apply\n",
		       tclass_declared ? "declared by the testee" : "no class declared", nrun);
	if (nxfail)
		printf("conformance: %d expected failures (listed in %s)\n", nxfail, failing);
	printf("conformance: revision %s (%s)%s", trev11 ? "1.1" : "1.0",
	       trev11 ? "declared by the testee" : "no revision 1.1 declared", nna_rev ? "" : "\n");
	if (nna_rev)
		printf(": %d revision 1.1 cases not applicable (not run, not counted as passed)\n",
		       nna_rev);
	printf("conformance: %d passed, %d failed\n", npass, nfail);
	return nfail ? 1 : 0;
}
