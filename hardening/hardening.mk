# hardening/: failure injection, load and soak, valgrind (issue 7).
#
#   make test-inject      allocation failure at every N and I/O faults at every
#                         byte offset, under libchan (part of `make test`)
#   make load             8 producers x 10,000 requests, each with a fresh
#                         reply_to connection, through one consumer; then the
#                         slow-consumer (back-pressure) variant
#   make load-smoke       the same at 8 x 1,000 (part of `make test`)
#   make test-valgrind    the CUnit suites under valgrind memcheck with
#                         --track-fds=yes (part of `make test` where valgrind
#                         is installed; about 30 s)
#
# Findings go to hardening/FINDINGS.md.


HARD_DIR     := $(BUILD)/hardening
HARD_CFLAGS   = $(ALL_CFLAGS) -Ihardening
HARD_INJ_A   := $(HARD_DIR)/libchan_inj.a

# libchan with its libc calls renamed to the inj_* wrappers (inject.h).
$(HARD_INJ_A): $(LIBCHAN_A) hardening/inject.syms
	@mkdir -p $(dir $@)
	objcopy --redefine-syms=hardening/inject.syms $(LIBCHAN_A) $@

$(HARD_DIR)/inject_test: hardening/inject_test.c hardening/inject.c hardening/util.c \
		hardening/inject.h hardening/util.h c/include/chan.h $(HARD_INJ_A)
	@mkdir -p $(dir $@)
	$(CC) $(HARD_CFLAGS) -o $@ hardening/inject_test.c hardening/inject.c \
		hardening/util.c $(HARD_INJ_A) $(ALL_LDFLAGS) -lpthread

$(HARD_DIR)/load: hardening/load.c hardening/util.c hardening/util.h c/include/chan.h $(LIBCHAN_A)
	@mkdir -p $(dir $@)
	$(CC) $(HARD_CFLAGS) -o $@ hardening/load.c hardening/util.c $(LIBCHAN_A) \
		$(ALL_LDFLAGS) -lpthread

.PHONY: test-inject load load-smoke test-valgrind
test-inject: $(HARD_DIR)/inject_test
	$(HARD_DIR)/inject_test
TEST_TARGETS += test-inject

load: $(HARD_DIR)/load
	$(HARD_DIR)/load -p 8 -n 10000
	$(HARD_DIR)/load -p 8 -n 2000 -s 200 -b 4096 -t 20 -w 64 -z 3000

load-smoke: $(HARD_DIR)/load
	$(HARD_DIR)/load -p 8 -n 1000
	$(HARD_DIR)/load -p 4 -n 300 -s 200 -b 4096 -t 20 -w 64 -z 3000
TEST_TARGETS += load-smoke

# valgrind: the CUnit binary under memcheck, fd tracking on.  Children of
# fork() are silent (their own checks report through exit codes).
VALGRIND_DIR := $(BUILD)/valgrind
test-valgrind: $(CHAN_TESTS)
	@mkdir -p $(VALGRIND_DIR)
	hardening/valgrind.sh $(CHAN_TESTS) $(VALGRIND_DIR)
# (not with SANITIZE=1: an ASan binary cannot run under valgrind)
ifneq ($(shell command -v valgrind 2>/dev/null),)
ifneq ($(SANITIZE),1)
TEST_TARGETS += test-valgrind
endif
endif

# The reproducers of hardening/FINDINGS.md, failing while a finding is open.
.PHONY: findings
findings: $(HARD_DIR)/inject_test
	INJECT_STRICT=1 $(HARD_DIR)/inject_test $$(sed -n 's/^.*{"\(finding_[a-z0-9_]*\)".*/\1/p' hardening/inject_test.c)

# Which failure paths of libchan the injection tests reach: libchan built
# with gcov, injected, and every line of c/src that returns NO_MEMORY or
# SYSTEM (or a failed allocation) listed with its execution count.
HARD_COV := $(HARD_DIR)/cov
.PHONY: inject-coverage
inject-coverage: hardening/inject_test.c hardening/inject.c hardening/util.c hardening/inject.syms
	@rm -rf $(HARD_COV); mkdir -p $(HARD_COV)/obj
	for f in $(LIBCHAN_SRCS); do \
		$(CC) $(CSTD) -O0 -g --coverage -Ic/include -Ic/src -c $(CURDIR)/$$f \
			-o $(HARD_COV)/obj/$$(basename $$f .c).o || exit 1; \
	done
	ar rcs $(HARD_COV)/libchan_cov.a $(HARD_COV)/obj/*.o
	objcopy --redefine-syms=hardening/inject.syms $(HARD_COV)/libchan_cov.a $(HARD_COV)/libchan_inj.a
	$(CC) $(HARD_CFLAGS) --coverage -o $(HARD_COV)/inject_test hardening/inject_test.c \
		hardening/inject.c hardening/util.c $(HARD_COV)/libchan_inj.a -lpthread
	$(HARD_COV)/inject_test > $(HARD_COV)/inject.out
	cd $(HARD_COV)/obj && gcov -o . $(LIBCHAN_SRCS:%=$(CURDIR)/%) > ../gcov.txt 2>&1
	hardening/failure-paths.sh $(HARD_COV)/obj

# ThreadSanitizer: the CUnit suites (concurrent senders and receivers on one
# connection among them) built with clang -fsanitize=thread.  Separate from
# `make test` (~15 s more); hardening/tsan_shim.c explains the shim.
TSAN_DIR   := build/tsan
TSAN_SRCS   = $(LIBCHAN_SRCS) $(TEST_SRCS) $(TEST_SUPPORT) hardening/tsan_shim.c
TSAN_FLAGS  = $(CSTD) -O1 -g -fsanitize=thread -Ic/include -Ic/src -Ic/tests -I$(BUILD)/gen \
	$(shell pkg-config --cflags libprotobuf-c cunit 2>/dev/null) \
	-DCHAN_SOURCE_DIR='"$(CURDIR)"' -DCHAN_BUILD_DIR='"$(CURDIR)/$(BUILD)"'
.PHONY: test-tsan
$(TSAN_DIR)/chan_tests: $(TSAN_SRCS) $(BUILD)/gen/suites.c $(GEN_PB_C) $(GEN_PB_H) c/include/chan.h
	@rm -rf $(TSAN_DIR)/obj; mkdir -p $(TSAN_DIR)/obj
	for f in $(TSAN_SRCS) $(BUILD)/gen/suites.c $(GEN_PB_C); do \
		clang $(TSAN_FLAGS) -c $$f -o $(TSAN_DIR)/obj/$$(echo $$f | tr / _).o || exit 1; \
	done
	clang -fsanitize=thread -o $@ $(TSAN_DIR)/obj/*.o $(TEST_LIBS)
test-tsan: $(TSAN_DIR)/chan_tests
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 $(TSAN_DIR)/chan_tests
CLEAN_DIRS += $(TSAN_DIR)
# Fast (about 7 s): one message sent by four threads at once, every other suite too.
TEST_TARGETS += test-tsan
