# Builds both binaries once; the runtime image runs `api` or `worker`.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 orderflow
COPY --from=build /src/target/release/api /src/target/release/worker /usr/local/bin/
USER orderflow
WORKDIR /home/orderflow
ENV HOST=0.0.0.0 PORT=8000 LOG_DIR=/tmp/orderflow-logs
EXPOSE 8000
CMD ["api"]
