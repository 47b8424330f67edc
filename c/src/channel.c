/*
 * channel.c - revision 1.1 of the protocol on a connection (SPEC.md §16-§18):
 * what the peer announced (HELLO), control frames and epitaphs, and logical
 * channels multiplexed over the connection's one socket.
 *
 * Data flow, receiving.  Whichever thread receives (on the main stream or on
 * a channel endpoint) first looks in its own queue; if that is empty and no
 * other thread is reading the socket, it becomes the reader: io.c reads one
 * whole frame (chan__read_frame), and dispatch() routes it: control frames
 * are consumed here, data frames go to their endpoint's queue (or straight
 * back to the reader when they are its own), and the other waiting threads
 * are woken.  Queues are bounded by max_queued_bytes (§18.6): the largest
 * one is reset when a frame would exceed it.
 *
 * Data flow, sending.  io.c's send path asks chan__frame_route for the
 * header fields of an endpoint's frame, chan__channels_assign for the ids of
 * the channels a message opens (assigned in wire order at send time, so
 * handles always go out in id order, §18.3), and writes the outbox (control
 * frames this file queued: a HELLO answer, closes, an epitaph) before its
 * own frame.
 *
 * Lifetimes.  A channel record (struct chan__chan) is the endpoint the
 * application holds and the entry of the connection's table; it counts its
 * references (the application's endpoint, and a message value that names
 * it).  The connection counts its records: a connection freed by its
 * application lives on, socket closed, until its last endpoint is freed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"

#define QENT_OVERHEAD 64u /* SPEC.md §18.6 rule 2 */
#define OUR_FEATURES (CHAN_FEATURE_EPITAPH | CHAN_FEATURE_CHANNELS)

struct chan__chan {
	uint8_t obj; /* CHAN__OBJ_CHANNEL: a chan_conn * may point here */
	bool mine;   /* this side opened it */
	bool given;  /* mine: its handle was sent (it is in the table) */
	bool in_tab;
	bool end_sent; /* this side closed it (END or close sent) */
	bool end_recv; /* the peer closed it */
	uint8_t refs;  /* the application's endpoint, and a message value */
	bool app;      /* the application holds the endpoint */
	int report;    /* a close's code, reported once after the queue */
	uint32_t id;   /* 0 until assigned (mine, at send) */
	chan_conn *conn;
	struct chan__queue q;
	struct chan__chan *hnext;
};

chan_conn *
chan__chan_conn(struct chan__chan *ch)
{
	return ch->conn;
}

/* The key of a record in the table: the channel field of the frames the
 * peer sends on it (bit 31: this side opened it). */
static uint32_t
key_of(const struct chan__chan *ch)
{
	return ch->id | (ch->mine ? CHAN__CHANNEL_THEIRS : 0);
}

/* ---- the connection's 1.1 state ---- */

int
chan__mux_init(chan_conn *c)
{
	pthread_condattr_t ca;
	int r;

	if ((r = pthread_mutex_init(&c->mux_lock, NULL)) != 0) {
		errno = r;
		return CHAN_E_SYSTEM;
	}
	if ((r = pthread_condattr_init(&ca)) == 0) {
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		r = pthread_cond_init(&c->mux_cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	if (r) {
		pthread_mutex_destroy(&c->mux_lock);
		errno = r;
		return CHAN_E_SYSTEM;
	}
	atomic_init(&c->accept, CHAN__ACCEPT_HELLO);
	atomic_init(&c->outlen, 0);
	c->refs = 1;
	c->max_channels = CHAN_DEFAULT_MAX_CHANNELS;
	c->max_queued = CHAN_DEFAULT_MAX_QUEUED_BYTES;
	return 0;
}

static void
queue_push(struct chan__queue *q, struct chan__qent *e)
{
	e->next = NULL;
	if (q->tail)
		q->tail->next = e;
	else
		q->head = e;
	q->tail = e;
	q->bytes += e->bytes;
}

static struct chan__qent *
queue_pop(struct chan__queue *q)
{
	struct chan__qent *e = q->head;

	if (e) {
		q->head = e->next;
		if (!q->head)
			q->tail = NULL;
		q->bytes -= e->bytes;
	}
	return e;
}

/* Free a list of entries (and their messages): never under mux_lock, since
 * freeing a message can release channel records. */
static void
free_entries(chan_conn *c, struct chan__qent *e)
{
	while (e) {
		struct chan__qent *next = e->next;

		chan_msg_free(e->msg);
		chan__free(&c->allocator, e);
		e = next;
	}
}

/* Take a queue's entries off it (under mux_lock); free them later. */
static struct chan__qent *
queue_take(chan_conn *c, struct chan__queue *q)
{
	struct chan__qent *all = q->head;

	c->queued -= q->bytes;
	q->head = q->tail = NULL;
	q->bytes = 0;
	return all;
}

static void
chain(struct chan__qent **list, struct chan__qent *more)
{
	struct chan__qent **p = list;

	while (*p)
		p = &(*p)->next;
	*p = more;
}

void
chan__mux_fini(chan_conn *c)
{
	free_entries(c, queue_take(c, &c->mainq));
	chan__free(&c->allocator, c->spare);
	chan__free(&c->allocator, c->tab);
	chan__free(&c->allocator, c->outbox);
	pthread_cond_destroy(&c->mux_cond);
	pthread_mutex_destroy(&c->mux_lock);
}

bool
chan__mux_app_free(chan_conn *c)
{
	struct chan__qent *drop;
	bool last;

	pthread_mutex_lock(&c->mux_lock);
	c->app_freed = true;
	if (!c->dead)
		c->dead = CHAN_E_CONNECTION_CLOSED;
	drop = queue_take(c, &c->mainq);
	last = --c->refs == 0;
	pthread_cond_broadcast(&c->mux_cond);
	pthread_mutex_unlock(&c->mux_lock);
	free_entries(c, drop);
	return last;
}

/* ---- the table of channels (open addressing would do; chains are simpler) ---- */

static struct chan__chan *
tab_find(chan_conn *c, uint32_t key)
{
	if (!c->tabcap)
		return NULL;
	for (struct chan__chan *ch = c->tab[(key * 2654435761u) & (c->tabcap - 1)]; ch;
	     ch = ch->hnext)
		if (key_of(ch) == key)
			return ch;
	return NULL;
}

static int
tab_insert(chan_conn *c, struct chan__chan *ch)
{
	uint32_t k;

	if (c->nchans >= c->tabcap / 2 || !c->tabcap) { /* grow: load <= 1/2 */
		uint32_t cap = c->tabcap ? c->tabcap * 2 : 64;
		struct chan__chan **t = chan__alloc(&c->allocator, cap * sizeof(*t));

		if (!t)
			return CHAN_E_NO_MEMORY;
		memset(t, 0, cap * sizeof(*t));
		for (uint32_t i = 0; i < c->tabcap; i++) {
			struct chan__chan *e = c->tab[i], *next;

			for (; e; e = next) {
				next = e->hnext;
				k = (key_of(e) * 2654435761u) & (cap - 1);
				e->hnext = t[k];
				t[k] = e;
			}
		}
		chan__free(&c->allocator, c->tab);
		c->tab = t;
		c->tabcap = cap;
	}
	k = (key_of(ch) * 2654435761u) & (c->tabcap - 1);
	ch->hnext = c->tab[k];
	c->tab[k] = ch;
	ch->in_tab = true;
	return 0;
}

static void
tab_remove(chan_conn *c, struct chan__chan *ch)
{
	struct chan__chan **p;

	if (!ch->in_tab)
		return;
	for (p = &c->tab[(key_of(ch) * 2654435761u) & (c->tabcap - 1)]; *p; p = &(*p)->hnext)
		if (*p == ch) {
			*p = ch->hnext;
			break;
		}
	ch->in_tab = false;
}

/* ---- control frames (SPEC.md §17) ---- */

/* Append one control frame (flags, channel, the value msg) to the outbox.
 * Under mux_lock. */
static int
outbox_add(chan_conn *c, uint8_t flags, uint32_t channel, const chan_msg *msg)
{
	size_t len;
	int r;

	if (c->app_freed || c->send_sealed)
		return 0; /* the socket is closed, or an epitaph was the last frame */
	if ((r = chan_encoded_size(msg, &len)) < 0)
		return r;
	if (c->outlen + len > c->outcap) {
		size_t cap = c->outcap ? c->outcap * 2 : 256;
		unsigned char *p;

		while (cap < c->outlen + len)
			cap *= 2;
		if (!(p = chan__alloc(&c->allocator, cap)))
			return CHAN_E_NO_MEMORY;
		if (c->outlen)
			memcpy(p, c->outbox, c->outlen);
		chan__free(&c->allocator, c->outbox);
		c->outbox = p;
		c->outcap = cap;
	}
	chan_encode(msg, c->outbox + c->outlen, len, &len);
	c->outbox[c->outlen + 5] = flags;
	for (int i = 0; i < 4; i++)
		c->outbox[c->outlen + 8 + i] = (uint8_t)(channel >> (8 * i));
	c->outlen += len;
	return 0;
}

/* Try to write the outbox now, without blocking and without waiting for a
 * sender (a receive calls this after it queued a control frame).  If the
 * send lock is taken, its holder writes the outbox before its next frame,
 * or the next send or flush does. */
static void
outbox_kick(chan_conn *c)
{
	if (!c->outlen || pthread_mutex_trylock(&c->send_lock) != 0)
		return;
	if (!c->send_err && !c->slen)
		chan__outbox_write_locked(c, NULL);
	pthread_mutex_unlock(&c->send_lock);
}

static int
put_str(chan_msg *m, chan_value *map, const char *key, const char *s)
{
	return chan_map_put(map, key, chan_string(m, s));
}

/* {"op":"hello","features":{"epitaph":{},"channels":{}}[,"require":[...]]} */
static int
hello_add(chan_conn *c, unsigned require)
{
	chan_msg *m = chan_msg_new(&c->allocator);
	chan_value *root = chan_map(m), *f = chan_map(m);
	int r;

	put_str(m, root, "op", "hello");
	chan_map_put(f, "epitaph", chan_map(m));
	chan_map_put(f, "channels", chan_map(m));
	chan_map_put(root, "features", f);
	if (require) {
		chan_value *l = chan_list(m);

		if (require & CHAN_FEATURE_EPITAPH)
			chan_list_append(l, chan_string(m, "epitaph"));
		if (require & CHAN_FEATURE_CHANNELS)
			chan_list_append(l, chan_string(m, "channels"));
		chan_map_put(root, "require", l);
	}
	chan_msg_set_root(m, root);
	r = m ? outbox_add(c, CHAN__FLAG_CONTROL, 0, m) : CHAN_E_NO_MEMORY;
	chan_msg_free(m);
	return r;
}

/* {"op":"close"[,"code":N]} with END on the channel's key as the peer sees it. */
static int
close_add(chan_conn *c, uint32_t key, int code)
{
	chan_msg *m = chan_msg_new(&c->allocator);
	chan_value *root = chan_map(m);
	int r;

	put_str(m, root, "op", "close");
	if (code)
		chan_map_put(root, "code", chan_int(m, -code));
	chan_msg_set_root(m, root);
	r = m ? outbox_add(c, CHAN__FLAG_CONTROL | CHAN__FLAG_END,
			   key ^ CHAN__CHANNEL_THEIRS, m)
	      : CHAN_E_NO_MEMORY;
	chan_msg_free(m);
	return r;
}

static int
epitaph_add(chan_conn *c, int code, const char *message)
{
	chan_msg *m = chan_msg_new(&c->allocator);
	chan_value *root = chan_map(m);
	int r;

	put_str(m, root, "op", "epitaph");
	chan_map_put(root, "code", chan_int(m, -code));
	if (message && *message) {
		size_t n = strnlen(message, 1024);

		chan_map_put(root, "message", chan_string_n(m, message, n));
	}
	chan_msg_set_root(m, root);
	r = m ? outbox_add(c, CHAN__FLAG_CONTROL, 0, m) : CHAN_E_NO_MEMORY;
	chan_msg_free(m);
	return r;
}

/* An error of ours that the peer caused, worth an epitaph (§17.3 rule 2). */
static bool
epitaph_worthy(int err)
{
	switch (err) {
	case CHAN_E_BAD_MAGIC:
	case CHAN_E_UNSUPPORTED_VERSION:
	case CHAN_E_PAYLOAD_TOO_LARGE:
	case CHAN_E_HANDLES_TRUNCATED:
	case CHAN_E_MISATTACHED_HANDLES:
	case CHAN_E_UNSUPPORTED_FEATURE:
	case CHAN_E_CHANNEL_LIMIT_EXCEEDED:
		return true;
	}
	return false;
}

/* The connection failed fatally with err (under mux_lock): endpoints learn
 * it, and the peer gets an epitaph if it takes them and this side has no
 * frame half written. */
static void
conn_die(chan_conn *c, int err)
{
	if (!c->dead) {
		/* An error whose registry scope is not fatal (an unmet require,
		 * the main stream's overflow) is reported once, by the next
		 * receive; every later one says CONNECTION_CLOSED, which no event
		 * loop mistakes for "keep reading" (SPEC.md §9.4). */
		if (chan_error_scope(err) != CHAN_SCOPE_FATAL) {
			c->dead_once = err;
			c->dead = CHAN_E_CONNECTION_CLOSED;
		} else {
			c->dead = err;
		}
	}
	if ((c->peer_features & CHAN_FEATURE_EPITAPH) && epitaph_worthy(err) &&
	    !c->send_sealed && epitaph_add(c, err, chan_strerror(err)) == 0)
		c->send_sealed = true;
	pthread_cond_broadcast(&c->mux_cond);
}

/* ---- channels ---- */

static struct chan__chan *
chan_new(chan_conn *c, bool mine, uint32_t id)
{
	struct chan__chan *ch = chan__alloc(&c->allocator, sizeof(*ch));

	if (!ch)
		return NULL;
	memset(ch, 0, sizeof(*ch));
	ch->obj = CHAN__OBJ_CHANNEL;
	ch->mine = mine;
	ch->id = id;
	ch->conn = c;
	c->refs++;
	c->nchans++;
	return ch;
}

/* Drop a reference to ch (under mux_lock).  Its last one closes the channel
 * (§18.5 rule 3) and frees it; *ret_drop gets its queue, *ret_conn_last
 * whether the connection can now be freed. */
static void
chan_unref(chan_conn *c, struct chan__chan *ch, struct chan__qent **ret_drop,
	   bool *ret_conn_last)
{
	if (--ch->refs)
		return;
	if (ch->in_tab && !ch->end_sent && !ch->end_recv && !c->dead &&
	    close_add(c, key_of(ch), 0) == 0)
		ch->end_sent = true;
	tab_remove(c, ch);
	chain(ret_drop, queue_take(c, &ch->q));
	c->nchans--;
	*ret_conn_last = --c->refs == 0 && c->app_freed;
	chan__free(&c->allocator, ch);
}

static void
release(struct chan__chan *ch, bool app)
{
	chan_conn *c = ch->conn;
	struct chan__qent *drop = NULL;
	bool last = false;

	pthread_mutex_lock(&c->mux_lock);
	if (app)
		ch->app = false;
	chan_unref(c, ch, &drop, &last);
	pthread_mutex_unlock(&c->mux_lock);
	free_entries(c, drop);
	if (c->outlen)
		outbox_kick(c);
	if (last) {
		chan__mux_fini(c);
		chan__conn_free_struct(c);
	}
}

/* A message value lets go of its record (chan_msg_free). */
void
chan__chan_release(void *rec)
{
	release(rec, false);
}

void
chan__chan_free(struct chan__chan *ch)
{
	release(ch, true);
}

/* Queue e on q, then apply max_queued_bytes (§18.6 rule 3).  Under
 * mux_lock; frames to free go to *drop. */
static void
enqueue(chan_conn *c, struct chan__queue *q, struct chan__qent *e, struct chan__qent **drop)
{
	struct chan__queue *big = &c->mainq;
	struct chan__chan *bigch = NULL;

	queue_push(q, e);
	c->queued += e->bytes;
	if (c->queued <= c->max_queued)
		return;
	for (uint32_t i = 0; i < c->tabcap; i++)
		for (struct chan__chan *ch = c->tab[i]; ch; ch = ch->hnext)
			if (ch->q.bytes > big->bytes) {
				big = &ch->q;
				bigch = ch;
			}
	chain(drop, queue_take(c, big));
	if (!bigch) { /* the main stream cannot be reset */
		conn_die(c, CHAN_E_CHANNEL_LIMIT_EXCEEDED);
		return;
	}
	if (!bigch->end_sent && close_add(c, key_of(bigch), CHAN_E_CHANNEL_LIMIT_EXCEEDED) == 0)
		bigch->end_sent = true;
	bigch->report = CHAN_E_CHANNEL_LIMIT_EXCEEDED;
}

/* §18.3 rule 2: open the channels a data frame names (walk order).  Under
 * mux_lock.  On error the frame is rejected: its ids are used up, and the
 * opener is told with a close carrying the error. */
static int
open_received(chan_conn *c, chan_msg *msg)
{
	uint32_t n = 0, max = c->peer_max;
	int r = 0;

	for (chan_value *v = chan__msg_channels(msg); v; v = chan__channel_next(v)) {
		uint32_t id = chan_value_channel_id(v);

		if (id <= max && !r)
			r = CHAN_E_UNKNOWN_CHANNEL;
		if (id > max)
			max = id;
		n++;
	}
	if (!r && (uint64_t)c->nchans + n > c->max_channels)
		r = CHAN_E_CHANNEL_LIMIT_EXCEEDED;
	if (r == 0) {
		for (chan_value *v = chan__msg_channels(msg); v; v = chan__channel_next(v)) {
			struct chan__chan *ch = chan_new(c, false, chan_value_channel_id(v));

			if (!ch || tab_insert(c, ch) < 0) {
				if (ch) {
					c->nchans--;
					c->refs--;
					chan__free(&c->allocator, ch);
				}
				r = CHAN_E_NO_MEMORY;
				break;
			}
			ch->refs = 1; /* the value's */
			chan__channel_set(v, ch->id, ch);
		}
	}
	if (r < 0) {
		for (chan_value *v = chan__msg_channels(msg); v; v = chan__channel_next(v)) {
			uint32_t id = chan_value_channel_id(v);

			if (id > c->peer_max && !chan__channel_rec(v))
				close_add(c, id, r);
		}
	}
	c->peer_max = max;
	return r;
}

/* ---- receiving ---- */

/* A control frame (SPEC.md §17.2).  Under mux_lock.  Returns 0 (consumed),
 * a frame-scope error, or a fatal one (the epitaph's code, or an unmet
 * require). */
static int
control(chan_conn *c, const struct chan_header *h, chan_msg *msg, bool agreed)
{
	size_t n;
	const char *op = chan__control_op(msg, &n);
	chan_value *root = chan_msg_root(msg);
	int r;

	if (!agreed) { /* only a well-formed HELLO may come before agreement */
		unsigned f;
		bool unmet;

		if (!op || n != 5 || memcmp(op, "hello", 5) || h->handle_count ||
		    chan__hello_parse(msg, &f, &unmet) < 0)
			return CHAN_E_RESERVED_FIELD_NONZERO;
	}
	if ((r = chan__control_check(h, msg)) < 0)
		return r;
	if (n == 5 && !memcmp(op, "hello", 5)) {
		unsigned f;
		bool unmet;

		chan__hello_parse(msg, &f, &unmet); /* well formed: checked above */
		if (c->hello_recv)
			return 0; /* §16.2 rule 5: a second HELLO is ignored */
		c->hello_recv = true;
		c->peer_features = f;
		atomic_store(&c->accept,
			     CHAN__ACCEPT_HELLO | CHAN__ACCEPT_AGREED | CHAN__ACCEPT_CHANNELS);
		if (!c->hello_sent && hello_add(c, 0) == 0)
			c->hello_sent = true;
		if (unmet) {
			conn_die(c, CHAN_E_UNSUPPORTED_FEATURE);
			return CHAN_E_UNSUPPORTED_FEATURE;
		}
		return 0;
	}
	if (n == 7 && !memcmp(op, "epitaph", 7)) {
		int64_t code = 0;
		const char *m = "";
		size_t mlen = 0;

		if (chan_map_get_int(root, "code", &code) < 0 || code < 1 || code > 255)
			code = -CHAN_E_CONNECTION_CLOSED;
		chan_map_get_string(root, "message", &m, &mlen);
		c->epitaph_code = -(int)code;
		snprintf(c->epitaph_msg, sizeof(c->epitaph_msg), "%.*s", (int)mlen, m);
		c->dead = CHAN_E_CONNECTION_CLOSED; /* every later receive */
		c->send_sealed = true;
		pthread_cond_broadcast(&c->mux_cond);
		/* A code of local scope means something only where it was raised
		 * (WOULD_BLOCK from a blocking receive would lie): chan_conn_epitaph
		 * has it (SPEC.md §17.3 rule 3). */
		if (chan_error_scope(-(int)code) == CHAN_SCOPE_LOCAL)
			return CHAN_E_CONNECTION_CLOSED;
		return -(int)code;
	}
	if (n == 5 && !memcmp(op, "close", 5)) {
		struct chan__chan *ch;
		int64_t code = 0;

		if (!(ch = tab_find(c, h->channel)) || ch->end_recv || ch->end_sent)
			return 0; /* closed already: only the first END counts (§18.5) */
		chan_map_get_int(root, "code", &code);
		ch->end_recv = true;
		/* A code of fatal or local scope would misstate the connection's
		 * state on an endpoint: only frame-scope (and unknown) codes are
		 * reported (SPEC.md §18.5 rule 2). */
		if (code > 0 && code <= 255 && chan_error_scope(-(int)code) != CHAN_SCOPE_FATAL &&
		    chan_error_scope(-(int)code) != CHAN_SCOPE_LOCAL)
			ch->report = -(int)code;
		return 0;
	}
	return 0; /* an unknown operation that is not critical: ignored */
}

/* Is a frame on this channel field one that §18.4 rule 2 discards (a
 * channel that was open and was closed here) rather than UNKNOWN_CHANNEL? */
static bool
closed_here(const chan_conn *c, uint32_t channel)
{
	uint32_t id = channel & ~CHAN__CHANNEL_THEIRS;

	return channel & CHAN__CHANNEL_THEIRS ? id <= c->next_id : id <= c->peer_max;
}

/*
 * Route one frame that chan__read_frame returned (r, h, msg) to its
 * endpoint, in the entry e (allocated before the read, so that routing
 * cannot fail).  Under mux_lock.  Returns 1 if the frame (or its error) is
 * for `want` (it is in e), 0 if it was queued elsewhere (e used) or
 * consumed (e unused: *ret_unused), or an error for the reader: fatal, or
 * the peer's epitaph.  Messages to free go to *ret_free, entries to *drop.
 */
static int
dispatch(chan_conn *c, struct chan__chan *want, int r, const struct chan_header *h,
	 chan_msg *msg, struct chan__qent *e, bool *ret_unused, struct chan__qent **drop,
	 chan_msg **ret_free)
{
	bool agreed = atomic_load(&c->accept) & CHAN__ACCEPT_AGREED;
	struct chan__chan *to = NULL;
	bool discard = false;

	*ret_unused = true;
	/* Before agreement a frame with flags is a HELLO or a 1.0 error. */
	if (!agreed && h->flags && r < 0)
		r = CHAN_E_RESERVED_FIELD_NONZERO;
	if (r == 0 && (h->flags & CHAN__FLAG_CONTROL)) {
		*ret_free = msg;
		msg = NULL;
		r = control(c, h, *ret_free, agreed);
		if (r == 0)
			return 0;
		if (chan_error_scope(r) != CHAN_SCOPE_FRAME || c->dead) {
			if (c->dead_once == r)
				c->dead_once = 0; /* this receive reports it */
			return r; /* an unmet require, or the peer's epitaph */
		}
	}
	if (h->channel)
		to = tab_find(c, h->channel);
	if (to && to->end_recv) { /* sent after its sender's END (§18.5 rule 1) */
		if (msg)
			*ret_free = msg;
		return 0;
	}
	if (h->channel && !to && r == 0) {
		if (closed_here(c, h->channel))
			discard = true; /* §18.4: sent before the peer learnt of the close */
		else
			r = CHAN_E_UNKNOWN_CHANNEL;
	}
	if (r == 0 && msg)
		r = open_received(c, msg); /* on error its channels were closed (§18.3) */
	if (to && (h->flags & CHAN__FLAG_END))
		to->end_recv = true;
	if (msg && (r < 0 || discard || (to && to->end_sent))) {
		*ret_free = msg; /* rejected, or for a channel closed here */
		msg = NULL;
	}
	if (discard || (to && to->end_sent))
		return 0;
	*ret_unused = false;
	e->msg = msg;
	e->err = msg ? 0 : r;
	e->bytes = CHAN_HEADER_SIZE + (size_t)h->payload_length + QENT_OVERHEAD;
	if (to == want)
		return 1;
	enqueue(c, to ? &to->q : &c->mainq, e, drop);
	return 0;
}

/* What an endpoint reports when its queue is empty, or 0 to read on. */
static int
endpoint_state(chan_conn *c, struct chan__chan *ch)
{
	int r;

	if (ch && ch->report) {
		r = ch->report;
		ch->report = 0;
		return r;
	}
	if (ch && (ch->end_recv || ch->end_sent))
		return CHAN_E_CHANNEL_CLOSED;
	if (ch && ch->mine && !ch->given)
		return CHAN_E_INVALID_ARGUMENT; /* nothing can arrive before its handle left */
	if (c->dead_once) {
		r = c->dead_once;
		c->dead_once = 0;
		return r;
	}
	return c->dead;
}

int
chan__recv(chan_conn *c, struct chan__chan *ch, int timeout_ms, chan_msg **ret_msg)
{
	struct chan__qent *e = NULL, *spare = NULL;
	struct chan__deadline d;
	int r;

	chan__deadline_start(&d, timeout_ms);
	pthread_mutex_lock(&c->mux_lock);
	for (;;) {
		struct chan__qent *drop = NULL;
		struct chan_header h = {0};
		chan_msg *msg = NULL, *trash = NULL;
		bool unused;

		if ((e = queue_pop(ch ? &ch->q : &c->mainq))) {
			c->queued -= e->bytes;
			break;
		}
		if ((r = endpoint_state(c, ch)) < 0)
			goto out;
		if (c->reading) { /* another thread reads: wait for its news */
			if (d.timeout_ms == 0) {
				r = CHAN_E_WOULD_BLOCK;
				goto out;
			}
			r = d.timeout_ms < 0 ? pthread_cond_wait(&c->mux_cond, &c->mux_lock)
					     : pthread_cond_clockwait(&c->mux_cond, &c->mux_lock,
								      CLOCK_MONOTONIC, &d.at);
			if (r == ETIMEDOUT) {
				r = CHAN_E_TIMEOUT;
				goto out;
			}
			continue;
		}
		/* Become the reader.  The entry the frame may need is allocated
		 * first: NO_MEMORY must lose nothing (§9.4). */
		if (!spare && (spare = c->spare))
			c->spare = NULL;
		if (!spare && !(spare = chan__alloc(&c->allocator, sizeof(*spare)))) {
			r = CHAN_E_NO_MEMORY;
			goto out;
		}
		c->reading = true;
		pthread_mutex_unlock(&c->mux_lock);
		r = chan__read_frame(c, &d, &h, &msg);
		pthread_mutex_lock(&c->mux_lock);
		c->reading = false;
		pthread_cond_broadcast(&c->mux_cond);
		if (r < 0 && chan_error_scope(r) != CHAN_SCOPE_FRAME) {
			/* fatal (sticky in io.c), or local (nothing lost) */
			if (chan_error_scope(r) == CHAN_SCOPE_FATAL)
				conn_die(c, r);
			goto out;
		}
		r = dispatch(c, ch, r, &h, msg, spare, &unused, &drop, &trash);
		if (!unused) {
			e = spare;
			spare = NULL;
		}
		if (trash || drop || c->outlen) {
			pthread_mutex_unlock(&c->mux_lock);
			chan_msg_free(trash);
			free_entries(c, drop);
			outbox_kick(c);
			pthread_mutex_lock(&c->mux_lock);
		}
		if (r < 0)
			goto out;
		if (r == 1)
			break;
		e = NULL;
	}
	/* e is this endpoint's frame, or its error; the entries go back as
	 * the connection's spare (one read needs one) */
	r = e->msg ? 0 : e->err;
	if (e->msg)
		*ret_msg = e->msg;
	if (!c->spare) {
		c->spare = e;
		e = NULL;
	}
	if (spare && !c->spare) {
		c->spare = spare;
		spare = NULL;
	}
	pthread_mutex_unlock(&c->mux_lock);
	chan__free(&c->allocator, spare);
	chan__free(&c->allocator, e);
	return r;
out:
	if (spare && !c->spare) {
		c->spare = spare;
		spare = NULL;
	}
	pthread_mutex_unlock(&c->mux_lock);
	chan__free(&c->allocator, spare);
	if (c->outlen)
		outbox_kick(c);
	return r;
}

/* ---- sending ---- */

int
chan__frame_route(chan_conn *c, struct chan__chan *ch, bool last, uint8_t *ret_flags,
		  uint32_t *ret_channel)
{
	int r = 0;

	if (!ch)
		return 0;
	pthread_mutex_lock(&c->mux_lock);
	if (c->dead)
		r = CHAN_E_CONNECTION_CLOSED;
	else if (ch->end_sent || ch->end_recv)
		r = CHAN_E_CHANNEL_CLOSED;
	else if (ch->mine && !ch->given)
		r = CHAN_E_INVALID_ARGUMENT; /* §18.3 rule 1: its handle goes first */
	*ret_channel = key_of(ch) ^ CHAN__CHANNEL_THEIRS;
	*ret_flags = last ? CHAN__FLAG_END : 0;
	pthread_mutex_unlock(&c->mux_lock);
	return r;
}

void
chan__frame_sent(chan_conn *c, struct chan__chan *ch, bool last)
{
	if (!ch || !last)
		return;
	pthread_mutex_lock(&c->mux_lock);
	ch->end_sent = true;
	pthread_mutex_unlock(&c->mux_lock);
}

struct assign {
	chan_conn *c;
	int err;
};

static int
assign_one(chan_value *v, void *ctx)
{
	struct assign *a = ctx;
	struct chan__chan *ch = chan__channel_rec(v);

	if (!ch || !ch->mine || ch->conn != a->c || ch->given || ch->id)
		return CHAN_E_CHANNEL_NOT_TRANSFERABLE;
	if (a->c->next_id == 0x7fffffffu)
		return CHAN_E_CHANNEL_LIMIT_EXCEEDED;
	ch->id = ++a->c->next_id;
	chan__channel_set(v, ch->id, ch);
	return 0;
}

int
chan__channels_assign(chan_conn *c, const chan_msg *msg)
{
	struct assign a = {c, 0};
	uint32_t before;
	int r;

	pthread_mutex_lock(&c->mux_lock);
	before = c->next_id;
	if (!(c->peer_features & CHAN_FEATURE_CHANNELS) &&
	    !(c->required & CHAN_FEATURE_CHANNELS))
		r = CHAN_E_UNSUPPORTED_FEATURE;
	else
		r = chan__msg_walk_channels(msg, assign_one, &a);
	if (r < 0) { /* undo: nothing was sent */
		for (chan_value *v = chan__msg_channels(msg); v; v = chan__channel_next(v)) {
			struct chan__chan *ch = chan__channel_rec(v);

			if (ch && ch->mine && !ch->given && ch->id > before) {
				ch->id = 0;
				chan__channel_set(v, 0, ch);
			}
		}
		c->next_id = before;
	}
	pthread_mutex_unlock(&c->mux_lock);
	return r;
}

void
chan__channels_commit(chan_conn *c, const chan_msg *msg, bool sent)
{
	pthread_mutex_lock(&c->mux_lock);
	for (chan_value *v = chan__msg_channels(msg); v; v = chan__channel_next(v)) {
		struct chan__chan *ch = chan__channel_rec(v);

		if (!ch || !ch->mine || ch->given || !ch->id || ch->conn != c)
			continue;
		if (sent) {
			ch->given = true;
			if (tab_insert(c, ch) < 0)
				ch->end_sent = true; /* cannot receive on it: say closed */
		} else {
			ch->id = 0;
			chan__channel_set(v, 0, ch);
		}
	}
	if (!sent) { /* the ids go back: the frame never left */
		uint32_t max = 0;

		for (uint32_t i = 0; i < c->tabcap; i++)
			for (struct chan__chan *ch = c->tab[i]; ch; ch = ch->hnext)
				if (ch->mine && ch->id > max)
					max = ch->id;
		c->next_id = max;
	}
	pthread_mutex_unlock(&c->mux_lock);
}

/* ---- the public calls ---- */

CHAN_EXPORT chan_value *
chan_channel_open(chan_msg *msg, chan_conn *conn, chan_conn **ret_channel)
{
	struct chan__chan *ch = NULL;
	chan_value *v;
	int r = 0;

	if (!msg || chan_msg_error(msg))
		return NULL;
	if (!conn || !ret_channel) {
		chan__poison(msg, CHAN_E_INVALID_ARGUMENT, "chan_channel_open: %s is NULL",
			     conn ? "ret_channel" : "conn");
		return NULL;
	}
	if (CHAN__IS_CHANNEL(conn))
		conn = ((struct chan__chan *)(void *)conn)->conn;
	pthread_mutex_lock(&conn->mux_lock);
	if (!((conn->peer_features | conn->required) & CHAN_FEATURE_CHANNELS))
		r = CHAN_E_UNSUPPORTED_FEATURE;
	else if (conn->dead)
		r = CHAN_E_CONNECTION_CLOSED;
	else if (conn->nchans >= conn->max_channels)
		r = CHAN_E_CHANNEL_LIMIT_EXCEEDED;
	else if (!(ch = chan_new(conn, true, 0)))
		r = CHAN_E_NO_MEMORY;
	else
		ch->refs = 2; /* the endpoint, and the value */
	pthread_mutex_unlock(&conn->mux_lock);
	if (r < 0) {
		chan__poison(msg, r, "chan_channel_open: %s",
			     r == CHAN_E_UNSUPPORTED_FEATURE
				     ? "the peer has not announced \"channels\" (SPEC.md §16)"
				     : chan_strerror(r));
		return NULL;
	}
	ch->app = true;
	v = chan__channel_new(msg, "chan_channel_open", 0, ch);
	if (!v) {
		release(ch, false);
		release(ch, true);
		return NULL;
	}
	*ret_channel = (chan_conn *)(void *)ch;
	return v;
}

/* A received channel value becomes the application's endpoint. */
int
chan__channel_take(chan_value *v, chan_conn **ret_conn)
{
	struct chan__chan *ch = chan__channel_rec(v);

	if (!ch || ch->mine)
		return CHAN_E_INVALID_ARGUMENT; /* not received, taken, or ours to send */
	pthread_mutex_lock(&ch->conn->mux_lock);
	ch->app = true; /* the value's reference becomes the endpoint's */
	pthread_mutex_unlock(&ch->conn->mux_lock);
	chan__channel_set(v, ch->id, NULL);
	*ret_conn = (chan_conn *)(void *)ch;
	return 0;
}

CHAN_EXPORT uint32_t
chan_conn_channel_id(const chan_conn *c)
{
	const struct chan__chan *ch;

	if (!c || !CHAN__IS_CHANNEL(c))
		return 0;
	ch = (const struct chan__chan *)(const void *)c;
	return ch->mine ? ch->id : ch->id | CHAN__CHANNEL_THEIRS;
}

CHAN_EXPORT int
chan_conn_hello(chan_conn *c, unsigned require, int timeout_ms)
{
	int r = 0;

	if (!c || CHAN__IS_CHANNEL(c) || (require & ~(unsigned)OUR_FEATURES))
		return CHAN_E_INVALID_ARGUMENT;
	pthread_mutex_lock(&c->mux_lock);
	if (c->hello_sent)
		r = CHAN_E_INVALID_ARGUMENT;
	else if ((r = hello_add(c, require)) == 0) {
		c->hello_sent = true;
		c->required = require;
	}
	pthread_mutex_unlock(&c->mux_lock);
	return r < 0 ? r : chan_conn_flush(c, timeout_ms);
}

CHAN_EXPORT unsigned
chan_conn_features(const chan_conn *c)
{
	chan_conn *m;
	unsigned f;

	if (!c)
		return 0;
	m = CHAN__IS_CHANNEL(c) ? ((const struct chan__chan *)(const void *)c)->conn
				: (chan_conn *)(uintptr_t)c;
	pthread_mutex_lock(&m->mux_lock);
	f = (m->peer_features | m->required) & OUR_FEATURES;
	pthread_mutex_unlock(&m->mux_lock);
	return f;
}

CHAN_EXPORT int
chan_conn_send_epitaph(chan_conn *c, int code, const char *message, int timeout_ms)
{
	int r;

	if (!c || CHAN__IS_CHANNEL(c) || code == 0 || code < -255 || code > 255)
		return CHAN_E_INVALID_ARGUMENT;
	if (code > 0)
		code = -code;
	pthread_mutex_lock(&c->mux_lock);
	if (!(c->peer_features & CHAN_FEATURE_EPITAPH))
		r = CHAN_E_UNSUPPORTED_FEATURE;
	else if (c->send_sealed)
		r = CHAN_E_CONNECTION_CLOSED;
	else if ((r = epitaph_add(c, code, message)) == 0)
		c->send_sealed = true;
	pthread_mutex_unlock(&c->mux_lock);
	if (r < 0)
		return r;
	r = chan_conn_flush(c, timeout_ms);
	if (r == 0)
		shutdown(c->fd, SHUT_WR); /* the epitaph is the last frame (§17.3) */
	return r;
}

CHAN_EXPORT const char *
chan_conn_epitaph(const chan_conn *c, int *ret_code)
{
	if (!c || CHAN__IS_CHANNEL(c) || !c->epitaph_code)
		return NULL;
	if (ret_code)
		*ret_code = c->epitaph_code;
	return c->epitaph_msg;
}

CHAN_EXPORT int
chan_conn_set_channel_limits(chan_conn *c, uint32_t max_channels, uint64_t max_queued_bytes)
{
	if (!c || CHAN__IS_CHANNEL(c) || max_channels > CHAN_HARD_MAX_CHANNELS ||
	    max_queued_bytes > CHAN_HARD_MAX_QUEUED_BYTES)
		return CHAN_E_INVALID_ARGUMENT;
	pthread_mutex_lock(&c->mux_lock);
	c->max_channels = max_channels ? max_channels : CHAN_DEFAULT_MAX_CHANNELS;
	c->max_queued = max_queued_bytes ? max_queued_bytes : CHAN_DEFAULT_MAX_QUEUED_BYTES;
	pthread_mutex_unlock(&c->mux_lock);
	return 0;
}
