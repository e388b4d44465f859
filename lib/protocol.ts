import type { FastifyRequest } from 'fastify'
import { TusErrors } from './errors.js'

export const TUS_VERSION = '1.0.0'
export const OCTET_STREAM = 'application/offset+octet-stream'
export const EXTENSIONS = [
  'creation', 'creation-with-upload', 'creation-defer-length', 'termination', 'expiration',
  'checksum', 'checksum-trailer', 'concatenation', 'concatenation-unfinished'
]

const NON_NEGATIVE_INTEGER = /^(0|[1-9][0-9]*)$/

/** A header that must be a non-negative integer (T-G-7); undefined when absent. */
export function integerHeader (request: FastifyRequest, name: string): number | undefined {
  const value = request.headers[name.toLowerCase()]
  if (value === undefined) return undefined
  if (typeof value !== 'string' || !NON_NEGATIVE_INTEGER.test(value)) {
    throw new TusErrors.INVALID_HEADER(name, `expected a non-negative integer, got "${String(value).slice(0, 32)}"`)
  }
  const number = Number(value)
  if (!Number.isSafeInteger(number)) throw new TusErrors.INVALID_HEADER(name, 'number too large')
  return number
}

export function stringHeader (request: FastifyRequest, name: string): string | undefined {
  const value = request.headers[name.toLowerCase()]
  return Array.isArray(value) ? value.join(',') : value
}

/** The media type of the request without parameters, lower-cased ('' when absent). */
export function mediaType (request: FastifyRequest): string {
  return (stringHeader(request, 'content-type') ?? '').split(';')[0]!.trim().toLowerCase()
}

/** True when the request announces a body (a non-zero Content-Length or a chunked transfer). */
export function hasBody (request: FastifyRequest): boolean {
  const length = request.headers['content-length']
  if (length !== undefined) return length !== '0'
  return request.headers['transfer-encoding'] !== undefined
}
