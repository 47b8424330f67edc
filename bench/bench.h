/*
 * bench.h - the measuring harness shared by chan's benchmarks (bench/).
 *
 * Every figure is the median of `reps` timed runs (min and max kept), each
 * run `n` iterations of one operation.  Operations that are compared with
 * each other are run interleaved (rep 1 of A, rep 1 of B, rep 2 of A, ...)
 * so a change of machine load hits them alike and their ratio holds.
 *
 * Results are printed on stdout as tab-separated lines that bench/run.py
 * collects:
 *   R  group  case  impl  op  pin  median_ns  min_ns  max_ns  bytes  mallocs  n  runs
 * (ns per operation; bytes moved or encoded per operation; mallocs per
 * operation, -1 when not counted; n iterations per run; runs: the ns per
 * operation of every run, comma-separated, in the order taken).  Anything
 * else on stdout is commentary.
 */
#ifndef CHAN_BENCH_H
#define CHAN_BENCH_H

#include <stddef.h>
#include <stdint.h>

struct bench_opts {
	int smoke;        /* a handful of iterations, one run: checks, no figures */
	int reps;         /* timed runs per figure */
	double run_ms;    /* target duration of one run */
	const char *only; /* run only cases whose name contains this */
	const char *impl; /* run only this implementation (transport) */
	uint64_t iters;   /* fixed iterations per run (0: calibrate) */
};

extern struct bench_opts bench_opt;

/* Parse --smoke, --reps N, --ms X, --only NAME, --impl NAME, --iters N
 * (for profiling: strace -c, perf); returns the index of the
 * first argument it did not take.  Exits on a bad option. */
int bench_parse_args(int argc, char **argv);

uint64_t bench_now_ns(void);

struct bench_stats {
	double med, min, max;
};

/* Median, min, max of v[0..n-1] (v is left as it is). */
void bench_stats_of(const double *v, int n, struct bench_stats *ret);

/* One result line from the per-run figures runs[0..nruns-1] (ns per
 * operation, in the order the runs were taken: bench/run.py pairs run i of
 * interleaved implementations to compute their ratio). */
void bench_emit(const char *group, const char *cas, const char *impl,
		const char *op, const char *pin, const double *runs, int nruns,
		double bytes, double mallocs, uint64_t n);

/* Pin the calling thread/process to one CPU; cpu < 0 allows every CPU.
 * Exits on failure. */
void bench_pin(int cpu);

/* Abort the benchmark with a message (a check failed: the code is wrong,
 * not slow). */
#define BENCH_CHECK(cond)                                                      \
	do {                                                                   \
		if (!(cond))                                                   \
			bench_fail(__FILE__, __LINE__, #cond);                 \
	} while (0)
void bench_fail(const char *file, int line, const char *what)
	__attribute__((noreturn));

/* Iterations so that one run of fn lasts about run_ms (at least min_n,
 * 1 in smoke mode).  fn(ctx, n) runs n iterations. */
uint64_t bench_calibrate(void (*fn)(void *ctx, uint64_t n), void *ctx,
			 uint64_t min_n, uint64_t max_n);

#endif /* CHAN_BENCH_H */
