"""The PyTorch side of scripts/bench-learner.sh: one GRPO update written the way verl's actor does it
(verl/trainer/ppo/core_algos.py: GRPO outcome advantages, vanilla PPO-clip policy loss, token-mean
aggregation), on HF transformers (float32, default attention), beside rlvr's learner/benches/step.rs.

  torch_step.py batch MODEL OUT.json --rows N --seq L --prompt-len P --group G
      the shared batch: N rows of L random ids (seed 0), the first P the prompt; rows in groups of G
      with fixed 0/1 rewards (each group of two or more mixed, so every advantage is non-zero)
  torch_step.py step  MODEL BATCH.json --threads T --warmup W --repeats R
      median seconds of one update: forward (LM head on the response positions only, as rlvr does),
      log-softmax + gather, entropy (a metric, no gradient), GRPO advantages, PPO-clip (0.2) token-mean
      loss, backward, global-norm clipping at 1.0, AdamW (lr 2e-5, betas 0.9/0.999, eps 1e-8, no weight
      decay). Prints one line `JSON {...}` with the first update's loss and gradient norm as well.
"""

import argparse
import json
import resource
import statistics
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

CLIP = 0.2
EPS = 1e-6  # verl's epsilon in the GRPO std division


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def make_batch(args):
    vocab = len(AutoTokenizer.from_pretrained(args.model))
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, vocab, (args.rows, args.seq), generator=g).tolist()
    pattern = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    rewards = [pattern[(i + i // args.group) % len(pattern)] for i in range(args.rows)]
    groups = [i // args.group for i in range(args.rows)]
    if args.group < 2:
        sys.exit("--group must be at least 2: GRPO's advantages of a group of one are all zero")
    for start in range(0, args.rows, args.group):
        members = rewards[start : start + args.group]
        if len(members) > 1 and len(set(members)) == 1:
            rewards[start] = 1.0 - rewards[start]  # every group mixed: no all-zero advantages
    with open(args.file, "w") as f:
        json.dump({"rows": rows, "prompt_len": args.prompt_len, "rewards": rewards, "groups": groups}, f)


def grpo_advantages(rewards, groups):
    """Group mean and (unbiased) std, as verl's compute_grpo_outcome_advantage."""
    adv = torch.zeros_like(rewards)
    for gid in groups.unique():
        idx = groups == gid
        r = rewards[idx]
        std = r.std() if r.numel() > 1 else torch.tensor(1.0)
        adv[idx] = (r - r.mean()) / (std + EPS)
    return adv


def update(model, optim, ids, prompt_len, adv):
    """One update; returns (loss, grad norm before clipping)."""
    optim.zero_grad(set_to_none=True)
    hidden = model.model(input_ids=ids, use_cache=False).last_hidden_state
    # Position t predicts token t + 1: the response tokens are predicted from prompt_len - 1 .. L - 2.
    logits = model.lm_head(hidden[:, prompt_len - 1 : -1])
    logp_all = torch.log_softmax(logits.float(), dim=-1)
    logp = logp_all.gather(-1, ids[:, prompt_len:, None]).squeeze(-1)
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
    old = logp.detach()
    ratio = torch.exp(logp - old)
    a = adv[:, None]
    pg = torch.maximum(-a * ratio, -a * torch.clamp(ratio, 1 - CLIP, 1 + CLIP))
    loss = pg.mean()  # token-mean: every row has the same number of response tokens here
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optim.step()
    del entropy
    return float(loss), float(norm)


def step(args):
    with open(args.file) as f:
        batch = json.load(f)
    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=2e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    ids = torch.tensor(batch["rows"], dtype=torch.int64)
    adv = grpo_advantages(torch.tensor(batch["rewards"]), torch.tensor(batch["groups"]))
    times, first = [], None
    for i in range(args.warmup + args.repeats):
        start = time.perf_counter()
        loss, norm = update(model, optim, ids, batch["prompt_len"], adv)
        secs = time.perf_counter() - start
        log(f"update {i}: {secs:.3f}s, loss {loss:.6f}, grad norm {norm:.6f}")
        first = first or (loss, norm)
        if i >= args.warmup:
            times.append(secs)
    rows, seq = ids.shape
    return {"rows": rows, "tokens": rows * seq, "prompt_len": batch["prompt_len"], "warmup": args.warmup,
            "repeats": args.repeats, "step_s": statistics.median(times), "all_s": times,
            "first_loss": first[0], "first_grad_norm": first[1],
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["batch", "step"])
    ap.add_argument("model")
    ap.add_argument("file", help="batch JSON (written by `batch`, read by `step`)")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.mode == "batch":
        make_batch(args)
        return
    print("JSON " + json.dumps(step(args)), flush=True)


if __name__ == "__main__":
    main()
