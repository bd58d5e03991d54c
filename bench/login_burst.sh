#!/usr/bin/env bash
# 400 concurrent failed logins against a release api while a customer keeps placing
# orders: peak RSS (VmHWM) and what every request was answered, twice — with the default
# per-address limit (one attacker address), and with it lifted, as if the 400 came from 400
# addresses, so only the password-hashing bound stands between them and the memory.
# Loopback only, about a minute. BURST=N changes the size.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
cargo build --release --quiet -p api --bin api
server=postgres://postgres@127.0.0.1:5432
export DATABASE_URL=$server/orderflow_burst
export LOG_DIR="" RUST_LOG=error PORT=8098 HOST=127.0.0.1 AMQP_EXCHANGE="burst.$$" AMQP_QUEUE="burst.$$.orders"
base=http://127.0.0.1:$PORT
api_pid=""
cleanup() {
  [ -n "$api_pid" ] && kill -TERM "$api_pid" 2>/dev/null && wait "$api_pid" 2>/dev/null || true
  rabbitmqctl -q list_queues name 2>/dev/null | grep "^$AMQP_QUEUE" \
    | while read -r queue; do rabbitmqctl -q delete_queue "$queue" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

for scenario in "one address (defaults)" "400 addresses (per-address limit lifted)"; do
  psql -q "$server/postgres" -c "DROP DATABASE IF EXISTS orderflow_burst WITH (FORCE)" -c "CREATE DATABASE orderflow_burst"
  if [ "$scenario" = "one address (defaults)" ]; then unset LOGIN_PER_IP_PER_MINUTE; else export LOGIN_PER_IP_PER_MINUTE=100000; fi
  ./target/release/api & api_pid=$!
  until curl -fs "$base/health" >/dev/null; do sleep 0.2; done
  ADMIN_PASSWORD=burst-admin-password ./target/release/api create-user --role admin \
    --email admin@burst.test --username admin >/dev/null
  token=$(curl -fs "$base/api/auth/login" -H 'content-type: application/json' \
    -d '{"username":"admin","password":"burst-admin-password"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -fs "$base/api/products" -H "authorization: Bearer $token" -H 'content-type: application/json' \
    -d '{"sku":"BURST-1","name":"Burst","price":"1.00","stock":1000000}' >/dev/null
  echo "## $scenario"
  python3 bench/login_burst.py "$base" "$api_pid" "$token" "${BURST:-400}"
  kill -TERM "$api_pid"; wait "$api_pid" 2>/dev/null || true; api_pid=""
done
psql -q "$server/postgres" -c "DROP DATABASE IF EXISTS orderflow_burst WITH (FORCE)"
