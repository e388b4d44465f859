// The minimal tus of the bare node servers (limit.mjs, plain-body.mjs), just enough for the benchmark client:
// POST: 201 + Location; PATCH: offset check, `append`, 204 + Upload-Offset; HEAD: Upload-Offset from an
// in-memory map. No validation, no info file, no locking.
import { randomBytes } from 'node:crypto'
import http from 'node:http'
import { join } from 'node:path'

const PREFIX = '/files/'

function answer (res, status, headers) {
  res.writeHead(status, { 'Tus-Resumable': '1.0.0', ...headers })
  res.end()
}

/**
 * Serves uploads stored under `dir` on a free 127.0.0.1 port (printed on stdout). `append(req, path, upload)`
 * appends the PATCH body to the file at `path` and resolves with the bytes it appended; `upload` is
 * `{ offset, length }` as before the body.
 */
export function serveBareTus (dir, append) {
  /** id -> { offset, length } */
  const uploads = new Map()
  const patch = async (req, res, id, upload) => {
    if (Number(req.headers['upload-offset']) !== upload.offset) {
      req.resume()
      return answer(res, 409, { 'Upload-Offset': String(upload.offset) })
    }
    upload.offset += await append(req, join(dir, id), upload)
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
  return server
}
