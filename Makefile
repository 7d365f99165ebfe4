# gohub build. `make` builds build/release/gohub; `make run` and `make test`
# install missing Debian packages first (scripts/setup.sh).
#
# VARIANT: release | debug | asan | tsan  (asan = AddressSanitizer + UBSan; tsan = ThreadSanitizer)
VARIANT ?= release
# BUILD: the output root (parallel checkouts or helpers may use their own)
BUILD   ?= build
OUT     := $(BUILD)/$(VARIANT)
CC      ?= cc
PYTHON  := /usr/bin/python3
CONFIG  ?= configs/gohub.yaml

PKGS     := libuv libcjson yaml-0.1 luajit hiredis libnats libjwt libcrypto
LLHTTP_DIR := /usr/share/llhttp
LLHTTP_INC := /usr/share/include/llhttp

CSTD := -std=c11 -D_GNU_SOURCE
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wold-style-definition -Wpointer-arith -Wwrite-strings -Wformat=2 \
        -Wundef -Wvla -Wimplicit-fallthrough -Wno-format-zero-length
# third-party headers as -isystem, so -Werror never fires inside them;
# recursive (=) so pkg-config only runs once a compile needs it
DEPS_CFLAGS = $(patsubst -I%,-isystem %,$(shell pkg-config --cflags $(PKGS))) -isystem $(LLHTTP_INC)
DEPS_LIBS   = $(shell pkg-config --libs libuv libcjson yaml-0.1 luajit libjwt libcrypto hiredis libnats) -lwslay -lpthread -lm

OPT_release := -O2 -g
OPT_debug   := -O0 -g
OPT_asan    := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
LDSAN_asan  := -fsanitize=address,undefined
OPT_tsan    := -O1 -g -fsanitize=thread -fno-omit-frame-pointer
LDSAN_tsan  := -fsanitize=thread

CFLAGS_ALL = $(CSTD) $(WARN) $(DEPS_CFLAGS) $(OPT_$(VARIANT)) -MMD -MP -Isrc
LDFLAGS_ALL = $(LDSAN_$(VARIANT))

SRC      := $(filter-out src/main.c,$(wildcard src/*.c))
OBJ      := $(patsubst src/%.c,$(OUT)/obj/%.o,$(SRC))
LLHTTP_OBJ := $(OUT)/obj/llhttp_api.o $(OUT)/obj/llhttp_http.o $(OUT)/obj/llhttp_llhttp.o
LIB      := $(OUT)/libgohub.a
BIN      := $(OUT)/gohub
BENCH    := $(OUT)/gohub-bench
FLOOR    := $(OUT)/gohub-floor
UNIT_SRC := $(wildcard tests/unit/*_test.c)
UNIT_BIN := $(patsubst tests/unit/%.c,$(OUT)/tests/%,$(UNIT_SRC))

.PHONY: all run test unit check-asan check-tsan integration spec bench deps clean help

all: $(BIN) $(BENCH) $(FLOOR)

help:
	@echo "make            build $(BIN)"
	@echo "make run        install deps if missing, build, run gohub on $(CONFIG)"
	@echo "make test       install deps if missing, run every test suite"
	@echo "make check-asan C unit tests under ASan+UBSan"
	@echo "make check-tsan the threaded integration suites against a ThreadSanitizer daemon"
	@echo "make spec       busted specs of the Lua handlers (LuaJIT)"
	@echo "make bench      benchmarks vs a Node ws hub -> bench/results/summary.md"
	@echo "make clean"

deps:
	@sh scripts/setup.sh

$(OUT)/obj/%.o: src/%.c | $(OUT)/obj
	$(CC) $(CFLAGS_ALL) -c $< -o $@

# llhttp's generated C from Debian's node-llhttp, with relaxed warnings
$(OUT)/obj/llhttp_%.o: $(LLHTTP_DIR)/%.c | $(OUT)/obj
	$(CC) -std=c11 -O2 -g -w $(filter -fsanitize%,$(OPT_$(VARIANT))) -I$(LLHTTP_INC) -c $< -o $@

$(LIB): $(OBJ) $(LLHTTP_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BIN): $(OUT)/obj/main.o $(LIB)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(DEPS_LIBS)

# the load generator: libc + POSIX only, no code shared with the server
$(BENCH): $(wildcard src/bench/*.c) $(wildcard src/bench/*.h) | $(OUT)/obj
	$(CC) $(CFLAGS_ALL) -Isrc/bench $(LDFLAGS_ALL) -o $@ $(wildcard src/bench/*.c)

# the bench's floor: a minimal C room server (src/bench/floor/floor.c), the
# least a server can do per delivery; it borrows the bench's SHA-1/base64
$(FLOOR): src/bench/floor/floor.c src/bench/sha1.c src/bench/bench.h | $(OUT)/obj
	$(CC) $(CFLAGS_ALL) -Isrc/bench $(LDFLAGS_ALL) -o $@ src/bench/floor/floor.c src/bench/sha1.c

$(OUT)/tests/%: tests/unit/%.c $(LIB) tests/harness.h | $(OUT)/tests
	$(CC) $(CFLAGS_ALL) -Itests $(LDFLAGS_ALL) -o $@ $< $(LIB) $(DEPS_LIBS)

$(OUT)/obj $(OUT)/tests:
	mkdir -p $@

run: deps
	@$(MAKE) --no-print-directory all
	$(BIN) -c $(CONFIG)

# C unit tests under ASan+UBSan: any sanitizer report aborts the test binary.
check-asan:
	@$(MAKE) --no-print-directory VARIANT=asan unit

unit: $(UNIT_BIN)
	@fail=0; for t in $(UNIT_BIN); do echo "== $$t"; \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  $$t || fail=1; done; exit $$fail

# Integration tests: the real daemon driven by real clients over loopback
# sockets, first the release build, then the ASan+UBSan build.
integration: all
	@$(MAKE) --no-print-directory VARIANT=asan all
	GOHUB_BIN=$(abspath $(BUILD)/release/gohub) GOHUB_ASAN_BIN=$(abspath $(BUILD)/asan/gohub) \
	  $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration
	@echo "== the same suites against the ASan+UBSan daemon (a report or leak fails the test;"
	@echo "   test_limits is left out: its RSS bounds do not hold under ASan's quarantine)"
	GOHUB_BIN=$(abspath $(BUILD)/asan/gohub) ASAN_OPTIONS=detect_leaks=1:exitcode=99 \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration \
	  --ignore=tests/integration/test_limits.py

# The suites where threads meet (workers, the bus thread, reloads, metrics,
# the watchdog) against a ThreadSanitizer daemon: any report fails the test.
# Not part of `make test`: TSan slows the daemon 5-15x (timing tests such as
# the second SIGTERM's are left out) and libuv needs tests/tsan.supp.
check-tsan: deps
	@$(MAKE) --no-print-directory VARIANT=tsan all
	GOHUB_BIN=$(abspath $(BUILD)/tsan/gohub) \
	  TSAN_OPTIONS="halt_on_error=0 exitcode=66 suppressions=$(abspath tests/tsan.supp)" \
	  $(PYTHON) -m pytest -q -p no:cacheprovider -k "not second_sigterm" \
	  tests/integration/test_cluster.py tests/integration/test_protocol.py \
	  tests/integration/test_api.py tests/integration/test_metrics.py \
	  tests/integration/test_reload.py tests/integration/test_config_reload.py \
	  tests/integration/test_isolation.py tests/integration/test_lifecycle.py \
	  tests/integration/test_keepalive.py

# busted specs of lua/ under LuaJIT; the API contract spec runs $(BIN)
spec: all
	GOHUB_BIN=$(abspath $(BIN)) busted -f spec/.busted

# standard scenarios, gohub, the C floor (gohub-floor) and a Node ws hub alternately (< 10 minutes)
bench: deps
	@$(MAKE) --no-print-directory all
	bash scripts/bench/run.sh

test: deps
	@$(MAKE) --no-print-directory check-asan
	@$(MAKE) --no-print-directory spec
	@$(MAKE) --no-print-directory integration

clean:
	rm -rf $(BUILD)

-include $(OBJ:.o=.d) $(OUT)/obj/main.d
