/*
 * interop_peer - the C side of python/tests/test_interop.py: libchan peers
 * that a Python process talks to over a socket it passes as argv[2].
 *
 *   interop_peer consumer FD      answer requests until the stream ends:
 *       {"op":"add","args":[ints],"reply_to":conn}  -> reply_to gets {"sum":n,"by":"c"}
 *       {"op":"echo","value":V,"reply_to":conn}     -> reply_to gets {"echo":V} (a deep copy,
 *                                                      handles included)
 *       {"op":"write","fd":fd,"text":s,"reply_to":conn} -> writes s to fd, replies {"wrote":len}
 *       {"op":"use","conn":conn,"text":s}           -> sends {"hello":s} over conn, waits for
 *                                                      one reply, checks {"ack":s}
 *   interop_peer producer FD N    send N requests {"op":"add","args":[i,2i],"reply_to":conn}
 *                                 and one {"op":"write","fd":pipe,"text":...}; check replies
 *   interop_peer origin FD TEXT   make a connection pair, send one end in {"conn":end}, then
 *                                 wait on the other end for {"hello":TEXT}, answer {"ack":TEXT}
 * Revision 1.1 (SPEC.md §16-§18):
 *   consumer                      also answers a reply_to that is a channel (the Python side
 *                                 sent HELLO; libchan answered it), with END
 *   interop_peer producer11 FD N  send HELLO (channels required), N requests
 *                                 {"op":"add","args":[i,2i],"reply_to":<channel>}, check each
 *                                 reply {"sum":3i,"by":"python"} and that its channel is then
 *                                 closed; then an epitaph MALFORMED "bye from c"
 *   interop_peer victim FD        receive until an error; exit 0 if it is BAD_MAGIC (the Python
 *                                 side sent HELLO, then garbage; libchan answers with an epitaph)
 *
 * Exit status 0 when every check passed; otherwise a message on stderr and 1.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chan.h"

#define CHECK(cond)                                                              \
	do {                                                                     \
		if (!(cond)) {                                                   \
			fprintf(stderr, "interop_peer %d: %s:%d: check failed: %s\n", \
				(int)getpid(), __FILE__, __LINE__, #cond);       \
			exit(1);                                                 \
		}                                                                \
	} while (0)
#define OK(call)                                                                 \
	do {                                                                     \
		int r_ = (call);                                                 \
		if (r_ < 0) {                                                    \
			fprintf(stderr, "interop_peer %d: %s:%d: %s: %s\n",      \
				(int)getpid(), __FILE__, __LINE__, #call,        \
				chan_errname(r_));                               \
			exit(1);                                                 \
		}                                                                \
	} while (0)

static chan_value *
copy_value(chan_msg *dst, chan_value *v)
{
	size_t n, i;
	const char *s;
	const void *b;
	chan_value *out;
	bool bv;
	int64_t iv;
	double fv;
	int fd;

	switch (chan_value_type(v)) {
	case CHAN_NULL:
		return chan_null(dst);
	case CHAN_BOOL:
		OK(chan_value_get_bool(v, &bv));
		return chan_bool(dst, bv);
	case CHAN_INT:
		OK(chan_value_get_int(v, &iv));
		return chan_int(dst, iv);
	case CHAN_FLOAT:
		OK(chan_value_get_float(v, &fv));
		return chan_float(dst, fv);
	case CHAN_STRING:
		OK(chan_value_get_string(v, &s, &n));
		return chan_string_n(dst, s, n);
	case CHAN_BYTES:
		OK(chan_value_get_bytes(v, &b, &n));
		return chan_bytes(dst, b, n);
	case CHAN_LIST:
		out = chan_list(dst);
		for (i = 0; i < chan_value_count(v); i++)
			OK(chan_list_append(out, copy_value(dst, chan_value_at(v, i))));
		return out;
	case CHAN_MAP:
		out = chan_map(dst);
		for (i = 0; i < chan_value_count(v); i++) {
			size_t kl;
			const char *k = chan_map_key_at(v, i, &kl);

			OK(chan_map_put_n(out, k, kl, copy_value(dst, chan_value_at(v, i))));
		}
		return out;
	case CHAN_HANDLE:
		OK(chan_value_borrow_fd(v, &fd));
		return chan_handle_copy(dst, chan_value_kind(v), fd);
	case CHAN_CHANNEL: /* an endpoint stays on its connection (SPEC.md §18.7) */
		CHECK(!"a channel handle cannot be echoed");
	}
	return NULL;
}

static const char *
get_str(chan_value *map, const char *key, size_t *len)
{
	const char *s = NULL;

	OK(chan_map_get_string(map, key, &s, len));
	return s;
}

static chan_conn *
take_conn(chan_value *map, const char *key)
{
	chan_value *v = chan_map_get(map, key);
	chan_conn *c;

	CHECK(v && ((chan_value_type(v) == CHAN_HANDLE && chan_value_kind(v) == CHAN_KIND_CONN) ||
		    chan_value_type(v) == CHAN_CHANNEL));
	OK(chan_conn_move_from_value(v, &c));
	return c;
}

static void
send_and_free(chan_conn *c, chan_msg *m, chan_value *root)
{
	OK(chan_msg_set_root(m, root));
	OK(chan_conn_send(c, m, -1));
	chan_msg_free(m);
}

static int
consumer(chan_conn *c)
{
	for (;;) {
		chan_msg *req, *rep;
		chan_value *root, *out;
		const char *op;
		size_t oplen;
		int r = chan_conn_recv(c, 10000, &req);

		if (r == CHAN_E_CONNECTION_CLOSED)
			return 0;
		OK(r);
		root = chan_msg_root(req);
		CHECK(chan_value_type(root) == CHAN_MAP);
		op = get_str(root, "op", &oplen);
		rep = chan_msg_new(NULL);
		CHECK(rep);
		out = chan_map(rep);
		if (!strcmp(op, "add")) {
			chan_value *args = chan_map_get(root, "args");
			int64_t sum = 0;

			CHECK(args && chan_value_type(args) == CHAN_LIST);
			for (size_t i = 0; i < chan_value_count(args); i++) {
				int64_t x;

				OK(chan_value_get_int(chan_value_at(args, i), &x));
				sum += x;
			}
			OK(chan_map_put(out, "sum", chan_int(rep, sum)));
			OK(chan_map_put(out, "by", chan_string(rep, "c")));
		} else if (!strcmp(op, "echo")) {
			OK(chan_map_put(out, "echo", copy_value(rep, chan_map_get(root, "value"))));
		} else if (!strcmp(op, "write")) {
			chan_value *fv = chan_map_get(root, "fd");
			size_t len;
			const char *text = get_str(root, "text", &len);

			int wfd = -1;

			CHECK(fv && chan_value_kind(fv) == CHAN_KIND_FD);
			OK(chan_value_borrow_fd(fv, &wfd));
			CHECK(write(wfd, text, len) == (ssize_t)len);
			OK(chan_map_put(out, "wrote", chan_int(rep, (int64_t)len)));
		} else if (!strcmp(op, "use")) {
			chan_conn *other = take_conn(root, "conn");
			size_t len, alen;
			const char *text = get_str(root, "text", &len);
			chan_msg *hello = chan_msg_new(NULL), *ack;
			chan_value *hm = chan_map(hello);
			const char *got;

			OK(chan_map_put(hm, "hello", chan_string_n(hello, text, len)));
			send_and_free(other, hello, hm);
			OK(chan_conn_recv(other, 10000, &ack));
			got = get_str(chan_msg_root(ack), "ack", &alen);
			CHECK(alen == len && !memcmp(got, text, len));
			chan_msg_free(ack);
			chan_conn_free(other);
			chan_msg_free(rep);
			chan_msg_free(req);
			continue;
		} else {
			CHECK(!"unknown op");
		}
		{
			chan_conn *reply_to = take_conn(root, "reply_to");

			if (chan_conn_channel_id(reply_to)) { /* a channel: one frame, END */
				OK(chan_msg_set_root(rep, out));
				OK(chan_conn_send_last(reply_to, rep, -1));
				chan_msg_free(rep);
			} else {
				send_and_free(reply_to, rep, out);
			}
			chan_conn_free(reply_to);
		}
		chan_msg_free(req);
	}
}

static int
producer11(chan_conn *c, int n)
{
	OK(chan_conn_hello(c, CHAN_FEATURE_CHANNELS, -1));
	for (int i = 0; i < n; i++) {
		chan_msg *m = chan_msg_new(NULL), *rep = NULL;
		chan_value *root = chan_map(m), *args = chan_list(m);
		chan_conn *ch = NULL;
		const char *by = NULL;
		int64_t sum = 0;
		size_t bl;

		OK(chan_list_append(args, chan_int(m, i)));
		OK(chan_list_append(args, chan_int(m, 2 * i)));
		OK(chan_map_put(root, "op", chan_string(m, "add")));
		OK(chan_map_put(root, "args", args));
		OK(chan_map_put(root, "reply_to", chan_channel_open(m, c, &ch)));
		OK(chan_msg_set_root(m, root));
		OK(chan_conn_send(c, m, -1));
		chan_msg_free(m);
		OK(chan_conn_recv(ch, 10000, &rep));
		OK(chan_map_get_int(chan_msg_root(rep), "sum", &sum));
		OK(chan_map_get_string(chan_msg_root(rep), "by", &by, &bl));
		CHECK(sum == 3 * i && !strcmp(by, "python"));
		chan_msg_free(rep);
		rep = NULL;
		CHECK(chan_conn_recv(ch, 10000, &rep) == CHAN_E_CHANNEL_CLOSED);
		chan_conn_free(ch);
	}
	CHECK(chan_conn_features(c) == (CHAN_FEATURE_EPITAPH | CHAN_FEATURE_CHANNELS));
	OK(chan_conn_send_epitaph(c, CHAN_E_MALFORMED, "bye from c", -1));
	return 0;
}

static int
victim(chan_conn *c)
{
	for (;;) {
		chan_msg *m = NULL;
		int r = chan_conn_recv(c, 10000, &m);

		if (r == 0) {
			chan_msg_free(m);
			continue;
		}
		if (chan_error_scope(r) == CHAN_SCOPE_FRAME)
			continue;
		CHECK(r == CHAN_E_BAD_MAGIC);
		return 0;
	}
}

static int
producer(chan_conn *c, int n)
{
	int pfd[2];
	char buf[64];

	for (int i = 0; i < n; i++) {
		chan_conn *mine, *theirs;
		chan_msg *m = chan_msg_new(NULL), *rep;
		chan_value *root = chan_map(m), *args = chan_list(m);
		const char *by = NULL;
		int64_t sum = 0;
		size_t bl;

		OK(chan_conn_pair(&mine, &theirs));
		OK(chan_map_put(root, "op", chan_string(m, "add")));
		OK(chan_list_append(args, chan_int(m, i)));
		OK(chan_list_append(args, chan_int(m, 2 * (int64_t)i)));
		OK(chan_map_put(root, "args", args));
		OK(chan_map_put(root, "reply_to", chan_handle_copy(m, CHAN_KIND_CONN, chan_conn_borrow_fd(theirs))));
		send_and_free(c, m, root);
		chan_conn_free(theirs); /* the message carried a copy */
		OK(chan_conn_recv(mine, 10000, &rep));
		OK(chan_map_get_int(chan_msg_root(rep), "sum", &sum));
		OK(chan_map_get_string(chan_msg_root(rep), "by", &by, &bl));
		CHECK(sum == 3 * (int64_t)i);
		CHECK(!strcmp(by, "python"));
		chan_msg_free(rep);
		/* the consumer dropped its copy: end of stream on ours */
		CHECK(chan_conn_recv(mine, 10000, &rep) == CHAN_E_CONNECTION_CLOSED);
		chan_conn_free(mine);
	}
	CHECK(pipe2(pfd, O_CLOEXEC) == 0);
	{
		chan_conn *mine, *theirs;
		chan_msg *m = chan_msg_new(NULL), *rep;
		chan_value *root = chan_map(m);
		ssize_t got;

		OK(chan_conn_pair(&mine, &theirs));
		OK(chan_map_put(root, "op", chan_string(m, "write")));
		OK(chan_map_put(root, "fd", chan_handle_copy(m, CHAN_KIND_FD, pfd[1])));
		OK(chan_map_put(root, "text", chan_string(m, "written by python")));
		OK(chan_map_put(root, "reply_to", chan_handle_copy(m, CHAN_KIND_CONN, chan_conn_borrow_fd(theirs))));
		send_and_free(c, m, root);
		chan_conn_free(theirs);
		close(pfd[1]);
		OK(chan_conn_recv(mine, 10000, &rep));
		int64_t wrote = 0;

		OK(chan_map_get_int(chan_msg_root(rep), "wrote", &wrote));
		CHECK(wrote == 17);
		chan_msg_free(rep);
		chan_conn_free(mine);
		got = read(pfd[0], buf, sizeof(buf));
		CHECK(got == 17 && !memcmp(buf, "written by python", 17));
		close(pfd[0]);
	}
	return 0;
}

static int
origin(chan_conn *c, const char *text)
{
	chan_conn *keep, *give;
	chan_msg *m = chan_msg_new(NULL), *hello, *ack;
	chan_value *root = chan_map(m), *a;
	size_t len;
	const char *got;

	OK(chan_conn_pair(&keep, &give));
	OK(chan_map_put(root, "conn", chan_handle_copy(m, CHAN_KIND_CONN, chan_conn_borrow_fd(give))));
	OK(chan_map_put(root, "from", chan_string(m, "c origin")));
	send_and_free(c, m, root);
	chan_conn_free(give);
	OK(chan_conn_recv(keep, 10000, &hello));
	got = get_str(chan_msg_root(hello), "hello", &len);
	CHECK(len == strlen(text) && !memcmp(got, text, len));
	ack = chan_msg_new(NULL);
	a = chan_map(ack);
	OK(chan_map_put(a, "ack", chan_string_n(ack, got, len)));
	send_and_free(keep, ack, a);
	chan_msg_free(hello);
	chan_conn_free(keep);
	return 0;
}

int
main(int argc, char **argv)
{
	chan_conn *c;
	int r;

	if (argc < 3) {
		fprintf(stderr, "usage: interop_peer consumer|producer|origin|producer11|victim FD [ARG]\n");
		return 2;
	}
	OK(chan_conn_move_from_fd(atoi(argv[2]), &c));
	if (!strcmp(argv[1], "consumer"))
		r = consumer(c);
	else if (!strcmp(argv[1], "producer") && argc > 3)
		r = producer(c, atoi(argv[3]));
	else if (!strcmp(argv[1], "origin") && argc > 3)
		r = origin(c, argv[3]);
	else if (!strcmp(argv[1], "producer11") && argc > 3)
		r = producer11(c, atoi(argv[3]));
	else if (!strcmp(argv[1], "victim"))
		r = victim(c);
	else
		r = 2;
	chan_conn_free(c);
	return r;
}
