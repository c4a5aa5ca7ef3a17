#!/usr/bin/env bash
# How far one Redis and one learner go: a simulated learner (issues prompt tasks, reads and acknowledges
# scored groups, trims) and a simulated fleet in another process (N actors, each taking a task, waiting
# GROUP_SECONDS as a GPU would while sampling 8 x TOKENS tokens, then writing a group of that size; N/4
# verifiers scoring at once), every worker on its own connection, for 10 to 1,000 actors. Prints, per
# fleet size, groups/s through the learner, scored MB/s, and the CPU (in cores) of the learner and of
# Redis; where groups/s stops growing with the fleet, a plane has saturated.
#
#   scripts/load-test.sh [SECONDS] [TOKENS] [GROUP_SECONDS] [FLEETS]     (20, 1024, 4, "10 100 300 1000")
#
# Needs redis-server. Environment: RLVR_CARGO_PROFILE picks the build profile (release).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECONDS_PER="${1:-20}"
TOKENS="${2:-1024}"
GROUP_S="${3:-4}"
FLEETS="${4:-10 100 300 1000}"
PROFILE="${RLVR_CARGO_PROFILE:-release}"
DIR="$PROFILE"
[ "$PROFILE" = dev ] && DIR=debug
cargo build --quiet --profile "$PROFILE" -p rlvr-common --features redis --example queue_load
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$DIR/examples/queue_load"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

WORK="$(mktemp -d)"
REDIS_PID=""
trap '[ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null; rm -rf "$WORK"' EXIT
for ACTORS in $FLEETS; do
  PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  mkdir -p "$WORK/$ACTORS"
  redis-server --port "$PORT" --bind 127.0.0.1 --dir "$WORK/$ACTORS" --appendonly yes --save "" --maxclients 20000 --logfile "$WORK/$ACTORS/log" &
  REDIS_PID=$!
  for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
  URL="redis://127.0.0.1:$PORT"
  VERIFIERS=$(( (ACTORS + 3) / 4 ))
  "$BIN" fleet "$URL" "$SECONDS_PER" "$ACTORS" "$VERIFIERS" "$TOKENS" "$GROUP_S" > "$WORK/fleet.out" &
  FLEET=$!
  # Keep two tasks per actor in flight: the learner never starves the fleet.
  LEARNER="$("$BIN" learner "$URL" "$SECONDS_PER" $(( ACTORS * 2 )))"
  wait "$FLEET"
  OFFERED="$(python3 -c "print(f'{$ACTORS / $GROUP_S:.1f}')")"
  echo "actors=$ACTORS verifiers=$VERIFIERS offered_groups_per_s=$OFFERED $LEARNER $(cat "$WORK/fleet.out")"
  kill "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null || true
  REDIS_PID=""
done
