#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests, under target/pg-test/ (or $CARGO_TARGET_DIR/pg-test/).
#
#   scripts/pg-test.sh start   initialise (once) and start the cluster; print its URL
#   scripts/pg-test.sh url     print the URL of the running cluster (exit 1 if it is not running)
#   scripts/pg-test.sh stop    stop it (the data stays; `rm -rf target/pg-test` forgets it)
#
# The URL (postgres://postgres@127.0.0.1:<port>/hyok_test) names a superuser with trust auth on
# loopback only: tests create one database per test through it. Idempotent and safe to run from
# several processes at once (flock). As root, initdb/pg_ctl run as the `postgres` user (initdb
# refuses root). Durability is off (fsync=off): this cluster holds nothing worth keeping.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
# Commands run as `postgres` must not inherit a working directory it cannot enter.
cd /
base="$target_dir/pg-test"
# As root, initdb and the server run as `postgres`, which must reach the data directory. When
# the checkout lives where it cannot (e.g. under /root), the cluster goes to /tmp instead and
# target/pg-test becomes a link to it, so the same paths work for the tests.
if [ "$(id -u)" -eq 0 ] && id postgres >/dev/null 2>&1 && [ ! -L "$base" ] \
  && ! runuser -u postgres -- test -x "$target_dir" 2>/dev/null; then
  mkdir -p "$target_dir"
  real="/tmp/hyok-pg-test-$(printf '%s' "$target_dir" | sha256sum | cut -c1-12)"
  mkdir -p "$real"
  chown postgres: "$real"
  chmod 700 "$real"
  [ -e "$base" ] && rm -rf "$base"
  ln -s "$real" "$base"
fi
if [ -L "$base" ]; then
  base="$(readlink -f "$base")"
fi
data="$base/data"
sock="$base/sock"
log="$base/postgres.log"
port_file="$base/port"
database="hyok_test"

find_bindir() {
  if [ -n "${PG_BINDIR:-}" ]; then echo "$PG_BINDIR"; return; fi
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return; fi
  dir="$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")"
  if [ -x "$dir/initdb" ]; then echo "$dir"; return; fi
  echo "pg-test: PostgreSQL server binaries not found (install postgresql: scripts/deps.sh)" >&2
  exit 1
}

bindir="$(find_bindir)"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  as_pg=(runuser -u postgres --)
fi

url_for() { echo "postgres://postgres@127.0.0.1:$1/$database"; }

running() { [ -f "$data/postmaster.pid" ] && "${as_pg[@]}" "$bindir/pg_ctl" status -D "$data" >/dev/null 2>&1; }

# The port of the running server: line 4 of postmaster.pid.
running_port() { sed -n 4p "$data/postmaster.pid"; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pick_port() {
  local preferred="${1:-}" port
  if [ -n "$preferred" ] && port_free "$preferred"; then echo "$preferred"; return; fi
  for _ in $(seq 1 200); do
    port=$((20000 + RANDOM % 30000))
    if port_free "$port"; then echo "$port"; return; fi
  done
  echo "pg-test: no free port found" >&2
  exit 1
}

psql_admin() {
  "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d postgres "${@:2}"
}

start() {
  mkdir -p "$base"
  if [ "${#as_pg[@]}" -gt 0 ]; then
    chown postgres: "$base"
    if ! "${as_pg[@]}" test -w "$base"; then
      echo "pg-test: the postgres user cannot reach $base (a parent directory is not" \
        "traversable); set CARGO_TARGET_DIR to a path it can reach" >&2
      exit 1
    fi
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    rm -rf "$data"
    "${as_pg[@]}" "$bindir/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 \
      --no-locale >"$base/initdb.log" 2>&1 || {
      cat "$base/initdb.log" >&2
      echo "pg-test: initdb failed" >&2
      exit 1
    }
  fi
  mkdir -p "$sock"
  if [ "${#as_pg[@]}" -gt 0 ]; then chown postgres: "$sock"; fi
  local port
  if running; then
    port="$(running_port)"
  else
    local attempt
    for attempt in 1 2 3; do
      port="$(pick_port "$(cat "$port_file" 2>/dev/null || true)")"
      local options="-c listen_addresses=127.0.0.1 -c port=$port"
      options+=" -c unix_socket_directories=$sock -c fsync=off -c synchronous_commit=off"
      options+=" -c full_page_writes=off -c max_connections=300 -c shared_buffers=64MB"
      # 9>&-: the server must not inherit (and hold forever) the lock.
      if "${as_pg[@]}" "$bindir/pg_ctl" start -D "$data" -l "$log" -w -t 60 -o "$options" 9>&- \
        >/dev/null; then
        echo "$port" >"$port_file"
        break
      fi
      echo "pg-test: start on port $port failed (attempt $attempt), see $log" >&2
      [ "$attempt" -lt 3 ] || { tail -n 20 "$log" >&2 || true; exit 1; }
    done
  fi
  if ! psql_admin "$port" -tAc "SELECT 1 FROM pg_database WHERE datname = '$database'" | grep -q 1; then
    psql_admin "$port" -c "CREATE DATABASE $database"
  fi
  url_for "$port"
}

stop() {
  if running; then
    "${as_pg[@]}" "$bindir/pg_ctl" stop -D "$data" -m fast -w >/dev/null
  fi
}

url() {
  if running; then
    url_for "$(running_port)"
  else
    echo "pg-test: not running (run: scripts/pg-test.sh start)" >&2
    exit 1
  fi
}

cmd="${1:-}"
case "$cmd" in
  start | stop | url) ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac

mkdir -p "$base"
exec 9>"$base/lock"
flock 9
"$cmd"
