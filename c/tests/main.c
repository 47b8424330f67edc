/*
 * main.c - runs the CUnit suites (the table is generated from the c/tests/NAME_test.c files
 * by c/c.mk) with an open-fd count checked around every test.
 *
 *   chan_tests              run everything
 *   chan_tests SUITE [TEST] run one suite, or one test of it
 *
 * Exit status: the number of failed tests and suites (CU_basic_run_tests
 * returns 0 even when tests fail, so it is counted here).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "helpers.h"

extern const char *const chan_suite_names[];
extern CU_TestInfo *const chan_suite_tests[];

static int fds_before;

/* A test that leaks an fd fails: the assertion in teardown is charged to the
 * test (CUnit 2.1-3). */
static void
setup(void)
{
	fds_before = chan_test_count_fds();
}

static void
teardown(void)
{
	int after = chan_test_count_fds();

	if (after != fds_before)
		fprintf(stderr, "\nfd leak: %d open before the test, %d after\n", fds_before,
			after);
	CU_ASSERT_EQUAL(after, fds_before);
}

/* The harness must catch a leak: run a leaking function under it by hand. */
static int
sanity_check_leak_detection(void)
{
	int fds[2], before, after;

	before = chan_test_count_fds();
	if (pipe(fds) < 0)
		return -1;
	after = chan_test_count_fds();
	close(fds[0]);
	close(fds[1]);
	return after == before + 2 ? 0 : -1;
}

int
main(int argc, char **argv)
{
	unsigned failed;
	size_t n = 0;
	CU_SuiteInfo *suites;

	if (sanity_check_leak_detection() < 0) {
		fprintf(stderr, "chan_tests: fd counting does not work\n");
		return 2;
	}
	while (chan_suite_names[n])
		n++;
	suites = calloc(n + 1, sizeof(*suites));
	if (!suites)
		return 2;
	for (size_t i = 0, k = 0; i < n; i++) {
		if (argc > 1 && strcmp(argv[1], chan_suite_names[i]) != 0)
			continue;
		suites[k].pName = (char *)chan_suite_names[i];
		suites[k].pSetUpFunc = setup;
		suites[k].pTearDownFunc = teardown;
		suites[k].pTests = chan_suite_tests[i];
		k++;
	}
	if (CU_initialize_registry() != CUE_SUCCESS || CU_register_suites(suites) != CUE_SUCCESS) {
		fprintf(stderr, "chan_tests: %s\n", CU_get_error_msg());
		return 2;
	}
	CU_basic_set_mode(CU_BRM_VERBOSE);
	if (argc > 2) {
		CU_pSuite s = CU_get_suite(argv[1]);
		CU_pTest t = s ? CU_get_test(s, argv[2]) : NULL;

		if (!t) {
			fprintf(stderr, "chan_tests: no test %s/%s\n", argv[1], argv[2]);
			return 2;
		}
		CU_basic_run_test(s, t);
	} else {
		CU_basic_run_tests();
	}
	failed = CU_get_number_of_tests_failed() + CU_get_number_of_suites_failed();
	if (CU_get_number_of_tests_run() == 0) {
		fprintf(stderr, "chan_tests: no test ran\n");
		failed++;
	}
	CU_cleanup_registry();
	free(suites);
	return failed > 255 ? 255 : (int)failed;
}
