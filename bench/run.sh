#!/usr/bin/env bash
# Benchmark of the order pipeline on this machine (loopback only, bounded in time).
#   1. POST /api/orders (3-line orders) under load (wrk, 32 connections) with 2 workers
#      confirming alongside, alternated 3 times with pgbench running the same statements
#      (bench/create_order.sql, generated from the code) at 32 clients against a copy of the
#      schema: medians and their ratio, latency percentiles, and order-placed → confirmed
#      latency from the timeline.
#   2. Open loop (api/examples/open_loop.rs: a fixed rate, latency counted from when each
#      request was due): rates rising from 250 orders/s, 30 s each, with 2 workers, orders
#      over 100 products; POST latency and created → decided (confirmed or cancelled) from the
#      timeline; the sustained capacity is the highest rate at which every order was accepted
#      and created → decided p99 stayed under 250 ms. Then the same for one hot product whose
#      stock runs out half-way through each step (a flash sale): exactly the stock is confirmed.
#   oha. Open loop with a standard load generator and many connections: 10 oha processes x 16
#      connections (-q RATE/10 --latency-correction each), 3-line orders, 2 workers, rising
#      rates for STEP_SECS each; once over 30 products (process i orders products 3i+1..3i+3),
#      once with every order on the same 3 products (a flash sale). POST p50 / p99, created ->
#      confirmed p50 / p99, and the CPU per order of each process at each rate.
#   3. Worker drain rate: a backlog built with the workers stopped, drained by 1 worker
#      and by 2 workers, alternated 3 times each; medians and their ratio. Once with orders
#      spread over 20 products, once with every order for the same product (a flash sale:
#      one hot row that every reservation must lock in turn).
#   4. GET /api/orders/my (first page of 20, with lines) for a customer with 10,000 orders
#      (wrk, and oha at 32 connections),
#      alternated 3 times with pgbench running the same statements (bench/list_my_orders.sql).
#   5. The api's and a worker's metrics, scraped after the runs.
# `bench/run.sh --smoke` runs every step for a second or two (CI does, so it never rots);
# BENCH_STEPS="1 oha" runs only the steps named (default: 1 2 oha 3 4).
# Uses its own database (orderflow_bench) and its own exchange and queues.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || apt-get install -y -qq wrk
# oha builds from the crate registry (`--locked`: a newer dependency needs a newer Rust).
command -v oha >/dev/null || cargo install --locked --quiet oha
scripts/services.sh
cargo build --release --quiet --bins --example open_loop

export DATABASE_URL=postgres://postgres@127.0.0.1:5432/orderflow_bench
export AMQP_EXCHANGE="bench.$$" AMQP_QUEUE="bench.$$.orders"
export LOG_DIR="" RUST_LOG=error PORT=8099 HOST=127.0.0.1 LOGIN_MAX_FAILURES=1000
PGBENCH_URL=postgres://postgres@127.0.0.1:5432/orderflow_pgbench
for db in orderflow_bench orderflow_pgbench; do
  psql -q postgres://postgres@127.0.0.1:5432/postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
done
DATABASE_URL=$PGBENCH_URL ./target/release/api migrate >/dev/null
sql() { psql -qAt "$DATABASE_URL" -c "$1"; }
# --smoke: seconds instead of minutes, so CI runs every step; its numbers mean nothing.
if [ "${1:-}" = --smoke ]; then
  ROUND_SECS=2 BACKLOG_SECS=1 READER_ORDERS=1000 STEP_SECS=2 RATES=(100)
else
  ROUND_SECS=10 BACKLOG_SECS=4 READER_ORDERS=10000 STEP_SECS=${STEP_SECS:-30} RATES=(250 500 750 1000 1250 1500 2000)
fi
api=http://127.0.0.1:8099
steps=" ${BENCH_STEPS:-1 2 oha 3 4} "
want() { [[ "$steps" == *" $1 "* ]]; }
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }
# CPU seconds per process name, summed over its processes and the children they reaped
# (PostgreSQL's backends included, live or gone: the postmaster reaps them).
cpu_seconds() {
  local ticks=0 pid
  for pid in $(pgrep -x "$1"); do
    ticks=$((ticks + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$ticks / $(getconf CLK_TCK)" | bc -l
}
processes=(postgres beam.smp api worker)

pids=()
cleanup() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  delete_bench_queues 2>/dev/null || true
}
delete_bench_queues() {
  rabbitmqctl -q list_queues name | grep "^$AMQP_QUEUE" | while read -r queue; do rabbitmqctl -q delete_queue "$queue"; done
}
trap cleanup EXIT

./target/release/api >&2 & pids+=($!); api_pid=$!
until curl -fs $api/health/ready >/dev/null; do sleep 0.2; done
# Worker i serves its metrics on port 9190+i.
start_workers() {
  workers=()
  # Their logs go to stderr, never into a captured result.
  for i in $(seq "$1"); do METRICS_ADDR="127.0.0.1:$((9190 + i))" ./target/release/worker >&2 & workers+=($!); pids+=($!); done
}
# The pipeline's counters and histogram sums from a scrape, without HELP/TYPE or buckets.
summarize_metrics() { grep -E '^orderflow_' | grep -v '_bucket{' ; }
stop_workers() { kill -TERM "${workers[@]}"; wait "${workers[@]}" 2>/dev/null || true; }

ADMIN_PASSWORD=bench-admin-password ./target/release/api create-user --role admin --email admin@bench.test --username admin >/dev/null
login() { curl -fs $api/api/auth/login -H 'content-type: application/json' -d "{\"username\":\"$1\",\"password\":\"$2\"}" | jq -r .access_token; }
admin=$(login admin bench-admin-password)
curl -fs $api/api/auth/register -H 'content-type: application/json' \
  -d '{"email":"buyer@bench.test","username":"buyer","password":"bench-buyer-password"}' >/dev/null
export TOKEN=$(login buyer bench-buyer-password)
for i in $(seq 100); do
  curl -fs $api/api/products -H "authorization: Bearer $admin" -H 'content-type: application/json' \
    -d "{\"sku\":\"BENCH-$i\",\"name\":\"Bench item $i\",\"price\":\"1.00\",\"stock\":100000000}" >/dev/null
done
# The pgbench database gets the same customer and products (ids copied), and no relay.
sql "COPY (SELECT * FROM users) TO STDOUT" | psql -q "$PGBENCH_URL" -c "COPY users FROM STDIN"
sql "COPY (SELECT * FROM products) TO STDOUT" | psql -q "$PGBENCH_URL" -c "COPY products FROM STDIN"

if want 1; then
echo "== 1. placing 3-line orders over 20 products: api (wrk -c32, 2 workers) vs pgbench (-c32), alternated"
customer=$(sql "SELECT id FROM users WHERE username = 'buyer'")
product() { sql "SELECT id FROM products WHERE sku = 'BENCH-$1'"; }
export PRODUCTS=20 LINES=3
start_workers 2
declare -A cpu_used=() pg_cpu_used=()
api_rates=() pg_rates=() measured_orders=0 pg_transactions=0
for round in 1 2 3; do
  declare -A cpu_start=()
  for c in "${processes[@]}"; do cpu_start[$c]=$(cpu_seconds "$c"); done
  before=$(sql "SELECT count(*) FROM orders")
  out=$(wrk -t2 -c32 -d"${ROUND_SECS}s" -s bench/place_order.lua $api)
  api_rates+=("$(echo "$out" | awk '/requests\/s/ {print $2}')")
  [ "$round" = 2 ] && wrk_out=$out
  until [ "$(sql "SELECT count(*) FROM orders WHERE status = 'pending'")" = 0 ]; do sleep 0.5; done
  measured_orders=$((measured_orders + $(sql "SELECT count(*) FROM orders") - before))
  for c in "${processes[@]}"; do
    cpu_used[$c]=$(echo "${cpu_used[$c]:-0} + $(cpu_seconds "$c") - ${cpu_start[$c]}" | bc)
  done
  cpu_start[postgres]=$(cpu_seconds postgres)
  # pgbench's own CPU time comes from bash's `time` (user and system seconds, last line).
  out=$( { TIMEFORMAT='%U %S'; time pgbench -n -M prepared -c32 -j2 -T"$ROUND_SECS" -f bench/create_order.sql \
    -D customer="$customer" -D product1="$(product 1)" -D product2="$(product 2)" -D product3="$(product 3)" \
    "$PGBENCH_URL" 2>/dev/null; } 2>&1)
  pg_rates+=("$(echo "$out" | awk '/^tps/ {printf "%.0f", $3}')")
  pg_transactions=$((pg_transactions + $(echo "$out" | awk '/transactions actually processed/ {print $NF}')))
  pg_cpu_used[postgres]=$(echo "${pg_cpu_used[postgres]:-0} + $(cpu_seconds postgres) - ${cpu_start[postgres]}" | bc)
  pg_cpu_used[pgbench]=$(echo "${pg_cpu_used[pgbench]:-0} + $(echo "$out" | tail -1 | awk '{print $1 + $2}')" | bc)
  echo "round $round: api ${api_rates[-1]} orders/s, pgbench ${pg_rates[-1]} tps"
done
m_api=$(median "${api_rates[@]}") m_pg=$(median "${pg_rates[@]}")
printf 'create order: api %.0f orders/s, pgbench same SQL %.0f tps, ratio %.2f\n' "$m_api" "$m_pg" "$(echo "$m_api / $m_pg" | bc -l)"
echo "$wrk_out" | grep -E "latency p|errors"
sql "SELECT 'orders placed ' || count(*) FROM orders"
sql "WITH t AS (SELECT c.created_at - p.created_at AS d FROM order_events p JOIN order_events c
       ON c.order_id = p.order_id AND c.kind = 'status_changed' AND c.to_status = 'confirmed' WHERE p.kind = 'created')
     SELECT format('placed -> confirmed p50 %s ms, p90 %s ms, p99 %s ms',
       round(extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY d)) * 1000, 1),
       round(extract(epoch FROM percentile_cont(0.9) WITHIN GROUP (ORDER BY d)) * 1000, 1),
       round(extract(epoch FROM percentile_cont(0.99) WITHIN GROUP (ORDER BY d)) * 1000, 1)) FROM t"
echo "CPU per 1,000 orders placed and confirmed ($measured_orders orders, api rounds only):"
for c in "${processes[@]}"; do
  printf '  %-9s %.2f s\n' "$c" "$(echo "${cpu_used[$c]} * 1000 / $measured_orders" | bc -l)"
done
# On saturated cores throughput goes as 1 / CPU per order: this is the ratio's ceiling.
echo "CPU per 1,000 transactions of pgbench ($pg_transactions transactions, pgbench rounds):"
for c in postgres pgbench; do
  printf '  %-9s %.2f s\n' "$c" "$(echo "${pg_cpu_used[$c]} * 1000 / $pg_transactions" | bc -l)"
done
sleep 6 # the outbox gauges are sampled every 5 s
worker_scrape=$(curl -fs http://127.0.0.1:9191/metrics)
worker_peak=$(awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/${workers[0]}/status")
stop_workers
export LINES=1

fi

if want 2; then
echo "== 2. open loop: a fixed rate for ${STEP_SECS}s per step, 2 workers; latency from when each order was due"
# Created -> decided (the first status change: confirmed, or cancelled out of stock) for
# the orders placed since $1: count|p50 ms|p99 ms.
decided() {
  sql "WITH t AS (SELECT c.created_at - p.created_at AS d FROM order_events p JOIN order_events c
         ON c.order_id = p.order_id AND c.kind = 'status_changed' AND c.seq = 1
       WHERE p.kind = 'created' AND p.created_at >= '$1')
       SELECT count(*), coalesce(round(extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY d)) * 1000, 1), 0),
              coalesce(round(extract(epoch FROM percentile_cont(0.99) WITHIN GROUP (ORDER BY d)) * 1000, 1), 0) FROM t"
}
# step RATE PRODUCTS [STOCK]: one step at RATE orders/s over PRODUCTS products (with STOCK:
# the only product gets that stock first); prints a table row, and succeeds when every order
# was accepted and decided, created -> decided p99 stayed under 250 ms, and no more than the
# stock was confirmed.
step() {
  local rate=$1 products=$2 stock=${3:-} since out confirmed=""
  [ -n "$stock" ] && sql "UPDATE products SET stock = $stock, reserved = 0 WHERE sku = 'BENCH-1'"
  since=$(sql "SELECT clock_timestamp()")
  out=$(./target/release/examples/open_loop --url $api --rate "$rate" --secs "$STEP_SECS" --products "$products")
  local deadline=$((SECONDS + 60))
  until [ "$(sql "SELECT count(*) FROM orders WHERE status = 'pending'")" = 0 ] || [ $SECONDS -ge $deadline ]; do sleep 0.2; done
  local decided p50 p99 ok failed not_sent post50 post99
  IFS='|' read -r decided p50 p99 <<<"$(decided "$since")"
  read -r ok failed not_sent post50 post99 < <(echo "$out" | jq -r '"\(.ok) \(.failed) \(.not_sent) \(.p50_ms) \(.p99_ms)"')
  local fits=1
  if [ -n "$stock" ]; then
    confirmed=$(sql "SELECT count(*) FROM orders WHERE created_at >= '$since' AND status = 'confirmed'")
    [ "$confirmed" = "$(( stock < ok ? stock : ok ))" ] || fits=0
    confirmed=" ($confirmed confirmed of $stock in stock)"
  fi
  printf '| %s | %s accepted, %s failed, %s not sent | %.1f / %.1f ms | %s / %s ms%s |\n' \
    "$rate" "$ok" "$failed" "$not_sent" "$post50" "$post99" "$p50" "$p99" "$confirmed"
  [ "$failed" = 0 ] && [ "$not_sent" = 0 ] && [ "$decided" = "$ok" ] && [ "$fits" = 1 ] \
    && [ "$(echo "$p99 < 250" | bc)" = 1 ]
}
# capacity LABEL PRODUCTS [flash]: steps up the rates until one fails; the last that held is
# the sustained capacity.
capacity() {
  local best=0 rate
  echo "| $1: orders/s | orders | POST p50 / p99 | created -> decided p50 / p99 |"
  echo "|---|---|---|---|"
  for rate in "${RATES[@]}"; do
    if step "$rate" "$2" ${3:+$((rate * STEP_SECS / 2))}; then best=$rate; else break; fi
  done
  echo "sustained capacity, $1: $best orders/s"
}
start_workers 2
capacity "orders over 100 products" 100
capacity "every order for one product, stock for half of them" 1 flash
stop_workers

fi

if want oha; then
echo "== oha: open loop, 10 oha processes x 16 connections, 3-line orders, 2 workers, ${STEP_SECS}s per rate"
# Created -> confirmed for the orders placed since $1: p50 ms|p99 ms.
confirmed_latency() {
  sql "WITH t AS (SELECT c.created_at - p.created_at AS d FROM order_events p JOIN order_events c
         ON c.order_id = p.order_id AND c.kind = 'status_changed' AND c.to_status = 'confirmed'
       WHERE p.kind = 'created' AND p.created_at >= '$1')
       SELECT coalesce(round(extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY d)) * 1000, 1), 0) || '|' ||
              coalesce(round(extract(epoch FROM percentile_cont(0.99) WITHIN GROUP (ORDER BY d)) * 1000, 1), 0) FROM t"
}
# oha_step RATE hot|spread: RATE orders/s shared by 10 oha processes; "spread": process i
# orders products 3i+1..3i+3 (30 products), "hot": every process the same 3. POST latency
# is the median p50 and the worst p99 of the processes (each counts from when a request was
# due); CPU is per order placed, over the step and until its orders are confirmed.
oha_step() {
  local rate=$1 spread=$2 since dir i base body oha_pids=() before
  since=$(sql "SELECT clock_timestamp()")
  before=$(sql "SELECT count(*) FROM orders")
  dir=$(mktemp -d)
  declare -A start=()
  for c in "${processes[@]}"; do start[$c]=$(cpu_seconds "$c"); done
  for i in $(seq 0 9); do
    base=0; [ "$spread" = spread ] && base=$((3 * i))
    body=$(jq -nc --argjson b "$base" '{items: [range(1; 4) | {product_sku: "BENCH-\($b + .)", quantity: 1}],
      customer_name: "Bench", customer_email: "bench@example.com", shipping_address: "1 Load Street"}')
    oha --no-tui --output-format json -z "${STEP_SECS}s" -q "$(echo "$rate / 10" | bc -l)" --latency-correction \
      -c 16 -m POST -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' -d "$body" \
      "$api/api/orders" >"$dir/$i.json" 2>/dev/null & oha_pids+=($!)
  done
  wait "${oha_pids[@]}"
  local deadline=$((SECONDS + 60))
  until [ "$(sql "SELECT count(*) FROM orders WHERE status = 'pending'")" = 0 ] || [ $SECONDS -ge $deadline ]; do sleep 0.2; done
  local placed cpu="" total=0 used
  placed=$(( $(sql "SELECT count(*) FROM orders") - before ))
  for c in "${processes[@]}"; do
    used=$(echo "($(cpu_seconds "$c") - ${start[$c]}) * 1000 / ($placed + 0.000001)" | bc -l)
    total=$(echo "$total + $used" | bc -l)
    cpu+=$(printf ' %s %.2f,' "$c" "$used")
  done
  local created refused p50 p99 confirmed pending
  created=$(jq -s '[.[].statusCodeDistribution["201"] // 0] | add' "$dir"/*.json)
  refused=$(jq -s '[.[].statusCodeDistribution | to_entries[] | select(.key != "201") | .value] | add // 0' "$dir"/*.json)
  p50=$(jq -s '[.[].latencyPercentiles.p50 * 1000] | sort | .[length / 2 | floor]' "$dir"/*.json)
  p99=$(jq -s '[.[].latencyPercentiles.p99 * 1000] | max' "$dir"/*.json)
  confirmed=$(confirmed_latency "$since")
  pending=$(sql "SELECT count(*) FROM orders WHERE status = 'pending'")
  printf '| %s | %s | %s created, %s refused, %s still pending | %.1f / %.1f ms | %s / %s ms | %.2f ms:%s |\n' \
    "$rate" "$spread" "$created" "$refused" "$pending" "$p50" "$p99" "${confirmed%|*}" "${confirmed#*|}" "$total" "${cpu%,}"
  rm -rf "$dir"
}
if [ "${1:-}" = --smoke ]; then OHA_RATES=(100); else read -ra OHA_RATES <<<"${OHA_RATES:-250 400 500 750 1000}"; fi
start_workers 2
echo "| orders/s | products | orders | POST p50 / p99 | created -> confirmed p50 / p99 | CPU per order (all: each process) |"
echo "|---|---|---|---|---|---|"
for spread in ${OHA_PRODUCTS:-spread hot}; do
  for rate in "${OHA_RATES[@]}"; do oha_step "$rate" "$spread"; done
done
stop_workers

fi

if want 3; then
echo "== 3. draining a backlog: 1 worker vs 2 workers, alternated"
drain() {
  wrk -t2 -c16 -d"${BACKLOG_SECS}s" -s bench/place_order.lua $api >/dev/null
  local backlog; backlog=$(sql "SELECT count(*) FROM orders WHERE status = 'pending'")
  local started; started=$(date +%s.%N)
  start_workers "$1"
  until [ "$(sql "SELECT count(*) FROM orders WHERE status = 'pending'")" = 0 ]; do sleep 0.05; done
  local rate; rate=$(echo "$backlog / ($(date +%s.%N) - $started)" | bc -l)
  stop_workers
  printf '%d worker(s): %d orders in backlog, %.0f orders/s\n' "$1" "$backlog" "$rate" >&2
  echo "$rate"
}
compare() {
  local one=() two=()
  for _ in 1 2 3; do one+=("$(drain 1)"); two+=("$(drain 2)"); done
  local m1 m2; m1=$(median "${one[@]}"); m2=$(median "${two[@]}")
  printf '%s: median drain 1 worker %.0f orders/s, 2 workers %.0f orders/s, ratio %.2f\n' \
    "$1" "$m1" "$m2" "$(echo "$m2 / $m1" | bc -l)"
}
PRODUCTS=20 compare "orders over 20 products"
PRODUCTS=1 compare "every order for one product"

fi

if want 4; then
echo "== 4. GET /api/orders/my (page of 20 with lines) for a customer with $READER_ORDERS orders: api (wrk -c32) vs pgbench (-c32), alternated"
sql "INSERT INTO users (id, email, username, full_name, password_hash, role)
     SELECT gen_random_uuid(), 'reader@bench.test', 'reader', 'Reader', password_hash, 'customer' FROM users WHERE username = 'buyer'"
reader=$(sql "SELECT id FROM users WHERE username = 'reader'")
sql "WITH o AS (
       INSERT INTO orders (id, customer_id, status, projected_status, currency, total_amount_minor, items_count,
                           customer_name, customer_email, shipping_address, applied_seq, last_seq, created_at)
       SELECT gen_random_uuid(), '$reader', 'confirmed', 'confirmed', 'USD', 300, 3, 'Reader', 'reader@bench.test',
              '1 Read Street', 1, 1, now() - make_interval(secs => g)
       FROM generate_series(1, $READER_ORDERS) g RETURNING id)
     INSERT INTO order_items (id, order_id, product_id, product_name, product_sku, quantity, unit_price_minor, total_price_minor)
     SELECT gen_random_uuid(), o.id, p.id, p.name, p.sku, 1, 100, 100
     FROM o CROSS JOIN (SELECT * FROM products WHERE sku IN ('BENCH-1', 'BENCH-2', 'BENCH-3')) p"
sql "VACUUM ANALYZE orders" ; sql "VACUUM ANALYZE order_items"
sql "COPY (SELECT * FROM users WHERE username = 'reader') TO STDOUT" | psql -q "$PGBENCH_URL" -c "COPY users FROM STDIN"
sql "COPY (SELECT * FROM orders WHERE customer_id = '$reader') TO STDOUT" | psql -q "$PGBENCH_URL" -c "COPY orders FROM STDIN"
sql "COPY (SELECT i.* FROM order_items i JOIN orders o ON o.id = i.order_id WHERE o.customer_id = '$reader') TO STDOUT" \
  | psql -q "$PGBENCH_URL" -c "COPY order_items FROM STDIN"
psql -qAt "$PGBENCH_URL" -c "VACUUM ANALYZE orders" -c "VACUUM ANALYZE order_items"
page_ids=$(sql "SELECT '{' || string_agg(id::text, ',') || '}' FROM (SELECT id FROM orders WHERE customer_id = '$reader' ORDER BY created_at DESC, id DESC LIMIT 20) t")
export TOKEN=$(login reader bench-buyer-password)
api_rates=() pg_rates=() oha_rates=()
for round in 1 2 3; do
  out=$(wrk -t2 -c32 -d"${ROUND_SECS}s" -s bench/list_my_orders.lua $api)
  api_rates+=("$(echo "$out" | awk '/requests\/s/ {print $2}')")
  [ "$round" = 2 ] && wrk_out=$out
  pg_rates+=("$(pgbench -n -M prepared -c32 -j2 -T"$ROUND_SECS" -f bench/list_my_orders.sql \
    -D customer="$reader" -D page_ids="$page_ids" "$PGBENCH_URL" 2>/dev/null | awk '/^tps/ {printf "%.0f", $3}')")
  # The same request from oha (closed loop, 32 connections), the client the targets name.
  oha_rates+=("$(oha --no-tui --output-format json -z "${ROUND_SECS}s" -c 32 -H "authorization: Bearer $TOKEN" \
    "$api/api/orders/my?size=20" 2>/dev/null | jq '.summary.requestsPerSec | floor')")
  echo "round $round: api ${api_rates[-1]} requests/s (oha ${oha_rates[-1]}), pgbench ${pg_rates[-1]} tps"
done
m_api=$(median "${api_rates[@]}") m_pg=$(median "${pg_rates[@]}")
printf 'list my orders: api %.0f requests/s (oha %.0f), pgbench same SQL %.0f tps, ratio %.2f\n' \
  "$m_api" "$(median "${oha_rates[@]}")" "$m_pg" "$(echo "$m_api / $m_pg" | bc -l)"
echo "$wrk_out" | grep -E "latency p|errors"

fi

echo "== 5. metrics scraped after the benchmark"
echo "-- api (all runs):"
curl -fs $api/metrics | summarize_metrics
echo "-- worker 1 of run 1:"
echo "${worker_scrape:-}" | summarize_metrics
echo "peak resident memory: api $(awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/$api_pid/status") at the end, worker 1 of run 1 ${worker_peak:-not run}"
