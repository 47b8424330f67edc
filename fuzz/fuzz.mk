# fuzz/: libFuzzer targets for the decoder, the stream reader and the text
# form (issue 7, fuzz/README.md).
#
#   make fuzz FUZZ_SECONDS=N   run every target N seconds (default 60) on its
#                              corpus in $(BUILD)/fuzz/corpus/<target>, seeded
#                              from fuzz/corpus, the conformance vectors,
#                              generated frames and fuzz/regressions
#   make fuzz-smoke            every regression input once, then a few
#                              seconds of fuzzing per target (part of
#                              `make test`; FUZZ_SMOKE_SECONDS, default 3)
#   make fuzz-build            only build the targets
#
# The targets are always built with clang -fsanitize=fuzzer,address,undefined
# into $(BUILD)/fuzz (build/fuzz by default), whatever SANITIZE says; the library is compiled from
# c/src for them with coverage instrumentation.


FUZZ_CC      ?= clang
FUZZ_DIR     := $(BUILD)/fuzz
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 3
FUZZ_TARGETS := decode_fuzz stream_fuzz textform_fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS  := $(CSTD) $(WARN) -g -O1 $(FUZZ_SAN) -fsanitize=fuzzer-no-link \
	-Ic/include -Ic/src -Ihardening -Ifuzz -Itools -I$(FUZZ_DIR)/gen
FUZZ_JANSSON_CFLAGS = $(shell pkg-config --cflags jansson 2>/dev/null)
FUZZ_JANSSON_LIBS   = $(shell pkg-config --libs jansson 2>/dev/null || echo -ljansson)
FUZZ_PBC_LIBS       = $(shell pkg-config --libs libprotobuf-c 2>/dev/null || echo -lprotobuf-c)
# libFuzzer options common to every run
FUZZ_OPTS    := -max_len=8192 -timeout=20 -rss_limit_mb=2048 -print_final_stats=1
# ASan: report leaks (libFuzzer checks every input that allocates).
FUZZ_ENV     := ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

FUZZ_LIB_OBJS := $(LIBCHAN_SRCS:c/src/%.c=$(FUZZ_DIR)/obj/lib/%.o)
FUZZ_PB_C     := $(FUZZ_DIR)/gen/chan/v1/chan.pb-c.c

$(FUZZ_DIR)/obj/lib/%.o: c/src/%.c c/include/chan.h $(wildcard c/src/*.h) $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_DIR)/obj/%.o: fuzz/%.c c/include/chan.h hardening/util.h fuzz/ref.h fuzz/fzutil.h $(FUZZ_PB_C) $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_JANSSON_CFLAGS) -c $< -o $@

$(FUZZ_DIR)/obj/util.o: hardening/util.c hardening/util.h c/include/chan.h $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_DIR)/obj/textform.o: tools/textform.c tools/textform.h c/include/chan.h $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_JANSSON_CFLAGS) -c $< -o $@

# protobuf-c's generated code: the byte-exact oracle of decode_fuzz.
$(FUZZ_PB_C): proto/chan/v1/chan.proto $(DEPS_STAMP)
	@mkdir -p $(FUZZ_DIR)/gen
	protoc-c --proto_path=proto --c_out=$(FUZZ_DIR)/gen chan/v1/chan.proto

$(FUZZ_DIR)/obj/chan.pb-c.o: $(FUZZ_PB_C)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CSTD) -g -O1 $(FUZZ_SAN) -I$(FUZZ_DIR)/gen -c $< -o $@

FUZZ_COMMON := $(FUZZ_LIB_OBJS) $(FUZZ_DIR)/obj/util.o

$(FUZZ_DIR)/decode_fuzz: $(FUZZ_DIR)/obj/decode_fuzz.o $(FUZZ_DIR)/obj/ref.o \
		$(FUZZ_DIR)/obj/chan.pb-c.o $(FUZZ_COMMON)
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $^ $(FUZZ_PBC_LIBS) -lpthread

$(FUZZ_DIR)/stream_fuzz: $(FUZZ_DIR)/obj/stream_fuzz.o $(FUZZ_COMMON)
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $^ -lpthread

$(FUZZ_DIR)/textform_fuzz: $(FUZZ_DIR)/obj/textform_fuzz.o $(FUZZ_DIR)/obj/textform.o $(FUZZ_COMMON)
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $^ $(FUZZ_JANSSON_LIBS) -lm -lpthread

# Seeds: the conformance vectors and generated frames (never committed).
FUZZ_VECS := $(sort $(wildcard conformance/vectors/*.vec))
FUZZ_JSONS := $(sort $(wildcard tools/tests/*.json tools/tests/golden/*.json))
$(FUZZ_DIR)/seedgen: fuzz/seedgen.c c/include/chan.h $(LIBCHAN_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LIBCHAN_A) $(ALL_LDFLAGS) -lm -lpthread

$(FUZZ_DIR)/seeds.stamp: fuzz/vec2corpus.py $(FUZZ_VECS) $(FUZZ_JSONS) $(FUZZ_DIR)/seedgen
	rm -rf $(FUZZ_DIR)/seeds
	mkdir -p $(FUZZ_DIR)/seeds/decode_fuzz $(FUZZ_DIR)/seeds/stream_fuzz $(FUZZ_DIR)/seeds/textform_fuzz
	/usr/bin/python3 fuzz/vec2corpus.py $(FUZZ_DIR)/seeds/vec $(FUZZ_VECS) --json $(FUZZ_JSONS)
	$(FUZZ_DIR)/seedgen $(FUZZ_DIR)/seeds/gen 300
	for t in decode stream textform; do \
		for d in vec gen; do \
			[ -d $(FUZZ_DIR)/seeds/$$d/$$t ] && cp $(FUZZ_DIR)/seeds/$$d/$$t/* $(FUZZ_DIR)/seeds/$${t}_fuzz/ || true; \
		done; \
	done
	@touch $@

.PHONY: fuzz fuzz-build fuzz-smoke
fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ_DIR)/%) $(FUZZ_DIR)/seeds.stamp

# Each run appends its final statistics to $(FUZZ_DIR)/stats.log.
fuzz: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_DIR)/corpus/$$t $(FUZZ_DIR)/artifacts fuzz/regressions/$$t; \
		echo "== $$t: $(FUZZ_SECONDS) s"; \
		$(FUZZ_ENV) $(FUZZ_DIR)/$$t $(FUZZ_OPTS) -max_total_time=$(FUZZ_SECONDS) \
			-artifact_prefix=$(FUZZ_DIR)/artifacts/$$t- \
			$$( [ -f fuzz/$$t.dict ] && echo -dict=fuzz/$$t.dict ) \
			$(FUZZ_DIR)/corpus/$$t $$( [ -d fuzz/corpus/$$t ] && echo fuzz/corpus/$$t ) \
			$(FUZZ_DIR)/seeds/$$t fuzz/regressions/$$t \
			> $(FUZZ_DIR)/$$t.log 2>&1; rc=$$?; \
		grep -E '^stat::(number_of_executed_units|peak_rss_mb|new_units_added)' $(FUZZ_DIR)/$$t.log \
			| sed "s/^/$$t /" | tee -a $(FUZZ_DIR)/stats.log; \
		echo "$$t corpus: $$(ls $(FUZZ_DIR)/corpus/$$t | wc -l) files, $$(du -sk $(FUZZ_DIR)/corpus/$$t | cut -f1) KiB"; \
		if [ $$rc -ne 0 ]; then tail -40 $(FUZZ_DIR)/$$t.log; \
			echo "$$t FAILED: see $(FUZZ_DIR)/$$t.log; crash input in $(FUZZ_DIR)/artifacts/"; exit 1; fi; \
	done

# The smoke run: regressions and the committed corpus once, then a short
# bounded fuzz per target into a scratch corpus.
fuzz-smoke: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
		rm -rf $(FUZZ_DIR)/smoke/$$t; mkdir -p $(FUZZ_DIR)/smoke/$$t $(FUZZ_DIR)/artifacts; \
		$(FUZZ_ENV) $(FUZZ_DIR)/$$t $(FUZZ_OPTS) -max_total_time=$(FUZZ_SMOKE_SECONDS) \
			-artifact_prefix=$(FUZZ_DIR)/artifacts/$$t- \
			$$( [ -f fuzz/$$t.dict ] && echo -dict=fuzz/$$t.dict ) \
			$(FUZZ_DIR)/smoke/$$t $$( [ -d fuzz/corpus/$$t ] && echo fuzz/corpus/$$t ) \
			$$( [ -d fuzz/regressions/$$t ] && echo fuzz/regressions/$$t ) \
			$(FUZZ_DIR)/seeds/$$t > $(FUZZ_DIR)/smoke-$$t.log 2>&1; rc=$$?; \
		runs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $(FUZZ_DIR)/smoke-$$t.log); \
		if [ $$rc -ne 0 ]; then tail -40 $(FUZZ_DIR)/smoke-$$t.log; \
			echo "fuzz-smoke: $$t FAILED (log $(FUZZ_DIR)/smoke-$$t.log)"; exit 1; fi; \
		echo "fuzz-smoke: $$t ok, $$runs inputs run"; \
	done
TEST_TARGETS += fuzz-smoke
CLEAN_DIRS += $(FUZZ_DIR)

# Source coverage of each target's corpus (llvm-cov): every input of
# build/fuzz/corpus, fuzz/corpus, the seeds and the regressions run once by
# a coverage build of the target; prints line/region coverage per file.
FUZZ_COV_DIR := $(FUZZ_DIR)/cov
FUZZ_COV_CFLAGS := $(CSTD) -g -O0 -fprofile-instr-generate -fcoverage-mapping -fsanitize=fuzzer-no-link \
	-Ic/include -Ic/src -Ihardening -Ifuzz -Itools -I$(FUZZ_DIR)/gen
.PHONY: fuzz-coverage
fuzz-coverage: fuzz-build
	@rm -rf $(FUZZ_COV_DIR); mkdir -p $(FUZZ_COV_DIR)
	@set -e; for t in $(FUZZ_TARGETS); do \
		extra=""; libs="-lpthread"; \
		case $$t in decode_fuzz) extra="fuzz/ref.c $(FUZZ_PB_C)"; libs="$(FUZZ_PBC_LIBS) -lpthread";; \
			textform_fuzz) extra="tools/textform.c"; libs="$(FUZZ_JANSSON_LIBS) -lm -lpthread";; esac; \
		clang $(FUZZ_COV_CFLAGS) $(FUZZ_JANSSON_CFLAGS) -fsanitize=fuzzer -o $(FUZZ_COV_DIR)/$$t \
			fuzz/$$t.c hardening/util.c $$extra $(LIBCHAN_SRCS) $$libs; \
		dirs=""; for d in $(FUZZ_DIR)/corpus/$$t fuzz/corpus/$$t $(FUZZ_DIR)/seeds/$$t fuzz/regressions/$$t; do \
			[ -d $$d ] && dirs="$$dirs $$d"; done; \
		LLVM_PROFILE_FILE=$(FUZZ_COV_DIR)/$$t.profraw $(FUZZ_COV_DIR)/$$t -runs=0 -max_len=8192 $$dirs \
			> $(FUZZ_COV_DIR)/$$t.log 2>&1; \
		llvm-profdata merge -sparse $(FUZZ_COV_DIR)/$$t.profraw -o $(FUZZ_COV_DIR)/$$t.profdata; \
		echo "== $$t: coverage of its corpus"; \
		llvm-cov report $(FUZZ_COV_DIR)/$$t -instr-profile=$(FUZZ_COV_DIR)/$$t.profdata \
			$(LIBCHAN_SRCS) $$( [ $$t = textform_fuzz ] && echo tools/textform.c ) | \
			awk 'NR <= 2 || /TOTAL/ || / c\/src| tools\// || /^[a-z]/' ; \
	done
