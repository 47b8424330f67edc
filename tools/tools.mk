# chancodec: the command-line tool (tools/), its man page and its tests.
#
#   make                       builds $(BUILD)/chancodec
#   make test-chancodec        tools/tests/run.sh (part of `make test`)
#   make test-chancodec-big    the 1 GiB bounded-memory stream (not in `make test`)
#   make install               also installs chancodec and chancodec.1


CHANCODEC      := $(BUILD)/chancodec
CHANCODEC_SRCS := $(sort $(wildcard tools/*.c))
CHANCODEC_OBJS := $(CHANCODEC_SRCS:tools/%.c=$(BUILD)/obj/tools/%.o)
CHANCODEC_LIBS  = $(shell pkg-config --libs jansson 2>/dev/null || echo -ljansson) -lpthread -lm

all: $(CHANCODEC)

$(BUILD)/obj/tools/%.o: tools/%.c $(wildcard tools/*.h) c/include/chan.h $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itools $(shell pkg-config --cflags jansson 2>/dev/null) -c $< -o $@

$(CHANCODEC): $(CHANCODEC_OBJS) $(LIBCHAN_A)
	$(CC) $(ALL_LDFLAGS) -o $@ $(CHANCODEC_OBJS) $(LIBCHAN_A) $(CHANCODEC_LIBS)

.PHONY: test-chancodec test-chancodec-big lint-chancodec-man install-chancodec test-completion
test-chancodec: $(CHANCODEC)
	CHANCODEC=$(CURDIR)/$(CHANCODEC) tools/tests/run.sh
TEST_TARGETS += test-chancodec

test-chancodec-big: $(CHANCODEC)
	CHANCODEC=$(CURDIR)/$(CHANCODEC) tools/tests/bigstream.sh 1024

lint-chancodec-man:
	groff -man -ww -z tools/chancodec.1

install-chancodec: $(CHANCODEC)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1
	install -m 755 $(CHANCODEC) $(DESTDIR)$(BINDIR)/chancodec
	install -m 644 tools/chancodec.1 $(DESTDIR)$(MANDIR)/man1/chancodec.1
	install -d $(DESTDIR)$(PREFIX)/share/bash-completion/completions
	install -m 644 tools/chancodec.bash-completion $(DESTDIR)$(PREFIX)/share/bash-completion/completions/chancodec
INSTALL_TARGETS += install-chancodec

# The bash completion offers each command's options (as chancodec's --help
# lists them) and nothing it does not accept.
test-completion: $(CHANCODEC)
	for cmd in encode decode check dump listen send proxy; do \
		got=$$(bash -c 'source tools/chancodec.bash-completion; COMP_WORDS=(chancodec '$$cmd' -); COMP_CWORD=2; _chancodec; printf "%s\n" "$${COMPREPLY[@]}"' | sort -u); \
		want=$$($(CHANCODEC) $$cmd --help 2>&1 | grep -oE '(^| |\[)--?[a-z][a-z-]*' | tr -d ' [' | sort -u); \
		[ "$$got" = "$$want" ] || { echo "completion of '$$cmd': got [$$got], --help says [$$want]"; exit 1; }; \
	done; \
	echo "completion: the options of 7 commands: 1 passed, 0 failed"
TEST_TARGETS += test-completion

# `listen` at its descriptor limit (backs off, reports once, keeps serving)
# and --mode (the socket file's permissions; refused for an abstract name).
.PHONY: test-listen
test-listen: $(CHANCODEC)
	CHANCODEC=$(abspath $(CHANCODEC)) tools/tests/listen_emfile.sh
	d=$$(mktemp -d); trap 'kill $$pid 2>/dev/null; rm -rf $$d' EXIT; \
	$(CHANCODEC) listen --mode 640 $$d/s.sock 2>/dev/null & pid=$$!; \
	for i in $$(seq 100); do [ -S $$d/s.sock ] && break; sleep 0.05; done; \
	[ "$$(stat -c %a $$d/s.sock)" = 640 ] || { echo "listen --mode 640 made $$(stat -c %a $$d/s.sock)"; exit 1; }; \
	! $(CHANCODEC) listen --mode 640 @chan-mode-test 2>/dev/null || { echo "--mode on an abstract name was accepted"; exit 1; }; \
	echo "listen-mode: 1 passed, 0 failed"
TEST_TARGETS += test-listen

# chancodec proxy end to end: a followed reply_to, JSON lines, a hostile
# stream seen the same with and without it, the demo through it.
.PHONY: test-proxy
test-proxy: $(CHANCODEC) $(BUILD)/chan-demo
	CHANCODEC=$(abspath $(CHANCODEC)) CHAN_DEMO=$(abspath $(BUILD)/chan-demo) tools/tests/proxy.sh
TEST_TARGETS += test-proxy
