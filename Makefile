# gpt2ra, Linux-kernel style:
#   make defconfig-NAME   .config from defconfigs/NAME      make menuconfig   edit .config
#   make                  install what is missing, build, run the configured job
#   make check / test / bench                               make help         everything else
# The .config becomes the YAML run file run.yaml (tools/kconfig2yaml.py); the program reads only
# run.yaml. Without a .config, `make` runs defconfigs/default (a small GPT on the embedded corpus).

SHELL := /bin/bash
.DEFAULT_GOAL := all
.DELETE_ON_ERROR:

# kconfiglib is Debian's python3-kconfiglib: it lives under /usr/bin/python3, which is not
# necessarily the python3 on PATH.
PYTHON := /usr/bin/python3
KCONFIG := Kconfig
KCONFIG_ENV := KCONFIG_CONFIG=.config
BUILD := build
BUILD_ASAN := build-asan
GPT2 := $(BUILD)/gpt2
RUN_FILE := run.yaml
CONFIG_SOURCE = $(if $(wildcard .config),.config,defconfigs/default)
DEFCONFIGS := $(sort $(notdir $(wildcard defconfigs/*)))
CTEST_JOBS ?= 2
# `make SET="train.max_iters=20 model.attention=ra"` passes --set overrides to the program.
SET ?=
SET_ARGS = $(foreach s,$(SET),--set $(s))

# CUDA: compiled whenever nvcc exists (for sm_90a, also without a GPU); used only with a GPU.
NVCC := /usr/local/cuda/bin/nvcc
CMAKE_FLAGS := -G Ninja -DCMAKE_BUILD_TYPE=Release $(if $(wildcard $(NVCC)),-DCMAKE_CUDA_COMPILER=$(NVCC))
CMAKE_ASAN_FLAGS := -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGPT_SANITIZE=ON -DGPT_WITH_CUDA=OFF

# The shards of the embedded corpus (defconfigs/default), made from the fetched JSONL.
SOTU_INPUT := assets/corpus/sotu.jsonl

.PHONY: all run setup build configure check test test-asan bench bench-gpt2 clean distclean help \
        menuconfig olddefconfig savedefconfig data FORCE

all: run

setup:
	@tools/setup.sh

# Configure once; afterwards ninja re-runs CMake by itself when CMakeLists.txt changes.
configure: setup
	@if [[ ! -f $(BUILD)/build.ninja ]]; then cmake -S . -B $(BUILD) $(CMAKE_FLAGS); fi

build: configure
	cmake --build $(BUILD)

# Always regenerated (it takes a fraction of a second): run.yaml follows .config, or
# defconfigs/default when there is no .config.
$(RUN_FILE): FORCE
	@$(PYTHON) tools/kconfig2yaml.py --kconfig $(KCONFIG) $(CONFIG_SOURCE) $@
	@echo "make: $@ written from $(CONFIG_SOURCE)"

# The token shards the run file names: the embedded corpus is prepared here when missing; any other
# data set is the user's to prepare, and we say how.
data: $(RUN_FILE) build
	@job=$$(sed -n 's/^job: *//p' $(RUN_FILE)); \
	train=$$(sed -n 's/^  train_path: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' $(RUN_FILE)); \
	val=$$(sed -n 's/^  val_path: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' $(RUN_FILE)); \
	case "$$job" in sample|bench) exit 0 ;; esac; \
	has_files() { local m; for m in $$1; do \
	    [[ -f "$$m" ]] && return 0; [[ -d "$$m" && -n "$$(ls -A "$$m")" ]] && return 0; done; return 1; }; \
	if has_files "$$train" && has_files "$$val"; then exit 0; fi; \
	if [[ "$$train" == data/sotu/* ]]; then \
	    echo "make: preparing the State of the Union shards in data/sotu"; \
	    $(GPT2) prepare --input $(SOTU_INPUT) --out data/sotu --name sotu; \
	else \
	    echo "make: no token shards at '$$train' / '$$val' (data.train_path / data.val_path in $(RUN_FILE))." >&2; \
	    echo "  Prepare them first, either" >&2; \
	    echo "  - from text or JSONL: $(GPT2) prepare --input <files> --out <dir> --name <name>" >&2; \
	    echo "    (writes <dir>/<name>_train_*.bin and <name>_val_*.bin), or" >&2; \
	    echo "  - FineWeb / FineWeb-Edu in llm.c's format: llm.c's dev/data/fineweb.py (-t edu for FineWeb-Edu)" >&2; \
	    echo "    writes fineweb_*.bin / edu_fineweb_*.bin; put them where the config says," >&2; \
	    echo "  or point the paths elsewhere with \`make menuconfig\` (Data)." >&2; \
	    exit 1; \
	fi

run: build data
	$(GPT2) run --config $(RUN_FILE) $(SET_ARGS)

check: build data
	$(GPT2) check --config $(RUN_FILE) $(SET_ARGS)

bench: build $(RUN_FILE)
	$(GPT2) bench --config $(RUN_FILE) $(SET_ARGS)

# The issue's benchmark: GPT-2 124M at T = 1024, B = 32 and 64, then the attention core at the
# seeds' shape (CUDA builds only). tools/gpu-bench.sh runs these beside the PyTorch peers.
bench-gpt2: build
	$(GPT2) bench --set model.preset=gpt2 train.seq_len=1024 $(SET_ARGS) -b 32 -b 64
	@if [[ -x $(BUILD)/bench_attention ]]; then $(BUILD)/bench_attention; fi

# The test suite: CPU tests always, GPU tests too when the CUDA backend was built (they report
# themselves skipped without a GPU). This is also what CI runs.
test: build
	ctest --test-dir $(BUILD) --output-on-failure -j$(CTEST_JOBS)

# CPU tests under AddressSanitizer + UndefinedBehaviorSanitizer, in a separate build directory.
test-asan: setup
	@if [[ ! -f $(BUILD_ASAN)/build.ninja ]]; then cmake -S . -B $(BUILD_ASAN) $(CMAKE_ASAN_FLAGS); fi
	cmake --build $(BUILD_ASAN)
	ctest --test-dir $(BUILD_ASAN) -L cpu --output-on-failure -j$(CTEST_JOBS)

# ---- configuration (kconfiglib) ------------------------------------------------------------------

defconfig-%:
	@if [[ ! -f defconfigs/$* ]]; then \
	    echo "make: no defconfig named '$*'; available: $(DEFCONFIGS)" >&2; exit 1; fi
	@$(PYTHON) tools/kconfig2yaml.py --strict --kconfig $(KCONFIG) defconfigs/$* - >/dev/null
	@$(KCONFIG_ENV) $(PYTHON) -m defconfig --kconfig $(KCONFIG) defconfigs/$*
	@echo "make: .config is now defconfigs/$*; \`make\` runs it, \`make menuconfig\` changes it"

menuconfig:
	@$(KCONFIG_ENV) $(PYTHON) -m menuconfig $(KCONFIG)

olddefconfig:
	@$(KCONFIG_ENV) $(PYTHON) -m olddefconfig $(KCONFIG)

savedefconfig:
	@$(KCONFIG_ENV) $(PYTHON) -m savedefconfig --kconfig $(KCONFIG) --out defconfig
	@echo "make: wrote ./defconfig (the minimal form of .config); copy it to defconfigs/NAME to keep it"

# ---- housekeeping --------------------------------------------------------------------------------

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(RUN_FILE)

# Also the configuration. Keeps runs/ (results), data/ (prepared shards) and assets/ (downloads).
distclean: clean
	rm -f .config .config.old defconfig

help:
	@echo "Configuration (Kconfig; kconfiglib runs under $(PYTHON)):"
	@echo "  make defconfig-NAME   .config from defconfigs/NAME"
	@echo "  make menuconfig       edit .config (help text for every option)"
	@echo "  make olddefconfig     update .config after Kconfig changed (new options get defaults)"
	@echo "  make savedefconfig    write ./defconfig, the minimal form of .config"
	@echo "Running (.config -> $(RUN_FILE) -> $(GPT2) run --config $(RUN_FILE)):"
	@echo "  make                  install what is missing, build, prepare data, run the job"
	@echo "                        (no .config: defconfigs/default, a small GPT on the embedded corpus)"
	@echo "  make check            dry run: validate, build and briefly train every model of the job"
	@echo "  make bench            training-step benchmark of the configured model"
	@echo "  make bench-gpt2       GPT-2 124M at T=1024, B=32/64, and the attention core (GPU)"
	@echo "  make SET=\"k=v ...\"    add --set overrides, e.g. SET=\"train.max_iters=20\""
	@echo "Building and testing:"
	@echo "  make setup            install missing packages and fetch the tokenizer and corpus"
	@echo "  make build            configure (CMake, Ninja, Release) and build into $(BUILD)/"
	@echo "  make test             the test suite (ctest; GPU tests too when CUDA is built)"
	@echo "  make test-asan        CPU tests with AddressSanitizer/UBSan in $(BUILD_ASAN)/"
	@echo "  make clean            remove $(BUILD)/, $(BUILD_ASAN)/ and $(RUN_FILE)"
	@echo "  make distclean        also .config (keeps runs/, data/, assets/)"
	@echo "Defconfigs: $(DEFCONFIGS)"
	@echo "Configuration reference: docs/configuration.md"

FORCE:
