// One table of scenarios, run through tus 1.0.0 and every IETF draft interop version (3-9), over HTTP/1.1
// and HTTP/2 (h2c), each with and without Content-Length. Every protocol reaches the same operations, so
// every row must end with the same stored bytes, the same hook calls and the same events.
import t from 'tap'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { watch as watchPath } from 'node:fs'
import { mkdir, mkdtemp, readdir, readFile, rm, stat, watch } from 'node:fs/promises'
import { connect as connectTcp, type Socket } from 'node:net'
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import { connect as connectHttp2, constants as http2Constants, type IncomingHttpHeaders as Http2Headers } from 'node:http2'
import { tmpdir } from 'node:os'
import { gzipSync } from 'node:zlib'
import { join } from 'node:path'
import type { FastifyRequest, FastifyServerOptions } from 'fastify'
import { FileStore, MemoryLocker, TusErrors, type LockOptions, type TusPluginOptions, type UploadLock } from '../lib/index.js'
import { delegatingTo, idOf, randomBytesSeeded, sha256, signal, startServer, stored, WatchedLocker, type TestServer } from './helpers.js'

type Transport = 'http/1.1' | 'http/1.1 chunked' | 'h2c' | 'h2c streamed'
const TRANSPORTS: Transport[] = ['http/1.1', 'http/1.1 chunked', 'h2c', 'h2c streamed']
const DRAFT_VERSIONS = [3, 4, 5, 6, 7, 8, 9]

interface Response {
  status: number
  headers: Record<string, string>
  body: Buffer
  /** 1xx interim responses before the final one. */
  interim: Array<Record<string, string>>
  /** The reason phrase of the status line (HTTP/1.1), where the request helper reads it. */
  reason?: string
}

function flatten (headers: IncomingHttpHeaders | Http2Headers): Record<string, string> {
  const flat: Record<string, string> = {}
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !name.startsWith(':')) flat[name] = Array.isArray(value) ? value.join(', ') : String(value)
  }
  return flat
}

/** Halves of a body sent as separate writes, so "without Content-Length" really streams. */
function halves (body: Buffer): Buffer[] {
  const middle = Math.floor(body.length / 2)
  return [body.subarray(0, middle), body.subarray(middle)]
}

async function send (transport: Transport, url: string, method: string, headers: Record<string, string>, body?: Buffer): Promise<Response> {
  const withLength = transport === 'http/1.1' || transport === 'h2c'
  if (transport.startsWith('h2c')) return await sendHttp2(url, method, headers, body, withLength)
  return await new Promise((resolve, reject) => {
    const interim: Response['interim'] = []
    const all = { ...headers, ...(body !== undefined && withLength ? { 'Content-Length': String(body.length) } : {}) }
    const request = httpRequest(url, { method, headers: all, agent: false })
    request.on('information', (info) => { interim.push(flatten(info.headers)) })
    request.on('error', reject)
    request.on('response', (response) => {
      const chunks: Buffer[] = []
      response.on('data', (chunk: Buffer) => chunks.push(chunk))
      response.on('error', reject)
      response.on('end', () => { resolve({ status: response.statusCode!, headers: flatten(response.headers), body: Buffer.concat(chunks), interim }) })
    })
    if (body === undefined) {
      request.end()
      return
    }
    if (withLength) {
      request.end(body)
      return
    }
    const [first, second] = halves(body)
    request.write(first)
    request.end(second)
  })
}

/** Field names in lower case, as HTTP/2 requires them. */
function lowerCased (fields: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(fields).map(([name, value]) => [name.toLowerCase(), value]))
}

async function sendHttp2 (url: string, method: string, headers: Record<string, string>, body: Buffer | undefined, withLength: boolean): Promise<Response> {
  const { origin, pathname } = new URL(url)
  const session = connectHttp2(origin)
  try {
    return await new Promise((resolve, reject) => {
      session.on('error', reject)
      const interim: Response['interim'] = []
      const lower = lowerCased(headers)
      const stream = session.request({
        [http2Constants.HTTP2_HEADER_METHOD]: method,
        [http2Constants.HTTP2_HEADER_PATH]: pathname,
        ...lower,
        ...(body !== undefined && withLength ? { 'content-length': String(body.length) } : {})
      }, { endStream: body === undefined })
      stream.on('headers', (info) => { interim.push(flatten(info)) })
      stream.on('error', reject)
      stream.on('response', (response) => {
        const chunks: Buffer[] = []
        stream.on('data', (chunk: Buffer) => chunks.push(chunk))
        stream.on('end', () => { resolve({ status: Number(response[':status']), headers: flatten(response), body: Buffer.concat(chunks), interim }) })
      })
      if (body === undefined) return
      if (withLength) {
        stream.end(body)
        return
      }
      const [first, second] = halves(body)
      stream.write(first)
      stream.end(second)
    })
  } finally {
    session.close()
  }
}

/**
 * A PATCH over HTTP/2 whose client resets its stream (RST_STREAM, its body never ended) once `bytes` are sent and
 * `arrived` resolves. Not `stream.close(code)`: node's client ends the body (END_STREAM) before it resets, and a
 * server then has the whole body the client declared.
 */
async function resetHttp2Append (url: string, headers: Record<string, string>, bytes: Buffer, arrived: () => Promise<void>): Promise<void> {
  const { origin, pathname } = new URL(url)
  const session = connectHttp2(origin)
  try {
    const lower = lowerCased(headers)
    const stream = session.request({ [http2Constants.HTTP2_HEADER_METHOD]: 'PATCH', [http2Constants.HTTP2_HEADER_PATH]: pathname, ...lower })
    stream.on('error', () => {})
    stream.write(bytes)
    await arrived()
    const closed = once(stream, 'close')
    stream.destroy()
    await closed
  } finally {
    session.close()
  }
}

/** How one protocol spells each step; `last` marks the append that ends the upload. */
interface Dialect {
  name: string
  /** The header that names the protocol, as every request of it carries. */
  versioned: Record<string, string>
  /** The status of an offset retrieval (HEAD). */
  offsetRetrieved: number
  created: number
  appended: (last: boolean) => number
  /** The status of bytes beyond a known length (tus: 413; the draft: 400 inconsistent-upload-length). */
  overflow: number
  create: (transport: Transport, server: TestServer, options: { length?: number, body?: Buffer, last?: boolean }) => Promise<Response & { url: string }>
  /** The headers of a creation (without Content-Length). */
  createHeaders: (options: { length?: number, withBody: boolean, last?: boolean }) => Record<string, string>
  append: (transport: Transport, url: string, offset: number, body: Buffer, options: { last?: boolean, length?: number }) => Promise<Response>
  /** The headers of an append (without Content-Length). */
  appendHeaders: (offset: number, options: { last?: boolean, length?: number }) => Record<string, string>
  offsetOf: (transport: Transport, url: string) => Promise<{ status: number, offset: number | undefined }>
  remove: (transport: Transport, url: string) => Promise<Response>
  download: (transport: Transport, url: string) => Promise<Response>
  /** The status of a download of an upload not complete yet (the draft from interop 8: offset retrieval). */
  unfinished: number
}

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }

const tus: Dialect = {
  name: 'tus 1.0.0',
  versioned: { 'Tus-Resumable': '1.0.0' },
  offsetRetrieved: 200,
  created: 201,
  appended: () => 204,
  overflow: 413,
  async create (transport, server, { length, body }) {
    const response = await send(transport, server.endpoint, 'POST', tus.createHeaders({ length, withBody: body !== undefined }), body)
    return { ...response, url: new URL(response.headers.location ?? '/none', server.origin).href }
  },
  createHeaders: ({ length, withBody }) =>
    ({ 'Tus-Resumable': '1.0.0', ...(length === undefined ? { 'Upload-Defer-Length': '1' } : { 'Upload-Length': String(length) }), ...(withBody ? OCTET : {}) }),
  async append (transport, url, offset, body, options) {
    return await send(transport, url, 'PATCH', tus.appendHeaders(offset, options), body)
  },
  appendHeaders: (offset, { length }) => ({ 'Tus-Resumable': '1.0.0', 'Upload-Offset': String(offset), ...OCTET, ...(length === undefined ? {} : { 'Upload-Length': String(length) }) }),
  async offsetOf (transport, url) {
    const response = await send(transport, url, 'HEAD', { 'Tus-Resumable': '1.0.0' })
    return { status: response.status, offset: response.headers['upload-offset'] === undefined ? undefined : Number(response.headers['upload-offset']) }
  },
  async remove (transport, url) {
    return await send(transport, url, 'DELETE', { 'Tus-Resumable': '1.0.0' })
  },
  async download (transport, url) {
    return await send(transport, url, 'GET', {})
  },
  unfinished: 409
}

function draftDialect (version: number): Dialect {
  const complete = (done: boolean): Record<string, string> =>
    version === 3 ? { 'Upload-Incomplete': done ? '?0' : '?1' } : { 'Upload-Complete': done ? '?1' : '?0' }
  const interop = { 'Upload-Draft-Interop-Version': String(version) }
  const appendHeaders: Dialect['appendHeaders'] = (offset, { last = false, length }) => {
    const type: Record<string, string> = version >= 6 ? { 'Content-Type': 'application/partial-upload' } : {}
    return { ...interop, 'Upload-Offset': String(offset), ...complete(last), ...type, ...(length === undefined ? {} : { 'Upload-Length': String(length) }) }
  }
  const createHeaders: Dialect['createHeaders'] = ({ length, last = false }) =>
    ({ ...interop, ...complete(last), ...(length === undefined ? {} : { 'Upload-Length': String(length) }) })
  return {
    name: `draft interop ${version}`,
    versioned: interop,
    offsetRetrieved: 204,
    created: 201,
    appended: (last) => version === 3 && !last ? 201 : 204,
    overflow: 400,
    async create (transport, server, { length, body, last }) {
      const response = await send(transport, server.endpoint, 'POST', createHeaders({ length, withBody: body !== undefined, last }), body)
      return { ...response, url: new URL(response.headers.location ?? '/none', server.origin).href }
    },
    createHeaders,
    async append (transport, url, offset, body, options) {
      return await send(transport, url, 'PATCH', appendHeaders(offset, options), body)
    },
    appendHeaders,
    async offsetOf (transport, url) {
      const response = await send(transport, url, 'HEAD', interop)
      return { status: response.status, offset: response.headers['upload-offset'] === undefined ? undefined : Number(response.headers['upload-offset']) }
    },
    async remove (transport, url) {
      return await send(transport, url, 'DELETE', interop)
    },
    async download (transport, url) {
      return await send(transport, url, 'GET', interop)
    },
    unfinished: version >= 8 ? 204 : 409
  }
}

const DIALECTS: Dialect[] = [tus, ...DRAFT_VERSIONS.map(draftDialect)]

/** A server whose hooks and events are all recorded, in the order they happened. */
async function recordingServer (t: Teardown, transport: Transport, options: TusPluginOptions = {}): Promise<{ server: TestServer, log: string[] }> {
  const log: string[] = []
  const fastifyOptions: FastifyServerOptions = transport.startsWith('h2c') ? { http2: true } as FastifyServerOptions : {}
  const server = await startServer(t, {
    progressInterval: 0,
    ...options,
    onUploadCreate: (upload) => { log.push(`hook create ${upload.size ?? 'deferred'}`) },
    onUploadComplete: (upload) => { log.push(`hook complete ${upload.size ?? '?'}`) },
    onUploadTerminate: options.onUploadTerminate ?? ((upload) => { log.push(`hook terminate ${upload.offset}`) })
  }, undefined, fastifyOptions)
  server.app.tus.on('created', () => { log.push('event created') })
  server.app.tus.on('completed', (upload) => { log.push(`event completed ${upload.size ?? '?'}`) })
  server.app.tus.on('terminated', () => { log.push('event terminated') })
  return { server, log }
}

interface Teardown { teardown: (fn: () => unknown) => void }

const SOURCE = randomBytesSeeded(96 * 1024, 7)

for (const transport of TRANSPORTS) {
  for (const dialect of DIALECTS) {
    t.test(`${dialect.name} over ${transport}`, async (t) => {
      t.test('creation without bytes, two appends: the bytes, one completion', async (t) => {
        const { server, log } = await recordingServer(t, transport)
        const created = await dialect.create(transport, server, { length: SOURCE.length })
        t.equal(created.status, dialect.created)
        const half = SOURCE.length / 2
        t.equal((await dialect.append(transport, created.url, 0, SOURCE.subarray(0, half), {})).status, dialect.appended(false))
        const last = await dialect.append(transport, created.url, half, SOURCE.subarray(half), { last: true })
        t.equal(last.status, dialect.appended(true))
        t.equal(last.headers['upload-offset'], String(SOURCE.length))
        t.equal(sha256(await stored(server, created.url)), sha256(SOURCE), 'the bytes on disk')
        t.same(log, [`hook create ${SOURCE.length}`, 'event created', `hook complete ${SOURCE.length}`, `event completed ${SOURCE.length}`])
      })

      t.test('creation with all the bytes: complete at once', async (t) => {
        const { server, log } = await recordingServer(t, transport)
        const created = await dialect.create(transport, server, { length: SOURCE.length, body: SOURCE, last: true })
        t.equal(created.status, dialect.created)
        t.equal(created.headers['upload-offset'], String(SOURCE.length))
        t.equal(sha256(await stored(server, created.url)), sha256(SOURCE))
        t.same(log, [`hook create ${SOURCE.length}`, 'event created', `hook complete ${SOURCE.length}`, `event completed ${SOURCE.length}`])
      })

      t.test('creation with the first bytes, then the rest', async (t) => {
        const { server, log } = await recordingServer(t, transport)
        const first = SOURCE.subarray(0, 1000)
        const created = await dialect.create(transport, server, { length: SOURCE.length, body: first })
        t.equal(created.headers['upload-offset'], '1000', 'the first bytes are stored (a body without Content-Length too)')
        const rest = await dialect.append(transport, created.url, 1000, SOURCE.subarray(1000), { last: true })
        t.equal(rest.status, dialect.appended(true))
        t.equal(sha256(await stored(server, created.url)), sha256(SOURCE))
        t.same(log.filter((entry) => entry.startsWith('hook complete')), [`hook complete ${SOURCE.length}`])
      })

      t.test('deferred length: declared by the last append', async (t) => {
        const { server, log } = await recordingServer(t, transport)
        const created = await dialect.create(transport, server, {})
        t.equal(created.status, dialect.created)
        t.equal((await dialect.append(transport, created.url, 0, SOURCE.subarray(0, 5000), {})).status, dialect.appended(false))
        const length = dialect === tus ? SOURCE.length : undefined
        const last = await dialect.append(transport, created.url, 5000, SOURCE.subarray(5000), { last: true, length })
        t.equal(last.status, dialect.appended(true))
        t.equal(sha256(await stored(server, created.url)), sha256(SOURCE))
        t.same(log, ['hook create deferred', 'event created', `hook complete ${SOURCE.length}`, `event completed ${SOURCE.length}`])
      })

      // With Content-Length only: a body of unknown length is refused only once it has gone beyond the length it
      // declared, and the declaration stays.
      if (transport === 'http/1.1' || transport === 'h2c') {
        t.test('deferred length: an append refused for a body longer than the length it declares leaves the length deferred', async (t) => {
          const { server } = await recordingServer(t, transport)
          const created = await dialect.create(transport, server, {})
          t.equal((await dialect.append(transport, created.url, 0, SOURCE.subarray(0, 10), {})).status, dialect.appended(false))
          const refused = await dialect.append(transport, created.url, 10, SOURCE.subarray(10, 15), { length: 12 })
          t.equal(refused.status, dialect.overflow, 'refused before a byte is read')
          const head = await send(transport, created.url, 'HEAD', { 'Tus-Resumable': '1.0.0' })
          t.equal(head.headers['upload-length'], undefined, 'no length stored')
          t.equal(head.headers['upload-defer-length'], '1')
          t.equal(head.headers['upload-offset'], '10')
          const last = await dialect.append(transport, created.url, 10, SOURCE.subarray(10, 15), { last: true, length: 15 })
          t.equal(last.status, dialect.appended(true), 'the right length is declared afterwards')
          t.equal(sha256(await stored(server, created.url)), sha256(SOURCE.subarray(0, 15)))
        })
      }

      // With Content-Length only: a body of unknown length creates the upload before it can go beyond a limit.
      if (transport === 'http/1.1' || transport === 'h2c') {
        t.test('a creation announcing a body beyond its length, or beyond maxSize while the length is unknown: refused before the upload exists, no offset', async (t) => {
          const { server, log } = await recordingServer(t, transport, { maxSize: 20 })
          const beyondLength = await dialect.create(transport, server, { length: 5, body: SOURCE.subarray(0, 8) })
          t.equal(beyondLength.status, dialect.overflow)
          const beyondMaxSize = await dialect.create(transport, server, { body: SOURCE.subarray(0, 21) })
          t.equal(beyondMaxSize.status, 413)
          for (const refused of [beyondLength, beyondMaxSize]) {
            t.equal(refused.headers['upload-offset'], undefined, 'no upload, so no offset')
            t.equal(refused.headers.location, undefined)
          }
          t.same(log, [], 'nothing created')
        })
      }

      t.test('bytes beyond the length: refused, nothing stored, the upload kept (no removal behind the terminate hook)', async (t) => {
        const { server, log } = await recordingServer(t, transport, {
          onUploadTerminate: () => { throw Object.assign(new Error('never removed'), { statusCode: 403 }) }
        })
        const created = await dialect.create(transport, server, { length: 100, body: SOURCE.subarray(0, 10) })
        const over = await dialect.append(transport, created.url, 10, SOURCE.subarray(10, 150), {})
        t.equal(over.status, dialect.overflow)
        t.equal(over.headers['upload-offset'], '10')
        t.same(await dialect.offsetOf(transport, created.url), { status: dialect === tus ? 200 : 204, offset: 10 }, 'the upload is still there')
        t.same(await stored(server, created.url), SOURCE.subarray(0, 10), 'nothing of the overflowing body stored')
        const rest = await dialect.append(transport, created.url, 10, SOURCE.subarray(10, 100), { last: true })
        t.equal(rest.status, dialect.appended(true), 'the upload goes on')
        t.same(log, ['hook create 100', 'event created', 'hook complete 100', 'event completed 100'])
      })

      t.test('a refused termination keeps the upload', async (t) => {
        const { server, log } = await recordingServer(t, transport, {
          onUploadTerminate: () => { throw Object.assign(new Error('kept for audit'), { statusCode: 403 }) }
        })
        const created = await dialect.create(transport, server, { length: 100, body: SOURCE.subarray(0, 10) })
        const refused = await dialect.remove(transport, created.url)
        t.equal(refused.status, 403)
        t.equal(refused.body.toString(), 'kept for audit')
        t.same(await stored(server, created.url), SOURCE.subarray(0, 10))
        t.equal((await dialect.offsetOf(transport, created.url)).offset, 10)
        t.same(log, ['hook create 100', 'event created'])
      })

      t.test('termination: the hook, the event, nothing left', async (t) => {
        const { server, log } = await recordingServer(t, transport)
        const created = await dialect.create(transport, server, { length: 100, body: SOURCE.subarray(0, 10) })
        t.equal((await dialect.remove(transport, created.url)).status, 204)
        t.equal((await dialect.offsetOf(transport, created.url)).status, 404)
        t.same((await readdir(server.dir)).filter((name) => !name.startsWith('.')), [])
        t.same(log, ['hook create 100', 'event created', 'hook terminate 10', 'event terminated'])
      })

      t.test('the disk reserve holds for every creation', async (t) => {
        const { server, log } = await recordingServer(t, transport, { minFreeSpace: Number.MAX_SAFE_INTEGER })
        const refused = await dialect.create(transport, server, { length: 10, body: SOURCE.subarray(0, 10), last: true })
        t.equal(refused.status, 507)
        t.same((await readdir(server.dir)).filter((name) => !name.startsWith('.')), [], 'nothing created')
        t.same(log, ['hook create 10'])
      })

      t.test('a final (concatenated) upload cannot be appended to; its partial completes it, once', async (t) => {
        const { server, log } = await recordingServer(t, transport)
        const unrelated = await tus.create(transport, server, { length: 6, body: Buffer.from('abc') })
        const tusHeaders = { 'Tus-Resumable': '1.0.0' }
        const partialUrl = (await send(transport, server.endpoint, 'POST', { ...tusHeaders, 'Upload-Length': '6', 'Upload-Concat': 'partial' })).headers.location!
        const final = await send(transport, server.endpoint, 'POST', { ...tusHeaders, 'Upload-Concat': `final;${partialUrl}` })
        t.equal(final.status, 201)
        const finalUrl = new URL(final.headers.location!, server.origin).href
        const forged = await dialect.append(transport, finalUrl, 0, Buffer.from('evil!!'), { last: true })
        t.equal(forged.status, 403, 'a final upload is never written by an append')
        const completing = await dialect.append(transport, new URL(partialUrl, server.origin).href, 0, Buffer.from('hello!'), { last: true })
        t.equal(completing.status, dialect.appended(true))
        t.equal((await stored(server, finalUrl)).toString(), 'hello!', 'the final has its partial\'s bytes')
        t.equal((await stored(server, unrelated.url)).toString(), 'abc', 'an unrelated upload untouched')
        t.same(log.filter((entry) => entry.startsWith('hook complete') || entry.startsWith('event completed')),
          ['hook complete 6', 'event completed 6'], 'completion once, for the final, never for the partial')
      })

      t.test('progress: the hook sees the bytes arrive', async (t) => {
        const offsets: number[] = []
        const { server } = await recordingServer(t, transport, { onUploadProgress: (upload) => { offsets.push(upload.offset) } })
        const created = await dialect.create(transport, server, { length: SOURCE.length })
        await dialect.append(transport, created.url, 0, SOURCE.subarray(0, 50_000), {})
        t.equal(offsets[0], 0, 'a report before the first byte')
        t.equal(offsets.at(-1), 50_000, 'a report after the last byte of the request')
        t.ok(offsets.every((offset, index) => index === 0 || offset >= offsets[index - 1]!), 'never backwards')
      })
    })
  }
}

t.test('draft progress 104s do not depend on the public emitter', async (t) => {
  const { server } = await recordingServer(t, 'http/1.1')
  const before = await send('http/1.1 chunked', server.endpoint, 'POST', { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?1' }, SOURCE)
  t.ok(before.interim.some((headers) => headers['upload-offset'] !== undefined), 'progress 104s')
  server.app.tus.removeAllListeners('progress')
  const response = await send('http/1.1 chunked', server.endpoint, 'POST', { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?1' }, SOURCE)
  t.equal(response.status, 201)
  t.ok(response.interim.some((headers) => headers['upload-offset'] !== undefined), 'a progress 104 after app.tus.removeAllListeners(\'progress\')')
  t.equal(sha256(await stored(server, new URL(response.headers.location!, server.origin).href)), sha256(SOURCE))
})

/**
 * An HTTP/1.1 chunked request (no Content-Length) whose body goes out in two halves: `between` runs once the first
 * half is sent, `trailers` end it (announced in a Trailer header when `announce`).
 */
async function sendChunked (
  url: string, method: string, headers: Record<string, string>, body: Buffer,
  options: { trailers?: Record<string, string>, announce?: boolean, between?: () => Promise<void> } = {}
): Promise<Response> {
  return await new Promise((resolve, reject) => {
    const announced = options.announce === true && options.trailers !== undefined ? { Trailer: Object.keys(options.trailers).join(', ') } : {}
    const request = httpRequest(url, { method, headers: { ...headers, ...announced }, agent: false })
    request.on('error', reject)
    request.on('response', (response) => {
      const chunks: Buffer[] = []
      response.on('data', (chunk: Buffer) => chunks.push(chunk))
      response.on('end', () => {
        resolve({ status: response.statusCode!, reason: response.statusMessage!, headers: flatten(response.headers), body: Buffer.concat(chunks), interim: [] })
      })
    })
    const [first, second] = halves(body)
    request.write(first)
    ;(options.between ?? (async () => {}))().then(() => {
      if (options.trailers !== undefined) request.addTrailers(options.trailers)
      request.end(second)
    }, reject)
  })
}

/** Resolves once the file at `path` holds at least `size` bytes (watched, not polled). */
async function grown (path: string, size: number): Promise<void> {
  const watcher = new AbortController()
  const events = watch(path, { signal: watcher.signal })[Symbol.asyncIterator]()
  // The first next() starts the watcher, before the size is looked at.
  let next = events.next()
  try {
    while ((await stat(path)).size < size) {
      await next
      next = events.next()
    }
  } finally {
    next.catch(() => {})
    watcher.abort()
  }
}

/**
 * Where the first half of a body went: into a staged body, or into the upload's data file (`size` bytes before).
 * Watched, not polled: the staging directory (created if missing) and the data file.
 */
async function firstHalfIn (server: TestServer, url: string, size: number): Promise<'staged' | 'upload'> {
  const staging = join(server.dir, '.staging')
  await mkdir(staging, { recursive: true })
  const path = join(server.dir, idOf(url))
  let wake = (): void => {}
  const watchers = [staging, path].map((watched) => watchPath(watched, () => { wake() }))
  try {
    for (;;) {
      const changed = new Promise<void>((resolve) => { wake = resolve })
      if ((await stagedBodies(server)).length > 0) return 'staged'
      if ((await stat(path)).size > size) return 'upload'
      await changed
    }
  } finally {
    for (const watcher of watchers) watcher.close()
  }
}

/** The staged bodies in the server's staging directory. */
async function stagedBodies (server: TestServer): Promise<string[]> {
  return (await readdir(join(server.dir, '.staging')).catch(() => [])).filter((name) => name.endsWith('.chunk'))
}

for (const dialect of DIALECTS) {
  t.test(`${dialect.name}: a chunked body streams into the upload as it arrives, nothing staged`, async (t) => {
    const { server, log } = await recordingServer(t, 'http/1.1')
    const created = await dialect.create('http/1.1', server, { length: SOURCE.length })
    let went = ''
    const response = await sendChunked(created.url, 'PATCH', dialect.appendHeaders(0, { last: true }), SOURCE, {
      between: async () => { went = await firstHalfIn(server, created.url, 0) }
    })
    t.equal(went, 'upload', 'bytes are in the upload before the body ends')
    t.equal(response.status, dialect.appended(true))
    t.equal(response.headers['upload-offset'], String(SOURCE.length))
    t.equal(sha256(await stored(server, created.url)), sha256(SOURCE))
    t.same(log, [`hook create ${SOURCE.length}`, 'event created', `hook complete ${SOURCE.length}`, `event completed ${SOURCE.length}`])
  })

  t.test(`${dialect.name}: a chunked body cut short keeps what arrived, and the upload resumes from there`, async (t) => {
    const { server } = await recordingServer(t, 'http/1.1')
    const created = await dialect.create('http/1.1', server, { length: SOURCE.length })
    const socket = await appendOnSocket(created.url, `${headLines(dialect.appendHeaders(0, {}))}Transfer-Encoding: chunked\r\n`, chunkOf(SOURCE.subarray(0, 1000)))
    await grown(join(server.dir, idOf(created.url)), 1000)
    socket.destroy()
    // An empty append waits for the upload's lock, so it answers after the cut request is done.
    const after = await dialect.append('http/1.1', created.url, 1000, Buffer.alloc(0), {})
    t.equal(after.headers['upload-offset'], '1000', 'the bytes that arrived are kept')
    const rest = await dialect.append('http/1.1', created.url, 1000, SOURCE.subarray(1000), { last: true })
    t.equal(rest.status, dialect.appended(true))
    t.equal(sha256(await stored(server, created.url)), sha256(SOURCE))
  })

  t.test(`${dialect.name}: a chunked body cut short before the trailer checksum it announced leaves nothing`, async (t) => {
    const { server } = await recordingServer(t, 'http/1.1')
    const created = await dialect.create('http/1.1', server, { length: SOURCE.length })
    const socket = await appendOnSocket(created.url, `${headLines(dialect.appendHeaders(0, {}))}Transfer-Encoding: chunked\r\nTrailer: Upload-Checksum\r\n`, chunkOf(SOURCE.subarray(0, 1000)))
    await firstHalfIn(server, created.url, 0)
    socket.destroy()
    const after = await dialect.append('http/1.1', created.url, 0, Buffer.alloc(0), {})
    t.equal(after.headers['upload-offset'], '0', 'the staged bytes are dropped: they were sent to be kept only once checked')
    t.same(await stagedBodies(server), [], 'no staged body is left')
    const whole = await dialect.append('http/1.1', created.url, 0, SOURCE, { last: true })
    t.equal(whole.status, dialect.appended(true))
    t.equal(sha256(await stored(server, created.url)), sha256(SOURCE))
  })

  t.test(`${dialect.name}: a chunked body that ends without the trailer checksum it announced is refused, nothing stored`, async (t) => {
    const { server } = await recordingServer(t, 'http/1.1')
    const created = await dialect.create('http/1.1', server, { length: SOURCE.length })
    // As a proxy that drops trailers would pass it on: announced, then the body ends without one.
    const response = await sendChunked(created.url, 'PATCH', { ...dialect.appendHeaders(0, { last: true }), Trailer: 'Upload-Checksum' }, SOURCE)
    t.equal(response.status, 400)
    t.match(response.body.toString(), /Upload-Checksum.*announced as a trailer/)
    t.equal(response.headers['upload-offset'], '0')
    t.equal((await stored(server, created.url)).length, 0, 'nothing of the body was stored')
    t.same(await stagedBodies(server), [], 'no staged body is left')
    const whole = await dialect.append('http/1.1', created.url, 0, SOURCE, { last: true })
    t.equal(whole.status, dialect.appended(true))
    t.equal(sha256(await stored(server, created.url)), sha256(SOURCE))
  })

  t.test(`${dialect.name} over h2c: a body whose stream the client resets mid-way keeps what arrived and completes nothing; the upload resumes`, async (t) => {
    const { server, log } = await recordingServer(t, 'h2c')
    const created = await dialect.create('h2c', server, { length: SOURCE.length })
    // A request that says it ends the upload (the draft's Upload-Complete: ?1), reset before its body's end.
    await resetHttp2Append(created.url, dialect.appendHeaders(0, { last: true }), SOURCE.subarray(0, 1000), async () => {
      await grown(join(server.dir, idOf(created.url)), 1000)
    })
    const after = await dialect.append('h2c', created.url, 1000, Buffer.alloc(0), {})
    t.equal(after.headers['upload-offset'], '1000', 'the bytes that arrived are kept, the upload not refused as ending short of its length')
    const rest = await dialect.append('h2c', created.url, 1000, SOURCE.subarray(1000), { last: true })
    t.equal(rest.status, dialect.appended(true))
    t.equal(sha256(await stored(server, created.url)), sha256(SOURCE))
    t.same(log, [`hook create ${SOURCE.length}`, 'event created', `hook complete ${SOURCE.length}`, `event completed ${SOURCE.length}`], 'one completion, by the last append')
  })

  t.test(`${dialect.name} over h2c: a body whose stream the client resets before the trailer checksum it announced leaves nothing`, async (t) => {
    const { server } = await recordingServer(t, 'h2c')
    const created = await dialect.create('h2c', server, { length: SOURCE.length })
    await resetHttp2Append(created.url, { ...dialect.appendHeaders(0, {}), Trailer: 'Upload-Checksum' }, SOURCE.subarray(0, 1000), async () => {
      await firstHalfIn(server, created.url, 0)
    })
    const after = await dialect.append('h2c', created.url, 0, Buffer.alloc(0), {})
    t.equal(after.headers['upload-offset'], '0', 'the staged bytes are dropped: they were sent to be kept only once checked')
    t.same(await stagedBodies(server), [], 'no staged body is left')
  })

  t.test(`${dialect.name}: a trailer checksum, announced (staged) or not (checked once stored): a failing one leaves nothing`, async (t) => {
    const { server, log } = await recordingServer(t, 'http/1.1')
    const created = await dialect.create('http/1.1', server, { length: SOURCE.length, body: SOURCE.subarray(0, 10) })
    const rest = SOURCE.subarray(10)
    const corrupted = Buffer.from(rest)
    corrupted[corrupted.length - 1]! ^= 0xff
    const sha1 = `sha1 ${createHash('sha1').update(rest).digest('base64')}`
    const headers = dialect.appendHeaders(10, { last: true })
    for (const announce of [false, true]) {
      const how = announce ? 'announced' : 'not announced'
      let went = ''
      const mismatch = await sendChunked(created.url, 'PATCH', headers, corrupted, {
        trailers: { 'Upload-Checksum': sha1 },
        announce,
        between: async () => { went = await firstHalfIn(server, created.url, 10) }
      })
      t.equal(went, announce ? 'staged' : 'upload', `${how}: ${announce ? 'staged until checked' : 'streamed into the upload'}`)
      t.equal(mismatch.status, 460, `${how}: the last byte changed is a mismatch`)
      t.equal(mismatch.reason, 'Checksum Mismatch', `${how}: the checksum extension's reason phrase, whichever protocol answers`)
      t.equal(mismatch.headers['upload-offset'], '10')
      const malformed = await sendChunked(created.url, 'PATCH', headers, rest, { trailers: { 'Upload-Checksum': 'sha1' }, announce })
      t.equal(malformed.status, 400, `${how}: a malformed trailer`)
      t.equal(malformed.headers['upload-offset'], '10')
      const unsupported = await sendChunked(created.url, 'PATCH', headers, rest, { trailers: { 'Upload-Checksum': 'md4 AAAA' }, announce })
      t.equal(unsupported.status, 400, `${how}: an unsupported algorithm`)
      t.same(await stored(server, created.url), SOURCE.subarray(0, 10), `${how}: nothing of the refused bodies stays`)
      t.same(await dialect.offsetOf('http/1.1', created.url), { status: dialect === tus ? 200 : 204, offset: 10 })
    }
    const right = await sendChunked(created.url, 'PATCH', headers, rest, { trailers: { 'Upload-Checksum': sha1 } })
    t.equal(right.status, dialect.appended(true), 'a matching trailer nobody announced')
    t.equal(sha256(await stored(server, created.url)), sha256(SOURCE))
    t.same(await stagedBodies(server), [], 'no staged body left behind')
    t.same(log, [`hook create ${SOURCE.length}`, 'event created', `hook complete ${SOURCE.length}`, `event completed ${SOURCE.length}`], 'completed once')
  })

  t.test(`${dialect.name} over h2c: a Host that names another host than :authority is refused (400), never put in a Location`, async (t) => {
    const { server } = await recordingServer(t, 'h2c')
    const { host } = new URL(server.endpoint)
    const incomplete: Record<string, string> = dialect.versioned['Upload-Draft-Interop-Version'] === '3' ? { 'Upload-Incomplete': '?1' } : { 'Upload-Complete': '?0' }
    const creation: Record<string, string> = { ...dialect.versioned, 'Upload-Length': '3', ...(dialect === tus ? {} : incomplete) }
    // Node's client sends no :authority when given a Host: both are named, as a client or a proxy may send them.
    const refused = await sendHttp2(server.endpoint, 'POST', { ...creation, ':authority': host, Host: 'evil.example' }, undefined, false)
    t.equal(refused.status, 400, 'a creation')
    t.equal(refused.headers.location, undefined)
    const created = await sendHttp2(server.endpoint, 'POST', { ...creation, ':authority': host, Host: host.toUpperCase() }, undefined, false)
    t.equal(created.status, 201, 'the same host, however spelt')
    t.equal(new URL(created.headers.location ?? '/none', 'http://none').host, host)
    const head = await sendHttp2(new URL(created.headers.location ?? '/none', server.origin).href, 'HEAD', { ...dialect.versioned, ':authority': host, Host: 'evil.example' }, undefined, false)
    t.equal(head.status, 400, 'a HEAD')
  })

  t.test(`${dialect.name}: a header checksum and a trailer checksum that differ are refused (400), nothing stored; the same twice is one`, async (t) => {
    const server = await startServer(t)
    const created = await dialect.create('http/1.1', server, { length: SOURCE.length })
    const sha1 = `sha1 ${createHash('sha1').update(SOURCE).digest('base64')}`
    const headers = { ...dialect.appendHeaders(0, { last: true }), 'Upload-Checksum': sha1 }
    const trailers: Array<[string, string]> = [
      ['another digest', `sha1 ${createHash('sha1').update('other').digest('base64')}`],
      ['another algorithm', `md5 ${createHash('md5').update(SOURCE).digest('base64')}`],
      ['a malformed one', 'sha1']
    ]
    for (const [what, trailer] of trailers) {
      const refused = await sendChunked(created.url, 'PATCH', headers, SOURCE, { trailers: { 'Upload-Checksum': trailer } })
      t.equal(refused.status, 400, `a trailer with ${what}`)
      t.equal(refused.headers['upload-offset'], '0')
      t.same(await stored(server, created.url), Buffer.alloc(0), `${what}: nothing stored`)
    }
    const same = await sendChunked(created.url, 'PATCH', headers, SOURCE, { trailers: { 'Upload-Checksum': sha1 } })
    t.equal(same.status, dialect.appended(true), 'the same checksum as header and trailer')
    t.equal(sha256(await stored(server, created.url)), sha256(SOURCE))
  })

  t.test(`${dialect.name}: with a store that cannot cut bytes off, chunked bodies are staged and checked first`, async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-test-'))
    t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
    const { server } = await recordingServer(t, 'http/1.1', { dir, store: delegatingTo(new FileStore({ directory: dir })) })
    const created = await dialect.create('http/1.1', server, { length: 100, body: SOURCE.subarray(0, 10) })
    let went = ''
    const mismatch = await sendChunked(created.url, 'PATCH', dialect.appendHeaders(10, {}), SOURCE.subarray(10, 50), {
      trailers: { 'Upload-Checksum': `sha1 ${createHash('sha1').update('other').digest('base64')}` },
      between: async () => { went = await firstHalfIn(server, created.url, 10) }
    })
    t.equal(went, 'staged', 'the body was staged')
    t.equal(mismatch.status, 460)
    const over = await sendChunked(created.url, 'PATCH', dialect.appendHeaders(10, {}), SOURCE.subarray(10, 150))
    t.equal(over.status, dialect.overflow)
    t.same(await stored(server, created.url), SOURCE.subarray(0, 10), 'nothing of either stored')
    t.same(await stagedBodies(server), [])
  })
}

/** The final answer on `socket` to the one request sent on it (1xx interim answers skipped); it is closed then. */
async function answerOn (socket: Socket): Promise<Response> {
  let received = ''
  const answered = new Promise<Response>((resolve, reject) => {
    socket.on('data', (data: Buffer) => {
      received += data.toString('latin1')
      // 1xx interim responses (the draft's 104 progress) come first.
      while (/^HTTP\/1\.1 1\d\d /.test(received) && received.includes('\r\n\r\n')) received = received.slice(received.indexOf('\r\n\r\n') + 4)
      const end = received.indexOf('\r\n\r\n')
      if (end === -1 || /^HTTP\/1\.1 1\d\d /.test(received)) return
      const [statusLine = '', ...lines] = received.slice(0, end).split('\r\n')
      const answer: Record<string, string> = {}
      for (const line of lines) answer[line.slice(0, line.indexOf(':')).toLowerCase()] = line.slice(line.indexOf(':') + 1).trim()
      resolve({ status: Number(statusLine.split(' ')[1]), headers: answer, body: Buffer.alloc(0), interim: [] })
      socket.destroy()
    })
    socket.on('close', () => { reject(new Error(`the connection closed before an answer: ${JSON.stringify(received)}`)) })
  })
  answered.catch(() => {})
  return await answered
}

/** An HTTP/1.1 append on a socket of its own, its head sent now: `body` is its first bytes. */
async function appendOnSocket (url: string, head: string, body: Buffer): Promise<Socket> {
  const { port, pathname, search } = new URL(url)
  const socket = connectTcp(Number(port), '127.0.0.1')
  await new Promise<void>((resolve) => socket.on('connect', resolve))
  socket.write(`PATCH ${pathname}${search} HTTP/1.1\r\nHost: 127.0.0.1\r\n${head}\r\n`)
  socket.write(body)
  return socket
}

/** `body` as one chunk of a chunked HTTP/1.1 body. */
function chunkOf (body: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${body.length.toString(16)}\r\n`), body, Buffer.from('\r\n')])
}

function headLines (headers: Record<string, string>): string {
  return Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('')
}

/** An append sent whole but for its end: `end` ends it with `trailers` and resolves with the answer (status, headers). */
interface AwaitingEnd { end: (trailers: Record<string, string>) => Promise<Response> }

/** HTTP/1.1: a chunked append on a socket of its own, its last chunk held back. */
async function appendAwaitingEndHttp1 (url: string, headers: Record<string, string>, body: Buffer): Promise<AwaitingEnd> {
  const socket = await appendOnSocket(url, `${headLines(headers)}Transfer-Encoding: chunked\r\n`, chunkOf(body))
  const answered = answerOn(socket)
  return {
    async end (trailers) {
      socket.write(`0\r\n${headLines(trailers)}\r\n`)
      return await answered
    }
  }
}

/** HTTP/2: an append on a session of its own (no Content-Length), its trailers (and the stream's end) held back. */
async function appendAwaitingEndHttp2 (url: string, headers: Record<string, string>, body: Buffer): Promise<AwaitingEnd> {
  const { origin, pathname } = new URL(url)
  const session = connectHttp2(origin)
  const lower = lowerCased(headers)
  const stream = session.request({ [http2Constants.HTTP2_HEADER_METHOD]: 'PATCH', [http2Constants.HTTP2_HEADER_PATH]: pathname, ...lower }, { waitForTrailers: true })
  const answered = new Promise<Response>((resolve, reject) => {
    stream.on('error', reject)
    stream.on('response', (response) => {
      stream.resume()
      stream.on('end', () => { resolve({ status: Number(response[':status']), headers: flatten(response), body: Buffer.alloc(0), interim: [] }) })
    })
  })
  answered.catch(() => {})
  stream.write(body)
  return {
    async end (trailers) {
      stream.once('wantTrailers', () => { stream.sendTrailers(lowerCased(trailers)) })
      stream.end()
      try {
        return await answered
      } finally {
        session.close()
      }
    }
  }
}

for (const dialect of DIALECTS) {
  for (const transport of ['http/1.1', 'h2c'] as const) {
    t.test(`${dialect.name} over ${transport}: requests for an upload whose last bytes await their end and trailer wait for the verdict`, async (t) => {
      // Between the last byte and the end of a streamed body (HTTP/1.1 chunked; HTTP/2 before its trailers), the upload
      // looks complete on disk, but a trailer checksum may still refuse it all. A HEAD must not cut the body there (the
      // upload would stay complete with bytes its checksum never saw), and a download must not send bytes that are
      // about to be cut off.
      const locker = new WatchedLocker()
      const { server, log } = await recordingServer(t, transport, { locker })
      const appendAwaitingEnd = transport === 'h2c' ? appendAwaitingEndHttp2 : appendAwaitingEndHttp1
      const created = await dialect.create(transport, server, { length: SOURCE.length, body: SOURCE.subarray(0, 10) })
      const path = join(server.dir, idOf(created.url))
      locker.watched = idOf(created.url)
      const rest = SOURCE.subarray(10)
      const corrupted = Buffer.from(rest)
      corrupted[0]! ^= 0xff
      const sha1 = `sha1 ${createHash('sha1').update(rest).digest('base64')}`
      const headers = dialect.appendHeaders(10, { last: true })

      for (const [what, ask] of [['a HEAD', dialect.offsetOf], ['a download', dialect.download]] as const) {
        const append = await appendAwaitingEnd(created.url, headers, corrupted)
        await grown(path, SOURCE.length)
        const asked = locker.asked.promise
        const waiting = ask(transport, created.url)
        // It asks for the lock; one that answers without (the failure looked for) must not leave the test waiting.
        await Promise.race([asked, waiting])
        const refused = await append.end({ 'Upload-Checksum': sha1 })
        t.equal(refused.status, 460, `${what} waiting: the trailer was still checked`)
        t.equal(refused.headers['upload-offset'], '10')
        const answer = await waiting
        if (ask === dialect.offsetOf) t.same(answer, { status: dialect === tus ? 200 : 204, offset: 10 }, 'the HEAD reports the offset after the verdict')
        else t.equal((answer as Response).status, dialect.unfinished, 'the download was not sent')
        t.same(await stored(server, created.url), SOURCE.subarray(0, 10), `${what} waiting: nothing of the refused body stays`)
      }
      t.same(log, [`hook create ${SOURCE.length}`, 'event created'], 'not completed')

      const append = await appendAwaitingEnd(created.url, headers, rest)
      await grown(path, SOURCE.length)
      const asked = locker.asked.promise
      const download = dialect.download(transport, created.url)
      await Promise.race([asked, download])
      t.equal((await append.end({ 'Upload-Checksum': sha1 })).status, dialect.appended(true))
      const downloaded = await download
      t.equal(downloaded.status, 200, 'the download waited for the completion')
      t.equal(sha256(downloaded.body), sha256(SOURCE))
      t.same(log, [`hook create ${SOURCE.length}`, 'event created', `hook complete ${SOURCE.length}`, `event completed ${SOURCE.length}`])
    })
  }
}

for (const dialect of DIALECTS) {
  t.test(`${dialect.name}: a streamed body stuck right before its end holds its upload a moment, not for idleTimeout`, async (t) => {
    // A mobile client's chunked PATCH whose connection went silent after its last byte, before its end: the client's
    // retry must find the upload (complete), not 423 until idleTimeout ends the stuck body.
    const { server, log } = await recordingServer(t, 'http/1.1', { idleTimeout: 10_000 })
    const created = await dialect.create('http/1.1', server, { length: SOURCE.length })
    const socket = await appendOnSocket(created.url, `${headLines(dialect.appendHeaders(0, { last: true }))}Transfer-Encoding: chunked\r\n`, chunkOf(SOURCE))
    const closed = once(socket, 'close')
    await grown(join(server.dir, idOf(created.url)), SOURCE.length)
    t.same(await dialect.offsetOf('http/1.1', created.url), { status: dialect === tus ? 200 : 204, offset: SOURCE.length })
    await closed
    t.equal(sha256(await stored(server, created.url)), sha256(SOURCE))
    t.same(log, [`hook create ${SOURCE.length}`, 'event created', `hook complete ${SOURCE.length}`, `event completed ${SOURCE.length}`], 'completed once')
  })
}

for (const dialect of DIALECTS) {
  t.test(`${dialect.name}: requests the app refuses never interrupt the owner's append in progress`, async (t) => {
    // Each request waiting for an upload's lock asks the request holding it to let go: that may be asked only by a
    // request onUploadAccess has let through, or anyone who knows an upload's URL could keep cutting its uploads.
    const userOf = (request: FastifyRequest): string => (request.query as { user?: string }).user ?? ''
    const server = await startServer(t, {
      onUploadCreate: (upload, request) => ({ metadata: { ...upload.metadata, owner: userOf(request) } }),
      onUploadAccess: (upload, _action, request) => { if (upload.metadata.owner !== userOf(request)) throw new TusErrors.NOT_FOUND() }
    })
    const created = await dialect.create('http/1.1', { ...server, endpoint: `${server.endpoint}?user=alice` }, { length: SOURCE.length })
    t.equal(created.status, dialect.created)
    const half = SOURCE.length / 2
    const headers = { ...dialect.appendHeaders(0, { last: true }), 'Content-Length': String(SOURCE.length) }
    const socket = await appendOnSocket(`${created.url}?user=alice`, headLines(headers), SOURCE.subarray(0, half))
    const answered = answerOn(socket)
    await grown(join(server.dir, idOf(created.url)), half)

    const bob = `${created.url}?user=bob`
    t.equal((await dialect.offsetOf('http/1.1', bob)).status, 404, 'offset retrieval')
    t.equal((await dialect.append('http/1.1', bob, half, Buffer.from('HACKS'), {})).status, 404, 'append')
    t.equal((await dialect.download('http/1.1', bob)).status, 404, 'download')
    t.equal((await dialect.remove('http/1.1', bob)).status, 404, 'removal')

    socket.write(SOURCE.subarray(half))
    const answer = await answered
    t.equal(answer.status, dialect.appended(true), 'the owner\'s append went on to its end')
    t.equal(answer.headers['upload-offset'], String(SOURCE.length))
    t.equal(sha256(await stored(server, created.url)), sha256(SOURCE))
  })

  t.test(`${dialect.name}: onUploadProgress refusing the bytes that complete the upload comes too late: it completes, once`, async (t) => {
    const reported: number[] = []
    const completed: number[] = []
    // A quota that the completing bytes cross. The store has completed the upload with them by the time the hook
    // hears of them: answering the refusal left an upload complete that never ran onUploadComplete.
    const server = await startServer(t, {
      progressInterval: 0,
      onUploadProgress: (upload) => {
        reported.push(upload.offset)
        if (upload.offset >= SOURCE.length) throw Object.assign(new Error('over quota'), { statusCode: 413 })
      },
      onUploadComplete: (upload) => { completed.push(upload.offset) }
    })
    const created = await dialect.create('http/1.1', server, { length: SOURCE.length })
    const half = SOURCE.length / 2
    t.equal((await dialect.append('http/1.1', created.url, 0, SOURCE.subarray(0, half), {})).status, dialect.appended(false))
    const last = await dialect.append('http/1.1', created.url, half, SOURCE.subarray(half), { last: true })
    t.equal(reported[reported.length - 1], SOURCE.length, 'the hook heard of the completing bytes, and refused them')
    t.equal(last.status, dialect.appended(true), 'the completing append succeeds')
    t.same(completed, [SOURCE.length], 'onUploadComplete ran once')
    t.equal(sha256(await stored(server, created.url)), sha256(SOURCE))
    t.equal((await dialect.download('http/1.1', created.url)).status, 200)
  })

  t.test(`${dialect.name}: an append refused for its body leaves a deferred length unknown, as it was; one that stands records it`, async (t) => {
    const refusing = { stop: false }
    const server = await startServer(t, { onUploadProgress: () => { if (refusing.stop) throw Object.assign(new Error('over quota'), { statusCode: 403 }) } })
    const created = await dialect.create('http/1.1', server, {})
    const length = async (): Promise<string | undefined> => (await send('http/1.1', created.url, 'HEAD', dialect.versioned)).headers['upload-length']
    const wrong = `sha1 ${createHash('sha1').update('other').digest('base64')}`
    for (const last of [false, true]) {
      const body = last ? SOURCE : SOURCE.subarray(0, 10)
      const declared = dialect.appendHeaders(0, { last, length: SOURCE.length })
      const what = last ? 'completing' : 'not completing'
      const mismatch = await send('http/1.1', created.url, 'PATCH', { ...declared, 'Upload-Checksum': wrong }, body)
      t.equal(mismatch.status, 460, `${what}: a header checksum mismatch`)
      t.equal(await length(), undefined, `${what}: no length after the mismatch`)
      const trailer = await sendChunked(created.url, 'PATCH', declared, body, { trailers: { 'Upload-Checksum': wrong } })
      t.equal(trailer.status, 460, `${what}: a trailer checksum mismatch`)
      t.equal(await length(), undefined, `${what}: no length after the trailer's mismatch`)
      refusing.stop = true
      const stopped = await send('http/1.1', created.url, 'PATCH', declared, body)
      refusing.stop = false
      t.equal(stopped.status, 403, `${what}: the progress hook refuses before the first byte`)
      t.equal(await length(), undefined, `${what}: no length after the hook's refusal`)
      t.same(await stored(server, created.url), Buffer.alloc(0), `${what}: nothing stored`)
    }
    const standing = await send('http/1.1', created.url, 'PATCH', dialect.appendHeaders(0, { length: SOURCE.length }), SOURCE.subarray(0, 10))
    t.equal(standing.status, dialect.appended(false))
    t.equal(await length(), String(SOURCE.length), 'an append that stands records the length it declared')
  })

  t.test(`${dialect.name}: an empty body framed as one (chunked, an HTTP/2 empty DATA frame) needs no Content-Type: a creation, a final`, async (t) => {
    const { server } = await recordingServer(t, 'h2c')
    const incomplete: Record<string, string> = dialect.versioned['Upload-Draft-Interop-Version'] === '3' ? { 'Upload-Incomplete': '?1' } : { 'Upload-Complete': '?0' }
    const creation: Record<string, string> = { ...dialect.versioned, ...(dialect === tus ? {} : incomplete) }
    // HTTP/2: the request's HEADERS do not end the stream, an empty DATA frame does (node's client with endStream false).
    const emptyData = async (headers: Record<string, string>): Promise<Response> => {
      const { origin, pathname } = new URL(server.endpoint)
      const session = connectHttp2(origin)
      try {
        const stream = session.request({ ':method': 'POST', ':path': pathname, ...lowerCased(headers) }, { endStream: false })
        stream.end()
        const [response] = await once(stream, 'response') as [Http2Headers]
        stream.resume()
        await once(stream, 'end')
        return { status: Number(response[':status']), headers: flatten(response), body: Buffer.alloc(0), interim: [] }
      } finally {
        session.close()
      }
    }
    const created = await emptyData({ ...creation, 'Upload-Length': '3' })
    t.equal(created.status, 201, 'HTTP/2: a creation')
    const partial = await send('h2c', server.endpoint, 'POST', { ...creation, 'Upload-Length': '3', 'Upload-Concat': 'partial', ...(dialect === tus ? OCTET : {}) }, Buffer.from('abc'))
    t.equal(partial.status, 201)
    const path = new URL(partial.headers.location!, server.origin).pathname
    const final = await emptyData({ ...dialect.versioned, 'Upload-Concat': `final;${path}` })
    t.equal(final.status, 201, 'HTTP/2: a final')
    t.equal(sha256(await stored(server, new URL(final.headers.location!, server.origin).href)), sha256(Buffer.from('abc')))
    t.equal((await emptyData({ ...dialect.versioned, 'Upload-Concat': `final;${path}`, 'Upload-Length': '3' })).status, 400, 'a final with a length is still refused')
    // HTTP/1.1: a chunked body of its last chunk only.
    const { server: plain } = await recordingServer(t, 'http/1.1')
    const plainPartial = await send('http/1.1', plain.endpoint, 'POST', { ...creation, 'Upload-Length': '3', 'Upload-Concat': 'partial', ...(dialect === tus ? OCTET : {}) }, Buffer.from('abc'))
    const plainPath = new URL(plainPartial.headers.location!, plain.origin).pathname
    const chunked = async (headers: Record<string, string>, body: Buffer): Promise<Response> => {
      const { port, pathname } = new URL(plain.endpoint)
      const socket = connectTcp(Number(port), '127.0.0.1')
      await once(socket, 'connect')
      socket.write(`POST ${pathname} HTTP/1.1\r\nHost: 127.0.0.1\r\n${headLines(headers)}Transfer-Encoding: chunked\r\n\r\n`)
      socket.write(Buffer.concat([body.length === 0 ? Buffer.alloc(0) : chunkOf(body), Buffer.from('0\r\n\r\n')]))
      return await answerOn(socket)
    }
    t.equal((await chunked({ ...creation, 'Upload-Length': '3' }, Buffer.alloc(0))).status, 201, 'HTTP/1.1: a creation')
    t.equal((await chunked({ ...dialect.versioned, 'Upload-Concat': `final;${plainPath}` }, Buffer.alloc(0))).status, 201, 'HTTP/1.1: a final')
    t.equal((await chunked({ ...dialect.versioned, 'Upload-Concat': `final;${plainPath}` }, Buffer.from('x'))).status, 400, 'a final with a byte is still refused')
    if (dialect === tus) t.equal((await chunked({ ...creation, 'Upload-Length': '3' }, Buffer.from('abc'))).status, 415, 'a byte without its Content-Type is still refused')
  })

  t.test(`${dialect.name}: a body in a transfer coding other than chunked is refused (501), its coded bytes never stored`, async (t) => {
    const server = await startServer(t)
    const created = await dialect.create('http/1.1', server, { length: SOURCE.length })
    const coded = gzipSync(SOURCE)
    for (const codings of ['gzip, chunked', 'GZIP,chunked', 'deflate , chunked']) {
      const socket = await appendOnSocket(created.url, `${headLines(dialect.appendHeaders(0, { last: true }))}Transfer-Encoding: ${codings}\r\n`, Buffer.concat([chunkOf(coded), Buffer.from('0\r\n\r\n')]))
      const answer = await answerOn(socket)
      t.equal(answer.status, 501, `Transfer-Encoding: ${codings}`)
    }
    t.same(await stored(server, created.url), Buffer.alloc(0), 'nothing stored')
    const { port, pathname } = new URL(server.endpoint)
    const creation = connectTcp(Number(port), '127.0.0.1')
    await once(creation, 'connect')
    const creationHeaders = lowerCased({ ...dialect.versioned, ...(dialect === tus ? { 'Upload-Length': String(SOURCE.length), ...OCTET } : { 'Upload-Complete': '?1' }) })
    creation.write(`POST ${pathname} HTTP/1.1\r\nHost: 127.0.0.1\r\n${headLines(creationHeaders)}Transfer-Encoding: gzip, chunked\r\n\r\n`)
    creation.write(Buffer.concat([chunkOf(coded), Buffer.from('0\r\n\r\n')]))
    const refused = await answerOn(creation)
    t.equal(refused.status, 501, 'a creation with a body in gzip')
    t.equal(refused.headers.location, undefined, 'no upload made')
    const plain = await sendChunked(created.url, 'PATCH', dialect.appendHeaders(0, { last: true }), SOURCE)
    t.equal(plain.status, dialect.appended(true), 'chunked alone is the body as it is')
    t.equal(sha256(await stored(server, created.url)), sha256(SOURCE))
  })

  t.test(`${dialect.name}: an append with a malformed or unsupported Upload-Checksum is refused (400) without interrupting the append in progress`, async (t) => {
    const server = await startServer(t)
    const created = await dialect.create('http/1.1', server, { length: SOURCE.length })
    const half = SOURCE.length / 2
    const headers = { ...dialect.appendHeaders(0, { last: true }), 'Content-Length': String(SOURCE.length) }
    const socket = await appendOnSocket(created.url, headLines(headers), SOURCE.subarray(0, half))
    const answered = answerOn(socket)
    await grown(join(server.dir, idOf(created.url)), half)
    for (const checksum of ['sha1', 'sha1 !!!', 'whirlpool AAAA']) {
      const refused = await send('http/1.1', created.url, 'PATCH', { ...dialect.appendHeaders(half, {}), 'Upload-Checksum': checksum }, Buffer.from('x'))
      t.equal(refused.status, 400, `Upload-Checksum: ${checksum}`)
    }
    socket.write(SOURCE.subarray(half))
    const answer = await answered
    t.equal(answer.status, dialect.appended(true), 'the append in progress went on to its end')
    t.equal(sha256(await stored(server, created.url)), sha256(SOURCE))
  })
}

for (const dialect of DIALECTS) {
  t.test(`${dialect.name}: a request admitted to an upload never acts on another created under its id while it waited`, async (t) => {
    // onUploadCreate may choose ids, so an upload removed while a request waits for its lock can come back as
    // someone else's: the request must find it gone (404), not write to it.
    const query = (request: FastifyRequest): { user?: string, id?: string } => request.query as { user?: string, id?: string }
    const locker = new WatchedLocker()
    const server = await startServer(t, {
      locker,
      onUploadCreate: (upload, request) => ({ id: query(request).id ?? upload.id, metadata: { ...upload.metadata, owner: query(request).user ?? '' } }),
      onUploadAccess: (upload, _action, request) => { if (upload.metadata.owner !== query(request).user) throw new TusErrors.NOT_FOUND() }
    })
    const id = 'chosen-by-the-app'
    const created = await dialect.create('http/1.1', { ...server, endpoint: `${server.endpoint}?user=alice&id=${id}` }, { length: 5 })
    t.equal(created.status, dialect.created)
    const alice = `${created.url}?user=alice`
    const { store } = server.app.tus
    // Each request of alice's, on an upload of hers of `size` bytes (a download needs a complete one).
    for (const [what, size, act] of [
      ['append', 5, async () => await dialect.append('http/1.1', alice, 0, Buffer.from('alice'), {})],
      ['offset retrieval', 5, async () => await dialect.offsetOf('http/1.1', alice)],
      ['removal', 5, async () => await dialect.remove('http/1.1', alice)],
      ['download', 0, async () => await dialect.download('http/1.1', alice)]
    ] as const) {
      await store.terminate(id)
      await store.create({ id, size, metadata: { owner: 'alice' } })
      const alices = await store.getInfo(id)
      const held = await locker.lock(id, { timeoutMs: 5000 })
      locker.watched = id
      const asked = locker.asked.promise
      const answer = act()
      await asked
      // While the request waits: its upload is removed, and one of bob's takes its id (created a moment later).
      await store.terminate(id)
      while (Date.now() <= alices.createdAt.getTime());
      await store.create({ id, size, metadata: { owner: 'bob' } })
      await held.release()
      t.equal((await answer).status, 404, `${what}: the upload it was admitted to is gone`)
      const bobs = await store.getInfo(id)
      t.same([bobs.metadata.owner, bobs.offset], ['bob', 0], `${what}: bob's upload untouched`)
    }
  })
}

/**
 * The answers to the requests pipelined on one HTTP/1.1 connection (`methods` in order), once all have come: interim
 * 1xx answers skipped, bodies read by Content-Length or chunks.
 */
async function pipelinedAnswers (socket: Socket, methods: string[]): Promise<Response[]> {
  let received = Buffer.alloc(0)
  const answers: Response[] = []
  const parse = (): void => {
    for (;;) {
      const end = received.indexOf('\r\n\r\n')
      if (end === -1) return
      const [statusLine = '', ...lines] = received.subarray(0, end).toString('latin1').split('\r\n')
      const status = Number(statusLine.split(' ')[1])
      const headers: Record<string, string> = {}
      for (const line of lines) headers[line.slice(0, line.indexOf(':')).toLowerCase()] = line.slice(line.indexOf(':') + 1).trim()
      let rest = received.subarray(end + 4)
      let body = Buffer.alloc(0)
      if (status >= 200 && methods[answers.length] !== 'HEAD' && status !== 204) {
        if (headers['transfer-encoding'] === 'chunked') {
          const chunks: Buffer[] = []
          for (;;) {
            const line = rest.indexOf('\r\n')
            if (line === -1) return
            const size = parseInt(rest.subarray(0, line).toString('latin1'), 16)
            if (rest.length < line + 2 + size + 2) return
            chunks.push(rest.subarray(line + 2, line + 2 + size))
            rest = rest.subarray(line + 2 + size + 2)
            if (size === 0) break
          }
          body = Buffer.concat(chunks)
        } else {
          const length = Number(headers['content-length'] ?? '0')
          if (rest.length < length) return
          body = rest.subarray(0, length)
          rest = rest.subarray(length)
        }
      }
      received = rest
      if (status >= 200) answers.push({ status, headers, body, interim: [] })
    }
  }
  return await new Promise((resolve, reject) => {
    socket.on('data', (data: Buffer) => {
      received = Buffer.concat([received, data])
      parse()
      if (answers.length === methods.length) resolve(answers)
    })
    socket.on('close', () => { reject(new Error(`the connection closed after ${answers.length} of ${methods.length} answers`)) })
  })
}

function requestHead (method: string, url: string, headers: Record<string, string>, length?: number): string {
  const { pathname, search } = new URL(url)
  const contentLength = length === undefined ? '' : `Content-Length: ${length}\r\n`
  return `${method} ${pathname}${search} HTTP/1.1\r\nHost: 127.0.0.1\r\n${headLines(headers)}${contentLength}\r\n`
}

for (const dialect of DIALECTS) {
  t.test(`${dialect.name}: requests pipelined behind appends on one connection are handled in order, and see what the appends stored`, async (t) => {
    // Bodies far beyond what the server reads ahead: the requests after them are read while the appends still store.
    const half = 2 * 1024 * 1024
    const first = randomBytesSeeded(half, 21)
    const second = randomBytesSeeded(half, 22)
    const server = await startServer(t)
    const created = await dialect.create('http/1.1', server, { length: 2 * half })
    t.equal(created.status, dialect.created)
    const { port } = new URL(created.url)
    const socket = connectTcp(Number(port), '127.0.0.1')
    t.teardown(() => { socket.destroy() })
    await once(socket, 'connect')
    const methods = ['PATCH', 'HEAD', 'GET', 'PATCH', 'HEAD', 'GET', 'DELETE', 'HEAD']
    const answers = pipelinedAnswers(socket, methods)
    socket.write(Buffer.concat([
      Buffer.from(requestHead('PATCH', created.url, dialect.appendHeaders(0, {}), half)), first,
      Buffer.from(requestHead('HEAD', created.url, dialect.versioned)),
      Buffer.from(requestHead('GET', created.url, dialect.versioned)),
      Buffer.from(requestHead('PATCH', created.url, dialect.appendHeaders(half, { last: true }), half)), second,
      Buffer.from(requestHead('HEAD', created.url, dialect.versioned)),
      Buffer.from(requestHead('GET', created.url, dialect.versioned)),
      Buffer.from(requestHead('DELETE', created.url, dialect.versioned)),
      Buffer.from(requestHead('HEAD', created.url, dialect.versioned))
    ]))
    const [append, offset, unfinished, last, done, download, removal, gone] = await answers
    t.same([append!.status, append!.headers['upload-offset']], [dialect.appended(false), String(half)], 'the first append stored all its bytes')
    t.same([offset!.status, offset!.headers['upload-offset']], [dialect.offsetRetrieved, String(half)], 'the HEAD behind it reports them')
    t.equal(unfinished!.status, dialect.unfinished, 'the GET behind it finds the upload unfinished')
    t.same([last!.status, last!.headers['upload-offset']], [dialect.appended(true), String(2 * half)])
    t.same([done!.status, done!.headers['upload-offset']], [dialect.offsetRetrieved, String(2 * half)])
    t.equal(download!.status, 200, 'the GET behind the completing append downloads the upload')
    t.equal(sha256(download!.body), sha256(Buffer.concat([first, second])))
    t.equal(removal!.status, 204)
    t.equal(gone!.status, 404)
    t.same(await readdir(server.dir), [], 'the upload was removed after the appends, not during one')
  })

  t.test(`${dialect.name}: a request of another connection never cuts an append whose body has all arrived`, async (t) => {
    const locker = new WatchedLocker()
    const gate = signal()
    const writing = signal()
    const store = new FileStore({ directory: await mkdtemp(join(tmpdir(), 'fastify-tus-arrived-')) })
    t.teardown(async () => { await rm(store.directory, { recursive: true, force: true }) })
    let append: FastifyRequest['raw'] | undefined
    const server = await startServer(t, {
      locker,
      store: delegatingTo(store, {
        write: async (id, offset, source, options) => {
          writing.resolve()
          await gate.promise
          return await store.write(id, offset, source, options)
        }
      }),
      auth: (request) => { if (request.method === 'PATCH') append = request.raw }
    })
    const created = await dialect.create('http/1.1', server, { length: 200_000 })
    t.equal(created.status, dialect.created)
    // Beyond what the server reads ahead (64 KiB), yet small enough to arrive whole while the store waits: the rest
    // of it waits in node's request stream, read by nobody.
    const body = randomBytesSeeded(100_000, 23)
    const appending = dialect.append('http/1.1', created.url, 0, body, {})
    await writing.promise
    while (append?.complete !== true) await new Promise((resolve) => setImmediate(resolve))
    locker.watched = idOf(created.url)
    const asked = locker.asked.promise
    const offset = dialect.offsetOf('http/1.1', created.url)
    await asked
    gate.resolve()
    const appended = await appending
    t.same([appended.status, appended.headers['upload-offset']], [dialect.appended(false), String(body.length)], 'the append was answered, every byte stored')
    t.same(await offset, { status: dialect.offsetRetrieved, offset: body.length })
    t.equal(sha256(await readFile(join(store.directory, idOf(created.url)))), sha256(body))
  })
}

for (const dialect of DIALECTS) {
  t.test(`${dialect.name}: a creation under an id another request holds is refused (409), and never cuts that request`, async (t) => {
    const query = (request: FastifyRequest): { id?: string } => request.query as { id?: string }
    const server = await startServer(t, { lockTimeout: 300, onUploadCreate: (upload, request) => ({ id: query(request).id ?? upload.id }) })
    const id = 'chosen-by-the-app'
    const chosen = { ...server, endpoint: `${server.endpoint}?id=${id}` }
    const created = await dialect.create('http/1.1', chosen, { length: 10 })
    t.equal(created.status, dialect.created)
    const data = randomBytesSeeded(5, 31)
    // An append holds the upload: three of its five bytes sent, the rest still to come.
    const socket = await appendOnSocket(created.url, `${headLines(dialect.appendHeaders(0, {}))}Content-Length: 5\r\n`, data.subarray(0, 3))
    t.teardown(() => { socket.destroy() })
    await grown(join(server.dir, id), 3)
    const answer = answerOn(socket)
    const again = await dialect.create('http/1.1', chosen, { length: 5 })
    t.same([again.status, again.headers.location], [409, undefined], 'the id is taken')
    socket.write(data.subarray(3))
    const appended = await answer
    t.same([appended.status, appended.headers['upload-offset']], [dialect.appended(false), '5'], 'the append went on to its end')
    t.equal(sha256(await readFile(join(server.dir, id))), sha256(data))
    t.same((await server.app.tus.store.getInfo(id)).size, 10, 'the upload is the first creation\'s')
  })

  t.test(`${dialect.name}: an append whose lock is lost while it writes answers 503 with Retry-After, and reports the bytes kept`, async (t) => {
    // A cross-process lock is lost when its holder froze past the lock's ttl: another process may hold it now.
    let lost = new AbortController()
    const locker = new (class extends MemoryLocker {
      override async lock (id: string, options: LockOptions): Promise<UploadLock> {
        const lock = await super.lock(id, options)
        const signal = lost.signal
        return { signal, release: async () => { await lock.release() } }
      }
    })()
    const server = await startServer(t, { locker })
    const failures: number[] = []
    server.app.tus.on('failed', (_error, upload) => { failures.push(upload.offset) })
    const created = await dialect.create('http/1.1', server, { length: 10 })
    t.equal(created.status, dialect.created)
    const data = randomBytesSeeded(5, 32)
    const socket = await appendOnSocket(created.url, `${headLines(dialect.appendHeaders(0, {}))}Content-Length: 5\r\n`, data.subarray(0, 3))
    t.teardown(() => { socket.destroy() })
    const path = join(server.dir, idOf(created.url))
    await grown(path, 3)
    const answer = answerOn(socket)
    lost.abort(new TusErrors.LOCK_FAILED('the lock was lost while held'))
    socket.write(data.subarray(3))
    const refused = await answer
    t.same([refused.status, refused.headers['retry-after'], refused.headers['upload-offset']], [503, '1', '3'])
    t.same(failures, [3], 'the failed event reports the bytes kept')
    t.equal(sha256(await readFile(path)), sha256(data.subarray(0, 3)), 'nothing written once the lock was lost')
    lost = new AbortController()
    t.same(await dialect.offsetOf('http/1.1', created.url), { status: dialect.offsetRetrieved, offset: 3 })
  })
}

/** The count of requests that stored bytes and then failed, from the metrics text. */
function failuresCounted (server: TestServer): number {
  return Number(/^tus_upload_failures_total (\d+)$/m.exec(server.app.tus.metrics())?.[1])
}

for (const dialect of DIALECTS.filter((each) => each !== tus)) {
  for (const transport of TRANSPORTS) {
    const streamed = transport === 'http/1.1 chunked' || transport === 'h2c streamed'
    t.test(`${dialect.name} over ${transport}: a request completing the upload with a body short of its length is refused, nothing of it kept`, async (t) => {
      const { server, log } = await recordingServer(t, transport)
      const failed: number[] = []
      server.app.tus.on('failed', (_error, upload) => { failed.push(upload.offset) })
      const created = await dialect.create(transport, server, { length: 100, body: SOURCE.subarray(0, 10) })
      t.equal(created.headers['upload-offset'], '10')
      const short = await dialect.append(transport, created.url, 10, SOURCE.subarray(10, 50), { last: true })
      t.equal(short.status, 400)
      t.equal(short.headers['upload-offset'], '10', 'the offset before the request')
      t.equal(sha256(await stored(server, created.url)), sha256(SOURCE.subarray(0, 10)), 'nothing of the body on disk')
      t.same(await dialect.offsetOf(transport, created.url), { status: 204, offset: 10 })
      // With Content-Length the length is refused before a byte is read: nothing stored, nothing failed.
      t.same(failed, streamed ? [10] : [], 'failed, with the offset as it stands')
      t.equal(failuresCounted(server), streamed ? 1 : 0)

      const rest = await dialect.append(transport, created.url, 10, SOURCE.subarray(10, 100), { last: true })
      t.equal(rest.status, dialect.appended(true), 'the upload goes on')
      t.equal(sha256(await stored(server, created.url)), sha256(SOURCE.subarray(0, 100)))
      t.same(log, ['hook create 100', 'event created', 'hook complete 100', 'event completed 100'])
    })

    t.test(`${dialect.name} over ${transport}: a creation completing the upload with a body short of its length keeps nothing of it`, async (t) => {
      const { server, log } = await recordingServer(t, transport)
      const failed: number[] = []
      server.app.tus.on('failed', (_error, upload) => { failed.push(upload.offset) })
      const created = await dialect.create(transport, server, { length: 100, body: SOURCE.subarray(0, 40), last: true })
      t.equal(created.status, 400)
      if (!streamed) {
        t.same(log, [], 'refused before the upload exists')
        return
      }
      t.equal(created.headers['upload-offset'], '0')
      t.equal((await stored(server, created.url)).length, 0, 'nothing of the body on disk')
      t.same(failed, [0])
      t.equal(failuresCounted(server), 1)
      const rest = await dialect.append(transport, created.url, 0, SOURCE.subarray(0, 100), { last: true })
      t.equal(rest.status, dialect.appended(true), 'the upload goes on')
      t.equal(sha256(await stored(server, created.url)), sha256(SOURCE.subarray(0, 100)))
      t.same(log, ['hook create 100', 'event created', 'hook complete 100', 'event completed 100'])
    })
  }
}

for (const dialect of DIALECTS) {
  t.test(`${dialect.name}: progress reports of a checksummed body end where the upload stands, its bytes dropped or committed`, async (t) => {
    const hooked: number[] = []
    const { server } = await recordingServer(t, 'http/1.1', { onUploadProgress: (upload) => { hooked.push(upload.offset) } })
    const emitted: number[] = []
    server.app.tus.on('progress', (upload) => { emitted.push(upload.offset) })
    const failed: number[] = []
    server.app.tus.on('failed', (_error, upload) => { failed.push(upload.offset) })
    /** The offsets reported since the last call, the hook's and the event's alike. */
    const reported = (): number[] => {
      t.same(emitted, hooked, 'the event reports what the hook saw')
      const offsets = [...hooked]
      hooked.length = 0
      emitted.length = 0
      return offsets
    }
    const body = SOURCE.subarray(0, 1000)
    const checksum = (bytes: Buffer): Record<string, string> => ({ 'Upload-Checksum': `sha1 ${createHash('sha1').update(bytes).digest('base64')}` })
    const created = await dialect.create('http/1.1', server, { length: body.length })

    const socket = await appendOnSocket(created.url, `${headLines({ ...dialect.appendHeaders(0, {}), ...checksum(body) })}Content-Length: 1000\r\n`, body.subarray(0, 400))
    t.equal(await firstHalfIn(server, created.url, 0), 'staged')
    socket.destroy()
    // An empty append waits for the upload's lock, so it answers after the cut request is done.
    t.equal((await dialect.append('http/1.1', created.url, 0, Buffer.alloc(0), {})).headers['upload-offset'], '0', 'nothing of the cut body kept')
    t.equal(reported().at(-1), 0, 'cut short: the last report says nothing was kept')

    const mismatch = await send('http/1.1', created.url, 'PATCH', { ...dialect.appendHeaders(0, {}), ...checksum(Buffer.from('other')) }, body.subarray(0, 500))
    t.equal(mismatch.status, 460)
    t.same(reported().at(-1), 0, 'a mismatch: the last report says nothing was kept')
    t.same(failed, [0])
    // The draft's 104s only move forward (they report bytes received): the answer tells the offset.
    t.equal(mismatch.headers['upload-offset'], '0', 'the answer says nothing was kept')

    const first = await send('http/1.1', created.url, 'PATCH', { ...dialect.appendHeaders(0, {}), ...checksum(body.subarray(0, 400)) }, body.subarray(0, 400))
    t.equal(first.status, dialect.appended(false))
    t.same(reported(), [0, 400], 'committed: reported')
    if (dialect.name.startsWith('draft') && Number(dialect.versioned['Upload-Draft-Interop-Version']) >= 5) {
      t.equal(first.interim.at(-1)?.['upload-offset'], '400', 'the last 104 says the same')
    }
    t.equal(sha256(await stored(server, created.url)), sha256(body.subarray(0, 400)))
  })
}

for (const dialect of DIALECTS) {
  t.test(`${dialect.name}: a Content-Length with leading zeros (RFC 9110: 1*DIGIT) is the length it says, on a creation and on appends`, async (t) => {
    const server = await startServer(t)
    const exchange = async (method: string, url: string, headers: Record<string, string>, length: string, body: string): Promise<Response> => {
      const socket = connectTcp(Number(new URL(url).port), '127.0.0.1')
      await once(socket, 'connect')
      socket.write(`${requestHead(method, url, { ...headers, 'Content-Length': length })}${body}`)
      return await answerOn(socket)
    }
    const created = await exchange('POST', server.endpoint, dialect.createHeaders({ length: 13, withBody: true }), '003', 'abc')
    t.equal(created.status, dialect.created)
    // The Host sent names no port: the path of Location, on the server's origin.
    const url = `${server.origin}${new URL(created.headers.location!, server.origin).pathname}`
    t.equal((await exchange('PATCH', url, dialect.appendHeaders(3, {}), '005', 'hello')).status, dialect.appended(false))
    t.equal((await exchange('PATCH', url, dialect.appendHeaders(8, {}), '00', '')).status, dialect.appended(false), 'an empty append')
    t.equal((await exchange('PATCH', url, dialect.appendHeaders(8, { last: true }), '05', 'world')).status, dialect.appended(true))
    t.equal((await stored(server, url)).toString(), 'abchelloworld')
    const empty = await exchange('POST', server.endpoint, dialect.createHeaders({ length: 1, withBody: false }), '00', '')
    t.equal(empty.status, dialect.created, 'Content-Length: 00 is no body (tus: no Content-Type needed)')
  })
}
