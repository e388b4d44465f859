// Tracing: @fastify/otel traces the tus routes like any Fastify route, and the plugin (finding the optional peer
// @opentelemetry/api) adds to each request's span what it did to which upload, through both protocols.
import t from 'tap'
import { context, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base'
import { FastifyOtelInstrumentation } from '@fastify/otel'
import tusPlugin from '../lib/index.js'
import { idOf, randomBytesSeeded, rawRequest, sha256, startServer, tusRequest, type TestServer } from './helpers.js'

const exporter = new InMemorySpanExporter()
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
const contextManager = new AsyncLocalStorageContextManager().enable()
context.setGlobalContextManager(contextManager)
trace.setGlobalTracerProvider(provider)
t.teardown(async () => {
  await provider.shutdown()
  contextManager.disable()
})

async function tracedServer (t: Parameters<typeof startServer>[0]): Promise<TestServer> {
  const instrumentation = new FastifyOtelInstrumentation()
  instrumentation.setTracerProvider(provider)
  return await startServer(t, {}, async (app, dir) => {
    await app.register(instrumentation.plugin())
    await app.register(tusPlugin, { dir })
  })
}

/** The request span of the one request sent since the last call (ended before its response was sent). */
function requestSpan (): ReadableSpan {
  const spans = exporter.getFinishedSpans().filter((span) => span.name === 'request')
  exporter.reset()
  if (spans.length !== 1) throw new Error(`${spans.length} request spans, not one`)
  return spans[0]!
}

const BODY = randomBytesSeeded(64 * 1024, 7)

t.test('tus 1.0.0: create, append, status, an offset mismatch and download each say what they did', async (t) => {
  const server = await tracedServer(t)
  exporter.reset()
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': String(BODY.length) } })
  t.equal(created.status, 201)
  const url = new URL(created.headers.location!, server.origin).href
  const id = idOf(url)
  let span = requestSpan()
  t.match(span.attributes, {
    'tus.protocol': 'tus',
    'tus.operation': 'create',
    'tus.upload.id': id,
    'tus.upload.created': true,
    'tus.upload.offset': 0,
    'tus.upload.length': BODY.length,
    'tus.bytes_stored': 0,
    'http.response.status_code': 201
  })

  const appended = await tusRequest(url, {
    method: 'PATCH', headers: { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }, body: BODY
  })
  t.equal(appended.status, 204)
  span = requestSpan()
  t.match(span.attributes, {
    'tus.protocol': 'tus',
    'tus.operation': 'append',
    'tus.upload.id': id,
    'tus.upload.created': false,
    'tus.bytes_stored': BODY.length,
    'tus.upload.offset': BODY.length,
    'tus.upload.completed': true,
    'http.response.status_code': 204
  })

  const mismatch = await tusRequest(url, {
    method: 'PATCH', headers: { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }, body: 'x'
  })
  t.equal(mismatch.status, 409)
  span = requestSpan()
  t.match(span.attributes, { 'tus.operation': 'append', 'tus.upload.id': id, 'tus.bytes_stored': 0, 'http.response.status_code': 409 })

  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], String(BODY.length))
  t.match(requestSpan().attributes, { 'tus.operation': 'status', 'tus.upload.id': id })

  const download = await rawRequest(url)
  t.equal(sha256(download.body), sha256(BODY))
  t.match(requestSpan().attributes, { 'tus.protocol': 'tus', 'tus.operation': 'download', 'tus.upload.id': id })

  const unknown = await tusRequest(`${server.endpoint}nope`, { method: 'HEAD' })
  t.equal(unknown.status, 404)
  span = requestSpan()
  t.equal(span.attributes['tus.operation'], 'status')
  t.equal(span.attributes['tus.upload.id'], undefined, 'no upload was reached')
})

t.test('IETF draft (interop 6): create with a first part, append, terminate', async (t) => {
  const server = await tracedServer(t)
  const draft = { 'Upload-Draft-Interop-Version': '6' }
  exporter.reset()
  const half = BODY.length / 2
  const created = await rawRequest(server.endpoint, { method: 'POST', headers: { ...draft, 'Upload-Complete': '?0' }, body: BODY.subarray(0, half) })
  t.equal(created.status, 201)
  const url = new URL(created.headers.location!, server.origin).href
  const id = idOf(url)
  t.match(requestSpan().attributes, {
    'tus.protocol': 'ietf-draft',
    'tus.operation': 'create',
    'tus.upload.id': id,
    'tus.upload.created': true,
    'tus.bytes_stored': half,
    'tus.upload.completed': false
  })

  const appended = await rawRequest(url, {
    method: 'PATCH',
    headers: { ...draft, 'Upload-Offset': String(half), 'Upload-Complete': '?1', 'Content-Type': 'application/partial-upload' },
    body: BODY.subarray(half)
  })
  t.equal(appended.status, 204)
  t.match(requestSpan().attributes, {
    'tus.protocol': 'ietf-draft',
    'tus.operation': 'append',
    'tus.upload.id': id,
    'tus.bytes_stored': half,
    'tus.upload.completed': true,
    'tus.upload.offset': BODY.length,
    'tus.upload.length': BODY.length
  })
  t.equal(sha256((await rawRequest(url)).body), sha256(BODY))
  exporter.reset()

  const deleted = await rawRequest(url, { method: 'DELETE', headers: draft })
  t.equal(deleted.status, 204)
  t.match(requestSpan().attributes, { 'tus.protocol': 'ietf-draft', 'tus.operation': 'terminate', 'tus.upload.id': id, 'tus.upload.terminated': true })
})

t.test('without @fastify/otel, the active span (an HTTP instrumentation\'s) gets the attributes', async (t) => {
  const tracer = provider.getTracer('test')
  let responded!: () => void
  const ended = new Promise<void>((resolve) => { responded = resolve })
  const server = await startServer(t, {}, async (app, dir) => {
    app.addHook('onRequest', (request, _reply, done) => {
      const span = tracer.startSpan('outer')
      spans.set(request.id, span)
      context.with(trace.setSpan(context.active(), span), done)
    })
    app.addHook('onResponse', async (request) => {
      spans.get(request.id)?.end()
      responded()
    })
    await app.register(tusPlugin, { dir })
  })
  const spans = new Map<string, ReturnType<typeof tracer.startSpan>>()
  exporter.reset()
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '3' } })
  t.equal(created.status, 201)
  // The outer span ends in onResponse, after the response is sent.
  await ended
  const outer = exporter.getFinishedSpans().filter((span) => span.name === 'outer')
  t.equal(outer.length, 1)
  t.match(outer[0]!.attributes, { 'tus.operation': 'create', 'tus.upload.id': idOf(created.headers.location!), 'tus.upload.created': true })
})
