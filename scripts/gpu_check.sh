#!/usr/bin/env bash
# make gpu-check: everything this project can only check on a GPU, in one command and
# under 8 minutes, with no network. Uses the machine's python (its CUDA torch), builds
# ibp_gnn with nvcc (pip --no-build-isolation --no-deps --no-index: scikit-build-core and
# pybind11 must be installed), runs the GPU tests, compute-sanitizer memcheck, racecheck
# and synccheck over the CUDA tests, and benchmarks/gpu.py (figures to benchmarks/results/).
# Each step has its own timeout and log; a summary goes to benchmarks/results/gpu-check.md.
#
# Environment: PYTHON (default python3), GPU_CHECK_BUDGET (seconds for all steps, 450),
# GPU_CHECK_LOGS (log folder, build/gpu-check), GPU_CHECK_OUT (also copy the logs and
# results there), IBP_WHEELS (folder of wheels for missing pure-Python packages such as
# hydra-core, installed with --no-index; default .whl), GPU_CHECK_REQUIRE=1 (no GPU is an
# error, not a skip), GPU_CHECK_SELFTEST=1 (run the step machinery on fake steps; no GPU),
# GPU_CHECK_ASSUME_GPU=1 (skip the GPU probe: the plumbing on a CPU machine).
set -u
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET:-450}
LOGS=${GPU_CHECK_LOGS:-build/gpu-check}
RESULTS=${GPU_CHECK_RESULTS:-benchmarks/results}
WHEELS=${IBP_WHEELS:-.whl}
START=$(date +%s)
FAILED=0
mkdir -p "$LOGS"
ROWS="$LOGS/steps.tsv"
: >"$ROWS"

elapsed() { echo $(($(date +%s) - START)); }

# step NAME MAX_SECONDS COMMAND: runs COMMAND (bash) with a timeout of MAX_SECONDS or
# what is left of the budget, output to $LOGS/NAME.log; records the outcome.
step() {
  local name=$1 max=$2 cmd=$3 left status rc t0
  left=$((BUDGET - $(elapsed)))
  if ((left < 15)); then
    status="skipped (budget of ${BUDGET} s spent)"
    echo "== $name: $status"
    printf '%s\t%s\t0\n' "$name" "$status" >>"$ROWS"
    FAILED=1
    return 1
  fi
  ((max > left)) && max=$left
  echo "== $name (timeout ${max} s, log $LOGS/$name.log)"
  t0=$(date +%s)
  timeout --kill-after=10 "$max" bash -c "$cmd" >"$LOGS/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status="ok" ;;
    124 | 137) status="TIMED OUT after ${max} s" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  ((rc != 0)) && FAILED=1 && tail -n 25 "$LOGS/$name.log" | sed 's/^/   | /'
  echo "   $status in $(($(date +%s) - t0)) s"
  printf '%s\t%s\t%s\n' "$name" "$status" "$(($(date +%s) - t0))" >>"$ROWS"
  return $rc
}

# note NAME STATUS: records a step that was not run (not a failure).
note() {
  echo "== $1: $2"
  printf '%s\t%s\t0\n' "$1" "$2" >>"$ROWS"
}

summary() {
  local out="$1/gpu-check.md"
  mkdir -p "$1"
  {
    echo "# make gpu-check"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC') · ${DEVICE:-no device} · total $(elapsed) s of a ${BUDGET} s budget"
    echo
    echo "| step | result | seconds |"
    echo "|---|---|---|"
    while IFS=$'\t' read -r n s t; do echo "| $n | $s | $t |"; done <"$ROWS"
    while IFS=$'\t' read -r n s t; do
      if [[ $s == FAILED* || $s == TIMED* ]]; then
        echo
        echo "## $n: $s (last lines of $LOGS/$n.log)"
        echo
        echo '```'
        tail -n 40 "$LOGS/$n.log" 2>/dev/null
        echo '```'
      fi
    done <"$ROWS"
  } >"$out"
  echo "summary: $out"
}

finish() {
  summary "$RESULTS"
  if [[ -n ${GPU_CHECK_OUT:-} ]]; then
    mkdir -p "$GPU_CHECK_OUT"
    tar -czf "$GPU_CHECK_OUT/gpu-check-logs.tar.gz" -C "$LOGS" --exclude=venv --exclude=cmake . 2>/dev/null
    cp "$RESULTS"/gpu-check.md "$GPU_CHECK_OUT"/ 2>/dev/null
    cp "$RESULTS"/gpu.md "$GPU_CHECK_OUT"/ 2>/dev/null
  fi
  if ((FAILED)); then echo "gpu-check: FAILED (see above)"; else echo "gpu-check: all steps ok"; fi
  exit $FAILED
}

if [[ ${GPU_CHECK_SELFTEST:-0} == 1 ]]; then
  # The step machinery alone: a step that passes, one that fails, one that hangs.
  DEVICE="selftest"
  step pass 20 "echo fine"
  step fail 20 "echo broken; exit 3"
  step hang 1 "sleep 30"
  note later "not run: selftest"
  finish
fi

# ---- is there a GPU? ------------------------------------------------------------------------
# GPU_CHECK_ASSUME_GPU=1 skips this probe (to try the script's plumbing on a CPU machine).
if [[ ${GPU_CHECK_ASSUME_GPU:-0} == 1 ]]; then
  probe="assumed GPU (GPU_CHECK_ASSUME_GPU=1)"
elif ! probe=$("$PYTHON" -c "
import torch
if not torch.cuda.is_available():
    raise SystemExit(f'torch {torch.__version__}: torch.cuda.is_available() is False')
p = torch.cuda.get_device_properties(0)
print(f'{p.name} (sm_{p.major}{p.minor}), torch {torch.__version__}, CUDA {torch.version.cuda}')
" 2>&1); then
  echo "gpu-check: no GPU ($(echo "$probe" | tail -n 1)): nothing to check here."
  echo "gpu-check: the CPU-runnable parts (emulated kernels, bookkeeping, gpu.py --dry-run) run in make test."
  [[ ${GPU_CHECK_REQUIRE:-0} == 1 ]] && exit 1
  exit 0
fi
DEVICE=$probe
echo "gpu-check on $DEVICE, budget ${BUDGET} s"
ARCH=$("$PYTHON" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'{p.major}{p.minor}')" 2>/dev/null || echo "80;90")

step environment 30 "nvidia-smi; command -v nvcc && nvcc --version; command -v compute-sanitizer && compute-sanitizer --version; '$PYTHON' -m pip list 2>/dev/null | grep -iE '^(torch|torch.geometric|numpy|scikit.build.core|pybind11|pytest|pytest.timeout|hydra.core|omegaconf) '"

# ---- the python environment and the build -----------------------------------------------------
# The build has its own folder ($LOGS/cmake): a CMake cache from another python stays apart.
# A python inside a virtual environment (the GPU machine's own) is used as it is; a system
# python gets a venv that sees its packages, so nothing is installed into the system.
PY=$PYTHON
if ! "$PYTHON" -c "import sys; raise SystemExit(sys.prefix == sys.base_prefix)"; then
  step venv 60 "'$PYTHON' -m venv --system-site-packages '$LOGS/venv'" && PY="$LOGS/venv/bin/python"
fi
if ! "$PY" -c "import hydra, omegaconf" 2>/dev/null; then
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    step wheels 60 "'$PY' -m pip install -q --no-index --no-deps --no-cache-dir $WHEELS/*.whl"
  else
    note wheels "not run: hydra-core is missing and $WHEELS/ holds no wheels (no epoch benchmark)"
  fi
fi
if ! step build 150 "command -v nvcc && PATH=\$(dirname '$PY'):\$PATH '$PY' -m pip install -v --no-build-isolation --no-deps --no-index -e . '--config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=$ARCH' '--config-settings=build-dir=$LOGS/cmake'"; then
  finish
fi
step runtime 30 "'$PY' -c \"
from ibp_gnn import _C, _cuda
print('cuda_built', _C.cuda_built(), _C.cuda_versions())
assert _C.cuda_built(), 'built without CUDA: nvcc was not used'
problem = _cuda.current_problem()
assert problem is None, problem
\"" || finish

# The epoch benchmark's dataset is prepared on the CPU cores while the GPU steps run.
PREP=
if "$PY" -c "import hydra, omegaconf" 2>/dev/null; then
  "$PY" benchmarks/gpu.py --prepare-only >"$LOGS/prepare.log" 2>&1 &
  PREP=$!
fi

GPU_TESTS=${GPU_TESTS:-tests/test_cuda.py tests/test_prefetch.py tests/test_sampler.py tests/test_pyg.py tests/test_dgl.py tests/test_reference.py}
SAN_TESTS=${SAN_TESTS:-tests/test_cuda.py tests/test_sampler.py}
PYTEST="-q -rfEs -p no:cacheprovider"
"$PY" -c "import pytest_timeout" 2>/dev/null && PYTEST="$PYTEST --timeout=120"
step gpu-tests 120 "IBP_GPU_ONLY=1 '$PY' -m pytest $PYTEST $GPU_TESTS"

# Only ibp_gnn's kernels (namespace ibp) are instrumented; torch's run as they are.
SAN="compute-sanitizer --kernel-regex kns=ibp --error-exitcode 97 --print-limit 40"
step memcheck 75 "PYTORCH_NO_CUDA_MEMORY_CACHING=1 IBP_GPU_ONLY=1 $SAN --tool memcheck '$PY' -m pytest $PYTEST -x $SAN_TESTS"
step racecheck 60 "IBP_GPU_ONLY=1 $SAN --tool racecheck '$PY' -m pytest $PYTEST -x $SAN_TESTS"
step synccheck 60 "IBP_GPU_ONLY=1 $SAN --tool synccheck '$PY' -m pytest $PYTEST -x $SAN_TESTS"

# ---- benchmarks ------------------------------------------------------------------------------
# The gathers and the epoch need about 150 s: the preparation gets what is left before that.
EPOCH=--no-epoch
if [[ -n $PREP ]]; then
  wait_s=$((BUDGET - $(elapsed) - 150))
  ((wait_s < 15)) && wait_s=15
  step prepare "$wait_s" "while kill -0 $PREP 2>/dev/null; do sleep 1; done; cat '$LOGS/prepare.log'; grep -q '\"prepared\"' '$LOGS/prepare.log'" && EPOCH=
  kill "$PREP" 2>/dev/null
else
  note prepare "not run: hydra-core is not importable (no epoch benchmark)"
fi
# gpu.py writes its report after the gathers and again after the epoch.
step benchmarks 400 "'$PY' benchmarks/gpu.py $EPOCH --out '$RESULTS/gpu.md' --json '$LOGS/gpu.json'"
finish
