/*
 * seedgen.c - generated seed inputs for the fuzz targets: random valid
 * values encoded by libchan, laid out as decode_fuzz and stream_fuzz
 * inputs (fuzz/README.md).  Deterministic (fixed PRNG seed).
 *
 * usage: seedgen OUTDIR [COUNT]
 * writes OUTDIR/decode/gen-NNNN and OUTDIR/stream/gen-NNNN
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chan.h"

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint64_t
rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static unsigned
below(unsigned n)
{
	return (unsigned)(rnd() % n);
}

/* Handle-kind plan: kind of the k-th handle met, and the fd-type byte that
 * goes with it (enum hu_fd_type of hardening/util.h: 2 = unix stream). */
struct plan {
	int fd_fd, conn_fd; /* fds handed to chan_handle (duplicated) */
	unsigned max;       /* handles allowed */
	unsigned n;
	unsigned base;      /* stream: type of handle k is (base + k) & 7 */
	int stream;
	uint8_t types[8];
};

static const char *const words[] = {"op", "reply_to", "seq", "", "$x", "é",
				    "key", "\xe2\x82\xac", "a", "b", "data"};

static chan_value *
gen(chan_msg *m, struct plan *p, unsigned depth)
{
	unsigned t = below(depth > 4 ? 7 : 10);
	char buf[32];
	chan_value *v;

	switch (t) {
	case 0:
		return chan_null(m);
	case 1:
		return chan_bool(m, (int)below(2));
	case 2: {
		static const int64_t ints[] = {0, 1, -1, 63, -64, 64, 300, INT64_MAX,
					       INT64_MIN, (1LL << 53) - 1, -(1LL << 53)};
		return chan_int(m, below(3) ? ints[below(11)] : (int64_t)rnd());
	}
	case 3: {
		static const double fl[] = {0.0, -0.0, 1.0, 0.5, 1e21, 1e-7, -1.5};
		uint64_t bits = rnd();
		double d;

		switch (below(4)) {
		case 0:
			d = fl[below(7)];
			break;
		case 1:
			d = below(2) ? INFINITY : -INFINITY;
			break;
		case 2:
			d = NAN;
			break;
		default:
			memcpy(&d, &bits, sizeof(d));
			break;
		}
		return chan_float(m, d);
	}
	case 4: {
		const char *w = words[below(11)];

		if (below(4) == 0)
			return chan_string_n(m, "a\0b", 3);
		return chan_string(m, w);
	}
	case 5: {
		/* now and then one large enough for CHAN_DECODE_BORROW */
		static char big[CHAN_BORROW_MIN + 64];
		unsigned n = below(16) ? below(20) : CHAN_BORROW_MIN + below(64);

		for (unsigned i = 0; i < n; i++)
			big[i] = (char)rnd();
		return chan_bytes(m, big, n);
	}
	case 6:
		if (p->n < p->max) {
			unsigned type = p->stream ? (p->base + p->n) & 7 : below(8);
			int conn = type == 2 || (!p->stream && below(8) == 0);

			p->types[p->n++] = (uint8_t)type;
			return chan_handle_copy(m, conn ? CHAN_KIND_CONN : CHAN_KIND_FD,
					   conn ? p->conn_fd : p->fd_fd);
		}
		return chan_null(m);
	case 7:
	case 8: {
		unsigned n = below(5);

		v = chan_list(m);
		for (unsigned i = 0; i < n; i++)
			chan_list_append(v, gen(m, p, depth + 1));
		return v;
	}
	default: {
		unsigned n = below(5 + (below(8) == 0 ? 12 : 0));

		v = chan_map(m);
		for (unsigned i = 0; i < n; i++) {
			chan_value *item = gen(m, p, depth + 1);

			snprintf(buf, sizeof(buf), "%s%u", words[below(11)], i);
			chan_map_put(v, buf, item);
		}
		return v;
	}
	}
}

static uint8_t *
make_frame(struct plan *p, size_t *len)
{
	chan_msg *m = chan_msg_new(NULL);
	uint8_t *buf;
	size_t need = 0;

	if (!m || chan_msg_set_root(m, gen(m, p, 1)) < 0 ||
	    chan_encoded_size(m, &need) < 0 || !(buf = malloc(need)) ||
	    chan_encode(m, buf, need, len) < 0) {
		fprintf(stderr, "seedgen: cannot build a value\n");
		exit(1);
	}
	chan_msg_free(m);
	return buf;
}

static void
put(const char *dir, const char *kind, unsigned i, const uint8_t *p, size_t n)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, kind);
	mkdir(path, 0777);
	snprintf(path, sizeof(path), "%s/%s/gen-%04u", dir, kind, i);
	if (!(f = fopen(path, "wb")) || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
		fprintf(stderr, "seedgen: %s: %s\n", path, strerror(errno));
		exit(1);
	}
}

int
main(int argc, char **argv)
{
	unsigned count = argc > 2 ? (unsigned)atoi(argv[2]) : 200;
	int pfd[2], sv[2];
	uint8_t *out = malloc(1 << 20);

	if (argc < 2 || !out) {
		fprintf(stderr, "usage: seedgen OUTDIR [COUNT]\n");
		return 2;
	}
	mkdir(argv[1], 0777);
	if (pipe2(pfd, O_CLOEXEC) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return 1;
	for (unsigned i = 0; i < count; i++) {
		struct plan p = {pfd[0], sv[0], below(4) ? 3 : 7, 0, 0, 0, {0}};
		size_t len = 0, o = 0;
		uint8_t *f = make_frame(&p, &len);

		/* decode: [nfds][flags][limits x3][types][frame] */
		out[o++] = (uint8_t)p.n;
		/* sometimes detached, sometimes CHAN_DECODE_BORROW */
		out[o++] = (uint8_t)((below(8) == 0 ? 1 : 0) | (below(4) == 0 ? 16 : 0));
		out[o++] = 0;
		out[o++] = 0;
		out[o++] = 0;
		if (out[1] & 1)
			out[0] = 0;
		else
			for (unsigned k = 0; k < p.n; k++)
				out[o++] = p.types[k];
		memcpy(out + o, f, len);
		put(argv[1], "decode", i, out, o + len);
		free(f);

		/* stream: 1-4 frames, each split at random points, fds on the
		 * first byte of each frame */
		o = 0;
		out[o++] = 0;
		for (unsigned k = 0, nf = 1 + below(4); k < nf; k++) {
			struct plan q = {pfd[0], sv[0], 7, 0, below(8), 1, {0}};
			size_t fl = 0, pos = 0;
			uint8_t *fr = make_frame(&q, &fl);

			while (pos < fl && o + 300 < (1 << 20)) {
				size_t part = 1 + below(below(2) ? 255 : 20);

				if (part > fl - pos)
					part = fl - pos;
				out[o++] = (uint8_t)((pos == 0 ? q.n : 0) | q.base << 3 |
						     (below(2) ? 0x40 : 0));
				out[o++] = (uint8_t)part;
				memcpy(out + o, fr + pos, part);
				o += part;
				pos += part;
			}
			free(fr);
		}
		put(argv[1], "stream", i, out, o);
	}
	printf("seedgen: %u decode and %u stream seeds in %s\n", count, count, argv[1]);
	free(out);
	return 0;
}
