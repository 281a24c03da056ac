# syntax=docker/dockerfile:1
#
# The `tollgate` binary in a small Debian image running as uid 10001.
#   docker build -t ghcr.io/tollgate/tollgate:dev .
# The runtime keeps /bin/sh because the Helm chart's control-plane pods derive
# their Raft node id from the pod ordinal in a shell entrypoint.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; the binary is
# copied out of the cached target dir because it is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tollgate \
 && install -D -m 0755 target/release/tollgate /out/tollgate

FROM debian:bookworm-slim AS runtime
# ca-certificates: for upstream TLS verification by tools/libraries that use
# the system trust store (the binary itself also bundles webpki roots).
# Versions are not pinned: bookworm's security updates should flow in.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tollgate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/tollgate --shell /usr/sbin/nologin tollgate \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/tollgate
COPY --from=builder /out/tollgate /usr/local/bin/tollgate
USER 10001:10001
WORKDIR /var/lib/tollgate
# proxy, admin REST, gRPC, data-plane status
EXPOSE 8080 9080 9090 9901
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["--help"]
