// The draft's progress 104s acknowledge bytes (`Upload-Offset`: "no retransmission of it will be necessary", a client
// may free them): they may carry only bytes the store holds, never bytes still buffered in memory (S3Store's parts in
// flight, FileStore's write queue), which a crash or a failing backend loses.
import t from 'tap'
import { statSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { FileStore, type WriteOptions } from '../lib/index.js'
import { createUpload, idOf, randomBytesSeeded, sha256, sha256File, startServer, tusRequest, type TestServer } from './helpers.js'

const PART = 256 * 1024

/** A file store that keeps up to PART bytes of a body in memory before it writes them, as S3Store keeps its parts. */
class PartBufferingStore extends FileStore {
  override async write (id: string, offset: number, source: AsyncIterable<Buffer>, options?: WriteOptions): Promise<number> {
    const { reclaim: _, ...passed } = options ?? {}
    let at = offset
    let part: Buffer[] = []
    let size = 0
    const flush = async (): Promise<void> => {
      const chunks = part
      part = []
      size = 0
      at = await super.write(id, at, Readable.from(chunks), passed)
    }
    for await (const chunk of source) {
      part.push(Buffer.from(chunk))
      size += chunk.length
      if (size >= PART) await flush()
    }
    if (size > 0) await flush()
    return at
  }
}

interface Acknowledgement { offset: number, onDisk: number }

/**
 * A draft append (interop `version`) of `data` from `offset`, its body streamed in 64 KiB pieces; each progress 104's
 * Upload-Offset with the data file's size when it arrived.
 */
async function appendWatching (server: TestServer, version: number, url: string, data: Buffer): Promise<{ status: number, acknowledged: Acknowledgement[] }> {
  const path = join(server.dir, idOf(url))
  return await new Promise((resolve, reject) => {
    const acknowledged: Acknowledgement[] = []
    const request = httpRequest(url, {
      method: 'PATCH',
      agent: false,
      headers: {
        'Upload-Draft-Interop-Version': String(version),
        'Upload-Complete': '?1',
        'Upload-Offset': '0',
        'Content-Type': version >= 6 ? 'application/partial-upload' : 'application/offset+octet-stream',
        'Content-Length': String(data.length)
      }
    })
    request.on('information', (info) => {
      const offset = info.headers['upload-offset']
      if (info.statusCode === 104 && offset !== undefined) acknowledged.push({ offset: Number(offset), onDisk: statSync(path).size })
    })
    request.on('error', reject)
    request.on('response', (response) => {
      response.resume()
      response.on('end', () => { resolve({ status: response.statusCode!, acknowledged }) })
    })
    Readable.from((function * () { for (let i = 0; i < data.length; i += 64 * 1024) yield data.subarray(i, i + 64 * 1024) })()).pipe(request)
  })
}

for (const [name, store] of [['a store holding parts in memory', (dir: string) => new PartBufferingStore({ directory: dir })], ['the file store', undefined]] as const) {
  t.test(`progress 104s acknowledge only bytes in storage (${name}), interop 5 to 9`, async (t) => {
    const data = randomBytesSeeded(3 * 1024 * 1024 + 1000, 41)
    for (const version of [5, 6, 7, 8, 9]) {
      const server = await startServer(t, { progressInterval: 0 }, store === undefined
        ? undefined
        : async (app, dir) => { await app.register((await import('../lib/index.js')).default, { dir, store: store(dir), progressInterval: 0 }) })
      const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': String(data.length) } })
      const url = new URL(created.headers.location!, server.origin).href
      const { status, acknowledged } = await appendWatching(server, version, url, data)
      t.equal(status, 204, `v${version}: the append completes the upload`)
      t.equal(await sha256File(join(server.dir, idOf(url))), sha256(data), `v${version}: every byte stored`)
      const ahead = acknowledged.filter(({ offset, onDisk }) => offset > onDisk)
      t.same(ahead, [], `v${version}: no 104 acknowledged bytes that were not in the data file (${acknowledged.length} progress 104s)`)
      t.ok(acknowledged.every(({ offset }, i) => offset > (acknowledged[i - 1]?.offset ?? 0) && offset < data.length), `v${version}: the 104s only move forward`)
      if (store !== undefined) t.ok(acknowledged.length > 0, `v${version}: parts stored while the body arrives are acknowledged`)
    }
  })
}

t.test('tus 1.0.0 through the same store: onUploadProgress still reports bytes as the store takes them, every byte stored', async (t) => {
  const reported: number[] = []
  const data = randomBytesSeeded(1024 * 1024 + 17, 42)
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register((await import('../lib/index.js')).default, {
      dir, store: new PartBufferingStore({ directory: dir }), progressInterval: 0, onUploadProgress: (upload) => { reported.push(upload.offset) }
    })
  })
  const url = await createUpload(server, { 'Upload-Length': String(data.length) })
  const response = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }, body: data })
  t.equal(response.status, 204)
  t.equal(response.headers['upload-offset'], String(data.length))
  t.equal(await sha256File(join(server.dir, idOf(url))), sha256(data))
  t.ok(reported.length > 2 && reported.every((offset, i) => offset >= (reported[i - 1] ?? 0)), `${reported.length} progress reports, in order`)
})
