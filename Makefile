# chan - the one build entry.  Components add themselves through fragments
# (c/c.mk, tools/tools.mk, conformance/conformance.mk, ...) so that each part
# of the tree owns its own rules.  Targets:
#   all        library, tools (default)
#   test       every test suite (CUnit, interop, conformance, ...); non-zero on failure
#   demo       the main job: producers, a consumer and nested futures across processes
#   install    PREFIX=/usr/local DESTDIR= : header, libchan.a/.so, chan.pc, chancodec, man page
#   clean
# Options: SANITIZE=1 builds everything with ASan+UBSan into build/asan.
#          V=1 shows every command line (the build is quiet otherwise).
#          WERROR=0 lets warnings be warnings (errors by default).
# Missing Debian packages are installed when run as root, and named otherwise.
# The version is written once, in c/include/chan.h (CHAN_VERSION_*).

PREFIX     ?= /usr/local
DESTDIR    ?=
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig

CC      ?= cc
OPT     ?= -O2 -g
CSTD    := -std=c11 -D_GNU_SOURCE
WERROR  ?= 1
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
ifeq ($(WERROR),1)
WARN    += -Werror
endif

# A quiet build: recipes are not echoed unless V=1 (their output still is).
ifneq ($(V),1)
.SILENT:
endif

# The one place the version is written: chan.h.
chan_version_part = $(shell sed -n 's/^\#define CHAN_VERSION_$(1) \([0-9]*\)$$/\1/p' c/include/chan.h)
CHAN_VERSION_MAJOR := $(call chan_version_part,MAJOR)
CHAN_VERSION := $(CHAN_VERSION_MAJOR).$(call chan_version_part,MINOR).$(call chan_version_part,PATCH)
SANITIZE ?=
ifeq ($(SANITIZE),1)
BUILD   ?= build/asan
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
else
BUILD   ?= build
SANFLAGS :=
endif
CFLAGS  ?= $(OPT)
# Header dependencies are tracked (-MMD: a .d file beside every object).
# Only libchan's own objects see c/src (LIB_CFLAGS in c/c.mk); white-box
# users (bench, fuzz, hardening) name it in their own fragments.
ALL_CFLAGS = $(CSTD) $(WARN) $(CFLAGS) $(SANFLAGS) -MMD -MP -Ic/include -I$(BUILD)/gen
LDFLAGS ?=
ALL_LDFLAGS = $(LDFLAGS) $(SANFLAGS)

# Debian packages needed to build and test: debian/control's Build-Depends is
# the one list (test-only ones are marked <!nocheck> there); no fragment adds
# to it (test-deps checks).
DEB_PACKAGES := $(shell packaging/build-deps debian/control)

# CHAN_SKIP_DEPS=1 (the Debian package build): the build system has already
# installed Build-Depends; do not look.
ifeq ($(CHAN_SKIP_DEPS),1)
DEPS_STAMP :=
else
DEPS_STAMP := build/.deps-ok
endif

.PHONY: all test demo install uninstall clean deps check
all:

# Install what is missing (as root) or name it (otherwise).  The stamp records
# the package list, so adding a package re-runs the check.
build/.deps-ok: Makefile debian/control packaging/build-deps
	@mkdir -p $(dir $@)
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian packages:$$missing"; \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
		else \
			echo "missing Debian packages:$$missing"; \
			echo "run: sudo apt-get install$$missing"; exit 1; \
		fi; \
	fi
	@echo "$(DEB_PACKAGES)" > $@
deps: $(DEPS_STAMP)

TEST_TARGETS :=
DEMO_TARGETS :=
INSTALL_TARGETS :=
CLEAN_DIRS := build

include $(sort $(wildcard c/*.mk */*.mk))
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

all:
test: $(TEST_TARGETS)
	@echo "make test: all suites passed"
demo: $(DEMO_TARGETS)
install: $(INSTALL_TARGETS)
check: test
clean:
	rm -rf $(CLEAN_DIRS)
