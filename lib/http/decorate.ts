import type { FastifyInstance } from 'fastify'

/** Decorates every request of the app (not only the tus routes) with `tus: null`, so app hooks can read it anywhere. */
export function decorateTusRequests (fastify: FastifyInstance): void {
  fastify.decorateRequest('tus', null)
}
