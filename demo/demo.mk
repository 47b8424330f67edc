# The demo (demo/): producers, a consumer and nested futures across real
# processes, and a round-trip-time measurement.
#
#   make demo        run the demo with its trace (part of DEMO_TARGETS)
#   make test-demo   run it quietly; part of `make test`
#   make rtt         chan request with a fresh reply_to vs raw sendmsg, pinned
#                    to one CPU and to two (not part of `make test`)
#   make bench-actor the demo's actor workload: requests/s with reply_to
#                    connections vs channels, fds in flight (not part of
#                    `make test`; `chan-demo --bench-actor --json` for scripts)

CHAN_DEMO      := $(BUILD)/chan-demo
CHAN_RTT       := $(BUILD)/chan-rtt
DEMO_SRCS      := demo/demo.c demo/producer.c demo/actor.c demo/load.c demo/util.c
DEMO_OBJS      := $(DEMO_SRCS:demo/%.c=$(BUILD)/obj/demo/%.o)

$(BUILD)/obj/demo/%.o: demo/%.c demo/demo.h c/include/chan.h $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Idemo -c $< -o $@

$(CHAN_DEMO): $(DEMO_OBJS) $(LIBCHAN_A)
	$(CC) $(ALL_LDFLAGS) -o $@ $(DEMO_OBJS) $(LIBCHAN_A) -lpthread

$(CHAN_RTT): $(BUILD)/obj/demo/rtt.o $(LIBCHAN_A)
	$(CC) $(ALL_LDFLAGS) -o $@ $(BUILD)/obj/demo/rtt.o $(LIBCHAN_A) -lpthread

all: $(CHAN_DEMO)

.PHONY: run-demo test-demo rtt bench-actor
run-demo: $(CHAN_DEMO)
	$(CHAN_DEMO)
DEMO_TARGETS += run-demo

# The same run, its trace kept in a log that is shown only on failure.
test-demo: $(CHAN_DEMO)
	@$(CHAN_DEMO) > $(BUILD)/demo.log 2>&1 || { cat $(BUILD)/demo.log; exit 1; }
	@tail -n 1 $(BUILD)/demo.log
TEST_TARGETS += test-demo

rtt: $(CHAN_RTT)
	$(CHAN_RTT)

bench-actor: $(CHAN_DEMO)
	$(CHAN_DEMO) --bench-actor
