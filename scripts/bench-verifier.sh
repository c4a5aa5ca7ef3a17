#!/usr/bin/env bash
# Math verifier throughput and latency: rlvr vs math-verify 0.9.0 on the same pairs, one core each.
#
#   scripts/bench-verifier.sh
#
# Pairs: the 276 math-verify cases (verifier/tests/fixtures), MATH-500 and GSM8K test reference solutions
# vs their gold answers (data/, made by scripts/setup-data.sh, run here if missing). math-verify is
# installed with pip into .venv-bench/. Last line:
#   RESULT math_checks_per_s=<rlvr> baseline=<math-verify> ratio=<rlvr/math-verify> agreement=<share of equal verdicts>
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

[ -f data/math500/test.jsonl ] && [ -f data/gsm8k/test.jsonl ] || scripts/setup-data.sh

VENV="$ROOT/.venv-bench"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "math-verify==0.9.0"
fi

cargo build --quiet --release -p rlvr-verifier
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/rlvr-verifier"

# 1. Requests (same pairs for both sides).
python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
out = {}
cases = []
for l in open("verifier/tests/fixtures/math_verify_0.9.0_cases.jsonl"):
    d = json.loads(l)
    s = {"gold_extract": True, "precision": d["precision"] or 6, "strict": d["strict"],
         "allow_set_relation": d["allow_set_relation_comp"]}
    if d["mode"] == "compare_strings":
        s["extract"] = {"latex": "latex" in d["match_types"], "expr": "expr" in d["match_types"],
                        "boxed_priority": 0, "without_anchor": True, "gsm8k_hashes": False}
    cases.append({"kind": "math", "response": d["pred"], "ground_truth": d["gold"], "settings": s,
                  "mv": {"mode": d["mode"], "match_types": d["match_types"], "precision": d["precision"] or 6,
                         "strict": d["strict"], "allow": d["allow_set_relation_comp"], "gold_wrap": False}})
out["cases276"] = cases
for name, path in (("math500", "data/math500/test.jsonl"), ("gsm8k", "data/gsm8k/test.jsonl")):
    rows = [json.loads(l) for l in open(path)]
    out[name] = [{"kind": "math", "response": r["extra"]["solution"], "ground_truth": r["ground_truth"],
                  "mv": {"mode": "default_parse_verify", "match_types": None, "precision": 6, "strict": True,
                         "allow": False, "gold_wrap": True}} for r in rows]
for name, reqs in out.items():
    with open(f"{work}/{name}.jsonl", "w") as f:
        for r in reqs:
            f.write(json.dumps(r) + "\n")
PY

# 2. rlvr, one core.
for set in cases276 math500 gsm8k; do
  python3 -c 'import json,sys
for l in open(sys.argv[1]):
    d=json.loads(l); d.pop("mv"); print(json.dumps(d))' "$WORK/$set.jsonl" > "$WORK/$set.req"
  start=$(date +%s.%N)
  "$BIN" check --threads 1 --timings < "$WORK/$set.req" > "$WORK/$set.rlvr" 2>/dev/null
  end=$(date +%s.%N)
  echo "$start $end" > "$WORK/$set.rlvr.wall"
done

# 3. math-verify 0.9.0, one core, same pairs.
"$VENV/bin/python" - "$WORK" <<'PY'
import json, sys, time, logging
logging.disable(logging.CRITICAL)
from math_verify import parse, verify, LatexExtractionConfig, ExprExtractionConfig
work = sys.argv[1]
for name in ("cases276", "math500", "gsm8k"):
    res = []
    t_all = time.perf_counter()
    for l in open(f"{work}/{name}.jsonl"):
        d = json.loads(l); mv = d["mv"]
        gold = d["ground_truth"]
        if mv["gold_wrap"]:
            gold = "$" + gold + "$"
        t = time.perf_counter()
        try:
            if mv["mode"] == "compare_strings":
                cfg = []
                if "latex" in mv["match_types"]: cfg.append(LatexExtractionConfig(boxed_match_priority=0))
                if "expr" in mv["match_types"]: cfg.append(ExprExtractionConfig())
                g = parse(gold, cfg); p = parse(d["response"], cfg)
            else:
                g = parse(gold); p = parse(d["response"])
            ok = verify(g, p, float_rounding=mv["precision"], strict=mv["strict"], allow_set_relation_comp=mv["allow"])
        except Exception:
            ok = False
        res.append({"ok": bool(ok), "us": (time.perf_counter() - t) * 1e6})
    wall = time.perf_counter() - t_all
    with open(f"{work}/{name}.mv", "w") as f:
        json.dump({"wall": wall, "res": res}, f)
PY

# 4. Report.
python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
def pct(v, q):
    v = sorted(v); return v[min(len(v) - 1, int(q * len(v)))] if v else 0.0
tot_r = tot_m = tot_n = agree = 0
rows = []
for name in ("cases276", "math500", "gsm8k"):
    r = [json.loads(l) for l in open(f"{work}/{name}.rlvr")]
    s, e = map(float, open(f"{work}/{name}.rlvr.wall").read().split())
    m = json.load(open(f"{work}/{name}.mv"))
    n = len(r)
    r_us = [x["elapsed_us"] for x in r]
    m_us = [x["us"] for x in m["res"]]
    r_ok = [x["outcome"] == "correct" for x in r]
    m_ok = [x["ok"] for x in m["res"]]
    a = sum(1 for x, y in zip(r_ok, m_ok) if x == y)
    r_cps = n / max(sum(r_us) / 1e6, 1e-9)
    m_cps = n / max(sum(m_us) / 1e6, 1e-9)
    print(f"{name:9s} n={n:5d}  rlvr {r_cps:10.0f} checks/s p50 {pct(r_us,.5)/1000:7.3f} ms p99 {pct(r_us,.99)/1000:7.3f} ms "
          f"(process wall {e-s:6.2f} s) | math-verify {m_cps:8.1f} checks/s p50 {pct(m_us,.5)/1000:7.2f} ms "
          f"p99 {pct(m_us,.99)/1000:7.2f} ms | correct rlvr {sum(r_ok)} mv {sum(m_ok)} | agree {a}/{n}")
    tot_r += sum(r_us); tot_m += sum(m_us); tot_n += n; agree += a
r_cps = tot_n / (tot_r / 1e6); m_cps = tot_n / (tot_m / 1e6)
print(f"RESULT math_checks_per_s={r_cps:.0f} baseline={m_cps:.1f} ratio={r_cps/m_cps:.1f} agreement={agree/tot_n:.4f}")
PY
