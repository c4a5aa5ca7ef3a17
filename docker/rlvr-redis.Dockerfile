# The `rlvr-redis` image: Debian's redis-server and redis-cli, from scripts/build-images.sh
# (target/images/rlvr-redis), so that the stack needs no image from a registry. Runs as uid 10001;
# its data directory is /data (a volume).
FROM scratch
COPY rootfs/ /
COPY --chown=10001:10001 writable/ /
USER 10001:10001
WORKDIR /data
ENV PATH=/usr/local/bin
EXPOSE 6379
ENTRYPOINT ["redis-server"]
CMD ["--appendonly", "yes", "--dir", "/data", "--protected-mode", "no"]
