# conformance/: the language-neutral conformance suite (issue 4).
#
#   make conformance           vecheck (vectors re-verified without libchan,
#                              coverage of errors and MUSTs), the runner against
#                              the C testee, and the runner's self-test against
#                              deliberately broken testees.  Last line of the
#                              run: "conformance: N passed, 0 failed".
#   make conformance-vectors   regenerate conformance/vectors/*.vec (vecgen.py)
#
# Other bindings: $(BUILD)/conformance/runner --failing conformance/failing/<b>.txt -- TESTEE
# (conformance/README.md).


CONF_BUILD   := $(BUILD)/conformance
CONF_RUNNER  := $(CONF_BUILD)/runner
CONF_TESTEE  := $(CONF_BUILD)/testee_c
CONF_PY      := /usr/bin/python3

all: $(CONF_RUNNER) $(CONF_TESTEE)

# The runner uses no libchan: it checks bytes and descriptors itself.
$(CONF_RUNNER): conformance/runner.c $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ conformance/runner.c $(ALL_LDFLAGS)

$(CONF_TESTEE): conformance/testee_c.c c/include/chan.h $(LIBCHAN_A) $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ conformance/testee_c.c $(LIBCHAN_A) $(ALL_LDFLAGS) -lpthread -lm

.PHONY: conformance conformance-check conformance-run conformance-selftest conformance-skeleton \
	conformance-vectors
conformance-check: $(DEPS_STAMP)
	$(CONF_PY) conformance/tools/vecheck.py

conformance-run: $(CONF_RUNNER) $(CONF_TESTEE)
	$(CONF_RUNNER) --vectors conformance/vectors --errors spec/errors.tsv \
		--failing conformance/failing/c.txt -- $(CONF_TESTEE)

conformance-selftest: $(CONF_RUNNER) $(CONF_TESTEE)
	RUNNER=$(CONF_RUNNER) TESTEE=$(CONF_TESTEE) sh conformance/selftest.sh

# The README's Python skeleton: its descriptor helpers, run as printed.
conformance-skeleton: $(DEPS_STAMP)
	$(CONF_PY) conformance/tools/skeleton_check.py

# The suite's verdict line is the last one printed.
conformance: conformance-check conformance-selftest conformance-skeleton
	@$(MAKE) --no-print-directory conformance-run

conformance-vectors:
	$(CONF_PY) conformance/tools/vecgen.py
	$(CONF_PY) conformance/tools/vecheck.py

TEST_TARGETS += conformance
