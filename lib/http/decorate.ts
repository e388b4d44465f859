import type { FastifyInstance } from 'fastify'

/**
 * Decorates every request of the context the plugin is registered in (not only the tus routes; the whole app when it
 * is registered on the app) with `tus: null`, so app hooks can read it there. Fastify offers a plugin no way to
 * decorate the requests of a parent context: outside an encapsulated registration, `request.tus` is undefined.
 */
export function decorateTusRequests (fastify: FastifyInstance): void {
  fastify.decorateRequest('tus', null)
}
