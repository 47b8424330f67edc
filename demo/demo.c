/*
 * demo.c - chan's main job, across real processes.
 *
 *   The consumer (this process, its main thread) listens on a socket in a
 *   fresh temporary directory and serves every producer from one poll loop.
 *   Producers p1 and p2 (processes: this program run again) and t1 and t2
 *   (threads of this process) connect and ask questions; every request
 *   carries a fresh reply_to connection, and the answer comes back on it.
 *   The actor (a process) resolves futures.
 *
 * "square" is answered at once.  "fib" is answered with a future: the
 * consumer makes a connection pair, sends one end to the actor (to resolve)
 * and the other to the producer (to wait on).  The producer thus receives a
 * connection inside a message received on a connection that it had sent
 * inside a message: three levels of nesting, across three processes.
 *
 * At the end every process compares its open fds with those it started
 * with, the consumer checks that every request got its answer, and the exit
 * status says whether all of that held.
 *
 *   chan-demo                          the whole demo
 *   CHAN_DEMO_PROXY="chancodec proxy --follow -o LOG" chan-demo
 *                                      the same, with the producers talking to
 *                                      the consumer through that command (run
 *                                      as COMMAND PROXY_PATH CONSUMER_PATH)
 *   chan-demo producer PATH NAME SEED  (run by the demo) one producer
 *   chan-demo actor                    (run by the demo) the actor, fd 3
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "demo.h"

#define PROCESS_PRODUCERS 2
#define THREAD_PRODUCERS 2
#define PRODUCERS (PROCESS_PRODUCERS + THREAD_PRODUCERS)
#define ACTOR_FD 3 /* where the actor finds its connection */

/* ---- the consumer ---- */

struct consumer {
	chan_listener *listener;
	chan_conn *actor;
	chan_conn *clients[PRODUCERS * 2];
	int nclients;
	int closed;      /* producers that have come and gone */
	int requests;    /* questions received */
	int answers;     /* answers sent (directly or as futures) */
	int futures;     /* of which futures */
	int reported;    /* answers the producers said they got right */
	int failures;
};

static chan_msg *
map1(const char *key, chan_msg *m, chan_value *v)
{
	chan_value *root = chan_map(m);

	chan_map_put(root, key, v);
	if (chan_msg_set_root(m, root) < 0)
		return chan_msg_free(m);
	return m;
}

/* fib(n) is the actor's job: hand it one end of a fresh pair, and answer
 * the producer with the other end, a future. */
static chan_msg *
delegate(struct consumer *cs, const char *from, int64_t n)
{
	chan_conn *future = NULL, *resolver = NULL;
	chan_msg *job = NULL, *answer = NULL;
	chan_value *root;
	int r;

	if ((r = chan_conn_pair(&future, &resolver)) < 0)
		goto out;
	job = chan_msg_new(NULL);
	root = chan_map(job);
	chan_map_put(root, "op", chan_string(job, "fib"));
	chan_map_put(root, "n", chan_int(job, n));
	chan_map_put(root, "for", chan_string(job, from));
	chan_map_put(root, "resolve", chan_handle_move_conn(job, &resolver));
	if ((r = chan_msg_set_root(job, root)) < 0 ||
	    (r = chan_conn_send(cs->actor, job, DEMO_TIMEOUT_MS)) < 0)
		goto out;
	answer = chan_msg_new(NULL);
	answer = map1("future", answer, chan_handle_move_conn(answer, &future));
	cs->futures++;
out:
	if (r < 0)
		say("consumer", "cannot delegate fib(%lld): %s", (long long)n,
		    chan_strerror(r));
	/* The connections moved into the messages (NULL here unless a step
	 * failed first); freeing a message closes what it holds. */
	chan_msg_free(job);
	chan_conn_free(future);
	chan_conn_free(resolver);
	return answer;
}

static void
handle(struct consumer *cs, chan_msg *req)
{
	chan_value *root = chan_msg_root(req);
	const char *from = NULL, *op = NULL;
	int64_t n = 0;
	chan_conn *reply = NULL;
	chan_msg *answer = NULL;
	int r;

	if (chan_map_get_string(root, "from", &from, NULL) < 0 ||
	    chan_map_get_string(root, "op", &op, NULL) < 0) {
		say("consumer", "a request without \"from\" or \"op\"");
		cs->failures++;
		return;
	}
	if (strcmp(op, "bye") == 0) {
		int64_t k = 0;

		if (chan_map_get_int(root, "answered", &k) < 0) {
			say("consumer", "%s says bye without \"answered\"", from);
			cs->failures++;
			return;
		}

		say("consumer", "%s says bye: %lld answers checked", from, (long long)k);
		cs->reported += (int)k;
		return;
	}
	cs->requests++;
	/* The reply_to handle becomes a connection of our own. */
	if ((r = chan_map_move_conn(root, "reply_to", &reply)) < 0 ||
	    (r = chan_map_get_int(root, "n", &n)) < 0) {
		say("consumer", "%s: %s without a usable reply_to: %s", from, op,
		    chan_errname(r));
		cs->failures++;
		return;
	}
	if (strcmp(op, "square") == 0) {
		answer = chan_msg_new(NULL);
		answer = map1("value", answer, chan_int(answer, n * n));
		say("consumer", "%s: square(%lld) = %lld, answered on its reply_to",
		    from, (long long)n, (long long)(n * n));
	} else if (strcmp(op, "fib") == 0) {
		answer = delegate(cs, from, n);
		say("consumer", "%s: fib(%lld) goes to the actor; %s gets a future",
		    from, (long long)n, from);
	} else {
		say("consumer", "%s: unknown op %s", from, op);
	}
	if (answer && (r = chan_conn_send(reply, answer, DEMO_TIMEOUT_MS)) == 0)
		cs->answers++;
	else
		cs->failures++;
	chan_msg_free(answer);
	chan_conn_free(reply);
}

/* Read what a client has.  libchan never reads past a frame, so poll(2) on
 * the connection's fd stays truthful: a readable fd with nothing complete
 * yet gives CHAN_E_WOULD_BLOCK, and the partial frame waits in the
 * connection.  Returns 0 while the client stays, -1 when it is gone. */
static int
serve_client(struct consumer *cs, chan_conn *c)
{
	chan_msg *m = NULL;
	int r = chan_conn_recv(c, 0, &m);

	if (r == CHAN_E_WOULD_BLOCK)
		return 0;
	if (r == 0) {
		handle(cs, m);
		chan_msg_free(m);
		return 0;
	}
	if (r == CHAN_E_CONNECTION_CLOSED) {
		cs->closed++;
		return -1;
	}
	say("consumer", "receive: %s", chan_strerror(r));
	if (chan_error_scope(r) == CHAN_SCOPE_FRAME)
		return 0; /* that frame is gone; the connection is fine */
	cs->failures++;
	cs->closed++;
	return -1;
}

static void
serve(struct consumer *cs)
{
	time_t give_up = time(NULL) + 20;

	while (cs->closed < PRODUCERS) {
		struct pollfd pf[1 + PRODUCERS * 2];
		int n = 0;

		if (time(NULL) > give_up) {
			say("consumer", "giving up: producers did not finish");
			cs->failures++;
			return;
		}
		pf[n++] = (struct pollfd){chan_listener_borrow_fd(cs->listener), POLLIN, 0};
		for (int i = 0; i < cs->nclients; i++)
			pf[n++] = (struct pollfd){chan_conn_borrow_fd(cs->clients[i]), POLLIN, 0};
		if (poll(pf, (nfds_t)n, 1000) < 0 && errno != EINTR) {
			cs->failures++;
			return;
		}
		for (int i = cs->nclients - 1; i >= 0; i--) {
			if (!pf[1 + i].revents || serve_client(cs, cs->clients[i]) == 0)
				continue;
			chan_conn_free(cs->clients[i]);
			cs->clients[i] = cs->clients[--cs->nclients];
		}
		if ((pf[0].revents & POLLIN) && cs->nclients < PRODUCERS * 2) {
			chan_conn *c;
			struct chan_peer_cred cred;

			if (chan_listener_accept(cs->listener, 0, &c) == 0) {
				chan_conn_peer_cred(c, &cred);
				say("consumer", "accepted a producer connection from pid %d",
				    (int)cred.pid);
				cs->clients[cs->nclients++] = c;
			}
		}
	}
}

/* ---- processes and threads ---- */

static pid_t
spawn(char *const argv[], int pass_fd)
{
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid != 0)
		return pid;
	/* Every fd libchan made is close-on-exec: the new program starts
	 * with stdin/out/err plus what we pass on purpose, as fd 3. */
	if (pass_fd >= 0) {
		if (pass_fd == ACTOR_FD)
			fcntl(ACTOR_FD, F_SETFD, 0);
		else if (dup2(pass_fd, ACTOR_FD) < 0)
			_exit(127);
	}
	execv("/proc/self/exe", argv);
	_exit(127);
}

struct producer_thread {
	pthread_t thread;
	const char *path;
	char name[8];
	int seed;
	int answered;
};

static void *
producer_thread_main(void *arg)
{
	struct producer_thread *t = arg;

	t->answered = producer_run(t->path, t->name, t->seed);
	return NULL;
}

static int
producer_process_main(const char *path, const char *name, int seed)
{
	int fds = count_open_fds(), answered, after;

	alarm(30);
	answered = producer_run(path, name, seed);
	after = count_open_fds();
	say(name, "done: %d of %d answered; open fds: %d at start, %d at end",
	    answered < 0 ? 0 : answered, QUESTIONS_PER_PRODUCER, fds, after);
	return answered == QUESTIONS_PER_PRODUCER && after == fds ? 0 : 1;
}

static int
actor_process_main(void)
{
	int fds = count_open_fds(), r, after;
	chan_conn *c;

	alarm(30);
	if ((r = chan_conn_move_from_fd(ACTOR_FD, &c)) < 0) {
		say("actor", "fd %d is not a connection: %s", ACTOR_FD, chan_strerror(r));
		return 1;
	}
	r = actor_run(c); /* frees c, closing fd 3 */
	after = count_open_fds();
	say("actor", "done; open fds: %d at start (with fd 3), %d at end", fds, after);
	return r == 0 && after == fds - 1 ? 0 : 1;
}

static int
consumer_main(void)
{
	struct consumer cs = {0};
	struct producer_thread threads[THREAD_PRODUCERS];
	pid_t pids[1 + PROCESS_PRODUCERS];
	const char *tmp = getenv("TMPDIR");
	char dir[256], path[300], proxy_path[300];
	const char *producer_path = path;
	pid_t proxy_pid = -1;
	chan_conn *actor_end = NULL;
	int fds = count_open_fds(), failures = 0, after, r;

	snprintf(dir, sizeof(dir), "%s/chan-demo-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		perror("chan-demo: mkdtemp");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/consumer.sock", dir);
	if ((r = chan_listen(path, &cs.listener)) < 0) {
		fprintf(stderr, "chan-demo: listen %s: %s\n", path, chan_strerror(r));
		rmdir(dir);
		return 1;
	}
	say("consumer", "listening on %s", path);
	if (getenv("CHAN_DEMO_PROXY") && *getenv("CHAN_DEMO_PROXY")) {
		/* Producers reach the consumer through the proxy command. */
		char cmd[1024];

		snprintf(proxy_path, sizeof(proxy_path), "%s/proxy.sock", dir);
		snprintf(cmd, sizeof(cmd), "exec %s %s %s", getenv("CHAN_DEMO_PROXY"), proxy_path,
			 path);
		fflush(stdout);
		if ((proxy_pid = fork()) == 0) {
			execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
			_exit(127);
		}
		for (int i = 0; i < 200 && access(proxy_path, F_OK) != 0; i++)
			usleep(10000);
		if (access(proxy_path, F_OK) != 0) {
			fprintf(stderr, "chan-demo: the proxy command (CHAN_DEMO_PROXY=%s) did not "
					"create %s within 2 s\n",
				getenv("CHAN_DEMO_PROXY"), proxy_path);
			kill(proxy_pid, SIGTERM);
			waitpid(proxy_pid, NULL, 0);
			chan_listener_free(cs.listener); /* removes the socket file */
			rmdir(dir);
			return 1;
		}
		say("consumer", "producers connect through a proxy (pid %d) on %s", (int)proxy_pid,
		    proxy_path);
		producer_path = proxy_path;
	}

	/* The actor gets its connection as fd 3. */
	if ((r = chan_conn_pair(&cs.actor, &actor_end)) < 0) {
		fprintf(stderr, "chan-demo: %s\n", chan_strerror(r));
		return 1;
	}
	pids[0] = spawn((char *[]){"chan-demo", "actor", NULL}, chan_conn_borrow_fd(actor_end));
	chan_conn_free(actor_end);
	for (int i = 0; i < PROCESS_PRODUCERS; i++) {
		char name[8], seed[8];

		snprintf(name, sizeof(name), "p%d", i + 1);
		snprintf(seed, sizeof(seed), "%d", i);
		pids[1 + i] = spawn((char *[]){"chan-demo", "producer", (char *)producer_path, name,
					       seed, NULL},
				    -1);
	}
	say("consumer", "started the actor (pid %d) and producers p1, p2 (pids %d, %d)",
	    (int)pids[0], (int)pids[1], (int)pids[2]);
	for (int i = 0; i < THREAD_PRODUCERS; i++) {
		threads[i] = (struct producer_thread){.path = producer_path, .seed = 2 + i};
		snprintf(threads[i].name, sizeof(threads[i].name), "t%d", i + 1);
		if (pthread_create(&threads[i].thread, NULL, producer_thread_main,
				   &threads[i]) != 0) {
			fprintf(stderr, "chan-demo: pthread_create failed\n");
			return 1;
		}
	}
	say("consumer", "started producers t1, t2 (threads of this process)");

	serve(&cs);

	for (int i = 0; i < THREAD_PRODUCERS; i++) {
		pthread_join(threads[i].thread, NULL);
		failures += threads[i].answered != QUESTIONS_PER_PRODUCER;
	}
	/* Closing the actor's connection tells it to finish. */
	cs.actor = chan_conn_free(cs.actor);
	for (int i = 0; i < 1 + PROCESS_PRODUCERS; i++) {
		int st = 0;

		while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR)
			;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "chan-demo: child %d failed (status %#x)\n",
				(int)pids[i], st);
			failures++;
		}
	}
	for (int i = 0; i < cs.nclients; i++)
		chan_conn_free(cs.clients[i]);
	chan_listener_free(cs.listener); /* removes the socket file */
	if (proxy_pid > 0) {
		int st = 0;

		kill(proxy_pid, SIGTERM);
		while (waitpid(proxy_pid, &st, 0) < 0 && errno == EINTR)
			;
		unlink(proxy_path);
	}
	rmdir(dir);

	after = count_open_fds();
	say("consumer", "%d requests, %d answered (%d through futures), %d checked "
			"by producers; open fds: %d at start, %d at end",
	    cs.requests, cs.answers, cs.futures, cs.reported, fds, after);
	failures += cs.failures;
	failures += cs.requests != PRODUCERS * QUESTIONS_PER_PRODUCER;
	failures += cs.answers != cs.requests || cs.reported != cs.requests;
	failures += after != fds;
	printf("chan-demo: %s\n", failures ? "FAILED" : "OK: every request answered, "
					       "no fd leaked in any process");
	return failures ? 1 : 0;
}

int
main(int argc, char **argv)
{
	if (argc == 5 && strcmp(argv[1], "producer") == 0)
		return producer_process_main(argv[2], argv[3], atoi(argv[4]));
	if (argc == 2 && strcmp(argv[1], "actor") == 0)
		return actor_process_main();
	if (argc != 1) {
		fprintf(stderr, "usage: chan-demo\n");
		return 2;
	}
	return consumer_main();
}
