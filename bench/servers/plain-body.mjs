// A diagnostic server (bench/probe.ts), not a peer in the tables: node's http server reading each PATCH body
// through the plugin's RequestBody and appending it with FileHandle writes, with the same minimal protocol
// as limit.mjs (bare-tus.mjs). --load=fastify also builds an (unused) Fastify app at startup, --load=plugin one with the
// plugin registered: the body path stays the same, only the heap the process starts with changes.
// Usage: node plain-body.mjs <data dir> [--load=fastify|plugin]
import { open } from 'node:fs/promises'
import { RequestBody } from '../../dist/core/body.js'
import { serveBareTus } from './bare-tus.mjs'

const dir = process.argv[2]
if (dir === undefined) throw new Error('usage: plain-body.mjs <data dir> [--load=fastify|plugin]')
const load = process.argv.find((arg) => arg.startsWith('--load='))?.slice('--load='.length)
const unused = []
if (load === 'fastify' || load === 'plugin') {
  const { default: Fastify } = await import('fastify')
  const app = Fastify()
  if (load === 'plugin') await app.register((await import('fastify-tus')).default, { prefix: '/files', dir })
  await app.ready()
  unused.push(app)
}

serveBareTus(dir, async (req, path) => {
  const handle = await open(path, 'a')
  let appended = 0
  try {
    for await (const chunk of new RequestBody({ raw: req, headers: req.headers }, req, 60_000)) {
      await handle.write(chunk)
      appended += chunk.length
    }
  } finally {
    await handle.close()
  }
  return appended
})
