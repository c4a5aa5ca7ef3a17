#!/usr/bin/env bash
# One learner update, rlvr against PyTorch: same model, same batch, same threads, in one run.
#
#   scripts/bench-learner.sh
#
# SmolLM2-135M-Instruct (models/, made by scripts/setup-model.sh, run here if missing), float32 on both
# sides. The batch: ROWS sequences (default 16) of SEQ tokens (default 256: a PROMPT_LEN-token prompt,
# default 64, and the response), random ids, in groups of GROUP (default 8) with 0/1 rewards. The update:
# GRPO advantages, PPO-clip (0.2) token-mean loss over the response tokens, backward, global-norm
# clipping at 1.0, AdamW. rlvr: learner/benches/step.rs (`Learner::train_on`, what `rlvr train` runs, with
# `runtime.micro_batch_tokens` holding the whole batch). PyTorch: scripts/bench-learner/torch_step.py
# (transformers, the loss written as verl's core_algos, torch.optim.AdamW), in .venv-ref/ (created from
# scripts/fixtures/requirements.txt if missing). Both compute the LM head on the response positions only.
# Median seconds over REPEATS (default 3) after WARMUP (default 1); peak memory is each process's
# maximum resident set size. The first update's loss and gradient norm are printed for both sides: they
# start from the same weights and batch, so they must agree (the norm to about 1e-3 relative).
#
# Environment: THREADS (default: all cores), ROWS, SEQ, PROMPT_LEN, GROUP, WARMUP, REPEATS. Last line:
#   RESULT learner_step_s=<rlvr s> baseline=<torch s> ratio=<rlvr s / torch s: above 1 = rlvr slower>
#          learner_step_ratio=<the same> rlvr_peak_rss_mib=... torch_peak_rss_mib=... grad_norm_rel_diff=...
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
ROWS="${ROWS:-16}"
SEQ="${SEQ:-256}"
PROMPT_LEN="${PROMPT_LEN:-64}"
GROUP="${GROUP:-8}"
WARMUP="${WARMUP:-1}"
REPEATS="${REPEATS:-3}"
BIN=$(bench_bin rlvr-learner step)
export RAYON_NUM_THREADS="$THREADS"

echo "threads=$THREADS rows=$ROWS seq=$SEQ prompt_len=$PROMPT_LEN group=$GROUP warmup=$WARMUP repeats=$REPEATS" \
  "load=\"$(cut -d' ' -f1-3 /proc/loadavg)\""
"$PY" scripts/bench-learner/torch_step.py batch "$MODEL" "$WORK/batch.json" --rows "$ROWS" --seq "$SEQ" \
  --prompt-len "$PROMPT_LEN" --group "$GROUP"

timed rlvr "$BIN" --model "$MODEL" --batch "$WORK/batch.json" --warmup "$WARMUP" --repeats "$REPEATS"
timed torch "$PY" scripts/bench-learner/torch_step.py step "$MODEL" "$WORK/batch.json" --threads "$THREADS" \
  --warmup "$WARMUP" --repeats "$REPEATS"

python3 - "$WORK" "$(peak_rss_mib "$WORK/rlvr.err")" "$(peak_rss_mib "$WORK/torch.err")" <<'PY'
import json, sys
work = sys.argv[1]
def report(name, peak_mib):
    r = next(json.loads(l[5:]) for l in open(f"{work}/{name}.out") if l.startswith("JSON "))
    r["peak_mib"] = float(peak_mib)
    return r
r, t = report("rlvr", sys.argv[2]), report("torch", sys.argv[3])
for name, x in (("rlvr   ", r), ("pytorch", t)):
    times = ", ".join(f"{s:.2f}" for s in x["all_s"])
    print(f"{name} update {x['rows']}x{x['tokens'] // x['rows']}: {x['step_s']:.3f}s median ({times}), "
          f"peak RSS {x['peak_mib']:.0f} MiB, first update loss {x['first_loss']:.6f} "
          f"grad norm {x['first_grad_norm']:.6f}")
rel = abs(r["first_grad_norm"] - t["first_grad_norm"]) / t["first_grad_norm"]
ratio = r['step_s'] / t['step_s']
print(f"RESULT learner_step_s={r['step_s']:.3f} baseline={t['step_s']:.3f} ratio={ratio:.3f} "
      f"learner_step_ratio={ratio:.3f} rlvr_peak_rss_mib={r['peak_mib']:.0f} "
      f"torch_peak_rss_mib={t['peak_mib']:.0f} grad_norm_rel_diff={rel:.2e}")
PY
