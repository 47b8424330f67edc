/* common.c - the measuring harness of bench/ (see bench.h). */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

struct bench_opts bench_opt = {.reps = 9, .run_ms = 20.0};

int
bench_parse_args(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--smoke")) {
			bench_opt.smoke = 1;
			bench_opt.reps = 1;
		} else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
			bench_opt.reps = atoi(argv[++i]);
		} else if (!strcmp(argv[i], "--ms") && i + 1 < argc) {
			bench_opt.run_ms = atof(argv[++i]);
		} else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
			bench_opt.only = argv[++i];
		} else if (!strcmp(argv[i], "--impl") && i + 1 < argc) {
			bench_opt.impl = argv[++i];
		} else if (!strcmp(argv[i], "--iters") && i + 1 < argc) {
			bench_opt.iters = strtoull(argv[++i], NULL, 10);
		} else if (argv[i][0] == '-' && argv[i][1] == '-') {
			fprintf(stderr, "%s: unknown option %s\n", argv[0], argv[i]);
			exit(2);
		} else {
			break;
		}
	}
	if (bench_opt.reps < 1 || bench_opt.reps > 1000 || bench_opt.run_ms <= 0) {
		fprintf(stderr, "%s: bad --reps or --ms\n", argv[0]);
		exit(2);
	}
	return i;
}

uint64_t
bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

void
bench_stats_of(const double *v, int n, struct bench_stats *ret)
{
	double *w = malloc((size_t)n * sizeof(*w));

	if (!w)
		bench_fail(__FILE__, __LINE__, "malloc");
	memcpy(w, v, (size_t)n * sizeof(*w));
	qsort(w, (size_t)n, sizeof(*w), cmp_double);
	ret->min = w[0];
	ret->max = w[n - 1];
	ret->med = n % 2 ? w[n / 2] : (w[n / 2 - 1] + w[n / 2]) / 2;
	free(w);
}

void
bench_emit(const char *group, const char *cas, const char *impl, const char *op,
	   const char *pin, const double *runs, int nruns, double bytes,
	   double mallocs, uint64_t n)
{
	struct bench_stats s;

	bench_stats_of(runs, nruns, &s);
	printf("R\t%s\t%s\t%s\t%s\t%s\t%.1f\t%.1f\t%.1f\t%.0f\t%.3f\t%llu\t", group, cas,
	       impl, op, pin, s.med, s.min, s.max, bytes, mallocs, (unsigned long long)n);
	for (int i = 0; i < nruns; i++)
		printf("%s%.1f", i ? "," : "", runs[i]);
	printf("\n");
	fflush(stdout);
}

void
bench_pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	if (cpu < 0) {
		for (int i = 0; i < CPU_SETSIZE; i++)
			CPU_SET(i, &set);
	} else {
		CPU_SET(cpu, &set);
	}
	if (sched_setaffinity(0, sizeof(set), &set) < 0 && cpu >= 0) {
		perror("sched_setaffinity");
		exit(1);
	}
}

void
bench_fail(const char *file, int line, const char *what)
{
	fflush(stdout);
	fprintf(stderr, "bench: check failed at %s:%d: %s\n", file, line, what);
	exit(1);
}

uint64_t
bench_calibrate(void (*fn)(void *ctx, uint64_t n), void *ctx, uint64_t min_n,
		uint64_t max_n)
{
	uint64_t n = 1;

	if (bench_opt.smoke)
		return min_n < 2 ? min_n : 2;
	if (bench_opt.iters)
		return bench_opt.iters;
	fn(ctx, 1); /* warm caches, fault in buffers */
	for (;;) {
		uint64_t t0 = bench_now_ns(), dt;

		fn(ctx, n);
		dt = bench_now_ns() - t0;
		if (dt >= bench_opt.run_ms * 1e6 / 4 || n >= max_n) {
			double want = (double)n * bench_opt.run_ms * 1e6 / (double)(dt ? dt : 1);

			n = want < (double)min_n ? min_n : (uint64_t)want;
			return n > max_n ? max_n : n;
		}
		n *= 4;
	}
}
