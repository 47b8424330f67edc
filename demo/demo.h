/*
 * demo.h - the pieces of the chan demo (see demo.c for the story).
 */
#ifndef CHAN_DEMO_H
#define CHAN_DEMO_H

#include <stdint.h>

#include "chan.h"

/* Every wait in the demo is bounded: a bug fails the demo, never hangs it. */
#define DEMO_TIMEOUT_MS 5000

/* Print "[who pid] text" as one write, so lines of concurrent processes
 * and threads never mix. */
void say(const char *who, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Open file descriptors of this process (entries of /proc/self/fd). */
int count_open_fds(void);

/* producer.c: connect to the consumer at path, ask questions, check the
 * answers, say goodbye.  Returns the number of questions answered
 * correctly, or -1 if the producer could not run. */
int producer_run(const char *path, const char *name, int seed);
#define QUESTIONS_PER_PRODUCER 3

/* actor.c: resolve futures for jobs arriving on conn until it closes.
 * Takes conn.  Returns 0 on success. */
int actor_run(chan_conn *conn);

#endif
