#!/usr/bin/env bash
# Makes sure the local PostgreSQL preloads pg_stat_statements, which the cost-budget test
# and the benchmark read to count the statements the order path runs. Loading it takes a
# restart of the server (the fault suite needs the same rights), done only when missing.
set -euo pipefail
server_url="${1:-postgres://postgres@127.0.0.1:5432/postgres}"
preloaded="$(psql "$server_url" -tAc "SHOW shared_preload_libraries")"
case ",${preloaded// /}," in *,pg_stat_statements,*) exit 0 ;; esac
echo "enabling pg_stat_statements in PostgreSQL (a restart)..."
psql "$server_url" -qc "ALTER SYSTEM SET shared_preload_libraries = '${preloaded:+$preloaded,}pg_stat_statements'"
if ! pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main restart; then
  echo "cannot restart PostgreSQL to load pg_stat_statements: add it to shared_preload_libraries and restart the server yourself" >&2
  exit 1
fi
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
