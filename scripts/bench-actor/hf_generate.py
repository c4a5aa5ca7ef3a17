"""The baseline side of scripts/bench-actor.sh: HF transformers `generate` (PyTorch CPU) on the same
prompts with the same sampling parameters. Prints one JSON line: tokens, seconds, tokens/s, peak RSS."""

import argparse
import json
import resource
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("prompts")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ignore-eos", action="store_true",
                    help="never stop at EOS: every sample runs to --max-new-tokens (min_new_tokens)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    texts = [json.loads(line)["prompt"] for line in open(args.prompts) if line.strip()]
    chats = [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
             for t in texts]
    enc = tok(chats, return_tensors="pt", padding=True, add_special_tokens=False)
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            **enc,
            do_sample=args.temperature > 0,
            temperature=args.temperature if args.temperature > 0 else None,
            top_p=1.0,
            top_k=0,
            max_new_tokens=args.max_new_tokens,
            min_new_tokens=args.max_new_tokens if args.ignore_eos else None,
            num_return_sequences=args.n,
            pad_token_id=tok.pad_token_id,
        )
    secs = time.perf_counter() - start
    new = out[:, enc["input_ids"].shape[1]:].tolist()
    tokens = 0
    for row in new:
        for t in row:
            tokens += 1
            if t in eos and not args.ignore_eos:
                break
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"tokens": tokens, "seconds": secs, "tokens_per_s": tokens / secs, "peak_rss_bytes": peak}))


if __name__ == "__main__":
    main()
