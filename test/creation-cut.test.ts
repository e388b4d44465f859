// A creation whose body the server ends before it is whole (app.close(), the idle timeout), or whose body the store
// fails to take once the upload exists, is answered as a creation: the upload exists, and a client told nothing (or
// told 500) starts over from byte 0 with a new upload, the first one left behind. Its answer carries the Location and
// the offset of what is stored; the client appends from there. A final upload whose concatenation fails is removed.
import t, { type Test } from 'tap'
import { once } from 'node:events'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { connect as connectHttp2, constants as http2Constants } from 'node:http2'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import Fastify, { type FastifyServerOptions } from 'fastify'
import { Upload } from 'tus-js-client'
import tusPlugin, { FileStore, type TusPluginOptions, type UploadInfo, type WriteOptions } from '../lib/index.js'
import { freePort, idOf, randomBytesSeeded, rawRequest, sha256, signal, startServer, storedAtLeast, tusRequest, type TestServer } from './helpers.js'

/** Each protocol's creation-with-upload headers (the body's Content-Length added), and its offset retrieval. */
const PROTOCOLS: Array<{ name: string, create: (size: number) => Record<string, string>, head: Record<string, string> }> = [
  { name: 'tus 1.0.0', create: (size: number) => ({ 'Tus-Resumable': '1.0.0', 'Upload-Length': String(size), 'Content-Type': 'application/offset+octet-stream' }), head: { 'Tus-Resumable': '1.0.0' } },
  { name: 'draft interop 3', create: () => ({ 'Upload-Draft-Interop-Version': '3', 'Upload-Incomplete': '?0' }), head: { 'Upload-Draft-Interop-Version': '3' } },
  { name: 'draft interop 6', create: () => ({ 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?1' }), head: { 'Upload-Draft-Interop-Version': '6' } },
  { name: 'draft interop 9', create: () => ({ 'Upload-Draft-Interop-Version': '9', 'Upload-Complete': '?1' }), head: { 'Upload-Draft-Interop-Version': '9' } }
]

/** The final answer (status line and headers, lowercased names) in what a raw HTTP/1.1 socket received, 1xx skipped. */
function finalAnswer (text: string): { status: number, headers: Record<string, string> } | undefined {
  const heads = text.split('\r\n\r\n').filter((head) => /^HTTP\/1\.1 [2-5]\d\d /.test(head))
  if (heads.length === 0) return undefined
  const [statusLine, ...lines] = heads[0]!.split('\r\n')
  const headers: Record<string, string> = {}
  for (const line of lines) {
    const colon = line.indexOf(':')
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim()
  }
  return { status: Number(statusLine!.split(' ')[1]), headers }
}

/** A creation sent by hand: its head and the first `sent` bytes of `data`, then nothing more (the rest never comes). */
async function stuckCreation (server: TestServer, headers: Record<string, string>, data: Buffer, sent: number): Promise<{ answer: Promise<string> }> {
  const socket = connect(Number(new URL(server.origin).port), '127.0.0.1')
  await once(socket, 'connect')
  let text = ''
  socket.on('data', (chunk: Buffer) => { text += chunk.toString('latin1') })
  socket.on('error', () => {})
  const answer = new Promise<string>((resolve) => { socket.on('close', () => { resolve(text) }) })
  const lines = Object.entries({ ...headers, 'Content-Length': String(data.length) }).map(([name, value]) => `${name}: ${value}\r\n`).join('')
  socket.write(`POST ${new URL(server.endpoint).pathname} HTTP/1.1\r\nHost: 127.0.0.1\r\n${lines}\r\n`)
  socket.write(data.subarray(0, sent))
  return { answer }
}

async function freshDir (t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-creation-cut-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

/** The uploads in a FileStore directory (their data files: every name without a dot, not a directory of the store's own). */
async function uploadsIn (dir: string): Promise<string[]> {
  return (await readdir(dir, { withFileTypes: true })).filter((entry) => entry.isFile() && !entry.name.includes('.')).map((entry) => entry.name)
}

for (const protocol of PROTOCOLS) {
  t.test(`${protocol.name}: a creation-with-upload whose body app.close() ends is answered 201 with its Location and the offset stored, its connection closed`, async (t) => {
    const dir = await freshDir(t)
    const server = await startServer(t, { dir, progressInterval: 0 })
    const data = randomBytesSeeded(100_000, 41)
    const storedSome = storedAtLeast(server, 30_000)
    const { answer } = await stuckCreation(server, protocol.create(data.length), data, 30_000)
    await storedSome
    await server.app.close()
    const created = finalAnswer(await answer)
    t.equal(created?.status, 201, 'answered as created')
    t.ok(created?.headers.location, 'with the Location')
    t.equal(created?.headers['upload-offset'], '30000', 'and the offset of the bytes stored')
    t.equal(created?.headers.connection, 'close', 'the rest of the body is never read: the connection closes')
    if (protocol.name !== 'tus 1.0.0') t.equal(created?.headers[protocol.name.endsWith('3') ? 'upload-incomplete' : 'upload-complete'], protocol.name.endsWith('3') ? '?1' : '?0', 'the upload is not complete')
    t.same(await uploadsIn(dir), [idOf(created!.headers.location!)], 'one upload, the one named')
    t.equal(sha256(await readFile(join(dir, idOf(created!.headers.location!)))), sha256(data.subarray(0, 30_000)), 'what is stored is what was sent')

    const again = await startServer(t, { dir })
    const url = `${again.endpoint}${idOf(created!.headers.location!)}`
    const head = await rawRequest(url, { method: 'HEAD', headers: protocol.head })
    t.equal(head.headers['upload-offset'], '30000', 'a new server over the directory tells the same offset')
  })

  t.test(`${protocol.name}: a creation-with-upload whose client goes silent is answered 201 with the offset stored once the idle timeout ends its body`, async (t) => {
    const server = await startServer(t, { idleTimeout: 300, progressInterval: 0 })
    const data = randomBytesSeeded(50_000, 42)
    const { answer } = await stuckCreation(server, protocol.create(data.length), data, 20_000)
    const created = finalAnswer(await answer)
    t.equal(created?.status, 201)
    t.equal(created?.headers['upload-offset'], '20000')
    t.equal(created?.headers.connection, 'close')
    const id = idOf(created!.headers.location!)
    t.equal(sha256(await readFile(join(server.dir, id))), sha256(data.subarray(0, 20_000)))
  })

  t.test(`${protocol.name}: a store failing to write a creation's body answers 201 with the Location and the offset it holds, logged as an error; the append meets the failure`, async (t) => {
    let failing = true
    class FullDisk extends FileStore {
      override async write (id: string, offset: number, source: AsyncIterable<Buffer>, options?: WriteOptions): Promise<number> {
        if (!failing) return await super.write(id, offset, source, options)
        // Half of the body lands, then the disk is full.
        const head = async function * (): AsyncIterable<Buffer> {
          const chunks = source[Symbol.asyncIterator]()
          const first = await chunks.next()
          await chunks.return?.()
          if (first.done !== true) yield first.value.subarray(0, 5)
        }
        await super.write(id, offset, head(), options)
        throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' })
      }
    }
    const logged: Array<{ level: number, msg: string, err?: { message?: string } }> = []
    const stream = new Writable({ write (chunk: Buffer, _encoding, done) { logged.push(JSON.parse(chunk.toString())); done() } })
    const server = await startServer(t, {}, async (app, dir) => {
      await app.register(tusPlugin, { dir, store: new FullDisk({ directory: dir }) })
    }, { logger: { level: 'warn', stream } })
    const created = await rawRequest(server.endpoint, { method: 'POST', headers: { ...protocol.create(10), 'Content-Length': '10' }, body: '0123456789' })
    t.equal(created.status, 201, 'answered as created')
    t.ok(created.headers.location, 'with the Location')
    t.equal(created.headers['upload-offset'], '5', 'and the offset the store holds')
    const id = idOf(created.headers.location!)
    t.same(await uploadsIn(server.dir), [id], 'one upload')
    t.equal((await readFile(join(server.dir, id))).toString(), '01234')
    t.same(logged.filter((line) => line.level >= 50).map((line) => [line.msg, line.err?.message]), [
      ['fastify-tus: writing an upload failed', 'ENOSPC: no space left on device, write']
    ], 'the store\'s failure is logged once, as an error')
    if (protocol.name === 'tus 1.0.0') {
      failing = false
      const rest = await tusRequest(`${server.endpoint}${id}`, { method: 'PATCH', headers: { 'Upload-Offset': '5', 'Content-Type': 'application/offset+octet-stream' }, body: '56789' })
      t.equal(rest.status, 204, 'the client appends the rest from the offset')
      t.equal((await readFile(join(server.dir, id))).toString(), '0123456789')
    }
  })
}

t.test('HTTP/2 (h2c): a creation-with-upload whose body app.close() ends is answered 201 with the offset stored, its stream then closed without error', async (t) => {
  t.setTimeout(20_000)
  const dir = await freshDir(t)
  const server = await startServer(t, { dir, progressInterval: 0 }, async (app) => {
    await app.register(tusPlugin, { dir, progressInterval: 0 })
  }, { http2: true } as unknown as FastifyServerOptions)
  const session = connectHttp2(server.origin)
  session.on('error', () => {})
  t.teardown(() => { session.destroy() })
  const data = randomBytesSeeded(100_000, 44)
  const storedSome = storedAtLeast(server, 30_000)
  const stream = session.request({
    ':method': 'POST',
    ':path': '/files/',
    'tus-resumable': '1.0.0',
    'upload-length': String(data.length),
    'content-type': 'application/offset+octet-stream',
    'content-length': String(data.length)
  })
  stream.on('error', () => {})
  // A stream closed without an answer resolves it with none (the failure then shows, no hang).
  const response = new Promise<Record<string, unknown>>((resolve) => {
    stream.once('response', resolve)
    stream.once('close', () => { resolve({}) })
  })
  const streamClosed = once(stream, 'close')
  stream.write(data.subarray(0, 30_000))
  await storedSome
  const closing = server.app.close()
  const headers = await response
  // Without an answer the session is ended here: the server's close would wait for it.
  if (headers[':status'] !== 201) session.destroy()
  t.equal(headers[':status'], 201, 'answered as created')
  t.equal(headers['upload-offset'], '30000', 'with the offset stored')
  t.ok(headers.location, 'and the Location')
  await streamClosed
  t.equal(stream.rstCode, http2Constants.NGHTTP2_NO_ERROR, 'the stream is closed without error')
  // The client's idle session is its own to close (the server's close waits for it).
  session.close()
  await closing
})

t.test('tus 1.0.0: a store that fails while writing a creation\'s body and cannot say what it holds: 500, with the Location of the upload it created', async (t) => {
  let broken = false
  class Broken extends FileStore {
    override async write (): Promise<number> {
      broken = true
      throw new Error('EIO: i/o error, write')
    }

    override async getInfo (id: string, options?: WriteOptions): Promise<UploadInfo> {
      if (broken) throw new Error('EIO: i/o error, read')
      return await super.getInfo(id, options)
    }
  }
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(tusPlugin, { dir, store: new Broken({ directory: dir }) })
  }, { logger: false })
  const failed = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '10', 'Content-Type': 'application/offset+octet-stream' }, body: '0123456789' })
  t.equal(failed.status, 500, 'no offset to tell: a failure')
  t.ok(failed.headers.location, 'with the Location of the upload created')
  t.same(await uploadsIn(server.dir), [idOf(failed.headers.location!)], 'the one upload is the one named')
})

t.test('a final upload whose concatenation fails in the store is answered 500 and removed, its partials kept; the retry makes it whole', async (t) => {
  let failing = true
  class FullDisk extends FileStore {
    override async write (id: string, offset: number, source: AsyncIterable<Buffer>, options?: WriteOptions): Promise<number> {
      if (failing && offset > 0) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' })
      return await super.write(id, offset, source, options)
    }
  }
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(tusPlugin, { dir, store: new FullDisk({ directory: dir }) })
  }, { logger: false })
  const parts: string[] = []
  for (const body of ['hello ', 'world']) {
    const partial = await tusRequest(server.endpoint, {
      method: 'POST', headers: { 'Upload-Concat': 'partial', 'Upload-Length': String(body.length), 'Content-Type': 'application/offset+octet-stream' }, body
    })
    t.equal(partial.status, 201)
    parts.push(new URL(partial.headers.location!).pathname)
  }
  const partials = (await uploadsIn(server.dir)).sort()
  const failed = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Concat': `final;${parts.join(' ')}` } })
  t.equal(failed.status, 500, 'the concatenation failed')
  t.notOk(failed.headers.location, 'no Location names a final that is gone')
  t.same((await uploadsIn(server.dir)).sort(), partials, 'the half-copied final is removed, the partials stay')
  failing = false
  const final = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Concat': `final;${parts.join(' ')}` } })
  t.equal(final.status, 201)
  t.equal(final.headers['upload-offset'], '11')
  t.equal((await readFile(join(server.dir, idOf(final.headers.location!)))).toString(), 'hello world')
})

t.test('tus-js-client (uploadDataDuringCreation): a creation-with-upload cut by app.close() resumes on a new server over the same directory from the offset reported', async (t) => {
  const dir = await freshDir(t)
  const port = await freePort()
  const data = randomBytesSeeded(24 * 1024 * 1024, 43)
  const options: TusPluginOptions = { dir, progressInterval: 0 }
  const closing = signal()
  const start = async (): Promise<TestServer['app']> => {
    const app = Fastify()
    // Before the plugin's own preClose hook, which ends the bodies being written.
    app.addHook('preClose', async () => { closing.resolve() })
    await app.register(tusPlugin, options)
    await app.listen({ port, host: '127.0.0.1' })
    return app
  }
  let app = await start()
  t.teardown(async () => { await app.close() })
  // Once 1 MiB of the creation's body is stored, the server is closed; its write goes on until the close ends the body.
  let closed: Promise<void> | undefined
  const onProgress = (upload: { offset: number }): void => {
    if (upload.offset < 1024 * 1024 || closed !== undefined) return
    closed = app.close()
  }
  app.tus.on('progress', onProgress)
  const responses: Array<{ method: string, status: number, offset: string | undefined }> = []
  const url = await new Promise<string>((resolve, reject) => {
    const upload: Upload = new Upload(data, {
      endpoint: `http://127.0.0.1:${port}/files/`,
      uploadDataDuringCreation: true,
      retryDelays: [0, 0, 0],
      onAfterResponse: async (request, response) => {
        responses.push({ method: request.getMethod(), status: response.getStatus(), offset: response.getHeader('Upload-Offset') })
        if (request.getMethod() !== 'POST') return
        // The answer came from the server closing: the client goes on with a new one over the same directory.
        await closing.promise
        await closed
        app = await start()
      },
      onSuccess: () => { resolve(upload.url!) },
      onError: reject
    })
    upload.start()
  })
  const [creation, ...rest] = responses
  t.equal(creation?.method, 'POST')
  t.equal(creation?.status, 201, 'the cut creation was answered as created')
  const offset = Number(creation?.offset)
  t.ok(offset >= 1024 * 1024 && offset < data.length, `with the offset stored (${offset})`)
  t.same(rest.map((response) => response.method), rest.map(() => 'PATCH'), 'no second creation: the client appended to its upload')
  t.equal(rest.length > 0 && rest[rest.length - 1]!.status, 204)
  t.same(await uploadsIn(dir), [idOf(url)], 'one upload in the directory')
  t.equal(sha256(await readFile(join(dir, idOf(url)))), sha256(data), 'the file on disk is the data, byte for byte')
})
