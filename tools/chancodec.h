/*
 * chancodec.h - declarations shared by the files of the chancodec tool.
 */
#ifndef CHANCODEC_H
#define CHANCODEC_H

#include <stdint.h>
#include <stdio.h>

#include "chan.h"
#include "textform.h"

/* Exit statuses (SPEC-independent tool convention). */
#define EXIT_OK 0
#define EXIT_REJECTED 1 /* input rejected */
#define EXIT_USAGE 2    /* usage or I/O error */

extern const char *program_name;
extern const char *current_command;

/* "chancodec: FILE: NAME: message" on stderr. */
void report(const char *file, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* A usage error: "chancodec: message" plus a hint; returns EXIT_USAGE. */
int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* After getopt reported a bad option: the hint; returns EXIT_USAGE. */
int usage_hint(const char *cmd);
/* The exit status an error NAME maps to: 2 for SYSTEM/NO_MEMORY, else 1. */
int status_of(const char *name);

/* Options every frame-reading command shares. */
struct common_opts {
	struct chan_limits limits;
	int pretty;
	unsigned long count; /* --count N: at most N messages; 0 = all */
	unsigned decode_flags; /* --revision 1.1: CHAN_DECODE_REVISION_1_1 */
};
/* Handle the options --max-payload/--max-handles/--max-depth/--pretty/--count.
 * Returns 1 if opt was one of them (0 if not, -1 on a bad argument). */
int common_option(struct common_opts *o, int opt, const char *arg);
/* The help lines of the three limit options, shared by every subcommand. */
#define LIMIT_OPTIONS_HELP                                                     \
	"      --max-payload=N   payload limit (default 16M, at most 1G)\n"     \
	"      --max-handles=N   handle limit (default 64, at most 253)\n"      \
	"      --max-depth=N     nesting limit (default and at most 32)\n"

#define OPT_MAX_PAYLOAD 1001
#define OPT_MAX_HANDLES 1002
#define OPT_MAX_DEPTH 1003
#define OPT_PRETTY 'p'
#define OPT_COUNT 'n'
#define OPT_REVISION 1004
/* --revision=1.0|1.1, for the commands that read frames from files
 * (decode, check, dump): not in COMMON_LONGOPTS, as a live connection
 * learns the peer's revision from its HELLO. */
#define REVISION_LONGOPT {"revision", required_argument, NULL, OPT_REVISION}
#define REVISION_OPTION_HELP                                                   \
	"      --revision=REV    read frames as revision REV of the protocol: 1.0\n" \
	"                        (the default: flags, channel fields and channel\n" \
	"                        handles are errors) or 1.1 (as a receiver that\n" \
	"                        has the peer's HELLO: they are accepted)\n"
#define COMMON_LONGOPTS                                                        \
	{"max-payload", required_argument, NULL, OPT_MAX_PAYLOAD},             \
	{"max-handles", required_argument, NULL, OPT_MAX_HANDLES},             \
	{"max-depth", required_argument, NULL, OPT_MAX_DEPTH},                 \
	{"pretty", no_argument, NULL, OPT_PRETTY},                             \
	{"count", required_argument, NULL, OPT_COUNT}

/* Open FILE for reading ("-" = stdin).  NULL after reporting. */
FILE *open_input(const char *path, const char **ret_display);
void close_input(FILE *fp);

/*
 * Reading a stream of frames, one at a time, in bounded memory: the buffer
 * grows to the largest frame seen, which the payload limit bounds.
 */
struct frame_reader {
	FILE *fp;
	unsigned char *buf;
	size_t cap;
	size_t len;       /* bytes of the current frame in buf */
	uint64_t offset;  /* stream offset of the current frame */
	uint64_t next;    /* stream offset after it */
	unsigned long index;
	struct chan_header header;
	int have_header;  /* header parsed (magic and version may be bad) */
	int read_errno;
};
/*
 * Read the next frame into fr->buf.  Returns 1 when a whole frame is there,
 * 0 at the end of the input at a frame boundary, or a negative CHAN_E_ code
 * for a fatal stream error: TRUNCATED, BAD_MAGIC, UNSUPPORTED_VERSION,
 * PAYLOAD_TOO_LARGE (fr->len then says what was read), NO_MEMORY, or SYSTEM
 * (fr->read_errno).
 */
int frame_next(struct frame_reader *fr, const struct chan_limits *limits);
void frame_reader_free(struct frame_reader *fr);

/* Handle reports: one "# #N kind: ..." line per handle of v, in index
 * order. */
void report_handles(FILE *out, const chan_value *v);

/*
 * Revision 1.1 annotations (dump.c), one line of text each: the header's
 * flags ("CONTROL|END", reserved bits), its channel field ("3 = id 3,
 * opened by the sender of this frame"), and a control message ("hello,
 * features: epitaph channels", "epitaph, code 3 PAYLOAD_TOO_LARGE, message
 * ...", "close channel id 2"), with "??" before what a receiver rejects.
 */
void describe_flags(char *buf, size_t cap, unsigned flags, uint32_t channel);
void describe_channel(char *buf, size_t cap, uint32_t channel);
void describe_control(char *buf, size_t cap, const struct chan_header *h,
		      const chan_value *root);

int cmd_dump(int argc, char **argv);
int cmd_listen(int argc, char **argv);
int cmd_send(int argc, char **argv);
int cmd_proxy(int argc, char **argv);
/* "# #N KIND: type=... dev=... ino=... access=... cloexec=... path=..." for
 * the descriptor of a handle (live.c). */
void report_fd(FILE *out, uint32_t index, enum chan_kind kind, int fd);

#endif /* CHANCODEC_H */
