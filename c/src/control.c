/*
 * control.c - the control messages of revision 1.1 as the codec sees them
 * (SPEC.md §16.2, §17.1, §17.2): what a control frame's value must be, what
 * a HELLO announces.  Shared by the buffer decoder (chan_decode with
 * CHAN_DECODE_REVISION_1_1) and the connection (channel.c), which then acts
 * on the message.  Pure functions of a decoded message: no descriptor, no
 * system call.
 */
#include <string.h>

#include "internal.h"

unsigned
chan__feature_bit(const char *name, size_t len)
{
	if (len == 7 && !memcmp(name, "epitaph", 7))
		return CHAN_FEATURE_EPITAPH;
	if (len == 8 && !memcmp(name, "channels", 8))
		return CHAN_FEATURE_CHANNELS;
	return 0;
}

const char *
chan__control_op(chan_msg *msg, size_t *ret_len)
{
	chan_value *root = chan_msg_root(msg);
	const char *op;

	if (chan_value_type(root) != CHAN_MAP || !chan_value_count(root))
		return NULL;
	if (strcmp(chan_map_key_at(root, 0, NULL), "op") != 0 ||
	    chan_value_get_string(chan_value_at(root, 0), &op, ret_len) < 0)
		return NULL;
	return op;
}

int
chan__hello_parse(chan_msg *msg, unsigned *ret_features, bool *ret_unmet)
{
	chan_value *root = chan_msg_root(msg), *f = NULL, *req = NULL;
	unsigned features = 0;
	bool unmet = false;

	if (chan_map_get_value(root, "features", &f) < 0 || chan_value_type(f) != CHAN_MAP)
		return -1;
	for (size_t i = 0; i < chan_value_count(f); i++) {
		size_t n;
		const char *k = chan_map_key_at(f, i, &n);

		features |= chan__feature_bit(k, n);
	}
	if (chan_map_get_value(root, "require", &req) == 0) {
		if (chan_value_type(req) != CHAN_LIST)
			return -1;
		for (size_t i = 0; i < chan_value_count(req); i++) {
			const char *s;
			size_t n;

			if (chan_value_get_string(chan_value_at(req, i), &s, &n) < 0)
				return -1;
			if (!chan__feature_bit(s, n))
				unmet = true;
		}
	}
	*ret_features = features;
	*ret_unmet = unmet;
	return 0;
}

static bool
op_is(const char *op, size_t n, const char *name)
{
	return n == strlen(name) && !memcmp(op, name, n);
}

int
chan__control_check(const struct chan_header *h, chan_msg *msg)
{
	size_t n = 0;
	const char *op = chan__control_op(msg, &n);
	chan_value *cv;
	bool crit = false;
	unsigned f;
	bool unmet;

	if (h->handle_count || !op) /* §17.2 rules 1-2 */
		return CHAN_E_UNSUPPORTED_FEATURE;
	if ((h->flags & CHAN__FLAG_END) && !op_is(op, n, "close")) /* §17.1 rule 1 */
		return CHAN_E_RESERVED_FIELD_NONZERO;
	if (op_is(op, n, "hello")) /* §16.2 rule 5 */
		return h->channel || chan__hello_parse(msg, &f, &unmet) < 0
			       ? CHAN_E_UNSUPPORTED_FEATURE
			       : 0;
	if (op_is(op, n, "epitaph"))
		return h->channel ? CHAN_E_UNSUPPORTED_FEATURE : 0;
	if (op_is(op, n, "close"))
		return !h->channel || !(h->flags & CHAN__FLAG_END) ? CHAN_E_UNSUPPORTED_FEATURE : 0;
	/* §17.2 rule 3: an unknown operation is ignored unless critical */
	if (chan_map_get_value(chan_msg_root(msg), "critical", &cv) == 0)
		chan_value_get_bool(cv, &crit);
	return crit ? CHAN_E_UNSUPPORTED_FEATURE : 0;
}
