#!/usr/bin/env bash
# Webhook delivery throughput against a receiver that takes 100 ms over every request
# (api/examples/slow_receiver.rs), with 1, 2 and 4 worker processes (WEBHOOK_CONCURRENCY
# attempts each, default 16), alternated 3 times; medians and their ratios. Each run starts
# its workers with the endpoint disabled, queues N deliveries, enables the endpoint and
# times the first to the last attempt; it also checks every delivery succeeded exactly once.
# `bench/webhooks.sh --smoke` runs one short round (CI does, so it never rots).
# Uses its own database (orderflow_bench_webhooks) and its own exchange and queues.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
cargo build --release --quiet --bins --example slow_receiver

export DATABASE_URL=postgres://postgres@127.0.0.1:5432/orderflow_bench_webhooks
export AMQP_EXCHANGE="bench.hooks.$$" AMQP_QUEUE="bench.hooks.$$.orders"
export LOG_DIR="" RUST_LOG=error METRICS_ADDR="" WEBHOOK_ALLOWED_HOSTS=127.0.0.1
psql -q postgres://postgres@127.0.0.1:5432/postgres \
  -c "DROP DATABASE IF EXISTS orderflow_bench_webhooks" -c "CREATE DATABASE orderflow_bench_webhooks"
sql() { psql -qAt "$DATABASE_URL" -c "$1"; }
if [ "${1:-}" = --smoke ]; then
  PER_WORKER=50 ROUNDS=1
else
  PER_WORKER=1000 ROUNDS=3
fi
receiver_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

pids=()
cleanup() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rabbitmqctl -q list_queues name | grep "^$AMQP_QUEUE" | while read -r queue; do rabbitmqctl -q delete_queue "$queue"; done
}
trap cleanup EXIT

./target/release/examples/slow_receiver --port "$receiver_port" --delay-ms 100 & pids+=($!)
./target/release/api migrate >/dev/null
endpoint=$(sql "INSERT INTO webhook_endpoints (id, url, secret, enabled)
                VALUES (gen_random_uuid(), 'http://127.0.0.1:$receiver_port/hook', 'whsec_$(head -c 24 /dev/urandom | base64)', false)
                RETURNING id")

# run WORKERS: deliveries/s with that many worker processes.
run() {
  local count=$(($1 * PER_WORKER)) workers=()
  sql "UPDATE webhook_endpoints SET enabled = false; DELETE FROM webhook_deliveries" >/dev/null
  sql "INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, order_id, body)
       SELECT '$endpoint', gen_random_uuid(), 'order.created', gen_random_uuid(), '{\"bench\": ' || g || '}'
       FROM generate_series(1, $count) g" >/dev/null
  for _ in $(seq "$1"); do ./target/release/worker >&2 & workers+=($!); pids+=($!); done
  sleep 2  # connected and polling
  sql "UPDATE webhook_endpoints SET enabled = true" >/dev/null
  local deadline=$((SECONDS + 120))
  until [ "$(sql "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'")" = "$count" ]; do
    [ $SECONDS -lt $deadline ] || { echo "deliveries did not finish" >&2; exit 1; }
    sleep 0.2
  done
  kill -TERM "${workers[@]}"; wait "${workers[@]}" 2>/dev/null || true
  local attempts
  attempts=$(sql "SELECT count(*) FROM webhook_attempts a JOIN webhook_deliveries d USING (endpoint_id, event_id)")
  [ "$attempts" = "$count" ] || { echo "$attempts attempts for $count deliveries" >&2; exit 1; }
  sql "SELECT round(($count - 1) / extract(epoch FROM max(attempted_at) - min(attempted_at)))
       FROM webhook_attempts a JOIN webhook_deliveries d USING (endpoint_id, event_id)"
}
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }

echo "== webhook deliveries/s, receiver 100 ms per request, $PER_WORKER deliveries per worker per run"
one=() two=() four=()
for round in $(seq $ROUNDS); do
  one+=("$(run 1)") two+=("$(run 2)") four+=("$(run 4)")
  echo "round $round: 1 worker ${one[-1]}/s, 2 workers ${two[-1]}/s, 4 workers ${four[-1]}/s"
done
m1=$(median "${one[@]}") m2=$(median "${two[@]}") m4=$(median "${four[@]}")
printf 'medians: 1 worker %s/s, 2 workers %s/s (%.2fx), 4 workers %s/s (%.2fx)\n' \
  "$m1" "$m2" "$(echo "$m2 / $m1" | bc -l)" "$m4" "$(echo "$m4 / $m1" | bc -l)"
echo "receiver took $(curl -fs "127.0.0.1:$receiver_port/count") requests in all"
