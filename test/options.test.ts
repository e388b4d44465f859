// Options that look valid but could not work are refused at registration (FST_TUS_INVALID_OPTION), never at the
// first request: what the first requests would have met is checked through tus 1.0.0 and the draft.
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { createServer, request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify from 'fastify'
import { tusdFileHooks, tusdHttpHooks } from '../lib/cli-hooks.js'
import tusPlugin, { FileLocker, FileStore, MemoryLocker, type TusPluginOptions } from '../lib/index.js'
import { createUpload, delegatingTo, idOf, sha256, startServer, tusRequest } from './helpers.js'

async function refused (t: Test, options: Record<string, unknown>, message: RegExp): Promise<void> {
  const app = Fastify()
  await t.rejects(async () => { await app.register(tusPlugin, options as TusPluginOptions).ready() }, { code: 'FST_TUS_INVALID_OPTION', message }, JSON.stringify(options))
  await app.close()
}

/** A PATCH (tus, or a draft append) whose body comes in two halves `pauseMs` apart; resolves with its status. */
async function pausingPatch (url: string, headers: Record<string, string>, body: Buffer, pauseMs: number): Promise<number> {
  const request = httpRequest(url, { method: 'PATCH', headers: { ...headers, 'Content-Length': String(body.length) }, agent: false })
  const answered = once(request, 'response') as Promise<[{ statusCode: number, resume: () => void }]>
  request.on('error', () => {})
  request.write(body.subarray(0, body.length / 2))
  await new Promise((resolve) => setTimeout(resolve, pauseMs))
  request.end(body.subarray(body.length / 2))
  const [response] = await answered
  response.resume()
  return response.statusCode
}

const DRAFT_APPEND = { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?1', 'Content-Type': 'application/partial-upload' }
const TUS_APPEND = { 'Tus-Resumable': '1.0.0', 'Content-Type': 'application/offset+octet-stream' }

t.test('timeouts a Node.js timer cannot wait for (beyond 2^31-1 ms, which it turns into 1 ms) are refused', async (t) => {
  for (const name of ['idleTimeout', 'lockTimeout', 'closeTimeout']) {
    await refused(t, { [name]: 2 ** 31 }, new RegExp(`${name} must be at most 2147483647 ms`))
    await refused(t, { [name]: Number.MAX_SAFE_INTEGER }, new RegExp(`${name} must be at most 2147483647 ms`))
  }
})

t.test('the longest timeouts a timer takes work: a body pausing for a moment is stored whole (tus and draft)', async (t) => {
  const server = await startServer(t, { idleTimeout: 2 ** 31 - 1, lockTimeout: 2 ** 31 - 1, closeTimeout: 2 ** 31 - 1 })
  const body = Buffer.from('0123456789abcdefghij')
  for (const [protocol, headers] of [['tus', TUS_APPEND], ['draft', DRAFT_APPEND]] as const) {
    const url = await createUpload(server, { 'Upload-Length': String(body.length) })
    t.equal(await pausingPatch(url, { ...headers, 'Upload-Offset': '0' }, body, 100), 204, `${protocol}: the append is answered`)
    t.equal(sha256(await readFile(join(server.dir, idOf(url)))), sha256(body), `${protocol}: every byte stored`)
  }
})

t.test('a daysToKeep whose expiry is no date is refused; the longest accepted gives valid expiry headers (tus and draft)', async (t) => {
  await refused(t, { daysToKeep: 1e9 }, /daysToKeep must be a positive number of days up to 1000000/)
  await refused(t, { daysToKeep: 1e300 }, /daysToKeep must be a positive number of days up to 1000000/)
  await refused(t, { daysToKeep: Number.MAX_VALUE }, /daysToKeep/)
  const server = await startServer(t, { daysToKeep: 1_000_000 })
  const url = await createUpload(server, { 'Upload-Length': '5' })
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.status, 200)
  const expires = head.headers['upload-expires'] ?? ''
  t.match(expires, /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/, `Upload-Expires is an HTTP-date (${expires})`)
  t.ok(Date.parse(expires) > Date.now() + 999_999 * 86_400_000, 'a million days from now')
  for (const [interop, key] of [['6', 'expires'], ['7', 'max-age'], ['9', 'max-age']] as const) {
    const draft = await tusRequest(url, { method: 'HEAD', headers: { 'Upload-Draft-Interop-Version': interop } })
    t.equal(draft.status, 204, `interop ${interop}`)
    t.match(draft.headers['upload-limit'], new RegExp(`, ${key}=\\d{11}$`), `interop ${interop}: ${key} in whole seconds (${draft.headers['upload-limit']})`)
  }
})

t.test('a dir that is a file, or goes through one, is refused at registration; a missing one is created then', async (t) => {
  const base = await mkdtemp(join(tmpdir(), 'fastify-tus-options-'))
  t.teardown(async () => { await rm(base, { recursive: true, force: true }) })
  await writeFile(join(base, 'file'), 'not a directory')
  await refused(t, { dir: join(base, 'file') }, /dir ".*\/file" must be a directory, but it is a file/)
  await refused(t, { dir: join(base, 'file', 'uploads') }, /dir ".*\/file\/uploads" must be a directory, but a part of its path is a file/)
  t.equal(await readFile(join(base, 'file'), 'utf8'), 'not a directory', 'the file is left as it was')

  const dir = join(base, 'new', 'uploads')
  const app = Fastify()
  await app.register(tusPlugin, { dir }).ready()
  t.ok((await stat(dir)).isDirectory(), 'created at registration')
  await app.close()
  const server = await startServer(t, { dir })
  const body = Buffer.from('hello')
  for (const [protocol, headers] of [['tus', TUS_APPEND], ['draft', DRAFT_APPEND]] as const) {
    const url = await createUpload(server, { 'Upload-Length': String(body.length) })
    t.equal(await pausingPatch(url, { ...headers, 'Upload-Offset': '0' }, body, 0), 204, `${protocol}: stored there`)
    t.equal(sha256(await readFile(join(dir, idOf(url)))), sha256(body), `${protocol}: every byte in the new directory`)
  }
})

t.test('a store or a locker without the calls the plugin makes is refused at registration', async (t) => {
  await refused(t, { store: {} }, /store must be a DataStore, but its create, getInfo, write, flush, declareLength, read, terminate, list, close are not functions/)
  await refused(t, { store: 'files' }, /store must be a DataStore \(got string\)/)
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-options-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const { close: _close, ...noClose } = delegatingTo(new FileStore({ directory: dir }))
  await refused(t, { store: noClose }, /store must be a DataStore, but its close is not a function/)
  await refused(t, { locker: {} }, /locker must be an UploadLocker, but its lock is not a function/)
  await refused(t, { locker: { lock: async () => await Promise.reject(new Error('no')), close: 'later' } }, /locker must be an UploadLocker, but its close is not a function/)

  // What passes: a store of the app's own with the required calls only, and a locker without close; an upload over
  // tus and the draft goes through them.
  const locker = new MemoryLocker()
  const server = await startServer(t, { dir, store: delegatingTo(new FileStore({ directory: dir })), locker: { lock: locker.lock.bind(locker) } })
  const body = Buffer.from('hello')
  for (const [protocol, headers] of [['tus', TUS_APPEND], ['draft', DRAFT_APPEND]] as const) {
    const url = await createUpload(server, { 'Upload-Length': String(body.length) })
    t.equal(await pausingPatch(url, { ...headers, 'Upload-Offset': '0' }, body, 0), 204, `${protocol}: stored`)
    t.equal(sha256(await readFile(join(dir, idOf(url)))), sha256(body), `${protocol}: every byte`)
  }
})

t.test('a prefix or metricsPath with "%" (which the router, matching decoded paths, never reaches) is refused', async (t) => {
  for (const prefix of ['/a%20b', '/caf%C3%A9', '/a%2Fb', '/a%zz']) {
    await refused(t, { prefix }, new RegExp(`prefix cannot hold "%": the router matches decoded paths, so "${prefix}" would never be reached`))
  }
  await refused(t, { metricsPath: '/tus%20metrics' }, /metricsPath cannot hold "%"/)
  // The characters a prefix may hold reach their routes (tus and draft), ":" naming a parameter.
  const body = Buffer.from('hello')
  for (const prefix of ["/a;b,c'd/~e", '/tenants/:tenant/files']) {
    const server = await startServer(t, { prefix, metricsPath: '/m;x' })
    const endpoint = `${server.origin}${prefix.replace(':tenant', 't1')}/`
    for (const [protocol, headers] of [['tus', TUS_APPEND], ['draft', DRAFT_APPEND]] as const) {
      const url = await createUpload({ ...server, endpoint }, { 'Upload-Length': String(body.length) })
      t.ok(url.startsWith(endpoint), `${prefix}: the upload lives under it (${url})`)
      t.equal(await pausingPatch(url, { ...headers, 'Upload-Offset': '0' }, body, 0), 204, `${prefix} ${protocol}: stored`)
      t.equal(sha256(await readFile(join(server.dir, idOf(url)))), sha256(body), `${prefix} ${protocol}: every byte`)
    }
    t.equal((await tusRequest(`${server.origin}/m;x`)).status, 200, 'the metrics route is reached')
  }
})

t.test('an async generateUrl or getUploadIdFromRequest (its promise never a URL or an id) is refused at registration', async (t) => {
  await refused(t, { generateUrl: async () => 'http://127.0.0.1/files/x' }, /generateUrl must be synchronous: its answer is used as it returns, never awaited/)
  await refused(t, { getUploadIdFromRequest: async (_request: unknown, last: string) => last }, /getUploadIdFromRequest must be synchronous/)
  // Synchronous ones, as the README's pair: upload URLs that end in `<base64url id>.up`, reached over tus and the draft.
  const server = await startServer(t, {
    generateUrl: (_request, { path, id }) => `${path}/${Buffer.from(id).toString('base64url')}.up`,
    getUploadIdFromRequest: (_request, lastPath) => lastPath.endsWith('.up') ? Buffer.from(lastPath.slice(0, -3), 'base64url').toString() : undefined
  })
  const body = Buffer.from('hello')
  for (const [protocol, headers] of [['tus', TUS_APPEND], ['draft', DRAFT_APPEND]] as const) {
    const url = await createUpload(server, { 'Upload-Length': String(body.length) })
    t.match(url, /\.up$/)
    t.equal(await pausingPatch(url, { ...headers, 'Upload-Offset': '0' }, body, 0), 204, `${protocol}: stored`)
    const id = Buffer.from(new URL(url).pathname.split('/').pop()!.slice(0, -3), 'base64url').toString()
    t.equal(sha256(await readFile(join(server.dir, id))), sha256(body), `${protocol}: every byte`)
  }
})

t.test('a locker delay a timer cannot wait for is refused; the longest one holds its lock through an append (tus and draft)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-options-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const directory = join(dir, '.locks')
  for (const options of [{ ttlMs: 2 ** 33 }, { ttlMs: 2 ** 31 + 1000 }, { retryMs: 2 ** 31 }]) {
    t.throws(() => new FileLocker({ directory, ...options }), { code: 'FST_TUS_INVALID_OPTION', message: /FileLocker (ttlMs|retryMs) must be at most 2147483647 ms/ }, JSON.stringify(options))
  }
  const server = await startServer(t, { dir, locker: new FileLocker({ directory, ttlMs: 2 ** 31 - 1 }) })
  const body = Buffer.alloc(100_000, 7)
  for (const [protocol, headers] of [['tus', TUS_APPEND], ['draft', DRAFT_APPEND]] as const) {
    const url = await createUpload(server, { 'Upload-Length': String(body.length) })
    t.equal(await pausingPatch(url, { ...headers, 'Upload-Offset': '0' }, body, 50), 204, `${protocol}: the append keeps its lock`)
    t.equal(sha256(await readFile(join(dir, idOf(url)))), sha256(body), `${protocol}: every byte`)
  }
})

t.test('tusd hooks: a timeoutMs of 0, or one a timer cannot wait for, is refused; the longest works (tus and draft)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-options-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  for (const timeoutMs of [0, -1, 1.5, 2 ** 31, Number.MAX_SAFE_INTEGER]) {
    t.throws(() => tusdHttpHooks({ url: 'http://127.0.0.1:9/hook', timeoutMs }), { code: 'FST_TUS_INVALID_OPTION', message: /tusdHttpHooks: timeoutMs must be a positive integer of ms up to 2147483647/ }, `http ${timeoutMs}`)
    t.throws(() => tusdFileHooks({ directory: dir, timeoutMs }), { code: 'FST_TUS_INVALID_OPTION', message: /tusdFileHooks: timeoutMs must be a positive integer of ms up to 2147483647/ }, `file ${timeoutMs}`)
  }
  // A receiver that takes a moment: with the longest timeout, each pre-create hook is answered.
  const types: string[] = []
  const receiver = createServer((request, response) => {
    let text = ''
    request.on('data', (chunk: Buffer) => { text += chunk.toString() })
    request.on('end', () => {
      types.push((JSON.parse(text) as { Type: string }).Type)
      setTimeout(() => { response.setHeader('Content-Type', 'application/json').end('{}') }, 20)
    })
  })
  receiver.listen(0, '127.0.0.1')
  await once(receiver, 'listening')
  t.teardown(() => { receiver.close() })
  const hooks = tusdHttpHooks({ url: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`, timeoutMs: 2 ** 31 - 1, events: ['pre-create'] })
  const server = await startServer(t, { dir }, async (app) => {
    await app.register(tusPlugin, hooks.options({ dir }))
    hooks.attach(app.tus, app.log)
  })
  const creations: Array<Record<string, string>> = [{ 'Tus-Resumable': '1.0.0', 'Upload-Length': '5' }, { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?0' }]
  for (const headers of creations) {
    const created = await tusRequest(server.endpoint, { method: 'POST', headers })
    t.equal(created.status, 201, `created after the hook (${JSON.stringify(headers)})`)
  }
  t.same(types, ['pre-create', 'pre-create'])
})

t.test('the largest maxSize still gives the draft a valid Upload-Limit: Structured Fields integers have at most 15 digits', async (t) => {
  const sfInteger = /^\d{1,15}$/
  for (const maxSize of [Number.MAX_SAFE_INTEGER, () => Number.MAX_SAFE_INTEGER]) {
    const server = await startServer(t, { maxSize })
    const url = await createUpload(server, { 'Upload-Length': '5' })
    t.equal((await tusRequest(server.endpoint, { method: 'OPTIONS' })).headers['tus-max-size'], String(Number.MAX_SAFE_INTEGER), 'tus announces it as it is')
    for (const interop of ['6', '7', '9']) {
      for (const [what, response] of [
        ['OPTIONS', await tusRequest(server.endpoint, { method: 'OPTIONS', headers: { 'Upload-Draft-Interop-Version': interop } })],
        ['HEAD', await tusRequest(url, { method: 'HEAD', headers: { 'Upload-Draft-Interop-Version': interop } })]
      ] as const) {
        const limit = response.headers['upload-limit'] ?? ''
        const members = Object.fromEntries(limit.split(', ').map((member) => member.split('=') as [string, string]))
        t.ok(Object.values(members).every((value) => sfInteger.test(value)), `interop ${interop} ${what}: every member an sf-integer (${limit})`)
        t.equal(members['max-size'], '999999999999999', `interop ${interop} ${what}: max-size is the largest one`)
      }
    }
  }
})

t.test('a dir where no directory can be made, or no file written, is refused at once, not at the plugin timeout', async (t) => {
  const started = Date.now()
  for (const [dir, message] of [
    // mkdir -p there never returned (Node's recursive mkdir retries ENOENT forever, spinning a libuv thread).
    [`/proc/self/fastify-tus-${randomBytes(4).toString('hex')}`, /^fastify-tus: dir "\/proc\/self\/fastify-tus-[0-9a-f]+" cannot be created: ENOENT/],
    [`/proc/self/fastify-tus-${randomBytes(4).toString('hex')}/uploads`, /cannot be created: ENOENT/],
    // Its permission bits let root write, the filesystem does not (every creation answered 500).
    ['/sys/kernel', /^fastify-tus: dir "\/sys\/kernel" cannot be written to/]
  ] as const) {
    const app = Fastify({ pluginTimeout: 60_000 })
    await t.rejects(async () => { await app.register(tusPlugin, { dir }).ready() }, { code: 'FST_TUS_INVALID_OPTION', message }, dir)
    await app.close()
  }
  t.ok(Date.now() - started < 5000, 'refused at once')
})
