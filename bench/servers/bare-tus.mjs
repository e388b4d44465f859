// The minimal tus of the bare node servers (limit.mjs, plain-body.mjs, s3-limit.mjs), just enough for the benchmark
// client: POST: 201 + Location; PATCH: offset check, `append`, 204 + Upload-Offset; HEAD: Upload-Offset from an
// in-memory map; GET of a complete upload when the server can send it. No validation, no info file, no locking.
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
 * appends the PATCH body to the upload (`path`: `<dir>/<id>`) and resolves with the bytes it appended; `upload` is
 * `{ id, offset, length }` as before the body, plus what `create` added. Optional steps of a store of another kind:
 * `create(upload)` before a creation is answered (it may add to `upload`), `download(res, upload)` to send a
 * complete upload.
 */
export function serveBareTus (dir, append, { create, download } = {}) {
  /** id -> { id, offset, length } */
  const uploads = new Map()
  const patch = async (req, res, upload) => {
    if (Number(req.headers['upload-offset']) !== upload.offset) {
      req.resume()
      return answer(res, 409, { 'Upload-Offset': String(upload.offset) })
    }
    upload.offset += await append(req, join(dir, upload.id), upload)
    answer(res, 204, { 'Upload-Offset': String(upload.offset) })
  }
  const post = async (req, res) => {
    req.resume()
    const upload = { id: randomBytes(16).toString('hex'), offset: 0, length: Number(req.headers['upload-length']) }
    await create?.(upload)
    uploads.set(upload.id, upload)
    answer(res, 201, { Location: `http://${req.headers.host}${PREFIX}${upload.id}` })
  }
  const server = http.createServer((req, res) => {
    const fail = (error) => { res.destroy(error) }
    if (req.method === 'POST' && req.url === '/files') return post(req, res).catch(fail)
    const id = req.url.startsWith(PREFIX) ? req.url.slice(PREFIX.length) : ''
    const upload = uploads.get(id)
    if (upload === undefined) {
      req.resume()
      return answer(res, 404, {})
    }
    if (req.method === 'HEAD') {
      return answer(res, 200, { 'Upload-Offset': String(upload.offset), 'Upload-Length': String(upload.length), 'Cache-Control': 'no-store' })
    }
    if (req.method === 'PATCH') return patch(req, res, upload).catch(fail)
    if (req.method === 'GET' && download !== undefined && upload.offset === upload.length) return download(res, upload).catch(fail)
    req.resume()
    answer(res, 405, {})
  })
  server.listen(0, '127.0.0.1', () => { process.stdout.write(`${server.address().port}\n`) })
  // Exit normally on SIGTERM so that --cpu-prof can write its profile.
  process.on('SIGTERM', () => { process.exit(0) })
  return server
}
