# syntax=docker/dockerfile:1
# Build: docker build -t iap-proxy .
# Run:   docker run --rm -p 127.0.0.1:8080:8080 \
#          -v "$HOME/key.json:/key.json:ro" --user "$(id -u):$(id -g)" iap-proxy \
#          --listen 0.0.0.0:8080 --allow-non-loopback --trust-network \
#          --upstream https://app.example.com --audience NNN-xxx.apps.googleusercontent.com \
#          --credentials /key.json
# Inside a container the proxy must listen on 0.0.0.0 to be reachable through a published
# port; publish it on the host's loopback only (as above), or run it as a sidecar and keep
# the default 127.0.0.1:8080, which the pod's other containers share.
# The image runs as uid 65532; gcloud writes key files 0600 for you, so either run as your
# own uid (--user, as above) or make the key readable by group 65532 (README, "Key files in
# containers").

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, built against a stub crate: this layer is reused until Cargo.toml or
# Cargo.lock change, so a source edit rebuilds only iap-proxy itself.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin iap-proxy \
    && rm -rf src target/release/.fingerprint/iap-proxy-* target/release/deps/iap_proxy-* \
        target/release/deps/libiap_proxy-* target/release/iap-proxy*
COPY src ./src
# `strip = true` in Cargo.toml's release profile: the binary ships without symbols.
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
