# A throwaway PostgreSQL cluster for the tests (sourced by scripts/test.sh): `pg_start` installs Debian's
# postgresql when it is missing, starts a cluster in a temporary directory on 127.0.0.1 and a free port, and exports
# HKT_TEST_POSTGRES_URL (role hkt, password auth over TCP); `pg_stop` stops it and removes the directory.
# initdb refuses to run as root, so as root the cluster runs as Debian's `postgres` user.

pg_start() {
  local bin
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  if [ -z "$bin" ] && command -v apt-get >/dev/null; then
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get install -y postgresql >/dev/null 2>&1 || { $sudo apt-get update >/dev/null && $sudo apt-get install -y postgresql >/dev/null; } \
      || { echo "pg_start: cannot install Debian's postgresql package (apt-get install postgresql failed)" >&2; return 1; }
    bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  fi
  if [ -z "$bin" ]; then echo "pg_start: no PostgreSQL server binaries in /usr/lib/postgresql/*/bin" >&2; return 1; fi

  local as=()
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || { echo "pg_start: running as root, but there is no 'postgres' user to run the cluster" >&2; return 1; }
    as=(runuser -u postgres --)
  fi
  PG_DIR="$(mktemp -d /tmp/hkt-pg.XXXXXX)"
  [ "$(id -u)" -eq 0 ] && chown postgres "$PG_DIR"
  local port
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  "${as[@]}" "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 >"$PG_DIR/initdb.log" 2>&1 \
    || { echo "pg_start: initdb failed:" >&2; tail -5 "$PG_DIR/initdb.log" >&2; return 1; }
  "${as[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c max_connections=50 -c fsync=off" start >/dev/null \
    || { echo "pg_start: the server did not start:" >&2; tail -5 "$PG_DIR/server.log" >&2; return 1; }
  "${as[@]}" "$bin/psql" -h "$PG_DIR" -p "$port" -U postgres -q -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE hkt LOGIN PASSWORD 'hkt-test'" -c "CREATE DATABASE hkt OWNER hkt" >/dev/null \
    || { echo "pg_start: cannot create the test role and database" >&2; return 1; }
  PG_BIN="$bin"; PG_AS=("${as[@]}")
  export HKT_TEST_POSTGRES_URL="postgresql+psycopg://hkt:hkt-test@127.0.0.1:$port/hkt"
  echo "[test] PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($PG_DIR)"
}

pg_stop() {
  [ -n "${PG_DIR:-}" ] || return 0
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
  PG_DIR=""
}
