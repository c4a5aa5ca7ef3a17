"""The PyTorch side of scripts/bench-model.sh: HF transformers (float32, default attention) on the same
token ids as common/benches/model.rs. Each mode prints one line `JSON {...}`; progress goes to stderr.

  torch_model.py tokens   MODEL OUT.json --batch B --seq L --prompt-len P
      the shared ids: `train` (B rows of L random ids, seed 0), `prompt` (the first P ids of a fixed
      English text) and `check` (two rows of 16 ids, for the checkpoint round trip)
  torch_model.py train    MODEL TOKENS.json --threads T --warmup W --repeats R
      forward + backward of the mean negative log-likelihood (log_softmax + gather), no optimiser
  torch_model.py generate MODEL TOKENS.json --threads T --new N --warmup W --repeats R
      greedy decoding of N tokens after the prompt, timed two ways: `model.generate(do_sample=False,
      max_new_tokens=N, min_new_tokens=N)` (the headline) and a manual KV-cache loop (model call +
      argmax per token, the same work as rlvr's prefill + decode loop)
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

TEXT = (
    "The old lighthouse keeper climbed the spiral stairs every evening at dusk, counting each of the "
    "one hundred and twelve steps as his father had taught him. From the lamp room he could see the "
    "fishing boats returning to the harbour, their lanterns swaying like fireflies over the dark water."
)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load(model_dir, threads):
    torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


def tokens(args):
    tok = AutoTokenizer.from_pretrained(args.model)
    text_ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    if len(text_ids) < max(args.prompt_len, 16):
        sys.exit(f"the fixed text has {len(text_ids)} tokens; --prompt-len {args.prompt_len} is too long")
    vocab = len(tok)
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, vocab, (args.batch, args.seq), generator=g).tolist()
    out = {"train": train, "prompt": text_ids[: args.prompt_len], "check": [text_ids[:16], train[0][:16]]}
    with open(args.out, "w") as f:
        json.dump(out, f)


def train(args, ids):
    model = load(args.model, args.threads)
    model.train()
    x = torch.tensor(ids["train"], dtype=torch.int64)
    b, l = x.shape
    fwd, total = [], []
    for i in range(args.warmup + args.repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        logits = model(input_ids=x, use_cache=False).logits[:, :-1]
        lp = torch.log_softmax(logits, dim=-1).gather(-1, x[:, 1:, None]).squeeze(-1)
        loss = -lp.mean()
        f = time.perf_counter() - start
        loss.backward()
        s = time.perf_counter() - start
        log(f"train {b}x{l} step {i}: forward {f:.3f}s, forward+backward {s:.3f}s")
        if i >= args.warmup:
            fwd.append(f)
            total.append(s)
    return {"mode": "train", "batch": b, "seq": l, "repeats": args.repeats, "forward_s": statistics.median(fwd),
            "train_step_s": statistics.median(total), "all_s": total, "peak_rss_bytes": peak_rss_bytes()}


@torch.inference_mode()
def manual_greedy(model, prompt, new):
    start = time.perf_counter()
    out = model(input_ids=prompt, use_cache=True)
    past = out.past_key_values
    ids = [int(out.logits[0, -1].argmax())]
    while len(ids) < new:
        out = model(input_ids=torch.tensor([[ids[-1]]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        ids.append(int(out.logits[0, -1].argmax()))
    return ids, time.perf_counter() - start


@torch.inference_mode()
def hf_generate(model, prompt, new):
    start = time.perf_counter()
    out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                         max_new_tokens=new, min_new_tokens=new, pad_token_id=model.config.eos_token_id)
    secs = time.perf_counter() - start
    return out[0, prompt.shape[1]:].tolist(), secs


def generate(args, ids):
    model = load(args.model, args.threads).eval()
    prompt = torch.tensor([ids["prompt"]], dtype=torch.int64)
    for _ in range(args.warmup):
        hf_generate(model, prompt, min(args.new, 16))
        manual_greedy(model, prompt, min(args.new, 16))
    rates, manual_rates, generated = [], [], []
    for _ in range(args.repeats):
        new, secs = hf_generate(model, prompt, args.new)
        rates.append(len(new) / secs)
        generated, msecs = manual_greedy(model, prompt, args.new)
        manual_rates.append(len(generated) / msecs)
        log(f"generate prompt {prompt.shape[1]} + {len(new)} new: generate {rates[-1]:.2f} tokens/s, "
            f"manual loop {manual_rates[-1]:.2f} tokens/s")
    return {"mode": "generate", "prompt_len": prompt.shape[1], "new": args.new, "repeats": args.repeats,
            "tokens_per_s": statistics.median(rates), "all_tokens_per_s": rates,
            "manual_tokens_per_s": statistics.median(manual_rates), "generated": generated,
            "peak_rss_bytes": peak_rss_bytes()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["tokens", "train", "generate"])
    ap.add_argument("model")
    ap.add_argument("file", help="tokens JSON (written by `tokens`, read by the others)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.mode == "tokens":
        args.out = args.file
        tokens(args)
        return
    with open(args.file) as f:
        ids = json.load(f)
    report = train(args, ids) if args.mode == "train" else generate(args, ids)
    print("JSON " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
