/*
 * codec.h - the one seam between libchan's codec and everything else.
 *
 * The codec (value.c, encode.c, decode.c, header.c, arena.c, utf8.c) turns
 * value trees into bytes and back; it never calls the operating system and
 * knows nothing of sockets.  handles.c gives descriptors to messages (kind
 * and identity checks, the self-send rule); the transport (conn.c, io.c,
 * listener.c, platform_linux.c) moves frames over sockets.  Both use the
 * codec only through this header: they never see struct chan_msg or
 * struct chan_value (internal.h is the codec's own).
 *
 * Data flow, receiving: chan__header_read (once per frame) -> the payload
 * bytes -> chan__decode_payload (validates and builds; touches no fd) ->
 * chan__handles_attach (one pass over the frame's fds: kinds, self-send,
 * ownership).  Sending: chan__encode_size (one sizing pass) ->
 * chan__encode_write (bytes, plus the handle table: fds and socket ids).
 */
#ifndef CHAN_CODEC_H
#define CHAN_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chan.h"

#define CHAN_HIDDEN __attribute__((visibility("hidden")))

/* ---- header (SPEC.md §5.1, §9.3) ---- */

/*
 * Parse and check the 16 header bytes at p, once.  Returns the first error
 * of the frame-level order that ends the stream (BAD_MAGIC,
 * UNSUPPORTED_VERSION, PAYLOAD_TOO_LARGE) or 0; *ret_frame_error gets the
 * first frame-scope header error that follows them in SPEC.md §9.3
 * (RESERVED_FIELD_NONZERO, HANDLE_LIMIT_EXCEEDED) or 0.  *ret_header is
 * filled whenever the magic matched.
 */
CHAN_HIDDEN int chan__header_read(const void *p, const struct chan_limits *limits,
				  unsigned accept, struct chan_header *ret_header,
				  int *ret_frame_error);
/* What a receiver accepts in flags and channel (SPEC.md §16.1, §17.1):
 * nothing (revision 1.0), a possible HELLO (a 1.1 receiver before the
 * peer's HELLO), or everything the peer's HELLO made acceptable. */
enum {
	CHAN__ACCEPT_HELLO = 1u << 0,    /* CONTROL on channel 0 (checked later) */
	CHAN__ACCEPT_AGREED = 1u << 1,   /* the peer's HELLO was received */
	CHAN__ACCEPT_CHANNELS = 1u << 2, /* END, channel ids, channel handles */
};
#define CHAN__FLAG_CONTROL 0x01u
#define CHAN__FLAG_END 0x02u
#define CHAN__FLAGS_CRITICAL 0x0cu
#define CHAN__FLAGS_OPTIONAL 0xf0u
#define CHAN__CHANNEL_THEIRS 0x80000000u /* bit 31: opened by the receiver */

/* ---- encoding (SPEC.md §7.2) ---- */

/* Scratch space of one encode: the sub-message sizes of the tree in
 * pre-order, computed once by chan__encode_size and consumed by
 * chan__encode_write.  Starts in `small`; grows through allocator.  A
 * connection keeps one for all its sends (under its send lock). */
struct chan__enc {
	uint32_t *sizes;
	size_t cap, n, next;
	const struct chan_allocator *allocator;
	uint32_t small[64];
};

CHAN_HIDDEN void chan__enc_init(struct chan__enc *e, const struct chan_allocator *a);
CHAN_HIDDEN void chan__enc_fini(struct chan__enc *e);
/* Size msg's frame: *ret_len (header included) and *ret_nhandles.  Errors:
 * the poison, EMPTY_VALUE, DEPTH_EXCEEDED, HANDLE_LIMIT_EXCEEDED,
 * PAYLOAD_TOO_LARGE, NO_MEMORY.  msg is not modified. */
CHAN_HIDDEN int chan__encode_size(const chan_msg *msg, struct chan__enc *e,
				  size_t *ret_len, uint32_t *ret_nhandles);
/* One entry of a frame's handle table. */
struct chan__wire_handle {
	int fd;             /* -1: moved out, or decoded detached */
	enum chan_kind kind;
	uint64_t socket_id; /* a conn handle's identity if known, else 0 */
};
/* Write the frame sized by the last chan__encode_size into buf; the handle
 * table in wire order goes to table[] (room for *ret_nhandles), unless NULL. */
CHAN_HIDDEN void chan__encode_write(const chan_msg *msg, struct chan__enc *e, void *buf,
				    struct chan__wire_handle *table);

/* ---- the writer (writer.c): a frame encoded while it is built ---- */

/* Bytes of the caller's that the frame refers to: they follow the frame's
 * own byte at offset `at` (before the byte that was there). */
struct chan__seg {
	size_t at;
	const void *p;
	size_t n;
};
/* Check a finished writer and write its frame header; *ret_len is the whole
 * frame's size.  Errors as chan_writer_frame's. */
CHAN_HIDDEN int chan__writer_seal(const chan_writer *w, uint8_t header[CHAN_HEADER_SIZE],
				  size_t *ret_len);
/* The frame after its header as pieces: its own bytes and the borrowed
 * ones, in order (iov[] has room for max; returns the count needed, which
 * may exceed max).  Only valid after chan__writer_seal succeeded. */
struct iovec;
CHAN_HIDDEN size_t chan__writer_pieces(const chan_writer *w, struct iovec *iov, size_t max);
/* Its handle table (wire order) and count. */
CHAN_HIDDEN const struct chan__wire_handle *chan__writer_handles(const chan_writer *w,
								 size_t *ret_count);
/* A borrowed handle whose kind the caller vouches for (a chan_conn's). */
CHAN_HIDDEN int chan__writer_handle(chan_writer *w, const char *caller, enum chan_kind kind,
				    int fd, uint64_t socket_id);

/* ---- control messages (control.c; SPEC.md §16.2, §17) ---- */
/* A feature's bit (enum chan_feature), 0 if libchan does not implement it. */
CHAN_HIDDEN unsigned chan__feature_bit(const char *name, size_t len);
/* The operation of a control message: its root is a map whose first key is
 * "op" with a string value; NULL otherwise. */
CHAN_HIDDEN const char *chan__control_op(chan_msg *msg, size_t *ret_len);
/* A well-formed HELLO's announced features (bits) and whether it requires
 * one libchan lacks; -1 if it is not well formed (§16.2 rules 1, 5). */
CHAN_HIDDEN int chan__hello_parse(chan_msg *msg, unsigned *ret_features, bool *ret_unmet);
/* The rules a decoded control frame (CONTROL set) must meet once its peer is
 * agreed: 0, UNSUPPORTED_FEATURE or RESERVED_FIELD_NONZERO (§17.1, §17.2). */
CHAN_HIDDEN int chan__control_check(const struct chan_header *h, chan_msg *msg);

/* Poison w with err and a message (for checks made outside writer.c). */
CHAN_HIDDEN int chan__writer_fail(chan_writer *w, int err, const char *what);

/* ---- decoding (SPEC.md §7.3) ---- */

/*
 * Validate the payload of a frame whose header h passed chan__header_read,
 * and build its message.  nfds descriptors came with the frame (TOO_FEW /
 * TOO_MANY are checked here, in their §9.3 place; DETACHED: nfds is 0 and
 * not compared).  No descriptor is touched: the handles of *ret_msg have no
 * fd until chan__handles_attach.  On error nothing is left allocated.
 */
CHAN_HIDDEN int chan__decode_payload(const void *payload, const struct chan_header *h,
				     size_t nfds, unsigned flags,
				     const struct chan_limits *limits,
				     const struct chan_allocator *allocator,
				     chan_msg **ret_msg);
/* If msg's values point into buf (CHAN_DECODE_BORROW), msg takes buf (freed
 * with msg's allocator) and true is returned. */
CHAN_HIDDEN bool chan__msg_adopt(chan_msg *msg, void *buf);

/* ---- descriptors in messages (handles.c, value.c) ---- */

/* Record err as msg's first builder error, with where it happened (a
 * printf format: "chan_map_put: duplicate key ..."); returns err. */
CHAN_HIDDEN int chan__poison(chan_msg *msg, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* A handle value for fd; no check, no system call (the caller vouches for
 * the kind).  borrowed: msg never closes fd.  Poisons msg (naming caller)
 * on failure. */
CHAN_HIDDEN chan_value *chan__handle_new(chan_msg *msg, const char *caller,
					 enum chan_kind kind, int fd, bool borrowed,
					 uint64_t socket_id);
/*
 * Give the frame's descriptors (fds[i] for handle index i) to msg in one pass
 * over its handle table: each conn handle is checked (a connected AF_UNIX
 * stream socket: WRONG_HANDLE_KIND) and, if own_id is not 0, compared with
 * the receiving socket (SELF_SEND).  On success msg owns every fd; on error
 * msg is freed and every fd closed, exactly once.
 */
CHAN_HIDDEN int chan__handles_attach(chan_msg *msg, int *fds, size_t nfds,
				     uint64_t own_id);
/* 0 if fd is a connected AF_UNIX SOCK_STREAM socket (its identity in
 * *ret_id, may be NULL), CHAN_E_WRONG_HANDLE_KIND if it is something else,
 * CHAN_E_INVALID_ARGUMENT if fd is not open, CHAN_E_SYSTEM otherwise. */
CHAN_HIDDEN int chan__conn_fd_check(int fd, uint64_t *ret_id);
/* F_DUPFD_CLOEXEC to an fd >= 3; -1 with errno on failure. */
CHAN_HIDDEN int chan__dup_cloexec(int fd);
/* Close each fd >= 0 once and set it to -1; errno is kept. */
CHAN_HIDDEN void chan__close_fds(int *fds, size_t n);

/* ---- channel handles in messages (value.c; SPEC.md §18.2) ----
 * The codec keeps, per channel value, an id and an opaque pointer to the
 * transport's channel record (channel.c).  The message holds one reference
 * to that record until the value is taken or the message is freed, when it
 * calls chan__chan_release (the one call from the codec into the
 * transport). */
CHAN_HIDDEN chan_value *chan__channel_new(chan_msg *msg, const char *caller, uint32_t id,
					  void *rec);
/* The message's channel values: creation order, walk order if decoded. */
CHAN_HIDDEN chan_value *chan__msg_channels(const chan_msg *msg);
CHAN_HIDDEN chan_value *chan__channel_next(const chan_value *v);
CHAN_HIDDEN void *chan__channel_rec(const chan_value *v);
CHAN_HIDDEN void chan__channel_set(chan_value *v, uint32_t id, void *rec);
/* Calls fn for each channel value of msg's tree in walk order (the order of
 * the wire); stops at the first non-zero return and returns it. */
CHAN_HIDDEN int chan__msg_walk_channels(const chan_msg *msg,
					int (*fn)(chan_value *v, void *ctx), void *ctx);
CHAN_HIDDEN void chan__chan_release(void *rec);

/* ---- allocation (arena.c) ---- */
/* Through a (NULL or zeroed: malloc/free). */
CHAN_HIDDEN void *chan__alloc(const struct chan_allocator *a, size_t size);
CHAN_HIDDEN void chan__free(const struct chan_allocator *a, void *p);

/* ---- limits ---- */
/* Limits with defaults filled in and hard maxima applied. */
CHAN_HIDDEN struct chan_limits chan__limits(const struct chan_limits *l);

#endif /* CHAN_CODEC_H */
