/*
 * sdevent_server.c - the same service as epoll_server.c, on systemd's
 * sd-event loop: how a chan connection attaches to an event loop that is
 * not yours (chan.h, "Event loops").  The adapter is chan_attach(): one I/O
 * source per connection whose events follow chan_conn_events().
 *
 *   sdevent_server PATH    serve until SIGTERM or SIGINT; prints the same
 *                          summary line as epoll_server and exits 0 if no
 *                          descriptor leaked.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-event.h>

#include "chan.h"
#include "loop_common.h"

/* ---- the adapter: a chan connection as an sd-event source ---- */

struct attached;
static struct attached *everyone[1 << 16]; /* every attached connection, for exit */
static long live;

struct attached {
	chan_conn *conn;
	chan_msg *queued; /* a message chan_conn_send did not accept yet */
	sd_event_source *src;
	/* Called for each received message (which it owns). */
	void (*on_msg)(struct attached *a, chan_msg *msg);
	/* Called once when the connection is done (closed, broken, or a
	 * reply delivered); the adapter frees everything after it. */
	void (*on_done)(struct attached *a, int err);
	bool reply_only; /* a reply connection: written once, never read */
};

static void
detach(struct attached *a, int err)
{
	for (long i = live - 1; i >= 0; i--)
		if (everyone[i] == a) {
			everyone[i] = everyone[--live];
			break;
		}
	if (a->on_done)
		a->on_done(a, err);
	sd_event_source_disable_unref(a->src);
	chan_msg_free(a->queued);
	chan_conn_free(a->conn);
	free(a);
}

/* Rule 1: the source waits for what the connection needs now. */
static void
rearm(struct attached *a)
{
	uint32_t want = a->reply_only ? EPOLLOUT : chan_conn_events(a->conn);

	if (a->queued)
		want |= EPOLLOUT;
	sd_event_source_set_io_events(a->src, want);
}

static int
on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct attached *a = userdata;
	int r = 0;

	(void)s;
	(void)fd;
	if (revents & EPOLLOUT) { /* rules 3 and 4 */
		r = a->queued ? chan_conn_send(a->conn, a->queued, 0) : chan_conn_flush(a->conn, 0);
		if (r == 0 && a->queued)
			a->queued = chan_msg_free(a->queued);
		if (r < 0 && r != CHAN_E_WOULD_BLOCK) {
			detach(a, r);
			return 0;
		}
		if (a->reply_only && r == 0 && !a->queued && !chan_conn_pending(a->conn)) {
			detach(a, 0); /* delivered */
			return 0;
		}
	}
	while (!a->reply_only && (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))) { /* rule 2 */
		chan_msg *m = NULL;

		r = chan_conn_recv(a->conn, 0, &m);
		if (r == CHAN_E_WOULD_BLOCK)
			break;
		if (r < 0 && chan_error_scope(r) != CHAN_SCOPE_FRAME) {
			detach(a, r);
			return 0;
		}
		if (r == 0)
			a->on_msg(a, m);
	}
	rearm(a);
	return 0;
}

/* Attach conn (moved in) to the loop. */
static struct attached *
chan_attach(sd_event *ev, chan_conn *conn, bool reply_only)
{
	struct attached *a = calloc(1, sizeof(*a));

	if (!a || live == (long)(sizeof(everyone) / sizeof(everyone[0])) ||
	    sd_event_add_io(ev, &a->src, chan_conn_borrow_fd(conn),
			    reply_only ? EPOLLOUT : chan_conn_events(conn), on_io, a) < 0) {
		free(a);
		chan_conn_free(conn);
		return NULL;
	}
	everyone[live++] = a;
	a->conn = conn;
	a->reply_only = reply_only;
	return a;
}

/* ---- the service ---- */

static sd_event *loop;
static long served, clients, failures;

static void
on_reply_done(struct attached *a, int err)
{
	(void)a;
	if (err)
		failures++;
	else
		served++;
}

static void
on_request(struct attached *a, chan_msg *req)
{
	chan_conn *to = NULL;
	chan_msg *answer = loop_answer(req, &to);
	struct attached *r;
	int err;

	(void)a;
	chan_msg_free(req);
	if (!answer) {
		failures++;
		return;
	}
	/* Most replies go out at once: no event source needed for them. */
	err = chan_conn_send(to, answer, 0);
	if (err == 0)
		answer = chan_msg_free(answer); /* committed */
	if ((err == 0 && !chan_conn_pending(to)) || (err < 0 && err != CHAN_E_WOULD_BLOCK)) {
		chan_msg_free(answer);
		chan_conn_free(to);
		if (err == 0)
			served++;
		else
			failures++;
		return;
	}
	/* The rest when the reply connection is writable (the committed
	 * frame's remainder, or the whole answer). */
	if (!(r = chan_attach(loop, to, true))) {
		chan_msg_free(answer);
		failures++;
		return;
	}
	r->on_done = on_reply_done;
	r->queued = answer;
	rearm(r);
}

static void
on_client_done(struct attached *a, int err)
{
	(void)a;
	if (err && err != CHAN_E_CONNECTION_CLOSED)
		failures++;
}

static int
on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	chan_listener *l = userdata;
	chan_conn *c;

	(void)s;
	(void)fd;
	(void)revents;
	while (chan_listener_accept(l, 0, &c) == 0) {
		struct attached *a = chan_attach(loop, c, false);

		if (!a) {
			failures++;
			continue;
		}
		a->on_msg = on_request;
		a->on_done = on_client_done;
		clients++;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	sd_event_source *ls = NULL;
	chan_listener *l;
	sigset_t mask;
	int start_fds, end_fds, r;

	if (argc != 2) {
		fprintf(stderr, "usage: sdevent_server PATH\n");
		return 2;
	}
	loop_raise_fd_limit();
	start_fds = loop_count_fds();
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	if ((r = chan_listen(argv[1], &l)) < 0) {
		fprintf(stderr, "sdevent_server: listen: %s\n", chan_strerror(r));
		return 1;
	}
	if (sd_event_new(&loop) < 0 ||
	    sd_event_add_io(loop, &ls, chan_listener_borrow_fd(l), EPOLLIN, on_accept, l) < 0 ||
	    sd_event_add_signal(loop, NULL, SIGTERM, NULL, NULL) < 0 ||
	    sd_event_add_signal(loop, NULL, SIGINT, NULL, NULL) < 0) {
		fprintf(stderr, "sdevent_server: sd-event setup failed\n");
		return 1;
	}
	r = sd_event_loop(loop); /* a signal source with no handler exits the loop */
	while (live) {
		everyone[live - 1]->on_done = NULL; /* shutting down: not a failure */
		detach(everyone[live - 1], 0);
	}
	sd_event_source_disable_unref(ls);
	sd_event_unref(loop);
	chan_listener_free(l);
	end_fds = loop_count_fds();
	printf("served %ld requests from %ld clients (%ld failures); open fds: %d at start, %d at end\n",
	       served, clients, failures, start_fds, end_fds);
	return r >= 0 && start_fds == end_fds ? 0 : 1;
}
