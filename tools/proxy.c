/*
 * proxy.c - chancodec proxy: sit between a client and a server, relay every
 * frame both ways unchanged, and print each one as it passes.
 *
 * Faithful relaying.  Each direction is read one frame at a time, never
 * past a frame's end (SPEC.md §10.3), and a frame goes on only when it is
 * whole, with its bytes as they came and each batch of descriptors attached
 * at the byte it arrived with (the first byte, for a well-formed frame), so
 * the receiver sees what it would have seen without the proxy: the same
 * bytes, descriptors, order, frame boundaries and errors.  A frame that does
 * not decode is relayed all the same and reported; a header that is not a
 * chan header (so frame boundaries are unknown) switches that direction to
 * relaying bytes as they come.  An end of stream is passed on as one
 * (shutdown), after any partial frame: the receiver sees TRUNCATED or
 * CONNECTION_CLOSED exactly as it would.
 *
 * --follow.  A handle of kind conn is interposed: the receiver gets one end
 * of a fresh socketpair instead, and the proxy relays between the other end
 * and the original socket as a link of its own, labelled after its parent
 * ("1.2": the second connection that travelled on link 1), at any depth.
 * Then descriptors are no longer identical (by design): everything else is.
 */
#include "chancodec.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCHES 8

/* One direction of a link: frames read from `from`, relayed to `to`. */
struct dir {
	int from, to;
	unsigned char *buf; /* the frame so far */
	size_t cap, len;
	size_t need; /* whole frame size once the header is read; 0 before */
	struct {
		size_t off; /* the byte these descriptors arrived with */
		int fds[CHAN_HARD_MAX_HANDLES];
		size_t n;
	} batch[MAX_BATCHES];
	size_t nbatch;
	bool raw; /* not chan frames: bytes relayed as they come */
	bool eof;
	bool hello; /* a HELLO went this way: its receiver reads revision 1.1 */
	char sign; /* '>' or '<' */
};

struct link {
	char label[64];
	int a, b;   /* a: the client's side (or a travelled end), b: the server's */
	struct dir d[2];
	unsigned children;
	bool open;
};

static struct link **links;
static size_t nlinks;
static unsigned top_links;
static int follow, json, pretty;
static FILE *out;
static bool dirty; /* printed since the last flush */
static volatile sig_atomic_t stop_signal;

static void
on_signal(int sig)
{
	stop_signal = sig;
}

static void
stamp(char *buf, size_t cap)
{
	static time_t last_sec = -1;
	static struct tm tm; /* localtime_r once a second, not per frame */
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != last_sec) {
		localtime_r(&ts.tv_sec, &tm);
		last_sec = ts.tv_sec;
	}
	snprintf(buf, cap, "%02d:%02d:%02d.%06ld", tm.tm_hour, tm.tm_min, tm.tm_sec,
		 ts.tv_nsec / 1000);
}

static struct link *
link_new(const char *label, int a, int b)
{
	struct link *l = calloc(1, sizeof(*l)), **nl;

	nl = l ? realloc(links, (nlinks + 1) * sizeof(*links)) : NULL;
	if (!nl) {
		free(l);
		return NULL;
	}
	links = nl;
	snprintf(l->label, sizeof(l->label), "%s", label);
	l->a = a;
	l->b = b;
	l->d[0] = (struct dir){.from = a, .to = b, .sign = '>'};
	l->d[1] = (struct dir){.from = b, .to = a, .sign = '<'};
	l->open = true;
	links[nlinks++] = l;
	return l;
}

/* Write all of p[0..n) to fd, the descriptors with its first byte. */
static int
send_all(int fd, const unsigned char *p, size_t n, const int *fds, size_t nfds)
{
	size_t off = 0;

	do {
		ssize_t w = chan_sock_send(fd, p + off, n - off, off ? NULL : fds,
					   off ? 0 : nfds, false);

		if (w < 0)
			return (int)w;
		off += (size_t)w;
	} while (off < n);
	return 0;
}

/* Relay what the direction holds: segments split where descriptors came. */
static int
forward(struct dir *d)
{
	size_t start = 0;
	int r = 0;

	for (size_t i = 0; i <= d->nbatch && r == 0; i++) {
		size_t end = i < d->nbatch ? d->batch[i].off : d->len;

		if (end > start)
			r = send_all(d->to, d->buf + start, end - start, NULL, 0);
		if (r == 0 && i < d->nbatch) {
			size_t next = i + 1 < d->nbatch ? d->batch[i + 1].off : d->len;

			r = send_all(d->to, d->buf + end, next - end, d->batch[i].fds,
				     d->batch[i].n);
			start = next;
		}
	}
	return r;
}

static void
drop_fds(struct dir *d)
{
	for (size_t i = 0; i < d->nbatch; i++)
		for (size_t k = 0; k < d->batch[i].n; k++)
			if (d->batch[i].fds[k] >= 0)
				close(d->batch[i].fds[k]);
	d->nbatch = 0;
}

/* Print one frame: a header line, the value (or why it does not decode),
 * and what each descriptor really is; JSON lines with --json. */
static void
print_frame(struct link *l, struct dir *d, const chan_msg *msg, int err, const int *table,
	    const enum chan_kind *kinds, const char **followed, size_t ntable)
{
	char when[32];
	char *desc = NULL;
	size_t dlen = 0;

	struct chan_header h = {0};
	char rev[200] = "", ctl[1200] = "";

	stamp(when, sizeof(when));
	chan_header_parse(d->buf, d->len, &h);
	if (h.flags || h.channel) { /* revision 1.1 (SPEC.md §17.1, §18.1) */
		char f[160] = "";
		size_t o = 0;

		if (h.flags) {
			describe_flags(f, sizeof(f), h.flags, h.channel);
			o = (size_t)snprintf(rev, sizeof(rev), ", flags %s", f);
		}
		/* a channel by who opened it: ">3" the side that sends '>' */
		if (h.channel && o < sizeof(rev))
			snprintf(rev + o, sizeof(rev) - o, ", channel %c%" PRIu32,
				 h.channel & 0x80000000u ? (d->sign == '>' ? '<' : '>') : d->sign,
				 h.channel & 0x7fffffffu);
	}
	if (msg && (h.flags & 0x01))
		describe_control(ctl, sizeof(ctl), &h, chan_msg_root(msg));
	if (!json) {
		fprintf(out, "# %s %c %s %zu bytes, %zu handle%s%s\n", l->label, d->sign, when,
			d->len, ntable, ntable == 1 ? "" : "s", rev);
		if (*ctl)
			fprintf(out, "# control: %s\n", ctl);
		if (msg) {
			tf_render(out, chan_msg_root(msg), pretty);
			fputc('\n', out);
		} else
			fprintf(out, "# not decoded: %s: %s (relayed as it came)\n", chan_errname(err),
				chan_strerror(err));
		for (size_t i = 0; i < ntable; i++) {
			report_fd(out, (uint32_t)i, kinds ? kinds[i] : CHAN_KIND_FD, table[i]);
			if (followed[i])
				fprintf(out, "#   followed as link %s\n", followed[i]);
		}
	} else {
		fprintf(out, "{\"time\":\"%s\",\"link\":\"%s\",\"dir\":\"%c\",\"bytes\":%zu,",
			when, l->label, d->sign, d->len);
		if (h.flags)
			fprintf(out, "\"flags\":%u,", h.flags);
		if (h.channel)
			fprintf(out, "\"channel\":\"%c%" PRIu32 "\",",
				h.channel & 0x80000000u ? (d->sign == '>' ? '<' : '>') : d->sign,
				h.channel & 0x7fffffffu);
		if (*ctl) {
			json_t *cs = json_string(ctl);
			char *q = cs ? json_dumps(cs, JSON_ENCODE_ANY) : NULL;

			fprintf(out, "\"control\":%s,", q ? q : "null");
			free(q);
			json_decref(cs);
		}
		fputs("\"handles\":[", out);
		for (size_t i = 0; i < ntable; i++) {
			FILE *f = open_memstream(&desc, &dlen);
			json_t *s;
			char *q;

			if (!f)
				break;
			report_fd(f, (uint32_t)i, kinds ? kinds[i] : CHAN_KIND_FD, table[i]);
			fclose(f);
			if (dlen && desc[dlen - 1] == '\n')
				desc[--dlen] = '\0';
			s = json_string(desc + (dlen > 2 ? 2 : 0)); /* drop "# " */
			q = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
			fprintf(out, "%s{\"index\":%zu,\"descriptor\":%s", i ? "," : "", i,
				q ? q : "null");
			if (followed[i])
				fprintf(out, ",\"followed\":\"%s\"", followed[i]);
			fputc('}', out);
			free(q);
			json_decref(s);
			free(desc);
			desc = NULL;
		}
		if (msg) {
			fputs("],\"value\":", out);
			tf_render(out, chan_msg_root(msg), 0);
			fputs("}\n", out);
		} else
			fprintf(out, "],\"value\":null,\"error\":\"%s\"}\n", chan_errname(err));
	}
	dirty = true; /* flushed when the proxy is idle (a write per frame would cost a
		       * system call in the conversation's path) */
}

/* Handle kinds in wire order (a decoded message lists handles depth-first,
 * which is index order). */
static void
collect_kinds(const chan_value *v, enum chan_kind *kinds, size_t cap, size_t *n)
{
	if (chan_value_type(v) == CHAN_HANDLE) {
		if (*n < cap)
			kinds[*n] = chan_value_kind(v);
		++*n;
	}
	for (size_t i = 0; i < chan_value_count(v); i++)
		collect_kinds(chan_value_at(v, i), kinds, cap, n);
}

/* A whole frame is in d: decode a copy, interpose conns (--follow), print,
 * relay. */
static int
frame_done(struct link *l, struct dir *d)
{
	chan_msg *msg = NULL;
	enum chan_kind kinds[CHAN_HARD_MAX_HANDLES];
	const char *followed[CHAN_HARD_MAX_HANDLES] = {0};
	int orig[CHAN_HARD_MAX_HANDLES];
	size_t nk = 0, ntable;
	int err, r;
	int *table = d->nbatch ? d->batch[0].fds : NULL;

	ntable = d->nbatch ? d->batch[0].n : 0;
	if (ntable)
		memcpy(orig, table, ntable * sizeof(int));
	err = chan_decode(d->buf, d->len, NULL, 0,
			  CHAN_DECODE_DETACHED | (d->hello ? CHAN_DECODE_REVISION_1_1 : 0), NULL,
			  NULL, &msg, NULL);
	if (err == CHAN_E_RESERVED_FIELD_NONZERO && !d->hello && d->buf[5] == 0x01 &&
	    !memcmp(d->buf + 8, "\0\0\0\0", 4)) {
		/* A HELLO is read by a 1.1 receiver before any agreement (SPEC.md
		 * §16.2 rule 2); from it on, this direction's receiver reads 1.1. */
		chan_msg *m11 = NULL;
		const char *op = NULL;
		size_t oplen = 0;

		if (chan_decode(d->buf, d->len, NULL, 0,
				CHAN_DECODE_DETACHED | CHAN_DECODE_REVISION_1_1, NULL, NULL, &m11,
				NULL) == 0 &&
		    chan_value_type(chan_msg_root(m11)) == CHAN_MAP &&
		    chan_value_count(chan_msg_root(m11)) &&
		    !strcmp(chan_map_key_at(chan_msg_root(m11), 0, NULL), "op") &&
		    chan_value_get_string(chan_value_at(chan_msg_root(m11), 0), &op, &oplen) == 0 &&
		    oplen == 5 && !memcmp(op, "hello", 5)) {
			d->hello = true;
			msg = m11;
			err = 0;
		} else {
			chan_msg_free(m11);
		}
	}
	if (err == 0)
		collect_kinds(chan_msg_root(msg), kinds, CHAN_HARD_MAX_HANDLES, &nk);
	/* Interpose only a well-formed frame whose descriptors all came with
	 * its first byte: anything else goes on exactly as it came. */
	if (follow && err == 0 && d->nbatch == 1 && d->batch[0].off == 0 && nk == ntable) {
		for (size_t i = 0; i < ntable; i++) {
			int sv[2];
			struct link *child;

			char label[64];

			if (kinds[i] != CHAN_KIND_CONN ||
			    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
				continue;
			snprintf(label, sizeof(label), "%.48s.%u", l->label, ++l->children);
			child = link_new(label, sv[0], table[i]);
			if (!child) {
				close(sv[0]);
				close(sv[1]);
				continue;
			}
			followed[i] = child->label;
			table[i] = sv[1]; /* sent instead of the original, which is a link end now */
		}
	}
	print_frame(l, d, msg, err, orig, err == 0 && nk == ntable ? kinds : NULL, followed, ntable);
	chan_msg_free(msg);
	r = forward(d);
	/* Our copies go (the kernel passed references on), and so do the
	 * socketpair ends sent in place of followed originals. */
	drop_fds(d);
	d->len = d->need = 0;
	return r;
}

static void
dir_eof(struct link *l, struct dir *d)
{
	if (d->len) { /* a partial frame: passed on, so the receiver sees it end there */
		forward(d);
		drop_fds(d);
		if (!json)
			fprintf(out, "# %s %c the stream ended inside a frame (%zu of %zu bytes)\n",
				l->label, d->sign, d->len, d->need ? d->need : (size_t)CHAN_HEADER_SIZE);
	}
	shutdown(d->to, SHUT_WR);
	d->eof = true;
	d->len = d->need = 0;
}

/* Read what the direction may read now. */
static void
dir_ready(struct link *l, struct dir *d)
{
	for (;;) {
		int fds[CHAN_HARD_MAX_HANDLES];
		size_t want, nfds = 0;
		ssize_t n;

		if (d->raw)
			want = 65536;
		else
			want = (d->need ? d->need : (size_t)CHAN_HEADER_SIZE) - d->len;
		if (d->len + want > d->cap) {
			size_t cap = d->cap ? d->cap : 65536;
			unsigned char *p;

			while (cap < d->len + want)
				cap *= 2;
			if (!(p = realloc(d->buf, cap))) {
				report(l->label, "NO_MEMORY", "out of memory for a frame");
				dir_eof(l, d);
				return;
			}
			d->buf = p;
			d->cap = cap;
		}
		n = chan_sock_recv(d->from, d->buf + d->len, want, fds, CHAN_HARD_MAX_HANDLES, true,
				   &nfds);
		if (n == CHAN_E_WOULD_BLOCK)
			return;
		if (n < 0 && n != CHAN_E_HANDLES_TRUNCATED && errno != ECONNRESET) {
			report(l->label, chan_errname((int)n), "read: %s", strerror(errno));
			n = 0;
		}
		if (n <= 0) {
			dir_eof(l, d);
			return;
		}
		if (nfds) {
			if (d->nbatch == MAX_BATCHES) { /* cannot place them: relay as raw */
				d->raw = true;
			} else {
				d->batch[d->nbatch].off = d->len;
				memcpy(d->batch[d->nbatch].fds, fds, nfds * sizeof(int));
				d->batch[d->nbatch++].n = nfds;
			}
		}
		d->len += (size_t)n;
		if (d->raw) {
			forward(d);
			drop_fds(d);
			d->len = 0;
			continue;
		}
		if (!d->need && d->len == CHAN_HEADER_SIZE) {
			struct chan_header h;
			int r = chan_header_parse(d->buf, d->len, &h);

			if (r < 0 || h.payload_length > CHAN_HARD_MAX_PAYLOAD) {
				/* No frame boundary can be known: bytes as they come. */
				fprintf(out, json ? "{\"link\":\"%s\",\"dir\":\"%c\",\"raw\":\"%s\"}\n"
						  : "# %s %c not chan frames from here on (%s): relaying "
						    "bytes as they come\n",
					l->label, d->sign, r < 0 ? chan_errname(r) : "PAYLOAD_TOO_LARGE");
				fflush(out);
				d->raw = true;
				forward(d);
				drop_fds(d);
				d->len = 0;
				continue;
			}
			d->need = CHAN_HEADER_SIZE + (size_t)h.payload_length;
		}
		if (d->need && d->len == d->need) {
			if (frame_done(l, d) < 0)
				dir_eof(l, d);
			return; /* poll says when the next frame is there */
		}
	}
}

static void
link_close(struct link *l)
{
	for (int k = 0; k < 2; k++) {
		drop_fds(&l->d[k]);
		free(l->d[k].buf);
	}
	close(l->a);
	close(l->b);
	l->open = false;
	if (!json)
		fprintf(out, "# %s closed\n", l->label);
	fflush(out);
}

static void
usage_proxy(FILE *f)
{
	fprintf(f,
		"Usage: %s proxy [OPTIONS] LISTEN TARGET\n"
		"       %s proxy [OPTIONS] --fds A,B\n"
		"Listen on the Unix socket LISTEN; for every client, connect to TARGET and\n"
		"relay every frame both ways unchanged, descriptors included, printing each\n"
		"(link, direction, time, size, handles, the value, what each descriptor is).\n"
		"--fds: relay between the already-connected sockets A (client) and B (server).\n\n"
		"  --follow           interpose conn handles too: their frames are shown,\n"
		"                     labelled with the link they belong to (1.1, 1.1.2, ...)\n"
		"  --json             one JSON object per frame (for jq)\n"
		"  -p, --pretty       indented values\n"
		"  -o, --output=FILE  write the transcript to FILE (default: standard output)\n"
		"  --mode=MODE        permissions of the LISTEN socket file, octal\n"
		"  -h, --help         show this help\n",
		program_name, program_name);
}

int
cmd_proxy(int argc, char **argv)
{
	enum { OPT_FOLLOW = 3001, OPT_JSON, OPT_MODE, OPT_FDS };
	static const struct option longopts[] = {
		{"follow", no_argument, NULL, OPT_FOLLOW},
		{"json", no_argument, NULL, OPT_JSON},
		{"pretty", no_argument, NULL, 'p'},
		{"output", required_argument, NULL, 'o'},
		{"mode", required_argument, NULL, OPT_MODE},
		{"fds", required_argument, NULL, OPT_FDS},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}};
	const char *listen_path = NULL, *target = NULL, *outfile = NULL, *fds_arg = NULL;
	chan_listener *l = NULL;
	struct sigaction sa;
	long mode = -1;
	char *end;
	int c, r, status = EXIT_OK;

	while ((c = getopt_long(argc, argv, "+po:h", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_FOLLOW:
			follow = 1;
			break;
		case OPT_JSON:
			json = 1;
			break;
		case 'p':
			pretty = 1;
			break;
		case 'o':
			outfile = optarg;
			break;
		case OPT_MODE:
			errno = 0;
			mode = strtol(optarg, &end, 8);
			if (errno || *end || end == optarg || mode < 0 || mode > 0777)
				return usage_error("proxy: --mode: '%s' is not an octal mode "
						   "such as 660", optarg);
			break;
		case OPT_FDS:
			fds_arg = optarg;
			break;
		case 'h':
			usage_proxy(stdout);
			return EXIT_OK;
		default:
			return usage_hint("proxy");
		}
	}
	if (fds_arg ? optind != argc : optind != argc - 2)
		return usage_error("proxy: expected LISTEN and TARGET socket paths, or --fds A,B");
	out = stdout;
	if (outfile && !(out = fopen(outfile, "we"))) {
		report(outfile, "SYSTEM", "cannot write: %s", strerror(errno));
		return EXIT_USAGE;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal; /* no SA_RESTART: poll returns EINTR */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (fds_arg) {
		int a, b;
		char label[16];

		if (sscanf(fds_arg, "%d,%d", &a, &b) != 2 || a < 0 || b < 0 ||
		    fcntl(a, F_GETFD) < 0 || fcntl(b, F_GETFD) < 0)
			return usage_error("proxy: --fds: '%s' is not two open descriptors A,B",
					   fds_arg);
		snprintf(label, sizeof(label), "%u", ++top_links);
		link_new(label, a, b);
	} else {
		listen_path = argv[optind];
		target = argv[optind + 1];
		if (mode >= 0) {
			mode_t old = umask((mode_t)(~mode & 0777));

			r = chan_listen(listen_path, &l);
			umask(old);
		} else {
			r = chan_listen(listen_path, &l);
		}
		if (r < 0) {
			report(listen_path, chan_errname(r), "cannot listen: %s",
			       r == CHAN_E_SYSTEM ? strerror(errno) : chan_strerror(r));
			return EXIT_USAGE;
		}
		fprintf(stderr, "%s: proxy: %s -> %s%s\n", program_name, listen_path, target,
			follow ? " (following connections)" : "");
	}

	while (!stop_signal) {
		struct pollfd *pf = calloc(2 * nlinks + 1, sizeof(*pf));
		struct dir **who = calloc(2 * nlinks + 1, sizeof(*who));
		struct link **wl = calloc(2 * nlinks + 1, sizeof(*wl));
		size_t np = 0;
		int open_links = 0;

		if (!pf || !who || !wl) {
			free(pf);
			free(who);
			free(wl);
			report("proxy", "NO_MEMORY", "out of memory");
			status = EXIT_USAGE;
			break;
		}
		if (l) {
			pf[np].fd = chan_listener_borrow_fd(l);
			pf[np++].events = POLLIN;
		}
		for (size_t i = 0; i < nlinks; i++) {
			if (!links[i]->open)
				continue;
			open_links++;
			for (int k = 0; k < 2; k++) {
				if (links[i]->d[k].eof)
					continue;
				pf[np].fd = links[i]->d[k].from;
				pf[np].events = POLLIN;
				who[np] = &links[i]->d[k];
				wl[np++] = links[i];
			}
		}
		if (!l && !open_links) { /* --fds: done when the one link is */
			free(pf);
			free(who);
			free(wl);
			break;
		}
		/* The transcript is flushed once the conversation pauses (50 ms),
		 * not after every frame. */
		r = poll(pf, np, dirty ? 50 : -1);
		if (r == 0) {
			fflush(out);
			dirty = false;
		}
		if (r < 0) {
			free(pf);
			free(who);
			free(wl);
			if (errno == EINTR)
				continue;
			report("proxy", "SYSTEM", "poll: %s", strerror(errno));
			status = EXIT_USAGE;
			break;
		}
		for (size_t i = 0; i < np; i++) {
			if (!pf[i].revents)
				continue;
			if (l && pf[i].fd == chan_listener_borrow_fd(l)) {
				chan_conn *in = NULL, *up = NULL;
				char label[16];

				if (chan_listener_accept(l, 0, &in) < 0)
					continue;
				if ((r = chan_connect(target, &up)) < 0) {
					report(target, chan_errname(r), "cannot connect: %s",
					       r == CHAN_E_SYSTEM ? strerror(errno) : chan_strerror(r));
					chan_conn_free(in);
					continue;
				}
				snprintf(label, sizeof(label), "%u", ++top_links);
				{
					/* the link owns the sockets from here */
					int a = fcntl(chan_conn_borrow_fd(in), F_DUPFD_CLOEXEC, 3);
					int b = fcntl(chan_conn_borrow_fd(up), F_DUPFD_CLOEXEC, 3);

					chan_conn_free(in);
					chan_conn_free(up);
					if (a < 0 || b < 0 || !link_new(label, a, b)) {
						if (a >= 0)
							close(a);
						if (b >= 0)
							close(b);
						continue;
					}
				}
				if (!json)
					fprintf(out, "# %s opened\n", label);
				fflush(out);
				continue;
			}
			dir_ready(wl[i], who[i]);
		}
		for (size_t i = 0; i < nlinks; i++)
			if (links[i]->open && links[i]->d[0].eof && links[i]->d[1].eof)
				link_close(links[i]);
		free(pf);
		free(who);
		free(wl);
	}
	for (size_t i = 0; i < nlinks; i++) {
		if (links[i]->open)
			link_close(links[i]);
		free(links[i]);
	}
	free(links);
	chan_listener_free(l);
	if (out != stdout)
		fclose(out);
	return status;
}
