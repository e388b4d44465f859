// app.close() while a request admitted before it (its auth still running) is about to write: its body is ended as
// those already writing are, so the close neither waits for its client nor closes the store under it; the bytes
// stored are the ones the upload reports, and the client resumes after a restart (tus 1.0.0 and the draft).
// An expiry sweep running when the close begins stops there: the close waits for the removal under way, and nothing
// is removed once the store and the locker are closed.
import t from 'tap'
import { once } from 'node:events'
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tusPlugin from '../lib/index.js'
import { backdate, createUpload, idOf, randomBytesSeeded, rawRequest, removeExpired, sha256, signal, startServer, tusRequest } from './helpers.js'

const PROTOCOLS = [
  ['tus 1.0.0', 'Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n', { 'Tus-Resumable': '1.0.0' }],
  ['draft interop 6', 'Upload-Draft-Interop-Version: 6\r\nUpload-Complete: ?1\r\nContent-Type: application/partial-upload\r\n', { 'Upload-Draft-Interop-Version': '6' }]
] as const

for (const [protocol, patchHeaders, headHeaders] of PROTOCOLS) {
  t.test(`${protocol}: a PATCH whose auth runs when app.close() begins is ended, not waited for; its upload resumes after a restart`, async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-close-admitted-'))
    t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
    const inAuth = signal()
    const gate = signal()
    const server = await startServer(t, { dir }, async (app) => {
      await app.register(tusPlugin, {
        dir,
        closeTimeout: 500,
        auth: async (request) => {
          if (request.method !== 'PATCH') return
          inAuth.resolve()
          await gate.promise
        }
      })
      // The auth ends once the close has begun: after the plugin's own preClose hook (registered before this one).
      app.addHook('preClose', async () => { gate.resolve() })
    }, { return503OnClosing: false })
    const data = randomBytesSeeded(100_000, 41)
    const url = await createUpload(server, { 'Upload-Length': String(data.length) })

    // A client that sends the head of its body, then goes slowly: it would keep its connection for as long as it likes.
    const socket = connect(Number(new URL(url).port), '127.0.0.1')
    await once(socket, 'connect')
    let answer = ''
    socket.on('data', (chunk: Buffer) => { answer += chunk.toString('latin1') })
    socket.on('error', () => {})
    const socketClosed = once(socket, 'close')
    socket.write(`PATCH ${new URL(url).pathname} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpload-Offset: 0\r\n${patchHeaders}Content-Length: ${data.length}\r\n\r\n`)
    socket.write(data.subarray(0, 10_000))
    await inAuth.promise

    let closed = false
    const closing = server.app.close().then(() => { closed = true })
    // The bound of a hang, not a wait for something: the close has its closeTimeout (500 ms) and no more.
    let timer: NodeJS.Timeout | undefined
    await Promise.race([closing, new Promise((resolve) => { timer = setTimeout(resolve, 5000) })])
    clearTimeout(timer)
    t.ok(closed, 'app.close() resolved without waiting for the client to finish its body')
    if (!closed) {
      socket.end(data.subarray(10_000))
      await closing
    }
    await socketClosed
    t.notMatch(answer, /^HTTP\/1\.1 2/m, 'the PATCH got no success answer: its connection was closed')

    const again = await startServer(t, { dir })
    const resumed = url.replace(new URL(url).origin, again.origin)
    const head = await tusRequest(resumed, { method: 'HEAD', headers: headHeaders })
    const offset = Number(head.headers['upload-offset'])
    t.ok(head.status === 200 || head.status === 204, `HEAD answered ${head.status}`)
    t.ok(offset < data.length, `the upload is not complete (offset ${offset})`)
    const stored = await readFile(join(dir, idOf(url)))
    t.equal(stored.length, offset, 'the offset is the bytes in the data file')
    t.equal(sha256(stored), sha256(data.subarray(0, offset)), 'what is stored is what the client sent, in order')
    const rest = await tusRequest(resumed, {
      method: 'PATCH',
      headers: { 'Upload-Offset': String(offset), 'Content-Type': 'application/offset+octet-stream' },
      body: data.subarray(offset)
    })
    t.equal(rest.status, 204, 'the client resumes from the offset')
    t.equal(sha256(await readFile(join(dir, idOf(url)))), sha256(data), 'and the upload ends byte-identical')
  })
}

t.test('removeExpired() racing app.close(): the removal under way ends before the close, nothing is removed after it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-close-sweep-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const inHook = signal()
  const gate = signal()
  const server = await startServer(t, { dir }, async (app) => {
    // The hook lets its upload go once the close has begun: this preClose hook runs first, and the plugin's own (which
    // waits for the sweep) is under way by the time its setImmediate fires.
    app.addHook('preClose', (done) => {
      done()
      setImmediate(gate.resolve)
    })
    await app.register(tusPlugin, {
      dir,
      daysToKeep: 1,
      onUploadExpire: async () => {
        inHook.resolve()
        await gate.promise
      }
    })
  }, { return503OnClosing: false })
  const ids: string[] = []
  for (let i = 0; i < 40; i++) {
    const headers: Record<string, string> = i % 2 === 0 ? { 'Upload-Length': '10' } : { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?0' }
    const created = await (i % 2 === 0 ? tusRequest : rawRequest)(server.endpoint, { method: 'POST', headers })
    t.equal(created.status, 201)
    ids.push(idOf(new URL(created.headers.location!, server.origin).href))
  }
  for (const id of ids) await backdate(dir, id, 3)

  const expired: string[] = []
  server.app.tus.on('expired', (upload) => { expired.push(upload.id) })
  const sweeping = server.app.tus.removeExpired()
  await inHook.promise
  await server.app.close()
  const atClose = expired.length
  // The sweep checks 16 uploads at a time: those whose hook was running when the close began are removed before it.
  t.ok(atClose >= 1 && atClose <= 16, `the removals under way when the close began ended before it (${atClose})`)
  t.equal(await sweeping, atClose, 'the sweep resolves with what it removed')
  t.equal(expired.length, atClose, 'no upload was removed after app.close() resolved')
  const names = new Set(await readdir(dir))
  const left = ids.filter((id) => names.has(`${id}.json`))
  t.equal(left.length, ids.length - atClose, 'every other upload is still there')
  t.ok(left.every((id) => names.has(id)), 'each whole: its info file and its data file')

  const again = await startServer(t, { dir, daysToKeep: 1 })
  t.equal((await removeExpired(again.app)).length, left.length, 'the next sweep removes them')
})
