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

DEB_PACKAGES += valgrind binutils

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
ifneq ($(shell command -v valgrind 2>/dev/null),)
TEST_TARGETS += test-valgrind
endif

# The reproducers of hardening/FINDINGS.md, failing while a finding is open.
.PHONY: findings
findings: $(HARD_DIR)/inject_test
	INJECT_STRICT=1 $(HARD_DIR)/inject_test $$(sed -n 's/^.*{"\(finding_[a-z0-9_]*\)".*/\1/p' hardening/inject_test.c)
