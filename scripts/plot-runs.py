"""Reward curves of rlvr runs side by side (e.g. `--mode sync` against `--mode async`), as a PNG.

  .venv-ref/bin/python scripts/plot-runs.py RUN_DIR [RUN_DIR ...] [--out FILE.png]

Each RUN_DIR is an `rlvr train` run directory (its `metrics.jsonl`, and `summary.json` when the run
finished); a `LABEL=RUN_DIR` argument names the curve, otherwise the directory's name does. Four panels:
mean reward per step, the same against wall-clock seconds (rollout + train + sync), mean response length,
and seconds per step by phase. Also prints each run's samples/s and held-out pass@1 before -> after.
Needs matplotlib (`.venv-ref/bin/pip install -r scripts/plot/requirements.txt`). Default output:
`plot.png` in the first run directory.
"""

import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the backend)


def load(arg):
    label, _, path = arg.rpartition("=")
    label = label or os.path.basename(os.path.normpath(path))
    metrics_path = os.path.join(path, "metrics.jsonl")
    if not os.path.exists(metrics_path):
        sys.exit(f"{path} has no metrics.jsonl: give the run directory of an `rlvr train` run")
    with open(metrics_path) as f:
        steps = [json.loads(line) for line in f if line.strip()]
    if not steps:
        sys.exit(f"{metrics_path} is empty: the run has not finished a step yet")
    summary_path = os.path.join(path, "summary.json")
    summary = json.load(open(summary_path)) if os.path.exists(summary_path) else None
    return label, path, steps, summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run directories, optionally LABEL=DIR")
    ap.add_argument("--out", help="the PNG to write (default: plot.png in the first run directory)")
    args = ap.parse_args()
    runs = [load(a) for a in args.runs]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    (reward, reward_t), (length, phases) = axes
    width = 0.8 / len(runs)
    for k, (label, _, steps, summary) in enumerate(runs):
        x = [s["step"] for s in steps]
        r = [s["reward_mean"] for s in steps]
        wall, t = [], 0.0
        for s in steps:
            # In async mode rollout and training overlap; `rollout_s` is then the learner's wait.
            t += s["rollout_s"] + s["train_s"] + s["sync_s"]
            wall.append(t)
        reward.plot(x, r, marker="o", label=label)
        reward_t.plot(wall, r, marker="o", label=label)
        length.plot(x, [s["response_len_mean"] for s in steps], marker="o", label=label)
        xs = [v - 0.4 + width * (k + 0.5) for v in x]
        bottom = [0.0] * len(steps)
        for phase, hatch in (("rollout_s", ""), ("train_s", "//"), ("sync_s", "..")):
            h = [s[phase] for s in steps]
            phases.bar(xs, h, width, bottom=bottom, color=f"C{k}", hatch=hatch, edgecolor="white",
                       label=f"{label} {phase[:-2]}")
            bottom = [b + v for b, v in zip(bottom, h)]
        line = f"{label}: {len(steps)} steps"
        if summary:
            before, after = summary.get("eval_before"), summary.get("eval_after")
            line += f", {summary['samples_per_s']:.2f} samples/s"
            if before and after:
                line += f", held-out pass@1 {before['pass_at_1_mean']:.3f} -> {after['pass_at_1_mean']:.3f}"
        print(line)
    reward.set(title="mean reward per step", xlabel="step", ylabel="reward")
    reward_t.set(title="mean reward against time", xlabel="seconds (rollout wait + train + sync)", ylabel="reward")
    length.set(title="mean response length", xlabel="step", ylabel="tokens")
    phases.set(title="seconds per step by phase", xlabel="step", ylabel="seconds")
    for ax in (reward, reward_t, length):
        ax.grid(alpha=0.3)
        ax.legend()
    phases.legend(fontsize="small", ncol=len(runs))
    fig.tight_layout()
    out = args.out or os.path.join(runs[0][1], "plot.png")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
