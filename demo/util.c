/* util.c - small helpers of the demo. */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "demo.h"

void
say(const char *who, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n = snprintf(line, sizeof(line), "[%-8s %6d] ", who, (int)getpid());

	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	if (write(STDOUT_FILENO, line, (size_t)n) < 0) {
		/* nothing sensible to do: the demo's result is its exit status */
	}
}

int
count_open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* not the directory's own fd */
}

int64_t
demo_fib(int64_t n)
{
	int64_t a = 0, b = 1;

	for (int64_t i = 0; i < n; i++) {
		int64_t t = a + b;

		a = b;
		b = t;
	}
	return a;
}

int
demo_reply(chan_conn *reply, const chan_msg *m)
{
	/* A channel endpoint (it has an id) takes the answer as its last
	 * frame: END rides on it, so no close frame follows (SPEC.md §18.5). */
	if (chan_conn_channel_id(reply))
		return chan_conn_send_last(reply, m, DEMO_TIMEOUT_MS);
	return chan_conn_send(reply, m, DEMO_TIMEOUT_MS);
}

int
demo_get_int_or(const chan_value *map, const char *key, int64_t dflt, int64_t *ret)
{
	int r = chan_map_get_int(map, key, ret);

	if (r == CHAN_E_NOT_FOUND) {
		*ret = dflt;
		return 0;
	}
	return r;
}
