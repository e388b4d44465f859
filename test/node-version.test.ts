// The Node.js this suite runs on is one the package supports, and the one scripts/other-nodes.sh asked for.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import t from 'tap'
import tus from '../lib/index.js'

t.test('runs on a supported Node.js, with what the package relies on', async (t) => {
  const { engines } = JSON.parse(readFileSync(join(import.meta.dirname, '..', 'package.json'), 'utf8')) as { engines: { node: string } }
  const [, minMajor = 0, minMinor = 0] = (/^>=(\d+)\.(\d+)$/.exec(engines.node) ?? []).map(Number)
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number)
  t.ok(major > minMajor || (major === minMajor && minor >= minMinor), `Node.js ${process.versions.node} satisfies engines ${engines.node}`)
  const expected = process.env.TUS_TEST_EXPECT_NODE
  if (expected !== undefined) t.equal(String(major), expected, `scripts/other-nodes.sh runs this on Node.js ${expected}`)
  t.equal(crc32('123456789'), 0xcbf43926, 'zlib.crc32 (20.15+)')
  t.equal(typeof tus, 'function')
})
