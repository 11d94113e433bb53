#!/bin/sh
# PostgreSQL first-start script (the postgres image runs /docker-entrypoint-initdb.d/*.sh once,
# when the data volume is empty): the API's own role, which owns nothing.
#
# The tables belong to $POSTGRES_USER, which runs the migrations (api-1, through
# XINBAO_OWNER_DATABASE_URL). The API processes connect as $POSTGRES_API_USER, which the
# migrations grant rows-only rights (cloud_api/core/db.py): no DDL, so it cannot disable or drop
# the audit triggers, and no UPDATE, DELETE or TRUNCATE of the audit trail (docs/deploy.md,
# "Database roles"). A database created before this script existed needs the role made by
# hand, once (the same statement).
set -eu

api_user=${POSTGRES_API_USER:-xinbao_api}
[ -n "${POSTGRES_API_PASSWORD:-}" ] || { echo "init-api-role: POSTGRES_API_PASSWORD is not set" >&2; exit 2; }

# The name and password go in as psql variables (:"name", :'password'), quoted by psql.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v api_user="$api_user" -v api_password="$POSTGRES_API_PASSWORD" -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"api_user" LOGIN PASSWORD :'api_password' NOSUPERUSER NOCREATEDB NOCREATEROLE;
GRANT CONNECT ON DATABASE :"db" TO :"api_user";
SQL
