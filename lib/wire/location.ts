import type { FastifyRequest } from 'fastify'
import type { TusServices } from '../core/services.js'
import { TusErrors } from '../errors.js'
import { isValidUploadId } from '../ids.js'

const HOST = /^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$/

/**
 * The URL of an upload for the Location header: absolute, or path-only when configured. Its scheme and host are
 * what Fastify makes of the request under the app's `trustProxy`: `X-Forwarded-Proto` / `X-Forwarded-Host` count
 * only from the proxies the app trusts, and an HTTP/2 request's `:authority` stands for `Host`.
 */
export function uploadLocation (services: TusServices, request: FastifyRequest, id: string): string {
  const path = `${services.basePath}/${id}`
  if (services.options.relativeLocation) return path
  const { protocol, host } = request
  return (protocol === 'http' || protocol === 'https') && HOST.test(host) ? `${protocol}://${host}${path}` : path
}

/** The upload id from the route, refused with 404 before any storage access when it cannot be one of ours. */
export function uploadIdOf (request: FastifyRequest): string {
  const { id } = request.params as { id?: string }
  if (id === undefined || !isValidUploadId(id)) throw new TusErrors.NOT_FOUND()
  return id
}
