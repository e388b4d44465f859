// Apps that read the request body or the download themselves, or change it, through tus 1.0.0 and the draft
// (interop 6 and 9): no byte is lost silently, no chunk the app holds is freed under it, a body decoded by
// @fastify/compress is stored decoded, and app.inject() bodies and checksums are read.
import t, { type Test } from 'tap'
import compress from '@fastify/compress'
import type { FastifyInstance } from 'fastify'
import { request as httpRequest } from 'node:http'
import { PassThrough, Readable, Transform, Writable } from 'node:stream'
import { createHash } from 'node:crypto'
import { gzipSync } from 'node:zlib'
import { tusPlugin, type UploadInfo } from '../lib/index.js'
import { answerOf, randomBytesSeeded, send, sha256, startServer, stored, type HttpAnswer, type TestServer } from './helpers.js'

const MiB = 1024 * 1024
const DRAFTS = [6, 9]

/** A server with the plugin after `setup`; the uploads onUploadComplete saw. */
async function serve (t: Test, setup: (app: FastifyInstance) => Promise<void> | void): Promise<{ server: TestServer, completed: UploadInfo[] }> {
  const completed: UploadInfo[] = []
  const server = await startServer(t, {}, async (app, dir) => {
    await setup(app)
    await app.register(tusPlugin, { dir, onUploadComplete: (upload) => { completed.push(upload) } })
  })
  return { server, completed }
}

async function tusCreate (server: TestServer, length: number): Promise<string> {
  const created = await send(server.endpoint, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Length': String(length) })
  return new URL(created.headers.location!, server.endpoint).href
}

/** Appends `data` in one request of the protocol; the upload's URL and the answer. */
type Sender = (server: TestServer, data: Buffer, headers?: Record<string, string>, sent?: Buffer) => Promise<{ url: string, answer: HttpAnswer }>
const SENDERS: Array<[string, Sender]> = [
  ['tus 1.0.0 PATCH', async (server, data, headers = {}, sent = data) => {
    const url = await tusCreate(server, data.length)
    const answer = await send(url, 'PATCH', {
      'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream', 'Content-Length': String(sent.length), ...headers
    }, sent)
    return { url, answer }
  }],
  ...DRAFTS.map((version): [string, Sender] => [`draft interop ${version} POST Upload-Complete ?1`, async (server, data, headers = {}, sent = data) => {
    const answer = await send(server.endpoint, 'POST', {
      'Upload-Draft-Interop-Version': String(version), 'Upload-Complete': '?1', 'Content-Length': String(sent.length), ...headers
    }, sent)
    return { url: new URL(answer.headers.location ?? '/none', server.endpoint).href, answer }
  }])
]

for (const [name, sendAll] of SENDERS) {
  t.test(`${name}: a body an app's hook made flow before the plugin read it is refused, nothing stored`, async (t) => {
    let metered = 0
    const { server, completed } = await serve(t, (app) => {
      // An app-wide bandwidth meter that listens to request.raw from onRequest; the wait lets the body flow.
      app.addHook('onRequest', async (request) => {
        if (request.method !== 'PATCH' && request.method !== 'POST') return
        request.raw.on('data', (chunk: Buffer) => { metered += chunk.length })
        await new Promise((resolve) => setTimeout(resolve, 50))
      })
    })
    const data = randomBytesSeeded(MiB, 31)
    const { url, answer } = await sendAll(server, data)
    t.equal(answer.status, 500, 'refused')
    t.match(answer.body, /read before fastify-tus/, 'says why')
    t.equal(answer.headers['upload-offset'], undefined, 'no offset claimed')
    t.same(completed, [], 'onUploadComplete never ran')
    t.ok(metered > 0, 'the app hook read the body')
    if (name.startsWith('tus')) t.equal((await stored(server, url)).length, 0, 'nothing stored')
  })

  t.test(`${name}: a body that ends short of its Content-Length is never taken as whole`, async (t) => {
    const { server, completed } = await serve(t, (app) => {
      // A preParsing stream that loses the body's first chunk and ends cleanly.
      app.addHook('preParsing', async (request, _reply, payload) => {
        if (request.method !== 'PATCH' && request.method !== 'POST') return payload
        let first = true
        return payload.pipe(new Transform({
          transform (chunk: Buffer, _encoding, callback) {
            if (first) {
              first = false
              callback()
            } else callback(null, chunk)
          }
        }))
      })
    })
    const data = randomBytesSeeded(MiB, 32)
    const { url, answer } = await sendAll(server, data, { 'Upload-Length': String(data.length) })
    t.not(answer.headers['upload-complete'], '?1', 'not complete')
    t.same(completed, [], 'onUploadComplete never ran')
    if (name.startsWith('tus')) {
      // A plain append: what arrived is kept, and the offset says how much that is.
      t.equal(answer.status, 204, 'an append')
      const kept = (await stored(server, url)).length
      t.ok(kept < data.length, 'the upload is not complete')
      t.equal(answer.headers['upload-offset'], String(kept), 'the offset of what is kept')
    } else {
      t.equal(answer.status, 400, 'a completing request is refused')
      t.not(answer.headers['upload-offset'], String(data.length), 'not answered as whole')
    }
  })

  t.test(`${name}: chunks an app's preParsing hook keeps (a tee) are never freed`, async (t) => {
    for (const mode of ['pipe', 'data'] as const) {
      const kept: Buffer[] = []
      const { server } = await serve(t, (app) => {
        app.addHook('preParsing', async (request, _reply, payload) => {
          if (request.method !== 'PATCH' && request.method !== 'POST') return payload
          const tee = new PassThrough()
          if (mode === 'pipe') payload.pipe(new Writable({ highWaterMark: 64 * MiB, write (chunk: Buffer, _encoding, callback) { kept.push(chunk); setTimeout(callback, 1) } }))
          else payload.on('data', (chunk: Buffer) => { kept.push(chunk) })
          payload.pipe(tee)
          return tee
        })
      })
      const data = randomBytesSeeded(4 * MiB, 33)
      const { url, answer } = await sendAll(server, data)
      t.equal(answer.headers['upload-offset'], String(data.length), `${mode}: all stored`)
      await new Promise((resolve) => setTimeout(resolve, 1200))
      t.equal(sha256(await stored(server, url)), sha256(data), `${mode}: the bytes sent`)
      t.equal(sha256(Buffer.concat(kept)), sha256(data), `${mode}: the app's chunks intact`)
    }
  })

  t.test(`${name}: a gzip body decoded by @fastify/compress is stored decoded`, async (t) => {
    const { server, completed } = await serve(t, async (app) => { await app.register(compress, { threshold: 1 }) })
    const data = randomBytesSeeded(300_000, 34)
    const plain = Buffer.concat([data, Buffer.alloc(200_000, 66)])
    const gz = gzipSync(plain)
    const started = Date.now()
    const { url, answer } = await sendAll(server, plain, { 'Content-Encoding': 'gzip' }, gz)
    t.ok(Date.now() - started < 10_000, 'answered at once')
    t.equal(answer.headers['upload-offset'], String(plain.length), 'the decoded bytes counted')
    t.equal(sha256(await stored(server, url)), sha256(plain), 'the decoded bytes stored')
    t.equal(completed.length, 1, 'completed once')
    t.equal(completed[0]?.size, plain.length, 'at the decoded length')
  })
}

t.test('a chunked body an app\'s hook made flow before the plugin read it is refused, never completed (tus PATCH, draft POST ?1)', async (t) => {
  const { server, completed } = await serve(t, (app) => {
    app.addHook('onRequest', async (request) => {
      request.raw.on('data', () => undefined)
      await new Promise((resolve) => setTimeout(resolve, 50))
    })
  })
  const data = randomBytesSeeded(300_000, 36)
  /** The body in two writes, the second 100 ms later, without Content-Length (chunked). */
  const chunked = async (url: string, method: string, headers: Record<string, string>): Promise<HttpAnswer> => await new Promise((resolve, reject) => {
    const request = httpRequest(url, { method, headers, agent: false })
    request.on('error', reject)
    request.on('response', (response) => { answerOf(response).then(resolve, reject) })
    request.write(data.subarray(0, 100_000))
    setTimeout(() => { request.end(data.subarray(100_000)) }, 100)
  })
  const url = await tusCreate(server, data.length)
  const patched = await chunked(url, 'PATCH', { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' })
  t.equal(patched.status, 500, 'tus: refused')
  t.equal((await stored(server, url)).length, 0, 'tus: nothing stored')
  for (const version of DRAFTS) {
    const created = await chunked(server.endpoint, 'POST', { 'Upload-Draft-Interop-Version': String(version), 'Upload-Complete': '?1', 'Content-Type': 'application/octet-stream' })
    t.equal(created.status, 500, `draft ${version}: refused`)
    t.equal(created.headers['upload-complete'], undefined, `draft ${version}: never said complete`)
  }
  t.same(completed, [], 'onUploadComplete never ran')
})

t.test('tus and the draft: a gzip body whose decoded bytes go beyond Upload-Length is refused (413/400), not stored', async (t) => {
  const { server, completed } = await serve(t, async (app) => { await app.register(compress, { threshold: 1 }) })
  const plain = Buffer.alloc(100_000, 67)
  const gz = gzipSync(plain)
  const url = await tusCreate(server, 50_000)
  const answer = await send(url, 'PATCH', {
    'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream', 'Content-Encoding': 'gzip', 'Content-Length': String(gz.length)
  }, gz)
  t.equal(answer.status, 413, 'tus: beyond the length')
  t.equal((await stored(server, url)).length, 0, 'tus: nothing kept')
  const drafted = await send(server.endpoint, 'POST', {
    'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?1', 'Upload-Length': '50000', 'Content-Encoding': 'gzip', 'Content-Length': String(gz.length)
  }, gz)
  t.ok(drafted.status >= 400, `draft: refused (${drafted.status})`)
  t.same(completed, [], 'nothing completed')
})

t.test('a download read by an onSend hook (without replacing it) keeps its chunks intact', async (t) => {
  const kept: Buffer[] = []
  const { server } = await serve(t, (app) => {
    app.addHook('onSend', async (request, _reply, payload) => {
      if (request.method === 'GET' && payload instanceof Readable) payload.on('data', (chunk: Buffer) => { kept.push(chunk) })
      return payload
    })
  })
  const data = randomBytesSeeded(4 * MiB, 35)
  for (const [name, sendAll] of SENDERS) {
    kept.length = 0
    const { url } = await sendAll(server, data)
    const got = await send(url, 'GET', {})
    t.equal(sha256(got.bytes), sha256(data), `${name}: the client got the upload`)
    await new Promise((resolve) => setTimeout(resolve, 1200))
    t.equal(sha256(Buffer.concat(kept)), sha256(data), `${name}: the hook's chunks intact`)
  }
})

t.test('app.inject(): a stream payload is read, and a correct Upload-Checksum accepted, through tus and the draft', async (t) => {
  const { server, completed } = await serve(t, () => undefined)
  const { app } = server
  const stream = (): Readable => Readable.from([Buffer.from('abc'), Buffer.from('def')])
  let r = await app.inject({ method: 'POST', url: '/files/', headers: { 'tus-resumable': '1.0.0', 'upload-length': '6' } })
  const tusUrl = new URL(r.headers.location as string, server.endpoint).href
  r = await app.inject({ method: 'PATCH', url: new URL(tusUrl).pathname, headers: { 'tus-resumable': '1.0.0', 'upload-offset': '0', 'content-type': 'application/offset+octet-stream' }, payload: stream() })
  t.equal(r.statusCode, 204, 'tus: stored')
  t.equal(r.headers['upload-offset'], '6', 'tus: every byte')
  t.equal((await stored(server, tusUrl)).toString(), 'abcdef', 'tus: the bytes sent')
  for (const version of DRAFTS) {
    r = await app.inject({ method: 'POST', url: '/files/', headers: { 'upload-draft-interop-version': String(version), 'upload-complete': '?1' }, payload: stream() })
    t.equal(r.headers['upload-offset'], '6', `draft ${version}: every byte`)
    t.equal((await stored(server, new URL(r.headers.location as string, server.endpoint).href)).toString(), 'abcdef', `draft ${version}: the bytes sent`)
  }
  t.same(completed.map((upload) => upload.size), [6, 6, 6], 'each completed at its size')

  const digest = `sha1 ${createHash('sha1').update('hello').digest('base64')}`
  r = await app.inject({ method: 'POST', url: '/files/', headers: { 'tus-resumable': '1.0.0', 'upload-length': '5' } })
  const checked = new URL(r.headers.location as string, server.endpoint)
  r = await app.inject({ method: 'PATCH', url: checked.pathname, headers: { 'tus-resumable': '1.0.0', 'upload-offset': '0', 'content-type': 'application/offset+octet-stream', 'upload-checksum': digest }, payload: 'hello' })
  t.equal(r.statusCode, 204, `tus checksum: stored (${r.body})`)
  t.equal((await stored(server, checked.href)).toString(), 'hello', 'tus checksum: the bytes sent')
  for (const version of DRAFTS) {
    r = await app.inject({ method: 'POST', url: '/files/', headers: { 'upload-draft-interop-version': String(version), 'upload-complete': '?1', 'upload-checksum': digest }, payload: 'hello' })
    t.equal(r.headers['upload-offset'], '5', `draft ${version} checksum: stored (${r.statusCode} ${r.body})`)
  }
})
