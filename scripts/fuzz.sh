#!/usr/bin/env bash
# Fuzzes the HTTP contract with schemathesis: starts a release api and worker on a fresh
# database, signs in as admin, vendor and customer, and runs schemathesis over
# /openapi.json as each of them, bounded in examples and time. Fails on any server error,
# undocumented status, content type, header or response body that does not match the
# document, and on invalid input accepted, auth ignored, or a resource that is gone, missing
# or another user's served. Loopback only; cleans up after itself.
#
# FUZZ_EXAMPLES (default 20) cases per operation and mode, FUZZ_SECONDS (default 50) per
# role; FUZZ_CHECKS replaces the checks (e.g. positive_data_acceptance, to see where the
# handlers are stricter than the document).
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/orderflow}"
scripts/services.sh

venv="${FUZZ_VENV:-target/fuzz-venv}"
if [ ! -x "$venv/bin/st" ]; then
  echo "installing schemathesis into $venv..."
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4.32,<5'
fi
cargo build --quiet --release -p api -p worker --bins

run="fuzz_$$"
server_url="${DATABASE_URL%/*}"
export DATABASE_URL="$server_url/$run"
psql "$server_url/postgres" -qc "CREATE DATABASE \"$run\""
port="${FUZZ_PORT:-8097}"
base="http://127.0.0.1:$port"
# Webhook endpoints the fuzzer registers must not make the worker reach out: with no public
# targets and nothing listed, every URL is refused (422) and nothing is ever sent.
export HOST=127.0.0.1 PORT="$port" LOG_DIR="" RUST_LOG=warn ENVIRONMENT=development \
  AMQP_EXCHANGE="$run" AMQP_QUEUE="$run.orders" \
  LOGIN_MAX_FAILURES=1000000 LOGIN_PER_IP_PER_MINUTE=1000000 REGISTER_PER_IP_PER_HOUR=1000000 \
  WEBHOOK_PUBLIC_TARGETS=false WEBHOOK_ALLOWED_HOSTS=
pids=()
cleanup() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  psql "$server_url/postgres" -qc "DROP DATABASE IF EXISTS \"$run\" WITH (FORCE)" || true
  rabbitmqctl -q list_queues name 2>/dev/null | grep "^$run\.orders" \
    | while read -r queue; do rabbitmqctl -q delete_queue "$queue" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
./target/release/api migrate >/dev/null
./target/release/api & pids+=($!)
METRICS_ADDR=127.0.0.1:0 ./target/release/worker & pids+=($!)
for _ in $(seq 1 60); do curl -fsS "$base/health" >/dev/null 2>&1 && break; sleep 0.5; done

password='fuzzing-passphrase-1'
ADMIN_PASSWORD="$password" ./target/release/api create-user --role admin \
  --email admin@fuzz.example --username admin >/dev/null
post() { curl -fsS "$base$1" -H 'content-type: application/json' "${@:3}" -d "$2"; }
token_of() {
  post /api/auth/login "{\"username\":\"$1\",\"password\":\"$password\"}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
admin=$(token_of admin)
for name in vendor customer; do
  post /api/auth/register "{\"email\":\"$name@fuzz.example\",\"username\":\"$name\",\"password\":\"$password\"}" >/dev/null
done
vendor_id=$(curl -fsS "$base/api/users/search?q=vendor" -H "authorization: Bearer $admin" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
curl -fsS -X PUT "$base/api/users/$vendor_id" -H "authorization: Bearer $admin" \
  -H 'content-type: application/json' -d '{"role":"vendor"}' >/dev/null
vendor=$(token_of vendor)
customer=$(token_of customer)
# The SKU the document's order example names, so example orders are accepted.
post /api/products '{"sku":"MUG-1","name":"Mug","price":"12.50","stock":100000}' \
  -H "authorization: Bearer $vendor" >/dev/null

# Beside conformance: invalid input is refused (negative_data_rejection), a request without
# or with a broken token is refused (ignored_auth), a deleted resource stays gone
# (use_after_free), a created one can be read back (ensure_resource_availability), and one
# user's resource is not another's (object_level_authorization).
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
checks+=,response_headers_conformance,negative_data_rejection,ignored_auth,use_after_free
checks+=,ensure_resource_availability,object_level_authorization
status=0
# Admin last: its run may deactivate or re-role the other two accounts.
for role in customer vendor admin; do
  echo "== schemathesis as $role"
  # logout-all would end the token this run signs its requests with; its tests cover it.
  # A live stream never ends by design, so a request for one would wait out the run; the
  # access matrix and the live tests cover its answers.
  "$venv/bin/st" run "$base/openapi.json" \
    --header "Authorization: Bearer ${!role}" \
    --checks "${FUZZ_CHECKS:-$checks}" \
    --exclude-path /api/auth/logout-all \
    --exclude-path /api/orders/stream --exclude-path '/api/orders/{id}/stream' \
    --max-examples "${FUZZ_EXAMPLES:-20}" --max-time "${FUZZ_SECONDS:-50}" \
    --generation-database none --no-color --seed 20261125 \
    || status=$?
done
exit "$status"
