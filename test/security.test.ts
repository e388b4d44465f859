// What a hostile client or a second user can do, through every route, both protocols, method override,
// concatenation references, proxies' headers and pipelined requests.
import t from 'tap'
import { execFile } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, readdir, readFile, rm, statfs } from 'node:fs/promises'
import { connect as connectHttp2 } from 'node:http2'
import { connect, type Socket } from 'node:net'
import { connect as connectTls } from 'node:tls'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { FastifyInstance, FastifyRequest, FastifyServerOptions } from 'fastify'
import tusPlugin, { TusErrors, type UploadInfo } from '../lib/index.js'
import { backdate, idOf, rawRequest, randomBytesSeeded, sha256, startServer, tusRequest, type TestServer } from './helpers.js'

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }

function userOf (request: FastifyRequest): string {
  const user = request.headers['x-user']
  if (typeof user !== 'string') throw Object.assign(new Error('who are you?'), { statusCode: 401 })
  return user
}

interface Teardown { teardown: (fn: () => unknown) => void }

/** Two users; each upload is its owner's, and another user's is answered as if it did not exist. */
async function scopedServer (t: Teardown): Promise<TestServer> {
  return await startServer(t, {
    auth: (request) => { userOf(request) },
    onUploadCreate: (upload, request) => ({ metadata: { ...upload.metadata, owner: userOf(request) } }),
    onUploadAccess: (upload, _action, request) => {
      if (upload.metadata.owner !== userOf(request)) throw new TusErrors.NOT_FOUND()
    }
  })
}

t.test('a second user can neither read, write, delete, reference nor learn of another user\'s uploads, in any protocol', async (t) => {
  const server = await scopedServer(t)
  const alice = { 'Tus-Resumable': '1.0.0', 'X-User': 'alice' }
  const bob = { 'Tus-Resumable': '1.0.0', 'X-User': 'bob' }
  const data = randomBytesSeeded(1000, 5)
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { ...alice, 'Upload-Length': '2000', ...OCTET }, body: data })
  t.equal(created.status, 201)
  const url = new URL(created.headers.location!, server.origin).href
  const partial = await tusRequest(server.endpoint, { method: 'POST', headers: { ...alice, 'Upload-Length': '3', 'Upload-Concat': 'partial', ...OCTET }, body: 'abc' })
  const partialUrl = new URL(partial.headers.location!, server.origin).href
  const missing = `${server.endpoint}AAAAAAAAAAAAAAAAAAAAA`

  // tus 1.0.0 and the tunnelled methods
  type Attempt = (target: string) => Promise<{ status: number, text: string }>
  const attempts: Array<[string, Attempt]> = [
    ['HEAD', async (target) => await rawRequest(target, { method: 'HEAD', headers: bob })],
    ['GET', async (target) => await rawRequest(target, { headers: bob })],
    ['PATCH', async (target) => await rawRequest(target, { method: 'PATCH', headers: { ...bob, 'Upload-Offset': '1000', ...OCTET }, body: 'evil' })],
    ['PATCH at a wrong offset', async (target) => await rawRequest(target, { method: 'PATCH', headers: { ...bob, 'Upload-Offset': '0', ...OCTET }, body: 'evil' })],
    ['DELETE', async (target) => await rawRequest(target, { method: 'DELETE', headers: bob })],
    ['override DELETE', async (target) => await rawRequest(target, { method: 'POST', headers: { ...bob, 'X-HTTP-Method-Override': 'DELETE' } })],
    ['override PATCH', async (target) => await rawRequest(target, { method: 'POST', headers: { ...bob, 'X-HTTP-Method-Override': 'PATCH', 'Upload-Offset': '1000', ...OCTET }, body: 'evil' })]
  ]
  // every draft version's requests reach the same check
  for (const version of [3, 6, 9]) {
    const draft = { 'Upload-Draft-Interop-Version': String(version), 'X-User': 'bob' }
    const complete: Record<string, string> = version === 3 ? { 'Upload-Incomplete': '?1' } : { 'Upload-Complete': '?0' }
    const type: Record<string, string> = version >= 6 ? { 'Content-Type': 'application/partial-upload' } : {}
    attempts.push(
      [`draft ${version} HEAD`, async (target) => await rawRequest(target, { method: 'HEAD', headers: draft })],
      [`draft ${version} GET`, async (target) => await rawRequest(target, { headers: draft })],
      [`draft ${version} PATCH`, async (target) => await rawRequest(target, { method: 'PATCH', headers: { ...draft, ...complete, ...type, 'Upload-Offset': '1000' }, body: 'evil' })],
      [`draft ${version} DELETE`, async (target) => await rawRequest(target, { method: 'DELETE', headers: draft })]
    )
  }
  for (const [name, attempt] of attempts) {
    const response = await attempt(url)
    const reference = await attempt(missing)
    t.equal(response.status, 404, `${name}: 404`)
    t.equal(response.text, reference.text, `${name}: the same answer as for an upload that does not exist`)
  }

  const references = await Promise.all([partialUrl, missing, url].map(async (reference) =>
    await tusRequest(server.endpoint, { method: 'POST', headers: { ...bob, 'Upload-Concat': `final;${reference}` } })))
  t.same(references.map((response) => response.status), [400, 400, 400], 'references to her partial, to nothing, to a plain upload')
  t.same(references.map((response) => response.text.replace(/"[^"]+"/, '"x"')), Array(3).fill('Invalid Upload-Concat: "x" is not a usable partial upload of this endpoint'),
    'one answer for every unusable reference')

  // Alice's upload is exactly as she left it, and she still has it all.
  t.equal(sha256(await readFile(join(server.dir, idOf(url)))), sha256(data))
  const head = await rawRequest(url, { method: 'HEAD', headers: alice })
  t.equal(head.status, 200)
  t.equal(head.headers['upload-offset'], '1000')
  t.equal((await rawRequest(server.endpoint, { method: 'POST', headers: { ...alice, 'Upload-Concat': `final;${partialUrl}` } })).status, 201, 'her own partial works')
})

t.test('X-HTTP-Method-Override is the method auth and every hook see; on the creation URL only POST and OPTIONS', async (t) => {
  const seen: string[] = []
  const server = await startServer(t, {
    auth: (request) => {
      seen.push(request.method)
      if (request.method === 'DELETE') throw Object.assign(new Error('no deleting'), { statusCode: 403 })
    }
  })
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '5' } })
  const url = new URL(created.headers.location!, server.origin).href
  const tunnelled = await tusRequest(url, { method: 'POST', headers: { 'X-HTTP-Method-Override': 'DELETE' } })
  t.equal(tunnelled.status, 403, 'auth refused the tunnelled DELETE')
  t.equal(tunnelled.text, 'no deleting')
  t.equal((await tusRequest(url, { method: 'HEAD' })).status, 200, 'the upload is still there')
  const patched = await tusRequest(url, { method: 'POST', headers: { 'X-HTTP-Method-Override': 'patch', 'Upload-Offset': '0', ...OCTET }, body: 'hello' })
  t.equal(patched.status, 204)
  t.same(seen, ['POST', 'DELETE', 'HEAD', 'PATCH'], 'auth saw the effective methods')

  const before = await readdir(server.dir)
  for (const method of ['DELETE', 'PATCH', 'HEAD', 'GET']) {
    const refused = await tusRequest(server.endpoint, { method: 'POST', headers: { 'X-HTTP-Method-Override': method, 'Upload-Length': '5' } })
    t.equal(refused.status, 405, `POST ${server.endpoint} as ${method}`)
    t.equal(refused.headers.allow, 'OPTIONS, POST', 'the creation URL\'s methods')
  }
  t.equal((await tusRequest(url, { method: 'POST', headers: { 'X-HTTP-Method-Override': 'OPTIONS' } })).status, 204, 'OPTIONS is a method the URL has')
  t.same(await readdir(server.dir), before, 'nothing created')
})

t.test('Location over HTTP/2 comes from :authority', async (t) => {
  const server = await startServer(t, {}, undefined, { http2: true } as never)
  const session = connectHttp2(server.origin)
  t.teardown(() => { session.close() })
  const stream = session.request({ ':method': 'POST', ':path': '/files/', 'tus-resumable': '1.0.0', 'upload-length': '1' }, { endStream: true })
  const [headers] = await once(stream, 'response') as [Record<string, string>]
  stream.resume()
  t.equal(headers[':status'], 201)
  t.match(headers.location, new RegExp(`^${server.origin}/files/[A-Za-z0-9_-]{21}$`))
})

t.test('ids longer than the router can reach are refused at creation; a longer maxParamLength allows them', async (t) => {
  const id = 'x'.repeat(110)
  const short = await startServer(t, { onUploadCreate: () => ({ id }) })
  const refused = await tusRequest(short.endpoint, { method: 'POST', headers: { 'Upload-Length': '1' } })
  t.equal(refused.status, 500)
  t.match(refused.text, /longer than 100 characters, Fastify's maxParamLength/)
  t.same(await readdir(short.dir), [], 'nothing created')
  const long = await startServer(t, { onUploadCreate: () => ({ id }) }, undefined, { routerOptions: { maxParamLength: 200 } })
  const created = await tusRequest(long.endpoint, { method: 'POST', headers: { 'Upload-Length': '1' } })
  t.equal(created.status, 201)
  t.equal((await tusRequest(new URL(created.headers.location!, long.origin).href, { method: 'HEAD' })).status, 200, 'and reachable')
})

t.test('a final upload may list at most maxConcatReferences partials, repeats counted', async (t) => {
  const server = await startServer(t, { maxConcatReferences: 3 })
  const partial = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '1', 'Upload-Concat': 'partial', ...OCTET }, body: 'x' })
  const path = partial.headers.location!
  const three = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Concat': `final;${path} ${path} ${path}` } })
  t.equal(three.status, 201)
  const four = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Concat': `final;${path} ${path} ${path} ${path}` } })
  t.equal(four.status, 400)
  t.equal(four.text, 'Invalid Upload-Concat: a final upload may list at most 3 partial uploads')
})

t.test('event listeners cannot hurt uploads or each other: a throwing one, a rejecting async one', async (t) => {
  const server = await startServer(t)
  const later: UploadInfo[] = []
  server.app.tus.on('completed', () => { throw new Error('observer bug') })
  server.app.tus.on('completed', async () => { throw new Error('async observer bug') })
  server.app.tus.on('completed', (upload) => { later.push(upload) })
  const unhandled: unknown[] = []
  const onUnhandled = (reason: unknown): void => { unhandled.push(reason) }
  process.on('unhandledRejection', onUnhandled)
  t.teardown(() => { process.off('unhandledRejection', onUnhandled) })
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '3', ...OCTET }, body: 'abc' })
  t.equal(created.status, 201)
  t.equal(later.length, 1, 'the listener after the throwing ones still ran')
  await new Promise((resolve) => setImmediate(resolve))
  t.same(unhandled, [], 'no unhandled rejection (the process would crash)')
})

t.test('hooks choose their status: a 503 with Retry-After and a 507 reach the client as thrown', async (t) => {
  const server = await startServer(t, {
    onUploadCreate: (upload) => {
      if (upload.metadata.busy !== undefined) throw Object.assign(new Error('busy'), { statusCode: 503, headers: { 'Retry-After': '7' } })
      throw Object.assign(new Error('quota exceeded'), { statusCode: 507 })
    }
  })
  const busy = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '1', 'Upload-Metadata': 'busy' } })
  t.equal(busy.status, 503)
  t.equal(busy.headers['retry-after'], '7')
  const quota = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '1' } })
  t.equal(quota.status, 507)
  t.same(await readdir(server.dir), [])
})

t.test('a body beyond maxSize of an upload whose length is unknown says which limit it hit', async (t) => {
  const server = await startServer(t, { maxSize: 10 })
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Defer-Length': '1' } })
  const url = new URL(created.headers.location!, server.origin).href
  const over = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: Buffer.alloc(11) })
  t.equal(over.status, 413)
  t.equal(over.text, 'The request body goes beyond the maximum upload size of 10 bytes')
  const creation = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Defer-Length': '1', ...OCTET }, body: Buffer.alloc(11) })
  t.equal(creation.status, 413, 'a creation with such a body is refused before anything exists')
  t.equal(creation.headers.location, undefined)
})

t.test('a HEAD never joins a read that began before a write still to come', async (t) => {
  let openGate = (): void => {}
  const gate = new Promise<void>((resolve) => { openGate = resolve })
  let entered = (): void => {}
  const holding = new Promise<void>((resolve) => { entered = resolve })
  let lateAdmitted = (): void => {}
  const admitted = new Promise<void>((resolve) => { lateAdmitted = resolve })
  let block = true
  const server = await startServer(t, {
    onUploadProgress: async () => {
      if (!block) return
      block = false
      entered()
      await gate
    },
    onUploadAccess: (_upload, _action, request) => { if (request.headers['x-late'] !== undefined) lateAdmitted() }
  })
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '20' } })
  const url = new URL(created.headers.location!, server.origin).href
  // 1. A PATCH holds the upload's lock (its progress hook waits).
  const first = tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: 'hello' })
  await holding
  // 2. A HEAD queues for the lock: a shared read starts.
  const early = tusRequest(url, { method: 'HEAD' })
  await waitForLockWaits(server, 1)
  // 3. A PATCH of another client queues behind it.
  const second = tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '5', ...OCTET }, body: 'world' })
  await waitForLockWaits(server, 2)
  // 4. A HEAD comes after that PATCH has queued: admitted, it joins a read or starts one in the same turn.
  const late = tusRequest(url, { method: 'HEAD', headers: { 'X-Late': '1' } })
  await admitted
  await new Promise((resolve) => setImmediate(resolve))
  openGate()
  t.equal((await first).status, 204)
  t.equal((await early).headers['upload-offset'], '5', 'the HEAD that came first reports what was there')
  t.equal((await second).status, 204)
  t.equal((await late).headers['upload-offset'], '10', 'the HEAD that came after the PATCH queued reports its bytes')
})

/** Until the plugin has counted `count` lock waits (a request found the upload held and queued). */
async function waitForLockWaits (server: TestServer, count: number): Promise<void> {
  for (;;) {
    const waits = Number(/^tus_lock_waits_total (\d+)$/m.exec(server.app.tus.metrics())?.[1] ?? '0')
    if (waits >= count) return
    await new Promise((resolve) => setImmediate(resolve))
  }
}

t.test('the disk reserve holds: what accepted uploads will still write counts, appends are checked too', async (t) => {
  const GiB = 1024 ** 3
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-reserve-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const stats = await statfs(dir)
  // Margins of a gigabyte either side, so other processes writing meanwhile cannot change the outcome.
  const server = await startServer(t, { dir, minFreeSpace: stats.bavail * stats.bsize - 3 * GiB })
  const create = async (headers: Record<string, string>): Promise<number> =>
    (await rawRequest(server.endpoint, { method: 'POST', headers })).status
  const first = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': String(2 * GiB) } })
  t.equal(first.status, 201, 'the first 2 GiB upload fits')
  t.equal(await create({ 'Tus-Resumable': '1.0.0', 'Upload-Length': String(2 * GiB) }), 507, 'a second would cross the reserve once both are written')
  t.equal(await create({ 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?0', 'Upload-Length': String(2 * GiB) }), 507, 'through the draft too')

  const deferred = new URL((await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Defer-Length': '1' } })).headers.location!, server.origin)
  const socket = connect(Number(deferred.port), '127.0.0.1')
  t.teardown(() => { socket.destroy() })
  await once(socket, 'connect')
  socket.write(`PATCH ${deferred.pathname} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n` +
    `Content-Type: application/offset+octet-stream\r\nContent-Length: ${2 * GiB}\r\n\r\n`)
  const [answer] = await once(socket, 'data') as [Buffer]
  t.match(answer.toString('latin1'), /^HTTP\/1\.1 507 /, 'an append announcing 2 GiB to a deferred upload: 507 before a byte is read')

  t.equal((await tusRequest(new URL(first.headers.location!, server.origin).href, { method: 'DELETE' })).status, 204)
  t.equal(await create({ 'Tus-Resumable': '1.0.0', 'Upload-Length': String(2 * GiB) }), 201, 'a terminated upload\'s promise is released')
})

t.test('the disk reserve holds for creations checked at the same time, and an expired upload gives its promise back', async (t) => {
  const GiB = 1024 ** 3
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-reserve-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const stats = await statfs(dir)
  const server = await startServer(t, { dir, daysToKeep: 0.5, minFreeSpace: stats.bavail * stats.bsize - 3 * GiB })
  const length = String(2 * GiB)
  // Each checks the free space before any of them is stored: only one may have the room.
  const statuses = await Promise.all([
    ...[1, 2, 3].map(async () => (await rawRequest(server.endpoint, { method: 'POST', headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': length } })).status),
    ...[6, 9].map(async (version) => (await rawRequest(server.endpoint, {
      method: 'POST', headers: { 'Upload-Draft-Interop-Version': String(version), 'Upload-Complete': '?0', 'Upload-Length': length }
    })).status)
  ])
  t.same(statuses.filter((status) => status === 201).length, 1, `one creation of five: ${statuses.join(', ')}`)
  t.same(statuses.filter((status) => status === 507).length, 4)
  const [id] = (await readdir(dir)).filter((name) => !name.includes('.'))
  t.ok(id, 'the one upload')
  await backdate(dir, id!, 1)
  t.equal(await server.app.tus.removeExpired(), 1)
  t.equal((await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': length } })).status, 201, 'an expired upload\'s promise is released')
})

t.test('Expect: 100-continue: a refused request is answered without a 100, so its body is never sent; an accepted one gets the 100', async (t) => {
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(tusPlugin, {
      dir,
      auth: (request) => { if (request.headers.authorization !== 'ok') throw Object.assign(new Error('who are you?'), { statusCode: 401 }) }
    })
    app.put('/elsewhere', async () => 'not tus')
  })
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '5', Authorization: 'ok' } })
  const url = new URL(created.headers.location!, server.origin)
  /** Sends a request's head with Expect: 100-continue and returns the first thing the server answers, and the socket. */
  async function expectContinue (head: string): Promise<{ first: string, socket: Socket }> {
    const socket = connect(Number(url.port), '127.0.0.1')
    t.teardown(() => { socket.destroy() })
    await once(socket, 'connect')
    socket.write(`${head}Host: 127.0.0.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n`)
    const [chunk] = await once(socket, 'data') as [Buffer]
    return { first: chunk.toString('latin1'), socket }
  }
  const patch = (headers: string, path = url.pathname): string =>
    `PATCH ${path} HTTP/1.1\r\nContent-Type: application/offset+octet-stream\r\n${headers}`
  const refusals: Array<[string, string, RegExp]> = [
    ['no credentials', patch('Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n'), /^HTTP\/1\.1 401 /],
    ['a wrong offset', patch('Tus-Resumable: 1.0.0\r\nAuthorization: ok\r\nUpload-Offset: 3\r\n'), /^HTTP\/1\.1 409 /],
    ['an unknown upload', patch('Tus-Resumable: 1.0.0\r\nAuthorization: ok\r\nUpload-Offset: 0\r\n', `${url.pathname}x`), /^HTTP\/1\.1 404 /],
    ['a draft append at a wrong offset', `PATCH ${url.pathname} HTTP/1.1\r\nContent-Type: application/partial-upload\r\nUpload-Draft-Interop-Version: 6\r\nUpload-Complete: ?1\r\nAuthorization: ok\r\nUpload-Offset: 3\r\n`, /^HTTP\/1\.1 409 /]
  ]
  for (const [name, head, answer] of refusals) {
    const { first } = await expectContinue(head)
    t.match(first, answer, `${name}: the final answer first, no 100 Continue`)
  }
  const { first, socket } = await expectContinue(patch('Tus-Resumable: 1.0.0\r\nAuthorization: ok\r\nUpload-Offset: 0\r\n'))
  t.match(first, /^HTTP\/1\.1 100 Continue\r\n\r\n/, 'an accepted append is told to send its body')
  let rest = first.replace(/^HTTP\/1\.1 100 Continue\r\n\r\n/, '')
  socket.write('hello')
  while (!/\r\n\r\n/.test(rest)) rest += ((await once(socket, 'data')) as [Buffer])[0].toString('latin1')
  t.match(rest, /^HTTP\/1\.1 204 /)
  t.equal((await readFile(join(server.dir, idOf(url.href)))).toString(), 'hello')
  const other = await expectContinue('PUT /elsewhere HTTP/1.1\r\nContent-Type: text/plain\r\n')
  t.match(other.first, /^HTTP\/1\.1 100 Continue/, 'the app\'s other routes get their 100 at once, as before')
})

t.test('Expect: 100-continue waits for auth over TLS too: an https server, an HTTP/2 one with allowHTTP1 (its HTTP/1.1 requests and its streams)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-tls-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  // A self-signed certificate made for this test.
  await promisify(execFile)('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-subj', '/CN=127.0.0.1', '-days', '1'
  ])
  const tls = { key: await readFile(join(dir, 'key.pem')), cert: await readFile(join(dir, 'cert.pem')) }
  const auth = (request: FastifyRequest): void => {
    if (request.headers.authorization !== 'ok') throw Object.assign(new Error('who are you?'), { statusCode: 401 })
  }
  const servers: Array<[string, FastifyServerOptions]> = [
    ['https', { https: tls } as FastifyServerOptions],
    ['HTTP/2 with allowHTTP1', { http2: true, https: { ...tls, allowHTTP1: true } } as FastifyServerOptions]
  ]
  for (const [name, fastifyOptions] of servers) {
    const server = await startServer(t, {}, async (app, uploads) => {
      await app.register(tusPlugin, { dir: uploads, auth })
      app.post('/reviews', async () => 'not tus')
    }, fastifyOptions)
    const port = Number(new URL(server.origin).port)
    const send = async (head: string): Promise<{ statuses: number[], head: string }> => await expectContinueExchange(port, head, 'hello', true)
    const tusPost = 'POST /files/ HTTP/1.1\r\nTus-Resumable: 1.0.0\r\nUpload-Length: 10\r\nContent-Type: application/offset+octet-stream\r\n'
    const draftPost = 'POST /files/ HTTP/1.1\r\nUpload-Draft-Interop-Version: 6\r\nUpload-Complete: ?1\r\n'
    t.same((await send(tusPost)).statuses, [401], `${name}: a refused tus POST gets its 401 alone, no 100 Continue`)
    t.same((await send(draftPost)).statuses, [401], `${name}: a refused draft POST gets its 401 alone, no 100 Continue`)
    const created = await send(`${tusPost}Authorization: ok\r\n`)
    t.same(created.statuses, [100, 201], `${name}: an accepted tus POST gets its 100, then 201`)
    t.match(created.head, /\r\nupload-offset: 5\r\n/i)
    t.same((await send(`${draftPost}Authorization: ok\r\n`)).statuses, [104, 100, 201], `${name}: an accepted draft POST: 104, one 100, then 201`)
    t.same((await send('POST /reviews HTTP/1.1\r\nContent-Type: text/plain\r\n')).statuses, [100, 200], `${name}: the app's other routes get their 100 at once`)
  }

  // The HTTP/2 server's own streams: the same rule.
  const server = await startServer(t, {}, async (app, uploads) => { await app.register(tusPlugin, { dir: uploads, auth }) }, servers[1]![1])
  const session = connectHttp2(server.origin.replace('http:', 'https:'), { rejectUnauthorized: false })
  t.teardown(() => { session.close() })
  const h2Post = {
    ':method': 'POST', ':path': '/files/', 'tus-resumable': '1.0.0', 'upload-length': '5', 'content-length': '5', 'content-type': 'application/offset+octet-stream', expect: '100-continue'
  }
  const stream = session.request(h2Post)
  let continued = false
  stream.on('continue', () => { continued = true })
  const [headers] = await once(stream, 'response') as [Record<string, string | number>]
  stream.destroy()
  t.equal(headers[':status'], 401, 'HTTP/2: a refused stream gets its 401')
  t.notOk(continued, 'HTTP/2: and no 100 Continue before it')
  const accepted = session.request({ ...h2Post, authorization: 'ok' })
  await once(accepted, 'continue')
  accepted.end('hello')
  const [answer] = await once(accepted, 'response') as [Record<string, string | number>]
  accepted.resume()
  t.same([answer[':status'], answer['upload-offset']], [201, '5'], 'HTTP/2: an accepted stream gets its 100, sends its body, and is stored')
})

/**
 * One request with `Expect: 100-continue` on a raw socket: its body goes only after a 100. The statuses of every
 * answer up to the final one, in order, and the final answer's head.
 */
async function expectContinueExchange (
  port: number, head: string, body: string, tls = false
): Promise<{ statuses: number[], head: string }> {
  const socket = tls ? connectTls({ port, host: '127.0.0.1', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }) : connect(port, '127.0.0.1')
  try {
    await once(socket, tls ? 'secureConnect' : 'connect')
    socket.write(`${head}Host: 127.0.0.1\r\nContent-Length: ${Buffer.byteLength(body)}\r\nExpect: 100-continue\r\n\r\n`)
    const statuses: number[] = []
    let received = ''
    for (;;) {
      const end = received.indexOf('\r\n\r\n')
      if (end === -1) {
        received += ((await once(socket, 'data')) as [Buffer])[0].toString('latin1')
        continue
      }
      const answer = received.slice(0, end)
      received = received.slice(end + 4)
      const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(answer)?.[1])
      statuses.push(status)
      if (status >= 200) return { statuses, head: answer }
      if (status === 100) socket.write(body)
    }
  } finally {
    socket.destroy()
  }
}

t.test('Expect: 100-continue waits for auth on the routes however the app\'s router reaches them; its other routes get the 100 at once', async (t) => {
  const auth = (request: FastifyRequest): void => {
    if (request.headers.authorization !== 'ok') throw Object.assign(new Error('who are you?'), { statusCode: 401 })
  }
  const reviews = async (): Promise<string> => 'not tus'
  interface Setup {
    name: string
    /** The creation URL as the app's clients write it, and a route of the app's own, as they write it too. */
    creation: string
    elsewhere: string
    fastifyOptions: FastifyServerOptions
    setup: (app: FastifyInstance, dir: string) => Promise<void>
  }
  const setups: Setup[] = [{
    name: 'a parametric prefix',
    creation: '/product/42/images/',
    elsewhere: '/product/42/reviews',
    fastifyOptions: {},
    setup: async (app, dir) => {
      await app.register(tusPlugin, { dir, auth, prefix: '/product/:pid/images' })
      app.post('/product/:pid/reviews', reviews)
    }
  }, {
    name: 'under an outer plugin\'s prefix, caseSensitive: false',
    creation: '/API/Files/',
    elsewhere: '/API/Reviews',
    fastifyOptions: { routerOptions: { caseSensitive: false } },
    setup: async (app, dir) => {
      await app.register(async (child) => { await child.register(tusPlugin, { dir, auth }) }, { prefix: '/api' })
      app.post('/api/reviews', reviews)
    }
  }, {
    name: 'ignoreDuplicateSlashes',
    creation: '//files//',
    elsewhere: '//reviews',
    fastifyOptions: { routerOptions: { ignoreDuplicateSlashes: true } },
    setup: async (app, dir) => {
      await app.register(tusPlugin, { dir, auth })
      app.post('/reviews', reviews)
    }
  }, {
    name: 'rewriteUrl',
    creation: '/legacy/',
    elsewhere: '/reviews',
    fastifyOptions: { rewriteUrl: (request) => (request.url ?? '/').replace(/^\/legacy\//, '/files/') },
    setup: async (app, dir) => {
      await app.register(tusPlugin, { dir, auth })
      app.post('/reviews', reviews)
    }
  }]
  for (const { name, creation, elsewhere, fastifyOptions, setup } of setups) {
    const server = await startServer(t, {}, setup, fastifyOptions)
    const port = Number(new URL(server.origin).port)
    const send = async (head: string, body = 'hello'): Promise<{ statuses: number[], head: string }> => await expectContinueExchange(port, head, body)
    const tusPatch = (path: string, headers = ''): string =>
      `PATCH ${path} HTTP/1.1\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n${headers}`
    const draftPatch = (path: string, headers = ''): string =>
      `PATCH ${path} HTTP/1.1\r\nUpload-Draft-Interop-Version: 6\r\nContent-Type: application/partial-upload\r\nUpload-Complete: ?1\r\n${headers}`
    const tusPost = `POST ${creation} HTTP/1.1\r\nTus-Resumable: 1.0.0\r\nUpload-Length: 10\r\nContent-Type: application/offset+octet-stream\r\n`
    const draftPost = `POST ${creation} HTTP/1.1\r\nUpload-Draft-Interop-Version: 6\r\nUpload-Complete: ?1\r\n`

    const refusals: Array<[string, string]> = [
      ['tus PATCH', tusPatch(`${creation}AAAAAAAAAAAAAAAAAAAAA`, 'Upload-Offset: 0\r\n')],
      ['tus POST with a body', tusPost],
      ['draft PATCH', draftPatch(`${creation}AAAAAAAAAAAAAAAAAAAAA`, 'Upload-Offset: 0\r\n')],
      ['draft POST with a body', draftPost]
    ]
    for (const [request, head] of refusals) {
      t.same((await send(head)).statuses, [401], `${name}: a refused ${request} gets its 401 alone, no 100 Continue`)
    }

    const created = await send(`${tusPost}Authorization: ok\r\n`)
    t.same(created.statuses, [100, 201], `${name}: an accepted tus POST gets its 100, then 201`)
    t.match(created.head, /\r\nupload-offset: 5\r\n/i)
    const id = idOf(/\r\nlocation: (\S+)/i.exec(created.head)![1]!)
    const appended = await send(draftPatch(`${creation}${id}`, 'Upload-Offset: 5\r\nAuthorization: ok\r\n'))
    t.same(appended.statuses, [100, 204], `${name}: an accepted draft PATCH gets its 100, then 204`)
    t.match(appended.head, /\r\nupload-offset: 10\r\n/i)
    t.equal((await readFile(join(server.dir, id))).toString(), 'hellohello')
    t.same((await send(`${draftPost}Authorization: ok\r\n`)).statuses, [104, 100, 201], `${name}: an accepted draft POST: 104, its 100, then 201`)

    t.same((await send(`POST ${elsewhere} HTTP/1.1\r\nContent-Type: text/plain\r\n`)).statuses, [100, 200], `${name}: the app's other routes get their 100 at once`)
  }
})
