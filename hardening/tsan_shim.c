/*
 * tsan_shim.c - for `make test-tsan` only.  ThreadSanitizer of clang 14 does
 * not intercept pthread_mutex_clocklock, which conn.c uses for finite
 * timeouts: it then sees every such unlock as an unlock of an unlocked
 * mutex and loses the happens-before of the lock.  This definition (in the
 * executable, so it wins over libc's) turns the CLOCK_MONOTONIC deadline
 * into a CLOCK_REALTIME one and calls pthread_mutex_timedlock, which TSan
 * does intercept.  The deadline shifts if the wall clock is stepped during
 * the wait; harmless in a test.
 */
#include <pthread.h>
#include <time.h>

int pthread_mutex_clocklock(pthread_mutex_t *m, clockid_t clk, const struct timespec *at);

int
pthread_mutex_clocklock(pthread_mutex_t *m, clockid_t clk, const struct timespec *at)
{
	struct timespec now_c, now_r, t;
	long long ns;

	clock_gettime(clk, &now_c);
	clock_gettime(CLOCK_REALTIME, &now_r);
	ns = (long long)(at->tv_sec - now_c.tv_sec) * 1000000000LL +
	     (at->tv_nsec - now_c.tv_nsec) + (long long)now_r.tv_sec * 1000000000LL +
	     now_r.tv_nsec;
	t.tv_sec = (time_t)(ns / 1000000000LL);
	t.tv_nsec = (long)(ns % 1000000000LL);
	return pthread_mutex_timedlock(m, &t);
}
