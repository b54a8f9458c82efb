#!/usr/bin/env bash
# Starts a throwaway PostgreSQL for the metadata tests and exports
# GEORELAY_TEST_PG_DSN. Meant to be sourced: `. .ci/postgres.sh`.
#
# - Installs Debian's `postgresql` package when no server binaries exist.
# - Runs one server on 127.0.0.1 only (no Unix socket outside the data dir),
#   in a data directory under ${TMPDIR:-/tmp}, as the `postgres` user when
#   run as root and as the current user otherwise; trust authentication is
#   safe because only loopback clients can reach it.
# - Idempotent: a server already answering on the port is reused, and the
#   test database is created only if missing.
#
# Settings (environment): GEORELAY_PG_PORT (default 54329),
# GEORELAY_PG_DATA (default ${TMPDIR:-/tmp}/georelay-pg-data),
# GEORELAY_PG_DB (default georelay_test).

georelay_pg_start() {
    local port="${GEORELAY_PG_PORT:-54329}"
    local data="${GEORELAY_PG_DATA:-${TMPDIR:-/tmp}/georelay-pg-data}"
    local db="${GEORELAY_PG_DB:-georelay_test}"
    local bindir

    bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "postgres.sh: PostgreSQL is not installed and installing needs root" >&2
            return 1
        fi
        echo "postgres.sh: installing Debian's postgresql package" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || return 1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2 || return 1
        bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    fi

    # Run server commands as `postgres` when root (initdb refuses root).
    local -a as_owner=()
    if [ "$(id -u)" -eq 0 ]; then
        as_owner=(runuser -u postgres --)
    fi

    if ! "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port"; then
        if [ ! -f "$data/PG_VERSION" ]; then
            mkdir -p "$data" || return 1
            if [ "$(id -u)" -eq 0 ]; then
                chown postgres:postgres "$data" || return 1
            fi
            chmod 700 "$data"
            "${as_owner[@]}" "$bindir/initdb" -D "$data" -U postgres --auth=trust \
                --encoding=UTF8 --locale=C.UTF-8 >/dev/null || return 1
        fi
        "${as_owner[@]}" "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c fsync=off" start >/dev/null || {
            echo "postgres.sh: server did not start; see $data/server.log" >&2
            return 1
        }
    fi

    local exists
    exists="$("$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$db'")" || return 1
    if [ "$exists" != "1" ]; then
        "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres "$db" || return 1
    fi

    export GEORELAY_TEST_PG_DSN="host=127.0.0.1 port=$port user=postgres dbname=$db"
    echo "GEORELAY_TEST_PG_DSN=$GEORELAY_TEST_PG_DSN"
}

georelay_pg_start
