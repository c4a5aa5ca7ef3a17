#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of what parses model output and wire input:
#   math_answer   the math path (extract, normalise, parse, compare) as response and as ground truth
#   code_extract  the program extracted from a response
#   check_line    rlvr-verifier check's line decoder and dispatch
# Each target runs for SECONDS (default 60) from a small seed corpus (written under fuzz/corpus/, which
# is gitignored, and kept between runs); a crash, a panic or a stack overflow fails the script, with the
# input left in fuzz/artifacts/. Installs cargo-fuzz from crates.io if it is missing. The fuzz crate has
# its own workspace (fuzz/Cargo.toml, fuzz/Cargo.lock). libFuzzer's instrumentation flags are unstable
# rustc options; on a stable toolchain RUSTC_BOOTSTRAP=1 allows them.
#
#   scripts/fuzz.sh [SECONDS]
#
# Last line: RESULT fuzz_execs=<total> math_answer=<execs> code_extract=<execs> check_line=<execs>
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/fuzz"
SECONDS_PER_TARGET="${1:-60}"
CARGO_FUZZ_VERSION=0.13.2

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
    cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
export RUSTC_BOOTSTRAP=1

seed() { # target name content
    mkdir -p "corpus/$1"
    printf '%s' "$3" > "corpus/$1/$2"
}
seed math_answer boxed 'The answer is \boxed{\frac{1}{2}}.'
seed math_answer chain "\\boxed{7$(printf '!%.0s' $(seq 1 300))}"
seed math_answer tower "\$$(printf 'y^%.0s' $(seq 1 300))y\$"
seed math_answer set 'so $x \in [1, 2) \cup \{3\}$, i.e. \boxed{x^2 - 2x + 1 = 0}'
seed code_extract fenced $'Try:\n```python\nprint(1)\n```\n<think>```py\nx\n```</think>\n````\n```\n````'
seed check_line math '{"kind":"math","response":"\\boxed{2}","ground_truth":"2"}'
seed check_line truth '{"kind":"truth","response":"Paris is the capital.","ground_truth":["Paris"]}'
seed check_line code '{"kind":"code","response":"```python\nprint(1)\n```","ground_truth":{"inputs":[""],"outputs":["1"]}}'

cargo fuzz build -s none --release --debug-assertions 2>&1 | grep -v '^\s*Compiling' >&2 || true
declare -A EXECS
TOTAL=0
for target in math_answer code_extract check_line; do
    log="$(mktemp)"
    # -rss_limit_mb: the math path's own budget keeps it far below; -timeout: one input, seconds.
    if ! cargo fuzz run -s none --release --debug-assertions "$target" "corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=4096 -timeout=20 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz.sh: $target failed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    n="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n1)"
    echo "$target: ${n:-0} executions in ${SECONDS_PER_TARGET}s, no crash" >&2
    EXECS[$target]="${n:-0}"
    TOTAL=$((TOTAL + ${n:-0}))
    rm -f "$log"
done
echo "RESULT fuzz_execs=$TOTAL math_answer=${EXECS[math_answer]} code_extract=${EXECS[code_extract]} check_line=${EXECS[check_line]}"
