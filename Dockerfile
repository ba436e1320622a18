# syntax=docker/dockerfile:1
#
# The one `ticketing` binary, for every role: `docker run IMAGE` starts
# `ticketing dev` (all-in-one, no external service); `docker run IMAGE ingress`
# or `... sink` starts a role against the real stack (see docker-compose.yml).
#
#   docker build -t ticketing .

# ---- build ----------------------------------------------------------------
FROM rust:1-bookworm AS builder

# rdkafka builds librdkafka from source with CMake (the `cmake-build` feature);
# the rest of the C toolchain and zlib headers come with the rust image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The caches keep the registry and the target directory between builds
# (BuildKit). The binary is copied out in the same step, because a cache mount
# is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ticketing \
 && install -D -m 0755 target/release/ticketing /out/ticketing

# ---- runtime --------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates: TLS to brokers, stores and the registry when they use it.
# curl: container health checks only (docker-compose.yml); Kubernetes probes
# do not need it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 ticketing \
 && useradd --system --uid 10001 --gid ticketing --home-dir /var/lib/ticketing \
      --shell /usr/sbin/nologin ticketing \
 && install -d -o ticketing -g ticketing -m 0750 /var/lib/ticketing /var/lib/ticketing/data

COPY --from=builder /out/ticketing /usr/local/bin/ticketing

# Listen on every interface inside the container (the binary's own default is
# loopback). TICKETING_OPS_LISTEN is left to each role: sink 9102, processor 9101.
ENV TICKETING_LISTEN=0.0.0.0:8080 \
    TICKETING_DATA_DIR=/var/lib/ticketing/data \
    TICKETING_LOG_FORMAT=json \
    RUST_LOG=info

WORKDIR /var/lib/ticketing
# Numeric, so Kubernetes can verify runAsNonRoot.
USER 10001:10001
EXPOSE 8080

ENTRYPOINT ["ticketing"]
CMD ["dev"]
