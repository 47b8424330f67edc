/*
 * live.c - chancodec listen and send: chan messages over Unix sockets with
 * real descriptors.
 */
#include "chancodec.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* What a received descriptor really is */

static const char *
file_type(mode_t m)
{
	switch (m & S_IFMT) {
	case S_IFREG:
		return "regular";
	case S_IFDIR:
		return "directory";
	case S_IFCHR:
		return "chardev";
	case S_IFBLK:
		return "blockdev";
	case S_IFIFO:
		return "fifo";
	case S_IFSOCK:
		return "socket";
	case S_IFLNK:
		return "symlink";
	}
	return "unknown";
}

void
report_fd(FILE *out, uint32_t index, enum chan_kind kind, int fd)
{
	char link[64], path[PATH_MAX + 1], sock[64] = "";
	struct stat st;
	ssize_t n;
	int fdfl, flfl;

	fprintf(out, "# #%" PRIu32 " %s:", index, chan_kind_name(kind));
	if (fd < 0) {
		fprintf(out, " no descriptor\n");
		return;
	}
	if (fstat(fd, &st) < 0) {
		fprintf(out, " fstat: %s\n", strerror(errno));
		return;
	}
	if (S_ISSOCK(st.st_mode)) {
		int dom = -1, type = -1;
		socklen_t len = sizeof(int);

		getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &len);
		len = sizeof(int);
		getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len);
		snprintf(sock, sizeof(sock), " socket=%s/%s",
			 dom == AF_UNIX	   ? "unix"
			 : dom == AF_INET  ? "inet"
			 : dom == AF_INET6 ? "inet6"
					   : "other",
			 type == SOCK_STREAM	  ? "stream"
			 : type == SOCK_DGRAM	  ? "dgram"
			 : type == SOCK_SEQPACKET ? "seqpacket"
						  : "other");
	}
	fdfl = fcntl(fd, F_GETFD);
	flfl = fcntl(fd, F_GETFL);
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n < 0)
		n = 0;
	path[n] = '\0';
	fprintf(out,
		" type=%s%s dev=%u:%u ino=%ju access=%s cloexec=%s path=%s\n",
		file_type(st.st_mode), sock, major(st.st_dev),
		minor(st.st_dev), (uintmax_t)st.st_ino,
		(flfl & O_ACCMODE) == O_RDONLY	 ? "r"
		: (flfl & O_ACCMODE) == O_WRONLY ? "w"
						 : "rw",
		fdfl >= 0 && (fdfl & FD_CLOEXEC) ? "yes" : "no", path);
}

static void
walk_handles(FILE *out, const chan_value *v)
{
	size_t i, n;
	int fd;

	switch (chan_value_type(v)) {
	case CHAN_HANDLE:
		if (chan_value_borrow_fd(v, &fd) < 0)
			fd = -1;
		report_fd(out, chan_value_handle_index(v), chan_value_kind(v), fd);
		break;
	case CHAN_LIST:
	case CHAN_MAP:
		n = chan_value_count(v);
		for (i = 0; i < n; i++)
			walk_handles(out, chan_value_at(v, i));
		break;
	default:
		break;
	}
}

void
report_handles(FILE *out, const chan_value *v)
{
	walk_handles(out, v);
}

static void
print_message(chan_msg *msg, int pretty)
{
	tf_render(stdout, chan_msg_root(msg), pretty);
	putchar('\n');
	report_handles(stdout, chan_msg_root(msg));
	fflush(stdout);
}

/* Build a message without handles from text. */
static int
no_fds(void *ctx, enum chan_kind kind, uint32_t index, int *ret_fd,
       struct tf_error *err)
{
	(void)ctx;
	(void)ret_fd;
	tf_seterr(err, "INVALID_ARGUMENT",
		  "%s handle #%" PRIu32 ": a --reply text cannot hold handles",
		  chan_kind_name(kind), index);
	return -1;
}

/* ------------------------------------------------------------------------ */
/* listen */

static volatile sig_atomic_t stop_signal;

static void
on_signal(int sig)
{
	stop_signal = sig;
}

/* A channel the peer opened (revision 1.1), kept to show its frames. */
struct endpoint {
	chan_conn *ep;
	uint32_t id;
};

struct peer {
	chan_conn *conn;
	unsigned long id;
	unsigned features; /* chan_conn_features when last shown */
	struct endpoint *eps;
	size_t neps;
};

static const char *
features_text(unsigned f, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s%s%s", f & CHAN_FEATURE_EPITAPH ? " epitaph" : "",
		 f & CHAN_FEATURE_CHANNELS ? " channels" : "", f ? "" : " none");
	return buf;
}

/* Take every channel handle of v as an endpoint of p (SPEC.md §18.3 rule 3):
 * its frames are shown as they come. */
static void
keep_channels(struct peer *p, chan_value *v, const char *path)
{
	size_t i, n;
	chan_conn *ep;
	struct endpoint *ne;
	uint32_t id;
	int r;

	switch (chan_value_type(v)) {
	case CHAN_CHANNEL:
		id = chan_value_channel_id(v);
		r = chan_conn_move_from_value(v, &ep);
		if (r < 0) {
			report(path, chan_errname(r), "connection %lu: channel %" PRIu32 ": %s",
			       p->id, id, chan_strerror(r));
			break;
		}
		ne = realloc(p->eps, (p->neps + 1) * sizeof(*p->eps));
		if (!ne) {
			chan_conn_free(ep);
			break;
		}
		p->eps = ne;
		p->eps[p->neps].ep = ep;
		p->eps[p->neps++].id = id;
		printf("# channel %" PRIu32 ": opened by the peer; its frames follow "
		       "\"# connection %lu channel %" PRIu32 "\"\n", id, p->id, id);
		break;
	case CHAN_LIST:
	case CHAN_MAP:
		n = chan_value_count(v);
		for (i = 0; i < n; i++)
			keep_channels(p, chan_value_at(v, i), path);
		break;
	default:
		break;
	}
}

static void
peer_free(struct peer *p)
{
	for (size_t i = 0; i < p->neps; i++)
		chan_conn_free(p->eps[i].ep);
	free(p->eps);
	chan_conn_free(p->conn);
}

static void
usage_listen(FILE *out)
{
	fprintf(out,
		"Usage: %s listen [OPTIONS] PATH\n"
		"Listen on the Unix socket PATH ('@name': abstract) and print "
		"every message\nreceived, one per line, followed by one line "
		"per handle telling what the\ndescriptor really is:\n"
		"  # #N KIND: type=... dev=MAJ:MIN ino=... access=... "
		"cloexec=... path=...\n\n"
		"  --once             exit when the first connection ends\n"
		"  --mode=MODE        permissions of the socket file, octal "
		"(default: from the\n"
		"                     umask); an abstract name (@name) has "
		"none: any process\n"
		"                     of the network namespace may connect\n"
		"  -n, --count=N      exit after N messages\n"
		"  --reply=TEXT       answer every conn handle received with "
		"the message TEXT,\n"
		"                     then close it (without --reply conn "
		"handles are closed);\n"
		"                     a channel handle is answered with TEXT as "
		"its last frame\n"
		"  --hello            send a HELLO (revision 1.1) to every client "
		"as it connects:\n"
		"                     only for clients known to implement 1.1 (a "
		"1.0 client\n"
		"                     rejects it); a client's HELLO is always "
		"answered\n"
		"  -p, --pretty       indented output\n"
		"  --max-payload=N, --max-handles=N, --max-depth=N   receive "
		"limits\n"
		"  -h, --help         show this help\n",
		program_name);
}

/* Answer and close every conn handle of msg. */
static void
reply_all(chan_msg *reply, chan_value *v, const char *path)
{
	size_t i, n;
	chan_conn *c;
	uint32_t id;
	int r;

	switch (chan_value_type(v)) {
	case CHAN_HANDLE:
		if (chan_value_kind(v) != CHAN_KIND_CONN)
			break;
		r = chan_conn_move_from_value(v, &c);
		if (r == 0) {
			r = chan_conn_send(c, reply, 10000);
			if (r == 0)
				r = chan_conn_flush(c, 10000);
			chan_conn_free(c);
		}
		if (r < 0)
			report(path, chan_errname(r), "reply on #%" PRIu32 ": %s",
			       chan_value_handle_index(v),
			       r == CHAN_E_SYSTEM ? strerror(errno) : chan_strerror(r));
		else
			printf("# replied on #%" PRIu32 "\n",
			       chan_value_handle_index(v));
		break;
	case CHAN_CHANNEL: /* revision 1.1: the reply is the channel's last frame */
		id = chan_value_channel_id(v);
		r = chan_conn_move_from_value(v, &c);
		if (r == 0) {
			r = chan_conn_send_last(c, reply, 10000);
			if (r == 0)
				r = chan_conn_flush(c, 10000);
			chan_conn_free(c);
		}
		if (r < 0)
			report(path, chan_errname(r), "reply on channel %" PRIu32 ": %s", id,
			       r == CHAN_E_SYSTEM ? strerror(errno) : chan_strerror(r));
		else
			printf("# replied on channel %" PRIu32 "\n", id);
		break;
	case CHAN_LIST:
	case CHAN_MAP:
		n = chan_value_count(v);
		for (i = 0; i < n; i++)
			reply_all(reply, chan_value_at(v, i), path);
		break;
	default:
		break;
	}
}

/* One message received on p (on channel id, 0 for the connection itself). */
static void
show_message(struct peer *p, uint32_t id, chan_msg *msg, const struct common_opts *o,
	     chan_msg *reply, const char *path)
{
	if (id)
		printf("# connection %lu channel %" PRIu32 "\n", p->id, id);
	print_message(msg, o->pretty);
	if (reply)
		reply_all(reply, chan_msg_root(msg), path);
	else
		keep_channels(p, chan_msg_root(msg), path);
	fflush(stdout);
}

/*
 * Receive what p has now: its connection until WOULD_BLOCK, then each
 * channel it opened (whose frames the connection's reads queued), until
 * none has anything.  Returns 0 (keep p), 1 (p's connection ended: free it)
 * or 2 (--count reached).
 */
static int
serve_peer(struct peer *p, const struct common_opts *o, chan_msg *reply, const char *path,
	   unsigned long *nmsgs, int *status)
{
	int progress = 1, r, ended = 0;
	char f1[64], endmsg[600] = "";

	/* The connection's end is shown after the frames its channels still
	 * have queued (they arrived before it), whatever the timing. */
	while (progress) {
		progress = 0;
		while (!ended) {
			chan_msg *msg = NULL;
			const char *epitaph;
			int code = 0;

			r = chan_conn_recv(p->conn, 0, &msg);
			if (chan_conn_features(p->conn) != p->features) {
				/* the peer's HELLO (revision 1.1) */
				p->features = chan_conn_features(p->conn);
				printf("# connection %lu: HELLO received, features usable:%s\n",
				       p->id, features_text(p->features, f1, sizeof(f1)));
			}
			if (r == CHAN_E_WOULD_BLOCK)
				break;
			progress = 1;
			if (r == 0) {
				show_message(p, 0, msg, o, reply, path);
				chan_msg_free(msg);
				if (o->count && ++*nmsgs >= o->count)
					return 2;
				continue;
			}
			if ((epitaph = chan_conn_epitaph(p->conn, &code))) {
				const char *name = chan_errname(code);

				snprintf(endmsg, sizeof(endmsg),
					 "# connection %lu closed by the peer's epitaph: %s (%d)%s%.400s\n",
					 p->id, name ? name : "unregistered", code < 0 ? -code : code,
					 *epitaph ? ": " : "", epitaph);
			} else if (r == CHAN_E_CONNECTION_CLOSED) {
				snprintf(endmsg, sizeof(endmsg), "# connection %lu closed\n", p->id);
			} else {
				report(path, chan_errname(r), "connection %lu: %s", p->id,
				       r == CHAN_E_SYSTEM ? strerror(errno) : chan_strerror(r));
				*status = r == CHAN_E_SYSTEM ? EXIT_USAGE : EXIT_REJECTED;
				if (chan_error_scope(r) == CHAN_SCOPE_FRAME)
					continue;
			}
			ended = 1;
			break;
		}
		if (ended && !p->neps)
			break;
		for (size_t i = 0; i < p->neps; i++) {
			struct endpoint *e = &p->eps[i];
			chan_msg *msg = NULL;

			r = chan_conn_recv(e->ep, 0, &msg);
			if (r == CHAN_E_WOULD_BLOCK)
				continue;
			progress = 1;
			if (r == 0) {
				show_message(p, e->id, msg, o, reply, path);
				chan_msg_free(msg);
				if (o->count && ++*nmsgs >= o->count)
					return 2;
				i--; /* this channel again */
				continue;
			}
			if (r == CHAN_E_CHANNEL_CLOSED || chan_error_scope(r) == CHAN_SCOPE_FATAL ||
			    r == CHAN_E_CONNECTION_CLOSED) {
				printf("# connection %lu channel %" PRIu32 " closed%s%s\n", p->id,
				       e->id, r == CHAN_E_CHANNEL_CLOSED ? "" : ": ",
				       r == CHAN_E_CHANNEL_CLOSED ? "" : chan_errname(r));
				chan_conn_free(e->ep);
				p->eps[i] = p->eps[--p->neps];
				i--;
			} else {
				/* the code the peer's close gave, then CHANNEL_CLOSED */
				printf("# connection %lu channel %" PRIu32 ": %s\n", p->id, e->id,
				       chan_errname(r) ? chan_errname(r) : "unregistered code");
				i--;
			}
			fflush(stdout);
		}
	}
	if (ended) {
		fputs(endmsg, stdout);
		fflush(stdout);
	}
	/* the answer to a HELLO, or a close, may wait in the connection */
	if (!ended && (chan_conn_events(p->conn) & CHAN_EVENT_WRITE))
		chan_conn_flush(p->conn, 1000);
	return ended;
}

int
cmd_listen(int argc, char **argv)
{
	enum { OPT_ONCE = 2001, OPT_REPLY, OPT_MODE, OPT_HELLO };
	static const struct option longopts[] = {
		COMMON_LONGOPTS,
		{"once", no_argument, NULL, OPT_ONCE},
		{"hello", no_argument, NULL, OPT_HELLO},
		{"reply", required_argument, NULL, OPT_REPLY},
		{"mode", required_argument, NULL, OPT_MODE},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}};
	long mode = -1;
	int accept_paused = 0; /* out of descriptors: the listener is not polled */
	int emfile_reported = 0;
	char *end;
	struct common_opts o = {{0, 0, 0}, 0, 0, 0};
	const char *reply_text = NULL, *path;
	chan_msg *reply = NULL;
	chan_listener *l = NULL;
	struct peer *peers = NULL;
	struct pollfd *pfds = NULL;
	size_t npeers = 0, i;
	unsigned long nextid = 0, nmsgs = 0;
	int c, r, once = 0, status = EXIT_OK, done = 0, hello = 0;
	struct sigaction sa;

	while ((c = getopt_long(argc, argv, "+pn:h", longopts, NULL)) != -1) {
		r = common_option(&o, c, optarg);
		if (r < 0)
			return EXIT_USAGE;
		if (r > 0)
			continue;
		switch (c) {
		case OPT_ONCE:
			once = 1;
			break;
		case OPT_HELLO:
			hello = 1;
			break;
		case OPT_REPLY:
			reply_text = optarg;
			break;
		case OPT_MODE:
			errno = 0;
			mode = strtol(optarg, &end, 8);
			if (errno || *end || end == optarg || mode < 0 || mode > 0777)
				return usage_error("listen: --mode: '%s' is not an octal mode "
						   "such as 660", optarg);
			break;
		case 'h':
			usage_listen(stdout);
			return EXIT_OK;
		default:
			return usage_hint("listen");
		}
	}
	if (optind != argc - 1)
		return usage_error("listen: expected one socket PATH");
	path = argv[optind];
	if (reply_text) {
		struct tf_error err;
		json_t *j = tf_parse_string(reply_text, &err);

		reply = chan_msg_new(NULL);
		if (!j || !reply || tf_build(reply, j, no_fds, NULL, &err) < 0) {
			json_decref(j);
			chan_msg_free(reply);
			return usage_error("listen: --reply: %s: %s",
					   err.name, err.msg);
		}
		json_decref(j);
	}

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal; /* no SA_RESTART: poll returns EINTR */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);

	if (mode >= 0 && path[0] == '@')
		return usage_error("listen: --mode: %s is an abstract name, which has no "
				   "permissions (any process of the network namespace may "
				   "connect; check chan_conn_peer_cred instead)", path);
	if (mode >= 0) {
		/* The socket file is created with the umask's bits: set them
		 * for this one call (a single-threaded program), so the file
		 * never exists with wider permissions. */
		mode_t old = umask((mode_t)(~mode & 0777));

		r = chan_listen(path, &l);
		umask(old);
	} else {
		r = chan_listen(path, &l);
	}
	if (r < 0) {
		report(path, chan_errname(r), "cannot listen: %s",
		       r == CHAN_E_SYSTEM ? strerror(errno)
					  : chan_strerror(r));
		chan_msg_free(reply);
		return EXIT_USAGE;
	}
	fprintf(stderr, "%s: listening on %s\n", program_name, path);

	while (!done && !stop_signal) {
		size_t np = 0;

		free(pfds);
		pfds = calloc(npeers + 1, sizeof(*pfds));
		if (!pfds) {
			report(path, "NO_MEMORY", "out of memory");
			status = EXIT_USAGE;
			break;
		}
		/* --once: accept no second connection; out of descriptors:
		 * do not poll the listener (it would be readable at once,
		 * for ever) until a connection closes or a second passes */
		if (!(once && nextid > 0) && !accept_paused) {
			pfds[np].fd = chan_listener_borrow_fd(l);
			pfds[np++].events = POLLIN;
		}
		for (i = 0; i < npeers; i++) {
			pfds[np].fd = chan_conn_borrow_fd(peers[i].conn);
			pfds[np++].events = POLLIN;
		}
		r = poll(pfds, np, accept_paused ? 1000 : -1);
		if (r == 0) { /* paused: a second has passed, try again */
			accept_paused = 0;
			continue;
		}
		if (r < 0) {
			if (errno == EINTR)
				continue;
			report(path, "SYSTEM", "poll: %s", strerror(errno));
			status = EXIT_USAGE;
			break;
		}
		for (i = 0; i < np; i++) {
			chan_conn *conn;
			size_t k;

			if (!pfds[i].revents)
				continue;
			if (pfds[i].fd == chan_listener_borrow_fd(l)) {
				struct peer *np2;
				struct chan_peer_cred cred;

				r = chan_listener_accept(l, 0, &conn);
				if (r == CHAN_E_WOULD_BLOCK)
					continue;
				if (r == CHAN_E_SYSTEM && (errno == EMFILE || errno == ENFILE)) {
					/* Say it once, keep serving the clients we
					 * have, and wait for a descriptor. */
					if (!emfile_reported)
						report(path, "SYSTEM",
						       "cannot accept a connection: %s; serving "
						       "the %zu open ones, accepting again when "
						       "one closes (reported once per run)",
						       strerror(errno), npeers);
					accept_paused = emfile_reported = 1;
					continue;
				}
				if (r < 0) {
					report(path, chan_errname(r),
					       "accept: %s", strerror(errno));
					continue;
				}
				chan_conn_set_limits(conn, &o.limits);
				np2 = realloc(peers,
					      (npeers + 1) * sizeof(*peers));
				if (!np2) {
					chan_conn_free(conn);
					continue;
				}
				peers = np2;
				memset(&peers[npeers], 0, sizeof(*peers));
				peers[npeers].conn = conn;
				peers[npeers++].id = nextid++;
				if (chan_conn_peer_cred(conn, &cred) == 0)
					printf("# connection %lu: pid=%ld "
					       "uid=%ld gid=%ld\n",
					       nextid - 1, (long)cred.pid,
					       (long)cred.uid, (long)cred.gid);
				if (hello) {
					/* SPEC.md §16.2 rule 3: only because
					 * the user says the peer speaks 1.1 */
					r = chan_conn_hello(conn, 0, 10000);
					if (r == 0)
						r = chan_conn_flush(conn, 10000);
					if (r < 0)
						report(path, chan_errname(r),
						       "connection %lu: HELLO: %s",
						       nextid - 1, chan_strerror(r));
					else
						printf("# connection %lu: HELLO sent\n",
						       nextid - 1);
				}
				fflush(stdout);
				continue;
			}
			for (k = 0; k < npeers; k++)
				if (chan_conn_borrow_fd(peers[k].conn) == pfds[i].fd)
					break;
			if (k == npeers)
				continue;
			switch (serve_peer(&peers[k], &o, reply, path, &nmsgs, &status)) {
			case 1: /* the connection ended */
				peer_free(&peers[k]);
				peers[k] = peers[--npeers];
				if (accept_paused)
					accept_paused = 0; /* a descriptor is free */
				if (once)
					done = 1;
				break;
			case 2: /* --count reached */
				done = 1;
				break;
			}
			/* the peer array changed: poll again */
			break;
		}
	}
	for (i = 0; i < npeers; i++)
		peer_free(&peers[i]);
	free(peers);
	free(pfds);
	chan_listener_free(l);
	chan_msg_free(reply);
	if (fflush(stdout) == EOF)
		status = EXIT_USAGE;
	return status;
}

/* ------------------------------------------------------------------------ */
/* send */

struct fdmap {
	int fd[CHAN_HARD_MAX_HANDLES];
	int owned[CHAN_HARD_MAX_HANDLES];
	long reply_index; /* --reply N, or -1 */
	int reply_fd;     /* the end sent for handle reply_index */
	int reply_used;
};

static int
fdmap_source(void *ctx, enum chan_kind kind, uint32_t index, int *ret_fd,
	     struct tf_error *err)
{
	struct fdmap *m = ctx;

	(void)kind;
	if ((long)index == m->reply_index && m->reply_fd >= 0) {
		m->reply_used = 1;
		*ret_fd = m->reply_fd;
		return 0;
	}
	if (index >= CHAN_HARD_MAX_HANDLES || m->fd[index] < 0) {
		tf_seterr(err, "INVALID_ARGUMENT",
			  "handle #%" PRIu32 " has no descriptor: give "
			  "--fd %" PRIu32 "=PATH (or --reply %" PRIu32
			  " for a conn)",
			  index, index, index);
		return -1;
	}
	*ret_fd = m->fd[index];
	return 0;
}

static void
usage_send(FILE *out)
{
	fprintf(out,
		"Usage: %s send [OPTIONS] PATH [FILE]\n"
		"Connect to the Unix socket PATH ('@name': abstract) and send "
		"one message per\nJSON value read from FILE or standard input, "
		"with real descriptors for the\nhandles the text references.\n\n"
		"  --fd N=SPEC        the descriptor for handle #N: SPEC is a "
		"file opened\n"
		"                     read-only, '-' for standard input, or "
		"'&M' for this\n"
		"                     process's descriptor M\n"
		"  --reply N          for each message, make a fresh "
		"connection pair, send one\n"
		"                     end as handle #N ({\"$conn\":N}), then "
		"wait for one reply\n"
		"                     on the other end and print it\n"
		"  --timeout MS       give up waiting for a reply after MS "
		"milliseconds\n"
		"  -n, --count=N      send at most N messages\n"
		"  -p, --pretty       indented output\n"
		"  --max-payload=N, --max-handles=N, --max-depth=N   reply "
		"limits\n"
		"  -h, --help         show this help\n",
		program_name);
}

static int
parse_fd_spec(struct fdmap *m, const char *arg)
{
	char *end;
	long n, k;
	int fd;

	n = strtol(arg, &end, 10);
	if (end == arg || *end != '=' || n < 0 ||
	    n >= (long)CHAN_HARD_MAX_HANDLES)
		return usage_error("--fd: '%s' is not N=SPEC with N from 0 to "
				   "%u",
				   arg, CHAN_HARD_MAX_HANDLES - 1);
	if (m->fd[n] >= 0)
		return usage_error("--fd: handle #%ld given twice", n);
	arg = end + 1;
	if (!strcmp(arg, "-")) {
		m->fd[n] = STDIN_FILENO;
		return 0;
	}
	if (arg[0] == '&') {
		k = strtol(arg + 1, &end, 10);
		if (end == arg + 1 || *end || k < 0 || k > INT_MAX)
			return usage_error("--fd: '%s' is not &FD", arg);
		if (fcntl((int)k, F_GETFD) < 0) {
			report(arg, "SYSTEM", "descriptor %ld: %s", k,
			       strerror(errno));
			return EXIT_USAGE;
		}
		m->fd[n] = (int)k;
		return 0;
	}
	fd = open(arg, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		report(arg, "SYSTEM", "cannot open: %s", strerror(errno));
		return EXIT_USAGE;
	}
	m->fd[n] = fd;
	m->owned[n] = 1;
	return 0;
}

int
cmd_send(int argc, char **argv)
{
	enum { OPT_FD = 3001, OPT_REPLY, OPT_TIMEOUT };
	static const struct option longopts[] = {
		COMMON_LONGOPTS,
		{"fd", required_argument, NULL, OPT_FD},
		{"reply", required_argument, NULL, OPT_REPLY},
		{"timeout", required_argument, NULL, OPT_TIMEOUT},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}};
	struct common_opts o = {{0, 0, 0}, 0, 0, 0};
	struct fdmap m;
	const char *path, *input = "-", *name;
	struct tf_reader *rd = NULL;
	struct tf_error err;
	chan_conn *conn = NULL;
	FILE *in = NULL;
	unsigned long n = 0;
	long timeout = -1;
	int c, r = 0, i, status = EXIT_OK;
	json_t *j;
	char *end;

	memset(&m, 0, sizeof(m));
	for (i = 0; i < (int)CHAN_HARD_MAX_HANDLES; i++)
		m.fd[i] = -1;
	m.reply_index = -1;
	m.reply_fd = -1;
	while ((c = getopt_long(argc, argv, "+pn:h", longopts, NULL)) != -1) {
		r = common_option(&o, c, optarg);
		if (r < 0) {
			status = EXIT_USAGE;
			goto out;
		}
		if (r > 0)
			continue;
		switch (c) {
		case OPT_FD:
			if ((status = parse_fd_spec(&m, optarg)))
				goto out;
			break;
		case OPT_REPLY:
			m.reply_index = strtol(optarg, &end, 10);
			if (end == optarg || *end || m.reply_index < 0 ||
			    m.reply_index >= (long)CHAN_HARD_MAX_HANDLES) {
				status = usage_error("--reply: '%s' is not a "
						     "handle index",
						     optarg);
				goto out;
			}
			break;
		case OPT_TIMEOUT:
			timeout = strtol(optarg, &end, 10);
			if (end == optarg || *end || timeout < 0 ||
			    timeout > INT_MAX) {
				status = usage_error("--timeout: '%s' is not "
						     "a number of "
						     "milliseconds",
						     optarg);
				goto out;
			}
			break;
		case 'h':
			usage_send(stdout);
			goto out;
		default:
			status = usage_hint("send");
			goto out;
		}
	}
	if (optind != argc - 1 && optind != argc - 2) {
		status = usage_error("send: expected a socket PATH and at most "
				     "one FILE");
		goto out;
	}
	if (m.reply_index >= 0 && m.fd[m.reply_index] >= 0) {
		status = usage_error("send: handle #%ld has both --fd and "
				     "--reply",
				     m.reply_index);
		goto out;
	}
	path = argv[optind];
	if (optind == argc - 2)
		input = argv[optind + 1];
	if (!strcmp(input, "-"))
		for (i = 0; i < (int)CHAN_HARD_MAX_HANDLES; i++)
			if (m.fd[i] == STDIN_FILENO && !m.owned[i]) {
				status = usage_error("send: --fd %d=- sends "
						     "standard input, so the "
						     "text must come from a "
						     "FILE",
						     i);
				goto out;
			}
	in = open_input(input, &name);
	if (!in) {
		status = EXIT_USAGE;
		goto out;
	}
	rd = tf_reader_new(in);
	if (!rd) {
		status = EXIT_USAGE;
		goto out;
	}
	r = chan_connect(path, &conn);
	if (r < 0) {
		int e = errno;

		if (r == CHAN_E_SYSTEM && e == ENOENT)
			report(path, "SYSTEM", "cannot connect: there is no socket at %s (%s)", path,
			       strerror(e));
		else if (r == CHAN_E_SYSTEM && e == ECONNREFUSED)
			report(path, "SYSTEM",
			       "cannot connect: nothing listens at %s (%s): a socket file "
			       "left by a listener that exited, or an abstract name nobody holds",
			       path, strerror(e));
		else if (r == CHAN_E_SYSTEM && (e == EACCES || e == EPERM))
			report(path, "SYSTEM",
			       "cannot connect: no permission to write to the socket file %s (%s)",
			       path, strerror(e));
		else
			report(path, chan_errname(r), "cannot connect: %s",
			       r == CHAN_E_SYSTEM ? strerror(e) : chan_strerror(r));
		status = EXIT_USAGE;
		goto out;
	}
	chan_conn_set_limits(conn, &o.limits);

	while ((!o.count || n < o.count) &&
	       (r = tf_reader_next(rd, &j, &err)) == 1) {
		chan_msg *msg = chan_msg_new(NULL), *answer = NULL;
		chan_conn *mine = NULL, *theirs = NULL;
		unsigned long line, col;

		tf_reader_where(rd, &line, &col);
		m.reply_used = 0;
		m.reply_fd = -1;
		if (m.reply_index >= 0) {
			r = chan_conn_pair(&mine, &theirs);
			if (r < 0) {
				report(path, chan_errname(r),
				       "socketpair: %s", strerror(errno));
				status = EXIT_USAGE;
			}
			m.reply_fd = chan_conn_borrow_fd(theirs);
		}
		if (status) {
			/* nothing */
		} else if (!msg) {
			report(name, "NO_MEMORY", "out of memory");
			status = EXIT_USAGE;
		} else if (tf_build(msg, j, fdmap_source, &m, &err) < 0) {
			report(name, err.name,
			       "value %lu (line %lu column %lu)%s%s", n, line,
			       col, strncmp(err.msg, "at /", 4) ? ": " : " ",
			       err.msg);
			status = !strcmp(err.name, "INVALID_ARGUMENT")
					 ? EXIT_USAGE
					 : status_of(err.name);
		} else if ((r = chan_conn_send(conn, msg, -1)) < 0 ||
			   (r = chan_conn_flush(conn, -1)) < 0) {
			report(path, chan_errname(r), "send: %s",
			       r == CHAN_E_SYSTEM ? strerror(errno)
						  : chan_strerror(r));
			status = chan_error_scope(r) == CHAN_SCOPE_LOCAL &&
						 r != CHAN_E_SYSTEM
					 ? EXIT_REJECTED
					 : EXIT_USAGE;
		}
		/* Our copies of the sent end go now, so that a peer that
		 * closes it without answering is seen as CONNECTION_CLOSED. */
		chan_msg_free(msg);
		chan_conn_free(theirs);
		json_decref(j);
		if (!status && m.reply_used) {
			r = chan_conn_recv(mine, (int)timeout, &answer);
			if (r == 0) {
				print_message(answer, o.pretty);
				chan_msg_free(answer);
			} else {
				report(path, chan_errname(r),
				       "waiting for the reply to value %lu: %s",
				       n,
				       r == CHAN_E_SYSTEM ? strerror(errno)
							  : chan_strerror(r));
				status = r == CHAN_E_TIMEOUT ||
							 r == CHAN_E_SYSTEM
						 ? EXIT_USAGE
						 : EXIT_REJECTED;
			}
		}
		chan_conn_free(mine);
		n++;
		if (status)
			break;
	}
	if (r < 0 && !status) {
		report(name, err.name, "%s", err.msg);
		status = status_of(err.name);
	}
out:
	chan_conn_free(conn);
	tf_reader_free(rd);
	close_input(in);
	for (i = 0; i < (int)CHAN_HARD_MAX_HANDLES; i++)
		if (m.owned[i])
			close(m.fd[i]);
	if (fflush(stdout) == EOF && !status)
		status = EXIT_USAGE;
	return status;
}
