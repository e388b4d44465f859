import type { FastifyRequest } from 'fastify'
import { hookError } from '../core/lifecycle.js'
import type { TusServices } from '../core/services.js'
import { TusErrors } from '../errors.js'
import { idFromSegment } from '../wire/location.js'

/**
 * The services one request works with: the same, but for the options that are functions of the request
 * (`maxSize`), resolved once before its handler runs, so the core and both protocols read plain numbers.
 */
const resolved = new WeakMap<FastifyRequest, TusServices>()

/** What `servicesFor` resolved for this request, for its error answer (a 413 of the draft tells the limit). */
export function servicesOf (services: TusServices, request: FastifyRequest): TusServices {
  return resolved.get(request) ?? services
}

export async function servicesFor (services: TusServices, request: FastifyRequest): Promise<TusServices> {
  const maxSizeOf = services.options.maxSizeOf
  if (maxSizeOf === undefined) return services
  let maxSize: unknown
  try {
    maxSize = await maxSizeOf(request)
  } catch (error) {
    throw hookError('maxSize', error, request)
  }
  if (typeof maxSize !== 'number' || !Number.isSafeInteger(maxSize) || maxSize <= 0) {
    throw new TusErrors.HOOK_RESULT_INVALID('maxSize', 'it must return a positive integer')
  }
  const scoped = { ...services, options: { ...services.options, maxSize } }
  resolved.set(request, scoped)
  return scoped
}

/** With `getUploadIdFromRequest`: the route's `id` parameter becomes the upload id it reads from the segment. */
export function resolveUploadId (services: TusServices, request: FastifyRequest): void {
  if (services.options.getUploadIdFromRequest === undefined) return
  const params = request.params as { id?: string } | undefined
  if (params?.id !== undefined) params.id = idFromSegment(services, request, params.id)
}
