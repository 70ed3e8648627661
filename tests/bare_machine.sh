#!/usr/bin/env bash
# Run a command on this (Debian) machine as if Debian's PostgreSQL, postgresql-client, iproute2
# and procps' pgrep were not installed and no `postgres` user existed: a private mount namespace
# (root, util-linux `unshare`) lays an empty tmpfs over PostgreSQL's folders, /dev/null over those
# programs, and a copy of /etc without that user over /etc. Nothing outside the namespace changes.
# It checks that `ip` fails and that `id postgres` fails before it runs anything.
#   bash tests/bare_machine.sh bash -c 'uv run pytest && uv run pytest -m alone -n 0'
set -euo pipefail
etc=$(mktemp -d)
trap 'rm -rf "$etc"' EXIT
unshare -m --propagation private bash -c '
set -euo pipefail
etc=$1; shift
for d in /usr/lib/postgresql /usr/share/postgresql-common; do
  [ -d "$d" ] && mount -t tmpfs tmpfs "$d"
done
for b in /usr/sbin/ip /sbin/ip /usr/bin/ip /usr/bin/psql /usr/bin/pgrep /usr/bin/pg_ctlcluster \
         /usr/bin/createdb /usr/bin/pg_isready; do
  [ -e "$b" ] && mount --bind /dev/null "$b"
done
cp -a /etc/. "$etc"
for f in passwd group shadow gshadow; do sed -i "/^postgres:/d" "$etc/$f"; done
mount --bind "$etc" /etc
if ip -V >/dev/null 2>&1; then echo "ip still runs" >&2; exit 3; fi
if id postgres >/dev/null 2>&1; then echo "the postgres user still exists" >&2; exit 3; fi
if [ -n "$(ls -A /usr/lib/postgresql 2>/dev/null)" ]; then echo "PostgreSQL still there" >&2; exit 3; fi
exec "$@"
' bare "$etc" "$@"
