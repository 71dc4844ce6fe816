# gitgate's container image, for people with Docker (or BuildKit/Podman):
#
#   docker build -t registry.example.com/gitgate:0.1.0 .
#
# Without a Docker engine, charts/image/build.sh assembles the same image
# with umoci and skopeo. Both hold the same contents: the binary, the shared
# libraries it and git link (glibc: the binary is dynamically linked, so a
# static base would not start it), git (for the bundled example and
# local-directory repositories), CA certificates, a non-root user 65532, and
# /tmp. The Helm chart's securityContext (runAsUser 65532, read-only root
# filesystem) matches.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
 && install -D -m 0755 target/release/gitgate /out/gitgate

# Gather the root filesystem: the binary, git, every library ldd names for
# them (and the dynamic loader), CA certificates, passwd/group.
FROM debian:bookworm-slim AS rootfs
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends ca-certificates git \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/gitgate /rootfs/gitgate
RUN set -eu; \
    mkdir -p /rootfs/usr/bin /rootfs/etc/ssl/certs /rootfs/tmp /rootfs/var/lib/gitgate /rootfs/home/nonroot; \
    install -m 0755 /usr/bin/git /rootfs/usr/bin/git; \
    for lib in $( (ldd /rootfs/gitgate; ldd /usr/bin/git) | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u); do \
      mkdir -p "/rootfs$(dirname "$lib")"; cp -L "$lib" "/rootfs$lib"; \
    done; \
    cp -L /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/; \
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /rootfs/etc/passwd; \
    printf 'root:x:0:\nnonroot:x:65532:\n' > /rootfs/etc/group; \
    chmod 1777 /rootfs/tmp; \
    chown 65532:65532 /rootfs/var/lib/gitgate /rootfs/home/nonroot

FROM scratch
COPY --from=rootfs /rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
LABEL org.opencontainers.image.title="gitgate" \
      org.opencontainers.image.description="Git is the only deploy path: GitOps sync loop, admission webhooks, age/Vault secrets bridge, audit log" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
WORKDIR /var/lib/gitgate
EXPOSE 8443
ENTRYPOINT ["/gitgate"]
