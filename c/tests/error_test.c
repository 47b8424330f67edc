/* error_test.c - the C error enum against the registry spec/errors.tsv. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>

#include "helpers.h"

/* Every registry row has an enum value with the same code and name and
 * scope, and every enum value has a row: they never drift. */
static void
test_error_registry_matches_enum(void)
{
	FILE *f = fopen(CHAN_SOURCE_DIR "/spec/errors.tsv", "r");
	char line[2048];
	int rows = 0, max_code = 0;
	static const char *const scopes[] = {"", "fatal", "frame", "local"};

	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	while (fgets(line, sizeof(line), f)) {
		char *code, *name, *section, *scope, *save = NULL;
		int c;

		if (line[0] == '#' || strncmp(line, "code\t", 5) == 0)
			continue;
		code = strtok_r(line, "\t", &save);
		name = strtok_r(NULL, "\t", &save);
		section = strtok_r(NULL, "\t", &save);
		scope = strtok_r(NULL, "\t", &save);
		CU_ASSERT_PTR_NOT_NULL_FATAL(scope);
		(void)section;
		c = atoi(code);
		CU_ASSERT(c > 0);
		CU_ASSERT_STRING_EQUAL(chan_errname(-c), name);
		CU_ASSERT_EQUAL(chan_error_from_name(name), -c);
		CU_ASSERT_STRING_EQUAL(scopes[chan_error_scope(-c)], scope);
		CU_ASSERT(strlen(chan_strerror(-c)) > 0);
		if (c > max_code)
			max_code = c;
		rows++;
	}
	fclose(f);
	CU_ASSERT_EQUAL(rows, 40);
	CU_ASSERT_EQUAL(rows, max_code);
	/* Nothing in the enum beyond the registry. */
	CU_ASSERT_PTR_NULL(chan_errname(-(max_code + 1)));
#define CHECK_ENUM(name, code) CU_ASSERT_STRING_EQUAL(chan_errname(CHAN_E_##name), #name);
	CHAN_ERRORS(CHECK_ENUM)
#undef CHECK_ENUM
}

static void
test_error_names_for_success_and_unknown(void)
{
	CU_ASSERT_STRING_EQUAL(chan_errname(0), "OK");
	CU_ASSERT_PTR_NULL(chan_errname(1));
	CU_ASSERT_PTR_NULL(chan_errname(-1000));
	CU_ASSERT_STRING_EQUAL(chan_strerror(-1000), "unknown error");
	CU_ASSERT_EQUAL(chan_error_scope(0), CHAN_SCOPE_NONE);
	CU_ASSERT_EQUAL(chan_error_from_name("NO_SUCH_ERROR"), 0);
	CU_ASSERT_EQUAL(chan_error_from_name(NULL), 0);
}

/* The limits registry and the header's constants agree. */
static void
test_limits_registry_matches_header(void)
{
	FILE *f = fopen(CHAN_SOURCE_DIR "/spec/limits.tsv", "r");
	char line[512];
	int seen = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	while (fgets(line, sizeof(line), f)) {
		char name[64];
		unsigned long dflt, hard;

		if (sscanf(line, "%63s %lu %lu", name, &dflt, &hard) != 3)
			continue;
		if (!strcmp(name, "max_payload_bytes")) {
			CU_ASSERT_EQUAL(dflt, CHAN_DEFAULT_MAX_PAYLOAD);
			CU_ASSERT_EQUAL(hard, CHAN_HARD_MAX_PAYLOAD);
		} else if (!strcmp(name, "max_handles")) {
			CU_ASSERT_EQUAL(dflt, CHAN_DEFAULT_MAX_HANDLES);
			CU_ASSERT_EQUAL(hard, CHAN_HARD_MAX_HANDLES);
		} else if (!strcmp(name, "max_depth")) {
			CU_ASSERT_EQUAL(dflt, CHAN_DEFAULT_MAX_DEPTH);
			CU_ASSERT_EQUAL(hard, CHAN_HARD_MAX_DEPTH);
		} else if (!strcmp(name, "max_channels")) {
			CU_ASSERT_EQUAL(dflt, CHAN_DEFAULT_MAX_CHANNELS);
			CU_ASSERT_EQUAL(hard, CHAN_HARD_MAX_CHANNELS);
		} else if (!strcmp(name, "max_queued_bytes")) {
			CU_ASSERT_EQUAL(dflt, CHAN_DEFAULT_MAX_QUEUED_BYTES);
			CU_ASSERT_EQUAL(hard, CHAN_HARD_MAX_QUEUED_BYTES);
		} else {
			CU_FAIL("unknown limit in spec/limits.tsv");
		}
		seen++;
	}
	fclose(f);
	CU_ASSERT_EQUAL(seen, 5);
}

CU_TestInfo error_tests[] = {
	{"registry_matches_enum", test_error_registry_matches_enum},
	{"names_for_success_and_unknown", test_error_names_for_success_and_unknown},
	{"limits_registry_matches_header", test_limits_registry_matches_header},
	CU_TEST_INFO_NULL,
};
