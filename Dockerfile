# syntax=docker/dockerfile:1
#
# relink operator image: a static (musl) binary on distroless/static, running as UID 65532.
#
#   docker build -t relink:dev .
#   docker buildx build --platform linux/amd64,linux/arm64 -t <registry>/relink:<tag> --push .
#
# Why musl + distroless/static rather than glibc or scratch: the binary needs no libc at run time
# (TLS is rustls with ring, no OpenSSL), so a static build runs on the smallest base; distroless
# static adds only what scratch lacks and relink uses: the CA bundle (/etc/ssl/certs, read by the
# providers' and SMTP's TLS through the platform verifier and native roots), /etc/passwd with the
# `nonroot` user 65532, and tzdata. No shell, no package manager.
#
# Reproducible: Cargo.lock is honoured (--locked), paths and timestamps are stripped from the
# binary, and both base images can be pinned by digest through the build arguments, e.g.
#   --build-arg RUST_IMAGE=rust:1-bookworm@sha256:... --build-arg BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot@sha256:...

ARG RUST_IMAGE=rust:1-bookworm
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${RUST_IMAGE} AS build
# ring compiles C for the musl target: musl-gcc comes from musl-tools.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
ENV CARGO_INCREMENTAL=0 \
    CARGO_NET_RETRY=5 \
    SOURCE_DATE_EPOCH=0
# Built natively for the platform being built (buildx runs each platform's stage on its own).
RUN rustup target add "$(uname -m)-unknown-linux-musl"
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Tests, benches and examples are not needed to build the binary; cargo only reads their
# [[test]] entries, whose paths need not exist for `cargo build --bin`.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
 && RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=/src=. --remap-path-prefix=/usr/local/cargo=cargo -C strip=symbols" \
    cargo build --release --locked --bin relink --target "$target" \
 && install -D -m 0755 "target/$target/release/relink" /out/relink

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="relink" \
      org.opencontainers.image.description="Kubernetes operator that keeps the OAuth token connections of social-media and email channels healthy" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/relink /relink
USER 65532:65532
# 8080: /metrics, /healthz, /readyz. 8081: GET /oauth/callback, the only public endpoint.
EXPOSE 8080 8081
ENTRYPOINT ["/relink"]
CMD ["run"]
