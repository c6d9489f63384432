#!/bin/sh
# Restores a dump made by backup.sh into a NEW database on the server that libpq's PG*
# variables name, all or nothing: the archive is checked first, the database is created from
# template0 (an existing one is never touched), and the dump is restored in one transaction
# that stops at the first error. On failure the new database is dropped again.
#
#   PGHOST=... postgres/restore.sh /backups/imagebot-20261204T030000.000Z.dump imagebot_restored
#
# Then check it: DATABASE_URL=<its URL> imagebot billing audit (docs/deployment.md).
set -eu

if [ $# -ne 2 ]; then
    echo "usage: $0 DUMP_FILE NEW_DATABASE" >&2
    exit 2
fi
dump=$1
target=$2

pg_restore --list "$dump" >/dev/null # a readable archive before anything is created
createdb --template=template0 "$target"
trap 'dropdb --if-exists "$target"' EXIT
# --no-owner: the restoring role owns everything, whatever the source's roles were.
pg_restore --dbname="$target" --no-owner --exit-on-error --single-transaction "$dump"
trap - EXIT
echo "restored $dump into $target"
