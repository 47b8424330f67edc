# python/: chan's independent Python binding (issue 8), run with Debian's Python.
#
#   make test-python    pyflakes, then the binding's tests (codec, libchan and
#                       protobuf oracles, vectors, transport, interop with C,
#                       text form vs chancodec, install recipe, example);
#                       prints "python: N passed, 0 failed"
#   make conformance-python
#                       the conformance runner (conformance/) against
#                       python/conformance_testee.py, with NO expected failures
#   make bench-python   python/bench.py (chan vs multiprocessing, codec vs pickle)
#
# The C helpers in python/interop/ (interop peers, the codec oracle) link
# libchan.a; the binding itself never does.

PY         := /usr/bin/python3
PY_BUILD   := $(BUILD)/python
PY_C_SRCS  := $(sort $(wildcard python/interop/*.c))
PY_C_BINS  := $(PY_C_SRCS:python/interop/%.c=$(PY_BUILD)/bin/%)


$(PY_BUILD)/bin/%: python/interop/%.c c/include/chan.h $(LIBCHAN_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LIBCHAN_A) $(ALL_LDFLAGS) -lpthread

PY_TEST_ENV = CHAN_SOURCE_DIR=$(CURDIR) CHAN_BUILD=$(CURDIR)/$(BUILD) CHAN_PY_BIN=$(CURDIR)/$(PY_BUILD)/bin \
	CHAN_PY_WORK=$(CURDIR)/$(PY_BUILD)/work PYTHONDONTWRITEBYTECODE=1

.PHONY: test-python conformance-python bench-python
# $(BUILD)/chancodec (tools/tools.mk): the text form is checked against it.
test-python: $(PY_C_BINS) $(BUILD)/chancodec $(DEPS_STAMP)
	@mkdir -p $(PY_BUILD)/work
	pyflakes3 python/src python/tests python/examples python/bench.py python/conformance_testee.py
	mypy --strict --cache-dir $(PY_BUILD)/mypy-cache python/src/chan
	$(PY_TEST_ENV) $(PY) python/tests/run.py

# The runner is built by conformance/conformance.mk.  An empty failure list:
# every case must pass.
conformance-python: $(BUILD)/conformance/runner $(DEPS_STAMP)
	$(BUILD)/conformance/runner --vectors conformance/vectors --errors spec/errors.tsv \
		-- $(PY) python/conformance_testee.py

bench-python: $(DEPS_STAMP)
	$(PY) python/bench.py

TEST_TARGETS += test-python conformance-python
