# ringway in a FROM-scratch image: one static (musl) binary, the reference config,
# no shell, no libc, runs as uid/gid 65534. Mount your config at
# /etc/ringway/ringway.toml. Needs BuildKit (the default with buildx; else set
# DOCKER_BUILDKIT=1), which builds only the stages the chosen binary needs.
#
# From source (needs the rust image from a registry):
#   docker build -t ringway .
# From a binary built on the host (no registry needed; what scripts/docker.sh does):
#   CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --locked \
#       --target x86_64-unknown-linux-musl --bin ringway
#   docker build --build-arg RINGWAY_BINARY=prebuilt -t ringway .
# Run (host networking: ringway balances the host's traffic):
#   docker run --rm --network host -v $PWD/conf/minimal.toml:/etc/ringway/ringway.toml:ro ringway

# Where the binary comes from: `source` (compile in the rust image) or `prebuilt`.
ARG RINGWAY_BINARY=source

FROM rust:1-slim-bookworm AS source
RUN rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests ./tests
RUN CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --target x86_64-unknown-linux-musl --bin ringway \
    && cp target/x86_64-unknown-linux-musl/release/ringway /ringway

FROM scratch AS prebuilt
COPY target/x86_64-unknown-linux-musl/release/ringway /ringway

# hadolint ignore=DL3006
FROM ${RINGWAY_BINARY} AS binary

FROM scratch
COPY --from=binary /ringway /usr/local/bin/ringway
COPY conf/ringway.toml /etc/ringway/ringway.toml
USER 65534:65534
# The reference config appends to /var/log/ringway/access.log: a scratch image has
# no mkdir, so WORKDIR makes the directory, the service user's.
WORKDIR /var/log/ringway
EXPOSE 8080 9100
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ringway"]
CMD ["run", "-c", "/etc/ringway/ringway.toml"]
