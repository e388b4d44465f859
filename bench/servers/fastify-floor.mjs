// Diagnostic (bench/probe.ts): the bare tus of bare-tus.mjs (an in-memory offset map, a body piped into an
// append-mode file) served by Fastify routes shaped as the plugin's (POST <prefix>, HEAD and PATCH
// <prefix>/:id, a raw content-type parser that leaves the body unread): what Fastify itself costs a request,
// the floor under the plugin's own work.
import { randomBytes } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import Fastify from 'fastify'

const dir = process.argv[2]
if (dir === undefined) throw new Error('usage: fastify-floor.mjs <data dir>')
const uploads = new Map()
const app = Fastify()
app.addContentTypeParser('*', (request, payload, done) => { done(null, payload) })
app.post('/files', (request, reply) => {
  const id = randomBytes(16).toString('hex')
  uploads.set(id, { offset: 0, length: Number(request.headers['upload-length']) })
  reply.code(201).header('Tus-Resumable', '1.0.0').header('Location', `http://${request.headers.host}/files/${id}`).send()
})
app.head('/files/:id', (request, reply) => {
  const upload = uploads.get(request.params.id)
  if (upload === undefined) return reply.code(404).send()
  reply.code(200).headers({ 'Tus-Resumable': '1.0.0', 'Upload-Offset': String(upload.offset), 'Upload-Length': String(upload.length), 'Cache-Control': 'no-store' }).send()
})
app.patch('/files/:id', async (request, reply) => {
  const upload = uploads.get(request.params.id)
  if (upload === undefined) return reply.code(404).send()
  if (Number(request.headers['upload-offset']) !== upload.offset) return reply.code(409).header('Upload-Offset', String(upload.offset)).send()
  const file = createWriteStream(join(dir, request.params.id), { flags: 'a' })
  await pipeline(request.raw, file)
  upload.offset += file.bytesWritten
  reply.code(204).header('Tus-Resumable', '1.0.0').header('Upload-Offset', String(upload.offset)).send()
})
await app.listen({ host: '127.0.0.1', port: 0 })
process.stdout.write(`${app.server.address().port}\n`)
process.on('SIGTERM', () => { process.exit(0) })
