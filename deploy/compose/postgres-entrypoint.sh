#!/bin/bash
# First start: create the cluster with the password from POSTGRES_PASSWORD_FILE (a read-only
# secret), owner $POSTGRES_USER and database $POSTGRES_DB. Then run postgres in the foreground.
set -euo pipefail
: "${POSTGRES_USER:?}" "${POSTGRES_DB:?}" "${POSTGRES_PASSWORD_FILE:?}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb --username="$POSTGRES_USER" --pwfile="$POSTGRES_PASSWORD_FILE" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  postgres -c listen_addresses='' &
  pid=$!
  until pg_isready -q -h /var/run/postgresql; do sleep 0.2; done
  createdb -h /var/run/postgresql -U "$POSTGRES_USER" "$POSTGRES_DB"
  kill -INT "$pid"; wait "$pid" || true
fi
exec postgres -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql
