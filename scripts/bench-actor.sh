#!/usr/bin/env bash
# Actor throughput: rlvr's engine vs HF transformers `generate` (PyTorch CPU), same prompts, same
# sampling parameters, same number of threads, in one run.
#
#   scripts/bench-actor.sh
#
# SmolLM2-135M-Instruct (models/, made by scripts/setup-model.sh, run here if missing); chat prompts;
# temperature 1.0, no top-p/top-k. Two configurations: PROMPTS x SAMPLES (default 32 x 8, one group of
# SAMPLES per prompt, sharing its prefill), stopping at EOS or MAX_NEW tokens (default 256), and batch 1
# (one prompt, one sample) with EOS ignored on both sides (`--ignore-eos`, min_new_tokens), so both
# generate exactly MAX_NEW tokens; throughput counts generated tokens. Peak memory is each process's
# maximum resident set size. The PyTorch side runs in .venv-ref/ (created from
# scripts/fixtures/requirements.txt if missing). Environment: THREADS (default: all cores), PROMPTS,
# SAMPLES, MAX_NEW. Last line:
#   RESULT actor_tokens_per_s=<rlvr, batch> baseline=<transformers, batch> ratio=<rlvr/transformers> ...
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
PROMPTS="${PROMPTS:-32}"
SAMPLES="${SAMPLES:-8}"
MAX_NEW="${MAX_NEW:-256}"

cargo build --quiet --release -p rlvr-learner
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/rlvr"

# 1. Prompts: short reasoning questions of different lengths.
python3 - "$PROMPTS" > "$WORK/prompts.jsonl" <<'PY'
import json, sys
n = int(sys.argv[1])
subjects = ["a train", "a recipe", "a garden", "a savings account", "a bicycle race", "a library", "a bakery",
            "a chess club", "a water tank", "a school trip", "a concert", "a fishing boat"]
for i in range(n):
    a, b = 3 + 7 * i % 41, 2 + 5 * i % 17
    s = subjects[i % len(subjects)]
    extra = " Explain each step, then give the final answer on its own line." * (1 + i % 3)
    print(json.dumps({"id": f"p{i}", "prompt": f"Make up a short word problem about {s} that uses the numbers {a} and {b}, and solve it.{extra}"}))
PY
head -n 1 "$WORK/prompts.jsonl" > "$WORK/one.jsonl"

run_rlvr() { # prompts n out [extra flags]
  RAYON_NUM_THREADS="$THREADS" /usr/bin/time -v "$BIN" generate --model "$MODEL" --input "$1" --output "$WORK/$3.jsonl" \
    --n "$2" --max-new-tokens "$MAX_NEW" --temperature 1.0 --top-p 1.0 --top-k 0 --seed 0 --max-batch 256 --quiet \
    "${@:4}" 2> "$WORK/$3.err" || { cat "$WORK/$3.err" >&2; exit 1; }
  # "<rollouts> rollouts, <tokens> tokens in <secs>s (<tps> tokens/s), ..."
  sed -n 's/.* rollouts, \([0-9]*\) tokens in \([0-9.]*\)s (\([0-9.]*\) tokens\/s).*/\1 \2 \3/p' "$WORK/$3.err"
}
run_hf() { # prompts n out [extra flags]
  "$PY" scripts/bench-actor/hf_generate.py "$MODEL" "$1" --n "$2" --max-new-tokens "$MAX_NEW" \
    --temperature 1.0 --threads "$THREADS" "${@:4}" > "$WORK/$3.json"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["tokens"], round(d["seconds"],3), round(d["tokens_per_s"],2), round(d["peak_rss_bytes"] / 2**20))' "$WORK/$3.json"
}

echo "threads=$THREADS prompts=$PROMPTS samples=$SAMPLES max_new=$MAX_NEW"
read -r R_TOK R_SEC R_TPS < <(run_rlvr "$WORK/prompts.jsonl" "$SAMPLES" rlvr_batch)
R_MEM=$(peak_rss_mib "$WORK/rlvr_batch.err")
echo "rlvr         ${PROMPTS}x${SAMPLES}: $R_TOK tokens in ${R_SEC}s = $R_TPS tokens/s, peak RSS $R_MEM MiB"
read -r H_TOK H_SEC H_TPS H_MEM < <(run_hf "$WORK/prompts.jsonl" "$SAMPLES" hf_batch)
echo "transformers ${PROMPTS}x${SAMPLES}: $H_TOK tokens in ${H_SEC}s = $H_TPS tokens/s, peak RSS $H_MEM MiB"
read -r R1_TOK R1_SEC R1_TPS < <(run_rlvr "$WORK/one.jsonl" 1 rlvr_one --ignore-eos)
echo "rlvr         batch 1: $R1_TOK tokens in ${R1_SEC}s = $R1_TPS tokens/s"
read -r H1_TOK H1_SEC H1_TPS H1_MEM < <(run_hf "$WORK/one.jsonl" 1 hf_one --ignore-eos)
echo "transformers batch 1: $H1_TOK tokens in ${H1_SEC}s = $H1_TPS tokens/s"

python3 - "$R_TPS" "$H_TPS" "$R1_TPS" "$H1_TPS" "$R_MEM" "$H_MEM" <<'PY'
import sys
r, h, r1, h1, rm, hm = map(float, sys.argv[1:])
print(f"RESULT actor_tokens_per_s={r:.2f} baseline={h:.2f} ratio={r / h:.3f} "
      f"batch1_tokens_per_s={r1:.2f} batch1_baseline={h1:.2f} batch1_ratio={r1 / h1:.3f} "
      f"peak_rss_mib={rm:.0f} baseline_peak_rss_mib={hm:.0f}")
PY
