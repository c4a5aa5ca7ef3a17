#!/usr/bin/env bash
# What watching a run costs: the default run (SmolLM2-135M, GRPO on arithmetic, no held-out evaluation)
# with no dashboard, and with the dashboard serving a live client (an SSE subscriber on /api/events and
# /metrics scraped every second, as Prometheus and an open page would), alternating A/B/A/B so the
# machine's drift falls on both. Reports samples/s of each and the ratio (goal: the dashboard costs
# under 2%).
#
#   scripts/bench-dashboard.sh             (STEPS=4 per run, ROUNDS=2 by default)
#
# RLVR_CARGO_PROFILE picks the build profile (release). With SCREENSHOT=path.png the last dashboard
# run is also photographed in headless Chromium (needs the test Python: scripts/test.sh sets it up).
# Last line:
#   RESULT dashboard_samples_per_s=… baseline=<no dashboard> ratio=<with/without>
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STEPS="${STEPS:-4}"
ROUNDS="${ROUNDS:-2}"
PROFILE="${RLVR_CARGO_PROFILE:-release}"
DIR="$PROFILE"
[ "$PROFILE" = dev ] && DIR=debug
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$DIR"
[ -f models/smollm2-135m-instruct/model.safetensors ] || scripts/setup-model.sh
cargo build --quiet --profile "$PROFILE" -p rlvr-learner --bin rlvr

WORK="$(mktemp -d)"
CLIENTS=()
trap 'for p in "${CLIENTS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT
cat > "$WORK/run.toml" <<TOML
[runtime]
eval = false
steps = $STEPS
TOML
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
URL="http://127.0.0.1:$PORT"

samples_per_s() { python3 -c 'import json, sys; print("%.4f" % json.load(open(sys.argv[1]))["samples_per_s"])' "$1/summary.json"; }

# A client that stays for the whole run: the live stream and a scrape a second.
watch_run() {
    for _ in $(seq 600); do curl -sf "$URL/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
    curl -sN "$URL/api/events" >/dev/null 2>&1 &
    CLIENTS+=($!)
    (while curl -sf "$URL/metrics" >/dev/null 2>&1; do sleep 1; done) &
    CLIENTS+=($!)
}

PLAIN=()
WATCHED=()
for round in $(seq "$ROUNDS"); do
    echo "== round $round: no dashboard"
    "$BIN/rlvr" train "$WORK/run.toml" --run-dir "$WORK/plain-$round" --quiet
    PLAIN+=("$(samples_per_s "$WORK/plain-$round")")
    echo "no dashboard: ${PLAIN[-1]} samples/s"

    echo "== round $round: dashboard at $URL with a live client"
    "$BIN/rlvr" train "$WORK/run.toml" --run-dir "$WORK/watched-$round" --quiet --dashboard "127.0.0.1:$PORT" &
    TRAIN=$!
    watch_run
    if [ -n "${SCREENSHOT:-}" ] && [ "$round" = "$ROUNDS" ]; then
        "${RLVR_TEST_PYTHON:-.venv-test/bin/python}" scripts/dashboard_check.py "$URL" --only-screenshot "$SCREENSHOT" --steps "$((STEPS - 1))" || echo "screenshot failed" >&2
    fi
    wait "$TRAIN"
    for p in "${CLIENTS[@]}"; do kill "$p" 2>/dev/null || true; done
    CLIENTS=()
    WATCHED+=("$(samples_per_s "$WORK/watched-$round")")
    echo "dashboard: ${WATCHED[-1]} samples/s"
done

python3 - "${PLAIN[*]}" "${WATCHED[*]}" <<'PY'
import sys
plain = [float(x) for x in sys.argv[1].split()]
watched = [float(x) for x in sys.argv[2].split()]
a, b = sum(plain) / len(plain), sum(watched) / len(watched)
print(f"no dashboard: {plain} mean {a:.4f} samples/s")
print(f"dashboard:    {watched} mean {b:.4f} samples/s")
print(f"RESULT dashboard_samples_per_s={b:.4f} baseline={a:.4f} ratio={b / a:.4f}")
PY
