# syntax=docker/dockerfile:1
# Build: docker build -t iap-proxy .
# Run:   docker run --rm -p 127.0.0.1:8080:8080 \
#          -v "$HOME/key.json:/key.json:ro" iap-proxy \
#          --listen 0.0.0.0:8080 --allow-non-loopback \
#          --upstream https://app.example.com --audience NNN-xxx.apps.googleusercontent.com \
#          --credentials /key.json
# Inside a container the proxy must listen on 0.0.0.0 to be reachable through a published
# port; publish it on the host's loopback only (as above), or run it as a sidecar and keep
# the default 127.0.0.1:8080, which the pod's other containers share.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin iap-proxy

# distroless/cc: glibc and CA certificates, no shell, runs as an unprivileged user
# (65532 is distroless' "nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/iap-proxy /usr/local/bin/iap-proxy
USER 65532:65532
# 8080: the proxy (--listen). 9091: the admin endpoints when enabled with
# --admin-listen=0.0.0.0:9091 --allow-non-loopback: GET /healthz (liveness), GET /readyz
# (readiness: a valid token and not draining), GET /metrics (Prometheus), POST /quitquitquit.
EXPOSE 8080 9091
ENTRYPOINT ["/usr/local/bin/iap-proxy"]
