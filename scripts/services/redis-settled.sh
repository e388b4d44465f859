#!/usr/bin/env bash
# Waits until the redis-server on 127.0.0.1:REDIS_PORT has been up for SECONDS (default 11). RedisLocker takes no
# lock from a server up for less than its ttl + 1 s (10 s by default): one that just started may have restarted
# and lost the keys of locks still held.
# Usage: REDIS_PORT=6390 redis-settled.sh [SECONDS]
set -euo pipefail
SECONDS_UP=${1:-11}
REDIS_PORT=${REDIS_PORT:-6390}
for _ in $(seq 1 $((SECONDS_UP * 20 + 100))); do
  uptime=$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info server 2>/dev/null | tr -d '\r' | sed -n 's/^uptime_in_seconds://p')
  [ -n "$uptime" ] && [ "$uptime" -ge "$SECONDS_UP" ] && exit 0
  sleep 0.1
done
echo "redis-settled: redis-server on port $REDIS_PORT was not up for $SECONDS_UP s" >&2
exit 1
