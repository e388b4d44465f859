// Shared test helpers: a real server on 127.0.0.1, raw HTTP requests, hashes and a tus-js-client wrapper.
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises'
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import type { Readable } from 'node:stream'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { Upload, type UploadOptions } from 'tus-js-client'
import { request as undiciRequest } from 'undici'
import type { Test } from 'tap'
import tusPlugin, { type DataStore, type FileStore, type TusPluginOptions, type UploadInfo } from '../lib/index.js'
import { MemoryLocker, type LockOptions, type UploadLock } from '../lib/lockers/lock.js'

export interface TestServer {
  app: FastifyInstance
  /** http://127.0.0.1:PORT */
  origin: string
  /** origin + prefix + '/', the tus creation endpoint */
  endpoint: string
  /** the upload directory (a fresh temp dir unless given) */
  dir: string
}

interface Teardown { teardown: (fn: () => unknown) => void }

/**
 * `app.tus.removeExpired()`, with the uploads it removed as its `expired` events named them (in the order removed);
 * throws unless it resolved with as many.
 */
export async function removeExpired (app: FastifyInstance): Promise<UploadInfo[]> {
  const removed: UploadInfo[] = []
  const listener = (upload: UploadInfo): void => { removed.push(upload) }
  app.tus.on('expired', listener)
  try {
    const count = await app.tus.removeExpired()
    if (count !== removed.length) throw new Error(`removeExpired() resolved with ${count}, but ${removed.length} uploads were emitted as expired`)
  } finally {
    app.tus.off('expired', listener)
  }
  return removed
}

/** Starts Fastify + the plugin on 127.0.0.1 with a fresh upload dir; closes and removes it at teardown. */
export async function startServer (
  t: Teardown,
  options: TusPluginOptions = {},
  setup?: (app: FastifyInstance, dir: string) => Promise<void> | void,
  fastifyOptions: FastifyServerOptions = {}
): Promise<TestServer> {
  const dir = options.dir ?? await mkdtemp(join(tmpdir(), 'fastify-tus-test-'))
  const app = Fastify(fastifyOptions)
  const stop = async (): Promise<void> => {
    await app.close()
    if (options.dir === undefined) await rm(dir, { recursive: true, force: true })
  }
  try {
    if (setup !== undefined) await setup(app, dir)
    else await app.register(tusPlugin, { ...options, dir })
    await app.listen({ port: 0, host: '127.0.0.1' })
  } catch (error) {
    // Refused options (a test of them) or a failed listen: the temporary directory goes too.
    await stop().catch(() => undefined)
    throw error
  }
  t.teardown(stop)
  const origin = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  return { app, origin, endpoint: `${origin}${options.prefix ?? '/files'}/`, dir }
}

export interface RawResponse {
  status: number
  headers: Record<string, string>
  body: Buffer
  text: string
}

/** One HTTP request with exactly the given headers (Tus-Resumable is NOT added). */
export async function rawRequest (
  url: string,
  init: { method?: string, headers?: Record<string, string>, body?: string | Buffer | Readable } = {}
): Promise<RawResponse> {
  const response = await undiciRequest(url, {
    method: (init.method ?? 'GET') as 'GET',
    headers: init.headers ?? {},
    ...(init.body === undefined ? {} : { body: init.body }),
    reset: true
  })
  const body = Buffer.from(await response.body.arrayBuffer())
  const headers: Record<string, string> = {}
  for (const [name, value] of Object.entries(response.headers)) {
    if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : value
  }
  return { status: response.statusCode, headers, body, text: body.toString('utf8') }
}

export interface HttpAnswer { status: number, headers: IncomingHttpHeaders, body: string, bytes: Buffer }

/**
 * One request over node:http (which copes with the draft's 104 interim responses), the body sent in one write
 * (with its Content-Length); the answer's body as text and as bytes.
 */
export async function send (url: string, method: string, headers: Record<string, string>, body?: string | Buffer): Promise<HttpAnswer> {
  return await new Promise((resolve, reject) => {
    const request = httpRequest(url, { method, headers, agent: false })
    request.on('error', reject)
    request.on('response', (response) => { answerOf(response).then(resolve, reject) })
    request.end(body)
  })
}

/** A response read whole. */
export async function answerOf (response: IncomingMessage): Promise<HttpAnswer> {
  const chunks: Buffer[] = []
  for await (const chunk of response) chunks.push(chunk as Buffer)
  const bytes = Buffer.concat(chunks)
  return { status: response.statusCode!, headers: response.headers, body: bytes.toString(), bytes }
}

/** A tus 1.0.0 request: rawRequest with Tus-Resumable: 1.0.0 added. */
export async function tusRequest (
  url: string,
  init: { method?: string, headers?: Record<string, string>, body?: string | Buffer | Readable } = {}
): Promise<RawResponse> {
  return await rawRequest(url, { ...init, headers: { 'Tus-Resumable': '1.0.0', ...init.headers } })
}

/** The bytes a FileStore server holds of an upload (its data file). */
export async function stored (server: TestServer, url: string): Promise<Buffer> {
  return await readFile(join(server.dir, idOf(url)))
}

/** Resolves once the server has stored at least `bytes` of an upload (its progress events; progressInterval: 0). */
export async function storedAtLeast (server: TestServer, bytes: number): Promise<void> {
  await new Promise<void>((resolve) => {
    const listener = (upload: { offset: number }): void => {
      if (upload.offset < bytes) return
      server.app.tus.off('progress', listener)
      resolve()
    }
    server.app.tus.on('progress', listener)
  })
}

/** Creates an upload with raw HTTP and returns its absolute URL. */
export async function createUpload (server: TestServer, headers: Record<string, string> = { 'Upload-Length': '11' }): Promise<string> {
  const response = await tusRequest(server.endpoint, { method: 'POST', headers })
  if (response.status !== 201) throw new Error(`creation failed: ${response.status} ${response.text}`)
  return new URL(response.headers.location!, server.origin).href
}

export function sha256 (data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex')
}

export async function sha256File (path: string): Promise<string> {
  return sha256(await readFile(path))
}

/** Deterministic pseudo-random bytes, so failures are reproducible. */
export function randomBytesSeeded (size: number, seed = 1): Buffer {
  const buffer = Buffer.alloc(size)
  let state = seed >>> 0 || 1
  for (let i = 0; i < size; i++) {
    state ^= state << 13; state >>>= 0
    state ^= state >>> 17
    state ^= state << 5; state >>>= 0
    buffer[i] = state & 0xff
  }
  return buffer
}

export function idOf (url: string): string {
  return new URL(url).pathname.split('/').pop()!
}

/** Uploads with the real tus-js-client; resolves with the upload URL. retryDelays default null (fail fast). */
export async function tusUpload (input: Buffer | Readable, options: UploadOptions & { endpoint?: string }): Promise<string> {
  return await new Promise((resolve, reject) => {
    const upload: Upload = new Upload(input, {
      retryDelays: null,
      ...options,
      onSuccess: () => { resolve(upload.url!) },
      onError: reject
    })
    upload.start()
  })
}

/** Makes an upload look `days` days old (its creation time and last write). */
export async function backdate (dir: string, id: string, days: number): Promise<void> {
  const past = new Date(Date.now() - days * 86_400_000)
  const infoPath = join(dir, `${id}.json`)
  const info = JSON.parse(await readFile(infoPath, 'utf8')) as Record<string, unknown>
  await writeFile(infoPath, JSON.stringify({ ...info, createdAt: past.toISOString() }))
  await utimes(join(dir, id), past, past)
}

export interface ChildServer {
  child: ChildProcess
  port: number
  /** `http://127.0.0.1:<port>` */
  origin: string
  /** The rest of its stdout, line by line (`progress <offset>` lines). */
  lines: AsyncIterableIterator<string>
}

/** A TCP port free on 127.0.0.1 right now (for a server the test starts as another process). */
export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo
      server.close(() => { resolve(port) })
    })
    server.on('error', reject)
  })
}

/** Starts test/fixtures/child-server.ts in its own process on `dir`; killed with SIGKILL at teardown. */
export async function startChild (t: Teardown, dir: string, env: Record<string, string> = {}): Promise<ChildServer> {
  // Its stdin is a pipe from this process: the child exits when it closes, so a test process killed without its
  // teardown (tap's timeout or --bail) leaves no server behind holding the output pipes of whoever ran the tests.
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'fixtures', 'child-server.ts'), dir], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, ...env }
  })
  t.teardown(() => { child.kill('SIGKILL') })
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]()
  for (;;) {
    const { value, done } = await lines.next()
    if (done === true) throw new Error('the child server exited before listening')
    const match = /^listening (\d+)$/.exec(value)
    if (match !== null) return { child, port: Number(match[1]), origin: `http://127.0.0.1:${match[1]}`, lines }
  }
}

/** The error a lock attempt rejects with; throws if it was granted. */
export async function lockError (promise: Promise<unknown>): Promise<{ code?: string, statusCode?: number }> {
  try {
    await promise
  } catch (error) {
    return error as { code?: string, statusCode?: number }
  }
  throw new Error('expected the lock to be refused')
}

/**
 * Three rounds of two PATCHes of `size` bytes for one new upload, sent at once to the servers on ports `a` and
 * `b` (processes sharing its storage): whatever each answers, the stored bytes before the offset come from one
 * request only, and the upload then completes byte-exact.
 */
export async function concurrentPatchRounds (t: Test, a: number, b: number, size: number): Promise<void> {
  const octet = { 'Content-Type': 'application/offset+octet-stream' }
  for (let round = 0; round < 3; round++) {
    const created = await tusRequest(`http://127.0.0.1:${a}/files/`, { method: 'POST', headers: { 'Upload-Length': String(size) } })
    const id = idOf(new URL(created.headers.location!).href)
    const bodies = [Buffer.alloc(size, 'a'), Buffer.alloc(size, 'b')]
    const statuses = await Promise.all([a, b].map(async (port, index) => await tusRequest(`http://127.0.0.1:${port}/files/${id}`, {
      method: 'PATCH', headers: { 'Upload-Offset': '0', ...octet }, body: bodies[index]!
    }).then((response) => response.status, () => 0)))
    t.ok(statuses.every((status) => [204, 409, 0].includes(status)), `statuses ${statuses.join(', ')}`)
    const offset = Number((await tusRequest(`http://127.0.0.1:${b}/files/${id}`, { method: 'HEAD' })).headers['upload-offset'])
    const fill = Buffer.alloc(size - offset, 'c')
    const rest = await tusRequest(`http://127.0.0.1:${a}/files/${id}`, { method: 'PATCH', headers: { 'Upload-Offset': String(offset), ...octet }, body: fill })
    t.equal(rest.status, 204)
    const stored = (await tusRequest(`http://127.0.0.1:${b}/files/${id}`)).body
    const prefix = stored.subarray(0, offset)
    t.ok(prefix.equals(Buffer.alloc(offset, 'a')) || prefix.equals(Buffer.alloc(offset, 'b')), `the first ${offset} bytes come from one request only`)
    t.ok(stored.subarray(offset).equals(fill))
  }
}

/**
 * A store of its own that passes FileStore's required calls on to `store`, without any of its optional capabilities
 * (truncate, readChunksDisposable, removeAbandoned), with the calls in `own` instead of FileStore's.
 */
export function delegatingTo (store: FileStore, own: Partial<DataStore> = {}): DataStore {
  return {
    create: store.create.bind(store),
    getInfo: store.getInfo.bind(store),
    write: store.write.bind(store),
    flush: store.flush.bind(store),
    declareLength: store.declareLength.bind(store),
    read: store.read.bind(store),
    terminate: store.terminate.bind(store),
    list: store.list.bind(store),
    close: store.close.bind(store),
    ...own
  }
}

/** A promise and the function that resolves it (Promise.withResolvers is not in Node.js 20). */
export function signal (): { promise: Promise<void>, resolve: () => void } {
  let settle!: () => void
  const promise = new Promise<void>((resolve) => { settle = resolve })
  return { promise, resolve: settle }
}

/** Tells when a request asks for the lock of the watched upload: `asked` settles, and the next ask gets a new one. */
export class WatchedLocker extends MemoryLocker {
  watched: string | undefined
  asked = signal()

  override async lock (id: string, options: LockOptions): Promise<UploadLock> {
    if (id === this.watched) {
      const asked = this.asked
      this.asked = signal()
      asked.resolve()
    }
    return await super.lock(id, options)
  }
}
