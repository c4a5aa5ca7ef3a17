#!/usr/bin/env bash
# What distribution costs: the default run (SmolLM2-135M, GRPO on arithmetic, without the held-out
# evaluation) embedded (`rlvr train`) and distributed (`rlvr up`: redis-server, the learner, 1 actor and
# 1 verifier as processes on this machine), samples/s of each; then the queue's own cost: rollout-group
# round trips through the three streams (prompt -> actor -> verifier -> learner, one at a time) for the
# default run's group size and for a 7B-like one (8 x 1024 tokens), beside redis-benchmark's XADD of
# the same payload on the same server.
#
#   scripts/bench-distributed.sh            (STEPS=12 by default)
#
# Needs redis-server and redis-benchmark (Debian: redis-server, redis-tools). Environment:
# RLVR_CARGO_PROFILE picks the build profile (release). Last line:
#   RESULT distributed_samples_per_s=… baseline=<embedded> ratio=<distributed/embedded>
#          roundtrips_per_s=… roundtrip_7b_per_s=… redis_xadd_7b_per_s=…
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STEPS="${STEPS:-12}"
PROFILE="${RLVR_CARGO_PROFILE:-release}"
DIR="$PROFILE"
[ "$PROFILE" = dev ] && DIR=debug
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$DIR"
command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)" >&2; exit 1; }
command -v redis-benchmark >/dev/null || { echo "needs redis-benchmark (apt-get install redis-tools)" >&2; exit 1; }
[ -f models/smollm2-135m-instruct/model.safetensors ] || scripts/setup-model.sh
cargo build --quiet --profile "$PROFILE" -p rlvr-learner -p rlvr-verifier --bins
cargo build --quiet --profile "$PROFILE" -p rlvr-common --features redis --example queue_load

WORK="$(mktemp -d)"
REDIS_PID=""
trap '[ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null; rm -rf "$WORK"' EXIT
cat > "$WORK/run.toml" <<TOML
[runtime]
eval = false
steps = $STEPS
TOML

summary() { python3 -c 'import json, sys; s = json.load(open(sys.argv[1])); print("%.3f %.1f" % (s["samples_per_s"], s["seconds"]))' "$1/summary.json"; }

echo "== embedded: rlvr train ($STEPS steps)"
"$BIN/rlvr" train "$WORK/run.toml" --run-dir "$WORK/embedded" --quiet
read -r EMB EMB_S < <(summary "$WORK/embedded")
echo "embedded: $EMB samples/s ($EMB_S s)"

echo "== distributed: rlvr up --actors 1 --verifiers 1 ($STEPS steps)"
"$BIN/rlvr" up "$WORK/run.toml" --run-dir "$WORK/distributed" --actors 1 --verifiers 1 --quiet --dashboard off
read -r DIS DIS_S < <(summary "$WORK/distributed")
echo "distributed: $DIS samples/s ($DIS_S s)"

echo "== the queue alone"
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p "$WORK/redis"
redis-server --port "$PORT" --bind 127.0.0.1 --dir "$WORK/redis" --appendonly yes --save "" --logfile "$WORK/redis/log" &
REDIS_PID=$!
for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
URL="redis://127.0.0.1:$PORT"
SMALL="$("$BIN/examples/queue_load" roundtrip "$URL" 2000 24 | tee /dev/stderr)"
BIG="$("$BIN/examples/queue_load" roundtrip "$URL" 500 1024 | tee /dev/stderr)"
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
BYTES="$(field group_bytes "$BIG")"
PAYLOAD="$(head -c "$BYTES" /dev/zero | tr '\0' 'x')"
XADD="$(redis-benchmark -p "$PORT" -n 2000 -c 1 -q XADD bench '*' m "$PAYLOAD" 2>/dev/null | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1 | cut -d' ' -f1)"
echo "redis-benchmark XADD of $BYTES bytes, 1 client: $XADD/s"
RATIO="$(python3 -c "print(f'{$DIS / $EMB:.3f}')")"
echo "RESULT distributed_samples_per_s=$DIS baseline=$EMB ratio=$RATIO roundtrips_per_s=$(field roundtrips_per_s "$SMALL") roundtrip_7b_per_s=$(field roundtrips_per_s "$BIG") redis_xadd_7b_per_s=$XADD"
