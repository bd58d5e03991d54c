#!/usr/bin/env bash
# The cluster fault suite: starts a local three-node RabbitMQ cluster beside the machine's
# own broker (scripts/cluster.sh), runs the fault tests that kill, restart and freeze its
# nodes (api/tests/api/fault/cluster.rs) one at a time with AMQP_URL listing its three
# nodes, prints their table, and always stops the cluster. Arguments go to nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/orderflow}"
export CLUSTER_DIR="${CLUSTER_DIR:-/tmp/orderflow-cluster}"
scripts/services.sh
cargo build --quiet -p worker --bin worker

trap 'scripts/cluster.sh stop' EXIT
started=$(date +%s)
AMQP_URL="$(scripts/cluster.sh start)"
export AMQP_URL
echo "cluster up in $(( $(date +%s) - started )) s: $AMQP_URL"
report="$(mktemp)"
export CLUSTER_REPORT="$report"

status=0
cargo nextest run -p api --no-fail-fast --test-threads 1 --run-ignored only \
  -E 'test(/^fault::cluster::/)' "$@" || status=$?

# column (bsdextrautils) aligns the table; without it, tabs stay.
align() { if command -v column >/dev/null; then column -t -s $'\t'; else cat; fi; }
echo
{
  printf 'scenario\twork\tfaults\tredeliveries\tduplicates dropped\tapi republished (no confirm)\tlongest pause\trecovered after\ttotal\n'
  cat "$report"
} | align
rm -f "$report"
exit "$status"
