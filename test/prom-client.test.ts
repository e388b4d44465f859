// fastify-tus/prom-client: the plugin's metrics in the app's own prom-client registry, beside its own metrics,
// after uploads through tus 1.0.0 and the IETF draft (interop 6); the bytes counter moves while a PATCH streams.
import t from 'tap'
import { once } from 'node:events'
import { connect } from 'node:net'
import { Counter, Registry } from 'prom-client'
import tusPlugin, { type UploadInfo } from '../lib/index.js'
import { tusCollector } from '../lib/observe/prom-client.js'
import { send, startServer, type TestServer } from './helpers.js'

const TUS = { 'Tus-Resumable': '1.0.0' }
const DRAFT = { 'Upload-Draft-Interop-Version': '6' }
const tusAppend = (offset: number): Record<string, string> => ({ ...TUS, 'Upload-Offset': String(offset), 'Content-Type': 'application/offset+octet-stream' })
const draftAppend = (offset: number, complete: boolean): Record<string, string> =>
  ({ ...DRAFT, 'Upload-Offset': String(offset), 'Upload-Complete': complete ? '?1' : '?0', 'Content-Type': 'application/partial-upload' })

async function appWithRegistry (t: { teardown: (fn: () => unknown) => void }, registry: Registry): Promise<{ server: TestServer, logins: Counter }> {
  const logins = new Counter({ name: 'app_logins_total', help: 'The app\'s own metric.', registers: [registry] })
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(tusPlugin, { dir, progressInterval: 0 })
    tusCollector(app.tus, { registry })
  })
  return { server, logins }
}

async function create (server: TestServer, headers: Record<string, string>): Promise<string> {
  const created = await send(server.endpoint, 'POST', headers)
  if (created.status !== 201) throw new Error(`creation: ${created.status}`)
  return new URL(String(created.headers.location), server.origin).href
}

t.test('the plugin\'s metrics appear in the app\'s registry beside its own, for both protocols', async (t) => {
  const registry = new Registry()
  const { server, logins } = await appWithRegistry(t, registry)
  logins.inc()
  // tus: 6 bytes in two PATCHes, one refused offset.
  const a = await create(server, { ...TUS, 'Upload-Length': '6' })
  t.equal((await send(a, 'PATCH', tusAppend(0), 'abc')).status, 204)
  t.equal((await send(a, 'PATCH', tusAppend(0), 'abc')).status, 409)
  t.equal((await send(a, 'PATCH', tusAppend(3), 'def')).status, 204)
  // The draft: 2000 bytes in one append, one refused offset.
  const b = await create(server, { ...DRAFT, 'Upload-Complete': '?0', 'Upload-Length': '2000' })
  t.equal((await send(b, 'PATCH', draftAppend(5, true), 'x'.repeat(1995))).status, 409)
  t.equal((await send(b, 'PATCH', draftAppend(0, true), 'y'.repeat(2000))).status, 204)
  t.equal((await send(`${server.endpoint}unknown`, 'HEAD', TUS)).status, 404)

  const text = await registry.metrics()
  t.match(text, /^app_logins_total 1$/m, 'the app\'s metric is still there')
  t.match(text, /^tus_uploads_created_total 2$/m)
  t.match(text, /^tus_uploads_completed_total 2$/m)
  t.match(text, /^tus_bytes_received_total 2006$/m)
  t.match(text, /^tus_uploads_active 0$/m)
  t.match(text, /^tus_requests_total\{method="PATCH",status="409"\} 2$/m)
  t.match(text, /^tus_requests_total\{method="POST",status="201"\} 2$/m)
  t.match(text, /^tus_errors_total\{code="FST_TUS_OFFSET_MISMATCH"\} 2$/m, 'errors by code, both protocols')
  t.match(text, /^tus_errors_total\{code="FST_TUS_NOT_FOUND"\} 1$/m)
  t.match(text, /^# TYPE tus_request_duration_seconds histogram$/m)
  t.match(text, /^tus_request_duration_seconds_count\{method="PATCH",status="204"\} 3$/m)
  t.match(text, /^tus_request_duration_seconds_bucket\{le="\+Inf",method="POST",status="201"\} 2$/m)
  t.match(text, /^tus_upload_size_bytes_bucket\{le="1024"\} 1$/m, 'the 6-byte upload')
  t.match(text, /^tus_upload_size_bytes_bucket\{le="4096"\} 2$/m, 'and the 2000-byte one')
  t.match(text, /^tus_upload_size_bytes_sum 2006$/m)
  t.match(text, /^tus_upload_size_bytes_count 2$/m)
  // The same numbers as the plugin's own text format.
  t.match(server.app.tus.metrics(), /^tus_bytes_received_total 2006$/m)
  t.match(server.app.tus.metrics(), /^tus_upload_size_bytes_count 2$/m)
})

t.test('a second registry, a prefix, and removal', async (t) => {
  const registry = new Registry()
  const other = new Registry()
  const { server } = await appWithRegistry(t, registry)
  const remove = tusCollector(server.app.tus, { registry: other, prefix: 'uploads_' })
  await create(server, { ...TUS, 'Upload-Length': '1' })
  t.match(await other.metrics(), /^uploads_uploads_created_total 1$/m)
  t.match(await registry.metrics(), /^tus_uploads_created_total 1$/m)
  remove()
  t.equal(await other.metrics(), '\n', 'nothing left in the registry it was removed from')
  t.throws(() => tusCollector(server.app.tus, { registry }), /already been registered/, 'one collector per registry and prefix')
})

for (const protocol of ['tus 1.0.0', 'IETF draft interop 6'] as const) {
  t.test(`${protocol}: the bytes counter moves while a long PATCH streams`, async (t) => {
    const registry = new Registry()
    const { server } = await appWithRegistry(t, registry)
    const draft = protocol !== 'tus 1.0.0'
    const url = await create(server, draft ? { ...DRAFT, 'Upload-Complete': '?0', 'Upload-Length': '200000' } : { ...TUS, 'Upload-Length': '200000' })
    const half = 100_000
    const moved = new Promise<UploadInfo>((resolve) => {
      server.app.tus.on('progress', (upload) => { if (upload.offset >= half) resolve(upload) })
    })
    const headers = draft ? draftAppend(0, true) : tusAppend(0)
    const socket = connect(Number(new URL(server.origin).port), '127.0.0.1')
    const answer = new Promise<string>((resolve) => {
      let text = ''
      socket.on('data', (chunk) => { text += chunk.toString() })
      socket.on('close', () => { resolve(text) })
    })
    await once(socket, 'connect')
    socket.write(`PATCH ${new URL(url).pathname} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 200000\r\n` +
      Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('') + '\r\n')
    socket.write(Buffer.alloc(half, 1))
    const progressed = await moved
    const midway = await registry.getSingleMetricAsString('tus_bytes_received_total')
    t.match(midway, new RegExp(`^tus_bytes_received_total ${progressed.offset}$`, 'm'), 'counted while the body streams')
    t.match(await registry.getSingleMetricAsString('tus_uploads_active'), /^tus_uploads_active 1$/m, 'the PATCH is still running')
    socket.write(Buffer.alloc(half, 2))
    t.match(await answer, /^HTTP\/1\.1 204 No Content\r$/m, 'the server answers and closes')
    t.match(await registry.getSingleMetricAsString('tus_bytes_received_total'), /^tus_bytes_received_total 200000$/m, 'every byte once')
  })
}
