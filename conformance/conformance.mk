# conformance/: the language-neutral conformance suite (issue 4).
#
#   make conformance           vecheck (vectors re-verified without libchan,
#                              coverage of errors and MUSTs), the runner against
#                              the C testee, and the runner's self-test against
#                              deliberately broken testees.  Last line of the
#                              run: "conformance: N passed, 0 failed".
#   make conformance-vectors   regenerate conformance/vectors/*.vec (vecgen.py)
#   make conformance-python-codec
#                              the runner against the Python testee run as a
#                              codec-class testee (no descriptors; transport
#                              cases not applicable), with NO failure list;
#                              part of `make conformance`.
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
	conformance-vectors conformance-python-codec
conformance-check: $(DEPS_STAMP)
	$(CONF_PY) conformance/tools/vecheck.py

conformance-run: $(CONF_RUNNER) $(CONF_TESTEE)
	$(CONF_RUNNER) --vectors conformance/vectors --errors spec/errors.tsv \
		--failing conformance/failing/c.txt -- $(CONF_TESTEE)

conformance-selftest: $(CONF_RUNNER) $(CONF_TESTEE)
	RUNNER=$(CONF_RUNNER) TESTEE=$(CONF_TESTEE) PYTESTEE="$(CONF_PY) python/conformance_testee.py" \
		sh conformance/selftest.sh

# Conformance class codec (conformance/README.md): what a binding without
# descriptors (JavaScript, Java, WASM) can claim, here with the Python binding's
# codec layer.  No failure list: every applicable case must pass.
conformance-python-codec: $(CONF_RUNNER) $(DEPS_STAMP)
	$(CONF_RUNNER) --vectors conformance/vectors --errors spec/errors.tsv \
		-- $(CONF_PY) python/conformance_testee.py --class codec

# The README's Python skeleton: its descriptor helpers, run as printed.
conformance-skeleton: $(DEPS_STAMP)
	$(CONF_PY) conformance/tools/skeleton_check.py

# The suite's verdict line is the last one printed.
conformance: conformance-check conformance-selftest conformance-skeleton conformance-python-codec
	@$(MAKE) --no-print-directory conformance-run

conformance-vectors:
	$(CONF_PY) conformance/tools/vecgen.py
	$(CONF_PY) conformance/tools/vecheck.py

TEST_TARGETS += conformance
