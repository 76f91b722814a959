# Two entry points that work on a fresh machine (no GPU, network only to the
# package registries): `make run` (the main job: train on the built-in
# synthetic graph) and `make test`. `make demo` shows the codec alone.
# Each creates .venv and installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned: the CPU build installs from local disk on our machines,
# while an unpinned torch may pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
DEPS   := numpy scipy tqdm pytest hypothesis zstandard lz4 blosc2 scikit-build-core pybind11 \
          torch_geometric hydra-core hydra-optuna-sweeper hydra-submitit-launcher ogb tensorboard \
          dgl==2.1.0 pydantic "torchdata<0.10"

export OMP_NUM_THREADS ?= 2

.PHONY: all venv install emu run demo test bench clean

all: test

$(BIN)/.deps: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q $(DEPS)
	touch $@

venv: $(BIN)/.deps

# Builds the C++/CUDA extension (CUDA when nvcc is on the PATH: sm_80, sm_90).
install: venv
	$(BIN)/python -m pip install -q --no-build-isolation -e .

# The CUDA kernels compiled for the CPU under ASan/UBSan (csrc/testing): what
# tests/test_emulated*.py run in every `make test`.
EMU_DIR      ?= build/emu
EMU_SANITIZE ?= address,undefined
emu: install
	@mkdir -p $(EMU_DIR)
	cmake -S . -B $(EMU_DIR) -DIBP_CUDA_EMU=ON -DIBP_WITH_CUDA=OFF -DCMAKE_BUILD_TYPE=Debug \
	  -DIBP_EMU_SANITIZE=$(EMU_SANITIZE) -DPython_EXECUTABLE=$(abspath $(BIN)/python) \
	  -Dpybind11_DIR="$$($(BIN)/python -m pybind11 --cmakedir)" > $(EMU_DIR)/make.log 2>&1 \
	  && cmake --build $(EMU_DIR) --target ibp_emu -j2 >> $(EMU_DIR)/make.log 2>&1 \
	  || (tail -40 $(EMU_DIR)/make.log; exit 1)

run: install
	$(BIN)/python train.py

demo: install
	$(BIN)/python -m ibp_gnn demo --save /tmp/ibp_gnn_demo.ibp
	$(BIN)/python -m ibp_gnn info /tmp/ibp_gnn_demo.ibp

test: install emu
	IBP_EMU_REQUIRED=1 $(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/python benchmarks/codec.py

clean:
	rm -rf build $(VENV) .pytest_cache

# On a GPU machine, with its own CUDA torch and no network: build with nvcc, run the GPU
# tests, compute-sanitizer (memcheck, racecheck, synccheck) and benchmarks/gpu.py; figures
# and a summary go to benchmarks/results/ (scripts/gpu_check.sh; under 8 minutes).
.PHONY: gpu-check
gpu-check:
	bash scripts/gpu_check.sh
