#!/usr/bin/env bash
# Runs the whole test suite against the local PostgreSQL and RabbitMQ.
# Each test gets its own freshly migrated database and its own exchanges and queues, so the
# suite runs in parallel. The fault-injection tests stop shared services and kill worker
# processes, so they run afterwards, one at a time (SKIP_FAULT_SUITE=1 leaves them out).
# The console's browser test leaves its screenshots in target/e2e/.
# Arguments go to both nextest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/orderflow}"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
scripts/services.sh
# The cost-budget test counts statements with pg_stat_statements.
scripts/pg-stat-statements.sh "${DATABASE_URL%/*}/postgres"
# The fault suite runs real worker processes.
cargo build --quiet -p worker --bin worker
# The email tests talk to a real SMTP server: aiosmtpd, in a virtualenv of its own.
venv=target/test-venv
if ! "$venv/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
  echo "installing aiosmtpd into $venv..."
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'aiosmtpd>=1.4,<2'
fi
# The Stripe tests talk to localstripe, a stateful Stripe API server, in the same virtualenv.
if ! "$venv/bin/python" -c 'import localstripe' 2>/dev/null; then
  echo "installing localstripe into $venv..."
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'localstripe>=1.15,<2'
fi
export SMTP_TEST_PYTHON="$PWD/$venv/bin/python"
# The console's browser test drives Debian's Chromium with playwright-core (from the npm
# registry; it never downloads a browser of its own).
if [ ! -x /usr/bin/chromium ]; then
  echo "installing Chromium..."
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q chromium
fi
if [ ! -d e2e/node_modules/playwright-core ]; then
  echo "installing playwright-core and axe-core into e2e/node_modules..."
  (cd e2e && npm ci --no-audit --no-fund --loglevel=error)
fi

status=0
cargo nextest run --workspace --no-fail-fast --no-tests=pass -E 'not test(/^fault::/)' "$@" || status=$?
if [ -z "${SKIP_FAULT_SUITE:-}" ]; then
  cargo nextest run --workspace --no-fail-fast --no-tests=pass --test-threads 1 -E 'test(/^fault::/)' "$@" || status=$?
fi
exit "$status"
