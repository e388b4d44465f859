#!/usr/bin/env bash
# Starts a throwaway redis-server on 127.0.0.1:REDIS_PORT (no persistence, files under DIR) and waits until it
# answers. Stop it with redis-down.sh DIR.
# Usage: REDIS_PORT=6390 redis-up.sh DIR
# Needs (Debian): apt-get install --no-install-recommends redis-server
set -euo pipefail
D=${1:?usage: redis-up.sh DIR}
REDIS_PORT=${REDIS_PORT:-6390}
rm -rf "$D"; mkdir -p "$D"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --protected-mode yes \
  --dir "$D" --logfile "$D/redis.log" --pidfile "$D/redis.pid" --daemonize yes
for i in $(seq 1 200); do
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && exit 0
  sleep 0.05
done
echo "redis-up: redis-server did not answer on port $REDIS_PORT; see $D/redis.log" >&2
exit 1
