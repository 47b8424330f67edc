/*
 * chan.h - the whole public API of libchan, the reference implementation of
 * the chan/1 wire protocol (SPEC.md).
 *
 * Descriptor verbs.  Every call through which a descriptor changes hands says
 * how in its name:
 *   _copy    the callee duplicates the fd (F_DUPFD_CLOEXEC); the caller keeps
 *            its own and closes it as usual;
 *   _move    ownership passes to the callee (or, for readers, to the caller);
 *            on failure nothing moves;
 *   _borrow  ownership does not change: the lender keeps the fd and must keep
 *            it open for as long as the borrower uses it (for a borrowed
 *            handle: until the last chan_encode/chan_conn_send of the message
 *            has returned; SPEC.md §10.2).
 *
 * Ownership rules, stated once here and repeated at each prototype:
 *
 *  - A chan_msg owns every value in it (one arena per message) and every
 *    descriptor copied or moved into it.  chan_msg_free() closes the fds it
 *    still owns (never a borrowed one).
 *  - Decoding (chan_decode()) and receiving (chan_conn_recv()) hand the frame's
 *    fds to the new message; on ANY error every fd of the frame is closed
 *    exactly once before the call returns.
 *  - A call that fails steals nothing from the caller and leaks nothing.
 *  - Out-parameters are named ret_*, come last, and are written only on
 *    success (chan_encode's *ret_len also on BUFFER_TOO_SMALL).
 *
 * Building: every builder call that fails POISONS its message: the first
 * failure is kept (chan_msg_error(), and chan_msg_error_message() says which
 * call failed on which argument, e.g. `chan_map_put: duplicate key "a"`), and
 * every later chan_list_append/chan_map_put/chan_msg_set_root/encode/send of
 * that message returns it.  So a builder may chain calls and check once at the
 * end: no sequence of builder calls ends in a successful encode or send with a
 * value missing.  Encoding and sending never modify a message: one message
 * may be encoded or sent on several connections by several threads at once.
 *
 * Reading: the checked readers (chan_value_get_*, chan_map_get_*) return 0 or
 * a named error, so "missing" (CHAN_E_NOT_FOUND), "another type"
 * (CHAN_E_WRONG_TYPE) and a zero value are told apart.
 *
 * Errors: every function that can fail returns 0 (or a size) on success and a
 * negative CHAN_E_* code on failure.  The codes mirror spec/errors.tsv:
 * CHAN_E_<NAME> == -code.  chan_errname() gives the NAME, chan_strerror() a
 * sentence.  CHAN_E_SYSTEM leaves errno set by the failing system call.
 *
 * Threading: a chan_msg is not thread-safe; use it from one thread at a time.
 * A chan_conn may be used by several threads at once: sends are serialised by
 * a send lock (frames never interleave), receives by a receive lock.
 *
 * Every fd libchan creates is close-on-exec from birth.  libchan never prints.
 */
#ifndef CHAN_H
#define CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define CHAN_EXPORT __attribute__((visibility("default")))
#else
#define CHAN_EXPORT
#endif

#define CHAN_VERSION_MAJOR 0
#define CHAN_VERSION_MINOR 3
#define CHAN_VERSION_PATCH 0
#define CHAN_VERSION_STRING "0.3.0"

/* The wire version this library speaks (SPEC.md §5.2). */
#define CHAN_WIRE_VERSION 1

/* Frame header size in bytes (SPEC.md §5.1). */
#define CHAN_HEADER_SIZE 16

/* Limits (SPEC.md §8, spec/limits.tsv). */
#define CHAN_DEFAULT_MAX_PAYLOAD (16u * 1024u * 1024u)
#define CHAN_HARD_MAX_PAYLOAD (1024u * 1024u * 1024u)
#define CHAN_DEFAULT_MAX_HANDLES 64u
#define CHAN_HARD_MAX_HANDLES 253u
#define CHAN_DEFAULT_MAX_DEPTH 32u
#define CHAN_HARD_MAX_DEPTH 32u
#define CHAN_DEFAULT_MAX_CHANNELS 1048576u         /* SPEC.md §18.6 */
#define CHAN_HARD_MAX_CHANNELS 2147483647u
#define CHAN_DEFAULT_MAX_QUEUED_BYTES (64u * 1024u * 1024u)
#define CHAN_HARD_MAX_QUEUED_BYTES 4294967295u

/* ------------------------------------------------------------------------ */
/* Errors (SPEC.md §9, spec/errors.tsv).  X(NAME, code)                      */

#define CHAN_ERRORS(X)                                                         \
	X(BAD_MAGIC, 1)                                                        \
	X(UNSUPPORTED_VERSION, 2)                                              \
	X(PAYLOAD_TOO_LARGE, 3)                                                \
	X(TRUNCATED, 4)                                                        \
	X(RESERVED_FIELD_NONZERO, 5)                                           \
	X(HANDLE_LIMIT_EXCEEDED, 6)                                            \
	X(TOO_FEW_HANDLES, 7)                                                  \
	X(TOO_MANY_HANDLES, 8)                                                 \
	X(MALFORMED, 9)                                                        \
	X(UNKNOWN_FIELD, 10)                                                   \
	X(NONCANONICAL, 11)                                                    \
	X(EMPTY_VALUE, 12)                                                     \
	X(DEPTH_EXCEEDED, 13)                                                  \
	X(INVALID_UTF8, 14)                                                    \
	X(DUPLICATE_KEY, 15)                                                   \
	X(UNKNOWN_HANDLE_KIND, 16)                                             \
	X(WRONG_HANDLE_KIND, 17)                                               \
	X(HANDLE_INDEX_OUT_OF_RANGE, 18)                                       \
	X(HANDLE_INDEX_OUT_OF_ORDER, 19)                                       \
	X(UNREFERENCED_HANDLE, 20)                                             \
	X(HANDLES_TRUNCATED, 21)                                               \
	X(MISATTACHED_HANDLES, 22)                                             \
	X(SELF_SEND, 23)                                                       \
	X(CONNECTION_CLOSED, 24)                                               \
	X(TIMEOUT, 25)                                                         \
	X(WOULD_BLOCK, 26)                                                     \
	X(NO_MEMORY, 27)                                                       \
	X(SYSTEM, 28)                                                          \
	X(INVALID_ARGUMENT, 29)                                                \
	X(BUFFER_TOO_SMALL, 30)                                                \
	X(INVALID_KEY, 31)                                                     \
	X(INVALID_JSON, 32)                                                    \
	X(INVALID_TEXT, 33)                                                    \
	X(NOT_FOUND, 34)                                                       \
	X(WRONG_TYPE, 35)                                                      \
	X(UNSUPPORTED_FEATURE, 36)                                             \
	X(CHANNEL_CLOSED, 37)                                                  \
	X(UNKNOWN_CHANNEL, 38)                                                 \
	X(CHANNEL_LIMIT_EXCEEDED, 39)                                          \
	X(CHANNEL_NOT_TRANSFERABLE, 40)

enum chan_error {
	CHAN_OK = 0,
#define CHAN__ERROR_ENUM(name, code) CHAN_E_##name = -(code),
	CHAN_ERRORS(CHAN__ERROR_ENUM)
#undef CHAN__ERROR_ENUM
};

/* Scope of an error (SPEC.md §9.2). */
enum chan_error_scope {
	CHAN_SCOPE_NONE = 0,  /* not an error code */
	CHAN_SCOPE_FATAL = 1, /* the connection is unusable; free it */
	CHAN_SCOPE_FRAME = 2, /* one frame rejected; the connection is in sync */
	CHAN_SCOPE_LOCAL = 3, /* nothing reached or left the wire */
};

/* "MALFORMED" for CHAN_E_MALFORMED; "OK" for 0; NULL for unknown codes. */
CHAN_EXPORT const char *chan_errname(int err);
/* A one-line English description; never NULL. */
CHAN_EXPORT const char *chan_strerror(int err);
/* The scope the registry assigns to err. */
CHAN_EXPORT enum chan_error_scope chan_error_scope(int err);
/* Code for a registry NAME ("MALFORMED" -> CHAN_E_MALFORMED), 0 if unknown. */
CHAN_EXPORT int chan_error_from_name(const char *name);

CHAN_EXPORT const char *chan_version(void);

/* ------------------------------------------------------------------------ */
/* Allocation and limits                                                    */

/*
 * A custom allocator.  NULL everywhere means malloc/free.  alloc must return
 * NULL on failure; libchan then reports CHAN_E_NO_MEMORY (never MALFORMED).
 * The allocator must outlive every object created with it.  Every allocation
 * made for a message (its arena, a received frame it keeps) or for a
 * connection's buffers goes through the allocator given for it.
 */
struct chan_allocator {
	void *(*alloc)(void *ctx, size_t size);
	void (*free)(void *ctx, void *ptr);
	void *ctx;
};

/* Receive-side limits (SPEC.md §8).  Zero fields mean "the default". */
struct chan_limits {
	uint32_t max_payload; /* bytes, <= CHAN_HARD_MAX_PAYLOAD */
	uint32_t max_handles; /* <= CHAN_HARD_MAX_HANDLES */
	uint32_t max_depth;   /* <= CHAN_HARD_MAX_DEPTH */
};

/* ------------------------------------------------------------------------ */
/* Values and messages (SPEC.md §4)                                          */

typedef struct chan_msg chan_msg;     /* opaque; owns its values and fds */
typedef struct chan_conn chan_conn;   /* opaque; owns its socket (§10 below) */
typedef struct chan_listener chan_listener; /* opaque; owns its socket */
typedef struct chan_value chan_value; /* opaque; lives in its message's arena */

enum chan_type {
	CHAN_NULL = 1,
	CHAN_BOOL = 2,
	CHAN_INT = 3,
	CHAN_FLOAT = 4,
	CHAN_STRING = 5,
	CHAN_BYTES = 6,
	CHAN_LIST = 7,
	CHAN_MAP = 8,
	CHAN_HANDLE = 9,
	CHAN_CHANNEL = 10, /* a channel handle (SPEC.md §18.2; revision 1.1) */
};

/* Handle kinds (SPEC.md §4.2, spec/handle-kinds.tsv). */
enum chan_kind {
	CHAN_KIND_FD = 1,   /* any descriptor */
	CHAN_KIND_CONN = 2, /* a chan connection endpoint (AF_UNIX SOCK_STREAM) */
};

/* "null", "bool", ... ; "fd", "conn".  NULL if unknown. */
CHAN_EXPORT const char *chan_type_name(enum chan_type type);
CHAN_EXPORT const char *chan_kind_name(enum chan_kind kind);

/* A new, empty message (its root is unset).  NULL on out-of-memory. */
CHAN_EXPORT chan_msg *chan_msg_new(const struct chan_allocator *allocator);
/* Frees the message, its values, and closes every fd it still owns.
 * NULL-safe; returns NULL. */
CHAN_EXPORT chan_msg *chan_msg_free(chan_msg *msg);

/*
 * Value constructors.  Each allocates a detached value in msg's arena and
 * returns it, or NULL on failure; a failure poisons msg (see "Building"
 * above).  Strings are copied and must be valid UTF-8 (else
 * CHAN_E_INVALID_UTF8); bytes are copied.
 */
CHAN_EXPORT chan_value *chan_null(chan_msg *msg);
CHAN_EXPORT chan_value *chan_bool(chan_msg *msg, bool b);
CHAN_EXPORT chan_value *chan_int(chan_msg *msg, int64_t i);
CHAN_EXPORT chan_value *chan_float(chan_msg *msg, double f);
CHAN_EXPORT chan_value *chan_string(chan_msg *msg, const char *nul_terminated);
CHAN_EXPORT chan_value *chan_string_n(chan_msg *msg, const char *s, size_t len);
CHAN_EXPORT chan_value *chan_bytes(chan_msg *msg, const void *p, size_t len);
CHAN_EXPORT chan_value *chan_list(chan_msg *msg);
CHAN_EXPORT chan_value *chan_map(chan_msg *msg);

/*
 * Handle values.  For CHAN_KIND_CONN the fd must be a connected AF_UNIX
 * SOCK_STREAM socket (else CHAN_E_WRONG_HANDLE_KIND); a fd that is not open
 * is CHAN_E_INVALID_ARGUMENT ("fd 99 is not open").  A handle value that is
 * never attached to the tree does not travel; a copied or moved one is still
 * closed by chan_msg_free().
 *
 * _copy: the message holds a DUPLICATE of fd (F_DUPFD_CLOEXEC); the caller
 *        keeps fd.
 * _move: the message TAKES fd on success (closed by chan_msg_free() unless
 *        moved out again); on failure fd is still the caller's.
 * _borrow: the message refers to the caller's fd and never closes it; fd must
 *        stay open until the last encode or send of the message has
 *        returned.  No system call for kind fd (the cheapest way to send a
 *        descriptor the sender keeps); a borrowed fd that is not open fails
 *        the send with CHAN_E_INVALID_ARGUMENT.
 */
CHAN_EXPORT chan_value *chan_handle_copy(chan_msg *msg, enum chan_kind kind, int fd);
CHAN_EXPORT chan_value *chan_handle_move(chan_msg *msg, enum chan_kind kind, int fd);
CHAN_EXPORT chan_value *chan_handle_borrow(chan_msg *msg, enum chan_kind kind, int fd);

/*
 * Attach a detached value.  A value can be attached once (no sharing, no
 * cycles): attaching an attached value is CHAN_E_INVALID_ARGUMENT.  A NULL
 * item (a failed constructor) returns the message's poison error.
 * chan_map_put fails with CHAN_E_DUPLICATE_KEY if key is present, with
 * CHAN_E_INVALID_UTF8 if key is not UTF-8 and with CHAN_E_INVALID_KEY if it
 * contains U+0000 (keys are names: every key is a C string).  Key is copied.
 * Every failure poisons the message.
 */
CHAN_EXPORT int chan_list_append(chan_value *list, chan_value *item);
CHAN_EXPORT int chan_map_put(chan_value *map, const char *key, chan_value *v);
CHAN_EXPORT int chan_map_put_n(chan_value *map, const char *key, size_t key_len,
			       chan_value *v);
/* Make v the message's root value (the root is set once). */
CHAN_EXPORT int chan_msg_set_root(chan_msg *msg, chan_value *v);
/* The root value, NULL if unset. */
CHAN_EXPORT chan_value *chan_msg_root(const chan_msg *msg);
/* 0, or the first error a builder call hit (the poison). */
CHAN_EXPORT int chan_msg_error(const chan_msg *msg);
/* Where the poison came from: the failing call and its argument, e.g.
 * `chan_map_put: duplicate key "a"`; "" while the message is not poisoned.
 * Owned by the message. */
CHAN_EXPORT const char *chan_msg_error_message(const chan_msg *msg);

/*
 * Checked readers.  Each returns 0 and writes its outputs, or a named error
 * and writes nothing: CHAN_E_WRONG_TYPE when v is of another type,
 * CHAN_E_INVALID_ARGUMENT when v (or an output pointer that is not optional)
 * is NULL.  String and bytes contents are owned by the message; strings are
 * NUL-terminated as a convenience (they may also contain U+0000, so use
 * *ret_len, which may be NULL); bytes are not guaranteed to be (see
 * CHAN_DECODE_BORROW).
 */
CHAN_EXPORT int chan_value_get_bool(const chan_value *v, bool *ret);
CHAN_EXPORT int chan_value_get_int(const chan_value *v, int64_t *ret);
CHAN_EXPORT int chan_value_get_float(const chan_value *v, double *ret);
CHAN_EXPORT int chan_value_get_string(const chan_value *v, const char **ret_str,
				      size_t *ret_len);
CHAN_EXPORT int chan_value_get_bytes(const chan_value *v, const void **ret_data,
				     size_t *ret_len);

/*
 * Map lookups: as the value readers, plus CHAN_E_NOT_FOUND when the map has
 * no entry with that key (and CHAN_E_WRONG_TYPE when map is not a map).
 */
CHAN_EXPORT int chan_map_get_bool(const chan_value *map, const char *key, bool *ret);
CHAN_EXPORT int chan_map_get_int(const chan_value *map, const char *key, int64_t *ret);
CHAN_EXPORT int chan_map_get_float(const chan_value *map, const char *key, double *ret);
CHAN_EXPORT int chan_map_get_string(const chan_value *map, const char *key,
				    const char **ret_str, size_t *ret_len);
CHAN_EXPORT int chan_map_get_bytes(const chan_value *map, const char *key,
				   const void **ret_data, size_t *ret_len);
/* The value under key, or CHAN_E_NOT_FOUND / CHAN_E_WRONG_TYPE. */
CHAN_EXPORT int chan_map_get_value(const chan_value *map, const char *key,
				   chan_value **ret_value);

/* Structure.  These cannot fail in a way that hides a value: */
/* The type, 0 for NULL. */
CHAN_EXPORT enum chan_type chan_value_type(const chan_value *v);
/* Number of items of a list or entries of a map; 0 for other types. */
CHAN_EXPORT size_t chan_value_count(const chan_value *v);
/* Item i of a list, value of entry i of a map; NULL if out of range. O(1). */
CHAN_EXPORT chan_value *chan_value_at(const chan_value *v, size_t i);
/* Key of entry i of a map (NUL-terminated; *ret_len if not NULL). */
CHAN_EXPORT const char *chan_map_key_at(const chan_value *map, size_t i,
					size_t *ret_len);
/* The value under key, NULL if absent (or map is not a map). O(1) expected. */
CHAN_EXPORT chan_value *chan_map_get(const chan_value *map, const char *key);
CHAN_EXPORT chan_value *chan_map_get_n(const chan_value *map, const char *key,
				       size_t key_len);
/* Handle kind (0 if not a handle). */
CHAN_EXPORT enum chan_kind chan_value_kind(const chan_value *v);
/* Handle index in the frame's handle table of a DECODED message (wire
 * order); 0 for a built message (its indices exist only on the wire). */
CHAN_EXPORT uint32_t chan_value_handle_index(const chan_value *v);

/*
 * Descriptors out of a handle value.
 * _borrow_fd: the fd, still owned by the message (or by the lender of a
 *   borrowed handle).  CHAN_E_WRONG_TYPE if v is not a handle,
 *   CHAN_E_INVALID_ARGUMENT if its fd was moved out or it was decoded
 *   detached.
 * _move_fd: MOVES the fd to the caller; the message forgets it.  As above,
 *   and CHAN_E_INVALID_ARGUMENT for a borrowed handle (the message does not
 *   own that fd: borrow it instead).
 */
CHAN_EXPORT int chan_value_borrow_fd(const chan_value *v, int *ret_fd);
CHAN_EXPORT int chan_value_move_fd(chan_value *v, int *ret_fd);

/* ------------------------------------------------------------------------ */
/* Codec (SPEC.md §5-§7): frames in memory                                   */

/* A parsed frame header (SPEC.md §5.1). */
struct chan_header {
	uint8_t version;
	uint8_t flags;
	uint16_t handle_count;
	uint32_t channel;
	uint32_t payload_length;
};

/*
 * Parse the 16 header bytes at p (len >= CHAN_HEADER_SIZE, else
 * CHAN_E_TRUNCATED).  Checks, in order: magic (BAD_MAGIC), version
 * (UNSUPPORTED_VERSION).  Fills *ret even when it fails after the magic, so
 * tools can show what they read.  Limits are checked by chan_header_check().
 */
CHAN_EXPORT int chan_header_parse(const void *p, size_t len,
				  struct chan_header *ret_header);
/* Frame-level checks of a parsed header against limits (NULL = defaults), in
 * the order of SPEC.md §9.3: PAYLOAD_TOO_LARGE, RESERVED_FIELD_NONZERO,
 * HANDLE_LIMIT_EXCEEDED. */
CHAN_EXPORT int chan_header_check(const struct chan_header *h,
				  const struct chan_limits *limits);

/*
 * Encode msg as one frame (header + canonical payload) into buf.
 * Returns 0 and sets *ret_len; if cap is too small returns
 * CHAN_E_BUFFER_TOO_SMALL and still sets *ret_len to the size needed.
 * Encode errors: the poison error, EMPTY_VALUE (no root), DEPTH_EXCEEDED,
 * HANDLE_LIMIT_EXCEEDED (> 253 handles), PAYLOAD_TOO_LARGE (> hard max).
 * The codec writes bytes only: a handle whose fd was moved out (or that was
 * decoded detached) encodes as usual, and chan_conn_send refuses it
 * (CHAN_E_INVALID_ARGUMENT).  msg is not modified; it keeps its fds.
 */
CHAN_EXPORT int chan_encode(const chan_msg *msg, void *buf, size_t cap,
			    size_t *ret_len);
/* Size of the frame chan_encode would write (header included). */
CHAN_EXPORT int chan_encoded_size(const chan_msg *msg, size_t *ret_len);
/*
 * The frame's handle table in wire order: the fds that go with an encoded
 * msg (or came with a decoded one), BORROWED (they stay the message's, or the
 * lender's).  Writes min(count, cap) fds to fds[] and the count to
 * *ret_count; -1 marks a handle whose fd was moved out or that was decoded
 * detached.  Errors as chan_encode's (the tree is walked again).
 */
CHAN_EXPORT int chan_msg_borrow_handles(const chan_msg *msg, int *fds, size_t cap,
					size_t *ret_count);

/* Flags for chan_decode. */
enum chan_decode_flags {
	/* Decode without descriptors: nfds must be 0 and handle values get
	 * fd -1, but every index rule is still checked against the header's
	 * handle count.  For tools that read captured frames. */
	CHAN_DECODE_DETACHED = 1u << 0,
	/* Bytes values of CHAN_BORROW_MIN bytes or more point into buf instead
	 * of being copied: buf must stay valid and unchanged for the life of
	 * the message.  (A connection uses this for large frames and hands its
	 * receive buffer to the message.) */
	CHAN_DECODE_BORROW = 1u << 1,
	/* Accept what revision 1.1 defines (SPEC.md §16-§18): the flags of
	 * §17.1, non-zero channel fields, channel handles (Value field 10),
	 * as a receiver that has the peer's HELLO does.  Without it a buffer
	 * is decoded as revision 1.0 says.  For tools that read 1.1 streams. */
	CHAN_DECODE_REVISION_1_1 = 1u << 2,
};
#define CHAN_BORROW_MIN 4096u

/*
 * Decode exactly one frame from the start of buf.  fds/nfds are the
 * descriptors that arrived with it; chan_decode TAKES ALL OF THEM: on success
 * they belong to *ret_msg, on any error they have all been closed.
 * Every rule of SPEC.md §5-§8 is checked before *ret_msg is set; the error is
 * the first one in the order of SPEC.md §9.3.  *ret_consumed (may be NULL) is
 * set to the frame's size on success; bytes after the frame are not read.
 * Handles of kind conn are verified (getsockopt) unless DETACHED.
 * Decoding costs a bounded number of allocations whatever the payload: one
 * for payloads up to 64 KiB and for large strings or bytes, at most 7.
 */
CHAN_EXPORT int chan_decode(const void *buf, size_t len, int *fds, size_t nfds,
			    unsigned flags, const struct chan_limits *limits,
			    const struct chan_allocator *allocator,
			    chan_msg **ret_msg, size_t *ret_consumed);

/* ------------------------------------------------------------------------ */
/* Writer: encode while building, no tree (SPEC.md §7.2)                    */

/*
 * A chan_writer writes a frame's canonical bytes while the caller describes
 * the value, with no tree in between: the fastest way to send a message that
 * is built once.  It refuses what the tree builder refuses (DUPLICATE_KEY,
 * INVALID_UTF8, INVALID_KEY, DEPTH_EXCEEDED, HANDLE_LIMIT_EXCEEDED,
 * PAYLOAD_TOO_LARGE) with the same names and produces the same bytes as
 * chan_encode of the same value.  Every failure poisons the writer until the
 * next chan_writer_reset (chan_writer_error_message says where); so a builder
 * may chain calls and check the final chan_writer_frame or
 * chan_conn_send_writer once.
 *
 * Shape: exactly one value at the top.  Between *_begin and *_end, a list
 * takes any number of values; a map takes chan_writer_key then one value,
 * any number of times (keys are checked for duplicates as they come).
 *
 * Handles are BORROWED (the writer never owns a descriptor): each fd must
 * stay open until the last send of the frame has returned.
 * chan_writer_bytes_borrow does not copy either: the frame refers to the
 * caller's bytes (same lifetime rule), and chan_conn_send_writer hands them
 * to the kernel directly (one gathered sendmsg).
 *
 * A writer is reused frame after frame (chan_writer_reset keeps its buffers):
 * after the first few frames, building costs no allocation.  Not
 * thread-safe; a finished writer may be sent by several threads at once.
 */
typedef struct chan_writer chan_writer;

CHAN_EXPORT chan_writer *chan_writer_new(const struct chan_allocator *allocator);
CHAN_EXPORT chan_writer *chan_writer_free(chan_writer *w);
/* Start a new frame: forget the value, the handles and any poison. */
CHAN_EXPORT void chan_writer_reset(chan_writer *w);

CHAN_EXPORT int chan_writer_null(chan_writer *w);
CHAN_EXPORT int chan_writer_bool(chan_writer *w, bool b);
CHAN_EXPORT int chan_writer_int(chan_writer *w, int64_t i);
CHAN_EXPORT int chan_writer_float(chan_writer *w, double f);
CHAN_EXPORT int chan_writer_string(chan_writer *w, const char *nul_terminated);
CHAN_EXPORT int chan_writer_string_n(chan_writer *w, const char *s, size_t len);
CHAN_EXPORT int chan_writer_bytes(chan_writer *w, const void *p, size_t len);
/* Bytes the frame refers to without copying (see above). */
CHAN_EXPORT int chan_writer_bytes_borrow(chan_writer *w, const void *p, size_t len);
/* A handle of kind fd or conn holding the caller's fd, BORROWED.  Kind conn
 * checks the socket (one getpeername, one getsockopt, one fstat); use
 * chan_writer_handle_borrow_conn for a chan_conn (no system call). */
CHAN_EXPORT int chan_writer_handle_borrow(chan_writer *w, enum chan_kind kind, int fd);
CHAN_EXPORT int chan_writer_handle_borrow_conn(chan_writer *w, const chan_conn *conn);
CHAN_EXPORT int chan_writer_list_begin(chan_writer *w);
CHAN_EXPORT int chan_writer_list_end(chan_writer *w);
CHAN_EXPORT int chan_writer_map_begin(chan_writer *w);
CHAN_EXPORT int chan_writer_key(chan_writer *w, const char *key);
CHAN_EXPORT int chan_writer_key_n(chan_writer *w, const char *key, size_t len);
CHAN_EXPORT int chan_writer_map_end(chan_writer *w);

/* 0, or the first error (the poison), and where it happened. */
CHAN_EXPORT int chan_writer_error(const chan_writer *w);
CHAN_EXPORT const char *chan_writer_error_message(const chan_writer *w);
/*
 * The finished frame, copied into buf (cap bytes; BUFFER_TOO_SMALL sets
 * *ret_len to the size needed), with its handle table (BORROWED fds) in
 * fds[] (room for fds_cap) and its count in *ret_nfds.  EMPTY_VALUE if no
 * value was written, INVALID_ARGUMENT if a list or map is still open.
 */
CHAN_EXPORT int chan_writer_frame(const chan_writer *w, void *buf, size_t cap, int *fds,
				  size_t fds_cap, size_t *ret_len, size_t *ret_nfds);

/* ------------------------------------------------------------------------ */
/* Connections (SPEC.md §10)                                                 */


/* Timeouts in milliseconds: -1 waits forever (blocking in the system call),
 * 0 never waits, a positive value waits at most that long (MSG_DONTWAIT and
 * poll).  Waiting for another thread's lock counts against the timeout. */

/* Two connected endpoints (socketpair). */
CHAN_EXPORT int chan_conn_pair(chan_conn **ret_a, chan_conn **ret_b);
/*
 * Listen on a filesystem path, or on a Linux abstract name when path starts
 * with '@' ("@name").  The listener unlinks a filesystem path it bound when
 * freed.  An existing socket file at path is not removed (CHAN_E_SYSTEM,
 * errno EADDRINUSE).  CHAN_E_INVALID_ARGUMENT for an empty name, "@" alone,
 * or a name longer than sun_path holds (107 bytes on Linux).  The socket
 * file's mode comes from the umask; an abstract name can be connected to by
 * any process in the network namespace (SPEC.md §15).
 */
CHAN_EXPORT int chan_listen(const char *path, chan_listener **ret_listener);
CHAN_EXPORT int chan_listener_accept(chan_listener *l, int timeout_ms,
				     chan_conn **ret_conn);
/* The listening socket, for poll/epoll (borrowed: the listener owns it). */
CHAN_EXPORT int chan_listener_borrow_fd(const chan_listener *l);
CHAN_EXPORT chan_listener *chan_listener_free(chan_listener *l);
/* Connect to a listener at path ('@name' for abstract); names as chan_listen. */
CHAN_EXPORT int chan_connect(const char *path, chan_conn **ret_conn);
/* Wrap a connected AF_UNIX SOCK_STREAM socket; MOVES fd in on success only. */
CHAN_EXPORT int chan_conn_move_from_fd(int fd, chan_conn **ret_conn);
/*
 * Turn a received handle of kind conn into a connection: MOVES its fd out of
 * the message (the nested case).  CHAN_E_WRONG_TYPE if v is not a handle,
 * CHAN_E_WRONG_HANDLE_KIND if it is a handle of another kind,
 * CHAN_E_INVALID_ARGUMENT if its fd was already moved out or is borrowed.
 */
CHAN_EXPORT int chan_conn_move_from_value(chan_value *v, chan_conn **ret_conn);
/* chan_conn_move_from_value of the entry under key: also CHAN_E_NOT_FOUND. */
CHAN_EXPORT int chan_map_move_conn(chan_value *map, const char *key,
				   chan_conn **ret_conn);
/*
 * MOVE a connection into msg as a handle of kind conn (the reply_to
 * pattern): on success the socket belongs to msg, the connection object is
 * freed and *conn is set to NULL.  On failure (NULL, msg poisoned) *conn is
 * untouched.  CHAN_E_INVALID_ARGUMENT if the connection has a committed
 * frame still being written or a frame partly received (moving it would
 * tear the stream).
 */
CHAN_EXPORT chan_value *chan_handle_move_conn(chan_msg *msg, chan_conn **conn);
/*
 * BORROW a connection's socket as a handle of kind conn: the connection
 * keeps it and stays usable; it must outlive every send of msg.  No system
 * call (the connection's socket was checked when it was made).
 */
CHAN_EXPORT chan_value *chan_handle_borrow_conn(chan_msg *msg, const chan_conn *conn);
/* Closes the socket and drops any unsent or partly received data (their fds
 * closed).  NULL-safe; returns NULL.  On a channel endpoint (below): closes
 * the channel (SPEC.md §18.5 rule 3: a close frame unless END was already
 * sent or received). */
CHAN_EXPORT chan_conn *chan_conn_free(chan_conn *c);

/* The socket, for poll/epoll.  BORROWED: owned by the connection; do not
 * close or read it.  libchan never sets O_NONBLOCK on it (that flag is shared
 * with every copy of the socket): it uses MSG_DONTWAIT. */
CHAN_EXPORT int chan_conn_borrow_fd(const chan_conn *c);
/* Receive limits for this connection; NULL restores the defaults, a zero
 * field means its default.  CHAN_E_INVALID_ARGUMENT if a field exceeds its
 * hard maximum (it is not clamped). */
CHAN_EXPORT int chan_conn_set_limits(chan_conn *c,
				     const struct chan_limits *limits);
/* Allocator for the connection's buffers and its received messages (NULL =
 * malloc).  CHAN_E_INVALID_ARGUMENT while a frame is partly received or a
 * committed frame is still being written (their buffers came from the old
 * allocator). */
CHAN_EXPORT int chan_conn_set_allocator(chan_conn *c,
					const struct chan_allocator *a);

struct chan_peer_cred {
	pid_t pid;
	uid_t uid;
	gid_t gid;
};
/* Credentials of the peer process at connect time (SO_PEERCRED). */
CHAN_EXPORT int chan_conn_peer_cred(const chan_conn *c,
				    struct chan_peer_cred *ret_cred);

/*
 * Send msg as one frame.  msg is not modified (const): the kernel passes
 * references to its fds, which stay the message's (or the lender's); free it
 * afterwards as usual.  The same message may be sent on several connections,
 * from several threads at once.  The frame's fds ride with its first byte,
 * exactly once.
 *
 * If the whole frame is written, returns 0.  If the first byte went out but
 * not the rest before the timeout, the remainder is kept inside the connection
 * and 0 is returned: the frame is committed; chan_conn_flush() (or the next
 * send) writes the rest.  If nothing could be written in time: CHAN_E_TIMEOUT
 * (or CHAN_E_WOULD_BLOCK with timeout 0) and nothing was sent.
 * Errors: encode errors, SELF_SEND (a conn handle is this connection or its
 * peer), CONNECTION_CLOSED (EPIPE), SYSTEM.  A failure after a frame was
 * committed (CONNECTION_CLOSED, SYSTEM) sticks: every later send and flush
 * returns it.
 */
CHAN_EXPORT int chan_conn_send(chan_conn *c, const chan_msg *msg, int timeout_ms);
/* chan_conn_send of a finished writer's frame: the same rules and errors
 * (the writer is not modified; borrowed bytes go out by one gathered
 * sendmsg, and only a committed remainder is ever copied). */
CHAN_EXPORT int chan_conn_send_writer(chan_conn *c, const chan_writer *w, int timeout_ms);
/* Write buffered remainder of a committed frame.  0 when nothing is pending. */
CHAN_EXPORT int chan_conn_flush(chan_conn *c, int timeout_ms);
/* Non-zero if a committed frame still has bytes to write (poll for POLLOUT). */
CHAN_EXPORT int chan_conn_pending(const chan_conn *c);

/*
 * Receive one frame.  On success *ret_msg owns the frame's values and fds
 * (all CLOEXEC).  Partial data is buffered inside the connection across calls
 * (non-blocking use: timeout 0 and CHAN_E_WOULD_BLOCK).
 * Frame-scope errors (chan_error_scope() == CHAN_SCOPE_FRAME) reject this
 * frame only, with all its fds closed; the next call reads the next frame.
 * Fatal errors stick: every later call returns the same error.
 * CHAN_E_CONNECTION_CLOSED: the peer closed at a frame boundary.
 */
CHAN_EXPORT int chan_conn_recv(chan_conn *c, int timeout_ms, chan_msg **ret_msg);

/* ------------------------------------------------------------------------ */
/* Revision 1.1: features, epitaphs, channels (SPEC.md §16-§18)             */

/*
 * A connection starts knowing nothing of its peer and sends 1.0 frames only
 * (SPEC.md §16.1).  Features become usable when the peer's HELLO announces
 * them: a HELLO received is answered automatically; the first one is sent by
 * chan_conn_hello, which an application calls only when it knows the peer
 * implements revision 1.1 (a 1.0 peer rejects a HELLO).
 */
enum chan_feature {
	CHAN_FEATURE_EPITAPH = 1u << 0,  /* "epitaph", SPEC.md §17.3 */
	CHAN_FEATURE_CHANNELS = 1u << 1, /* "channels", SPEC.md §18 */
};
/* Send this side's HELLO (all features libchan implements).  require: the
 * features the caller will use before the peer's answer arrives (usable at
 * once; a peer that lacks one fails the connection with
 * CHAN_E_UNSUPPORTED_FEATURE).  CHAN_E_INVALID_ARGUMENT if a HELLO was
 * already sent on c, or c is a channel endpoint. */
CHAN_EXPORT int chan_conn_hello(chan_conn *c, unsigned require, int timeout_ms);
/* The features usable for sending on c now (enum chan_feature bits). */
CHAN_EXPORT unsigned chan_conn_features(const chan_conn *c);

/*
 * Epitaphs.  chan_conn_send_epitaph tells the peer why this side is about to
 * close (code: an error code, negative as returned, or 0 < -code <= 255;
 * message: NULL or text for people), then ends sending on c (later sends:
 * CHAN_E_CONNECTION_CLOSED).  CHAN_E_UNSUPPORTED_FEATURE if the peer did not
 * announce "epitaph" (nothing is sent).  libchan also sends one on its own
 * when a receive fails fatally because of what the peer sent.
 * A receive that reads the peer's epitaph returns its code (e.g.
 * CHAN_E_PAYLOAD_TOO_LARGE: the peer found our frame too large), and
 * chan_conn_epitaph then returns its message ("" if none) and the code; NULL
 * while no epitaph was received.  Later receives: CHAN_E_CONNECTION_CLOSED.
 */
CHAN_EXPORT int chan_conn_send_epitaph(chan_conn *c, int code, const char *message,
				       int timeout_ms);
CHAN_EXPORT const char *chan_conn_epitaph(const chan_conn *c, int *ret_code);

/*
 * Channels.  chan_channel_open opens a channel on conn: *ret_channel is this
 * side's endpoint, and the returned value (in msg) is the channel handle to
 * send, in msg, on conn; sending it opens the channel at the peer (its id is
 * assigned then, so handles go out in id order whatever the order of
 * opening).  Needs the feature "channels" (else NULL, msg poisoned with
 * CHAN_E_UNSUPPORTED_FEATURE).  An endpoint is a chan_conn: chan_conn_send,
 * chan_conn_send_writer, chan_conn_send_last, chan_conn_recv and
 * chan_conn_free work on it and move frames over conn's socket; it has no
 * descriptor (chan_conn_borrow_fd returns -1).  A received channel handle
 * becomes an endpoint through chan_conn_move_from_value or
 * chan_map_move_conn, exactly as a conn handle does; one never taken is
 * closed when its message is freed.  A channel endpoint cannot be put in a
 * message as a conn, nor its handle sent over another connection or twice
 * (CHAN_E_CHANNEL_NOT_TRANSFERABLE).
 * Receiving: frames for endpoints other than the one being read are queued
 * inside the connection (bounded: chan_conn_set_channel_limits); one thread
 * reads the socket at a time and hands frames to the others.  After the
 * peer closed the channel, receives return the queued frames, then the
 * close's code if it gave one, then CHAN_E_CHANNEL_CLOSED; sends return
 * CHAN_E_CHANNEL_CLOSED.
 */
CHAN_EXPORT chan_value *chan_channel_open(chan_msg *msg, chan_conn *conn,
					  chan_conn **ret_channel);
/* A channel handle value naming id as is (tools, tests): it encodes to a
 * buffer, but cannot be sent on a connection. */
CHAN_EXPORT chan_value *chan_channel_ref(chan_msg *msg, uint32_t id);
/* A channel handle's id (0 for other values, and for a handle not yet
 * sent). */
CHAN_EXPORT uint32_t chan_value_channel_id(const chan_value *v);
/* 0 for a connection; for a channel endpoint, its id on the wire with bit 31
 * set when the peer opened it (SPEC.md §18.1), 0x80000000 alone while the
 * handle of a channel this side opened has not been sent. */
CHAN_EXPORT uint32_t chan_conn_channel_id(const chan_conn *c);
/* Send msg as the last frame of this side on a channel (END): one frame
 * that also closes the channel, so freeing the endpoint afterwards sends
 * nothing.  CHAN_E_INVALID_ARGUMENT on a connection. */
CHAN_EXPORT int chan_conn_send_last(chan_conn *c, const chan_msg *msg, int timeout_ms);
CHAN_EXPORT int chan_conn_send_writer_last(chan_conn *c, const chan_writer *w,
					   int timeout_ms);
/* Channel limits of a connection (SPEC.md §18.6): open channels, and bytes
 * of frames queued for endpoints nobody is reading.  0 means the default
 * (1048576 channels, 64 MiB). */
CHAN_EXPORT int chan_conn_set_channel_limits(chan_conn *c, uint32_t max_channels,
					     uint64_t max_queued_bytes);

/* ------------------------------------------------------------------------ */
/* Event loops (epoll, sd-event, libuv, GLib, ...)                           */

/*
 * A connection never needs a thread of its own: one loop can serve any
 * number of them.  The contract, in four rules:
 *
 *  1. Watch chan_conn_borrow_fd(c) for chan_conn_events(c): CHAN_EVENT_READ
 *     always, CHAN_EVENT_WRITE while a committed frame still has bytes to
 *     write.  (They equal POLLIN and POLLOUT, and EPOLLIN and EPOLLOUT.)
 *     Ask again after every call on c: the answer changes when a send
 *     commits a frame or a flush finishes one.
 *  2. Readable: call chan_conn_recv(c, 0, &msg) until it returns
 *     CHAN_E_WOULD_BLOCK.  Each call reads the rest of one frame and at
 *     most 4 KiB of the frames after it (SPEC.md §10.3), which the next
 *     calls return without reading: so always call until WOULD_BLOCK, and
 *     never wait for readability while a call has not said WOULD_BLOCK.
 *     A call never blocks; a partial frame (a peer that stalls mid-frame) stays
 *     buffered inside c, so a slow peer delays nobody else.  A frame-scope
 *     error rejects one frame (keep reading); a fatal one (and
 *     CHAN_E_CONNECTION_CLOSED) means: stop watching c and free it.  (An
 *     error that ends the connection although its registry scope is not
 *     fatal, such as a peer's unmet HELLO require, is reported once and
 *     followed by CHAN_E_CONNECTION_CLOSED, so "keep reading" ends there.)
 *     Channel endpoints of c (revision 1.1) have no descriptor of their own:
 *     when c is readable, also call chan_conn_recv(endpoint, 0, &msg) on each
 *     endpoint you serve until CHAN_E_WOULD_BLOCK (reading c queues their
 *     frames; reading an endpoint may read c).
 *  3. Writable: call chan_conn_flush(c, 0).  0: the frame is out.
 *  4. Sending from the loop: chan_conn_send(c, msg, 0).  0 means the frame is
 *     committed: wholly written, or its first bytes written and the rest kept
 *     inside c for rule 3 (the message may be freed at once).
 *     CHAN_E_WOULD_BLOCK means nothing was written and nothing kept: c still
 *     holds an earlier committed frame, or the socket buffer is full.  Keep
 *     msg in your own queue and send it again when c is writable.  At most
 *     one committed frame is buffered per connection, so a peer that stops
 *     reading costs one frame of memory here, plus what your queue keeps
 *     (bound it, and drop that peer when it is full).
 *
 * Listeners: watch chan_listener_borrow_fd(l) for CHAN_EVENT_READ and call
 * chan_listener_accept(l, 0, &c) until CHAN_E_WOULD_BLOCK.  Nothing here
 * takes a lock that another thread may hold for long: with timeout 0 a call
 * that finds the connection's lock taken returns CHAN_E_WOULD_BLOCK.
 * c/examples/epoll_server.c and c/examples/sdevent_server.c follow this
 * contract.
 */
#define CHAN_EVENT_READ 0x001  /* POLLIN */
#define CHAN_EVENT_WRITE 0x004 /* POLLOUT */
CHAN_EXPORT unsigned chan_conn_events(const chan_conn *c);

/* ------------------------------------------------------------------------ */
/* Raw socket I/O with descriptors (SPEC.md §10.2-§10.4)                     */

/*
 * One sendmsg(2) of len bytes with nfds descriptors attached to its first
 * byte (SCM_RIGHTS; the fds are BORROWED), with MSG_NOSIGNAL, and
 * MSG_DONTWAIT when dontwait.  Returns the bytes written, or CHAN_E_WOULD_BLOCK
 * (nothing written, would block), CHAN_E_CONNECTION_CLOSED (EPIPE,
 * ECONNRESET), CHAN_E_INVALID_ARGUMENT (nfds > 253, or EBADF), CHAN_E_SYSTEM
 * (errno kept).  For tools and tests that write frames byte by byte; a
 * chan_conn does its own framing.
 */
CHAN_EXPORT ssize_t chan_sock_send(int sock, const void *buf, size_t len,
				   const int *fds, size_t nfds, bool dontwait);
/*
 * One recvmsg(2) of at most cap bytes with MSG_CMSG_CLOEXEC (MSG_DONTWAIT
 * when dontwait).  The descriptors that arrived are MOVED to fds[] (room for
 * fds_cap; the control buffer takes 253) and counted in *ret_nfds; other
 * control messages (SCM_CREDENTIALS, and a pidfd, which is closed) are
 * skipped.  Returns the bytes read (0 at end of stream), or
 * CHAN_E_HANDLES_TRUNCATED (MSG_CTRUNC, or more fds than fds_cap: every fd
 * that did arrive is closed), CHAN_E_WOULD_BLOCK, CHAN_E_SYSTEM.
 */
CHAN_EXPORT ssize_t chan_sock_recv(int sock, void *buf, size_t cap, int *fds,
				   size_t fds_cap, bool dontwait, size_t *ret_nfds);

#ifdef __cplusplus
}
#endif

#endif /* CHAN_H */
