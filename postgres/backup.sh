#!/bin/sh
# One backup of the database that libpq's PG* variables name (PGHOST, PGPORT, PGUSER,
# PGPASSWORD, PGDATABASE): `pg_dump --format=custom`, one consistent snapshot of every table,
# then read back in full with pg_restore. Only a dump that was written and read completely is
# renamed to BACKUP_DIR/<database>-<UTC time>.dump; then all but the newest BACKUP_KEEP of them
# are deleted. Prints the new file's path. Exits non-zero, deleting nothing, on any failure.
#
#   PGHOST=... PGDATABASE=imagebot BACKUP_DIR=/backups BACKUP_KEEP=48 postgres/backup.sh
#
# compose.yaml's `backup` service runs it every BACKUP_INTERVAL_S; docs/deployment.md,
# "Backups and restore". Use pg_dump of the server's major version or newer.
set -eu

dir=${BACKUP_DIR:-/backups}
keep=${BACKUP_KEEP:-48}
database=${PGDATABASE:?PGDATABASE names the database to back up}
case $keep in
    '' | *[!0-9]* | 0) echo "BACKUP_KEEP must be a positive integer, not '$keep'" >&2; exit 2 ;;
esac

umask 077 # the dumps hold personal data and payments
mkdir -p "$dir"
name="$database-$(date -u +%Y%m%dT%H%M%S.%3NZ).dump"
partial="$dir/.$name.partial"
trap 'rm -f "$partial"' EXIT

pg_dump --format=custom --file="$partial"
pg_restore --file=/dev/null "$partial" # every table's data read back to the end
mv "$partial" "$dir/$name"

# Retention counts complete dumps only; the names sort by time.
find "$dir" -maxdepth 1 -type f -name "$database-*.dump" | sort -r | tail -n "+$((keep + 1))" |
    while IFS= read -r old; do rm -f "$old"; done
echo "$dir/$name"
