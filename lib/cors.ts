import type { FastifyReply, FastifyRequest } from 'fastify'

/**
 * The response headers a browser client must be allowed to read, for tus 1.0 and the IETF draft.
 * Give them to `@fastify/cors` as `exposedHeaders`; the standalone server exposes them itself.
 */
export const TUS_EXPOSED_HEADERS: readonly string[] = Object.freeze([
  'Location', 'Upload-Offset', 'Upload-Length', 'Upload-Metadata', 'Upload-Expires', 'Upload-Defer-Length',
  'Upload-Concat', 'Upload-Complete', 'Upload-Incomplete', 'Upload-Limit', 'Upload-Draft-Interop-Version', 'Accept-Patch',
  'Tus-Resumable', 'Tus-Version', 'Tus-Extension', 'Tus-Max-Size', 'Tus-Checksum-Algorithm'
])

const ALLOWED_METHODS = 'POST, HEAD, PATCH, OPTIONS, GET, DELETE'
const EXPOSED = TUS_EXPOSED_HEADERS.join(', ')

/**
 * The standalone server's CORS: an onRequest hook for a list of allowed origins (`*`: any). It covers
 * what tus clients need (preflights answered 204 with the requested headers allowed, every tus header
 * exposed) and nothing more, so the server needs no CORS dependency. Apps use `@fastify/cors`.
 */
export function corsHook (allowedOrigins: readonly string[]): (request: FastifyRequest, reply: FastifyReply) => Promise<FastifyReply | undefined> {
  const anyOrigin = allowedOrigins.includes('*')
  const allowed = new Set(allowedOrigins)
  return async (request, reply) => {
    const origin = request.headers.origin
    // Caches must not hand one origin's answer to another.
    if (!anyOrigin) reply.header('Vary', 'Origin')
    if (origin === undefined || (!anyOrigin && !allowed.has(origin))) return undefined
    reply.header('Access-Control-Allow-Origin', anyOrigin ? '*' : origin)
    reply.header('Access-Control-Expose-Headers', EXPOSED)
    const preflightMethod = request.headers['access-control-request-method']
    // A tus discovery OPTIONS carries no Access-Control-Request-Method; only a preflight is answered here.
    if (request.method !== 'OPTIONS' || preflightMethod === undefined) return undefined
    reply.header('Access-Control-Allow-Methods', ALLOWED_METHODS)
    const requestedHeaders = request.headers['access-control-request-headers']
    if (typeof requestedHeaders === 'string' && requestedHeaders !== '') {
      reply.header('Access-Control-Allow-Headers', requestedHeaders)
      reply.header('Vary', anyOrigin ? 'Access-Control-Request-Headers' : 'Origin, Access-Control-Request-Headers')
    }
    reply.header('Access-Control-Max-Age', '86400')
    // Fastify's way to end the request in an async hook: send, then return the reply.
    return reply.code(204).send()
  }
}
