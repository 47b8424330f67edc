/*
 * chancodec - encode, decode, inspect and exchange chan/1 messages from the
 * shell.  See chancodec(1) and SPEC.md §12.
 *
 *   chancodec encode [-o OUT] [FILE...]     text -> frames
 *   chancodec decode [--pretty] [FILE...]   frames -> text
 *   chancodec check [-v] [FILE...]          validate frames
 *   chancodec dump [FILE...]                annotated hex
 *   chancodec listen [--once] [--reply TEXT] PATH
 *   chancodec send [--fd N=SPEC]... [--reply N] PATH [FILE]
 *
 * Exit status: 0 ok, 1 input rejected, 2 usage or I/O error.
 */
#include "chancodec.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

const char *program_name = "chancodec";
const char *current_command; /* the command being run, for hints */

void
report(const char *file, const char *name, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "%s: %s: %s: ", program_name, file, name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int
usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", program_name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (current_command)
		fprintf(stderr, "\nTry '%s %s --help' for more information.\n", program_name,
			current_command);
	else
		fprintf(stderr, "\nTry '%s --help' for more information.\n", program_name);
	return EXIT_USAGE;
}

int
status_of(const char *name)
{
	if (!strcmp(name, "SYSTEM") || !strcmp(name, "NO_MEMORY"))
		return EXIT_USAGE;
	return EXIT_REJECTED;
}

int
usage_hint(const char *cmd)
{
	fprintf(stderr, "Try '%s %s --help' for more information.\n",
		program_name, cmd);
	return EXIT_USAGE;
}

/* A count with an optional binary suffix k, M, G. */
static int
parse_count(const char *arg, uint64_t max, uint32_t *ret)
{
	char *end;
	unsigned long long v;

	if (*arg < '0' || *arg > '9')
		return -1;
	errno = 0;
	v = strtoull(arg, &end, 10);
	if (errno)
		return -1;
	if (*end == 'k' || *end == 'K')
		v <<= 10, end++;
	else if (*end == 'M')
		v <<= 20, end++;
	else if (*end == 'G')
		v <<= 30, end++;
	if (*end || v == 0 || v > max)
		return -1;
	*ret = (uint32_t)v;
	return 0;
}

int
common_option(struct common_opts *o, int opt, const char *arg)
{
	switch (opt) {
	case OPT_MAX_PAYLOAD:
		if (parse_count(arg, CHAN_HARD_MAX_PAYLOAD,
				&o->limits.max_payload) < 0) {
			usage_error("--max-payload: '%s' is not a size from 1 "
				    "to 1G",
				    arg);
			return -1;
		}
		return 1;
	case OPT_MAX_HANDLES:
		if (parse_count(arg, CHAN_HARD_MAX_HANDLES,
				&o->limits.max_handles) < 0) {
			usage_error("--max-handles: '%s' is not a number from "
				    "1 to %u",
				    arg, CHAN_HARD_MAX_HANDLES);
			return -1;
		}
		return 1;
	case OPT_MAX_DEPTH:
		if (parse_count(arg, CHAN_HARD_MAX_DEPTH,
				&o->limits.max_depth) < 0) {
			usage_error("--max-depth: '%s' is not a number from 1 "
				    "to %u",
				    arg, CHAN_HARD_MAX_DEPTH);
			return -1;
		}
		return 1;
	case OPT_PRETTY:
		o->pretty = 1;
		return 1;
	case OPT_REVISION:
		if (!strcmp(arg, "1.1")) {
			o->decode_flags = CHAN_DECODE_REVISION_1_1;
		} else if (!strcmp(arg, "1.0") || !strcmp(arg, "1")) {
			o->decode_flags = 0;
		} else {
			usage_error("--revision: '%s' is not 1.0 or 1.1", arg);
			return -1;
		}
		return 1;
	case OPT_COUNT: {
		uint32_t n;

		if (parse_count(arg, UINT32_MAX, &n) < 0) {
			usage_error("--count: '%s' is not a number >= 1", arg);
			return -1;
		}
		o->count = n;
		return 1;
	}
	}
	return 0;
}

FILE *
open_input(const char *path, const char **ret_display)
{
	FILE *fp;

	if (!strcmp(path, "-")) {
		*ret_display = "<stdin>";
		return stdin;
	}
	*ret_display = path;
	fp = fopen(path, "rbe");
	if (!fp)
		report(path, "SYSTEM", "cannot open: %s", strerror(errno));
	return fp;
}

void
close_input(FILE *fp)
{
	if (fp && fp != stdin)
		fclose(fp);
}

/* Check that everything written to stdout reached it. */
static int
finish_output(FILE *out, const char *name)
{
	if (fflush(out) == EOF || ferror(out)) {
		report(name, "SYSTEM", "write error: %s",
		       strerror(errno ? errno : EIO));
		return EXIT_USAGE;
	}
	return EXIT_OK;
}

/* ------------------------------------------------------------------------ */
/* Frame streams */

/* Read up to n bytes; returns the count (short only at EOF or error). */
static size_t
read_full(struct frame_reader *fr, void *p, size_t n)
{
	size_t got = fread(p, 1, n, fr->fp);

	if (got < n && ferror(fr->fp))
		fr->read_errno = errno ? errno : EIO;
	return got;
}

static int
reserve(struct frame_reader *fr, size_t n)
{
	unsigned char *p;
	size_t cap = fr->cap ? fr->cap : 4096;

	if (n <= fr->cap)
		return 0;
	while (cap < n)
		cap = cap > SIZE_MAX / 2 ? n : cap * 2;
	p = realloc(fr->buf, cap);
	if (!p)
		return -1;
	fr->buf = p;
	fr->cap = cap;
	return 0;
}

int
frame_next(struct frame_reader *fr, const struct chan_limits *limits)
{
	struct chan_limits lim = {CHAN_DEFAULT_MAX_PAYLOAD, 0, 0};
	size_t got;
	int rc;

	if (limits && limits->max_payload)
		lim.max_payload = limits->max_payload;
	fr->offset = fr->next;
	fr->len = 0;
	fr->have_header = 0;
	if (reserve(fr, CHAN_HEADER_SIZE) < 0)
		return CHAN_E_NO_MEMORY;
	got = read_full(fr, fr->buf, CHAN_HEADER_SIZE);
	fr->len = got;
	fr->next += got;
	if (fr->read_errno)
		return CHAN_E_SYSTEM;
	if (got == 0)
		return 0;
	if (got < CHAN_HEADER_SIZE)
		return CHAN_E_TRUNCATED;
	rc = chan_header_parse(fr->buf, got, &fr->header);
	fr->have_header = 1;
	if (rc < 0)
		return rc;
	/* SPEC.md §9.3: the limit is checked before reading the payload */
	if (fr->header.payload_length > lim.max_payload)
		return CHAN_E_PAYLOAD_TOO_LARGE;
	if (reserve(fr, CHAN_HEADER_SIZE + (size_t)fr->header.payload_length) <
	    0)
		return CHAN_E_NO_MEMORY;
	got = read_full(fr, fr->buf + CHAN_HEADER_SIZE,
			fr->header.payload_length);
	fr->len += got;
	fr->next += got;
	if (fr->read_errno)
		return CHAN_E_SYSTEM;
	if (got < fr->header.payload_length)
		return CHAN_E_TRUNCATED;
	return 1;
}

void
frame_reader_free(struct frame_reader *fr)
{
	free(fr->buf);
	fr->buf = NULL;
	fr->cap = 0;
}

static void
report_frame_error(const char *file, const struct frame_reader *fr, int rc)
{
	size_t n = fr->len < 4 ? fr->len : 4;

	if (rc == CHAN_E_SYSTEM) {
		report(file, "SYSTEM", "read error: %s", strerror(fr->read_errno));
	} else if ((rc == CHAN_E_TRUNCATED || rc == CHAN_E_BAD_MAGIC) && n &&
		   memcmp(fr->buf, "CHAN", n) != 0) {
		/* The registry name is the spec's (a short input is TRUNCATED
		 * before its magic is looked at); the sentence says what the
		 * bytes are. */
		report(file, chan_errname(rc),
		       "frame %lu at byte %llu: this is not a chan frame (%zu bytes that do not "
		       "start with \"CHAN\")",
		       fr->index, (unsigned long long)fr->offset, fr->len);
	} else {
		report(file, chan_errname(rc), "frame %lu at byte %llu: %s", fr->index,
		       (unsigned long long)fr->offset, chan_strerror(rc));
	}
}

/* ------------------------------------------------------------------------ */
/* encode */

struct placeholders {
	int null_fd;  /* /dev/null, stands for every {"$fd":N} */
	int sock[2];  /* a socketpair, stands for every {"$conn":N} */
};

/* Frames written to a file carry no descriptors; only the handle count in
 * the header and the references in the payload.  chan_handle_copy() needs a real
 * descriptor of the right kind, so harmless stand-ins are used. */
static int
placeholder_fd(void *ctx, enum chan_kind kind, uint32_t index, int *ret_fd,
	       struct tf_error *err)
{
	struct placeholders *ph = ctx;

	(void)index;
	if (kind == CHAN_KIND_CONN) {
		if (ph->sock[0] < 0 &&
		    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
			       ph->sock) < 0) {
			tf_seterr(err, "SYSTEM", "socketpair: %s",
				  strerror(errno));
			return -1;
		}
		*ret_fd = ph->sock[0];
		return 0;
	}
	if (ph->null_fd < 0 &&
	    (ph->null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
		tf_seterr(err, "SYSTEM", "/dev/null: %s", strerror(errno));
		return -1;
	}
	*ret_fd = ph->null_fd;
	return 0;
}

static void
usage_encode(FILE *out)
{
	fprintf(out,
		"Usage: %s encode [OPTIONS] [FILE...]\n"
		"Read chan text (one JSON value per message) from each FILE or "
		"standard input\nand write one frame per value.\n\n"
		"  -o, --output=OUT  write the frames to OUT (default: standard "
		"output)\n"
		"  -h, --help        show this help\n",
		program_name);
}

static int
encode_file(FILE *in, const char *name, FILE *out, struct placeholders *ph,
	    unsigned char **buf, size_t *cap)
{
	struct tf_reader *r = tf_reader_new(in);
	struct tf_error err;
	unsigned long n = 0;
	json_t *j;
	int rc, status = EXIT_OK;

	if (!r) {
		report(name, "NO_MEMORY", "out of memory");
		return EXIT_USAGE;
	}
	while ((rc = tf_reader_next(r, &j, &err)) == 1) {
		chan_msg *msg = chan_msg_new(NULL);
		unsigned long line, col;
		size_t len;

		tf_reader_where(r, &line, &col);
		if (!msg) {
			json_decref(j);
			report(name, "NO_MEMORY", "out of memory");
			status = EXIT_USAGE;
			break;
		}
		if (tf_build(msg, j, placeholder_fd, ph, &err) < 0) {
			report(name, err.name,
			       "value %lu (line %lu column %lu)%s%s", n, line,
			       col, strncmp(err.msg, "at /", 4) ? ": " : " ",
			       err.msg);
			status = status_of(err.name);
		} else {
			int e = chan_encoded_size(msg, &len);

			if (e == 0 && len > *cap) {
				free(*buf);
				*buf = malloc(len);
				*cap = *buf ? len : 0;
				if (!*buf)
					e = CHAN_E_NO_MEMORY;
			}
			if (e == 0)
				e = chan_encode(msg, *buf, *cap, &len);
			if (e < 0) {
				report(name, chan_errname(e),
				       "value %lu (line %lu column %lu): %s",
				       n, line, col, chan_strerror(e));
				status = status_of(chan_errname(e));
			} else {
				fwrite(*buf, 1, len, out);
			}
		}
		chan_msg_free(msg);
		json_decref(j);
		n++;
		if (status)
			break;
	}
	if (rc < 0) {
		report(name, err.name, "%s", err.msg);
		status = status_of(err.name);
	}
	tf_reader_free(r);
	return status;
}

static int
cmd_encode(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"output", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}};
	struct placeholders ph = {-1, {-1, -1}};
	const char *output = NULL, *outname = "<stdout>";
	unsigned char *buf = NULL;
	size_t cap = 0;
	FILE *out = stdout;
	int c, i, status = EXIT_OK;

	while ((c = getopt_long(argc, argv, "+o:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'o':
			output = optarg;
			break;
		case 'h':
			usage_encode(stdout);
			return EXIT_OK;
		default:
			return usage_hint("encode");
		}
	}
	if (output && strcmp(output, "-")) {
		out = fopen(output, "wbe");
		if (!out) {
			report(output, "SYSTEM", "cannot create: %s",
			       strerror(errno));
			return EXIT_USAGE;
		}
		outname = output;
	} else if (isatty(STDOUT_FILENO)) {
		return usage_error("encode: refusing to write binary frames to "
				   "a terminal (redirect, or use -o FILE)");
	}
	for (i = optind; i < argc || i == optind; i++) {
		const char *path = i < argc ? argv[i] : "-", *name;
		FILE *in = open_input(path, &name);

		if (!in) {
			status = EXIT_USAGE;
			break;
		}
		status = encode_file(in, name, out, &ph, &buf, &cap);
		close_input(in);
		if (status)
			break;
	}
	free(buf);
	if (ph.null_fd >= 0)
		close(ph.null_fd);
	if (ph.sock[0] >= 0) {
		close(ph.sock[0]);
		close(ph.sock[1]);
	}
	if (finish_output(out, outname) && !status)
		status = EXIT_USAGE;
	if (out != stdout && fclose(out) == EOF && !status) {
		report(outname, "SYSTEM", "close: %s", strerror(errno));
		status = EXIT_USAGE;
	}
	return status;
}

/* ------------------------------------------------------------------------ */
/* decode and check */

static void
usage_decode(FILE *out)
{
	fprintf(out,
		"Usage: %s decode [OPTIONS] [FILE...]\n"
		"Read frames from each FILE or standard input and print each "
		"message's text,\none per line (canonical form).\n\n"
		"  -p, --pretty          indented output for people\n"
		"  -n, --count=N         stop after N frames\n"
		LIMIT_OPTIONS_HELP
		REVISION_OPTION_HELP
		"  -h, --help            show this help\n",
		program_name);
}

static void
usage_check(FILE *out)
{
	fprintf(out,
		"Usage: %s check [OPTIONS] [FILE...]\n"
		"Validate the frames in each FILE or standard input.  Exit "
		"status 0 if every\nframe is valid, 1 otherwise; the first "
		"error is reported by NAME on stderr.\n\n"
		"  -v, --verbose         print \"FILE: OK: N frames\" for "
		"valid files\n"
		"  -n, --count=N         stop after N frames\n"
		LIMIT_OPTIONS_HELP
		REVISION_OPTION_HELP
		"  -h, --help            show this help\n",
		program_name);
}

/* decode (print != 0) or check one stream; stops at the first error. */
static int
decode_stream(FILE *in, const char *name, const struct common_opts *o,
	      int print, int verbose)
{
	struct frame_reader fr = {0};
	int rc = 0, status = EXIT_OK;

	fr.fp = in;
	while ((!o->count || fr.index < o->count) &&
	       (rc = frame_next(&fr, &o->limits)) == 1) {
		chan_msg *msg = NULL;

		rc = chan_decode(fr.buf, fr.len, NULL, 0,
				 CHAN_DECODE_DETACHED | o->decode_flags,
				 &o->limits, NULL, &msg, NULL);
		if (rc < 0)
			break;
		if (print) {
			tf_render(stdout, chan_msg_root(msg), o->pretty);
			putchar('\n');
		}
		chan_msg_free(msg);
		fr.index++;
	}
	if (rc < 0) {
		report_frame_error(name, &fr, rc);
		status = rc == CHAN_E_SYSTEM || rc == CHAN_E_NO_MEMORY
				 ? EXIT_USAGE
				 : EXIT_REJECTED;
	} else if (verbose) {
		printf("%s: OK: %lu frame%s\n", name, fr.index,
		       fr.index == 1 ? "" : "s");
	}
	frame_reader_free(&fr);
	return status;
}

static int
cmd_decode_or_check(int argc, char **argv, int print)
{
	static const struct option longopts[] = {
		COMMON_LONGOPTS,
		REVISION_LONGOPT,
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}};
	struct common_opts o = {{0, 0, 0}, 0, 0, 0};
	int c, i, status = EXIT_OK, verbose = 0;

	while ((c = getopt_long(argc, argv, print ? "+pn:h" : "+vn:h", longopts,
				NULL)) != -1) {
		int r = common_option(&o, c, optarg);

		if (r < 0)
			return EXIT_USAGE;
		if (r > 0 && !(c == OPT_PRETTY && !print))
			continue;
		switch (c) {
		case 'v':
			if (print)
				goto bad;
			verbose = 1;
			break;
		case 'h':
			(print ? usage_decode : usage_check)(stdout);
			return EXIT_OK;
		default:
			goto bad;
		}
	}
	for (i = optind; i < argc || i == optind; i++) {
		const char *path = i < argc ? argv[i] : "-", *name;
		FILE *in = open_input(path, &name);
		int s;

		if (!in) {
			status = EXIT_USAGE;
			continue;
		}
		s = decode_stream(in, name, &o, print, verbose);
		close_input(in);
		if (s > status)
			status = s;
	}
	if (finish_output(stdout, "<stdout>"))
		status = EXIT_USAGE;
	return status;
bad:
	return usage_hint(print ? "decode" : "check");
}

/* ------------------------------------------------------------------------ */
/* main */

static void
usage(FILE *out)
{
	fprintf(out,
		"Usage: %s COMMAND [OPTIONS] [ARGS]\n"
		"Encode, decode, inspect and exchange chan/1 messages.\n\n"
		"Commands:\n"
		"  encode [-o OUT] [FILE...]   text -> frames\n"
		"  decode [--pretty] [FILE...] frames -> text, one message per "
		"line\n"
		"  check [-v] [FILE...]        validate frames; errors by NAME\n"
		"  dump [FILE...]              annotated hex of frames\n"
		"  listen [--once] [--reply TEXT] PATH\n"
		"                              print every message received on "
		"a Unix socket\n"
		"  send [--fd N=SPEC]... [--reply N] PATH [FILE]\n"
		"                              send messages with real "
		"descriptors\n"
		"  proxy [--follow] [--json] LISTEN TARGET\n"
		"                              relay and print a live "
		"conversation\n\n"
		"FILE '-' (the default) is standard input.  PATH '@name' is a "
		"Linux abstract\nsocket.  '%s COMMAND --help' describes a "
		"command; see chancodec(1).\n"
		"Exit status: 0 ok, 1 input rejected, 2 usage or I/O error.\n",
		program_name, program_name);
}

static const char *const commands[] = {"encode", "decode", "check", "dump", "listen", "send",
				       "proxy"};

int
main(int argc, char **argv)
{
	static char argv0[64];
	const char *cmd;

	if (argc < 2)
		return usage_error("missing command");
	cmd = argv[1];
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") ||
	    !strcmp(cmd, "help")) {
		usage(stdout);
		return EXIT_OK;
	}
	if (!strcmp(cmd, "--version")) {
		printf("chancodec (libchan %s, wire version %d)\n",
		       chan_version(), CHAN_WIRE_VERSION);
		return EXIT_OK;
	}
	/* getopt's messages then read "chancodec encode: unrecognized ..." */
	snprintf(argv0, sizeof(argv0), "%s %s", program_name, cmd);
	argc--;
	argv++;
	argv[0] = argv0;
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(cmd, commands[i]))
			current_command = commands[i];
	if (!strcmp(cmd, "encode"))
		return cmd_encode(argc, argv);
	if (!strcmp(cmd, "decode"))
		return cmd_decode_or_check(argc, argv, 1);
	if (!strcmp(cmd, "check"))
		return cmd_decode_or_check(argc, argv, 0);
	if (!strcmp(cmd, "dump"))
		return cmd_dump(argc, argv);
	if (!strcmp(cmd, "listen"))
		return cmd_listen(argc, argv);
	if (!strcmp(cmd, "send"))
		return cmd_send(argc, argv);
	if (!strcmp(cmd, "proxy"))
		return cmd_proxy(argc, argv);
	return usage_error("unknown command '%s'", cmd);
}
