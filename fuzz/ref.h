/*
 * ref.h - an independent reference of chan/1 frame validation, written from
 * SPEC.md §5-§9 and, for revision 1.1, §5.2, §7.3, §9.3, §17.1, §18.1 and
 * §18.2 alone (not from c/src/decode.c or c/src/header.c), used by the fuzz targets
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
	/* Revision 1.1 (SPEC.md §16-§18): a decoder that accepts what 1.1
	 * defines, as a receiver that has the peer's HELLO and implements
	 * `channels` does (libchan: CHAN_DECODE_REVISION_1_1).  0: 1.0. */
	int rev11;
};

/* What the reference learnt of a valid frame, for comparing values: the
 * channel handles' ids in walk order, and the handles' kinds in walk order
 * (= index order). */
#define REF_MAX_CHANNELS 4096
struct ref_result {
	size_t nchannels;   /* may exceed REF_MAX_CHANNELS; ids[] holds the first */
	uint32_t ids[REF_MAX_CHANNELS];
	size_t nhandles;
	uint8_t kinds[CHAN_HARD_MAX_HANDLES];
};

/* 0 if the frame is valid, else the CHAN_E_* code SPEC.md prescribes.
 * *ret_frame_len gets 16 + payload_length when the header could be read. */
int ref_decode(const struct ref_input *in, size_t *ret_frame_len);
/* As ref_decode; on success (0) *out (may be NULL) describes the value. */
int ref_decode_ex(const struct ref_input *in, size_t *ret_frame_len,
		  struct ref_result *out);

#endif
