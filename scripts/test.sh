#!/usr/bin/env bash
# Runs the whole test suite against the local PostgreSQL and RabbitMQ.
# Each test gets its own freshly migrated database and its own exchanges and queues.
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/orderflow}"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
scripts/services.sh
exec cargo nextest run --workspace --no-fail-fast "$@"
