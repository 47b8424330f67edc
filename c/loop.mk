# Event loops (chan.h, "Event loops"): the epoll server, the sd-event adapter
# and the load test, built and run by `make test`.
#
#   test-loop   1,000 concurrent clients x 100 requests, each with a fresh
#               reply_to, against one epoll thread (without and with two
#               stalled clients), and 200 x 100 with stalls against sd-event;
#               0 lost, the server's descriptor count back where it started,
#               its RSS flat.  The figures go to $(BUILD)/loop-load.txt.


LOOP_BINS := $(BUILD)/examples/epoll_server $(BUILD)/examples/sdevent_server \
	$(BUILD)/examples/loop_load

$(BUILD)/examples/epoll_server $(BUILD)/examples/loop_load: $(BUILD)/examples/%: \
		c/examples/%.c c/examples/loop_common.h c/include/chan.h $(LIBCHAN_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Ic/examples $< $(LIBCHAN_A) -lpthread $(ALL_LDFLAGS) -o $@

$(BUILD)/examples/sdevent_server: c/examples/sdevent_server.c c/examples/loop_common.h \
		c/include/chan.h $(LIBCHAN_A) $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Ic/examples $(shell pkg-config --cflags libsystemd) $< $(LIBCHAN_A) \
		-lpthread $(shell pkg-config --libs libsystemd) $(ALL_LDFLAGS) -o $@

all: $(LOOP_BINS)

# One server process per run; it must exit 0 (no descriptor leaked) after
# SIGTERM, and the load client must exit 0.
.PHONY: test-loop
test-loop: $(LOOP_BINS)
	@set -e; d=$$(mktemp -d); out=$(BUILD)/loop-load.txt; : > $$out; \
	trap 'kill $$srv 2>/dev/null || true; rm -rf $$d' EXIT; \
	run() { server=$$1; shift; \
		$(BUILD)/examples/$$server $$d/s.sock > $$d/server.out & srv=$$!; \
		for a in "$$@"; do \
			$(BUILD)/examples/loop_load $$d/s.sock $$a | sed "s/^/$$server /" | tee -a $$out \
				|| { echo "loop-load against $$server failed"; exit 1; }; \
		done; \
		kill -TERM $$srv; wait $$srv || { cat $$d/server.out; echo "$$server leaked"; exit 1; }; \
		sed "s/^/$$server: /" $$d/server.out; }; \
	run epoll_server "1000 100" "1000 100 --stall"; \
	run sdevent_server "200 100" "200 100 --stall"; \
	echo "loop: 4 passed, 0 failed"
TEST_TARGETS += test-loop
