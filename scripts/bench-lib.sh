# Shared by the benchmarks that run rlvr beside PyTorch on SmolLM2-135M-Instruct (bench-model.sh,
# bench-learner.sh, bench-actor.sh); sourced after `set -euo pipefail`. It moves to the repository root
# and sets:
#   ROOT, WORK (a temporary folder removed on exit), THREADS (default: all cores), MODEL (made by
#   scripts/setup-model.sh when missing), PY (the reference Python in .venv-ref/, created from
#   scripts/fixtures/requirements.txt when missing)
# and defines bench_bin, timed and peak_rss_mib (below).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
THREADS="${THREADS:-$(nproc)}"

MODEL="$ROOT/models/smollm2-135m-instruct"
[ -f "$MODEL/model.safetensors" ] || scripts/setup-model.sh

VENV="$ROOT/.venv-ref"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet -r scripts/fixtures/requirements.txt
fi
PY="$VENV/bin/python"

# bench_bin PACKAGE BENCH: builds a `[[bench]]` target (release) and prints its executable's path
# (cargo names it with a hash).
bench_bin() {
  local bin
  bin=$(cargo bench --quiet -p "$1" --bench "$2" --no-run --message-format=json |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$2")
  [ -x "$bin" ] || { echo "cannot find the executable of bench $2 in $1" >&2; return 1; }
  echo "$bin"
}

# timed NAME COMMAND...: runs it under GNU time, its stdout to $WORK/NAME.out, time's report and its
# stderr to $WORK/NAME.err; on failure shows the latter and exits.
timed() {
  local name=$1
  shift
  /usr/bin/time -v "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" || { cat "$WORK/$name.err" >&2; exit 1; }
}

# peak_rss_mib FILE: the peak resident memory in MiB from GNU time's report in FILE.
peak_rss_mib() { awk -F': ' '/Maximum resident set size/ {printf "%.0f\n", $2 / 1024}' "$1"; }
