#!/usr/bin/env bash
# Runs a command with the services the S3 and Redis suites use: a throwaway redis-server and a one-node Ceph
# radosgw on free 127.0.0.1 ports, under a fresh temporary directory, stopped again when the command ends.
# Exports TUS_TEST_REDIS_URL and TUS_TEST_S3_ENDPOINT / _ACCESS_KEY / _SECRET_KEY for the command.
# Usage: bash scripts/services/run.sh npx tap test/s3-store.test.ts
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
missing=()
for command in redis-server redis-cli ceph-mon ceph-osd radosgw radosgw-admin curl; do
  command -v "$command" >/dev/null || missing+=("$command")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "fastify-tus: ${missing[*]} not found, so the Redis and S3 tests will fail. Install them (Debian 12, as root):" >&2
  echo "  apt-get install --no-install-recommends ceph-mon ceph-osd radosgw redis-server curl" >&2
  echo "or run 'bash scripts/system-deps.sh' as root." >&2
  exec "$@"
fi

free_port() { node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"; }
root=$(mktemp -d "${TMPDIR:-/tmp}/fastify-tus-services.XXXXXX")
stop() {
  bash "$here/redis-down.sh" "$root/redis"
  bash "$here/ceph-down.sh" "$root/ceph"
  rm -rf "$root"
}
trap stop EXIT

# A service that fails to start leaves its variables unset: the other suites still run, and the suites that
# need it fail saying so.
redis_port=$(free_port)
if REDIS_PORT=$redis_port bash "$here/redis-up.sh" "$root/redis"; then
  export TUS_TEST_REDIS_URL="redis://127.0.0.1:$redis_port"
  echo "fastify-tus: redis-server at $TUS_TEST_REDIS_URL"
fi
# Ceph's daemons occasionally fail to start on a loaded machine (the OSD exits at once): try five times.
ceph_up() {
  for attempt in 1 2 3 4 5; do
    rgw_port=$(free_port)
    if RGW_PORT=$rgw_port MON_PORT=$(free_port) ACCESS_KEY=testaccesskey SECRET_KEY=testsecretkey \
      bash "$here/ceph-up.sh" "$root/ceph"; then
      return 0
    fi
    echo "fastify-tus: Ceph did not start (attempt $attempt)" >&2
    bash "$here/ceph-down.sh" "$root/ceph"
    rm -rf "$root/ceph"
  done
  return 1
}
if ceph_up; then
  export TUS_TEST_S3_ENDPOINT="http://127.0.0.1:$rgw_port"
  export TUS_TEST_S3_ACCESS_KEY=testaccesskey
  export TUS_TEST_S3_SECRET_KEY=testsecretkey
  echo "fastify-tus: S3 (Ceph radosgw) at $TUS_TEST_S3_ENDPOINT"
fi
# RedisLocker (default ttl) takes no lock from a redis-server that has been up for less than 11 s: wait for it
# here, once, after Ceph's start has taken its share of that time.
if [ -n "${TUS_TEST_REDIS_URL:-}" ]; then
  REDIS_PORT=$redis_port bash "$here/redis-settled.sh" 11
fi
set +e
"$@"
status=$?
set -e
exit "$status"
