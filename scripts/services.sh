#!/usr/bin/env bash
# Start the local servers the test suite talks to (PostgreSQL, MariaDB, Redis) when they are down.
# Safe to run repeatedly; a server that is already up is left alone.
set -u

up() { timeout 2 bash -c "echo > /dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_for() {
  for _ in $(seq 1 30); do up "$1" && return 0; sleep 0.5; done
  echo "services: $2 did not come up on 127.0.0.1:$1" >&2
  return 1
}

if ! up 5432 && command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start && wait_for 5432 PostgreSQL
fi
if ! up 6379 && command -v redis-server >/dev/null 2>&1; then
  echo "services: starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no && wait_for 6379 Redis
fi
if ! up 3306 && [ -x /usr/sbin/mariadbd ]; then
  echo "services: starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd && wait_for 3306 MariaDB
fi
exit 0
