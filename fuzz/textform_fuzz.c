/*
 * textform_fuzz.c - libFuzzer target for the text form (SPEC.md §12) of
 * tools/textform.c: parse -> build -> encode -> decode -> render, and back.
 *
 * Input: a JSON document (any bytes).
 *
 * Invariants:
 *  - a rejected document is rejected with a named error (a registry NAME or
 *    INVALID_JSON / INVALID_TEXT), never a crash or a leak;
 *  - an accepted document builds a value whose frame chan_decode accepts
 *    (with its descriptors) and whose decoded value equals the built one;
 *  - the canonical rendering of the decoded value is the rendering of the
 *    built one, reads back (canonical and pretty alike) to the same frame
 *    bytes, and rendering is idempotent;
 *  - no descriptor is left open.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chan.h"
#include "textform.h"
#include "util.h"

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "textform_fuzz: %s:%d: invariant failed: %s\n", \
				__FILE__, __LINE__, #cond);                    \
			abort();                                               \
		}                                                              \
	} while (0)

static int fd_pool = -1, conn_pool[2] = {-1, -1};

static int
source(void *ctx, enum chan_kind kind, uint32_t index, int *ret_fd, struct tf_error *err)
{
	(void)ctx;
	(void)index;
	(void)err;
	*ret_fd = kind == CHAN_KIND_CONN ? conn_pool[0] : fd_pool;
	return 0;
}

static int
known_name(const char *name)
{
	return name && (chan_error_from_name(name) != 0 ||
			strcmp(name, TF_INVALID_JSON) == 0 ||
			strcmp(name, TF_INVALID_TEXT) == 0);
}

static char *
render(const chan_value *v, int pretty)
{
	char *s = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&s, &n);

	CHECK(f);
	tf_render(f, v, pretty);
	CHECK(fclose(f) == 0);
	return s;
}

/* text -> frame bytes (must succeed). */
static uint8_t *
text_to_frame(const char *text, size_t *ret_len)
{
	struct tf_error err = {0};
	json_t *j = tf_parse_string(text, &err);
	chan_msg *m;
	uint8_t *buf;
	size_t need = 0;

	if (!j) {
		fprintf(stderr, "textform_fuzz: rendered text rejected: %s: %s\n[%s]\n",
			err.name, err.msg, text);
		abort();
	}
	m = chan_msg_new(NULL);
	CHECK(m);
	if (tf_build(m, j, source, NULL, &err) != 0) {
		fprintf(stderr, "textform_fuzz: rendered text not built: %s: %s\n[%s]\n",
			err.name, err.msg, text);
		abort();
	}
	json_decref(j);
	CHECK(chan_encoded_size(m, &need) == 0);
	buf = malloc(need);
	CHECK(buf);
	CHECK(chan_encode(m, buf, need, ret_len) == 0);
	chan_msg_free(m);
	return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tf_error err = {0};
	char *text;
	json_t *j;
	chan_msg *m, *m2 = NULL;
	uint8_t *buf;
	size_t need = 0, len = 0, nh = 0;
	int tab[CHAN_HARD_MAX_HANDLES];
	int dups[CHAN_HARD_MAX_HANDLES];
	int r, before;
	struct chan_limits lim = {0, CHAN_HARD_MAX_HANDLES, 0};

	if (fd_pool < 0) {
		CHECK((fd_pool = eventfd(0, EFD_CLOEXEC)) >= 0);
		CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, conn_pool) == 0);
	}
	before = hu_count_fds();
	text = malloc(size + 1);
	CHECK(text);
	memcpy(text, data, size);
	text[size] = '\0';

	j = tf_parse_string(text, &err);
	free(text);
	if (!j) {
		CHECK(known_name(err.name));
		CHECK(hu_count_fds() == before);
		return 0;
	}
	m = chan_msg_new(NULL);
	CHECK(m);
	if (tf_build(m, j, source, NULL, &err) != 0) {
		if (!known_name(err.name)) {
			fprintf(stderr, "textform_fuzz: unnamed build error %s: %s\n",
				err.name ? err.name : "(null)", err.msg);
			abort();
		}
		/* too many handles for this process is the only system error */
		CHECK(strcmp(err.name, "SYSTEM") != 0 || errno == EMFILE);
		json_decref(j);
		chan_msg_free(m);
		CHECK(hu_count_fds() == before);
		return 0;
	}
	json_decref(j);

	r = chan_encoded_size(m, &need);
	if (r < 0) {
		/* limits of the wire (SPEC.md §8) that JSON does not have */
		CHECK(r == CHAN_E_DEPTH_EXCEEDED || r == CHAN_E_HANDLE_LIMIT_EXCEEDED);
		chan_msg_free(m);
		CHECK(hu_count_fds() == before);
		return 0;
	}
	buf = malloc(need);
	CHECK(buf);
	CHECK(chan_encode(m, buf, need, &len) == 0 && len == need);

	/* the frame decodes, with its descriptors, to the same value */
	nh = hu_handles(m, tab);
	CHECK(nh <= CHAN_HARD_MAX_HANDLES);
	for (size_t i = 0; i < nh; i++)
		CHECK((dups[i] = fcntl(tab[i], F_DUPFD_CLOEXEC, 3)) >= 0);
	/* a channel handle ({"$channel":N}) is read back by a 1.1 decoder */
	r = chan_decode(buf, len, nh ? dups : NULL, nh, CHAN_DECODE_REVISION_1_1, &lim, NULL, &m2,
			NULL);
	if (r != 0) {
		fprintf(stderr, "textform_fuzz: frame of a built value rejected: %s\n",
			chan_errname(r));
		abort();
	}
	CHECK(hu_value_equal(chan_msg_root(m), chan_msg_root(m2)));

	/* renderings agree and read back to the same frame */
	{
		char *t1 = render(chan_msg_root(m), 0);
		char *t2 = render(chan_msg_root(m2), 0);
		char *tp = render(chan_msg_root(m2), 1);
		size_t l1 = 0, lp = 0;
		uint8_t *b1, *bp;

		CHECK(strcmp(t1, t2) == 0);
		b1 = text_to_frame(t1, &l1);
		CHECK(l1 == len && memcmp(b1, buf, len) == 0);
		bp = text_to_frame(tp, &lp);
		CHECK(lp == len && memcmp(bp, buf, len) == 0);
		/* idempotent: render(read(render(x))) == render(x) */
		{
			struct tf_error e2 = {0};
			json_t *j2 = tf_parse_string(t1, &e2);
			chan_msg *m3 = chan_msg_new(NULL);
			char *t3;
			size_t n3 = 0;

			CHECK(j2 && m3 && tf_build(m3, j2, source, NULL, &e2) == 0);
			/* handle indices are assigned by encoding */
			CHECK(chan_encoded_size(m3, &n3) == 0 && n3 == len);
			t3 = render(chan_msg_root(m3), 0);
			CHECK(strcmp(t3, t1) == 0);
			free(t3);
			json_decref(j2);
			chan_msg_free(m3);
		}
		free(b1);
		free(bp);
		free(t1);
		free(t2);
		free(tp);
	}
	chan_msg_free(m2);
	for (size_t i = 0; i < nh; i++)
		CHECK(!hu_fd_is_open(dups[i]));
	chan_msg_free(m);
	free(buf);
	CHECK(hu_count_fds() == before);
	return 0;
}
