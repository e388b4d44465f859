// A diagnostic server (bench/probe.ts), not a peer in the tables: node's http server reading each PATCH body
// through the plugin's RequestBody and appending it with FileHandle writes, with the same minimal protocol
// as limit.mjs. --load=fastify also builds an (unused) Fastify app at startup, --load=plugin one with the
// plugin registered: the body path stays the same, only the heap the process starts with changes.
// Usage: node plain-body.mjs <data dir> [--load=fastify|plugin]
import { randomBytes } from 'node:crypto'
import { open } from 'node:fs/promises'
import http from 'node:http'
import { join } from 'node:path'
import { RequestBody } from '../../dist/core/body.js'

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
const PREFIX = '/files/'
const uploads = new Map()

function answer (res, status, headers) {
  res.writeHead(status, { 'Tus-Resumable': '1.0.0', ...headers })
  res.end()
}

async function patch (req, res, id, upload) {
  const handle = await open(join(dir, id), 'a')
  try {
    for await (const chunk of new RequestBody(req, 60_000)) {
      await handle.write(chunk)
      upload.offset += chunk.length
    }
  } finally {
    await handle.close()
  }
  answer(res, 204, { 'Upload-Offset': String(upload.offset) })
}

const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/files') {
    const id = randomBytes(16).toString('hex')
    uploads.set(id, { offset: 0, length: Number(req.headers['upload-length']) })
    req.resume()
    return answer(res, 201, { Location: `http://${req.headers.host}${PREFIX}${id}` })
  }
  const id = req.url.startsWith(PREFIX) ? req.url.slice(PREFIX.length) : ''
  const upload = uploads.get(id)
  if (upload === undefined) {
    req.resume()
    return answer(res, 404, {})
  }
  if (req.method === 'HEAD') return answer(res, 200, { 'Upload-Offset': String(upload.offset), 'Upload-Length': String(upload.length), 'Cache-Control': 'no-store' })
  if (req.method === 'PATCH') return patch(req, res, id, upload).catch((error) => { res.destroy(error) })
  req.resume()
  answer(res, 405, {})
})
server.listen(0, '127.0.0.1', () => { process.stdout.write(`${server.address().port}\n`) })
process.on('SIGTERM', () => { process.exit(0) })
