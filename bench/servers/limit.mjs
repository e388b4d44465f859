// The ceiling for any Node.js tus server on this machine: node's http server piping each PATCH body into
// an append-mode file, with just enough protocol for the benchmark client (POST: 201 + Location; PATCH:
// offset check, append, 204 + Upload-Offset; HEAD: Upload-Offset from an in-memory map). No validation,
// no info file, no locking. Usage: node limit.mjs <data dir> [--fsync]
// --fsync: fsync the data file when an upload reaches its length, as fastify-tus does before it reports
// completion (the ceiling for a server with that durability).
import { randomBytes } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { open } from 'node:fs/promises'
import http from 'node:http'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'

const dir = process.argv[2]
if (dir === undefined) throw new Error('usage: limit.mjs <data dir> [--fsync]')
const fsync = process.argv.includes('--fsync')
const PREFIX = '/files/'
/** id -> { offset, length } */
const uploads = new Map()

function answer (res, status, headers) {
  res.writeHead(status, { 'Tus-Resumable': '1.0.0', ...headers })
  res.end()
}

async function patch (req, res, id, upload) {
  if (Number(req.headers['upload-offset']) !== upload.offset) {
    req.resume()
    return answer(res, 409, { 'Upload-Offset': String(upload.offset) })
  }
  const path = join(dir, id)
  const file = createWriteStream(path, { flags: 'a' })
  await pipeline(req, file)
  upload.offset += file.bytesWritten
  if (fsync && upload.offset === upload.length) {
    const handle = await open(path, 'r')
    await handle.sync()
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
  if (req.method === 'HEAD') {
    return answer(res, 200, { 'Upload-Offset': String(upload.offset), 'Upload-Length': String(upload.length), 'Cache-Control': 'no-store' })
  }
  if (req.method === 'PATCH') {
    return patch(req, res, id, upload).catch((error) => {
      res.destroy(error)
    })
  }
  req.resume()
  answer(res, 405, {})
})
server.listen(0, '127.0.0.1', () => { process.stdout.write(`${server.address().port}\n`) })
// Exit normally on SIGTERM so that --cpu-prof can write its profile.
process.on('SIGTERM', () => { process.exit(0) })
