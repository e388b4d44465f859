#!/usr/bin/env bash
# `npm test`: the whole suite. Installs the Debian packages it needs when run as root (CI, fresh machines),
# lints, type-checks (the type test of the public API included), builds, starts the services the suites use,
# runs every tap test under c8 (line coverage of lib/ must stay at or above the floor), then the mutation check,
# then a subset on Node.js 22 and 24.
# With arguments (test files), only those run, and the coverage floor is not checked.
set -euo pipefail
cd "$(dirname "$0")/.."

# Line coverage of lib/ by the whole suite (the CLI runs from dist/ in its tests, so its modules count less):
# 95.7% on 2026-11-30; the floor leaves room for the paths only some runs take (S3 retries, timers).
COVERAGE_FLOOR=93

bash scripts/system-deps.sh

npm run lint
npm run typecheck
npm run build
coverage=(npx c8 --reporter=text-summary --include 'lib/**')
[ $# -eq 0 ] && coverage+=(--check-coverage --lines "$COVERAGE_FLOOR")
set +e
# run.sh starts redis-server and Ceph radosgw for the Redis/S3 suites and stops them afterwards.
bash scripts/services/run.sh "${coverage[@]}" npx tap "$@" 2>&1 | tee .tap-output.log
status=${PIPESTATUS[0]}
# The mutation check (scripts/mutations.ts): hand-made bugs in the core rules that the tests must catch.
# It runs the narrowest test files of each on a copy of the tree, with radosgw from run.sh (the S3 store's mutations)
# and a redis-server of its own, settled before the first lock (run.sh's has just started).
mutations=0
[ $# -eq 0 ] && {
  bash scripts/services/run.sh env -u TUS_TEST_REDIS_URL node --import tsx scripts/mutations.ts 2>&1 | tee .mutations-output.log
  mutations=${PIPESTATUS[0]}
}
set -e
if [ "$status" -eq 0 ] && [ "$mutations" -ne 0 ]; then status=$mutations; fi
# Node.js 22 and 24 (installed from the npm registry into a cache): a fast subset, about a minute each.
other_nodes=0
if [ $# -eq 0 ] && ! bash scripts/other-nodes.sh 22 24; then
  other_nodes=1
  if [ "$status" -eq 0 ]; then status=1; fi
fi
# The closing lines name what failed, so that the end of a long log is enough: the tap summary ("N passed,
# N failed") with each failed test file and its failed subtests, the mutation summary, the other Node.js versions.
# -a: a test's output may hold bytes that make grep call the log binary.
echo
echo "fastify-tus: summary"
summary=$(grep -aEo '# \{ total: [0-9]+, pass: [0-9]+' .tap-output.log | tail -1 || true)
if [ -n "$summary" ]; then
  total=$(sed -E 's/.*total: ([0-9]+).*/\1/' <<<"$summary")
  pass=$(sed -E 's/.*pass: ([0-9]+).*/\1/' <<<"$summary")
  echo "  tap: $pass passed, $((total - pass)) failed"
else
  echo "  tap: no summary (the run stopped early; see above)"
fi
# At most 40 lines, counted in awk: a `| head` would end awk with SIGPIPE, and pipefail would end this script there.
LC_ALL=C awk '/^# Subtest: /{file=substr($0, 12)} /^    not ok /&&n++<40{print "    " file ": " substr($0, 5)} /^not ok /&&n++<40{print "    " $0}' \
  .tap-output.log
grep -aE '^Lines|ERROR: Coverage' .tap-output.log | sed 's/^/  /' || true
if [ $# -eq 0 ]; then
  grep -aE 'mutations killed|^mutations: the unmutated' .mutations-output.log | sed 's/^/  /' || true
  if [ "$mutations" -ne 0 ]; then echo "  the mutation check failed (exit $mutations): a mutation survived, its find text is gone, or the unmutated tests fail"; fi
  if [ "$other_nodes" -ne 0 ]; then echo "  the subset failed on another Node.js version (see \"other-nodes: FAILED\" above)"; fi
fi
exit "$status"
