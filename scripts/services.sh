#!/usr/bin/env bash
# Makes sure PostgreSQL and RabbitMQ answer on this machine, starting them when they are
# installed but down, and creates the database named in DATABASE_URL.
set -euo pipefail
database_url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/orderflow}"

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL..."
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  fi
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  pg_isready -q -h 127.0.0.1 -p 5432 || {
    echo "PostgreSQL is not answering on 127.0.0.1:5432: install and start it (or 'docker compose up -d postgres')" >&2
    exit 1
  }
fi

if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  if command -v rabbitmq-server >/dev/null; then
    echo "starting RabbitMQ..."
    rabbitmq-server -detached || true
  fi
  # `rabbitmqctl status` answers before the AMQP port listens: wait for the port itself.
  for _ in $(seq 1 60); do (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && break; sleep 1; done
  (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null || {
    echo "RabbitMQ is not answering on 127.0.0.1:5672: install and start it (or 'docker compose up -d rabbitmq')" >&2
    exit 1
  }
fi

database="${database_url##*/}"
database="${database%%\?*}"
server_url="${database_url%/*}/postgres"
if ! psql "$server_url" -tAc "SELECT 1 FROM pg_database WHERE datname = '$database'" | grep -q 1; then
  echo "creating database $database..."
  psql "$server_url" -qc "CREATE DATABASE \"$database\""
fi
