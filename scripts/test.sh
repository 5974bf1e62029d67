#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, start a throwaway
# PostgreSQL cluster, and run the whole suite against both SQLite and PostgreSQL.
# The README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# --- system packages: PostgreSQL server, Chromium for the browser tests -------------------
need_apt=""
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt="$need_apt postgresql"
[ -x /usr/bin/chromium ] || need_apt="$need_apt chromium"
if [ -n "$need_apt" ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need_apt >/dev/null
fi

# --- Python packages (torch and torchvision pinned together in the extra) ------------------
python3 -m pip install -q -e ".[sampler,test]"

# --- throwaway PostgreSQL cluster ---------------------------------------------------------
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
PGDIR=$(mktemp -d /tmp/sfgeval-pg.XXXXXX)
PGPORT=${SFGEVAL_TEST_PGPORT:-55432}
if [ "$(id -u)" = 0 ]; then
  chown postgres:postgres "$PGDIR"
  as_pg() { su postgres -s /bin/bash -c "$*"; }
  PGUSER_NAME=postgres
else
  as_pg() { bash -c "$*"; }
  PGUSER_NAME=$(id -un)
fi
as_pg "$PGBIN/initdb -D $PGDIR/data -A trust -U $PGUSER_NAME >/dev/null"
as_pg "$PGBIN/pg_ctl -D $PGDIR/data -l $PGDIR/log -w -o \"-k $PGDIR -p $PGPORT -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off\" start >/dev/null"
stop_pg() { as_pg "$PGBIN/pg_ctl -D $PGDIR/data -m immediate stop >/dev/null 2>&1" || true; rm -rf "$PGDIR"; }
trap stop_pg EXIT
as_pg "$PGBIN/createdb -h 127.0.0.1 -p $PGPORT -U $PGUSER_NAME sfgeval_test"
export SFGEVAL_TEST_POSTGRES_URL="postgresql+psycopg://$PGUSER_NAME@127.0.0.1:$PGPORT/sfgeval_test"
export SFGEVAL_REQUIRE_POSTGRES=1 SFGEVAL_REQUIRE_BROWSER=1

python3 -m pytest "$@"
