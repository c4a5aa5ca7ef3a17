# The `rlvr` image for GPU nodes: the binary built with `--features cuda` on NVIDIA's CUDA runtime
# image (which brings the CUDA libraries cudarc loads). `scripts/build-images.sh --cuda` builds it;
# the base comes from a registry. Same user, paths and read-only root filesystem as docker/rlvr.Dockerfile.
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}
COPY rlvr /usr/local/bin/rlvr
RUN groupadd -g 10001 rlvr && useradd -u 10001 -g 10001 -d /rlvr -s /usr/sbin/nologin rlvr \
    && mkdir -p /rlvr/models /rlvr/data /rlvr/config /rlvr/runs \
    && chown 10001:10001 /rlvr/runs
USER 10001:10001
WORKDIR /rlvr
ENV HOME=/rlvr
EXPOSE 8080 7070 9090
ENTRYPOINT ["rlvr"]
CMD ["--help"]
