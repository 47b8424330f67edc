/*
 * conn.h - the transport's private declarations: struct chan_conn, shared by
 * conn.c (the connection object: making, moving, freeing, options), io.c
 * (framing: sending and receiving frames) and listener.c (listen, accept,
 * connect).  The transport reaches the codec only through codec.h and the
 * operating system only through platform.h.
 *
 * Threading model.  A chan_conn may be shared by threads.  Two mutexes guard
 * it: the send lock (chan_conn_send, chan_conn_flush and the send-side state:
 * the committed remainder, the encoder's scratch, the peer's socket id, the
 * sticky send error) and the receive lock (chan_conn_recv, limits, allocator
 * and the receive-side state: the partial frame and its fds, the sticky
 * receive error).  A whole frame is written under the send lock, so frames
 * of concurrent senders never interleave; a whole frame is read under the
 * receive lock, so each receiver gets whole frames.  A send and a receive
 * proceed in parallel.  Revision 1.1 (channel.c) adds the mux lock, taken
 * briefly after either of the others (never before, never while a message
 * is freed): what the peer announced, the channel table, the queues of
 * frames for endpoints nobody is reading, and the outbox of control frames.
 * One thread at a time holds the reader role (`reading`); others wait on
 * mux_cond for the frames it queues for them.  Waiting for a lock counts against the caller's
 * timeout (timeout 0 never waits for it either).  chan_conn_free must not
 * race with any other call on the same connection.  A chan_listener is for
 * one thread at a time.
 */
#ifndef CHAN_CONN_H
#define CHAN_CONN_H

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "codec.h"

enum { PEER_UNKNOWN = 0, PEER_KNOWN = 1, PEER_UNAVAILABLE = 2 };

/* A chan_conn * is either a connection or a channel endpoint (channel.c):
 * both structs start with this byte. */
enum { CHAN__OBJ_CONN = 0x5c, CHAN__OBJ_CHANNEL = 0xc5 };
#define CHAN__IS_CHANNEL(c) (*(const uint8_t *)(const void *)(c) == CHAN__OBJ_CHANNEL)

/* A frame (or a frame's error) waiting for an endpoint to read it. */
struct chan__qent {
	struct chan__qent *next;
	chan_msg *msg; /* NULL: err is the frame's error */
	int err;
	size_t bytes; /* what it counts against max_queued_bytes */
};
struct chan__queue {
	struct chan__qent *head, *tail;
	size_t bytes;
};
struct chan__chan;

struct chan_conn {
	uint8_t obj; /* CHAN__OBJ_CONN */
	bool fresh_pair; /* both ends made by chan_conn_pair: the socket is no
			  * older than `birth` */
	int fd;
	uint64_t birth; /* when this process wrapped the socket (a counter) */
	_Atomic uint64_t id; /* the socket's identity (inode); 0 until needed */
	struct chan_allocator allocator; /* buffers and received messages */

	pthread_mutex_t send_lock;
	unsigned char *sbuf; /* the frame being sent */
	size_t scap;
	unsigned sbuf_idle; /* frames in a row that used < 1/4 of sbuf */
	size_t slen; /* frame size; 0 when nothing is pending */
	size_t soff; /* bytes written */
	atomic_int pending;
	int send_err; /* sticky */
	int peer_state;
	uint64_t peer_id;
	struct chan__enc enc;

	pthread_mutex_t recv_lock;
	struct chan_limits limits;
	unsigned char *rbuf; /* header, then payload, of the frame being read */
	size_t rcap;
	unsigned rbuf_idle;
	size_t rgot;  /* bytes of the frame read so far */
	size_t rsize; /* frame size once the header is read, else 0 */
	struct chan_header rh; /* the header, read and checked once */
	int rframe_err;        /* its frame-scope error, reported after the payload */
	int fds[CHAN_HARD_MAX_HANDLES]; /* descriptors of the frame being read */
	size_t nfds;
	/* rbuf may hold bytes of later frames (a read covers the rest of the
	 * current frame and reads ahead, SPEC.md §10.3): rgot counts every
	 * byte in rbuf.  Descriptors a read returned for a later frame wait
	 * here until that frame, which starts at rbuf + pfds_at, is current. */
	int pfds[CHAN_HARD_MAX_HANDLES];
	size_t npfds;
	size_t pfds_at;
	int recv_err; /* sticky */

	/* ---- revision 1.1 (channel.c): features, control frames, channels.
	 * Under mux_lock, which is taken after the send or receive lock, never
	 * before, and never held while a message is freed. ---- */
	pthread_mutex_t mux_lock;
	pthread_cond_t mux_cond;   /* a frame was dispatched, or the reader left */
	_Atomic unsigned accept;   /* CHAN__ACCEPT_*: what the header check allows */
	unsigned refs;             /* 1 until chan_conn_free, + 1 per channel record */
	bool app_freed;
	bool reading;              /* a thread holds the reader role */
	bool hello_sent, hello_recv;
	bool send_sealed;          /* an epitaph went into the outbox: no more frames */
	unsigned peer_features;    /* announced by the peer's HELLO */
	unsigned required;         /* our HELLO's require */
	int dead;                  /* the connection's fatal error, for endpoints */
	int dead_once;             /* a non-fatal-scope code that killed it, reported once */
	uint32_t next_id;          /* the last id this side assigned */
	uint32_t peer_max;         /* the highest id the peer opened */
	uint32_t nchans;           /* channel records */
	uint32_t max_channels;
	uint64_t max_queued;
	uint64_t queued;           /* bytes queued on all endpoints */
	struct chan__chan **tab;   /* open channels by wire key; tabcap slots */
	uint32_t tabcap;
	struct chan__queue mainq;  /* frames of the main stream nobody was reading */
	struct chan__qent *spare;  /* an entry kept for the next read */
	unsigned char *outbox;     /* control frames waiting to be sent */
	_Atomic size_t outlen;     /* (peeked without the lock by senders) */
	size_t outcap;
	int epitaph_code;          /* the peer's, 0 if none */
	char epitaph_msg[256];
};

/* A connection on fd, which the caller knows to be a connected AF_UNIX
 * stream socket.  Takes fd on success only. */
CHAN_HIDDEN int chan__conn_new(int fd, chan_conn **ret_conn);
/* A conn handle's identity for the self-send check (SPEC.md §10.6): its
 * socket's inode, or, for an end of a pair this process made, its birth
 * tagged with this bit (no system call: such a socket is newer than every
 * connection wrapped before it, so it can be neither of them nor a peer). */
#define CHAN__BIRTH_TAG (UINT64_C(1) << 63)
CHAN_HIDDEN uint64_t chan__conn_handle_id(const chan_conn *c);
/* The socket's identity, looked up once; 0 if it cannot be had. */
CHAN_HIDDEN uint64_t chan__conn_id(chan_conn *c);

/* One sendmsg of the pieces iov[0..niov) with nfds descriptors on the first
 * byte (sock.c; chan_sock_send is this with one piece). */
struct iovec;
CHAN_HIDDEN ssize_t chan__sock_sendv(int sock, const struct iovec *iov, size_t niov,
				     const int *fds, size_t nfds, bool dontwait);

/* ---- deadlines (io.c) ---- */
struct chan__deadline {
	int timeout_ms; /* as given: -1 forever, 0 never wait */
	struct timespec at;
};
/* Finite timeouts use MSG_DONTWAIT and poll; -1 blocks in the call. */
#define CHAN__DONTWAIT(d) ((d)->timeout_ms >= 0)
/* Wait until fd is ready for events or the deadline passes. */
CHAN_HIDDEN int chan__wait_fd(int fd, short events, const struct chan__deadline *d);
CHAN_HIDDEN int chan__lock(pthread_mutex_t *m, const struct chan__deadline *d);

/* ---- io.c, used by channel.c ---- */
/* Read one whole frame (the reader role is the caller's): 0 with *ret_msg;
 * a frame-scope error (frame consumed); a fatal one (sticky); or a local one
 * (nothing lost).  *ret_header is valid unless the error is fatal or local. */
CHAN_HIDDEN int chan__read_frame(chan_conn *c, const struct chan__deadline *d,
				 struct chan_header *ret_header, chan_msg **ret_msg);
/* The send path on the connection c, for a frame already in iov (header
 * included).  Flushes the outbox first.  Under no lock. */
CHAN_HIDDEN int chan__send_msg(chan_conn *c, struct chan__chan *ch, const chan_msg *msg,
			       bool last, int timeout_ms);
CHAN_HIDDEN int chan__send_writer(chan_conn *c, struct chan__chan *ch, const chan_writer *w,
				  bool last, int timeout_ms);
/* Write the outbox (under the send lock, nothing pending): as much as
 * goes without blocking when d is NULL, else all of it by d. */
CHAN_HIDDEN int chan__outbox_write_locked(chan_conn *c, const struct chan__deadline *d);
CHAN_HIDDEN void chan__deadline_start(struct chan__deadline *d, int timeout_ms);

/* ---- channel.c ---- */
CHAN_HIDDEN int chan__mux_init(chan_conn *c);
/* The connection is being freed by its application; true if the struct
 * may be released now (no channel record left). */
CHAN_HIDDEN bool chan__mux_app_free(chan_conn *c);
CHAN_HIDDEN void chan__mux_fini(chan_conn *c);
/* Receive for the main stream (ch NULL) or a channel endpoint. */
CHAN_HIDDEN int chan__recv(chan_conn *c, struct chan__chan *ch, int timeout_ms,
			   chan_msg **ret_msg);
/* Under the send lock, before a frame of msg goes out on c: give the
 * channels msg opens their ids (rolled back by chan__channels_commit(...,
 * false) if the frame is not committed). */
CHAN_HIDDEN int chan__channels_assign(chan_conn *c, const chan_msg *msg);
CHAN_HIDDEN void chan__channels_commit(chan_conn *c, const chan_msg *msg, bool sent);
/* Frame header fields for a frame sent on endpoint ch (NULL: main), or a
 * local error (CHANNEL_CLOSED, CONNECTION_CLOSED).  last: END. */
CHAN_HIDDEN int chan__frame_route(chan_conn *c, struct chan__chan *ch, bool last,
				  uint8_t *ret_flags, uint32_t *ret_channel);
CHAN_HIDDEN void chan__frame_sent(chan_conn *c, struct chan__chan *ch, bool last);
/* The connection an endpoint belongs to. */
CHAN_HIDDEN chan_conn *chan__chan_conn(struct chan__chan *ch);
/* The application frees an endpoint. */
CHAN_HIDDEN void chan__chan_free(struct chan__chan *ch);
/* A received channel value becomes the application's endpoint. */
CHAN_HIDDEN int chan__channel_take(chan_value *v, chan_conn **ret_conn);
/* conn.c: release the memory of a connection whose socket is closed. */
CHAN_HIDDEN void chan__conn_free_struct(chan_conn *c);

#endif /* CHAN_CONN_H */
