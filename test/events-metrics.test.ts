// `app.tus` events for observers, and the Prometheus metrics after a known sequence of requests.
import t from 'tap'
import { connect } from 'node:net'
import { once } from 'node:events'
import type { UploadInfo } from '../lib/index.js'
import { backdate, createUpload, idOf, rawRequest, send, startServer, tusRequest, tusUpload, randomBytesSeeded } from './helpers.js'

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }
const patch = async (url: string, offset: number, body: string) =>
  await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': String(offset), ...OCTET }, body })

t.test('events: created, progress, completed, terminated and expired, each with the upload', async (t) => {
  const seen: string[] = []
  const server = await startServer(t, { progressInterval: 60_000 })
  const record = (name: string) => (upload: UploadInfo) => { seen.push(`${name} ${upload.id} ${upload.offset}/${upload.size ?? '?'}`) }
  for (const name of ['created', 'progress', 'completed', 'terminated', 'expired'] as const) server.app.tus.on(name, record(name))

  const url = await createUpload(server, { 'Upload-Length': '6' })
  const id = idOf(url)
  await patch(url, 0, 'abc')
  await patch(url, 3, 'def')
  await tusRequest(url, { method: 'DELETE' })
  const old = await createUpload(server, { 'Upload-Length': '1' })
  await backdate(server.dir, idOf(old), 30)
  await server.app.tus.removeExpired()
  t.same(seen, [
    `created ${id} 0/6`,
    `progress ${id} 0/6`, `progress ${id} 3/6`,
    `progress ${id} 3/6`,
    `completed ${id} 6/6`,
    `terminated ${id} 6/6`,
    `created ${idOf(old)} 0/1`,
    `expired ${idOf(old)} 0/1`
  ])
})

t.test('events: a listener that throws is logged and changes nothing for the client', async (t) => {
  const logs: string[] = []
  const server = await startServer(t, {}, undefined, { logger: { level: 'error', stream: { write: (line: string) => { logs.push(line) } } } })
  server.app.tus.on('completed', () => { throw new Error('observer bug') })
  const data = randomBytesSeeded(20_000, 3)
  const url = await tusUpload(data, { endpoint: server.endpoint })
  t.equal((await tusRequest(url, { method: 'HEAD' })).headers['upload-offset'], '20000')
  t.ok(logs.some((line) => line.includes('an event listener failed') && line.includes('observer bug')))
})

t.test('metrics: exact counts after a known sequence, through the route and the accessor', async (t) => {
  t.setTimeout(60_000)
  const server = await startServer(t, {
    metricsPath: '/metrics',
    lockTimeout: 300,
    progressInterval: 60_000,
    onUploadProgress: (upload) => {
      if (upload.metadata.quota !== undefined && upload.offset > 0) throw Object.assign(new Error('over quota'), { statusCode: 413 })
    },
    onUploadComplete: (upload) => { if (upload.metadata.fail !== undefined) throw new Error('indexer down') }
  })
  // A: two PATCHes complete it. B: creation-with-upload. C: partial, then terminated.
  const a = await createUpload(server, { 'Upload-Length': '10' })
  t.equal((await patch(a, 0, 'hello')).status, 204)
  t.equal((await patch(a, 5, 'world')).status, 204)
  t.equal((await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '3', ...OCTET }, body: 'abc' })).status, 201)
  const c = await createUpload(server, { 'Upload-Length': '100' })
  t.equal((await patch(c, 0, '0123456789')).status, 204)
  t.equal((await tusRequest(c, { method: 'DELETE' })).status, 204)
  // Refusals: no Tus-Resumable, unknown upload, wrong offset.
  t.equal((await rawRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '1' } })).status, 412)
  t.equal((await tusRequest(`${server.endpoint}nope`, { method: 'HEAD' })).status, 404)
  t.equal((await patch(a, 0, 'x')).status, 409)
  // D: its completion hook fails. E: its progress hook stops it after 6 bytes.
  const d = await createUpload(server, { 'Upload-Length': '4', 'Upload-Metadata': 'fail' })
  t.equal((await patch(d, 0, 'abcd')).status, 500)
  const e = await createUpload(server, { 'Upload-Length': '10', 'Upload-Metadata': 'quota' })
  t.equal((await patch(e, 0, 'abcdef')).status, 413)
  // F: a PATCH holds the lock while its body trickles in; a DELETE asks it to let go (lock release):
  // its body ends where it stands, its connection is closed, and the DELETE goes ahead.
  const f = await createUpload(server, { 'Upload-Length': '10' })
  const started = once(server.app.tus, 'progress')
  const socket = connect(Number(new URL(server.origin).port), '127.0.0.1')
  const answer = new Promise<string>((resolve) => {
    let text = ''
    socket.on('data', (chunk) => { text += chunk.toString() })
    socket.on('close', () => { resolve(text) })
  })
  socket.write(`PATCH ${new URL(f).pathname} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n` +
    'Content-Type: application/offset+octet-stream\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123')
  await started
  t.match(server.app.tus.metrics(), /^tus_uploads_active 1$/m, 'the trickling PATCH is active')
  t.equal((await tusRequest(f, { method: 'DELETE' })).status, 204)
  t.equal(await answer, '', 'the superseded PATCH\'s connection was closed')
  // G: expires.
  const g = await createUpload(server, { 'Upload-Length': '5' })
  await backdate(server.dir, idOf(g), 30)
  t.equal(await server.app.tus.removeExpired(), 1)
  t.equal((await tusRequest(a, { method: 'HEAD' })).status, 200)
  t.equal((await tusRequest(a)).status, 200)
  t.equal((await tusRequest(server.endpoint, { method: 'OPTIONS' })).status, 204)

  const scrape = await rawRequest(`${server.origin}/metrics`)
  t.equal(scrape.status, 200)
  t.equal(scrape.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8')
  t.equal(scrape.text, server.app.tus.metrics(), 'the route serves the accessor')
  const waited = /^tus_lock_wait_seconds_total (\S+)$/m.exec(scrape.text)
  t.ok(waited !== null && Number(waited[1]) > 0, 'the DELETE waited for the PATCH to let go')
  const [counters = '', timed = ''] = scrape.text.split(/(?=# HELP tus_errors_total)/)
  t.match(timed, [
    '# TYPE tus_errors_total counter',
    'tus_errors_total{code="FST_TUS_HOOK_FAILED"} 1',
    'tus_errors_total{code="FST_TUS_NOT_FOUND"} 1',
    'tus_errors_total{code="FST_TUS_OFFSET_MISMATCH"} 1',
    'tus_errors_total{code="FST_TUS_UNSUPPORTED_VERSION"} 1',
    'tus_errors_total{code="HTTP_413"} 1',
    '# HELP tus_request_duration_seconds'
  ].join('\n'), 'errors by code, a hook\'s refusal by its status')
  t.match(timed, /^tus_request_duration_seconds_count\{method="POST",status="201"\} 7$/m)
  t.match(timed, /^tus_upload_size_bytes_count 3$/m, 'three uploads completed (the one whose hook failed too)')
  t.equal(counters.replace(/^tus_lock_wait_seconds_total \S+$/m, 'tus_lock_wait_seconds_total X'), `# HELP tus_uploads_created_total Uploads created.
# TYPE tus_uploads_created_total counter
tus_uploads_created_total 7
# HELP tus_uploads_completed_total Uploads whose last byte was stored.
# TYPE tus_uploads_completed_total counter
tus_uploads_completed_total 3
# HELP tus_uploads_terminated_total Uploads removed by a DELETE.
# TYPE tus_uploads_terminated_total counter
tus_uploads_terminated_total 2
# HELP tus_uploads_expired_total Uploads removed because they expired.
# TYPE tus_uploads_expired_total counter
tus_uploads_expired_total 1
# HELP tus_upload_failures_total Requests storing bytes that ended in an error (storage, a hook, a body beyond the length).
# TYPE tus_upload_failures_total counter
tus_upload_failures_total 2
# HELP tus_bytes_received_total Upload bytes stored.
# TYPE tus_bytes_received_total counter
tus_bytes_received_total 37
# HELP tus_uploads_active Requests storing upload bytes right now.
# TYPE tus_uploads_active gauge
tus_uploads_active 0
# HELP tus_requests_total Requests answered by the tus routes, by method and status.
# TYPE tus_requests_total counter
tus_requests_total{method="DELETE",status="204"} 2
tus_requests_total{method="GET",status="200"} 1
tus_requests_total{method="HEAD",status="200"} 1
tus_requests_total{method="HEAD",status="404"} 1
tus_requests_total{method="OPTIONS",status="204"} 1
tus_requests_total{method="PATCH",status="204"} 4
tus_requests_total{method="PATCH",status="409"} 1
tus_requests_total{method="PATCH",status="413"} 1
tus_requests_total{method="PATCH",status="500"} 1
tus_requests_total{method="POST",status="201"} 7
tus_requests_total{method="POST",status="412"} 1
# HELP tus_lock_waits_total Lock requests that found the upload held by another request of this process.
# TYPE tus_lock_waits_total counter
tus_lock_waits_total 1
# HELP tus_lock_wait_seconds_total Time spent waiting for upload locks.
# TYPE tus_lock_wait_seconds_total counter
tus_lock_wait_seconds_total X
# HELP tus_lock_timeouts_total Lock requests that gave up waiting (answered 423).
# TYPE tus_lock_timeouts_total counter
tus_lock_timeouts_total 0
`)
})

t.test('metrics: every answer >= 400 is one error, an auth that refuses by replying too', async (t) => {
  const server = await startServer(t, {
    auth: async (request, reply) => {
      if (request.headers['x-deny'] === 'reply') await reply.code(403).send('forbidden')
      if (request.headers['x-deny'] === 'throw') throw Object.assign(new Error('no'), { statusCode: 403 })
    }
  })
  const errors = () => server.app.tus.metrics().split('\n').filter((line) => line.startsWith('tus_errors_total{')).join('\n')
  const url = await createUpload(server, { 'Upload-Length': '3' })
  t.equal((await tusRequest(url, { method: 'HEAD', headers: { 'x-deny': 'throw' } })).status, 403)
  t.equal(errors(), 'tus_errors_total{code="HTTP_403"} 1', 'a thrown refusal once, not again when its answer is sent')
  t.equal((await tusRequest(url, { method: 'HEAD', headers: { 'x-deny': 'reply' } })).status, 403)
  t.equal((await send(url, 'HEAD', { 'Upload-Draft-Interop-Version': '6', 'x-deny': 'reply' })).status, 403)
  t.equal(errors(), 'tus_errors_total{code="HTTP_403"} 3', 'a refusal by reply, in both protocols')
  t.equal((await tusRequest(`${server.endpoint}nope`, { method: 'HEAD' })).status, 404)
  t.equal((await send(`${server.endpoint}nope`, 'HEAD', { 'Upload-Draft-Interop-Version': '6' })).status, 404)
  t.equal((await patch(url, 1, 'x')).status, 409)
  t.equal(errors(), [
    'tus_errors_total{code="FST_TUS_NOT_FOUND"} 2',
    'tus_errors_total{code="FST_TUS_OFFSET_MISMATCH"} 1',
    'tus_errors_total{code="HTTP_403"} 3'
  ].join('\n'), 'an error with a code, by its code and once')
})

t.test('metrics: no route unless metricsPath is set', async (t) => {
  const server = await startServer(t)
  t.equal((await rawRequest(`${server.origin}/metrics`)).status, 404)
  t.match(server.app.tus.metrics(), /^tus_uploads_created_total 0$/m)
})
