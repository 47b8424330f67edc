/*
 * conn_test.c - the connection API across real processes and threads
 * (SPEC.md §10, §11.2): listeners on paths and abstract names, peer
 * credentials, self-send, nested connections three processes deep, request
 * round trips with fresh reply_to pairs, handles that outlive their sender,
 * concurrent senders, non-blocking use under poll, 253 handles.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "helpers.h"
#include "peer.h"

#define LONG_MS 5000

/* ---- small message helpers ---- */

/* {"op": op, "n": n} plus, if conn_fd >= 0, "reply_to": conn handle. */
static chan_msg *
request(const char *op, int64_t n, int conn_fd)
{
	chan_msg *m = chan_msg_new(NULL);
	chan_value *root = chan_map(m);

	chan_map_put(root, "op", chan_string(m, op));
	chan_map_put(root, "n", chan_int(m, n));
	if (conn_fd >= 0)
		chan_map_put(root, "reply_to", chan_handle_copy(m, CHAN_KIND_CONN, conn_fd));
	if (chan_msg_set_root(m, root) < 0)
		return chan_msg_free(m);
	return m;
}

static int64_t
get_n(chan_msg *m)
{
	return tv_int(chan_map_get(chan_msg_root(m), "n"));
}

/* Send and free; 0 or the error. */
static int
send_free(chan_conn *c, chan_msg *m)
{
	int r = m ? chan_conn_send(c, m, LONG_MS) : CHAN_E_NO_MEMORY;

	chan_msg_free(m);
	return r;
}

/* The conn handle under key, as a connection (moved out of m). */
static chan_conn *
take_conn(chan_msg *m, const char *key)
{
	chan_conn *c = NULL;

	if (chan_conn_move_from_value(chan_map_get(chan_msg_root(m), key), &c) < 0)
		return NULL;
	return c;
}

static int
is_nonblocking(int fd)
{
	return (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0;
}

/* ---- tests ---- */

static void
test_pair_round_trip(void)
{
	chan_conn *a, *b;
	chan_msg *m = NULL;
	int p[2];

	CU_ASSERT_FATAL(chan_conn_pair(&a, &b) == 0);
	chan_test_pipes(p, 1);
	CU_ASSERT(chan_test_fd_cloexec(chan_conn_borrow_fd(a)));
	CU_ASSERT(!is_nonblocking(chan_conn_borrow_fd(a)));
	m = tp_sample(1, 3, p, 2);
	CU_ASSERT_FATAL(m != NULL);
	CU_ASSERT_EQUAL(chan_conn_send(a, m, 0), 0);
	chan_msg_free(m);
	m = NULL;
	CU_ASSERT_EQUAL(chan_conn_recv(b, LONG_MS, &m), 0);
	CU_ASSERT(m && tp_sample_ok(m, 1, 3, p, 2));
	chan_msg_free(m);
	/* Both directions. */
	CU_ASSERT_EQUAL(send_free(b, request("ping", 5, -1)), 0);
	m = NULL;
	CU_ASSERT_EQUAL(chan_conn_recv(a, LONG_MS, &m), 0);
	CU_ASSERT_EQUAL(get_n(m), 5);
	chan_msg_free(m);
	CU_ASSERT(!is_nonblocking(chan_conn_borrow_fd(a)) && !is_nonblocking(chan_conn_borrow_fd(b)));
	chan_conn_free(a);
	chan_conn_free(b);
	close(p[0]);
	close(p[1]);
}

static void
test_recv_timeouts(void)
{
	chan_conn *a, *b;
	chan_msg *m = NULL;

	CU_ASSERT_FATAL(chan_conn_pair(&a, &b) == 0);
	CU_ASSERT_EQUAL(chan_conn_recv(b, 0, &m), CHAN_E_WOULD_BLOCK);
	CU_ASSERT_EQUAL(chan_conn_recv(b, 20, &m), CHAN_E_TIMEOUT);
	CU_ASSERT_PTR_NULL(m);
	/* Nothing was lost: the connection still works. */
	CU_ASSERT_EQUAL(send_free(a, request("x", 1, -1)), 0);
	CU_ASSERT_EQUAL(chan_conn_recv(b, 0, &m), 0);
	CU_ASSERT_EQUAL(get_n(m), 1);
	chan_msg_free(m);
	CU_ASSERT_EQUAL(chan_conn_flush(a, 0), 0);
	CU_ASSERT_EQUAL(chan_conn_pending(a), 0);
	chan_conn_free(a);
	chan_conn_free(b);
}

/* A child connects; both sides see each other's credentials. */
static void
listen_connect(const char *name)
{
	chan_listener *l = NULL, *l2 = NULL;
	chan_conn *c = NULL;
	struct chan_peer_cred cred;
	chan_msg *m = NULL;
	pid_t parent = getpid(), pid;

	CU_ASSERT_FATAL(chan_listen(name, &l) == 0);
	CU_ASSERT(chan_test_fd_cloexec(chan_listener_borrow_fd(l)));
	/* The name is taken. */
	errno = 0;
	CU_ASSERT_EQUAL(chan_listen(name, &l2), CHAN_E_SYSTEM);
	CU_ASSERT_EQUAL(errno, EADDRINUSE);
	CU_ASSERT_EQUAL(chan_listener_accept(l, 0, &c), CHAN_E_WOULD_BLOCK);
	CU_ASSERT_EQUAL(chan_listener_accept(l, 10, &c), CHAN_E_TIMEOUT);

	pid = tp_fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		chan_conn *k;

		/* Not chan_listener_free: that would unlink the parent's path. */
		close(chan_listener_borrow_fd(l));
		free(l);
		TP_CHECK(chan_connect(name, &k) == 0);
		TP_CHECK(chan_conn_peer_cred(k, &cred) == 0);
		TP_CHECK(cred.pid == parent && cred.uid == getuid() &&
			 cred.gid == getgid());
		TP_CHECK(chan_conn_recv(k, LONG_MS, &m) == 0);
		TP_CHECK(get_n(m) == 41);
		chan_msg_free(m);
		TP_CHECK(send_free(k, request("answer", 42, -1)) == 0);
		chan_conn_free(k);
		_exit(0);
	}
	CU_ASSERT_EQUAL_FATAL(chan_listener_accept(l, LONG_MS, &c), 0);
	CU_ASSERT(chan_test_fd_cloexec(chan_conn_borrow_fd(c)));
	CU_ASSERT(!is_nonblocking(chan_conn_borrow_fd(c)));
	CU_ASSERT_EQUAL(chan_conn_peer_cred(c, &cred), 0);
	CU_ASSERT_EQUAL(cred.pid, pid);
	CU_ASSERT_EQUAL(cred.uid, getuid());
	CU_ASSERT_EQUAL(cred.gid, getgid());
	CU_ASSERT_EQUAL(send_free(c, request("question", 41, -1)), 0);
	CU_ASSERT_EQUAL(chan_conn_recv(c, LONG_MS, &m), 0);
	CU_ASSERT_EQUAL(get_n(m), 42);
	chan_msg_free(m);
	CU_ASSERT_EQUAL(chan_conn_recv(c, LONG_MS, &m), CHAN_E_CONNECTION_CLOSED);
	CU_ASSERT_EQUAL(tp_wait(pid), 0);
	chan_conn_free(c);
	chan_listener_free(l);
}

static void
test_listen_path(void)
{
	char dir[] = "/tmp/chan-test-XXXXXX", path[64];
	struct stat st;
	chan_conn *c;

	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/sock", dir);
	listen_connect(path);
	/* The listener removed its socket file. */
	CU_ASSERT(stat(path, &st) < 0 && errno == ENOENT);
	errno = 0;
	CU_ASSERT_EQUAL(chan_connect(path, &c), CHAN_E_SYSTEM);
	CU_ASSERT_EQUAL(errno, ENOENT);
	CU_ASSERT(rmdir(dir) == 0);
}

static void
test_listen_abstract(void)
{
	char name[64];
	chan_conn *c;

	snprintf(name, sizeof(name), "@chan-test-%d", (int)getpid());
	listen_connect(name);
	errno = 0;
	CU_ASSERT_EQUAL(chan_connect(name, &c), CHAN_E_SYSTEM);
	CU_ASSERT_EQUAL(errno, ECONNREFUSED);
}

static void
test_bad_arguments(void)
{
	char longname[200];
	chan_listener *l;
	chan_conn *c, *a, *b;
	chan_msg *m;
	struct chan_limits lim = {.max_handles = CHAN_HARD_MAX_HANDLES + 1};
	int p[2];

	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	CU_ASSERT_EQUAL(chan_listen("", &l), CHAN_E_INVALID_ARGUMENT);
	CU_ASSERT_EQUAL(chan_listen(longname, &l), CHAN_E_INVALID_ARGUMENT);
	CU_ASSERT_EQUAL(chan_connect(longname, &c), CHAN_E_INVALID_ARGUMENT);
	/* A pipe is no connection; the fd stays the caller's. */
	chan_test_pipes(p, 1);
	CU_ASSERT_EQUAL(chan_conn_move_from_fd(p[0], &c), CHAN_E_WRONG_HANDLE_KIND);
	CU_ASSERT(chan_test_fd_is_open(p[0]));
	/* A handle of kind fd is no conn, even if it holds a socket. */
	CU_ASSERT_FATAL(chan_conn_pair(&a, &b) == 0);
	m = chan_msg_new(NULL);
	CU_ASSERT_FATAL(chan_msg_set_root(m, chan_handle_copy(m, CHAN_KIND_FD, chan_conn_borrow_fd(a))) == 0);
	CU_ASSERT_EQUAL(chan_conn_move_from_value(chan_msg_root(m), &c), CHAN_E_WRONG_HANDLE_KIND);
	CU_ASSERT(tv_fd(chan_msg_root(m)) >= 0);
	chan_msg_free(m);
	CU_ASSERT_EQUAL(chan_conn_set_limits(a, &lim), CHAN_E_INVALID_ARGUMENT);
	CU_ASSERT_EQUAL(chan_conn_set_limits(a, NULL), 0);
	/* A message whose handle fd was taken cannot be sent. */
	m = chan_msg_new(NULL);
	CU_ASSERT_FATAL(chan_msg_set_root(m, chan_handle_copy(m, CHAN_KIND_FD, p[1])) == 0);
	{
		int fd = -1;

		CU_ASSERT_EQUAL(chan_value_move_fd(chan_msg_root(m), &fd), 0);
		close(fd);
	}
	CU_ASSERT_EQUAL(chan_conn_send(a, m, 0), CHAN_E_INVALID_ARGUMENT);
	chan_msg_free(m);
	CU_ASSERT_EQUAL(chan_conn_recv(b, 0, &m), CHAN_E_WOULD_BLOCK);
	CU_ASSERT_EQUAL(chan_conn_send(a, NULL, 0), CHAN_E_INVALID_ARGUMENT);
	CU_ASSERT_PTR_NULL(chan_conn_free(NULL));
	CU_ASSERT_PTR_NULL(chan_listener_free(NULL));
	chan_conn_free(a);
	chan_conn_free(b);
	close(p[0]);
	close(p[1]);
}

/* chan_conn_handle moves a connection into a message: no dup, the wrapper
 * is gone, the receiver gets a working endpoint; a connection in the middle
 * of a frame is refused and stays the caller's. */
static void
test_conn_handle_moves(void)
{
	chan_conn *a, *b, *reply_to, *answer, *back;
	chan_msg *m, *got;
	chan_value *h;
	int fd;

	CU_ASSERT_FATAL(chan_conn_pair(&a, &b) == 0);
	CU_ASSERT_FATAL(chan_conn_pair(&reply_to, &answer) == 0);
	fd = chan_conn_borrow_fd(answer);
	m = chan_msg_new(NULL);
	h = chan_handle_move_conn(m, &answer);
	CU_ASSERT_PTR_NOT_NULL_FATAL(h);
	CU_ASSERT_PTR_NULL(answer);
	CU_ASSERT_EQUAL(tv_fd(h), fd); /* the very socket, moved */
	CU_ASSERT_EQUAL(chan_value_kind(h), CHAN_KIND_CONN);
	CU_ASSERT_PTR_NULL(chan_handle_move_conn(m, &answer)); /* nothing left to move */
	chan_msg_free(m);
	CU_ASSERT_FALSE(chan_test_fd_is_open(fd)); /* the message closed it */
	chan_conn_free(reply_to);

	/* the seed pattern with a move: one socket less to close */
	CU_ASSERT_FATAL(chan_conn_pair(&reply_to, &answer) == 0);
	m = chan_msg_new(NULL);
	CU_ASSERT_EQUAL(chan_msg_set_root(m, chan_handle_move_conn(m, &answer)), 0);
	CU_ASSERT_EQUAL(send_free(a, m), 0);
	CU_ASSERT_FATAL(chan_conn_recv(b, LONG_MS, &got) == 0);
	CU_ASSERT_EQUAL(chan_conn_move_from_value(chan_msg_root(got), &back), 0);
	chan_msg_free(got);
	CU_ASSERT_EQUAL(send_free(back, request("done", 7, -1)), 0);
	CU_ASSERT_FATAL(chan_conn_recv(reply_to, LONG_MS, &got) == 0);
	CU_ASSERT_EQUAL(get_n(got), 7);
	chan_msg_free(got);
	chan_conn_free(back);
	chan_conn_free(reply_to);

	/* a moved endpoint carries its identity: sending it over its own peer
	 * is still refused, with nothing on the wire */
	{
		chan_conn *x, *y;

		CU_ASSERT_FATAL(chan_conn_pair(&x, &y) == 0);
		m = chan_msg_new(NULL);
		CU_ASSERT_EQUAL(chan_msg_set_root(m, chan_handle_move_conn(m, &y)), 0);
		CU_ASSERT_EQUAL(chan_conn_send(x, m, 0), CHAN_E_SELF_SEND);
		chan_msg_free(m);
		CU_ASSERT_EQUAL(chan_conn_recv(x, 0, &got), CHAN_E_CONNECTION_CLOSED);
		chan_conn_free(x);
	}

	/* mid-frame: half a header received -> refused, conn untouched */
	CU_ASSERT(write(chan_conn_borrow_fd(a), "CHAN\x01", 5) == 5);
	CU_ASSERT_EQUAL(chan_conn_recv(b, 0, &got), CHAN_E_WOULD_BLOCK);
	m = chan_msg_new(NULL);
	CU_ASSERT_PTR_NULL(chan_handle_move_conn(m, &b));
	CU_ASSERT_PTR_NOT_NULL(b);
	CU_ASSERT_EQUAL(chan_msg_error(m), CHAN_E_INVALID_ARGUMENT);
	chan_msg_free(m);
	chan_conn_free(a);
	chan_conn_free(b);
}

/* Large frames: the message takes the receive buffer (its bytes are not
 * copied) and stays intact while later frames are received; frames below
 * the threshold, and frames with no large bytes value, are decoded as
 * usual.  Sizes cross the 256 KiB receive-buffer threshold both ways. */
static void *
big_sender(void *arg)
{
	chan_conn *a = arg;
	static const size_t sizes[] = {300000, 1000, 2 << 20, 300000, 100};

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		chan_msg *m = chan_msg_new(NULL);
		uint8_t *buf = malloc(sizes[i]);

		memset(buf, (int)(i + 1), sizes[i]);
		chan_msg_set_root(m, chan_bytes(m, buf, sizes[i]));
		free(buf);
		if (send_free(a, m) < 0)
			return (void *)1;
	}
	return NULL;
}

static void
test_large_frames_adopt_buffer(void)
{
	static const size_t sizes[] = {300000, 1000, 2 << 20, 300000, 100};
	chan_msg *got[5] = {0};
	chan_conn *a, *b;
	pthread_t t;
	void *ret;

	CU_ASSERT_FATAL(chan_conn_pair(&a, &b) == 0);
	CU_ASSERT_FATAL(pthread_create(&t, NULL, big_sender, a) == 0);
	for (int i = 0; i < 5; i++)
		CU_ASSERT_EQUAL(chan_conn_recv(b, LONG_MS, &got[i]), 0);
	pthread_join(t, &ret);
	CU_ASSERT_PTR_NULL(ret);
	/* every message still holds its own bytes after the later frames */
	for (int i = 0; i < 5; i++) {
		size_t n = 0;
		const uint8_t *p = tv_bytes(chan_msg_root(got[i]), &n);
		int same = p != NULL && n == sizes[i];

		for (size_t k = 0; same && k < n; k++)
			same = p[k] == i + 1;
		CU_ASSERT(same);
		chan_msg_free(got[i]);
	}
	chan_conn_free(a);
	chan_conn_free(b);
}

/* Sending a connection over itself or over its own peer: SELF_SEND, and
 * nothing reaches the wire.  For a pair both ends are known; for accepted
 * and connected sockets the peer comes from sock_diag. */
static void
check_self_send(chan_conn *a, chan_conn *b)
{
	chan_conn *x, *y;
	chan_msg *m = NULL;

	CU_ASSERT_EQUAL(send_free(a, request("me", 1, chan_conn_borrow_fd(a))), CHAN_E_SELF_SEND);
	CU_ASSERT_EQUAL(send_free(a, request("peer", 2, chan_conn_borrow_fd(b))), CHAN_E_SELF_SEND);
	CU_ASSERT_EQUAL(send_free(b, request("me", 3, chan_conn_borrow_fd(b))), CHAN_E_SELF_SEND);
	CU_ASSERT_EQUAL(send_free(b, request("peer", 4, chan_conn_borrow_fd(a))), CHAN_E_SELF_SEND);
	CU_ASSERT_EQUAL(chan_conn_recv(b, 0, &m), CHAN_E_WOULD_BLOCK);
	CU_ASSERT_EQUAL(chan_conn_recv(a, 0, &m), CHAN_E_WOULD_BLOCK);
	/* Another connection travels fine. */
	CU_ASSERT_FATAL(chan_conn_pair(&x, &y) == 0);
	CU_ASSERT_EQUAL(send_free(a, request("other", 5, chan_conn_borrow_fd(x))), 0);
	CU_ASSERT_EQUAL(chan_conn_recv(b, LONG_MS, &m), 0);
	CU_ASSERT_EQUAL(get_n(m), 5);
	chan_msg_free(m);
	chan_conn_free(x);
	chan_conn_free(y);
}

static void
test_self_send(void)
{
	chan_conn *a, *b, *c, *s;
	chan_listener *l;
	char name[64];

	CU_ASSERT_FATAL(chan_conn_pair(&a, &b) == 0);
	check_self_send(a, b);
	chan_conn_free(a);
	chan_conn_free(b);

	snprintf(name, sizeof(name), "@chan-self-%d", (int)getpid());
	CU_ASSERT_FATAL(chan_listen(name, &l) == 0);
	CU_ASSERT_FATAL(chan_connect(name, &c) == 0);
	CU_ASSERT_FATAL(chan_listener_accept(l, LONG_MS, &s) == 0);
	check_self_send(c, s);
	chan_conn_free(c);
	chan_conn_free(s);
	chan_listener_free(l);

	/* A pair's ends are told apart by birth, not by fstat; a connection
	 * wrapped later around a copy of an end's socket is still caught. */
	CU_ASSERT_FATAL(chan_conn_pair(&a, &b) == 0);
	{
		int fd = fcntl(chan_conn_borrow_fd(a), F_DUPFD_CLOEXEC, 3);
		chan_msg *m = chan_msg_new(NULL);
		chan_conn *x, *y, *later;

		CU_ASSERT_FATAL(chan_conn_move_from_fd(fd, &later) == 0); /* a's socket */
		chan_msg_set_root(m, chan_handle_borrow_conn(m, a));
		CU_ASSERT_EQUAL(chan_conn_send(later, m, 0), CHAN_E_SELF_SEND);
		chan_msg_free(m);
		m = chan_msg_new(NULL);
		chan_msg_set_root(m, chan_handle_borrow_conn(m, b)); /* a's peer */
		CU_ASSERT_EQUAL(chan_conn_send(later, m, 0), CHAN_E_SELF_SEND);
		chan_msg_free(m);
		/* a newer pair is neither: sent with no identity lookup */
		CU_ASSERT_FATAL(chan_conn_pair(&x, &y) == 0);
		m = chan_msg_new(NULL);
		chan_msg_set_root(m, chan_handle_borrow_conn(m, x));
		CU_ASSERT_EQUAL(chan_conn_send(a, m, 0), 0);
		chan_msg_free(m);
		m = NULL;
		CU_ASSERT_EQUAL(chan_conn_recv(b, LONG_MS, &m), 0);
		chan_msg_free(m);
		chan_conn_free(x);
		chan_conn_free(y);
		chan_conn_free(later);
	}
	chan_conn_free(a);
	chan_conn_free(b);
}

/*
 * Three processes, connections nested three levels:
 *   P1 --A--> P2: {"conn": B2}           (level 2 travels on level 1)
 *   P1 --B1-> P2 (on B2): {"conn": C2}   (level 3 travels on level 2)
 *   P2 --D--> P3: {"conn": C2}           (forwarded)
 *   P3 --C2-> P1 (on C1): {"n": 3}
 * and P1 answers back down the same path.
 */
static void
test_nested_three_processes(void)
{
	chan_conn *a1, *a2, *d2, *d3, *b1, *b2, *c1, *c2;
	chan_msg *m = NULL;
	pid_t p2, p3;

	CU_ASSERT_FATAL(chan_conn_pair(&a1, &a2) == 0);
	CU_ASSERT_FATAL(chan_conn_pair(&d2, &d3) == 0);
	p3 = tp_fork();
	CU_ASSERT_FATAL(p3 >= 0);
	if (p3 == 0) {
		int before;
		chan_conn *k;

		chan_conn_free(a1);
		chan_conn_free(a2);
		chan_conn_free(d2);
		before = chan_test_count_fds();
		TP_CHECK(chan_conn_recv(d3, LONG_MS, &m) == 0);
		TP_CHECK(get_n(m) == 2);
		TP_CHECK((k = take_conn(m, "reply_to")) != NULL);
		chan_msg_free(m);
		TP_CHECK(chan_test_count_fds() == before + 1);
		TP_CHECK(send_free(k, request("from P3", 3, -1)) == 0);
		TP_CHECK(chan_conn_recv(k, LONG_MS, &m) == 0);
		TP_CHECK(get_n(m) == 4);
		chan_msg_free(m);
		chan_conn_free(k);
		TP_CHECK(chan_conn_recv(d3, LONG_MS, &m) == CHAN_E_CONNECTION_CLOSED);
		chan_conn_free(d3);
		TP_CHECK(chan_test_count_fds() == before - 1);
		_exit(0);
	}
	p2 = tp_fork();
	CU_ASSERT_FATAL(p2 >= 0);
	if (p2 == 0) {
		int before;
		chan_conn *kb, *kc;

		chan_conn_free(a1);
		chan_conn_free(d3);
		before = chan_test_count_fds();
		TP_CHECK(chan_conn_recv(a2, LONG_MS, &m) == 0);
		TP_CHECK((kb = take_conn(m, "reply_to")) != NULL);
		chan_msg_free(m);
		TP_CHECK(chan_conn_recv(kb, LONG_MS, &m) == 0);
		TP_CHECK(get_n(m) == 1);
		TP_CHECK((kc = take_conn(m, "reply_to")) != NULL);
		chan_msg_free(m);
		TP_CHECK(send_free(d2, request("forward", 2, chan_conn_borrow_fd(kc))) == 0);
		chan_conn_free(kc);
		chan_conn_free(kb);
		TP_CHECK(chan_test_count_fds() == before);
		chan_conn_free(a2);
		chan_conn_free(d2);
		_exit(0);
	}
	chan_conn_free(a2);
	chan_conn_free(d2);
	chan_conn_free(d3);
	CU_ASSERT_FATAL(chan_conn_pair(&b1, &b2) == 0);
	CU_ASSERT_FATAL(chan_conn_pair(&c1, &c2) == 0);
	CU_ASSERT_EQUAL(send_free(a1, request("level 2", 0, chan_conn_borrow_fd(b2))), 0);
	CU_ASSERT_EQUAL(send_free(b1, request("level 3", 1, chan_conn_borrow_fd(c2))), 0);
	chan_conn_free(b2);
	chan_conn_free(c2);
	CU_ASSERT_EQUAL(chan_conn_recv(c1, LONG_MS, &m), 0);
	CU_ASSERT_EQUAL(get_n(m), 3);
	chan_msg_free(m);
	CU_ASSERT_EQUAL(send_free(c1, request("back", 4, -1)), 0);
	CU_ASSERT_EQUAL(chan_conn_recv(c1, LONG_MS, &m), CHAN_E_CONNECTION_CLOSED);
	CU_ASSERT_EQUAL(tp_wait(p2), 0);
	CU_ASSERT_EQUAL(tp_wait(p3), 0);
	chan_conn_free(a1);
	chan_conn_free(b1);
	chan_conn_free(c1);
}

/* 10,000 requests, each with a fresh reply_to pair, answered by another
 * process through it; neither process grows its fd table. */
#define ROUND_TRIPS 10000

static void
test_round_trips(void)
{
	chan_conn *a, *b;
	chan_msg *m = NULL;
	int before, bad = 0;
	pid_t pid;

	CU_ASSERT_FATAL(chan_conn_pair(&a, &b) == 0);
	pid = tp_fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		chan_conn_free(a);
		before = chan_test_count_fds();
		for (;;) {
			chan_conn *reply;
			int r = chan_conn_recv(b, LONG_MS, &m);

			if (r == CHAN_E_CONNECTION_CLOSED)
				break;
			TP_CHECK(r == 0);
			TP_CHECK((reply = take_conn(m, "reply_to")) != NULL);
			TP_CHECK(send_free(reply, request("reply", get_n(m) * 2, -1)) == 0);
			chan_msg_free(m);
			chan_conn_free(reply);
		}
		chan_conn_free(b);
		TP_CHECK(chan_test_count_fds() == before - 1);
		_exit(0);
	}
	chan_conn_free(b);
	before = chan_test_count_fds();
	for (int i = 0; i < ROUND_TRIPS && !bad; i++) {
		chan_conn *x, *y;

		if (chan_conn_pair(&x, &y) < 0 ||
		    send_free(a, request("double", i, chan_conn_borrow_fd(y))) < 0) {
			bad = 1;
			break;
		}
		chan_conn_free(y);
		if (chan_conn_recv(x, LONG_MS, &m) < 0 || get_n(m) != 2 * (int64_t)i)
			bad = 1;
		chan_msg_free(m);
		m = NULL;
		chan_conn_free(x);
	}
	CU_ASSERT_EQUAL(bad, 0);
	CU_ASSERT_EQUAL(chan_test_count_fds(), before);
	chan_conn_free(a);
	CU_ASSERT_EQUAL(tp_wait(pid), 0);
}

/* The sender closes its copies at once, or exits before the receiver has
 * read anything: in flight, the message and its handles stay intact. */
static void
test_handles_outlive_sender(void)
{
	chan_conn *a, *b, *k;
	chan_msg *m = NULL;
	char buf[16] = {0};
	pid_t pid;
	int p[2];

	CU_ASSERT_FATAL(chan_conn_pair(&a, &b) == 0);

	/* 1: closes its copies right after sending. */
	chan_test_pipes(p, 1);
	CU_ASSERT_EQUAL(send_free(a, tp_sample(1, 0, p + 1, 1)), 0);
	close(p[1]);
	CU_ASSERT_EQUAL(chan_conn_recv(b, LONG_MS, &m), 0);
	{
		chan_value *h = chan_value_at(chan_map_get(chan_msg_root(m), "fds"), 0);

		CU_ASSERT_EQUAL(write(tv_fd(h), "ok", 2), 2);
		CU_ASSERT_EQUAL(read(p[0], buf, sizeof(buf)), 2);
		CU_ASSERT_STRING_EQUAL(buf, "ok");
	}
	chan_msg_free(m);
	close(p[0]);

	/* 2: a process sends a memfd, a pipe read end whose writer it fills,
	 * and a connection with a frame already queued on it, then exits. */
	pid = tp_fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		chan_conn *x, *y;
		int mfd = memfd_create("sample", MFD_CLOEXEC), q[2], fds[2];
		chan_msg *s;

		chan_conn_free(b);
		TP_CHECK(mfd >= 0 && write(mfd, "memfd", 5) == 5);
		TP_CHECK(pipe2(q, O_CLOEXEC) == 0 && write(q[1], "pipe", 4) == 4);
		TP_CHECK(chan_conn_pair(&x, &y) == 0);
		TP_CHECK(send_free(x, request("queued", 77, -1)) == 0);
		fds[0] = mfd;
		fds[1] = q[0];
		s = tp_sample(2, 5, fds, 2);
		TP_CHECK(s && chan_map_put(chan_msg_root(s), "conn",
					   chan_handle_copy(s, CHAN_KIND_CONN, chan_conn_borrow_fd(y))) == 0);
		TP_CHECK(chan_conn_send(a, s, LONG_MS) == 0);
		_exit(0); /* without closing anything */
	}
	CU_ASSERT_EQUAL(tp_wait(pid), 0);
	CU_ASSERT_EQUAL_FATAL(chan_conn_recv(b, LONG_MS, &m), 0);
	{
		chan_value *root = chan_msg_root(m);
		chan_value *fl = chan_map_get(root, "fds");
		int mfd = tv_fd(chan_value_at(fl, 0));
		int rfd = tv_fd(chan_value_at(fl, 1));
		chan_msg *q = NULL;

		CU_ASSERT_EQUAL(tv_int(chan_map_get(root, "seq")), 2);
		memset(buf, 0, sizeof(buf));
		CU_ASSERT_EQUAL(pread(mfd, buf, sizeof(buf), 0), 5);
		CU_ASSERT_STRING_EQUAL(buf, "memfd");
		memset(buf, 0, sizeof(buf));
		CU_ASSERT_EQUAL(read(rfd, buf, sizeof(buf)), 4);
		CU_ASSERT_STRING_EQUAL(buf, "pipe");
		CU_ASSERT(chan_test_fd_cloexec(mfd) && chan_test_fd_cloexec(rfd));
		k = take_conn(m, "conn");
		CU_ASSERT_FATAL(k != NULL);
		CU_ASSERT(chan_test_fd_cloexec(chan_conn_borrow_fd(k)));
		CU_ASSERT_EQUAL(chan_conn_recv(k, LONG_MS, &q), 0);
		CU_ASSERT_EQUAL(get_n(q), 77);
		chan_msg_free(q);
		CU_ASSERT_EQUAL(chan_conn_recv(k, LONG_MS, &q), CHAN_E_CONNECTION_CLOSED);
		chan_conn_free(k);
	}
	chan_msg_free(m);
	chan_conn_free(a);
	CU_ASSERT_EQUAL(chan_conn_recv(b, LONG_MS, &m), CHAN_E_CONNECTION_CLOSED);
	chan_conn_free(b);
}

/* 253 handles in one frame (the receiver's limit raised to 253); 254 are
 * refused at send; 253 against the default limit is a frame-scope error. */
static void
test_handle_limits(void)
{
	static int fds[254];
	chan_conn *a, *b;
	chan_msg *m = NULL;
	struct chan_limits lim = {.max_handles = 253};
	int p[2], before;

	CU_ASSERT_FATAL(chan_conn_pair(&a, &b) == 0);
	chan_test_pipes(p, 1);
	for (int i = 0; i < 254; i++)
		fds[i] = p[i % 2];
	before = chan_test_count_fds();

	CU_ASSERT_EQUAL(send_free(a, tp_sample(254, 0, fds, 254)),
			CHAN_E_HANDLE_LIMIT_EXCEEDED);
	CU_ASSERT_EQUAL(chan_conn_recv(b, 0, &m), CHAN_E_WOULD_BLOCK);
	CU_ASSERT_EQUAL(chan_test_count_fds(), before);

	CU_ASSERT_EQUAL(send_free(a, tp_sample(253, 1, fds, 253)), 0);
	CU_ASSERT_EQUAL(send_free(a, tp_sample(253, 1, fds, 253)), 0);
	CU_ASSERT_EQUAL(send_free(a, tp_sample(1, 1, fds, 1)), 0);
	CU_ASSERT_EQUAL(chan_conn_recv(b, LONG_MS, &m), CHAN_E_HANDLE_LIMIT_EXCEEDED);
	CU_ASSERT_EQUAL(chan_test_count_fds(), before);
	CU_ASSERT_EQUAL(chan_conn_set_limits(b, &lim), 0);
	CU_ASSERT_EQUAL(chan_conn_recv(b, LONG_MS, &m), 0);
	CU_ASSERT(m && tp_sample_ok(m, 253, 1, fds, 253));
	CU_ASSERT_EQUAL(chan_test_count_fds(), before + 253);
	chan_msg_free(m);
	m = NULL;
	CU_ASSERT_EQUAL(chan_conn_recv(b, LONG_MS, &m), 0);
	CU_ASSERT(m && tp_sample_ok(m, 1, 1, fds, 1));
	chan_msg_free(m);
	CU_ASSERT_EQUAL(chan_test_count_fds(), before);
	chan_conn_free(a);
	chan_conn_free(b);
	close(p[0]);
	close(p[1]);
}

/* Four threads send frames (some far larger than the socket buffer, some
 * with fds) on one connection while a fifth receives: every frame arrives
 * whole, each thread's in its order. */
#define SENDERS 4
#define PER_SENDER 150

struct sender {
	chan_conn *c;
	int id;
	int fd;
	int err;
};

static size_t
pad_for(int id, int i)
{
	return (i % 10 == 0) ? 300000u + (size_t)id * 1000u : (size_t)(i % 7) * 100u;
}

static void *
sender_main(void *arg)
{
	struct sender *s = arg;

	for (int i = 0; i < PER_SENDER && !s->err; i++) {
		int64_t seq = (int64_t)s->id * 1000000 + i;

		s->err = send_free(s->c, tp_sample(seq, pad_for(s->id, i), &s->fd, i % 3 == 0));
	}
	return NULL;
}

static void
test_concurrent_senders(void)
{
	struct sender s[SENDERS];
	pthread_t t[SENDERS];
	chan_conn *a, *b;
	int next[SENDERS] = {0}, p[2], bad = 0;

	CU_ASSERT_FATAL(chan_conn_pair(&a, &b) == 0);
	chan_test_pipes(p, 1);
	for (int i = 0; i < SENDERS; i++) {
		s[i] = (struct sender){.c = a, .id = i, .fd = p[i % 2]};
		CU_ASSERT_FATAL(pthread_create(&t[i], NULL, sender_main, &s[i]) == 0);
	}
	for (int n = 0; n < SENDERS * PER_SENDER && !bad; n++) {
		chan_msg *m = NULL;
		int64_t seq;
		int id, i;

		if (chan_conn_recv(b, LONG_MS, &m) < 0) {
			bad = 1;
			break;
		}
		seq = tv_int(chan_map_get(chan_msg_root(m), "seq"));
		id = (int)(seq / 1000000);
		i = (int)(seq % 1000000);
		if (id < 0 || id >= SENDERS || i != next[id] ||
		    !tp_sample_ok(m, seq, pad_for(id, i), &s[id].fd, i % 3 == 0))
			bad = 1;
		else
			next[id]++;
		chan_msg_free(m);
	}
	for (int i = 0; i < SENDERS; i++) {
		pthread_join(t[i], NULL);
		CU_ASSERT_EQUAL(s[i].err, 0);
		CU_ASSERT_EQUAL(next[i], PER_SENDER);
	}
	CU_ASSERT_EQUAL(bad, 0);
	chan_conn_free(a);
	chan_conn_free(b);
	close(p[0]);
	close(p[1]);
}

/* Three threads receive from one connection while one sends: the receive
 * lock hands each of them whole frames, every frame exactly once. */
#define RECEIVERS 3
#define FRAMES 300

struct receiver {
	chan_conn *c;
	int fd;
	unsigned char *seen; /* shared; one slot per frame, written once */
	int got, bad;
};

static void *
receiver_main(void *arg)
{
	struct receiver *rc = arg;

	for (;;) {
		chan_msg *m = NULL;
		int64_t seq;
		int r = chan_conn_recv(rc->c, LONG_MS, &m);

		if (r == CHAN_E_CONNECTION_CLOSED)
			break;
		if (r < 0) {
			rc->bad++;
			break;
		}
		seq = tv_int(chan_map_get(chan_msg_root(m), "seq"));
		if (seq < 0 || seq >= FRAMES || rc->seen[seq] ||
		    !tp_sample_ok(m, seq, pad_for(0, (int)seq), &rc->fd, seq % 2))
			rc->bad++;
		else
			rc->seen[seq] = 1;
		rc->got++;
		chan_msg_free(m);
	}
	return NULL;
}

static void
test_concurrent_receivers(void)
{
	static unsigned char seen[FRAMES];
	struct receiver rc[RECEIVERS];
	pthread_t t[RECEIVERS];
	chan_conn *a, *b;
	int p[2], total = 0, err = 0;

	memset(seen, 0, sizeof(seen));
	CU_ASSERT_FATAL(chan_conn_pair(&a, &b) == 0);
	chan_test_pipes(p, 1);
	for (int i = 0; i < RECEIVERS; i++) {
		rc[i] = (struct receiver){.c = b, .fd = p[0], .seen = seen};
		CU_ASSERT_FATAL(pthread_create(&t[i], NULL, receiver_main, &rc[i]) == 0);
	}
	for (int i = 0; i < FRAMES && !err; i++)
		err = send_free(a, tp_sample(i, pad_for(0, i), p, i % 2));
	CU_ASSERT_EQUAL(err, 0);
	/* Half-close: the receivers read everything, then see the end. */
	CU_ASSERT(shutdown(chan_conn_borrow_fd(a), SHUT_WR) == 0);
	for (int i = 0; i < RECEIVERS; i++) {
		pthread_join(t[i], NULL);
		CU_ASSERT_EQUAL(rc[i].bad, 0);
		total += rc[i].got;
	}
	CU_ASSERT_EQUAL(total, FRAMES);
	CU_ASSERT(memchr(seen, 0, FRAMES) == NULL);
	chan_conn_free(a);
	chan_conn_free(b);
	close(p[0]);
	close(p[1]);
}

/* Non-blocking use in one thread under poll: a frame much larger than the
 * socket buffer is committed by a send with timeout 0, a second send is
 * refused with WOULD_BLOCK while the first is pending, and flush + receive
 * with timeout 0 finish both. */
static void
test_nonblocking_poll(void)
{
	chan_conn *a, *b;
	chan_msg *big = NULL, *small = NULL, *got = NULL;
	int p[2], received = 0, sent_small = 0, rounds = 0, saw_partial = 0;
	const size_t pad = 4u << 20;

	CU_ASSERT_FATAL(chan_conn_pair(&a, &b) == 0);
	chan_test_pipes(p, 1);
	big = tp_sample(1, pad, p, 2);
	small = tp_sample(2, 10, p + 1, 1);
	CU_ASSERT_FATAL(big && small);
	CU_ASSERT_EQUAL(chan_conn_send(a, big, 0), 0);
	CU_ASSERT_EQUAL(chan_conn_pending(a), 1);
	chan_msg_free(big); /* committed: the connection has its bytes */
	CU_ASSERT_EQUAL(chan_conn_send(a, small, 0), CHAN_E_WOULD_BLOCK);
	CU_ASSERT_EQUAL(chan_conn_flush(a, 0), CHAN_E_WOULD_BLOCK);

	while (received < 2 && rounds++ < 100000) {
		struct pollfd pf[2] = {
			{.fd = chan_conn_borrow_fd(a), .events = POLLOUT},
			{.fd = chan_conn_borrow_fd(b), .events = POLLIN},
		};
		int r;

		CU_ASSERT_FATAL(poll(pf, 2, LONG_MS) > 0);
		if (pf[0].revents & POLLOUT) {
			if (chan_conn_pending(a)) {
				r = chan_conn_flush(a, 0);
				CU_ASSERT(r == 0 || r == CHAN_E_WOULD_BLOCK);
			} else if (!sent_small) {
				CU_ASSERT_EQUAL(chan_conn_send(a, small, 0), 0);
				sent_small = 1;
			}
		}
		if (pf[1].revents & POLLIN) {
			r = chan_conn_recv(b, 0, &got);
			if (r == CHAN_E_WOULD_BLOCK) {
				saw_partial = 1;
				continue;
			}
			CU_ASSERT_EQUAL_FATAL(r, 0);
			if (received == 0) {
				CU_ASSERT(tp_sample_ok(got, 1, pad, p, 2));
			} else {
				CU_ASSERT(tp_sample_ok(got, 2, 10, p + 1, 1));
			}
			chan_msg_free(got);
			got = NULL;
			received++;
		}
	}
	CU_ASSERT_EQUAL(received, 2);
	CU_ASSERT(saw_partial); /* the big frame was read in several calls */
	CU_ASSERT_EQUAL(chan_conn_pending(a), 0);
	CU_ASSERT(!is_nonblocking(chan_conn_borrow_fd(a)) && !is_nonblocking(chan_conn_borrow_fd(b)));
	chan_msg_free(small);
	chan_conn_free(a);
	chan_conn_free(b);
	close(p[0]);
	close(p[1]);
}

/* A committed frame the peer never reads: send with a timeout returns 0
 * (committed), a second send times out, the peer's death turns into
 * CONNECTION_CLOSED (no SIGPIPE), sticky for sends. */
static void
test_send_to_dead_peer(void)
{
	chan_conn *a, *b;
	chan_msg *big = tp_sample(1, 2u << 20, NULL, 0);
	chan_msg *small = tp_sample(2, 0, NULL, 0);

	CU_ASSERT_FATAL(big && small);
	CU_ASSERT_FATAL(chan_conn_pair(&a, &b) == 0);
	CU_ASSERT_EQUAL(chan_conn_send(a, big, 10), 0);
	CU_ASSERT_EQUAL(chan_conn_pending(a), 1);
	CU_ASSERT_EQUAL(chan_conn_send(a, small, 10), CHAN_E_TIMEOUT);
	chan_conn_free(b);
	CU_ASSERT_EQUAL(chan_conn_flush(a, LONG_MS), CHAN_E_CONNECTION_CLOSED);
	CU_ASSERT_EQUAL(chan_conn_send(a, small, 0), CHAN_E_CONNECTION_CLOSED);
	chan_conn_free(a);

	/* Nothing pending: the first send sees EPIPE. */
	CU_ASSERT_FATAL(chan_conn_pair(&a, &b) == 0);
	chan_conn_free(b);
	CU_ASSERT_EQUAL(chan_conn_send(a, small, LONG_MS), CHAN_E_CONNECTION_CLOSED);
	chan_conn_free(a);
	chan_msg_free(big);
	chan_msg_free(small);
}

/* Received messages come from the connection's allocator. */
static void
test_allocator(void)
{
	struct chan_test_alloc ta;
	chan_conn *a, *b;
	chan_msg *m = NULL;

	chan_test_alloc_init(&ta, 0);
	CU_ASSERT_FATAL(chan_conn_pair(&a, &b) == 0);
	chan_conn_set_allocator(b, &ta.a);
	CU_ASSERT_EQUAL(send_free(a, request("x", 9, -1)), 0);
	CU_ASSERT_EQUAL(chan_conn_recv(b, LONG_MS, &m), 0);
	CU_ASSERT(ta.allocs > 0);
	CU_ASSERT_EQUAL(get_n(m), 9);
	chan_msg_free(m);
	CU_ASSERT(ta.live > 0); /* the connection's receive buffer */
	CU_ASSERT_EQUAL(chan_conn_set_allocator(b, NULL), 0);
	CU_ASSERT_EQUAL(ta.live, 0); /* handed back to the allocator it came from */
	CU_ASSERT_EQUAL(send_free(a, request("x", 10, -1)), 0);
	CU_ASSERT_EQUAL(chan_conn_recv(b, LONG_MS, &m), 0);
	chan_msg_free(m);
	CU_ASSERT_EQUAL(ta.frees, ta.allocs);
	chan_conn_free(a);
	chan_conn_free(b);
}

CU_TestInfo conn_tests[] = {
	{"pair_round_trip", test_pair_round_trip},
	{"recv_timeouts", test_recv_timeouts},
	{"listen_path", test_listen_path},
	{"listen_abstract", test_listen_abstract},
	{"bad_arguments", test_bad_arguments},
	{"conn_handle_moves", test_conn_handle_moves},
	{"self_send", test_self_send},
	{"nested_three_processes", test_nested_three_processes},
	{"round_trips", test_round_trips},
	{"handles_outlive_sender", test_handles_outlive_sender},
	{"handle_limits", test_handle_limits},
	{"large_frames_adopt_buffer", test_large_frames_adopt_buffer},
	{"concurrent_senders", test_concurrent_senders},
	{"concurrent_receivers", test_concurrent_receivers},
	{"nonblocking_poll", test_nonblocking_poll},
	{"send_to_dead_peer", test_send_to_dead_peer},
	{"allocator", test_allocator},
	CU_TEST_INFO_NULL,
};
