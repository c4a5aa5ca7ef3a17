# The `rlvr` image (learner and actor): built by scripts/build-images.sh from the files it lays out
# under target/images/rlvr (the binary and the libraries it links, nothing else). Runs as uid 10001
# with a read-only root filesystem: the run directory (/rlvr/runs) and /tmp are volumes; the model
# (/rlvr/models), data (/rlvr/data) and run config (/rlvr/config) are mounted read-only.
FROM scratch
COPY rootfs/ /
COPY --chown=10001:10001 writable/ /
USER 10001:10001
WORKDIR /rlvr
ENV PATH=/usr/local/bin HOME=/rlvr
EXPOSE 8080 7070 9090
ENTRYPOINT ["rlvr"]
CMD ["--help"]
