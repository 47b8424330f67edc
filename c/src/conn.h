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
 * proceed in parallel.  Waiting for a lock counts against the caller's
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

struct chan_conn {
	int fd;
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
	int recv_err; /* sticky */
};

/* A connection on fd, which the caller knows to be a connected AF_UNIX
 * stream socket.  Takes fd on success only. */
CHAN_HIDDEN int chan__conn_new(int fd, chan_conn **ret_conn);
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
CHAN_HIDDEN void chan__deadline_start(struct chan__deadline *d, int timeout_ms);
/* Wait until fd is ready for events or the deadline passes. */
CHAN_HIDDEN int chan__wait_fd(int fd, short events, const struct chan__deadline *d);
CHAN_HIDDEN int chan__lock(pthread_mutex_t *m, const struct chan__deadline *d);

#endif /* CHAN_CONN_H */
