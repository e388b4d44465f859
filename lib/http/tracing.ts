import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { TusServices } from '../core/services.js'
import { INTEROP_HEADER } from '../ietf/handlers.js'

type OtelApi = typeof import('@opentelemetry/api')
type Span = import('@opentelemetry/api').Span

/** What each method of the tus routes does to an upload, in both protocols. */
const OPERATIONS: Readonly<Record<string, string>> = {
  POST: 'create', PATCH: 'append', HEAD: 'status', GET: 'download', DELETE: 'terminate', OPTIONS: 'options'
}

let api: Promise<OtelApi | undefined> | undefined

/** `@opentelemetry/api`, an optional peer: undefined when the app does not have it. */
async function loadApi (): Promise<OtelApi | undefined> {
  api ??= import('@opentelemetry/api').then((loaded) => loaded, () => undefined)
  return await api
}

/**
 * The span of a request: the one `@fastify/otel` opened for it (`request.opentelemetry()`), else the active one
 * (an HTTP server instrumentation's).
 */
function spanOf (otel: OtelApi, request: FastifyRequest): Span | undefined {
  const decorated = (request as FastifyRequest & { opentelemetry?: unknown }).opentelemetry
  if (typeof decorated === 'function') {
    const span = (decorated.call(request) as { span?: Span | null }).span
    if (span !== undefined && span !== null) return span
  }
  return otel.trace.getActiveSpan()
}

/**
 * Tracing: the tus routes are plain Fastify routes, so `@fastify/otel` (or any HTTP instrumentation) traces them;
 * when `@opentelemetry/api` is installed, each request's span also says what it did to which upload
 * (`tus.protocol`, `tus.operation`, `tus.upload.id`, offset, length, bytes stored, created, completed, terminated).
 * Set before the response is sent (onSend), while `@fastify/otel`'s span is still open.
 */
export async function traceUploads (instance: FastifyInstance, services: TusServices): Promise<void> {
  const otel = await loadApi()
  if (otel === undefined) return
  // A callback, not a promise: it runs on every request.
  instance.addHook('onSend', (request, _reply, payload, done) => {
    try {
      const span = spanOf(otel, request)
      if (span !== undefined && span.isRecording()) describe(span, request, services)
    } catch (error) {
      done(error as Error)
      return
    }
    done(null, payload)
  })
}

/** What the request did to which upload, as attributes of its span. */
function describe (span: Span, request: FastifyRequest, services: TusServices): void {
  const draft = request.headers[INTEROP_HEADER] !== undefined && services.options.ietfDraftVersions.length > 0
  span.setAttribute('tus.protocol', draft ? 'ietf-draft' : 'tus')
  const operation = OPERATIONS[request.method]
  if (operation !== undefined) span.setAttribute('tus.operation', operation)
  const tus = request.tus
  if (tus === null) return
  span.setAttributes({
    'tus.upload.id': tus.id,
    'tus.upload.offset': tus.upload.offset,
    'tus.bytes_stored': tus.bytesStored,
    'tus.upload.created': tus.created,
    'tus.upload.completed': tus.completed,
    'tus.upload.terminated': tus.terminated
  })
  if (tus.upload.size !== undefined) span.setAttribute('tus.upload.length', tus.upload.size)
}
