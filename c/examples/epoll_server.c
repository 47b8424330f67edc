/*
 * epoll_server.c - one thread, one epoll set, any number of chan clients
 * (the event-loop contract of chan.h, "Event loops").
 *
 * The service: a request {"n": N, "reply_to": <conn>} is answered with
 * {"n": N} on its reply_to connection, which is then closed.  A reply that
 * cannot go out at once (that client does not read its reply_to) waits in
 * its own watch for EPOLLOUT; nobody else waits for it.
 *
 *   epoll_server PATH      serve on PATH until SIGTERM or SIGINT, then print
 *                          "served R requests from C clients; open fds: S at
 *                          start, E at end" and exit 0 if S == E.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "chan.h"
#include "loop_common.h"

enum watch_type { W_LISTENER, W_CLIENT, W_REPLY, W_SIGNAL };

/* What one epoll registration watches. */
struct watch {
	enum watch_type type;
	chan_conn *conn;   /* W_CLIENT, W_REPLY */
	chan_msg *queued;  /* W_REPLY: a reply not accepted yet */
	unsigned events;   /* what it is registered for now */
	struct watch *prev, *next; /* every client and reply watch, for exit */
};

static struct watch all = {.prev = &all, .next = &all};
static int ep;
static long served, clients, failures;

static void
die(const char *what, int err)
{
	fprintf(stderr, "epoll_server: %s: %s\n", what, err ? chan_strerror(err) : "failed");
	exit(1);
}

static void
watch_add(struct watch *w, int fd, unsigned events)
{
	struct epoll_event ev = {.events = events, .data.ptr = w};

	if (w->type == W_CLIENT || w->type == W_REPLY) {
		w->next = &all;
		w->prev = all.prev;
		all.prev->next = w;
		all.prev = w;
	}
	w->events = events;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		die("epoll_ctl add", 0);
}

/* Rule 1: register for what the connection needs now. */
static void
watch_update(struct watch *w)
{
	unsigned want = chan_conn_events(w->conn);
	struct epoll_event ev = {.events = want, .data.ptr = w};

	if (w->type == W_REPLY)
		want = ev.events = EPOLLOUT; /* a reply connection is only written */
	if (want != w->events && epoll_ctl(ep, EPOLL_CTL_MOD, chan_conn_borrow_fd(w->conn), &ev) == 0)
		w->events = want;
}

static void
watch_free(struct watch *w)
{
	w->prev->next = w->next;
	w->next->prev = w->prev;
	epoll_ctl(ep, EPOLL_CTL_DEL, chan_conn_borrow_fd(w->conn), NULL);
	chan_conn_free(w->conn);
	chan_msg_free(w->queued);
	free(w);
}

/* Rule 4 for a reply: sent, committed (flushed later), or queued. */
static void
reply(chan_conn *to, chan_msg *answer)
{
	struct watch *w;
	int r = chan_conn_send(to, answer, 0);

	if (r == 0 && !chan_conn_pending(to)) { /* the common case: all out */
		chan_msg_free(answer);
		chan_conn_free(to);
		served++;
		return;
	}
	if (r < 0 && r != CHAN_E_WOULD_BLOCK) {
		failures++;
		chan_msg_free(answer);
		chan_conn_free(to);
		return;
	}
	w = calloc(1, sizeof(*w));
	if (!w)
		die("calloc", CHAN_E_NO_MEMORY);
	w->type = W_REPLY;
	w->conn = to;
	if (r == 0)
		chan_msg_free(answer); /* committed: the connection finishes it */
	else
		w->queued = answer;    /* not accepted: ours to send again */
	watch_add(w, chan_conn_borrow_fd(to), EPOLLOUT);
}

/* The reply connection is writable: finish the committed frame or send the
 * queued one. */
static void
reply_ready(struct watch *w)
{
	int r = w->queued ? chan_conn_send(w->conn, w->queued, 0) : chan_conn_flush(w->conn, 0);

	if (r == CHAN_E_WOULD_BLOCK || r == CHAN_E_TIMEOUT)
		return;
	if (r == 0 && w->queued) {
		w->queued = chan_msg_free(w->queued);
		if (chan_conn_pending(w->conn))
			return; /* committed; flushed on the next EPOLLOUT */
	}
	if (r == 0)
		served++;
	else
		failures++;
	watch_free(w);
}

/* Rule 2: read every whole frame there is. */
static void
client_ready(struct watch *w)
{
	for (;;) {
		chan_msg *req = NULL, *answer;
		chan_conn *to = NULL;
		int r = chan_conn_recv(w->conn, 0, &req);

		if (r == CHAN_E_WOULD_BLOCK)
			break;
		if (r < 0 && chan_error_scope(r) == CHAN_SCOPE_FRAME) {
			failures++; /* one bad frame; the next one may be fine */
			continue;
		}
		if (r < 0) { /* closed, or broken: drop this client only */
			if (r != CHAN_E_CONNECTION_CLOSED)
				failures++;
			watch_free(w);
			return;
		}
		answer = loop_answer(req, &to);
		chan_msg_free(req);
		if (answer)
			reply(to, answer);
		else
			failures++;
	}
	watch_update(w);
}

int
main(int argc, char **argv)
{
	struct watch lw = {.type = W_LISTENER}, sw = {.type = W_SIGNAL};
	chan_listener *l;
	sigset_t mask;
	int sfd, start_fds, end_fds, r;

	if (argc != 2) {
		fprintf(stderr, "usage: epoll_server PATH\n");
		return 2;
	}
	loop_raise_fd_limit();
	start_fds = loop_count_fds();
	if ((r = chan_listen(argv[1], &l)) < 0)
		die("listen", r);
	ep = epoll_create1(EPOLL_CLOEXEC);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (ep < 0 || sfd < 0)
		die("epoll_create1/signalfd", 0);
	watch_add(&lw, chan_listener_borrow_fd(l), EPOLLIN);
	watch_add(&sw, sfd, EPOLLIN);

	for (;;) {
		struct epoll_event evs[64];
		int n = epoll_wait(ep, evs, 64, -1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("epoll_wait", 0);
		for (int i = 0; i < n; i++) {
			struct watch *w = evs[i].data.ptr;
			chan_conn *c;

			switch (w->type) {
			case W_SIGNAL:
				goto done;
			case W_LISTENER:
				while ((r = chan_listener_accept(l, 0, &c)) == 0) {
					struct watch *cw = calloc(1, sizeof(*cw));

					if (!cw)
						die("calloc", CHAN_E_NO_MEMORY);
					cw->type = W_CLIENT;
					cw->conn = c;
					watch_add(cw, chan_conn_borrow_fd(c), chan_conn_events(c));
					clients++;
				}
				if (r != CHAN_E_WOULD_BLOCK)
					failures++; /* EMFILE and the like: try on the next event */
				break;
			case W_CLIENT:
				client_ready(w);
				break;
			case W_REPLY:
				reply_ready(w);
				break;
			}
		}
	}
done:
	/* Free everything still watched: clients and undelivered replies. */
	while (all.next != &all)
		watch_free(all.next);
	chan_listener_free(l);
	close(sfd);
	close(ep);
	end_fds = loop_count_fds();
	printf("served %ld requests from %ld clients (%ld failures); open fds: %d at start, %d at end\n",
	       served, clients, failures, start_fds, end_fds);
	return start_fds == end_fds ? 0 : 1;
}
