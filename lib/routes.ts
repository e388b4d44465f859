import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { TusContext } from './context.js'
import { RequestBody } from './body.js'
import { TusErrors, withHeaders } from './errors.js'
import { handleDelete } from './handlers/delete.js'
import { handleGet } from './handlers/get.js'
import { handleHead } from './handlers/head.js'
import { handleOptions } from './handlers/options.js'
import { handlePatch } from './handlers/patch.js'
import { handlePost } from './handlers/post.js'
import {
  DRAFT_UPLOAD_HANDLERS, draftAwareErrorHandler, draftVersionOf, handleDraftAppend, handleDraftCreation, handleDraftDelete,
  handleDraftGet, handleDraftHead, handleDraftOptions, type DraftHandler
} from './ietf/handlers.js'
import { countRequests } from './metrics.js'
import { TUS_VERSION, stringHeader } from './protocol.js'
import { sendError } from './reply.js'

type Handler = (context: TusContext, request: FastifyRequest, reply: FastifyReply) => Promise<void>

const OVERRIDABLE: Record<string, Handler> = { PATCH: handlePatch, DELETE: handleDelete, HEAD: handleHead, GET: handleGet }

/**
 * The tus routes, in an encapsulated context of their own: its content-type parser hands request bodies
 * on unread (handlers stream them), and its hooks and error handler touch nothing else in the app.
 */
export async function tusRoutes (instance: FastifyInstance, options: { context: Omit<TusContext, 'basePath'> }): Promise<void> {
  const context: TusContext = { ...options.context, basePath: instance.prefix }

  instance.removeAllContentTypeParsers()
  instance.addContentTypeParser('*', (_request, payload, done) => { done(null, new RequestBody(payload, context.options.idleTimeout)) })
  instance.addHook('onSend', async (request) => {
    if (request.body instanceof RequestBody) request.body.discardRest()
  })
  // Draft requests get the draft's error format; tus requests the plain-text one.
  instance.setErrorHandler(draftAwareErrorHandler(context, sendError))
  countRequests(instance, context.metrics)
  instance.setNotFoundHandler(async () => { throw new TusErrors.NOT_FOUND() })

  instance.addHook('onRequest', async (request, reply) => {
    // Upload-Draft-Interop-Version picks the IETF draft for this request: no Tus-Resumable either way.
    if (draftVersionOf(context, request) !== undefined) return
    reply.header('Tus-Resumable', TUS_VERSION)
    // GET (download) is no tus request: a browser following a download link cannot send Tus-Resumable
    // (tusd lets GET through for the same reason). Every method that reads or changes protocol state checks it.
    if (request.method === 'OPTIONS' || request.method === 'GET') return
    const version = stringHeader(request, 'tus-resumable')
    if (version !== TUS_VERSION) {
      throw withHeaders(new TusErrors.UNSUPPORTED_VERSION(version ?? ''), { 'Tus-Version': TUS_VERSION })
    }
  })
  const auth = context.options.auth
  if (auth !== undefined) {
    instance.addHook('onRequest', async (request, reply) => {
      if (request.method === 'OPTIONS') return
      await auth(request, reply)
      if (reply.sent) return reply
    })
  }

  // Each route serves both protocols, chosen per request (the onRequest hook has refused bad versions).
  const route = (handler: Handler, draftHandler: DraftHandler) => async (request: FastifyRequest, reply: FastifyReply) => {
    const version = draftVersionOf(context, request)
    if (version === undefined) await handler(context, request, reply)
    else await draftHandler(context, version, request, reply)
  }
  instance.options('/', route(handleOptions, handleDraftOptions))
  instance.options('/:id', route(handleOptions, handleDraftOptions))
  instance.post('/', route(handlePost, handleDraftCreation))
  instance.head('/:id', route(handleHead, handleDraftHead))
  instance.get('/:id', { exposeHeadRoute: false }, route(handleGet, handleDraftGet))
  instance.patch('/:id', route(handlePatch, handleDraftAppend))
  instance.delete('/:id', route(handleDelete, handleDraftDelete))
  // X-HTTP-Method-Override (T-G-8): clients behind proxies that only pass GET/POST tunnel the method.
  instance.post('/:id', async (request, reply) => {
    const method = stringHeader(request, 'x-http-method-override')?.trim().toUpperCase() ?? 'POST'
    const handler = OVERRIDABLE[method]
    const draftHandler = DRAFT_UPLOAD_HANDLERS[method]
    if (handler === undefined || draftHandler === undefined) throw new TusErrors.METHOD_NOT_ALLOWED(method)
    await route(handler, draftHandler)(request, reply)
  })
}
