/* error.c - names, messages and scopes of the error registry (spec/errors.tsv). */
#include <string.h>

#include "internal.h"

struct error_info {
	const char *name;
	const char *message;
	enum chan_error_scope scope;
};

/* Indexed by code; must match spec/errors.tsv (checked by error_test.c). */
static const struct error_info errors[] = {
	[1] = {"BAD_MAGIC", "frame header does not start with the magic \"CHAN\"", CHAN_SCOPE_FATAL},
	[2] = {"UNSUPPORTED_VERSION", "frame header version is not 1", CHAN_SCOPE_FATAL},
	[3] = {"PAYLOAD_TOO_LARGE", "payload length exceeds the limit", CHAN_SCOPE_FATAL},
	[4] = {"TRUNCATED", "input ended inside a frame", CHAN_SCOPE_FATAL},
	[5] = {"RESERVED_FIELD_NONZERO", "header flags or channel field is not zero", CHAN_SCOPE_FRAME},
	[6] = {"HANDLE_LIMIT_EXCEEDED", "frame has more handles than the limit", CHAN_SCOPE_FRAME},
	[7] = {"TOO_FEW_HANDLES", "fewer descriptors arrived than the header declares", CHAN_SCOPE_FRAME},
	[8] = {"TOO_MANY_HANDLES", "more descriptors arrived than the header declares", CHAN_SCOPE_FRAME},
	[9] = {"MALFORMED", "payload is not a well-formed encoding of the schema", CHAN_SCOPE_FRAME},
	[10] = {"UNKNOWN_FIELD", "payload holds a field the schema does not define", CHAN_SCOPE_FRAME},
	[11] = {"NONCANONICAL", "payload is not the canonical encoding of its value", CHAN_SCOPE_FRAME},
	[12] = {"EMPTY_VALUE", "a value or map entry has no value set", CHAN_SCOPE_FRAME},
	[13] = {"DEPTH_EXCEEDED", "values nest deeper than the depth limit", CHAN_SCOPE_FRAME},
	[14] = {"INVALID_UTF8", "a string or map key is not valid UTF-8", CHAN_SCOPE_FRAME},
	[15] = {"DUPLICATE_KEY", "a map holds the same key twice", CHAN_SCOPE_FRAME},
	[16] = {"UNKNOWN_HANDLE_KIND", "a handle's kind is not in the registry", CHAN_SCOPE_FRAME},
	[17] = {"WRONG_HANDLE_KIND", "a handle's descriptor is not what its kind requires", CHAN_SCOPE_FRAME},
	[18] = {"HANDLE_INDEX_OUT_OF_RANGE", "a handle index is not below the handle count", CHAN_SCOPE_FRAME},
	[19] = {"HANDLE_INDEX_OUT_OF_ORDER", "handle indices are not strictly increasing", CHAN_SCOPE_FRAME},
	[20] = {"UNREFERENCED_HANDLE", "a handle of the frame is never referenced", CHAN_SCOPE_FRAME},
	[21] = {"HANDLES_TRUNCATED", "the kernel dropped descriptors in transit (MSG_CTRUNC)", CHAN_SCOPE_FATAL},
	[22] = {"MISATTACHED_HANDLES", "descriptors arrived with a byte other than a frame's first", CHAN_SCOPE_FATAL},
	[23] = {"SELF_SEND", "a connection endpoint cannot travel over itself or its peer", CHAN_SCOPE_LOCAL},
	[24] = {"CONNECTION_CLOSED", "the peer closed the connection", CHAN_SCOPE_FATAL},
	[25] = {"TIMEOUT", "the operation timed out", CHAN_SCOPE_LOCAL},
	[26] = {"WOULD_BLOCK", "the operation would block", CHAN_SCOPE_LOCAL},
	[27] = {"NO_MEMORY", "out of memory", CHAN_SCOPE_LOCAL},
	[28] = {"SYSTEM", "a system call failed (see errno)", CHAN_SCOPE_LOCAL},
	[29] = {"INVALID_ARGUMENT", "invalid argument", CHAN_SCOPE_LOCAL},
	[30] = {"BUFFER_TOO_SMALL", "buffer too small for the encoded frame", CHAN_SCOPE_LOCAL},
	[31] = {"INVALID_KEY", "a map key contains U+0000", CHAN_SCOPE_FRAME},
	[32] = {"INVALID_JSON", "the text is not RFC 8259 JSON", CHAN_SCOPE_LOCAL},
	[33] = {"INVALID_TEXT", "the JSON is not the text form of a value", CHAN_SCOPE_LOCAL},
	[34] = {"NOT_FOUND", "the map has no entry with that key", CHAN_SCOPE_LOCAL},
	[35] = {"WRONG_TYPE", "the value is of another type than the one asked for", CHAN_SCOPE_LOCAL},
	[36] = {"UNSUPPORTED_FEATURE", "a feature is not implemented here or not announced by the peer", CHAN_SCOPE_FRAME},
	[37] = {"CHANNEL_CLOSED", "the channel was closed", CHAN_SCOPE_LOCAL},
	[38] = {"UNKNOWN_CHANNEL", "a frame or channel handle names a channel that is not open", CHAN_SCOPE_FRAME},
	[39] = {"CHANNEL_LIMIT_EXCEEDED", "too many open channels, or too many queued frames", CHAN_SCOPE_FRAME},
	[40] = {"CHANNEL_NOT_TRANSFERABLE", "a channel endpoint cannot leave its connection", CHAN_SCOPE_LOCAL},
};

#define N_ERRORS (sizeof(errors) / sizeof(errors[0]))

static const struct error_info *
lookup(int err)
{
	if (err >= 0 || (unsigned)-err >= N_ERRORS)
		return NULL;
	return &errors[-err];
}

CHAN_EXPORT const char *
chan_errname(int err)
{
	const struct error_info *e = lookup(err);

	if (err == 0)
		return "OK";
	return e ? e->name : NULL;
}

CHAN_EXPORT const char *
chan_strerror(int err)
{
	const struct error_info *e = lookup(err);

	if (err == 0)
		return "success";
	return e ? e->message : "unknown error";
}

CHAN_EXPORT enum chan_error_scope
chan_error_scope(int err)
{
	const struct error_info *e = lookup(err);

	return e ? e->scope : CHAN_SCOPE_NONE;
}

CHAN_EXPORT int
chan_error_from_name(const char *name)
{
	if (!name)
		return 0;
	for (size_t i = 1; i < N_ERRORS; i++)
		if (strcmp(errors[i].name, name) == 0)
			return -(int)i;
	return 0;
}

CHAN_EXPORT const char *
chan_version(void)
{
	return CHAN_VERSION_STRING;
}
