/*
 * demo.h - the pieces of the chan demo (see demo.c for the story).
 */
#ifndef CHAN_DEMO_H
#define CHAN_DEMO_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "chan.h"

/* Every wait in the demo is bounded: a bug fails the demo, never hangs it. */
#define DEMO_TIMEOUT_MS 5000

/* Print "[who pid] text" as one write, so lines of concurrent processes
 * and threads never mix. */
void say(const char *who, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Open file descriptors of this process (entries of /proc/self/fd). */
int count_open_fds(void);

/* fib(n), n <= 92. */
int64_t demo_fib(int64_t n);

/* Answer on a reply endpoint: on a channel as its last frame (END, so no
 * close frame follows), on a connection as a plain frame. */
int demo_reply(chan_conn *reply, const chan_msg *m);

/* An optional int: dflt when absent, an error when of another type. */
int demo_get_int_or(const chan_value *map, const char *key, int64_t dflt, int64_t *ret);

/* producer.c: connect to the consumer at path, ask questions, check the
 * answers, say goodbye.  With channels, each reply_to is a channel of the
 * producer's connection (SPEC.md §18) instead of a fresh connection pair.
 * Returns the number of questions answered correctly, or -1 if the
 * producer could not run. */
int producer_run(const char *path, const char *name, int seed, bool channels);
#define QUESTIONS_PER_PRODUCER 3

/* actor.c: resolve futures for jobs arriving on conn until it closes.
 * Takes conn.  Returns 0 on success.  Jobs:
 *   {"op": "fib", "n": n, "for": name, "resolve": <conn or channel>,
 *    "delay_ms": ms (default 10), "quiet": bool (default false)}
 *     answered {"value": fib(n)} on resolve (END on a channel);
 *   {"op": "hold", "count": k}: receive the next k jobs before answering
 *     any, so that k requests are in flight at once; their answers also
 *     carry "fds" (the actor's open fds while holding them) and
 *     "fds_before" (at rest: when the actor started). */
int actor_run(chan_conn *conn);

/* load.c: the actor's workload from the requesting side.  total fib jobs
 * go to the actor on conn, at most window outstanding, each with a fresh
 * reply endpoint (a channel of conn, or one end of a connection pair); every
 * value is checked.  hold (total == window): the actor is told to hold them
 * all first.  Returns 0, or the first error (said). */
struct load {
	int total, window;
	bool channels, hold;
	int fds_base;        /* out: this process's open fds before the first job */
	int fds_peak;        /* out: ... at most, while jobs were in flight (counted
			      * every 256 jobs; hold: once all are in flight) */
	int actor_fds;       /* out (hold): the actor's, holding them all */
	int actor_fds_before; /* out (hold): the actor's, before */
	double seconds;      /* out: from the first send to the last answer */
};
int actor_load(chan_conn *conn, struct load *ld);

/* demo.c: start `chan-demo actor` with the other end of a fresh pair as its
 * fd 3 (quiet_stdout: its stdout on our stderr, and only a failure said there); *ret_conn is our end. */
pid_t spawn_actor(chan_conn **ret_conn, bool quiet_stdout);
/* Wait for a child; 0 if it exited with status 0 (said otherwise). */
int reap(pid_t pid);

/* load.c: chan-demo --bench-actor [--json]: requests/s of the actor
 * workload with reply_to connections and with channels. */
int bench_actor_main(int argc, char **argv);

#endif
