#!/usr/bin/env bash
# The Triton-version gate, no GPU needed. GPU users run the Triton their torch pins (3.6.0 on
# torch 2.11's CUDA wheels), not the one pip gives this machine, so for each version in
# TRITON_VERSIONS (default: the oldest and the newest the course supports) this script:
#   1. makes a virtualenv that sees this machine's packages (torch, numpy, int4lab installed
#      with `pip install -e .`) and installs that exact Triton into it from the registry;
#   2. compiles every kernel ahead of time for sm_80 and sm_90 at its launcher's GPU config and
#      asserts: it compiles, no register spills, the GEMMs' main loops use integer tensor-core
#      instructions (scripts/compile_gate.py, built on `int4lab inspect`);
#   3. runs the interpreter kernel tests under that Triton (skipped for the version the main
#      suite already ran under, which it says).
# Run by .ci/run after the README's test command; by hand: bash scripts/triton_matrix.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VERSIONS=${TRITON_VERSIONS:-"3.6.0 3.9.0"}
ARCHS=${TRITON_ARCHS:-"sm_80 sm_90"}
ROOT_VENVS=${TMPDIR:-/tmp}/int4lab-triton-venvs
KERNEL_TESTS="tests/test_kernel_matmul.py tests/test_kernel_quantize.py tests/test_kernel_hadamard.py
              tests/test_kernel_gradients.py tests/test_packing.py tests/test_registry.py
              tests/test_layer_backends.py tests/test_kernel_fused_linear.py"
main_version=$(python3 -c "import triton; print(triton.__version__)" 2>/dev/null || echo none)
mkdir -p results
for v in $VERSIONS; do
  echo "== Triton $v =="
  venv="$ROOT_VENVS/$v"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv --system-site-packages "$venv"
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "triton==$v" 2>&1 \
    | grep -v -e '^WARNING: Location' -e 'Running pip as the' || true
  got=$("$venv/bin/python" -c "import triton; print(triton.__version__)")
  [ "$got" = "$v" ] || { echo "wanted triton $v in $venv, got $got"; exit 1; }
  # shellcheck disable=SC2086
  "$venv/bin/python" scripts/compile_gate.py --arch $ARCHS --json "results/compile-gate-triton-$v.json"
  if [ "$v" = "$main_version" ] && [ -z "${TRITON_MATRIX_RETEST:-}" ]; then
    echo "interpreter kernel tests under triton $v: already run by the main suite (same version)"
  else
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pytest -q -p no:cacheprovider $KERNEL_TESTS
  fi
done
