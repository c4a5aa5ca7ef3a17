#!/usr/bin/env bash
# The transformer's speed against PyTorch, on the CPU, same machine, same threads, same token ids, in
# one run; and first, proof that a checkpoint rlvr saves loads in transformers with the same logits.
#
#   scripts/bench-model.sh
#
# SmolLM2-135M-Instruct (models/, made by scripts/setup-model.sh, run here if missing), float32 on both
# sides. rlvr: common/benches/model.rs (burn `flex` backend, RAYON_NUM_THREADS=THREADS). PyTorch:
# scripts/bench-model/torch_model.py (transformers AutoModelForCausalLM, default attention,
# torch.set_num_threads(THREADS)), in .venv-ref/ (created from scripts/fixtures/requirements.txt if
# missing).
#
# 0. Checkpoint round trip: rlvr loads the model, saves it with CausalLm::save (f32) and writes its own
#    logits for two 16-token rows; scripts/fixtures/check_hf_load.py loads the saved directory in
#    transformers and compares (max abs difference <= TOL, default 1e-3: the weights round-trip bit for
#    bit, but 30 layers of f32 summed in a different order leave ~1e-4 on logits as large as 34).
# 1. Train step: BATCH x SEQ (default 8 x 128) random ids; loss = mean negative log-likelihood of the
#    next tokens (log-softmax + gather); forward + backward, no optimiser. Median of REPEATS (default 3)
#    after WARMUP (default 1). Peak memory: each process's maximum resident set size (GNU time), the
#    process doing nothing but load the model and run these steps.
# 2. Greedy generation, batch 1, no padding: a PROMPT_LEN-token prompt (default 32), NEW new tokens
#    (default 128) with the KV cache. rlvr: prefill + decode loop, argmax on the host. PyTorch:
#    `model.generate(do_sample=False, max_new_tokens=NEW, min_new_tokens=NEW)` (the headline; a manual
#    KV-cache loop doing the same work as rlvr's is reported beside it). tokens/s = NEW / (prefill +
#    decode seconds), median of REPEATS.
#
# Environment: THREADS (default: all cores), BATCH, SEQ, PROMPT_LEN, NEW, WARMUP, REPEATS, TOL, and
# PERF=1 to also profile one rlvr train step with `perf record -g` and print its top symbols. Last line:
#   RESULT model_train_step_s=<rlvr s> baseline=<torch s> ratio=<rlvr s / torch s: above 1 = rlvr slower>
#          model_train_step_ratio=<the same> generate_ratio=<rlvr s per token / torch s per token: above 1 =
#          rlvr slower> rlvr_generate_tok_s=... torch_generate_tok_s=... (one line)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
BATCH="${BATCH:-8}"
SEQ="${SEQ:-128}"
PROMPT_LEN="${PROMPT_LEN:-32}"
NEW="${NEW:-128}"
WARMUP="${WARMUP:-1}"
REPEATS="${REPEATS:-3}"
TOL="${TOL:-1e-3}"
BIN=$(bench_bin rlvr-common model)

# The numbers of a mode's `JSON {...}` line: json_get FILE KEY...
json_get() {
  python3 - "$@" <<'PY'
import json, sys
path, *keys = sys.argv[1:]
report = next(json.loads(l[5:]) for l in open(path) if l.startswith("JSON "))
print(" ".join(str(report[k]) for k in keys))
PY
}
# The shared arguments of each side's train and generate runs.
RLVR_ARGS=(--model "$MODEL" --tokens "$WORK/tokens.json" --warmup "$WARMUP" --repeats "$REPEATS" --new "$NEW")
TORCH_ARGS=("$MODEL" "$WORK/tokens.json" --threads "$THREADS" --warmup "$WARMUP" --repeats "$REPEATS" --new "$NEW")
export RAYON_NUM_THREADS="$THREADS"

echo "threads=$THREADS batch=$BATCH seq=$SEQ prompt_len=$PROMPT_LEN new=$NEW warmup=$WARMUP repeats=$REPEATS" \
  "load=\"$(cut -d' ' -f1-3 /proc/loadavg)\""
"$PY" scripts/bench-model/torch_model.py tokens "$MODEL" "$WORK/tokens.json" --batch "$BATCH" --seq "$SEQ" \
  --prompt-len "$PROMPT_LEN"

# 0. Saved by rlvr, loaded by transformers.
"$BIN" save-check --model "$MODEL" --tokens "$WORK/tokens.json" --out "$WORK/ckpt" \
  > "$WORK/save.out"
if "$PY" scripts/fixtures/check_hf_load.py "$WORK/ckpt/model" "$WORK/ckpt/expected.safetensors" --tol "$TOL" \
  > "$WORK/hf_load.out" 2>&1; then status=ok; else status=FAIL; fi
DIFF=$(sed -n 's/^max abs error \([^ ]*\) .*/\1/p' "$WORK/hf_load.out")
echo "hf_load_check=$status max_abs_diff=${DIFF:-none} tol=$TOL"
[ "$status" = ok ] || { cat "$WORK/hf_load.out" >&2; exit 1; }

# 1. Train step.
timed rlvr_train "$BIN" train "${RLVR_ARGS[@]}"
read -r R_FWD R_STEP < <(json_get "$WORK/rlvr_train.out" forward_s train_step_s)
R_MEM=$(peak_rss_mib "$WORK/rlvr_train.err")
printf 'rlvr    train %sx%s: forward %.3fs, forward+backward %.3fs, peak RSS %s MiB\n' "$BATCH" "$SEQ" "$R_FWD" "$R_STEP" "$R_MEM"
timed torch_train "$PY" scripts/bench-model/torch_model.py train "${TORCH_ARGS[@]}"
read -r T_FWD T_STEP < <(json_get "$WORK/torch_train.out" forward_s train_step_s)
T_MEM=$(peak_rss_mib "$WORK/torch_train.err")
printf 'pytorch train %sx%s: forward %.3fs, forward+backward %.3fs, peak RSS %s MiB\n' "$BATCH" "$SEQ" "$T_FWD" "$T_STEP" "$T_MEM"

# 2. Greedy generation.
timed rlvr_gen "$BIN" generate "${RLVR_ARGS[@]}"
R_TPS=$(json_get "$WORK/rlvr_gen.out" tokens_per_s)
printf 'rlvr    generate 1x%s + %s: %.2f tokens/s (prefill + decode loop)\n' "$PROMPT_LEN" "$NEW" "$R_TPS"
timed torch_gen "$PY" scripts/bench-model/torch_model.py generate "${TORCH_ARGS[@]}"
read -r T_TPS T_MANUAL < <(json_get "$WORK/torch_gen.out" tokens_per_s manual_tokens_per_s)
printf 'pytorch generate 1x%s + %s: %.2f tokens/s (model.generate), %.2f tokens/s (manual KV-cache loop)\n' \
  "$PROMPT_LEN" "$NEW" "$T_TPS" "$T_MANUAL"
# Greedy ids should agree until float noise flips a near-tie.
python3 - "$WORK/rlvr_gen.out" "$WORK/torch_gen.out" <<'PY'
import json, sys
r, t = (next(json.loads(l[5:])["generated"] for l in open(p) if l.startswith("JSON ")) for p in sys.argv[1:])
same = next((i for i, (a, b) in enumerate(zip(r, t)) if a != b), min(len(r), len(t)))
print(f"greedy ids: rlvr and the manual torch loop agree on the first {same} of {len(r)}")
PY

if [ "${PERF:-0}" = 1 ]; then
  perf record -q -g -o "$WORK/perf.data" -- "$BIN" train --model "$MODEL" \
    --tokens "$WORK/tokens.json" --warmup 0 --repeats 1 > /dev/null 2>&1
  echo "perf: top symbols of one rlvr train step (self time, including model load)"
  perf report -i "$WORK/perf.data" --no-children --stdio --percent-limit 1.5 --sort symbol -g none 2> /dev/null |
    grep -E '^ +[0-9]' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' | head -n 25
fi

python3 - "$R_STEP" "$T_STEP" "$R_TPS" "$T_TPS" "$R_MEM" "$T_MEM" <<'PY'
import sys
rs, ts, rg, tg, rm, tm = map(float, sys.argv[1:])
print(f"RESULT model_train_step_s={rs:.3f} baseline={ts:.3f} ratio={rs / ts:.3f} "
      f"model_train_step_ratio={rs / ts:.3f} generate_ratio={tg / rg:.3f} "
      f"rlvr_generate_tok_s={rg:.2f} torch_generate_tok_s={tg:.2f} "
      f"rlvr_train_peak_rss_mib={rm:.0f} torch_train_peak_rss_mib={tm:.0f}")
PY
