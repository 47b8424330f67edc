/*
 * transport_test.c - the receive path against a raw peer (SPEC.md §10.2-§10.5):
 * frames written with the test's own sendmsg, split at every byte, cut off
 * at every byte, with descriptors on the wrong byte or in the wrong number,
 * and with the kernel truncating descriptors at RLIMIT_NOFILE.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "helpers.h"
#include "peer.h"

/* Wait this long at most where something is expected (no test waits for
 * it unless a bug makes it hang). */
#define LONG_MS 5000

/* A raw socket (the peer) and a chan connection on the other end. */
struct rig {
	int raw;
	chan_conn *c;
	int pipe[2]; /* files whose descriptors travel */
};

static void
rig_open(struct rig *r)
{
	int sv[2];

	tp_socketpair(sv);
	r->raw = sv[0];
	CU_ASSERT_FATAL(chan_conn_move_from_fd(sv[1], &r->c) == 0);
	chan_test_pipes(r->pipe, 1);
}

static void
rig_close(struct rig *r)
{
	if (r->raw >= 0)
		close(r->raw);
	chan_conn_free(r->c);
	close(r->pipe[0]);
	close(r->pipe[1]);
}

/* Receive one frame and check it is tp_sample(seq, pad, fds[0..nfds)). */
static void
expect_sample(chan_conn *c, int64_t seq, size_t pad, const int *fds, size_t nfds)
{
	chan_msg *m = NULL;
	int r = chan_conn_recv(c, LONG_MS, &m);

	CU_ASSERT_EQUAL(r, 0);
	if (r == 0)
		CU_ASSERT(tp_sample_ok(m, seq, pad, fds, nfds));
	chan_msg_free(m);
}

static void
expect_error(chan_conn *c, int err)
{
	chan_msg *m = NULL;
	int r = chan_conn_recv(c, LONG_MS, &m);

	if (r != err)
		fprintf(stderr, "\nexpected %s, got %s\n", chan_errname(err),
			chan_errname(r));
	CU_ASSERT_EQUAL(r, err);
	CU_ASSERT_PTR_NULL(m);
	if (r == 0)
		chan_msg_free(m);
}

/* The whole frame, its first byte alone (with the fds), then one byte per
 * write; between writes the receiver finds the frame incomplete. */
static void
test_byte_at_a_time(void)
{
	struct rig r;
	size_t len;
	uint8_t *f = tp_sample_frame(1, 40, 2, &len);
	chan_msg *m = NULL;
	int fds[2];

	CU_ASSERT_FATAL(f != NULL);
	rig_open(&r);
	fds[0] = r.pipe[0];
	fds[1] = r.pipe[1];
	CU_ASSERT(tp_send_raw(r.raw, f, 1, fds, 2) == 0);
	for (size_t i = 1; i < len; i++) {
		CU_ASSERT_EQUAL(chan_conn_recv(r.c, 0, &m), CHAN_E_WOULD_BLOCK);
		CU_ASSERT(tp_send_raw(r.raw, f + i, 1, NULL, 0) == 0);
	}
	expect_sample(r.c, 1, 40, fds, 2);
	CU_ASSERT_EQUAL(chan_conn_recv(r.c, 0, &m), CHAN_E_WOULD_BLOCK);
	rig_close(&r);
	free(f);
}

/* A frame split in two writes at every offset, the fds with the first part;
 * on even offsets the receiver reads the first part before the second is
 * written.  One connection for all: it stays in sync. */
static void
test_split_at_every_offset(void)
{
	struct rig r;
	size_t len;
	uint8_t *f = tp_sample_frame(2, 30, 2, &len);
	chan_msg *m = NULL;
	int fds[2];

	CU_ASSERT_FATAL(f != NULL);
	rig_open(&r);
	fds[0] = r.pipe[0];
	fds[1] = r.pipe[1];
	for (size_t k = 1; k < len; k++) {
		CU_ASSERT(tp_send_raw(r.raw, f, k, fds, 2) == 0);
		if (k % 2 == 0)
			CU_ASSERT_EQUAL(chan_conn_recv(r.c, 0, &m), CHAN_E_WOULD_BLOCK);
		CU_ASSERT(tp_send_raw(r.raw, f + k, len - k, NULL, 0) == 0);
		expect_sample(r.c, 2, 30, fds, 2);
	}
	rig_close(&r);
	free(f);
}

/* Frames with and without fds written back to back before the receiver
 * reads; three fd-less frames even in a single write, followed by a frame
 * with fds (Linux may return plain bytes and the next fd-bearing segment in
 * one read: the receiver must not read past a frame's end). */
static void
test_back_to_back(void)
{
	struct rig r;
	uint8_t *f[8], *joined;
	size_t len[8], total = 0;
	int fds[2];

	rig_open(&r);
	fds[0] = r.pipe[0];
	fds[1] = r.pipe[1];
	for (int i = 0; i < 8; i++) {
		f[i] = tp_sample_frame(i, (size_t)i * 7, i % 2 ? 2 : 0, &len[i]);
		CU_ASSERT_FATAL(f[i] != NULL);
	}
	for (int i = 0; i < 8; i++)
		CU_ASSERT(tp_send_raw(r.raw, f[i], len[i], fds, i % 2 ? 2 : 0) == 0);
	for (int i = 0; i < 8; i++)
		expect_sample(r.c, i, (size_t)i * 7, fds, i % 2 ? 2 : 0);

	/* frames 0, 2, 4 in one write, then 1 (with fds), then 6, then 3. */
	total = len[0] + len[2] + len[4];
	joined = malloc(total);
	CU_ASSERT_FATAL(joined != NULL);
	memcpy(joined, f[0], len[0]);
	memcpy(joined + len[0], f[2], len[2]);
	memcpy(joined + len[0] + len[2], f[4], len[4]);
	CU_ASSERT(tp_send_raw(r.raw, joined, total, NULL, 0) == 0);
	CU_ASSERT(tp_send_raw(r.raw, f[1], len[1], fds, 2) == 0);
	CU_ASSERT(tp_send_raw(r.raw, f[6], len[6], NULL, 0) == 0);
	CU_ASSERT(tp_send_raw(r.raw, f[3], len[3], fds, 2) == 0);
	expect_sample(r.c, 0, 0, fds, 0);
	expect_sample(r.c, 2, 14, fds, 0);
	expect_sample(r.c, 4, 28, fds, 0);
	expect_sample(r.c, 1, 7, fds, 2);
	expect_sample(r.c, 6, 42, fds, 0);
	expect_sample(r.c, 3, 21, fds, 2);
	free(joined);
	for (int i = 0; i < 8; i++)
		free(f[i]);
	rig_close(&r);
}

/* The peer closes after every prefix of a frame: CONNECTION_CLOSED at the
 * boundary, TRUNCATED inside, the fds that came closed, the error sticky. */
static void
test_peer_closes_at_every_offset(void)
{
	size_t len;
	uint8_t *f = tp_sample_frame(3, 20, 2, &len);
	int before = chan_test_count_fds();

	CU_ASSERT_FATAL(f != NULL);
	for (size_t k = 0; k <= len; k++) {
		struct rig r;
		int fds[2];

		rig_open(&r);
		fds[0] = r.pipe[0];
		fds[1] = r.pipe[1];
		if (k)
			CU_ASSERT(tp_send_raw(r.raw, f, k, fds, 2) == 0);
		close(r.raw);
		r.raw = -1;
		if (k == len) {
			expect_sample(r.c, 3, 20, fds, 2);
			expect_error(r.c, CHAN_E_CONNECTION_CLOSED);
		} else {
			int want = k ? CHAN_E_TRUNCATED : CHAN_E_CONNECTION_CLOSED;

			expect_error(r.c, want);
			expect_error(r.c, want); /* sticky */
		}
		rig_close(&r);
		CU_ASSERT_EQUAL(chan_test_count_fds(), before);
	}
	free(f);
}

/* A real process dies (SIGKILL) after writing part of a frame, or all of
 * it; the receiver is blocked in recv meanwhile or reads afterwards. */
static void
test_peer_process_dies(void)
{
	size_t len;
	uint8_t *f = tp_sample_frame(4, 100, 3, &len);
	size_t cut[] = {1, 8, 16, 17, 0, 0};

	CU_ASSERT_FATAL(f != NULL);
	cut[4] = len - 1;
	cut[5] = len;
	for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++) {
		struct rig r;
		int fds[3];
		pid_t pid;

		rig_open(&r);
		fds[0] = r.pipe[0];
		fds[1] = r.pipe[1];
		fds[2] = r.pipe[0];
		pid = tp_fork();
		CU_ASSERT_FATAL(pid >= 0);
		if (pid == 0) {
			chan_conn_free(r.c);
			if (i % 2)
				usleep(20000); /* let the parent block in recv */
			TP_CHECK(tp_send_raw(r.raw, f, cut[i], fds, 3) == 0);
			kill(getpid(), SIGKILL);
			_exit(1);
		}
		close(r.raw);
		r.raw = -1;
		if (cut[i] == len) {
			expect_sample(r.c, 4, 100, fds, 3);
			expect_error(r.c, CHAN_E_CONNECTION_CLOSED);
		} else {
			expect_error(r.c, CHAN_E_TRUNCATED);
		}
		CU_ASSERT_EQUAL(tp_wait(pid), 128 + SIGKILL);
		rig_close(&r);
	}
	free(f);
}

/* Descriptors attached to a byte after the frame's first: inside the
 * header after the receiver has read its start, and on the payload.
 * MISATTACHED_HANDLES, fatal, everything closed. */
static void
test_misattached(void)
{
	size_t len;
	uint8_t *f = tp_sample_frame(5, 10, 2, &len);
	size_t at[] = {8, 15, CHAN_HEADER_SIZE, CHAN_HEADER_SIZE + 3, 0};

	CU_ASSERT_FATAL(f != NULL);
	at[4] = len - 1;
	for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
		struct rig r;
		chan_msg *m = NULL;
		int fds[2];

		rig_open(&r);
		fds[0] = r.pipe[0];
		fds[1] = r.pipe[1];
		/* The first part plain, read by the receiver, then the rest with
		 * the fds (a read never returns bytes of two fd-bearing writes,
		 * but it may merge a plain write with a following fd-bearing one:
		 * reading first pins the fds to byte at[i]). */
		CU_ASSERT(tp_send_raw(r.raw, f, at[i], NULL, 0) == 0);
		CU_ASSERT_EQUAL(chan_conn_recv(r.c, 0, &m), CHAN_E_WOULD_BLOCK);
		CU_ASSERT(tp_send_raw(r.raw, f + at[i], len - at[i], fds, 2) == 0);
		expect_error(r.c, CHAN_E_MISATTACHED_HANDLES);
		expect_error(r.c, CHAN_E_MISATTACHED_HANDLES);
		rig_close(&r);
	}
	free(f);
}

/* The header declares one count, another number of fds arrives: the frame
 * is rejected with its fds closed, and the next frame arrives intact with
 * its own fds (never the previous frame's). */
static void
test_wrong_number_of_fds(void)
{
	static const struct {
		size_t declared, sent;
		int err;
	} cases[] = {
		{1, 0, CHAN_E_TOO_FEW_HANDLES},
		{1, 2, CHAN_E_TOO_MANY_HANDLES},
		{2, 1, CHAN_E_TOO_FEW_HANDLES},
		{0, 1, CHAN_E_TOO_MANY_HANDLES},
		{0, 3, CHAN_E_TOO_MANY_HANDLES},
		{3, 0, CHAN_E_TOO_FEW_HANDLES},
	};
	struct rig r;
	int other[2];
	int before;

	rig_open(&r);
	chan_test_pipes(other, 1);
	before = chan_test_count_fds();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len, glen;
		uint8_t *bad = tp_sample_frame(10, 5, cases[i].declared, &len);
		uint8_t *good = tp_sample_frame(11, 6, 1, &glen);
		int fds[3] = {r.pipe[0], r.pipe[1], r.pipe[0]};

		CU_ASSERT_FATAL(bad && good);
		CU_ASSERT(tp_send_raw(r.raw, bad, len, fds, cases[i].sent) == 0);
		CU_ASSERT(tp_send_raw(r.raw, good, glen, other + 1, 1) == 0);
		expect_error(r.c, cases[i].err);
		expect_sample(r.c, 11, 6, other + 1, 1);
		CU_ASSERT_EQUAL(chan_test_count_fds(), before);
		free(bad);
		free(good);
	}
	close(other[0]);
	close(other[1]);
	rig_close(&r);
}

/* Frame-scope header and payload errors: the payload is consumed, the fds
 * closed, the next frame arrives intact. */
static void
test_frame_scope_errors(void)
{
	struct rig r;
	size_t len, glen, biglen;
	uint8_t *f = tp_sample_frame(20, 9, 2, &len);
	uint8_t *good = tp_sample_frame(21, 3, 2, &glen);
	uint8_t *big = tp_sample_frame(22, 0, 65, &biglen);
	int fds[65];
	int before;

	CU_ASSERT_FATAL(f && good && big);
	rig_open(&r);
	for (int i = 0; i < 65; i++)
		fds[i] = r.pipe[i % 2];
	before = chan_test_count_fds();

	for (int which = 0; which < 4; which++) {
		uint8_t *bad = malloc(len);
		int err = CHAN_E_RESERVED_FIELD_NONZERO;

		CU_ASSERT_FATAL(bad != NULL);
		memcpy(bad, f, len);
		if (which == 0)
			bad[5] = 0x01; /* flags */
		else if (which == 1)
			bad[11] = 0x80; /* channel */
		else if (which == 2) {
			bad[CHAN_HEADER_SIZE] = 0x00; /* tag with field number 0 */
			err = CHAN_E_MALFORMED;
		} else {
			bad[CHAN_HEADER_SIZE] = 0x50; /* field 10 of Value */
			err = CHAN_E_UNKNOWN_FIELD;
		}
		CU_ASSERT(tp_send_raw(r.raw, bad, len, fds, 2) == 0);
		CU_ASSERT(tp_send_raw(r.raw, good, glen, fds, 2) == 0);
		expect_error(r.c, err);
		expect_sample(r.c, 21, 3, fds, 2);
		CU_ASSERT_EQUAL(chan_test_count_fds(), before);
		free(bad);
	}

	/* 65 handles against the default limit of 64. */
	CU_ASSERT(tp_send_raw(r.raw, big, biglen, fds, 65) == 0);
	CU_ASSERT(tp_send_raw(r.raw, good, glen, fds, 2) == 0);
	expect_error(r.c, CHAN_E_HANDLE_LIMIT_EXCEEDED);
	expect_sample(r.c, 21, 3, fds, 2);
	CU_ASSERT_EQUAL(chan_test_count_fds(), before);
	rig_close(&r);
	free(f);
	free(good);
	free(big);
}

/* Fatal header errors: decided before the payload is read (it stays in
 * the socket), fds closed, the error sticky. */
static void
test_fatal_header_errors(void)
{
	size_t len;
	uint8_t *f = tp_sample_frame(30, 60000, 2, &len);

	CU_ASSERT_FATAL(f != NULL);
	/* The header is checked before the payload is read: at most a
	 * bounded read-ahead of it is consumed (SPEC.md §8.1, §10.3). */
	for (int which = 0; which < 3; which++) {
		struct rig r;
		uint8_t *bad = malloc(len);
		int err, fds[2], unread = -1;

		CU_ASSERT_FATAL(bad != NULL);
		memcpy(bad, f, len);
		rig_open(&r);
		fds[0] = r.pipe[0];
		fds[1] = r.pipe[1];
		if (which == 0) {
			bad[0] = 'c';
			err = CHAN_E_BAD_MAGIC;
		} else if (which == 1) {
			bad[4] = 2;
			err = CHAN_E_UNSUPPORTED_VERSION;
		} else {
			struct chan_limits lim = {.max_payload = 100};

			CU_ASSERT(chan_conn_set_limits(r.c, &lim) == 0);
			err = CHAN_E_PAYLOAD_TOO_LARGE;
		}
		CU_ASSERT(tp_send_raw(r.raw, bad, len, fds, 2) == 0);
		expect_error(r.c, err);
		CU_ASSERT(ioctl(chan_conn_borrow_fd(r.c), FIONREAD, &unread) == 0);
		CU_ASSERT((size_t)unread + CHAN_HEADER_SIZE + 4096 >= len);
		CU_ASSERT((size_t)unread < len);
		expect_error(r.c, err);
		rig_close(&r);
		free(bad);
	}
	free(f);
}

/* The kernel drops descriptors the receiver cannot hold (RLIMIT_NOFILE) and
 * sets MSG_CTRUNC: HANDLES_TRUNCATED, every fd that did arrive closed.  In a
 * child, which lowers its own limit. */
static void
test_rlimit_truncates_fds(void)
{
	pid_t pid = tp_fork();

	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		chan_conn *a, *b;
		chan_msg *m = NULL;
		int p[2], fds[40], limit = 0, before;
		struct rlimit rl;

		TP_CHECK(chan_conn_pair(&a, &b) == 0);
		TP_CHECK(pipe2(p, O_CLOEXEC) == 0);
		for (int i = 0; i < 40; i++)
			fds[i] = p[i % 2];
		m = tp_sample(40, 8, fds, 40);
		TP_CHECK(m && chan_conn_send(a, m, LONG_MS) == 0);
		chan_msg_free(m);
		before = chan_test_count_fds();
		/* A limit with room for 5 new fds: the 5th free slot + 1
		 * (fds already open above a limit stay usable). */
		for (int fd = 0, free_slots = 0; free_slots < 5; fd++) {
			if (fcntl(fd, F_GETFD) < 0)
				free_slots++;
			limit = fd + 1;
		}
		TP_CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
		rl.rlim_cur = (rlim_t)limit;
		TP_CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
		TP_CHECK(chan_conn_recv(b, LONG_MS, &m) == CHAN_E_HANDLES_TRUNCATED);
		TP_CHECK(chan_test_count_fds() == before);
		TP_CHECK(chan_conn_recv(b, 0, &m) == CHAN_E_HANDLES_TRUNCATED);
		chan_conn_free(a);
		chan_conn_free(b);
		close(p[0]);
		close(p[1]);
		_exit(0);
	}
	CU_ASSERT_EQUAL(tp_wait(pid), 0);
}

/* A frame carrying the receiver's own socket as a conn: SELF_SEND, frame
 * scope.  As an fd handle the spec does not forbid it. */
static void
test_self_send_received(void)
{
	struct rig r;
	chan_msg *m, *got = NULL;
	chan_value *root;
	uint8_t *f = NULL;
	size_t len = 0, nfds = 0;
	const int *fds;
	int before;

	rig_open(&r);
	before = chan_test_count_fds();
	for (int kind = CHAN_KIND_CONN; kind >= CHAN_KIND_FD; kind--) {
		m = chan_msg_new(NULL);
		root = chan_map(m);
		chan_map_put(root, "me", chan_handle_copy(m, kind, chan_conn_borrow_fd(r.c)));
		CU_ASSERT_FATAL(chan_msg_set_root(m, root) == 0);
		CU_ASSERT_FATAL(chan_test_encode(m, &f, &len) == 0);
		fds = tv_handles(m, &nfds);
		CU_ASSERT_FATAL(nfds == 1);
		CU_ASSERT(tp_send_raw(r.raw, f, len, fds, 1) == 0);
		chan_msg_free(m);
		free(f);
		if (kind == CHAN_KIND_CONN) {
			int pfd[1] = {r.pipe[1]};
			uint8_t *g = tp_sample_frame(50, 1, 1, &len);

			expect_error(r.c, CHAN_E_SELF_SEND);
			CU_ASSERT(tp_send_raw(r.raw, g, len, pfd, 1) == 0);
			expect_sample(r.c, 50, 1, pfd, 1);
			free(g);
		} else {
			CU_ASSERT_EQUAL(chan_conn_recv(r.c, LONG_MS, &got), 0);
			root = chan_msg_root(got);
			CU_ASSERT(tp_same_file(tv_fd(chan_map_get(root, "me")),
					       chan_conn_borrow_fd(r.c)));
			chan_msg_free(got);
		}
		CU_ASSERT_EQUAL(chan_test_count_fds(), before);
	}
	rig_close(&r);
}

/* Freeing a connection in the middle of a frame closes the fds that came
 * with its first part. */
static void
test_free_drops_partial_frame(void)
{
	struct rig r;
	size_t len;
	uint8_t *f = tp_sample_frame(60, 10, 2, &len);
	chan_msg *m = NULL;
	int fds[2], before;

	CU_ASSERT_FATAL(f != NULL);
	rig_open(&r);
	fds[0] = r.pipe[0];
	fds[1] = r.pipe[1];
	before = chan_test_count_fds();
	CU_ASSERT(tp_send_raw(r.raw, f, 20, fds, 2) == 0);
	CU_ASSERT_EQUAL(chan_conn_recv(r.c, 0, &m), CHAN_E_WOULD_BLOCK);
	CU_ASSERT_EQUAL(chan_test_count_fds(), before + 2); /* held by c */
	rig_close(&r);
	free(f);
}

/* SPEC.md §10.3: one read may return the rest of a frame and the first
 * bytes of later ones; the descriptors it returns belong to the last frame
 * whose first byte it returned.  Frames with and without descriptors, all
 * queued before the receiver reads, each get exactly their own. */
static void
test_read_ahead_attributes_descriptors(void)
{
	struct rig r;
	size_t la, lb, lc, ld;
	uint8_t *fa = tp_sample_frame(40, 10, 0, &la), *fb = tp_sample_frame(41, 20, 2, &lb);
	uint8_t *fc = tp_sample_frame(42, 5, 0, &lc), *fd = tp_sample_frame(43, 7, 1, &ld);
	int fds[2];

	CU_ASSERT_FATAL(fa && fb && fc && fd);
	rig_open(&r);
	fds[0] = r.pipe[0];
	fds[1] = r.pipe[1];
	for (int round = 0; round < 3; round++) {
		CU_ASSERT(tp_send_raw(r.raw, fa, la, NULL, 0) == 0);
		CU_ASSERT(tp_send_raw(r.raw, fb, lb, fds, 2) == 0);
		CU_ASSERT(tp_send_raw(r.raw, fc, lc, NULL, 0) == 0);
		CU_ASSERT(tp_send_raw(r.raw, fd, ld, fds + 1, 1) == 0);
		expect_sample(r.c, 40, 10, NULL, 0);
		expect_sample(r.c, 41, 20, fds, 2);
		expect_sample(r.c, 42, 5, NULL, 0);
		expect_sample(r.c, 43, 7, fds + 1, 1);
	}
	rig_close(&r);
	free(fa);
	free(fb);
	free(fc);
	free(fd);
}

CU_TestInfo transport_tests[] = {
	{"read_ahead_attributes_descriptors", test_read_ahead_attributes_descriptors},
	{"byte_at_a_time", test_byte_at_a_time},
	{"split_at_every_offset", test_split_at_every_offset},
	{"back_to_back", test_back_to_back},
	{"peer_closes_at_every_offset", test_peer_closes_at_every_offset},
	{"peer_process_dies", test_peer_process_dies},
	{"misattached", test_misattached},
	{"wrong_number_of_fds", test_wrong_number_of_fds},
	{"frame_scope_errors", test_frame_scope_errors},
	{"fatal_header_errors", test_fatal_header_errors},
	{"rlimit_truncates_fds", test_rlimit_truncates_fds},
	{"self_send_received", test_self_send_received},
	{"free_drops_partial_frame", test_free_drops_partial_frame},
	CU_TEST_INFO_NULL,
};
