import type { FastifyRequest } from 'fastify'
import type { TusServices } from '../core/services.js'
import { TusErrors } from '../errors.js'
import { isValidUploadId } from '../ids.js'
import { generateLocation } from './generate-url.js'

const HOST = /^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$/

/**
 * The URL of an upload for the Location header: absolute, or path-only when configured. Its scheme and host are
 * what Fastify makes of the request under the app's `trustProxy`: `X-Forwarded-Proto` / `X-Forwarded-Host` count
 * only from the proxies the app trusts, and an HTTP/2 request's `:authority` stands for `Host`.
 */
export function uploadLocation (services: TusServices, request: FastifyRequest, id: string): string {
  const base = collectionPath(services, request)
  const path = `${base}/${id}`
  const generate = services.options.generateUrl
  if (services.options.relativeLocation && generate === undefined) return path
  const { protocol, host } = request
  const trusted = (protocol === 'http' || protocol === 'https') && HOST.test(host)
  if (generate !== undefined) return generateLocation(generate, request, { proto: protocol, host: trusted ? host : undefined, path: base, id })
  return trusted ? `${protocol}://${host}${path}` : path
}

/** The upload id from the route, refused with 404 before any storage access when it cannot be one of ours. */
export function uploadIdOf (request: FastifyRequest): string {
  const { id } = request.params as { id?: string }
  if (id === undefined || !isValidUploadId(id)) throw new TusErrors.NOT_FOUND()
  return id
}

/**
 * The path of the creation endpoint for this request: the prefix with its route parameters filled in
 * (`/product/:pid/images` -> `/product/42/images`), so a parametric prefix yields URLs that route back.
 */
export function collectionPath (services: TusServices, request: FastifyRequest): string {
  if (!services.basePath.includes(':')) return services.basePath
  const params = (request.params ?? {}) as Record<string, string | undefined>
  return services.basePath.replace(/:([A-Za-z0-9_]+)/g, (whole, name: string) => {
    const value = params[name]
    return value === undefined ? whole : encodeURIComponent(value)
  })
}

/** The id in an upload URL's last segment: itself, or what `getUploadIdFromRequest` reads from it ('' when nothing). */
export function idFromSegment (services: TusServices, request: FastifyRequest, segment: string): string {
  const read = services.options.getUploadIdFromRequest
  if (read === undefined) return segment
  let id: unknown
  try {
    id = read(request, segment)
  } catch (error) {
    request.log.error({ err: error }, 'fastify-tus: getUploadIdFromRequest failed')
    throw new TusErrors.HOOK_FAILED('getUploadIdFromRequest')
  }
  return typeof id === 'string' ? id : ''
}
