import type { IncomingMessage, ServerResponse } from 'node:http'
import type { FastifyInstance } from 'fastify'
import FindMyWay from 'find-my-way'
import { pathMatchingOf } from './router-options.js'

// Per server (several registrations may share one): whether a URL is one registration's, one matcher each.
const deferredContinues = new WeakMap<FastifyInstance['server'], Array<(url: string) => boolean>>()

/**
 * Node answers `Expect: 100-continue` with `100 Continue` as soon as a request arrives, before any check: a
 * client then sends a body the server will refuse (auth, an unknown upload, a wrong offset). For the tus routes
 * the 100 is sent when the body is first read instead (the routes' preHandler); every other route of the app
 * gets it at once, as before. Every server Fastify makes emits `checkContinue`: http, https (an https.Server is no
 * http.Server), and HTTP/2, for its streams and, with `allowHTTP1`, for its HTTP/1.1 requests over TLS too.
 */
export function deferContinue (instance: FastifyInstance): void {
  const server = instance.server
  const ours = routesMatcher(instance)
  const known = deferredContinues.get(server)
  if (known !== undefined) {
    known.push(ours)
    return
  }
  const matchers = [ours]
  deferredContinues.set(server, matchers)
  server.on('checkContinue', (request: IncomingMessage, response: ServerResponse) => {
    // Handed to the app first, in this same turn: its `rewriteUrl` runs as Fastify takes the request, and the
    // URL it routes is the one to decide by. An answer already sent needs no 100.
    server.emit('request', request, response)
    const url = request.url ?? '/'
    if (!response.headersSent && !matchers.some((matches) => matches(url))) response.writeContinue()
  })
}

/**
 * Whether a URL is under the routes' prefix (their routes', or their not-found handler's), read as the app's router
 * reads it (the same router, find-my-way, with the app's settings): a parametric prefix, `caseSensitive: false`,
 * duplicate slashes, percent-encoding, a query, an absolute URL. `instance.prefix` includes the prefixes of the
 * plugins the routes are registered under.
 */
function routesMatcher (instance: FastifyInstance): (url: string) => boolean {
  const router = FindMyWay(pathMatchingOf(instance))
  const prefix = instance.prefix
  // Only the path counts: under the prefix every method is the routes', answered by them or their not-found handler.
  for (const path of prefix === '' ? ['/*'] : [prefix, `${prefix}/*`]) router.on('GET', path, () => undefined)
  return (url) => router.find('GET', url) !== null
}
