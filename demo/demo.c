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
 * Then the consumer puts IN_FLIGHT requests in flight to the actor at once
 * (the actor holds them all before answering) and both count their open
 * descriptors: a reply_to connection costs one at each end.
 *
 * The demo runs twice.  First every reply_to (and every future's resolve
 * end) is a fresh connection pair.  Then every one is a logical channel
 * (revision 1.1, SPEC.md §18): the producers announce 1.1 with a HELLO on
 * their connection, a request's reply_to is a channel of the connection it
 * travels on, answered with one last frame (END), and the actor resolves a
 * future on a channel of its connection to the consumer: no descriptor at
 * all, so the count stays flat with any number in flight.  A channel never
 * leaves its connection (§18.7): the consumer checks that handing the
 * actor's channel to a producer fails with CHANNEL_NOT_TRANSFERABLE, and
 * gives the producer a future that it relays instead: one end of a fresh
 * connection pair goes to the producer, and its poll loop copies what
 * arrives on the actor's channel to the other end (and back).
 *
 * At the end every process compares its open fds with those it started
 * with, the consumer checks that every request got its answer, and the exit
 * status says whether all of that held.
 *
 *   chan-demo                          the whole demo: both runs
 *   chan-demo --reply-to | --channels  one run
 *   CHAN_DEMO_PROXY="chancodec proxy --follow -o LOG" chan-demo
 *                                      the same, with the producers talking to
 *                                      the consumer through that command (run
 *                                      as COMMAND PROXY_PATH CONSUMER_PATH)
 *   chan-demo --bench-actor [--json]   requests/s of the actor's workload,
 *                                      reply_to connections vs channels (load.c)
 *   chan-demo producer PATH NAME SEED [channels]
 *                                      (run by the demo) one producer
 *   chan-demo actor [quiet]            (run by the demo) the actor, fd 3
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
#define IN_FLIGHT 500 /* requests held by the actor at once */
#define MAX_RELAYS (PRODUCERS * QUESTIONS_PER_PRODUCER)

/* ---- the consumer ---- */

/* A future relayed from a channel of the actor's connection (which cannot
 * leave it) to a connection whose other end the producer holds. */
struct relay {
	chan_conn *channel; /* ours: the actor answers on it */
	chan_conn *conn;    /* ours: the producer holds the other end */
	int64_t n;
	char who[8];
	int frames; /* relayed from the actor */
};

struct consumer {
	bool channels;   /* the run with channels */
	chan_listener *listener;
	chan_conn *actor;
	chan_conn *clients[PRODUCERS * 2];
	int nclients;
	struct relay relays[MAX_RELAYS];
	int nrelays;
	int closed;      /* producers that have come and gone */
	int requests;    /* questions received */
	int answers;     /* answers sent (directly or as futures) */
	int futures;     /* of which futures */
	int relayed;     /* futures relayed from the actor's channels, whole */
	int refused;     /* direct hand-overs of a channel refused, as they must be */
	int reported;    /* answers the producers said they got right */
	int failures;
};

/* What a run saw with IN_FLIGHT requests in flight. */
struct run_result {
	int here_before, here_peak, actor_before, actor_peak;
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

/* SPEC.md §18.7: res is a channel of the actor's connection; the producer
 * is on another.  Handing res on directly must fail with
 * CHANNEL_NOT_TRANSFERABLE and send nothing, both ways of trying: as a conn
 * handle, and resending the job (which carries its handle) on the
 * producer's reply_to. */
static int
check_not_transferable(struct consumer *cs, chan_conn *reply, const chan_msg *job,
		       chan_conn **res, const char *from)
{
	chan_msg *m = chan_msg_new(NULL);
	chan_value *v = m ? chan_handle_move_conn(m, res) : NULL;
	int as_conn = m ? chan_msg_error(m) : CHAN_E_NO_MEMORY;
	int resent = chan_conn_send(reply, job, DEMO_TIMEOUT_MS);

	chan_msg_free(m); /* closes res if it did move: the check fails then */
	if (v || !*res || as_conn != CHAN_E_CHANNEL_NOT_TRANSFERABLE ||
	    resent != CHAN_E_CHANNEL_NOT_TRANSFERABLE) {
		say("consumer", "%s: the actor's channel was not refused: as a conn handle %s, "
				"resent to %s %s (want CHANNEL_NOT_TRANSFERABLE twice)",
		    from, v ? "moved" : chan_errname(as_conn), from,
		    resent == 0 ? "sent" : chan_errname(resent));
		return CHAN_E_INVALID_ARGUMENT;
	}
	if (cs->refused++ == 0)
		say("consumer", "%s: handing it the actor's channel itself fails, as it must "
				"(SPEC 18.7): as a conn handle %s, resent in a frame %s",
		    from, chan_errname(as_conn), chan_errname(resent));
	return 0;
}

/* fib(n) over a channel: the actor resolves a channel of its connection to
 * us; the producer gets a future that we relay from that channel. */
static chan_msg *
delegate_over_channel(struct consumer *cs, chan_conn *reply, const char *from, int64_t n)
{
	chan_conn *res = NULL, *future = NULL, *relay = NULL;
	chan_msg *job = NULL, *answer = NULL;
	chan_value *root;
	int r = CHAN_E_NO_MEMORY;

	if (cs->nrelays == MAX_RELAYS)
		goto out;
	job = chan_msg_new(NULL);
	root = chan_map(job);
	chan_map_put(root, "op", chan_string(job, "fib"));
	chan_map_put(root, "n", chan_int(job, n));
	chan_map_put(root, "for", chan_string(job, from));
	chan_map_put(root, "resolve", chan_channel_open(job, cs->actor, &res));
	if ((r = chan_msg_set_root(job, root)) < 0 ||
	    (r = chan_conn_send(cs->actor, job, DEMO_TIMEOUT_MS)) < 0 ||
	    (r = check_not_transferable(cs, reply, job, &res, from)) < 0 ||
	    (r = chan_conn_pair(&future, &relay)) < 0)
		goto out;
	answer = chan_msg_new(NULL);
	answer = map1("future", answer, chan_handle_move_conn(answer, &future));
	if (!answer) {
		r = CHAN_E_NO_MEMORY;
		goto out;
	}
	cs->relays[cs->nrelays] = (struct relay){.channel = res, .conn = relay, .n = n};
	snprintf(cs->relays[cs->nrelays++].who, sizeof(cs->relays[0].who), "%s", from);
	res = relay = NULL;
	cs->futures++;
out:
	if (r < 0)
		say("consumer", "cannot delegate fib(%lld): %s", (long long)n,
		    chan_strerror(r));
	chan_msg_free(job);
	chan_conn_free(res);
	chan_conn_free(future);
	chan_conn_free(relay);
	return answer;
}

static void
drop_relay(struct consumer *cs, int i)
{
	/* Freeing the channel sends close unless END came (SPEC.md §18.5);
	 * freeing our end of the pair closes the producer's future. */
	chan_conn_free(cs->relays[i].channel);
	chan_conn_free(cs->relays[i].conn);
	cs->relays[i] = cs->relays[--cs->nrelays];
}

/* The actor's connection is readable: take what it has.  Frames of its
 * channels go on to the futures (the main stream carries nothing from the
 * actor but its HELLO, which libchan consumes).  A future is one-shot: after
 * its value the channel reports CHANNEL_CLOSED (the actor's END), and the
 * relay ends. */
static void
pump_from_actor(struct consumer *cs)
{
	chan_msg *m = NULL;
	int r;

	while ((r = chan_conn_recv(cs->actor, 0, &m)) != CHAN_E_WOULD_BLOCK) {
		say("consumer", "the actor's main stream: %s",
		    r == 0 ? "an unexpected message" : chan_strerror(r));
		cs->failures++;
		chan_msg_free(m);
		m = NULL;
		if (r < 0)
			return;
	}
	/* Until a whole pass finds nothing: a call that returns a frame may
	 * leave the next ones read ahead, where poll(2) cannot see them. */
	for (bool progress = true; progress;) {
		progress = false;
		for (int i = cs->nrelays - 1; i >= 0; i--) {
			struct relay *rl = &cs->relays[i];

			r = chan_conn_recv(rl->channel, 0, &m);
			if (r == CHAN_E_WOULD_BLOCK)
				continue;
			progress = true;
			if (r == 0) {
				r = chan_conn_send(rl->conn, m, DEMO_TIMEOUT_MS);
				chan_msg_free(m);
				m = NULL;
				if (r == 0) {
					rl->frames++;
					say("consumer", "relayed fib(%lld) from the actor's channel "
							"to %s's future",
					    (long long)rl->n, rl->who);
					continue;
				}
				say("consumer", "relay to %s: %s", rl->who, chan_strerror(r));
				cs->failures++;
			} else if (r == CHAN_E_CHANNEL_CLOSED && rl->frames == 1) {
				cs->relayed++;
			} else {
				say("consumer", "relay for %s after %d frames: %s", rl->who,
				    rl->frames, chan_strerror(r));
				cs->failures++;
			}
			drop_relay(cs, i);
		}
	}
}

/* A producer's end of a relayed future is readable: what it sends goes on
 * to the actor's channel; its end of stream (a future dropped before its
 * value) closes the channel, which tells the actor. */
static void
pump_to_actor(struct consumer *cs, int i)
{
	struct relay *rl = &cs->relays[i];
	chan_msg *m = NULL;
	int r;

	while ((r = chan_conn_recv(rl->conn, 0, &m)) == 0) {
		r = chan_conn_send(rl->channel, m, DEMO_TIMEOUT_MS);
		chan_msg_free(m);
		m = NULL;
		if (r < 0)
			break;
	}
	if (r == CHAN_E_WOULD_BLOCK)
		return;
	/* Nobody in this demo drops a future before its value. */
	say("consumer", "%s's future for fib(%lld) ended early: %s", rl->who, (long long)rl->n,
	    chan_strerror(r));
	cs->failures++;
	drop_relay(cs, i);
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
		chan_conn_free(reply);
		cs->failures++;
		return;
	}
	/* The run's kind of reply_to, checked: a channel has an id. */
	if ((chan_conn_channel_id(reply) != 0) != cs->channels) {
		say("consumer", "%s: reply_to is not a %s", from,
		    cs->channels ? "channel" : "connection");
		cs->failures++;
	}
	if (strcmp(op, "square") == 0) {
		answer = chan_msg_new(NULL);
		answer = map1("value", answer, chan_int(answer, n * n));
		say("consumer", "%s: square(%lld) = %lld, answered on its reply_to%s",
		    from, (long long)n, (long long)(n * n),
		    cs->channels ? " channel (its last frame)" : "");
	} else if (strcmp(op, "fib") == 0 && cs->channels) {
		say("consumer", "%s: fib(%lld) goes to the actor on a channel; %s gets a "
				"future relayed from it",
		    from, (long long)n, from);
		answer = delegate_over_channel(cs, reply, from, n);
	} else if (strcmp(op, "fib") == 0) {
		answer = delegate(cs, from, n);
		say("consumer", "%s: fib(%lld) goes to the actor; %s gets a future",
		    from, (long long)n, from);
	} else {
		say("consumer", "%s: unknown op %s", from, op);
	}
	if (answer && (r = demo_reply(reply, answer)) == 0)
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
		struct pollfd pf[1 + PRODUCERS * 2 + 1 + MAX_RELAYS];
		int n = 0, actor_at = -1, relays_at, nrelays = cs->nrelays;

		if (time(NULL) > give_up) {
			say("consumer", "giving up: producers did not finish");
			cs->failures++;
			return;
		}
		pf[n++] = (struct pollfd){chan_listener_borrow_fd(cs->listener), POLLIN, 0};
		for (int i = 0; i < cs->nclients; i++)
			pf[n++] = (struct pollfd){chan_conn_borrow_fd(cs->clients[i]), POLLIN, 0};
		/* With channels the actor answers on its connection to us; a
		 * channel endpoint has no fd of its own: its connection's does. */
		if (cs->channels) {
			actor_at = n;
			pf[n++] = (struct pollfd){chan_conn_borrow_fd(cs->actor), POLLIN, 0};
		}
		relays_at = n;
		for (int i = 0; i < nrelays; i++)
			pf[n++] = (struct pollfd){chan_conn_borrow_fd(cs->relays[i].conn), POLLIN, 0};
		if (poll(pf, (nfds_t)n, 1000) < 0 && errno != EINTR) {
			cs->failures++;
			return;
		}
		for (int i = nrelays - 1; i >= 0; i--)
			if (pf[relays_at + i].revents)
				pump_to_actor(cs, i);
		if (actor_at >= 0 && pf[actor_at].revents)
			pump_from_actor(cs);
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

/* Run this program again with argv; pass_fd (if >= 0) becomes its fd 3;
 * stdout_to_stderr sends its stdout to our stderr (the bench's stdout is
 * its JSON). */
static pid_t
spawn(char *const argv[], int pass_fd, bool stdout_to_stderr)
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
	if (stdout_to_stderr && dup2(STDERR_FILENO, STDOUT_FILENO) < 0)
		_exit(127);
	execv("/proc/self/exe", argv);
	_exit(127);
}

pid_t
spawn_actor(chan_conn **ret_conn, bool quiet_stdout)
{
	chan_conn *actor_end = NULL;
	pid_t pid;
	int r;

	if ((r = chan_conn_pair(ret_conn, &actor_end)) < 0) {
		fprintf(stderr, "chan-demo: %s\n", chan_strerror(r));
		return -1;
	}
	pid = spawn((char *[]){"chan-demo", "actor", quiet_stdout ? "quiet" : NULL, NULL},
		    chan_conn_borrow_fd(actor_end), quiet_stdout);
	chan_conn_free(actor_end);
	if (pid < 0)
		*ret_conn = chan_conn_free(*ret_conn);
	return pid;
}

int
reap(pid_t pid)
{
	int st = 0;

	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "chan-demo: child %d failed (status %#x)\n", (int)pid, st);
		return -1;
	}
	return 0;
}

struct producer_thread {
	pthread_t thread;
	const char *path;
	char name[8];
	int seed;
	bool channels;
	int answered;
};

static void *
producer_thread_main(void *arg)
{
	struct producer_thread *t = arg;

	t->answered = producer_run(t->path, t->name, t->seed, t->channels);
	return NULL;
}

static int
producer_process_main(const char *path, const char *name, int seed, bool channels)
{
	int fds = count_open_fds(), answered, after;

	alarm(30);
	answered = producer_run(path, name, seed, channels);
	after = count_open_fds();
	say(name, "done: %d of %d answered; open fds: %d at start, %d at end",
	    answered < 0 ? 0 : answered, QUESTIONS_PER_PRODUCER, fds, after);
	return answered == QUESTIONS_PER_PRODUCER && after == fds ? 0 : 1;
}

/* quiet (the bench): say nothing unless something is wrong. */
static int
actor_process_main(bool quiet)
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
	if (!quiet || r != 0 || after != fds - 1)
		say("actor", "done; open fds: %d at start (with fd 3), %d at end", fds, after);
	return r == 0 && after == fds - 1 ? 0 : 1;
}

/* IN_FLIGHT requests in flight to the actor at once, counted. */
static void
in_flight(struct consumer *cs, struct run_result *res)
{
	struct load ld = {.total = IN_FLIGHT, .window = IN_FLIGHT, .channels = cs->channels,
			  .hold = true};
	int per = cs->channels ? 0 : 1; /* descriptors per request, at each end */

	if (actor_load(cs->actor, &ld) < 0) {
		cs->failures++;
		return;
	}
	*res = (struct run_result){ld.fds_base, ld.fds_peak, ld.actor_fds_before, ld.actor_fds};
	say("consumer", "%d requests in flight to the actor, each with a reply endpoint that is "
			"a %s: open fds here %d (%d before), in the actor %d (%d at rest)",
	    IN_FLIGHT, cs->channels ? "channel" : "connection", ld.fds_peak, ld.fds_base,
	    ld.actor_fds, ld.actor_fds_before);
	if (ld.fds_peak != ld.fds_base + per * IN_FLIGHT ||
	    ld.actor_fds != ld.actor_fds_before + per * IN_FLIGHT) {
		say("consumer", "expected %d more open fds at each end", per * IN_FLIGHT);
		cs->failures++;
	}
}

static int
consumer_main(bool channels, struct run_result *res)
{
	struct consumer cs = {.channels = channels};
	struct producer_thread threads[THREAD_PRODUCERS];
	pid_t pids[1 + PROCESS_PRODUCERS];
	const char *tmp = getenv("TMPDIR");
	char dir[256], path[300], proxy_path[300];
	const char *producer_path = path;
	const char *how = channels ? "channels" : "reply_to connections";
	pid_t proxy_pid = -1;
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
	if ((pids[0] = spawn_actor(&cs.actor, false)) < 0)
		return 1;
	/* With channels: the actor is this program, so it implements 1.1;
	 * "channels" is required, usable at once (its HELLO answers ours). */
	if (channels && (r = chan_conn_hello(cs.actor, CHAN_FEATURE_CHANNELS,
					     DEMO_TIMEOUT_MS)) < 0) {
		say("consumer", "HELLO to the actor: %s", chan_strerror(r));
		cs.failures++;
	}
	for (int i = 0; i < PROCESS_PRODUCERS; i++) {
		char name[8], seed[8];

		snprintf(name, sizeof(name), "p%d", i + 1);
		snprintf(seed, sizeof(seed), "%d", i);
		pids[1 + i] = spawn((char *[]){"chan-demo", "producer", (char *)producer_path, name,
					       seed, channels ? "channels" : NULL, NULL},
				    -1, false);
	}
	say("consumer", "started the actor (pid %d) and producers p1, p2 (pids %d, %d); "
			"every reply_to is a %s",
	    (int)pids[0], (int)pids[1], (int)pids[2],
	    channels ? "channel of the connection it travels on" : "fresh connection pair");
	for (int i = 0; i < THREAD_PRODUCERS; i++) {
		threads[i] = (struct producer_thread){.path = producer_path, .seed = 2 + i,
						      .channels = channels};
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
	if (cs.nrelays) {
		say("consumer", "%d futures still being relayed", cs.nrelays);
		cs.failures++;
		while (cs.nrelays)
			drop_relay(&cs, cs.nrelays - 1);
	}
	in_flight(&cs, res);
	/* Closing the actor's connection tells it to finish. */
	cs.actor = chan_conn_free(cs.actor);
	for (int i = 0; i < 1 + PROCESS_PRODUCERS; i++)
		failures += reap(pids[i]) < 0;
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
	if (channels)
		say("consumer", "%d of %d futures relayed from the actor's channels; %d direct "
				"hand-overs refused with CHANNEL_NOT_TRANSFERABLE",
		    cs.relayed, cs.futures, cs.refused);
	failures += cs.failures;
	failures += cs.requests != PRODUCERS * QUESTIONS_PER_PRODUCER;
	failures += cs.answers != cs.requests || cs.reported != cs.requests;
	failures += cs.futures != PRODUCERS; /* one fib per producer */
	failures += channels && (cs.relayed != cs.futures || cs.refused != cs.futures);
	failures += after != fds;
	printf("chan-demo: with %s: %s\n", how,
	       failures ? "FAILED" : "OK: every request answered, no fd leaked in any process");
	fflush(stdout); /* say() writes directly: keep the order */
	return failures ? 1 : 0;
}

int
main(int argc, char **argv)
{
	struct run_result rt = {0}, ch = {0};
	int failures = 0;

	if (argc >= 2 && strcmp(argv[1], "--bench-actor") == 0)
		return bench_actor_main(argc, argv);
	if ((argc == 5 || (argc == 6 && strcmp(argv[5], "channels") == 0)) &&
	    strcmp(argv[1], "producer") == 0)
		return producer_process_main(argv[2], argv[3], atoi(argv[4]), argc == 6);
	if ((argc == 2 || (argc == 3 && strcmp(argv[2], "quiet") == 0)) &&
	    strcmp(argv[1], "actor") == 0)
		return actor_process_main(argc == 3);
	if (argc == 2 && strcmp(argv[1], "--reply-to") == 0)
		return consumer_main(false, &rt);
	if (argc == 2 && strcmp(argv[1], "--channels") == 0)
		return consumer_main(true, &ch);
	if (argc != 1) {
		fprintf(stderr, "usage: chan-demo [--reply-to | --channels | --bench-actor [--json]]\n");
		return 2;
	}
	printf("chan-demo: run 1 of 2: every reply_to is a fresh connection pair\n");
	fflush(stdout);
	failures += consumer_main(false, &rt);
	printf("\nchan-demo: run 2 of 2: every reply_to is a logical channel (SPEC.md 18)\n");
	fflush(stdout);
	failures += consumer_main(true, &ch);
	if (failures) {
		printf("chan-demo: FAILED\n");
		return 1;
	}
	printf("chan-demo: OK: both runs answered every request and leaked no fd; %d requests "
	       "in flight held %d fds (%d here + %d in the actor) with reply_to connections, "
	       "%d with channels\n",
	       IN_FLIGHT, rt.here_peak - rt.here_before + rt.actor_peak - rt.actor_before,
	       rt.here_peak - rt.here_before, rt.actor_peak - rt.actor_before,
	       ch.here_peak - ch.here_before + ch.actor_peak - ch.actor_before);
	return 0;
}
