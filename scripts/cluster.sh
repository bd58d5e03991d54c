#!/usr/bin/env bash
# A local three-node RabbitMQ cluster beside the machine's own broker, for trying Orderflow
# on a cluster and for its cluster fault suite (scripts/cluster-test.sh). Nodes are named
# orderflow-c1..c3@localhost, listen on free loopback ports and keep their data under
# $CLUSTER_DIR (default /tmp/orderflow-cluster). Needs Debian's rabbitmq-server, run as root.
#
#   scripts/cluster.sh start          start and join the three nodes; prints AMQP_URL
#   scripts/cluster.sh stop           stop every node and remove their data
#   scripts/cluster.sh url            AMQP_URL listing every node
#   scripts/cluster.sh kill N         kill -9 node N's Erlang VM (N = 1, 2 or 3)
#   scripts/cluster.sh stop-node N    stop node N gracefully
#   scripts/cluster.sh start-node N   start node N again (it rejoins the cluster)
#   scripts/cluster.sh freeze N       SIGSTOP node N's VM: it holds connections but answers nothing
#   scripts/cluster.sh thaw N         SIGCONT it
#   scripts/cluster.sh leader QUEUE   the number of the node leading quorum queue QUEUE
#   scripts/cluster.sh connections N  the names of the client connections node N holds
set -euo pipefail
dir="${CLUSTER_DIR:-/tmp/orderflow-cluster}"
nodes=(1 2 3)

name() { echo "orderflow-c$1@localhost"; }
port() { cat "$dir/c$1/port"; }
pid() { cat "$dir/c$1/pid" 2>/dev/null || true; }
ctl() { rabbitmqctl -q -n "$(name "$1")" "${@:2}"; }

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A port free for AMQP whose distribution port (+20000) is free too.
free_port() {
  local candidate=$(( 5800 + RANDOM % 2000 ))
  while listening "$candidate" || listening $(( candidate + 20000 )) \
    || grep -qx "$candidate" "$dir"/c*/port 2>/dev/null; do
    candidate=$(( candidate + 1 ))
  done
  echo "$candidate"
}

# Starts node $1 in the background with its own name, ports, config and directories (the
# machine's /etc/rabbitmq files would put every node on 5672).
start_node() {
  local node="$dir/c$1" amqp
  amqp="$(port "$1")"
  RABBITMQ_NODENAME="$(name "$1")" \
  RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
  RABBITMQ_NODE_PORT="$amqp" \
  RABBITMQ_DIST_PORT=$(( amqp + 20000 )) \
  RABBITMQ_CONFIG_FILE="$node/rabbitmq.conf" \
  RABBITMQ_CONF_ENV_FILE="$node/rabbitmq-env.conf" \
  RABBITMQ_ENABLED_PLUGINS_FILE="$node/enabled_plugins" \
  RABBITMQ_MNESIA_BASE="$node/mnesia" \
  RABBITMQ_LOG_BASE="$node/log" \
  RABBITMQ_PID_FILE="$node/pid" \
    rabbitmq-server -detached >/dev/null 2>&1
  for _ in $(seq 1 120); do
    listening "$amqp" && return 0
    sleep 0.5
  done
  echo "node $(name "$1") did not listen on 127.0.0.1:$amqp; see $node/log" >&2
  return 1
}

url() {
  local urls=()
  for n in "${nodes[@]}"; do urls+=("amqp://guest:guest@127.0.0.1:$(port "$n")/%2f"); done
  (IFS=,; echo "${urls[*]}")
}

start() {
  [ "$(id -u)" = 0 ] || { echo "run as root: the nodes run as the rabbitmq user" >&2; exit 1; }
  command -v rabbitmq-server >/dev/null || {
    echo "rabbitmq-server is missing: apt-get install rabbitmq-server" >&2; exit 1; }
  stop
  for n in "${nodes[@]}"; do
    local node="$dir/c$n"
    mkdir -p "$node/mnesia" "$node/log"
    free_port > "$node/port"
    printf 'listeners.tcp.local = 127.0.0.1:%s\ncluster_partition_handling = pause_minority\n' \
      "$(port "$n")" > "$node/rabbitmq.conf"
    : > "$node/rabbitmq-env.conf"
    echo '[].' > "$node/enabled_plugins"
  done
  chown -R rabbitmq:rabbitmq "$dir"
  local starting=()
  for n in "${nodes[@]}"; do start_node "$n" & starting+=("$!"); done
  for started in "${starting[@]}"; do wait "$started"; done
  for n in 2 3; do
    ctl "$n" stop_app
    ctl "$n" join_cluster "$(name 1)"
    ctl "$n" start_app
  done
  url
}

stop() {
  for n in "${nodes[@]}"; do
    [ -f "$dir/c$n/port" ] || continue
    thaw "$n"
    timeout 30 rabbitmqctl -q -n "$(name "$n")" stop >/dev/null 2>&1 || true
    local vm; vm="$(pid "$n")"
    [ -n "$vm" ] && kill -9 "$vm" 2>/dev/null || true
  done
  rm -rf "$dir"
}

kill_node() {
  kill -9 "$(pid "$1")"
  while listening "$(port "$1")"; do sleep 0.1; done
}

thaw() { local vm; vm="$(pid "$1")"; [ -z "$vm" ] || kill -CONT "$vm" 2>/dev/null || true; }

leader() {
  for n in "${nodes[@]}"; do
    local found
    found="$(ctl "$n" list_queues name leader 2>/dev/null | awk -v q="$1" '$1 == q { print $2 }')" || continue
    [ -n "$found" ] || continue
    echo "${found#orderflow-c}" | cut -d@ -f1
    return 0
  done
  echo "no node answers for queue $1" >&2
  return 1
}

connections() {
  local listed
  listed="$(ctl "$1" list_connections pid client_properties)"
  grep "^<$(name "$1")\." <<<"$listed" | sed -n 's/.*{"connection_name","\([^"]*\)"}.*/\1/p' || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) url ;;
  kill) kill_node "$2" ;;
  stop-node) ctl "$2" stop ;;
  start-node) start_node "$2" ;;
  freeze) kill -STOP "$(pid "$2")" ;;
  thaw) thaw "$2" ;;
  leader) leader "$2" ;;
  connections) connections "$2" ;;
  *) sed -n '2,17p' "$0" >&2; exit 2 ;;
esac
