/*
 * textform.h - the chan text form (SPEC.md §12):
 * strict JSON <-> chan values, for chancodec.
 *
 * Parsing is done here (a syntax pass, then a walk in document order, so that
 * a faulty document gets the error SPEC.md §12.4 rule 4 names) into a jansson
 * tree; rendering is done here, byte by byte, because the canonical rendering
 * fixes every byte (number layout, escapes) and jansson's own output differs
 * (reals with 17 digits, escapes of its choice).
 */
#ifndef CHAN_TEXTFORM_H
#define CHAN_TEXTFORM_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "chan.h"

/* Names of text-form input errors that are not in spec/errors.tsv. */
#define TF_INVALID_JSON "INVALID_JSON" /* registry 32: not RFC 8259 JSON */
#define TF_INVALID_TEXT "INVALID_TEXT" /* registry 33: JSON, but no value's text form */

/* An error: a registry NAME (or one of the TF_ names) and a sentence. */
struct tf_error {
	const char *name;
	char msg[512];
};

void tf_seterr(struct tf_error *err, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ---- reading JSON values one after the other from a stream ------------- */

struct tf_reader;

/* A reader of consecutive JSON values from fp (not closed by the reader). */
struct tf_reader *tf_reader_new(FILE *fp);
void tf_reader_free(struct tf_reader *r);
/*
 * Read the next JSON value.  Returns 1 and sets *ret (caller decrefs),
 * 0 at the end of the input, -1 on error (*err filled: INVALID_JSON;
 * else the first of INVALID_UTF8, INVALID_KEY, DUPLICATE_KEY, INVALID_TEXT,
 * DEPTH_EXCEEDED in document order; or NO_MEMORY, SYSTEM).  Markers are
 * checked here; the handle count and indices are left to tf_build.
 */
int tf_reader_next(struct tf_reader *r, json_t **ret, struct tf_error *err);
/* Line and column (1-based, bytes) where the last value read started. */
void tf_reader_where(const struct tf_reader *r, unsigned long *line,
		     unsigned long *col);
/* Parse exactly one JSON value from a NUL-terminated string. */
json_t *tf_parse_string(const char *s, struct tf_error *err);

/* ---- building a chan value from a parsed JSON value --------------------- */

/*
 * Supplies the descriptor for the handle {"$fd":index} / {"$conn":index}.
 * Returns 0 and an fd the builder only borrows (chan_handle duplicates it),
 * or -1 after filling *err.
 */
typedef int (*tf_fd_source)(void *ctx, enum chan_kind kind, uint32_t index,
			    int *ret_fd, struct tf_error *err);

/*
 * Build the value json stands for in msg and make it msg's root.  Returns 0,
 * or -1 with *err filled (HANDLE_LIMIT_EXCEEDED, then HANDLE_INDEX_OUT_OF_RANGE
 * or HANDLE_INDEX_OUT_OF_ORDER walking; INVALID_TEXT for a bad marker in a
 * tree tf_reader_next did not make; or a libchan error name).
 */
int tf_build(chan_msg *msg, json_t *json, tf_fd_source src, void *src_ctx,
	     struct tf_error *err);

/*
 * Supplies the value for the channel handle {"$channel":id} (revision 1.1,
 * SPEC.md §18.2): a value of msg, or NULL after filling *err.  tf_build
 * makes chan_channel_ref(msg, id), which encodes to a buffer but cannot be
 * sent; a sender opens a channel here instead.
 */
typedef chan_value *(*tf_channel_source)(void *ctx, chan_msg *msg, uint32_t id,
					 struct tf_error *err);
/* tf_build with a source of channel handles (NULL: chan_channel_ref). */
int tf_build_channels(chan_msg *msg, json_t *json, tf_fd_source src, void *src_ctx,
		      tf_channel_source chsrc, void *chsrc_ctx, struct tf_error *err);

/* ---- rendering ---------------------------------------------------------- */

/* Write the text form of v: canonical (pretty == 0) or pretty, no newline. */
void tf_render(FILE *out, const chan_value *v, int pretty);

/*
 * The float layout of the text form for a finite double: shortest round-trip
 * digits, ECMAScript Number::toString layout, ".0" when integral-looking.
 * buf needs 32 bytes.  Returns buf.
 */
char *tf_format_double(double d, char *buf);

/* Standard base64 with padding (RFC 4648 §4). */
void tf_base64_write(FILE *out, const unsigned char *p, size_t len);
/* Strict decode: returns a malloc'd buffer and *ret_len, or NULL if s is not
 * canonical padded base64 (or out of memory: *ret_len set to SIZE_MAX). */
unsigned char *tf_base64_decode(const char *s, size_t len, size_t *ret_len);

#endif /* CHAN_TEXTFORM_H */
