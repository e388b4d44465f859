import t from 'tap'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { appendFile, readFile, stat, truncate, utimes } from 'node:fs/promises'
import { Agent, request as httpRequest } from 'node:http'
import { connect as connectHttp2 } from 'node:http2'
import { connect as connectTcp, type Socket } from 'node:net'
import { join } from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { FastifyServerOptions } from 'fastify'
import tusPlugin, { FileStore, MemoryLocker, type LockOptions, type UploadLock, type UploadLocker } from '../lib/index.js'
import { retryLater, TusErrors } from '../lib/errors.js'
import { createUpload, idOf, randomBytesSeeded, rawRequest, send, sha256, startServer, tusRequest } from './helpers.js'

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }

function metadata (fields: Record<string, string>): string {
  return Object.entries(fields).map(([key, value]) => `${key} ${Buffer.from(value).toString('base64')}`).join(',')
}

async function finishedUpload (t: Parameters<typeof startServer>[0], data: Buffer, fields: Record<string, string> = {}) {
  const server = await startServer(t)
  const created = await tusRequest(server.endpoint, {
    method: 'POST',
    headers: { 'Upload-Length': String(data.length), 'Upload-Metadata': metadata(fields), ...OCTET },
    body: data
  })
  if (created.status !== 201) throw new Error(created.text)
  return { server, url: created.headers.location! }
}

t.test('GET downloads a finished upload with type, disposition and length from the metadata', async (t) => {
  const data = randomBytesSeeded(200_000)
  const { url } = await finishedUpload(t, data, { filename: 'report 2026.pdf', filetype: 'application/pdf' })
  const response = await tusRequest(url)
  t.equal(response.status, 200)
  t.equal(sha256(response.body), sha256(data))
  t.equal(response.headers['content-length'], '200000')
  t.equal(response.headers['content-type'], 'application/pdf')
  t.equal(response.headers['content-disposition'], 'attachment; filename="report 2026.pdf"; filename*=UTF-8\'\'report%202026.pdf')
  t.equal(response.headers['x-content-type-options'], 'nosniff')
  t.equal(response.headers['accept-ranges'], 'bytes')
  t.equal(response.headers['tus-resumable'], '1.0.0')
})

t.test('hostile filenames and types are never reflected raw into headers', async (t) => {
  const data = Buffer.from('x')
  const { url } = await finishedUpload(t, data, {
    filename: '../../etc/pass"wd\r\nSet-Cookie: a=b ünï.txt',
    filetype: 'text/html\r\nX-Injected: 1'
  })
  const response = await tusRequest(url)
  t.equal(response.status, 200)
  t.equal(response.headers['x-injected'], undefined)
  t.equal(response.headers['set-cookie'], undefined)
  t.equal(response.headers['content-type'], 'application/octet-stream', 'an invalid type falls back')
  t.equal(response.headers['content-disposition'],
    'attachment; filename=".._.._etc_pass_wdSet-Cookie: a=b _n_.txt"; ' +
    "filename*=UTF-8''.._.._etc_pass%22wdSet-Cookie%3A%20a%3Db%20%C3%BCn%C3%AF.txt")
})

/** The download of `url` through tus and the draft versions whose GET is a download (6) or offset retrieval (9). */
const DOWNLOADERS: Array<[string, Record<string, string>]> = [
  ['tus', { 'Tus-Resumable': '1.0.0' }], ['draft 6', { 'Upload-Draft-Interop-Version': '6' }], ['draft 9', { 'Upload-Draft-Interop-Version': '9' }]
]

t.test('invisible controls that reorder or break a filename are removed, and a name that is a path step is the id', async (t) => {
  const server = await startServer(t)
  const names: Array<[string, (id: string) => string]> = [
    ['\u202egnp.exe', () => 'attachment; filename="gnp.exe"; filename*=UTF-8\'\'gnp.exe'],
    ['a\u0085b\u200bc\u2066d\u2069\u061c\ufeff.txt', () => 'attachment; filename="abcd.txt"; filename*=UTF-8\'\'abcd.txt'],
    ['..', (id) => `attachment; filename="${id}"; filename*=UTF-8''${id}`],
    ['.\u202e', (id) => `attachment; filename="${id}"; filename*=UTF-8''${id}`]
  ]
  for (const [filename, expected] of names) {
    const metadata = `filename ${Buffer.from(filename).toString('base64')}`
    const url = await createUpload(server, { 'Upload-Length': '1', 'Upload-Metadata': metadata })
    t.equal((await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }, body: 'x' })).status, 204)
    for (const [protocol, headers] of DOWNLOADERS) {
      const response = await tusRequest(url, { headers })
      t.equal(response.headers['content-disposition'], expected(idOf(url)), `${protocol}: ${JSON.stringify(filename)}`)
    }
  }
})

t.test('a filetype whose parameters follow a line break (or U+2028, U+00A0) is no media type: served as octet-stream, in every protocol', async (t) => {
  const data = randomBytesSeeded(3000, 8)
  const server = await startServer(t)
  // Named by their escapes: a raw U+2028 in an assertion's name would end its TAP line.
  for (const [label, filetype] of [['CR LF', 'text/plain\r\n;charset=utf-8'], ['LF', 'text/html\n;a=b'], ['U+2028', 'text/plain\u2028;a=b'], ['U+00A0', 'text/plain\u00a0;a=b']] as const) {
    const created = await tusRequest(server.endpoint, {
      method: 'POST', headers: { 'Upload-Length': String(data.length), 'Upload-Metadata': metadata({ filetype }), ...OCTET }, body: data
    })
    t.equal(created.status, 201)
    t.equal(sha256(await readFile(join(server.dir, idOf(created.headers.location!)))), sha256(data), 'stored whole')
    for (const [name, headers] of DOWNLOADERS) {
      const response = await rawRequest(created.headers.location!, { headers })
      t.equal(response.status, 200, `${name}: a filetype with ${label} downloads`)
      t.equal(response.headers['content-type'], 'application/octet-stream')
      t.equal(sha256(response.body), sha256(data))
    }
  }
  const tab = await tusRequest(server.endpoint, {
    method: 'POST', headers: { 'Upload-Length': '1', 'Upload-Metadata': metadata({ filetype: 'text/plain;\tcharset=utf-8' }), ...OCTET }, body: 'x'
  })
  t.equal((await tusRequest(tab.headers.location!)).headers['content-type'], 'text/plain;\tcharset=utf-8', 'spaces and tabs around ";" are still allowed')
})

t.test('a file name cut in the middle of an emoji never breaks its download: the draft cuts before it, U+FFFD for a lone half from elsewhere', async (t) => {
  const data = Buffer.from(randomBytesSeeded(1000, 9).toString('hex'))
  // A name an app's onUploadCreate cut in half of a surrogate pair (tus metadata itself is strict UTF-8).
  const server = await startServer(t, {
    onUploadCreate: (upload) => upload.metadata.cut === undefined ? undefined : { metadata: { filename: 'report\ud83d.txt' } }
  })
  const long = 'a'.repeat(254)
  for (const version of [3, 6, 9]) {
    const complete: Record<string, string> = version === 3 ? { 'Upload-Incomplete': '?0' } : { 'Upload-Complete': '?1' }
    const headers = {
      'Upload-Draft-Interop-Version': String(version),
      ...complete,
      'Content-Type': 'text/plain',
      'Content-Disposition': `attachment; filename*=UTF-8''${long}%F0%9F%98%80.txt`,
      'Content-Length': String(data.length)
    }
    const created = await send(server.endpoint, 'POST', headers, data.toString())
    t.equal(created.status, 201, `draft ${version} creation`)
    const url = new URL(created.headers.location!, server.origin).href
    t.equal(sha256(await readFile(join(server.dir, idOf(url)))), sha256(data), 'stored whole')
    const head = await tusRequest(url, { method: 'HEAD' })
    t.equal(head.headers['upload-metadata'], `filetype ${Buffer.from('text/plain').toString('base64')},filename ${Buffer.from(long).toString('base64')}`, 'the name stops before the emoji it could not hold')
    for (const [name, headers] of DOWNLOADERS) {
      const response = await rawRequest(url, { headers })
      t.equal(response.status, 200, `draft ${version} upload, ${name} download`)
      t.equal(response.headers['content-disposition'], `attachment; filename="${long}"; filename*=UTF-8''${long}`)
      t.equal(sha256(response.body), sha256(data))
    }
  }
  const created = await tusRequest(server.endpoint, {
    method: 'POST', headers: { 'Upload-Length': String(data.length), 'Upload-Metadata': 'cut', ...OCTET }, body: data
  })
  t.equal(created.status, 201)
  for (const [name, headers] of DOWNLOADERS) {
    const response = await rawRequest(created.headers.location!, { headers })
    t.equal(response.status, 200, `${name}: a lone surrogate from onUploadCreate`)
    t.equal(response.headers['content-disposition'], 'attachment; filename="report_.txt"; filename*=UTF-8\'\'report%EF%BF%BD.txt')
    t.equal(sha256(response.body), sha256(data))
  }
})

t.test('without metadata the id names the download and the type is octet-stream', async (t) => {
  const { url } = await finishedUpload(t, Buffer.from('abc'))
  const response = await tusRequest(url)
  const id = new URL(url).pathname.split('/').pop()!
  t.equal(response.headers['content-type'], 'application/octet-stream')
  t.equal(response.headers['content-disposition'], `attachment; filename="${id}"; filename*=UTF-8''${id}`)
})

t.test('Range requests get 206 with the right bytes; unsatisfiable ones 416', async (t) => {
  const data = randomBytesSeeded(1000, 7)
  const { url } = await finishedUpload(t, data)
  const cases: Array<[string, number, number]> = [
    ['bytes=0-9', 0, 9],
    ['bytes=990-', 990, 999],
    ['bytes=-5', 995, 999],
    ['bytes=500-5000', 500, 999],
    ['bytes=-5000', 0, 999],
    ['BYTES=0-9', 0, 9],
    ['Bytes=-5', 995, 999]
  ]
  for (const [range, start, end] of cases) {
    const response = await tusRequest(url, { headers: { Range: range } })
    t.equal(response.status, 206, range)
    t.equal(response.headers['content-range'], `bytes ${start}-${end}/1000`)
    t.equal(response.headers['content-length'], String(end - start + 1))
    t.same(response.body, data.subarray(start, end + 1))
  }
  for (const range of ['bytes=1000-', 'bytes=5000-6000', 'bytes=-0']) {
    const response = await tusRequest(url, { headers: { Range: range } })
    t.equal(response.status, 416, range)
    t.equal(response.headers['content-range'], 'bytes */1000')
    t.match(response.text, /cannot be satisfied/)
  }
  for (const range of ['bytes=0-1,5-6', 'items=0-1', 'bytes=9-3']) {
    const response = await tusRequest(url, { headers: { Range: range } })
    t.equal(response.status, 200, `${range} is ignored`)
    t.equal(response.body.length, 1000)
  }
})

t.test('If-Range: a range only of the bytes the client has part of; an upload replaced under its URL comes whole (tus, drafts)', async (t) => {
  // An app that names uploads itself (onUploadCreate) can remove one and make another under the same URL.
  const server = await startServer(t, { onUploadCreate: (upload) => ({ id: upload.metadata.slot ?? upload.id }) })
  const slot = `slot ${Buffer.from('report').toString('base64')}`
  const path = join(server.dir, 'report')
  const put = async (data: Buffer, daysOld: number): Promise<string> => {
    const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': String(data.length), 'Upload-Metadata': slot, ...OCTET }, body: data })
    t.equal(created.status, 201)
    if (daysOld !== 0) await utimes(path, new Date(Date.now() - daysOld * 86_400_000), new Date(Date.now() - daysOld * 86_400_000))
    t.equal(sha256(await readFile(path)), sha256(data), 'stored whole')
    return created.headers.location!
  }
  const first = randomBytesSeeded(5000, 10)
  const url = await put(first, 2)
  const lastModified = (await tusRequest(url)).headers['last-modified']!
  t.equal(lastModified, (await stat(path)).mtime.toUTCString(), 'Last-Modified is the data file\'s')
  for (const [name, headers] of DOWNLOADERS) {
    const resumed = await rawRequest(url, { headers: { ...headers, Range: 'bytes=1000-', 'If-Range': lastModified } })
    t.equal(resumed.status, 206, `${name}: If-Range with the Last-Modified sent: the range`)
    t.equal(resumed.headers['content-range'], 'bytes 1000-4999/5000')
    t.equal(sha256(resumed.body), sha256(first.subarray(1000)))
    for (const validator of ['"an-etag"', 'W/"an-etag"', new Date(Date.now() - 86_400_000).toUTCString()]) {
      const whole = await rawRequest(url, { headers: { ...headers, Range: 'bytes=1000-', 'If-Range': validator } })
      t.equal(whole.status, 200, `${name}: If-Range ${validator} names other bytes: the whole upload`)
      t.equal(whole.headers['content-range'], undefined)
      t.equal(sha256(whole.body), sha256(first))
    }
  }

  t.equal((await tusRequest(url, { method: 'DELETE' })).status, 204)
  const second = randomBytesSeeded(5000, 11)
  t.equal(await put(second, 1), url, 'the same URL')
  for (const [name, headers] of DOWNLOADERS) {
    const resumed = await rawRequest(url, { headers: { ...headers, Range: 'bytes=1000-', 'If-Range': lastModified } })
    t.equal(resumed.status, 200, `${name}: a download of the removed upload resumed: the new one whole`)
    t.equal(sha256(resumed.body), sha256(second))
  }

  // A Last-Modified less than a second before now is weak (RFC 9110 8.8.2.2): it cannot say the bytes are the same
  // (one a clock ahead is the case that needs no timing).
  t.equal((await tusRequest(url, { method: 'DELETE' })).status, 204)
  await put(first, -1)
  const fresh = (await tusRequest(url)).headers['last-modified']!
  const weak = await tusRequest(url, { headers: { Range: 'bytes=1000-', 'If-Range': fresh } })
  t.equal(weak.status, 200, 'a Last-Modified not a second in the past: the whole upload')
  t.equal(sha256(weak.body), sha256(first))
})

t.test('GET of an unfinished upload is 409; of an unknown or invalid id 404', async (t) => {
  const server = await startServer(t)
  const url = await createUpload(server, { 'Upload-Length': '10' })
  await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: 'abc' })
  const unfinished = await tusRequest(url)
  t.equal(unfinished.status, 409)
  t.equal(unfinished.text, 'Upload is not complete yet (3 of 10 bytes)')
  const deferred = await createUpload(server, { 'Upload-Defer-Length': '1' })
  t.equal((await tusRequest(deferred)).status, 409)
  // Sent verbatim (node:http does not normalise paths the way URL parsing does).
  for (const id of ['AAAAAAAAAAAAAAAAAAAAA', '..', '%2e%2e', '..%2f..%2fetc%2fpasswd', '%00', 'a.json', '%2Fetc%2Fpasswd']) {
    for (const method of ['GET', 'HEAD', 'DELETE']) {
      const response = await verbatim(server.origin, method, `/files/${id}`)
      t.equal(response.status, 404, `${method} ${id}`)
      t.equal(response.headers['tus-resumable'], '1.0.0')
    }
  }
})

async function verbatim (origin: string, method: string, path: string): Promise<{ status: number, headers: Record<string, unknown> }> {
  const { port } = new URL(origin)
  return await new Promise((resolve, reject) => {
    const request = httpRequest({ host: '127.0.0.1', port, method, path, headers: { 'Tus-Resumable': '1.0.0' } }, (response) => {
      response.resume()
      response.on('end', () => { resolve({ status: response.statusCode!, headers: response.headers }) })
    })
    request.on('error', reject)
    request.end()
  })
}

/**
 * GETs `url` (own connection, closed after) and hashes the body. The reader waits before it reads anything until
 * the server has writes queued behind a full socket (`queued` resolves): every chunk is then sent long after the
 * response took it, which is when a chunk freed too early would show.
 */
async function slowGet (
  url: string, headers: Record<string, string>, queued: () => Promise<void>, agent: Agent | false = false
): Promise<{ status: number, sha256: string, bytes: number }> {
  return await new Promise((resolve, reject) => {
    const request = httpRequest(url, { headers, agent }, (response) => {
      response.pause()
      const hash = createHash('sha256')
      let bytes = 0
      queued().then(() => {
        response.on('data', (chunk: Buffer) => { hash.update(chunk); bytes += chunk.length })
        response.on('end', () => { resolve({ status: response.statusCode!, sha256: hash.digest('hex'), bytes }) })
        response.on('error', reject)
        response.resume()
      }, reject)
    })
    request.on('error', reject)
    request.end()
  })
}

/** Resolves once a server-side socket has bytes waiting to be written (turns of the event loop, no timer). */
async function writesQueued (sockets: Set<Socket>): Promise<void> {
  while (![...sockets].some((socket) => socket.writableLength > 0)) await new Promise((resolve) => setImmediate(resolve))
}

const LARGE = randomBytesSeeded(24 * 1024 * 1024 + 11, 5)

for (const [name, headers] of [['tus', {}], ['draft interop 6', { 'Upload-Draft-Interop-Version': '6' }], ['draft interop 8', { 'Upload-Draft-Interop-Version': '8' }]] as const) {
  t.test(`${name}: a download read slowly arrives whole, whole or as a range (each chunk freed only once sent)`, async (t) => {
    const { server, url } = await finishedUpload(t, LARGE)
    const sockets = new Set<Socket>()
    server.app.server.on('connection', (socket: Socket) => { sockets.add(socket) })
    const whole = await slowGet(url, headers, async () => { await writesQueued(sockets) })
    t.equal(whole.status, 200)
    t.equal(whole.bytes, LARGE.length)
    t.equal(whole.sha256, sha256(LARGE), 'every byte as stored')
    sockets.clear()
    const range = await slowGet(url, { ...headers, Range: 'bytes=1000-20000000' }, async () => { await writesQueued(sockets) })
    t.equal(range.status, 206)
    t.equal(range.sha256, sha256(LARGE.subarray(1000, 20_000_001)))
  })
}

for (const [name, headers] of [['tus', {}], ['draft interop 6', { 'Upload-Draft-Interop-Version': '6' }], ['draft interop 9', { 'Upload-Draft-Interop-Version': '9' }]] as const) {
  t.test(`${name}: a download running when the server begins to close is sent whole, and the close ends with it`, async (t) => {
    const server = await startServer(t, {}, undefined, { return503OnClosing: false })
    const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': String(LARGE.length), ...OCTET }, body: LARGE })
    const url = created.headers.location!
    t.equal(sha256(await readFile(join(server.dir, idOf(url)))), sha256(LARGE), 'stored whole')
    const sockets = new Set<Socket>()
    server.app.server.on('connection', (socket: Socket) => { sockets.add(socket) })
    // As a browser does, the client keeps its connection for a next request: its response said keep-alive.
    const agent = new Agent({ keepAlive: true })
    t.teardown(() => { agent.destroy() })
    let closing: Promise<void> | undefined
    const download = await slowGet(url, headers, async () => {
      await writesQueued(sockets)
      closing = server.app.close()
    }, agent)
    t.equal(download.status, 200)
    t.equal(download.sha256, sha256(LARGE), 'every byte as stored')
    // Before, the close went on waiting for the kept-alive connection: for the client, or Fastify's 72 s timeout.
    let timer: NodeJS.Timeout | undefined
    const outcome = await Promise.race([
      closing!.then(() => 'closed'),
      new Promise<string>((resolve) => { timer = setTimeout(() => { resolve('still closing 10 s after the last byte') }, 10_000) })
    ])
    clearTimeout(timer)
    t.equal(outcome, 'closed', 'app.close() ended once the download was sent')
  })
}

t.test('an onSend hook that keeps the payload\'s chunks gets them whole (only a download piped straight into the response frees them)', async (t) => {
  const data = randomBytesSeeded(3 * 1024 * 1024 + 5, 6)
  const server = await startServer(t, {}, async (app, dir) => {
    // Reads the stream payload into memory, keeping every chunk it is given until the end, then sends the copy.
    app.addHook('onSend', async (_request, _reply, payload) => {
      if (!(payload instanceof Readable)) return payload
      const kept: Buffer[] = []
      await pipeline(payload, new Writable({ write (chunk: Buffer, _encoding, callback) { kept.push(chunk); callback() } }))
      return Buffer.concat(kept)
    })
    await app.register(tusPlugin, { dir })
  })
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': String(data.length), ...OCTET }, body: data })
  const response = await tusRequest(created.headers.location!)
  t.equal(response.status, 200)
  t.equal(sha256(response.body), sha256(data))
})

t.test('over HTTP/2 a download arrives whole', async (t) => {
  const data = randomBytesSeeded(5 * 1024 * 1024 + 3, 7)
  const server = await startServer(t, {}, undefined, { http2: true } as FastifyServerOptions)
  const session = connectHttp2(server.origin)
  t.teardown(() => { session.close() })
  const upload = async (headers: Record<string, string>, body?: Buffer): Promise<{ status: number, headers: Record<string, unknown>, body: Buffer }> =>
    await new Promise((resolve, reject) => {
      const stream = session.request(headers, { endStream: body === undefined })
      const chunks: Buffer[] = []
      let head: Record<string, unknown> = {}
      stream.on('response', (response) => { head = response })
      stream.on('data', (chunk: Buffer) => chunks.push(chunk))
      stream.on('end', () => { resolve({ status: Number(head[':status']), headers: head, body: Buffer.concat(chunks) }) })
      stream.on('error', reject)
      if (body !== undefined) stream.end(body)
    })
  const created = await upload({ ':method': 'POST', ':path': '/files', 'tus-resumable': '1.0.0', 'upload-length': String(data.length), 'content-type': 'application/offset+octet-stream', 'content-length': String(data.length) }, data)
  t.equal(created.status, 201)
  const download = await upload({ ':method': 'GET', ':path': new URL(String(created.headers.location), server.origin).pathname })
  t.equal(download.status, 200)
  t.equal(sha256(download.body), sha256(data))
})

/** A real FileStore whose data file another tool changes right before a download reads it. */
class ChangedUnderDownloadStore extends FileStore {
  change: ((path: string) => Promise<void>) | undefined
  override async read (id: string, range?: { start: number, end: number }): ReturnType<FileStore['read']> {
    await this.change?.(`${this.directory}/${id}`)
    return await super.read(id, range)
  }
}

/**
 * A GET on a fresh kept-alive connection (as browsers and tus-js-client keep theirs): its status and how many body
 * bytes came before the response ended or was cut.
 */
async function getCounted (url: string, headers: Record<string, string>): Promise<{ status: number, bytes: number, complete: boolean }> {
  const agent = new Agent({ keepAlive: true })
  return await new Promise<{ status: number, bytes: number, complete: boolean }>((resolve, reject) => {
    const request = httpRequest(url, { headers, agent }, (response) => {
      let bytes = 0
      response.on('data', (chunk: Buffer) => { bytes += chunk.length })
      response.on('error', () => undefined)
      response.on('close', () => { resolve({ status: response.statusCode ?? 0, bytes, complete: response.complete }) })
    })
    request.on('error', reject)
    request.end()
  }).finally(() => { agent.destroy() })
}

for (const [name, headers] of [['tus', {}], ['draft interop 6', { 'Upload-Draft-Interop-Version': '6' }], ['draft interop 8', { 'Upload-Draft-Interop-Version': '8' }]] as const) {
  t.test(`${name}: a download whose data file another tool shortens or lengthens under it is cut, not left waiting or overrun`, async (t) => {
    const data = randomBytesSeeded(300_000, 12)
    const logged: Array<{ msg: string, expected?: number, sent?: number }> = []
    const stream = new Writable({
      write (line: Buffer, _encoding, callback) { logged.push(JSON.parse(line.toString())); callback() }
    })
    let store: ChangedUnderDownloadStore | undefined
    const server = await startServer(t, {}, async (app, dir) => {
      store = new ChangedUnderDownloadStore({ directory: dir })
      await app.register(tusPlugin, { dir, store })
    }, { logger: { level: 'error', stream } } as FastifyServerOptions)
    const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': String(data.length), ...OCTET }, body: data })
    t.equal(created.status, 201)
    const url = created.headers.location!
    const cases: Array<[string, Record<string, string>, (path: string) => Promise<void>, number]> = [
      ['shortened, whole', {}, async (path) => { await truncate(path, 100_000) }, 300_000],
      ['shortened, a range', { Range: 'bytes=50000-' }, async (path) => { await truncate(path, 100_000) }, 250_000],
      ['lengthened, whole', {}, async (path) => { await appendFile(path, randomBytesSeeded(70_000, 13)) }, 300_000]
    ]
    for (const [what, range, change, length] of cases) {
      await truncate(`${server.dir}/${idOf(url)}`, 0)
      await appendFile(`${server.dir}/${idOf(url)}`, data)
      store!.change = change
      logged.length = 0
      const cut = await getCounted(url, { ...headers, ...range })
      t.equal(cut.status, range.Range === undefined ? 200 : 206, what)
      t.notOk(cut.complete, `${what}: the response is cut, so the client knows it is broken`)
      t.ok(cut.bytes <= length, `${what}: never more than the announced length (${cut.bytes})`)
      t.same(logged.map((entry) => [entry.expected, entry.msg.includes('did not match its length')]), [[length, true]], `${what}: logged once`)
    }
    store!.change = undefined
    await truncate(`${server.dir}/${idOf(url)}`, 0)
    await appendFile(`${server.dir}/${idOf(url)}`, data)
    const whole = await tusRequest(url, { headers })
    t.equal(whole.status, 200, 'the next download, of the restored file, is whole')
    t.equal(sha256(whole.body), sha256(data))
  })
}

/** A lock service that can go down: while it is, every lock fails as RedisLocker's do in an outage (503). */
class FailingLocker implements UploadLocker {
  down = false
  readonly #inner = new MemoryLocker()
  async lock (id: string, options: LockOptions): Promise<UploadLock> {
    if (this.down) throw retryLater(new TusErrors.LOCK_FAILED('the lock service is unreachable'), 1)
    return await this.#inner.lock(id, options)
  }
}

t.test('while the lock service is down, finished uploads still download (tus, draft 6); what needs the lock gets 503', async (t) => {
  const locker = new FailingLocker()
  const server = await startServer(t, { locker })
  const data = randomBytesSeeded(50_000, 9)
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': String(data.length), ...OCTET }, body: data })
  t.equal(created.status, 201)
  const url = created.headers.location!
  locker.down = true
  const dialects: Array<Record<string, string>> = [{}, { 'Upload-Draft-Interop-Version': '6' }]
  for (const headers of dialects) {
    const download = await tusRequest(url, { headers })
    t.equal(download.status, 200, JSON.stringify(headers))
    t.equal(sha256(download.body), sha256(data))
  }
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.status, 503)
  t.equal(head.headers['retry-after'], '1')
})

for (const [name, headers] of [['tus', { 'Tus-Resumable': '1.0.0' }], ['draft interop 6', { 'Upload-Draft-Interop-Version': '6' }], ['draft interop 9', { 'Upload-Draft-Interop-Version': '9' }]] as const) {
  t.test(`${name}: a download whose client takes no byte for idleTimeout is cut, and the upload stays whole`, async (t) => {
    const data = randomBytesSeeded(32 * 1024 * 1024, 7)
    let stalled: () => void = () => undefined
    const stallLogged = new Promise<void>((resolve) => { stalled = resolve })
    const server = await startServer(t, { idleTimeout: 300 }, undefined, {
      logger: { level: 'warn', stream: { write: (line: string) => { if (line.includes('took no byte for idleTimeout')) stalled() } } }
    })
    const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': String(data.length), ...OCTET }, body: data })
    t.equal(created.status, 201)
    const path = new URL(created.headers.location!).pathname

    const socket = connectTcp(Number(new URL(server.origin).port), '127.0.0.1')
    socket.pause()
    const closed = once(socket, 'close')
    const head = Object.entries(headers).map(([key, value]) => `${key}: ${value}\r\n`).join('')
    socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${head}\r\n`)
    await stallLogged
    let received = 0
    socket.on('data', (chunk: Buffer) => { received += chunk.length })
    socket.on('error', () => undefined)
    socket.resume()
    await closed
    t.ok(received < data.length, `the response was cut (${received} of ${data.length} bytes and its head)`)

    const whole = await rawRequest(`${server.origin}${path}`, { headers })
    t.equal(whole.status, 200)
    t.equal(sha256(whole.body), sha256(data), 'the upload is still whole')
  })
}
