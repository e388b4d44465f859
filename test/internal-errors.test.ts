// An unexpected server error (a bug, a store failing in a way the plugin does not know) is logged with its
// details and answered with a generic 500: its message may hold paths, credentials or internals.
import t, { type Test } from 'tap'
import { Readable, Writable } from 'node:stream'
import tusPlugin, { FileStore, TusErrors, type NewUpload, type UploadInfo } from '../lib/index.js'
import { createUpload, startServer, tusRequest, rawRequest } from './helpers.js'

const SECRET = 'connection to db://admin:hunter2@10.0.0.7 refused'
const GENERIC = 'Internal server error'

/** A FileStore whose lookups and creations fail with a plain Error carrying a secret. */
class LeakyStore extends FileStore {
  override async getInfo (_id: string): Promise<UploadInfo> {
    throw new Error(SECRET)
  }

  override async create (_upload: NewUpload): Promise<UploadInfo> {
    throw new Error(SECRET)
  }
}

async function leakyServer (t: Test) {
  const logged: string[] = []
  const stream = new Writable({ write (chunk: Buffer, _encoding, done) { logged.push(chunk.toString()); done() } })
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(tusPlugin, { dir, store: new LeakyStore({ directory: dir }) })
  }, { logger: { level: 'error', stream } })
  return { server, logged }
}

function noSecret (t: Test, response: { headers: Record<string, string>, text: string }, what: string): void {
  t.notOk(response.text.includes('hunter2') || JSON.stringify(response.headers).includes('hunter2'), `${what}: the secret is not sent`)
}

const ID = 'AAAAAAAAAAAAAAAAAAAAA'

t.test('tus requests: an unexpected error is a generic 500 in plain text, logged in full', async (t) => {
  const { server, logged } = await leakyServer(t)
  const requests: Array<[string, string, Record<string, string>, string?]> = [
    ['HEAD', `${server.endpoint}${ID}`, {}],
    ['PATCH', `${server.endpoint}${ID}`, { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }, 'abc'],
    ['DELETE', `${server.endpoint}${ID}`, {}],
    ['POST', server.endpoint, { 'Upload-Length': '10' }]
  ]
  for (const [method, url, headers, body] of requests) {
    const response = await tusRequest(url, { method, headers, ...(body === undefined ? {} : { body }) })
    t.equal(response.status, 500, method)
    if (method !== 'HEAD') t.equal(response.text, GENERIC, `${method}: generic body`)
    t.match(response.headers['content-type'], /^text\/plain/)
    t.equal(response.headers['tus-resumable'], '1.0.0')
    noSecret(t, response, method)
  }
  const download = await rawRequest(`${server.endpoint}${ID}`)
  t.equal(download.status, 500)
  t.equal(download.text, GENERIC, 'GET: generic body')
  noSecret(t, download, 'GET')
  t.ok(logged.some((line) => line.includes('hunter2') && line.includes('fastify-tus: unexpected error')), 'the details are logged')
})

t.test('draft requests: an unexpected error is a generic 500, with the draft headers', async (t) => {
  const { server, logged } = await leakyServer(t)
  const draft = { 'Upload-Draft-Interop-Version': '6' }
  const requests: Array<[string, string, Record<string, string>, string?]> = [
    ['PATCH', `${server.endpoint}${ID}`, { ...draft, 'Upload-Offset': '0', 'Upload-Complete': '?0', 'Content-Type': 'application/partial-upload' }, 'abc'],
    ['DELETE', `${server.endpoint}${ID}`, draft],
    ['POST', server.endpoint, { ...draft, 'Upload-Complete': '?1' }, 'abc'],
    ['HEAD', `${server.endpoint}${ID}`, draft]
  ]
  for (const [method, url, headers, body] of requests) {
    const response = await rawRequest(url, { method, headers, ...(body === undefined ? {} : { body }) })
    t.equal(response.status, 500, method)
    if (method !== 'HEAD') t.equal(response.text, GENERIC, `${method}: generic body`)
    t.equal(response.headers['upload-draft-interop-version'], '6')
    t.equal(response.headers['tus-resumable'], undefined)
    noSecret(t, response, method)
  }
  t.ok(logged.some((line) => line.includes('hunter2')), 'the details are logged')
})

t.test('a lock service that is unreachable: 503 with Retry-After in both protocols, whatever locker threw it', async (t) => {
  const locker = { lock: async () => { throw new TusErrors.LOCK_FAILED(SECRET) } }
  const server = await startServer(t, { locker })
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '10' } })
  t.equal(created.status, 503)
  t.equal(created.headers['retry-after'], '1')
  noSecret(t, created, 'tus POST')
  const draft = await rawRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?1' }, body: 'hello' })
  t.equal(draft.status, 503)
  t.equal(draft.headers['retry-after'], '1')
  noSecret(t, draft, 'draft POST')
})

/** A server logging at `info` to lines of JSON, for what a request logs and at which level. */
async function loggingServer (t: Test, options: Parameters<typeof startServer>[1], setup?: Parameters<typeof startServer>[2]) {
  const lines: Array<{ level: number, msg: string, err?: { message?: string } }> = []
  const stream = new Writable({ write (chunk: Buffer, _encoding, done) { lines.push(JSON.parse(chunk.toString())); done() } })
  const server = await startServer(t, options, setup, { logger: { level: 'info', stream } })
  return { server, lines }
}

t.test('a lock service refusal (503, retry later) is logged once as a warning, in both protocols, not as an unexpected error', async (t) => {
  const locker = { lock: async () => { throw new TusErrors.LOCK_FAILED(SECRET) } }
  const { server, lines } = await loggingServer(t, { locker })
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '10' } })
  t.equal(created.status, 503)
  const draft = await rawRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?1' }, body: 'hello' })
  t.equal(draft.status, 503)
  const told = lines.filter((line) => line.err?.message?.includes(SECRET) === true)
  t.same(told.map((line) => [line.level, line.msg]), [
    [40, 'fastify-tus: upload lock unavailable; answered 503'],
    [40, 'fastify-tus: upload lock unavailable; answered 503']
  ], 'one warning a request, with the lock service\'s words')
  t.same(lines.filter((line) => line.level >= 50), [], 'no error logged')
})

t.test('a store that fails while writing: logged once, as an error naming the step, in both protocols', async (t) => {
  class FailingWrites extends FileStore {
    override async write (): Promise<number> { throw new Error(SECRET) }
  }
  const { server, lines } = await loggingServer(t, {}, async (app, dir) => {
    await app.register(tusPlugin, { dir, store: new FailingWrites({ directory: dir }) })
  })
  const tus = await tusRequest(await createUpload(server, { 'Upload-Length': '3' }), { method: 'PATCH', headers: { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }, body: 'abc' })
  t.equal(tus.status, 500)
  t.equal(tus.headers['upload-offset'], '0')
  // A creation's upload exists once its body fails to be stored: answered as created, at the offset the store holds.
  const draft = await rawRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?1' }, body: 'abc' })
  t.equal(draft.status, 201)
  t.equal(draft.headers['upload-offset'], '0')
  t.equal(draft.headers['upload-complete'], '?0')
  t.ok(draft.headers.location, 'with the upload to append to')
  const errors = lines.filter((line) => line.level >= 50)
  t.same(errors.map((line) => [line.msg, line.err?.message]), [
    ['fastify-tus: writing an upload failed', SECRET],
    ['fastify-tus: writing an upload failed', SECRET]
  ], 'one error a request, not a second "unexpected error" for the same failure')
})

t.test('a store that fails to record a length the request declared: the offset of the bytes it kept (500, a creation 201), in both protocols', async (t) => {
  class FailingLengths extends FileStore {
    override async declareLength (): Promise<void> { throw new Error(SECRET) }
  }
  const { server, lines } = await loggingServer(t, {}, async (app, dir) => {
    await app.register(tusPlugin, { dir, store: new FailingLengths({ directory: dir }) })
  })
  const deferred = await createUpload(server, { 'Upload-Defer-Length': '1' })
  const tus = await tusRequest(deferred, { method: 'PATCH', headers: { 'Upload-Offset': '0', 'Upload-Length': '6', 'Content-Type': 'application/offset+octet-stream' }, body: 'abcd' })
  t.equal(tus.status, 500)
  t.equal(tus.headers['upload-offset'], '4', 'tus: the bytes are stored, the length is not')
  const head = await tusRequest(deferred, { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], '4')
  t.equal(head.headers['upload-defer-length'], '1')
  // Chunked: the length is known only once the body has ended.
  const draft = await rawRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?1' }, body: Readable.from([Buffer.from('abc')]) })
  t.equal(draft.status, 201, 'draft: a creation is answered as created, the upload not complete')
  t.equal(draft.headers['upload-offset'], '3', 'draft: a creation completing at the bytes it brought')
  t.equal(draft.headers['upload-complete'], '?0')
  t.ok(draft.headers.location, 'with the upload to resume')
  noSecret(t, tus, 'tus')
  noSecret(t, draft, 'draft')
  t.same(lines.filter((line) => line.level >= 50).map((line) => [line.msg, line.err?.message]), [
    ['fastify-tus: writing an upload failed', SECRET],
    ['fastify-tus: writing an upload failed', SECRET]
  ], 'logged once a request')
})
