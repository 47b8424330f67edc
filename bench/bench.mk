# bench/: chan against the kernel's limit and its peers (issue 6).
#
#   make bench            build with -O2 (no sanitizers) and run every
#                         comparison: codec vs protobuf-c/msgpack-c/pickle,
#                         transport vs raw sendmsg/recvmsg, sd-bus peer to
#                         peer and Python's multiprocessing, scaling curves,
#                         callgrind instruction counts.  Prints a table, rewrites
#                         BENCHMARKS.md and bench/scaling.png.  < 5 minutes.
#   make bench-callgrind  only the callgrind instruction counts of the codec
#   make bench-render     BENCHMARKS.md and the plot again from the last run
#   make bench-smoke      (part of `make test`) every benchmark for a handful
#                         of iterations, with the checks of what it measures
#                         and no timing; writes only into the build directory.
#
# libchan is compiled again for the benchmarks, into $(BENCH_DIR), with its
# own optimisation flags (OPT of the top Makefile may be -O0 for debugging).
# Under SANITIZE=1 the benchmark binaries get the sanitizers too (so
# bench-smoke checks them); `make bench` then warns that its figures mean
# nothing.


BENCH_DIR    := $(BUILD)/bench
BENCH_OPT    := -O2 -g
BENCH_PY     := /usr/bin/python3
BENCH_CFLAGS  = $(CSTD) $(WARN) $(BENCH_OPT) $(SANFLAGS) -Ic/include -Ic/src -Ibench \
	-I$(BENCH_DIR)/gen $(shell pkg-config --cflags libprotobuf-c msgpack 2>/dev/null) \
	$(BENCH_SDBUS_CFLAGS)
BENCH_LIBS    = $(shell pkg-config --libs libprotobuf-c msgpack 2>/dev/null || \
	echo -lprotobuf-c -lmsgpackc) -lpthread
# sd-bus, the peer-to-peer D-Bus baseline of transport_bench (issue 15;
# libsystemd-dev is in debian/control's Build-Depends)
BENCH_SDBUS_CFLAGS = $(shell pkg-config --cflags libsystemd 2>/dev/null)
BENCH_SDBUS_LIBS   = $(shell pkg-config --libs libsystemd 2>/dev/null || echo -lsystemd)

# (bench.mk sorts before c/c.mk: do not rely on its variables)
BENCH_LIB_SRCS := $(sort $(wildcard c/src/*.c))
BENCH_LIB_OBJS := $(BENCH_LIB_SRCS:c/src/%.c=$(BENCH_DIR)/obj/lib/%.o)
BENCH_LIBCHAN  := $(BENCH_DIR)/libchan.a
BENCH_COMMON   := $(BENCH_DIR)/obj/common.o
BENCH_TYPED_C  := $(BENCH_DIR)/gen/typed.pb-c.c
BENCH_TYPED_H  := $(BENCH_DIR)/gen/typed.pb-c.h
BENCH_BINS     := $(BENCH_DIR)/codec_bench $(BENCH_DIR)/transport_bench $(BENCH_DIR)/outstanding

$(BENCH_DIR)/obj/lib/%.o: c/src/%.c c/include/chan.h $(wildcard c/src/*.h) $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_CFLAGS) -fvisibility=hidden -c $< -o $@

$(BENCH_LIBCHAN): $(BENCH_LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BENCH_TYPED_C) $(BENCH_TYPED_H) &: bench/typed.proto $(DEPS_STAMP)
	@mkdir -p $(BENCH_DIR)/gen
	protoc-c --proto_path=bench --c_out=$(BENCH_DIR)/gen typed.proto

$(BENCH_DIR)/obj/typed.pb-c.o: $(BENCH_TYPED_C) $(BENCH_TYPED_H)
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_CFLAGS) -Wno-missing-prototypes -c $< -o $@

$(BENCH_DIR)/obj/%.o: bench/%.c bench/bench.h c/include/chan.h $(BENCH_TYPED_H) $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_CFLAGS) -c $< -o $@

$(BENCH_DIR)/codec_bench: $(BENCH_DIR)/obj/codec_bench.o $(BENCH_DIR)/obj/typed.pb-c.o \
		$(BENCH_COMMON) $(BENCH_LIBCHAN)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(BENCH_LIBS)

$(BENCH_DIR)/transport_bench: $(BENCH_DIR)/obj/transport_bench.o $(BENCH_COMMON) $(BENCH_LIBCHAN)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(BENCH_LIBS) $(BENCH_SDBUS_LIBS)

# many requests in flight: descriptors per pattern (issue 13)
$(BENCH_DIR)/outstanding: $(BENCH_DIR)/obj/outstanding.o $(BENCH_LIBCHAN)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -lpthread

# chancodec proxy's cost to a conversation (issue 16)
$(BENCH_DIR)/proxy_rtt: $(BENCH_DIR)/obj/proxy_rtt.o $(BENCH_LIBCHAN)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -lpthread

# valgrind cannot run sanitizer builds: no callgrind figures under SANITIZE=1.
BENCH_RUN = $(BENCH_PY) bench/run.py --build $(BENCH_DIR) --loop $(BUILD)/examples \
	--proxy $(BUILD)/chancodec --demo $(BUILD)/chan-demo \
	$(if $(filter 1,$(SANITIZE)),--no-callgrind)
# the event-loop load test's programs (c/loop.mk)
BENCH_LOOP_BINS := $(BUILD)/examples/epoll_server $(BUILD)/examples/loop_load

.PHONY: bench bench-smoke bench-callgrind bench-render
bench: $(BENCH_BINS) $(BENCH_LOOP_BINS) $(BENCH_DIR)/proxy_rtt $(BUILD)/chancodec $(BUILD)/chan-demo $(DEPS_STAMP)
	@if [ "$(SANITIZE)" = 1 ]; then echo "bench: WARNING: sanitizer build, figures are meaningless"; fi
	$(BENCH_RUN)

bench-callgrind: $(BENCH_BINS) $(DEPS_STAMP)
	$(BENCH_RUN) --callgrind-only

# BENCHMARKS.md and the plot again from the last `make bench` (prose edits).
bench-render:
	$(BENCH_RUN) --render-only

bench-smoke: $(BENCH_BINS) $(BUILD)/chan-demo $(DEPS_STAMP)
	$(BENCH_RUN) --smoke
TEST_TARGETS += bench-smoke
