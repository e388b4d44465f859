import type { FastifyInstance } from 'fastify'
import type { TusRequestUpload } from '../types.js'

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * What this request did to an upload (fastify-tus): set on the tus routes, for tus 1.0.0 and the IETF
     * draft alike, as soon as the request reaches an upload; null on every other request.
     */
    tus: TusRequestUpload | null
  }
}

/** Decorates every request of the app (not only the tus routes) with `tus: null`, so app hooks can read it anywhere. */
export function decorateTusRequests (fastify: FastifyInstance): void {
  fastify.decorateRequest('tus', null)
}
