import type { FastifyRequest } from 'fastify'
import { IncomingMessage } from 'node:http'
import { Http2ServerRequest } from 'node:http2'
import { TusErrors } from '../errors.js'
import { RequestBody } from './body.js'

const NON_NEGATIVE_INTEGER = /^(0|[1-9][0-9]*)$/
/** RFC 9110 §8.6: `1*DIGIT`, leading zeros allowed, which the Upload-* integers of T-G-7 do not allow. */
const DIGITS = /^[0-9]+$/

/** A header that must be a non-negative integer (T-G-7); undefined when absent. */
export function integerHeader (request: FastifyRequest, name: string, pattern = NON_NEGATIVE_INTEGER): number | undefined {
  const value = request.headers[name.toLowerCase()]
  if (value === undefined) return undefined
  if (typeof value !== 'string' || !pattern.test(value)) {
    throw new TusErrors.INVALID_HEADER(name, `expected a non-negative integer, got "${String(value).slice(0, 32)}"`)
  }
  const number = Number(value)
  if (!Number.isSafeInteger(number)) throw new TusErrors.INVALID_HEADER(name, 'number too large')
  return number
}

/**
 * The size of the request's body, from its Content-Length; undefined when absent, and when the body is read decoded
 * (an app's preParsing hook, @fastify/compress's, decodes its `Content-Encoding`): Content-Length counts the encoded
 * bytes then, and the upload gets the decoded ones, known only once the body has ended.
 */
export function contentLength (request: FastifyRequest): number | undefined {
  const length = integerHeader(request, 'Content-Length', DIGITS)
  return request.body instanceof RequestBody && request.body.decoded ? undefined : length
}

export function stringHeader (request: FastifyRequest, name: string): string | undefined {
  const value = request.headers[name.toLowerCase()]
  return Array.isArray(value) ? value.join(',') : value
}

/** The media type of the request without parameters, lower-cased ('' when absent). */
export function mediaType (request: FastifyRequest): string {
  return (stringHeader(request, 'content-type') ?? '').split(';')[0]!.trim().toLowerCase()
}

/**
 * Refuses (501) a body in a transfer coding other than chunked (RFC 9112 §6.1: `gzip, chunked`): node removes the
 * chunked framing only, and the bytes stored would be the compressed ones, taken for the upload's.
 */
export function refuseTransferCodings (request: FastifyRequest): void {
  const codings = request.headers['transfer-encoding']
  if (codings !== undefined && codings.trim().toLowerCase() !== 'chunked') throw new TusErrors.TRANSFER_CODING_UNSUPPORTED(codings)
}

/**
 * Refuses (400) an HTTP/2 request whose `Host` names another host than its `:authority`, as RFC 9113 §8.3.1 says a
 * server should: which one a proxy routed by, and which one an upload's URL is built from, would differ.
 */
export function refuseConflictingAuthority (request: FastifyRequest): void {
  const authority = request.headers[':authority']
  const host = request.headers.host
  if (typeof authority === 'string' && host !== undefined && host.toLowerCase() !== authority.toLowerCase()) {
    throw new TusErrors.INVALID_HEADER('Host', 'it differs from :authority')
  }
}

/**
 * Whether the request brings bytes: it has content (`hasBody`), and a body framed without a length (chunked, or
 * HTTP/2 without Content-Length) that may end empty has at least one. Waits for the first byte or the end, so only
 * where no byte is taken yet and an empty body changes the answer (a creation's Content-Type, a final's body); a
 * client that expects `100 Continue` sends nothing before it, and its body counts as one.
 */
export async function bringsBytes (request: FastifyRequest): Promise<boolean> {
  if (!hasBody(request)) return false
  const body = request.body
  if (!(body instanceof RequestBody) || request.headers['content-length'] !== undefined) return true
  if (stringHeader(request, 'expect')?.toLowerCase() === '100-continue') return true
  return await body.carriesBytes()
}

/**
 * Whether the request has content, the way its HTTP version defines it. HTTP/1.1: a non-zero
 * Content-Length or a Transfer-Encoding (RFC 9112 §6.3). HTTP/2 has no Transfer-Encoding: a request has
 * content unless its HEADERS frame ended the stream (RFC 9113 §8.1), whatever Content-Length says or omits.
 * A request that came through no connection (`app.inject()`, whose stream payload has neither header) has content
 * when it was given a payload (or Fastify parsed a body of it).
 */
export function hasBody (request: FastifyRequest): boolean {
  const length = request.headers['content-length']
  if (length !== undefined && /^0+$/.test(length)) return false
  const raw: unknown = request.raw
  if (raw instanceof Http2ServerRequest) return !raw.stream.endAfterHeaders
  if (length !== undefined || request.headers['transfer-encoding'] !== undefined) return true
  if (raw instanceof IncomingMessage) return false
  return request.body instanceof RequestBody || injectedPayload(raw)
}

/**
 * Whether a request of `app.inject()` was given a payload: light-my-request keeps it under its own namespace, and a
 * stream payload comes with no Content-Length, no Transfer-Encoding and (without a Content-Type) no parsed body.
 */
function injectedPayload (raw: unknown): boolean {
  const injected = (raw as { _lightMyRequest?: { payload?: unknown } })._lightMyRequest
  return injected?.payload !== undefined && injected.payload !== null
}
