// Never lose or corrupt a byte: lock release, stalled clients, shutdown, crashes, a full disk.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { once } from 'node:events'
import { connect as connectHttp2 } from 'node:http2'
import { mkdir, mkdtemp, readFile, readdir, readlink, rm, stat, statfs, writeFile } from 'node:fs/promises'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import tusPlugin, { FileStore, type WriteOptions } from '../lib/index.js'
import { createUpload, idOf, randomBytesSeeded, sha256, signal, startChild, startServer, storedAtLeast, tusRequest, tusUpload } from './helpers.js'

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }

/** A PATCH sent by hand that delivers `first` and then stays silent, like a client whose network died. */
async function stuckPatch (url: string, length: number, first: Buffer, offset = 0): Promise<{ socket: Socket, closed: Promise<string> }> {
  const { port, pathname } = new URL(url)
  const socket = connect(Number(port), '127.0.0.1')
  await once(socket, 'connect')
  let text = ''
  socket.on('data', (chunk) => { text += chunk.toString() })
  socket.on('error', () => {})
  const closed = new Promise<string>((resolve) => { socket.on('close', () => { resolve(text) }) })
  socket.write(`PATCH ${pathname} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: ${offset}\r\n` +
    `Content-Type: application/offset+octet-stream\r\nContent-Length: ${length}\r\n\r\n`)
  socket.write(first)
  return { socket, closed }
}

t.test('lock release: a client that reconnects ends its own stuck PATCH and resumes at once', async (t) => {
  const server = await startServer(t, { progressInterval: 0 })
  const data = randomBytesSeeded(200_000, 21)
  const url = await createUpload(server, { 'Upload-Length': String(data.length) })
  const storedFirst = storedAtLeast(server, 50_000)
  const stuck = await stuckPatch(url, data.length, data.subarray(0, 50_000))
  await storedFirst
  // tus-js-client's HEAD asks the stuck PATCH to let go; it stores what arrived and its connection closes.
  const resumed = await tusUpload(data, { endpoint: server.endpoint, uploadUrl: url })
  t.equal(resumed, url)
  t.equal(await stuck.closed, '', 'the stuck request was cut off without an answer')
  t.equal(sha256(await readFile(join(server.dir, idOf(url)))), sha256(data))
})

t.test('423 only when the holder cannot let go within lockTimeout', async (t) => {
  const blocking = signal()
  const unblocked = signal()
  const server = await startServer(t, {
    lockTimeout: 200,
    onUploadProgress: async (upload) => {
      if (upload.metadata.block === undefined) return
      blocking.resolve()
      await unblocked.promise
    }
  })
  const url = await createUpload(server, { 'Upload-Length': '10', 'Upload-Metadata': 'block' })
  const first = tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: '01234' })
  // The progress hook blocks inside the PATCH, which holds the lock; a DELETE cannot have it.
  await blocking.promise
  const refused = await tusRequest(url, { method: 'DELETE' })
  t.equal(refused.status, 423)
  t.match(refused.text, /busy/)
  unblocked.resolve()
  await first
  t.equal((await tusRequest(url, { method: 'HEAD' })).status, 200, 'the upload is still there')
})

t.test('a stalled body is ended after idleTimeout, its bytes kept and the upload resumable', async (t) => {
  const server = await startServer(t, { idleTimeout: 300, progressInterval: 0 })
  const url = await createUpload(server, { 'Upload-Length': '10' })
  const stuck = await stuckPatch(url, 10, Buffer.from('hello'))
  await stuck.closed
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], '5')
  const rest = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '5', ...OCTET }, body: 'world' })
  t.equal(rest.status, 204)
  t.equal((await readFile(join(server.dir, idOf(url)))).toString(), 'helloworld')
})

t.test('app.close() ends bodies being written, keeps their bytes and closes its files', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-close-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const server = await startServer(t, { dir, progressInterval: 0 })
  const url = await createUpload(server, { 'Upload-Length': '100000' })
  const storedSome = storedAtLeast(server, 30_000)
  const stuck = await stuckPatch(url, 100_000, randomBytesSeeded(30_000, 22))
  await storedSome
  await server.app.close()
  await stuck.closed
  const fds = await Promise.all((await readdir('/proc/self/fd')).map(async (name) => await readlink(`/proc/self/fd/${name}`).catch(() => '')))
  t.same(fds.filter((target) => target.startsWith(dir)), [], 'no file of the store is left open')
  const again = await startServer(t, { dir })
  const head = await tusRequest(url.replace(new URL(url).origin, again.origin), { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], '30000')
  t.equal(sha256(await readFile(join(dir, idOf(url)))), sha256(randomBytesSeeded(30_000, 22)))
})

t.test('kill -9 during a large PATCH: after a restart HEAD equals the durable bytes and the client resumes', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-crash-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const data = randomBytesSeeded(8 * 1024 * 1024, 23)
  const first = await startChild(t, dir, { TUS_CHILD_PROGRESS: '1' })
  const created = await tusRequest(`http://127.0.0.1:${first.port}/files/`, { method: 'POST', headers: { 'Upload-Length': String(data.length) } })
  const id = idOf(new URL(created.headers.location!).href)
  const sent = 3 * 1024 * 1024
  await stuckPatch(`http://127.0.0.1:${first.port}/files/${id}`, data.length, data.subarray(0, sent))
  for (;;) {
    const { value } = await first.lines.next()
    if (Number(/^progress (\d+)$/.exec(value as string)?.[1] ?? 0) >= 1024 * 1024) break
  }
  first.child.kill('SIGKILL')
  await once(first.child, 'exit')

  const second = await startChild(t, dir)
  const url = `http://127.0.0.1:${second.port}/files/${id}`
  const head = await tusRequest(url, { method: 'HEAD' })
  const offset = Number(head.headers['upload-offset'])
  const onDisk = await readFile(join(dir, id))
  // Progress counts bytes handed to the store; FileStore keeps up to 64 KiB queued and 64 KiB in a write besides.
  t.ok(offset >= 1024 * 1024 - 128 * 1024 && offset <= sent, `offset ${offset} is between what was reported stored and what was sent`)
  t.equal(offset, onDisk.length, 'HEAD reports exactly the bytes in the data file')
  t.equal(sha256(onDisk), sha256(data.subarray(0, offset)), 'those bytes are the source\'s prefix')
  JSON.parse(await readFile(join(dir, `${id}.json`), 'utf8'))
  t.same((await readdir(dir)).filter((name) => name.endsWith('.tmp')), [], 'no half-written info file')
  await tusUpload(data, { endpoint: `http://127.0.0.1:${second.port}/files/`, uploadUrl: url, chunkSize: 2 * 1024 * 1024 })
  t.equal(sha256(await readFile(join(dir, id))), sha256(data))
})

for (const [name, headers] of [['tus', { 'Tus-Resumable': '1.0.0' }], ['draft interop 6', { 'Upload-Draft-Interop-Version': '6' }], ['draft interop 9', { 'Upload-Draft-Interop-Version': '9' }]] as const) {
  t.test(`${name}: kill -9 between an upload's last byte and its completion: the next request completes it, onUploadComplete runs once`, async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-crash-'))
    t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
    const data = randomBytesSeeded(300_000, 29)
    const first = await startChild(t, dir, { TUS_CHILD_HOLD_AT_END: '1' })
    const created = await tusRequest(`${first.origin}/files/`, { method: 'POST', headers: { 'Upload-Length': String(data.length) } })
    const id = idOf(new URL(created.headers.location!).href)
    tusRequest(`${first.origin}/files/${id}`, { method: 'PATCH', headers: { ...OCTET, 'Upload-Offset': '0' }, body: data }).catch(() => undefined)
    for (;;) {
      const { value, done } = await first.lines.next()
      if (done === true || value === 'at-end') break
    }
    first.child.kill('SIGKILL')
    await once(first.child, 'exit')
    t.equal(sha256(await readFile(join(dir, id))), sha256(data), 'every byte was in the data file')

    const second = await startChild(t, dir)
    const url = `${second.origin}/files/${id}`
    const head = await tusRequest(url, { method: 'HEAD', headers })
    t.equal(head.status, name === 'tus' ? 200 : 204)
    t.equal(head.headers['upload-offset'], String(data.length))
    if (name !== 'tus') t.equal(head.headers['upload-complete'], '?1')
    const completions = async (): Promise<unknown> => JSON.parse((await tusRequest(`${second.origin}/test/completions`)).body.toString())
    t.same(await completions(), { [id]: 1 }, 'the request that read it completed it: onUploadComplete ran')
    t.equal((await tusRequest(url, { method: 'HEAD', headers })).status, name === 'tus' ? 200 : 204)
    const download = await tusRequest(url)
    t.equal(download.status, 200)
    t.equal(sha256(download.body), sha256(data))
    t.same(await completions(), { [id]: 1 }, 'once')
    t.equal((await stat(join(dir, id))).mode & 0o100, 0, 'the data file is marked complete')
  })
}

t.test('disk full: 500 with a clear message, offset = bytes kept, other uploads served, resumes once space is free', async (t) => {
  if (process.getuid?.() !== 0) {
    t.fail('this test mounts a 1 MiB tmpfs and needs root (CI runs as root): run `sudo npm test`')
    return
  }
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-full-'))
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir])
  t.teardown(async () => {
    execFileSync('umount', [dir])
    await rm(dir, { recursive: true, force: true })
  })
  const server = await startServer(t, { dir })
  const data = randomBytesSeeded(400_000, 24)
  const url = await createUpload(server, { 'Upload-Length': String(data.length) })
  const other = await createUpload(server, { 'Upload-Length': '5' })
  // Leave about 200 KiB free.
  const filler = join(dir, 'filler')
  await writeFile(filler, Buffer.alloc(800 * 1024))
  const full = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: data })
  t.equal(full.status, 500)
  t.equal(full.text, 'Storage error', 'what the disk said (paths) stays in the log')
  const kept = (await readFile(join(dir, idOf(url)))).length
  t.ok(kept > 0 && kept < data.length, `some bytes were kept (${kept})`)
  t.equal(full.headers['upload-offset'], String(kept))
  t.equal((await tusRequest(url, { method: 'HEAD' })).headers['upload-offset'], String(kept))
  t.equal(sha256(await readFile(join(dir, idOf(url)))), sha256(data.subarray(0, kept)))
  t.equal((await tusRequest(other, { method: 'HEAD' })).status, 200, 'the server keeps serving other uploads')
  await rm(filler)
  t.equal((await tusRequest(other, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: 'small' })).status, 204)
  await tusUpload(data, { endpoint: server.endpoint, uploadUrl: url })
  t.equal(sha256(await readFile(join(dir, idOf(url)))), sha256(data))
})

t.test('hostile ids never reach the disk, on every route', async (t) => {
  const server = await startServer(t)
  await mkdir(join(server.dir, 'sub'), { recursive: true })
  const before = await readdir(server.dir)
  for (const id of ['..', '%2e%2e', '..%2f..%2fetc%2fpasswd', '%00', 'a%00b', 'a.json', '%2Fetc%2Fpasswd', 'sub%2Fx', '.staging', 'x'.repeat(129)]) {
    for (const method of ['HEAD', 'GET', 'PATCH', 'DELETE']) {
      const response = await tusRequest(`${server.endpoint}${id}`, { method, headers: method === 'PATCH' ? { 'Upload-Offset': '0', ...OCTET } : {}, ...(method === 'PATCH' ? { body: 'x' } : {}) })
      // Fastify refuses a path parameter over 100 characters (maxParamLength) with 414 before routing.
      t.equal(response.status, id.length > 100 ? 414 : 404, `${method} ${id.slice(0, 20)}`)
    }
  }
  t.same(await readdir(server.dir), before)
})

t.test('minFreeSpace: a creation that would leave too little disk is refused with 507, nothing created', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-space-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const free = await statfs(dir).then((stats) => stats.bavail * stats.bsize)
  const server = await startServer(t, { dir, minFreeSpace: 1024 * 1024 })
  const refused = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': String(free) } })
  t.equal(refused.status, 507)
  t.match(refused.text, /Not enough storage/)
  t.same(await readdir(dir), [])
  t.equal((await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '1000' } })).status, 201)
})

t.test('a slow handler is not a stalled client: bytes waiting to be read keep the body alive past idleTimeout', async (t) => {
  let slowed = false
  const server = await startServer(t, {
    idleTimeout: 100,
    progressInterval: 0,
    // Stands in for a store that takes longer than idleTimeout to take the next bytes.
    onUploadProgress: async () => {
      if (slowed) return
      slowed = true
      await new Promise((resolve) => setTimeout(resolve, 400))
    }
  })
  const data = randomBytesSeeded(300_000, 25)
  const url = await createUpload(server, { 'Upload-Length': String(data.length) })
  const response = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: data })
  t.equal(response.status, 204)
  t.equal(sha256(await readFile(join(server.dir, idOf(url)))), sha256(data))
})

t.test('while the server closes, reads are answered and writes get 503 with Retry-After on a closed connection (tus and draft): a tus client resumes instead of starting over', async (t) => {
  let open = (): void => {}
  const gate = new Promise<void>((resolve) => { open = resolve })
  /** A real FileStore whose writes end only once the test opens the gate: the close waits for them meanwhile. */
  class HeldStore extends FileStore {
    override async write (id: string, offset: number, source: AsyncIterable<Buffer>, options?: WriteOptions): Promise<number> {
      const written = await super.write(id, offset, source, options)
      await gate
      return written
    }
  }
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(tusPlugin, { dir, store: new HeldStore({ directory: dir }) })
  }, { return503OnClosing: false })
  const busy = await createUpload(server, { 'Upload-Length': '100' })
  const idle = await createUpload(server, { 'Upload-Length': '100' })
  // Closing ends this PATCH's body (its connection closes), then waits for its write.
  const body = new PassThrough()
  const patched = tusRequest(busy, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET, 'Content-Length': '100' }, body })
    .then((response) => response.status, () => 'closed')
  const stored = once(server.app.tus, 'progress')
  body.write(Buffer.alloc(10, 1))
  await stored
  const closed = server.app.close()
  t.equal(await patched, 'closed', 'the running body is ended by the close')

  const head = await tusRequest(idle, { method: 'HEAD' })
  t.equal(head.status, 200, 'a HEAD is answered: the client learns its offset')
  t.equal(head.headers['upload-offset'], '0')
  const draftHead = await tusRequest(idle, { method: 'HEAD', headers: { 'Upload-Draft-Interop-Version': '6' } })
  t.ok(draftHead.status < 300, `a draft offset retrieval is answered (${draftHead.status})`)
  const writes: Array<[string, Promise<{ status: number, headers: Record<string, string | undefined> }>]> = [
    ['POST', tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '5' } })],
    ['PATCH', tusRequest(idle, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: 'abc' })],
    ['DELETE', tusRequest(idle, { method: 'DELETE' })],
    ['draft append', tusRequest(idle, { method: 'PATCH', headers: { 'Upload-Draft-Interop-Version': '6', 'Upload-Offset': '0', 'Upload-Complete': '?0', 'Content-Type': 'application/partial-upload' }, body: 'abc' })]
  ]
  for (const [what, answer] of writes) {
    const response = await answer
    t.equal(response.status, 503, what)
    t.equal(response.headers['retry-after'], '1', `${what}: Retry-After`)
    t.equal(response.headers.connection, 'close', `${what}: its connection closed`)
  }
  open()
  await closed
  t.same((await readdir(server.dir)).filter((name) => name.endsWith('.json')).length, 2, 'nothing created while closing')
})

t.test('HTTP/2: while the server closes, writes get 503 with Retry-After and no Connection header (none exists in HTTP/2; Node warned of it), tus and draft', async (t) => {
  const warnings: Error[] = []
  const onWarning = (warning: Error): void => { warnings.push(warning) }
  process.on('warning', onWarning)
  t.teardown(() => { process.off('warning', onWarning) })
  const server = await startServer(t, {}, undefined, { http2: true, return503OnClosing: false } as Parameters<typeof startServer>[3])
  const session = connectHttp2(server.origin)
  t.teardown(() => { session.destroy() })
  const send = async (headers: Record<string, string>, body = ''): Promise<Record<string, string | number | string[] | undefined>> => {
    // A HEAD's stream is ended as it is opened.
    const stream = session.request(headers, { endStream: headers[':method'] === 'HEAD' })
    if (headers[':method'] !== 'HEAD') stream.end(body)
    stream.resume()
    const [answer] = await once(stream, 'response') as [Record<string, string | number | string[] | undefined>]
    await once(stream, 'close')
    return answer
  }
  const created = await send({ ':method': 'POST', ':path': '/files/', 'tus-resumable': '1.0.0', 'upload-length': '3' })
  t.equal(created[':status'], 201)
  const path = new URL(String(created.location)).pathname
  const closing = server.app.close()
  const writes: Array<[string, Record<string, string>]> = [
    ['tus POST', { ':method': 'POST', ':path': '/files/', 'tus-resumable': '1.0.0', 'upload-length': '3' }],
    ['tus PATCH', { ':method': 'PATCH', ':path': path, 'tus-resumable': '1.0.0', 'upload-offset': '0', 'content-type': 'application/offset+octet-stream' }],
    ['draft append', { ':method': 'PATCH', ':path': path, 'upload-draft-interop-version': '6', 'upload-offset': '0', 'upload-complete': '?1', 'content-type': 'application/partial-upload' }]
  ]
  for (const [what, headers] of writes) {
    const answer = await send(headers, 'abc')
    t.same([answer[':status'], answer['retry-after'], answer.connection], [503, '1', undefined], `${what}: 503, Retry-After, no Connection`)
  }
  const head = await send({ ':method': 'HEAD', ':path': path, 'tus-resumable': '1.0.0' })
  t.same([head[':status'], head['upload-offset']], [200, '0'], 'a HEAD is still answered')
  session.close()
  await closing
  await new Promise((resolve) => setImmediate(resolve))
  t.same(warnings.map((warning) => `${warning.name}: ${warning.message}`), [], 'Node warned of nothing')
})
