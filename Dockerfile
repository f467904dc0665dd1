# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run in a slim Debian image as a non-root
# user. Mount your config at /etc/ringway/ringway.toml (the image ships the reference one).
#
#   docker build -t ringway .
#   docker run --rm --network host -v $PWD/conf/minimal.toml:/etc/ringway/ringway.toml:ro ringway

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --bin ringway \
    && strip target/release/ringway

FROM debian:bookworm-slim AS runtime
RUN useradd --system --no-create-home --shell /usr/sbin/nologin ringway \
    && mkdir -p /etc/ringway
COPY --from=build /src/target/release/ringway /usr/local/bin/ringway
COPY conf/ringway.toml /etc/ringway/ringway.toml
USER ringway
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ringway"]
CMD ["run", "-c", "/etc/ringway/ringway.toml"]
