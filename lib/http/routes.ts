import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Http2ServerResponse, constants as http2Constants } from 'node:http2'
import type { Socket } from 'node:net'
import { RequestBody, readBody } from '../core/body.js'
import { hookError, refuseReturned } from '../core/lifecycle.js'
import { hasBody, refuseConflictingAuthority, refuseTransferCodings, stringHeader } from '../core/request.js'
import type { TusServices } from '../core/services.js'
import { TusErrors, retryLater, withFacts, type TusHttpError } from '../errors.js'
import {
  DRAFT_UPLOAD_HANDLERS, INTEROP_HEADER, draftVersionOf, handleDraftAppend, handleDraftCreation, handleDraftDelete,
  handleDraftGet, handleDraftHead, handleDraftOptions, type DraftHandler
} from '../ietf/handlers.js'
import { sendDraftError } from '../ietf/reply.js'
import type { DraftVersion } from '../ietf/versions.js'
import { countRequests } from '../observe/metrics.js'
import { deferContinue } from './continue.js'
import { resolveUploadId, servicesFor, servicesOf } from './request-options.js'
import { traceUploads } from './tracing.js'
import {
  TUS_UPLOAD_HANDLERS, handleDelete, handleGet, handleHead, handleOptions, handlePatch, handlePost, type TusHandler
} from '../tus/handlers.js'
import { TUS_VERSION } from '../tus/headers.js'
import { sendTusError } from '../tus/reply.js'

/**
 * The tus routes, in an encapsulated context of their own: its content-type parser hands request bodies
 * on unread (the operations stream them), and its hooks and error handler touch nothing else in the app.
 * Each route serves tus 1.0.0 and the IETF draft, chosen per request by `Upload-Draft-Interop-Version`.
 */
export async function tusRoutes (instance: FastifyInstance, options: { services: Omit<TusServices, 'basePath'> }): Promise<void> {
  const services: TusServices = { ...options.services, basePath: instance.prefix }
  const idleTimeout = services.options.idleTimeout

  instance.removeAllContentTypeParsers()
  instance.addContentTypeParser('*', (request, payload, done) => {
    let body: RequestBody
    try {
      body = readBody(request, payload, idleTimeout)
    } catch (error) {
      done(error as TusHttpError, undefined)
      return
    }
    done(null, body)
  })
  // Whether a request has content is decided once, by its HTTP version's rule (core/request.ts): Fastify skips the
  // parser for an HTTP/2 body that has neither Content-Type nor Content-Length, which streaming clients send.
  // Hooks take callbacks, not promises: they run on every request.
  instance.addHook('preHandler', (request, reply, done) => {
    if (!(request.body instanceof RequestBody) && hasBody(request)) {
      try {
        request.body = readBody(request, request.raw, idleTimeout)
      } catch (error) {
        done(error as TusHttpError)
        return
      }
    }
    if (request.body instanceof RequestBody && expectsContinue(request)) {
      const response = reply.raw
      request.body.beforeFirstRead(() => { if (!response.headersSent) response.writeContinue() })
    }
    done()
  })
  deferContinue(instance)
  instance.addHook('onSend', (request, reply, payload, done) => {
    if (request.body instanceof RequestBody) {
      request.body.discardRest()
      // A body the server ended (a creation's, kept for its answer): the rest of it is never read, and the
      // connection cannot serve another request. HTTP/2 has no Connection header: its stream is closed instead.
      if (request.body.keptForAnswer) {
        if (reply.raw instanceof Http2ServerResponse) closeStreamAfterAnswer(reply.raw)
        else {
          reply.header('Connection', 'close')
          lingerAtClose(request.raw.socket)
        }
      }
    }
    done(null, payload)
  })
  await traceUploads(instance, services)
  instance.setErrorHandler((error: TusHttpError, request, reply) => {
    // Requests that name a draft interop version (even one not accepted) get the draft's answer.
    if (request.headers[INTEROP_HEADER] === undefined || services.options.ietfDraftVersions.length === 0) {
      sendTusError(error, request, reply, services.options.formatError)
      return
    }
    let version: DraftVersion | undefined
    try {
      version = draftVersionOf(services, request)
    } catch {
      version = undefined
    }
    sendDraftError(servicesOf(services, request), error, request, reply, version)
  })
  countRequests(instance, services.metrics)
  // A response that ends while the server closes (a download begun before: its headers promised keep-alive) leaves
  // its connection open and idle once sent; node's server.close() closed the idle ones only when it began, so the
  // close waited for the client, or for Fastify's keepAliveTimeout (72 s), long after the last byte was sent.
  instance.addHook('onResponse', (_request, _reply, done) => {
    if (services.inFlight.closing) closeIdleConnections(instance.server)
    done()
  })
  instance.setNotFoundHandler(async (request) => { throw unrouted(request) })

  // First of all hooks: the method a tunnelled request (X-HTTP-Method-Override, T-G-8) stands for becomes its
  // method, so the version check, `auth`, every later hook and the route see what the request really does.
  // Then the version check. One hook, taking a callback: it runs on every request.
  instance.addHook('onRequest', (request, reply, done) => {
    try {
      overrideMethod(request)
      checkVersion(services, request, reply)
      refuseTransferCodings(request)
      refuseConflictingAuthority(request)
      refuseWritesWhileClosing(services, request)
    } catch (error) {
      done(error as TusHttpError)
      return
    }
    done()
  })
  const auth = services.options.auth
  if (auth !== undefined) {
    instance.addHook('onRequest', async (request, reply) => {
      if (request.method === 'OPTIONS') return
      try {
        const returned: unknown = await auth(request, reply)
        if (!reply.sent) refuseReturned('auth', returned)
      } catch (error) {
        throw hookError('auth', error, request)
      }
      if (reply.sent) return reply
    })
  }

  const route = (handler: TusHandler, draftHandler: DraftHandler) => async (request: FastifyRequest, reply: FastifyReply) => {
    // `<prefix>/` is the creation URL, which the router also matches as an upload's URL with an empty id.
    if ((request.params as { id?: string }).id === '') throw notAllowed(request.method, false)
    if (reply.raw.socket === null) await afterEarlierRequests(request, reply)
    const version = draftVersionOf(services, request)
    const scoped = await servicesFor(services, request)
    resolveUploadId(services, request)
    if (version === undefined) await handler(scoped, request, reply)
    else await draftHandler(scoped, version, request, reply)
  }
  instance.options('/', route(handleOptions, handleDraftOptions))
  instance.options('/:id', route(handleOptions, handleDraftOptions))
  const create = route(handlePost, handleDraftCreation)
  const discover = route(handleOptions, handleDraftOptions)
  // A POST whose X-HTTP-Method-Override names OPTIONS is that OPTIONS (the first hook made it the method).
  instance.post('/', async (request, reply) => { await (request.method === 'OPTIONS' ? discover : create)(request, reply) })
  instance.head('/:id', route(handleHead, handleDraftHead))
  instance.get('/:id', { exposeHeadRoute: false }, route(handleGet, handleDraftGet))
  instance.patch('/:id', route(handlePatch, handleDraftAppend))
  instance.delete('/:id', route(handleDelete, handleDraftDelete))
  // A tunnelled method arrives as POST on the upload's URL; the first hook has made it the request's method.
  instance.post('/:id', async (request, reply) => {
    if (request.method === 'OPTIONS') {
      await discover(request, reply)
      return
    }
    const handler = TUS_UPLOAD_HANDLERS[request.method]
    const draftHandler = DRAFT_UPLOAD_HANDLERS[request.method]
    if (handler === undefined || draftHandler === undefined) throw notAllowed(request.method, true)
    await route(handler, draftHandler)(request, reply)
  })
}

/**
 * A request pipelined behind others on its HTTP/1.1 connection is answered after them: node gives its response the
 * socket only once theirs are sent. It is handled after them too, so that it sees what they did (a HEAD or GET
 * behind the PATCH it follows reports that PATCH's bytes) and never asks one of them to let go of an upload as if its
 * client had gone (whose body has all arrived: the request after it was read).
 */
async function afterEarlierRequests (request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const socket = request.raw.socket
  if (socket.destroyed) return
  await new Promise<void>((resolve) => {
    const proceed = (): void => {
      reply.raw.off('socket', proceed)
      socket.off('close', proceed)
      resolve()
    }
    reply.raw.once('socket', proceed)
    socket.once('close', proceed)
  })
}

/**
 * While the server closes, a request that would store or remove something gets 503 with Retry-After, its connection
 * closed; reads are answered (with Fastify's `return503OnClosing: false`, else Fastify answers 503 first). A tus
 * client takes a failed HEAD for an upload that is gone and starts over from byte 0 (tus-js-client does); a failed
 * PATCH it retries, with a HEAD first. HTTP/2 has no `Connection` header (RFC 9113 §8.2.2): its session is closed by
 * the server's close.
 */
function refuseWritesWhileClosing (services: TusServices, request: FastifyRequest): void {
  if (!services.inFlight.closing || READS_WHILE_CLOSING.has(request.method)) return
  const refused = retryLater(new TusErrors.SHUTTING_DOWN(), 1)
  throw request.raw.httpVersionMajor >= 2 ? refused : withFacts(refused, { headers: { Connection: 'close' } })
}

const READS_WHILE_CLOSING = new Set(['HEAD', 'GET', 'OPTIONS'])

/** How long a connection closed after its answer still reads (and drops) what its client sends. */
const LINGER_MS = 2000

/**
 * A connection closed once its answer is sent while its client may still be sending the body (Connection: close on a
 * body the server ended): Node destroys it as soon as the answer is written, and a socket closed with bytes unread is
 * reset (RST), which can take the answer with it before the client reads it. Lingering close (RFC 9112 §9.6): its
 * sending side ends after the answer, and what still arrives is read and dropped until the client closes its side,
 * for LINGER_MS at most.
 */
function lingerAtClose (socket: Socket | null): void {
  if (socket === null || socket.destroyed) return
  socket.destroySoon = () => {
    if (socket.writable) socket.end()
    const timer = setTimeout(() => { socket.destroy() }, LINGER_MS).unref()
    socket.once('close', () => { clearTimeout(timer) })
    if (socket.readableEnded) socket.destroy()
    else socket.once('end', () => { socket.destroy() })
  }
}

/**
 * An HTTP/2 stream whose body the server ended, once its answer is sent whole: closed with NO_ERROR, which asks the
 * client to stop sending the rest without error (RFC 9113 §8.1). The stream's response would otherwise end only with
 * the client's body.
 */
function closeStreamAfterAnswer (response: Http2ServerResponse): void {
  const stream = response.stream
  stream.once('finish', () => { if (!stream.closed) stream.close(http2Constants.NGHTTP2_NO_ERROR) })
}

/** Ends the server's kept-alive connections that wait for no response (HTTP/1.1; an HTTP/2 server has no such call). */
function closeIdleConnections (server: FastifyInstance['server']): void {
  const close = (server as { closeIdleConnections?: () => void }).closeIdleConnections
  if (typeof close === 'function') close.call(server)
}

/** X-HTTP-Method-Override on a POST to an upload: the request's method becomes the one it names. */
function overrideMethod (request: FastifyRequest): void {
  const override = stringHeader(request, 'x-http-method-override')
  if (override === undefined || request.method !== 'POST') return
  const method = override.trim().toUpperCase()
  // A path no route takes is answered as such (unrouted: 404 below an upload's URL), whatever the method it names.
  if (request.is404) return
  // Any method the URL has, the ones Allow names on its 405 (T-G-8: the override is the request's method); no other.
  const onUpload = request.routeOptions.url?.endsWith('/:id') === true
  const allow = allowedMethods(onUpload)
  if (!allow.includes(method)) {
    throw withFacts(new TusErrors.OVERRIDE_NOT_ALLOWED(JSON.stringify(override.trim().slice(0, 32)), allow.join(', ')), { headers: { Allow: allow.join(', ') } })
  }
  request.raw.method = method
}

/** The methods a URL has (and an X-HTTP-Method-Override on a POST to it may name): an upload's, or the creation URL's. */
function allowedMethods (onUpload: boolean): string[] {
  return onUpload ? ['OPTIONS', ...Object.keys(TUS_UPLOAD_HANDLERS)] : ['OPTIONS', 'POST']
}

/**
 * What a request no route takes is answered: a method the creation URL or an upload's URL does not have (a PUT, a
 * GET of the creation URL) is 405 with the methods it has; any other path under the prefix is 404.
 */
function unrouted (request: FastifyRequest): TusHttpError {
  // The path after the prefix, as the scope's not-found route matched it (`<prefix>/*`); none for the bare prefix.
  const rest = (request.params as Record<string, string | undefined>)['*']
  if (rest === undefined || rest === '') return notAllowed(request.method, false)
  if (!rest.includes('/')) return notAllowed(request.method, true)
  return new TusErrors.NOT_FOUND()
}

/** 405, with the methods the URL has (RFC 9110 §15.5.6: Allow is required): an upload's, or the creation URL's. */
function notAllowed (method: string, onUpload: boolean): TusHttpError {
  return withFacts(new TusErrors.METHOD_NOT_ALLOWED(method), { headers: { Allow: allowedMethods(onUpload).join(', ') } })
}

/** Tus-Resumable: answered on every tus request, required on those that read or change protocol state. */
function checkVersion (services: TusServices, request: FastifyRequest, reply: FastifyReply): void {
  // Upload-Draft-Interop-Version picks the IETF draft for this request: no Tus-Resumable either way.
  if (draftVersionOf(services, request) !== undefined) return
  reply.header('Tus-Resumable', TUS_VERSION)
  // GET (download) is no tus request: a browser following a download link cannot send Tus-Resumable
  // (tusd lets GET through for the same reason). Every method that reads or changes protocol state checks it.
  if (request.method === 'OPTIONS' || request.method === 'GET') return
  const version = stringHeader(request, 'tus-resumable')
  if (version !== TUS_VERSION) {
    throw withFacts(new TusErrors.UNSUPPORTED_VERSION(version ?? ''), { headers: { 'Tus-Version': TUS_VERSION } })
  }
}

function expectsContinue (request: FastifyRequest): boolean {
  return stringHeader(request, 'expect')?.toLowerCase() === '100-continue'
}
