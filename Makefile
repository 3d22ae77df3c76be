# Thin wrappers around the `bench` CLI. `make demo` and `make test` set themselves up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORE   := $(VENV)/.stamp-core
IQA    := $(VENV)/.stamp-iqa
DEMO_METHOD ?= ours
PYTEST_ARGS ?=

.PHONY: setup setup-iqa demo test test-all bench bench-methods bench-dsn verify clean-results help gpu-check gpu-bench

help:
	@echo "make demo      set up .venv and run the main job on the embedded demo set"
	@echo "make test      set up .venv (with the iqa extra) and run the CPU test suite"
	@echo "make bench     benchmarks (not tests); results in results/perf/"
	@echo "make bench-methods  cost table of every method (params, MACs, latency, peak memory): results/tables/cost.*"
	@echo "make bench-dsn DSN's speed, memory and tiling on this machine (CPU: ~35 min; SECTIONS=enhance,train,tiling)"
	@echo "make verify    re-hash every prepared dataset"
	@echo "make gpu-bench DSN paper-step speed (fp32/TF32/bf16, channels-last, compile), memory, bf16 accuracy on one GPU"
	@echo "               (< 8 min on an H200; PY=python3 on a lent machine): results/perf/dsn_cuda_bench.*"

$(CORE): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch is pinned exactly in pyproject.toml; pip (not uv) finds the local wheels
	$(BIN)/python -m pip install -q -e '.[dev,study]'
	touch $@

# pyiqa is optional and non-commercially licensed: install it without its ~1 GB of dependencies,
# plus the few modules its import needs, so its classic metrics can cross-check ours.
$(IQA): $(CORE)
	$(BIN)/python -m pip install -q --no-deps pyiqa
	$(BIN)/python -m pip install -q opencv-python-headless requests huggingface_hub
	touch $@

setup: $(CORE)

setup-iqa: $(IQA)

demo: $(CORE)
	$(BIN)/bench run --method $(DEMO_METHOD) --dataset demo --profile quick

test: $(IQA)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-all: $(IQA)
	$(BIN)/python -m pytest -q -m "" $(PYTEST_ARGS)

bench: $(CORE)
	$(BIN)/bench perf metrics --pairs 100

# the cost table of all 16 methods on this machine: results/tables/cost.{csv,md,tex} (CPU, 2 cores: ~10 min)
bench-methods: $(CORE)
	$(BIN)/bench perf methods

SECTIONS ?= enhance,train,tiling
bench-dsn: $(CORE)
	$(BIN)/bench perf dsn --sections $(SECTIONS)

verify: $(CORE)
	@for d in $$($(BIN)/bench ls datasets --format csv | tail -n +2 | cut -d, -f1); do \
		echo "== $$d"; $(BIN)/bench -q data verify $$d || true; done

clean-results:
	@echo "Completed runs are never deleted by make. Remove results/runs/<dataset>/<method>/<id> by hand."

# GPU checks for a lent accelerator machine, which has torch but no .venv: `make gpu-check PY=python3`.
PY ?= $(BIN)/python
GPU_TESTS := tests/test_gpu.py tests/test_baseline_kind.py tests/test_baseline_distort_recover.py tests/test_baseline_white_box.py
gpu-check:
	PYTHONPATH=. $(PY) -m pytest -q -m gpu $(GPU_TESTS)
	PYTHONPATH=. $(PY) -m bench.cli perf dsn --device cuda

# DSN's training speed options measured on one GPU (bench/perf_cuda.py); GPU_BENCH_ARGS=--cpu-smoke runs it on the CPU
GPU_BENCH_ARGS ?=
gpu-bench:
	PYTHONPATH=. $(PY) -m bench.cli perf gpu-bench $(GPU_BENCH_ARGS)

# --- paper tables and figures (bench reproduce / bench report / bench figure) ---
PROFILE  ?= paper
DATASETS ?=
SEEDS    ?=
JOBS     ?= 1
REPRODUCE_ARGS ?=
FIGURES  ?= fig1 fig5 fig6 fig7 fig8 fig9 table1-distribution table1-cost
FIGURE_ARGS ?=
_TABLE_ARGS = --profile $(PROFILE) $(if $(DATASETS),--datasets $(DATASETS)) $(if $(SEEDS),--seeds $(SEEDS))

.PHONY: reproduce-table1 reproduce-table2 figures figures-demo

# e.g. make reproduce-table1 PROFILE=smoke DATASETS=demo   (JOBS=4, SEEDS="0 1 2", REPRODUCE_ARGS="--executor slurm ...")
reproduce-table1 reproduce-table2: reproduce-%: $(CORE)
	$(BIN)/bench reproduce $* $(_TABLE_ARGS) --jobs $(JOBS) --no-report $(REPRODUCE_ARGS)
	$(BIN)/bench report $* $(_TABLE_ARGS)

# the paper's figures (need runs on lol/fivek); figure-NAME draws one, e.g. make figure-fig7
figures: $(CORE)
	$(BIN)/bench figure $(FIGURES) $(FIGURE_ARGS)

figure-%: $(CORE)
	$(BIN)/bench figure $* $(FIGURE_ARGS)

# the demo figures: makes (or reuses) the smoke demo runs of Table 1 first
figures-demo: $(CORE)
	$(BIN)/bench -q reproduce table1 --profile smoke --datasets demo --no-report
	$(BIN)/bench figure demo-grid demo-distribution demo-cost $(FIGURE_ARGS)
