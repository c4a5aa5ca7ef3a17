# For machines that reach a registry and would rather not install Rust: compiles rlvr in a Debian
# container and lays out the images' files in /images, which `scripts/build-images.sh --in-docker`
# copies out and turns into the same images as a build on the host.
ARG RUST_IMAGE=rust:1.95-bookworm
FROM ${RUST_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server python3 python3-pip python3-venv binutils \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --bin rlvr --bin rlvr-verifier \
    && scripts/build-images.sh --profile release --stage-only /images
