# Thin wrapper over CMake presets. `make test` is what CI runs.
PRESET ?= $(if $(CI),ci,default)
JOBS ?= $(shell nproc)
MODEL ?= $(firstword $(wildcard ../shared/models/stories260K.gguf) $(wildcard models/*.gguf))
PROMPT ?= Once upon a time
HOST ?= 127.0.0.1
PORT ?= 8080
BUILD_DIR = build
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= $(basename $(notdir $(wildcard tests/fuzz/fuzz_*.c)))

.PHONY: all build deps test asan tsan fuzz fuzz-run run serve format clean

all: build

deps:
	@bash scripts/setup-debian.sh

build: deps
	@cmake --preset $(PRESET) >/dev/null
	@cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

asan: deps
	@cmake --preset asan >/dev/null
	@cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure -j $(JOBS)

# The threaded parts (thread pool, engine, HTTP server and the end-to-end suites) under
# ThreadSanitizer.
tsan: deps
	@cmake --preset tsan >/dev/null
	@cmake --build build-tsan -j $(JOBS)
	cd build-tsan && TSAN_OPTIONS=halt_on_error=1 ctest --output-on-failure -j $(JOBS) \
		-R 'base/test_threadpool|sched/|server/test_(http_server|api)|e2e/'

fuzz: deps
	@cmake --preset fuzz >/dev/null
	@cmake --build build-fuzz -j $(JOBS) --target $(FUZZ_TARGETS)

# Each libFuzzer target for FUZZ_SECONDS, JOBS at once, on its seed corpus (tests/fuzz/corpus/
# TARGET, only read); a crash fails and prints the reproducer. CI runs this.
fuzz-run: fuzz
	bash scripts/fuzz-run.sh -t $(FUZZ_SECONDS) -j $(JOBS) $(FUZZ_TARGETS)

run: build
	$(BUILD_DIR)/spindle generate -m $(MODEL) -p "$(PROMPT)" -n 128

serve: build
	$(BUILD_DIR)/spindle serve -m $(MODEL) --host $(HOST) --port $(PORT)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-tsan build-fuzz
