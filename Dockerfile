# syntax=docker/dockerfile:1
#
# cohort-bridge image: both binaries (cohort-bridge, ld-emulator) on Debian
# slim, running as an unprivileged user.
#
#   docker build -t cohort-bridge .
#   docker run --rm -p 8080:8080 \
#     -v "$PWD/my-config.toml:/etc/cohort-bridge/config.toml:ro" \
#     -e COHORT_BRIDGE_REDIS__URL=redis://redis:6379 \
#     -e LD_API_TOKEN -e AMPLITUDE_SECRET -e HEAP_SECRET \
#     cohort-bridge

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The registry and target directory are cache mounts, so the binaries are
# copied out of target/ within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
    && mkdir -p /out \
    && cp target/release/cohort-bridge target/release/ld-emulator /out/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 cohort-bridge \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin cohort-bridge
COPY --from=builder /out/cohort-bridge /out/ld-emulator /usr/local/bin/
# The commented example doubles as the default config; mount your own over
# /etc/cohort-bridge/config.toml (or point COHORT_BRIDGE_CONFIG elsewhere).
COPY config/example.toml /etc/cohort-bridge/example.toml
COPY config/example.toml /etc/cohort-bridge/config.toml
# Inside a container the listener must not be loopback-only. This environment
# override wins over [server] listen in the file; set it to change the address.
ENV COHORT_BRIDGE_SERVER__LISTEN=0.0.0.0:8080
USER 10001:10001
EXPOSE 8080
# Liveness: GET /healthz; readiness: GET /readyz (no curl in this image, so
# probe from the orchestrator).
ENTRYPOINT ["cohort-bridge"]
CMD ["serve", "--config", "/etc/cohort-bridge/config.toml"]
