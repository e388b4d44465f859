// The body's chunks are freed as soon as the store is done with them (RequestBody.reclaim, core/free-memory.ts),
// through tus 1.0.0 and every draft interop version: each chunk the store gives back is detached (its ArrayBuffer
// emptied) while the bytes on disk are the ones sent. Never a chunk someone else may still read: a staged body's
// store write frees only the chunks read back from its staged file, and with a second reader of the request nothing
// is freed.
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { RequestBody } from '../lib/core/body.js'
import { FileStore, tusPlugin, type WriteOptions } from '../lib/index.js'
import { DEFAULT_DRAFT_VERSIONS } from '../lib/ietf/versions.js'
import { createUpload, idOf, randomBytesSeeded, rawRequest, sha256, startServer, tusRequest, type TestServer } from './helpers.js'

const MiB = 1024 * 1024
const BODY = randomBytesSeeded(4 * MiB + 321, 5)
/** Node 20 frees in batches of 16 (the rest within a second): at most this many may still wait. */
const WAITING_AT_MOST = typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === 'function' ? 0 : 15

/** A FileStore that records what each write was given back and whether it was offered reclaim at all. */
class RecordingStore extends FileStore {
  readonly reclaimed: Buffer[] = []
  readonly offered: boolean[] = []

  override async write (id: string, offset: number, source: AsyncIterable<Buffer>, options?: WriteOptions): Promise<number> {
    const reclaim = options?.reclaim
    this.offered.push(reclaim !== undefined)
    const recording = reclaim === undefined
      ? options
      : { ...options, reclaim: (chunk: Buffer) => { this.reclaimed.push(chunk); reclaim(chunk) } }
    return await super.write(id, offset, source, recording)
  }
}

/**
 * A server whose store records its writes. `seen`: with `secondReader`, what a second 'data' listener on the
 * request read; `bodyReclaimed`: every chunk given back to a request body, by the store or by staging.
 */
async function serve (t: Test, secondReader = false): Promise<{ server: TestServer, store: RecordingStore, seen: Buffer[], bodyReclaimed: Buffer[] }> {
  const seen: Buffer[] = []
  const bodyReclaimed: Buffer[] = []
  let store: RecordingStore | undefined
  const server = await startServer(t, {}, async (app, dir) => {
    store = new RecordingStore({ directory: dir })
    app.addHook('preHandler', async (request) => {
      const body = request.body
      if (!(body instanceof RequestBody)) return
      const reclaim = body.reclaim
      Object.defineProperty(body, 'reclaim', { value: (chunk: Buffer) => { bodyReclaimed.push(chunk); reclaim(chunk) } })
    })
    if (secondReader) {
      app.addHook('preHandler', async (request) => {
        if (request.method === 'PATCH') request.raw.on('data', (chunk: Buffer) => { seen.push(chunk) })
      })
    }
    await app.register(tusPlugin, { dir, store })
  })
  return { server, store: store!, seen, bodyReclaimed }
}

function detached (chunks: Buffer[]): number {
  return chunks.filter((chunk) => chunk.buffer.byteLength === 0).length
}

type Append = (server: TestServer, url: string, extra?: Record<string, string>) => Promise<{ status: number }>

/** An append of BODY, whole, in one request: tus 1.0.0 and every draft interop version the plugin accepts. */
const appends: Record<string, Append> = {
  'tus 1.0.0 PATCH': async (server, url, extra = {}) => await tusRequest(url, {
    method: 'PATCH',
    headers: { 'Content-Type': 'application/offset+octet-stream', 'Upload-Offset': '0', 'Content-Length': String(BODY.length), ...extra },
    body: BODY
  })
}
for (const version of DEFAULT_DRAFT_VERSIONS) {
  appends[`draft (interop ${version}) append`] = async (server, url, extra = {}) => await rawRequest(url, {
    method: 'PATCH',
    headers: {
      'Upload-Draft-Interop-Version': String(version),
      ...(version >= 6 ? { 'Content-Type': 'application/partial-upload' } : {}),
      ...(version === 3 ? { 'Upload-Incomplete': '?0' } : { 'Upload-Complete': '?1' }),
      'Upload-Offset': '0',
      'Content-Length': String(BODY.length),
      ...extra
    },
    body: BODY
  })
}

for (const [protocol, append] of Object.entries(appends)) {
  t.test(`${protocol}: the chunks the store is done with are freed; the stored bytes are the ones sent`, async (t) => {
    const { server, store, bodyReclaimed } = await serve(t)
    const url = await createUpload(server, { 'Upload-Length': String(BODY.length) })
    const response = await append(server, url)
    t.equal(response.status, 204)
    t.same(store.offered, [true], 'the store write is offered reclaim')
    t.same(bodyReclaimed, store.reclaimed, 'what the store gave back reached the request body')
    t.ok(store.reclaimed.length > 16, `${store.reclaimed.length} chunks given back`)
    t.equal(store.reclaimed.reduce((sum, chunk) => sum + chunk.byteOffset, 0), 0, 'whole buffers only')
    t.ok(detached(store.reclaimed) >= store.reclaimed.length - WAITING_AT_MOST, `${detached(store.reclaimed)} of ${store.reclaimed.length} freed`)
    t.equal(sha256(await readFile(join(server.dir, idOf(url)))), sha256(BODY), 'bytes on disk')
  })

  t.test(`${protocol}: a staged (checksummed) body is freed as it is staged, and its file's chunks as the store writes them`, async (t) => {
    const { server, store, bodyReclaimed } = await serve(t)
    const url = await createUpload(server, { 'Upload-Length': String(BODY.length) })
    const checksum = `sha1 ${createHash('sha1').update(BODY).digest('base64')}`
    const response = await append(server, url, { 'Upload-Checksum': checksum })
    t.equal(response.status, 204)
    t.same(store.offered, [true], 'the store write is offered reclaim, for the chunks read back from the staged file')
    t.ok(store.reclaimed.length > 0 && store.reclaimed.every((chunk) => !bodyReclaimed.includes(chunk)), 'none of them the request\'s')
    t.ok(detached(store.reclaimed) >= store.reclaimed.length - WAITING_AT_MOST, `${detached(store.reclaimed)} of ${store.reclaimed.length} freed`)
    t.ok(bodyReclaimed.length > 16, `${bodyReclaimed.length} chunks given back by staging`)
    t.ok(detached(bodyReclaimed) >= bodyReclaimed.length - WAITING_AT_MOST, `${detached(bodyReclaimed)} of ${bodyReclaimed.length} freed`)
    t.equal(sha256(await readFile(join(server.dir, idOf(url)))), sha256(BODY), 'bytes on disk')
  })

  t.test(`${protocol}: with a second reader of the request, no chunk is freed under it`, async (t) => {
    const { server, store, seen } = await serve(t, true)
    const url = await createUpload(server, { 'Upload-Length': String(BODY.length) })
    const response = await append(server, url)
    t.equal(response.status, 204)
    t.ok(store.reclaimed.length > 16)
    t.equal(detached(store.reclaimed), 0, 'nothing detached')
    // It started reading once the body was routed, after the plugin's reader: what it saw is the body's tail.
    const tail = Buffer.concat(seen)
    t.ok(tail.length > BODY.length / 2, `the other reader saw ${tail.length} bytes`)
    t.equal(sha256(tail), sha256(BODY.subarray(BODY.length - tail.length)), 'and still has every byte of them')
    t.equal(sha256(await readFile(join(server.dir, idOf(url)))), sha256(BODY), 'bytes on disk')
  })
}
