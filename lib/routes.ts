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
  instance.setErrorHandler(sendError)
  countRequests(instance, context.metrics)
  instance.setNotFoundHandler(async () => { throw new TusErrors.NOT_FOUND() })

  instance.addHook('onRequest', async (request, reply) => {
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

  const route = (handler: Handler) => async (request: FastifyRequest, reply: FastifyReply) => {
    await handler(context, request, reply)
  }
  instance.options('/', route(handleOptions))
  instance.options('/:id', route(handleOptions))
  instance.post('/', route(handlePost))
  instance.head('/:id', route(handleHead))
  instance.get('/:id', { exposeHeadRoute: false }, route(handleGet))
  instance.patch('/:id', route(handlePatch))
  instance.delete('/:id', route(handleDelete))
  // X-HTTP-Method-Override (T-G-8): clients behind proxies that only pass GET/POST tunnel the method.
  instance.post('/:id', async (request, reply) => {
    const method = stringHeader(request, 'x-http-method-override')?.trim().toUpperCase() ?? 'POST'
    const handler = OVERRIDABLE[method]
    if (handler === undefined) throw new TusErrors.METHOD_NOT_ALLOWED(method)
    await handler(context, request, reply)
  })
}
