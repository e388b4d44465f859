#!/usr/bin/env bash
# Stops the redis-server redis-up.sh started in DIR (by its pid file) and removes DIR.
# Usage: redis-down.sh DIR
D=${1:?usage: redis-down.sh DIR}
if [ -f "$D/redis.pid" ]; then
  pid=$(cat "$D/redis.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
fi
rm -rf "$D"
