#!/usr/bin/env bash
# Runs the whole system locally: the api (port 8000, docs at /docs) and one worker,
# against the local PostgreSQL and RabbitMQ. Both apply migrations at start-up. Order emails
# go to SMTP_URL when set, else into var/mail as .eml files.
# Ctrl-C stops both gracefully. Settings come from the environment and .env.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .env ]; then set -a; . ./.env; set +a; fi
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/orderflow}"
# Without an SMTP server, order emails are written to var/mail as .eml files to open.
if [ -z "${SMTP_URL:-}" ]; then export EMAIL_DIR="${EMAIL_DIR:-var/mail}"; fi
scripts/services.sh
cargo build --release --bins
./target/release/worker &
worker=$!
./target/release/api &
api=$!
stop() { kill -TERM "$api" "$worker" 2>/dev/null || true; }
trap stop INT TERM
# Exit when either process ends, and take the other down with it.
wait -n "$api" "$worker" || status=$?
stop
wait "$api" "$worker" 2>/dev/null || true
exit "${status:-0}"
