/*
 * ref.h - an independent reference of chan/1 frame validation, written from
 * SPEC.md §5-§9 alone (not from c/src/decode.c), used by the fuzz targets
 * as a differential oracle: for every input, libchan's chan_decode must
 * report exactly the error this reference predicts (or succeed when it
 * does).
 *
 * It decides the first failing rule in the order of SPEC.md §9.3 and §7.3.
 * It builds no values.
 */
#ifndef CHAN_FUZZ_REF_H
#define CHAN_FUZZ_REF_H

#include <stddef.h>
#include <stdint.h>

#include "chan.h"

struct ref_input {
	const uint8_t *buf;
	size_t len;
	struct chan_limits limits; /* effective limits (defaults filled in) */
	int detached;              /* no descriptors; handle-count rules only */
	size_t nfds;               /* descriptors delivered (ignored if detached) */
	/* is_conn_ok(ctx, i): 1 if delivered descriptor i passes the conn
	 * check of SPEC.md §4.2 rule 2. */
	int (*is_conn_ok)(void *ctx, size_t i);
	void *ctx;
};

/* 0 if the frame is valid, else the CHAN_E_* code SPEC.md prescribes.
 * *ret_frame_len gets 16 + payload_length when the header could be read. */
int ref_decode(const struct ref_input *in, size_t *ret_frame_len);

#endif
