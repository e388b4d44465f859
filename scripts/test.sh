#!/usr/bin/env bash
# `npm test`: the whole suite. Installs the Debian packages it needs when run as root (CI, fresh machines),
# starts the services the suites use, type-checks, builds, runs every tap test, then a subset on Node.js 22 and 24.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/system-deps.sh

npm run typecheck
npm run build
set +e
# run.sh starts redis-server and Ceph radosgw for the Redis/S3 suites and stops them afterwards.
bash scripts/services/run.sh npx tap "$@" 2>&1 | tee .tap-output.log
status=${PIPESTATUS[0]}
set -e
# A plain closing line: "N passed, N failed".
summary=$(grep -Eo '# \{ total: [0-9]+, pass: [0-9]+' .tap-output.log | tail -1 || true)
if [ -n "$summary" ]; then
  total=$(sed -E 's/.*total: ([0-9]+).*/\1/' <<<"$summary")
  pass=$(sed -E 's/.*pass: ([0-9]+).*/\1/' <<<"$summary")
  echo "$pass passed, $((total - pass)) failed"
fi
# Node.js 22 and 24 (installed from the npm registry into a cache): a fast subset, about a minute each.
# Only for the whole suite: `npm test -- test/x.test.ts` runs just that file.
if [ $# -eq 0 ]; then
  if ! bash scripts/other-nodes.sh 22 24; then
    echo "the subset failed on another Node.js version (see above)"
    if [ "$status" -eq 0 ]; then status=1; fi
  fi
fi
exit "$status"
