/*
 * codec_oracle - libchan's verdict on frames, for the Python binding's
 * differential tests (python/tests/test_codec_oracle.py).
 *
 * stdin: one frame per line: "<max_payload> <max_handles> <max_depth> <hex>"
 * (a limit of 0 means the default).  Each frame is decoded DETACHED (no
 * descriptors; every index rule still applies) and, when it decodes,
 * re-encoded.  stdout, one line per input line:
 *   "OK <hex of the re-encoded frame>"  or  "ERR <NAME>".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chan.h"

static int
unhex(const char *s, unsigned char *out, size_t *ret_len)
{
	size_t n = strlen(s), i;

	if (n % 2)
		return -1;
	for (i = 0; i < n / 2; i++) {
		unsigned v;

		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (unsigned char)v;
	}
	*ret_len = n / 2;
	return 0;
}

int
main(void)
{
	static char line[1 << 22];
	static unsigned char frame[1 << 21], again[1 << 21];

	while (fgets(line, sizeof(line), stdin)) {
		struct chan_limits lim = {0};
		char hex[sizeof(line)];
		unsigned long mp, mh, md;
		size_t len = 0, olen = 0;
		chan_msg *msg = NULL;
		int r;

		line[strcspn(line, "\n")] = '\0';
		hex[0] = '\0';
		if (sscanf(line, "%lu %lu %lu %s", &mp, &mh, &md, hex) < 3) {
			printf("BAD input\n");
			continue;
		}
		lim.max_payload = (uint32_t)mp;
		lim.max_handles = (uint32_t)mh;
		lim.max_depth = (uint32_t)md;
		if (unhex(hex, frame, &len) < 0) {
			printf("BAD hex\n");
			continue;
		}
		r = chan_decode(frame, len, NULL, 0, CHAN_DECODE_DETACHED, &lim, NULL, &msg, NULL);
		if (r == 0)
			r = chan_encode(msg, again, sizeof(again), &olen);
		if (r < 0) {
			printf("ERR %s\n", chan_errname(r));
		} else {
			printf("OK ");
			for (size_t i = 0; i < olen; i++)
				printf("%02x", again[i]);
			printf("\n");
		}
		chan_msg_free(msg);
		fflush(stdout);
	}
	return 0;
}
