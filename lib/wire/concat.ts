import type { FastifyRequest } from 'fastify'
import type { TusServices } from '../core/services.js'
import { stringHeader } from '../core/request.js'
import { TusErrors } from '../errors.js'
import { isValidUploadId } from '../ids.js'
import type { UploadConcat } from '../store/types.js'
import { collectionPath, idFromSegment, uploadLocation } from './location.js'

/**
 * The Upload-Concat header of a creation request: partial, final (with its partial ids) or none. tus's
 * concatenation extension; tus-js-client sends it in its draft modes too (`parallelUploads`), so both
 * protocols read it.
 */
export function parseConcat (services: TusServices, request: FastifyRequest): UploadConcat | undefined {
  const header = stringHeader(request, 'upload-concat')
  if (header === undefined) return undefined
  const value = header.trim()
  if (value === 'partial') return { type: 'partial' }
  if (!value.startsWith('final;')) throw new TusErrors.INVALID_CONCAT('expected "partial" or "final;<url> <url> ..."')
  const references = value.slice('final;'.length).split(/[ \t]+/).filter((reference) => reference !== '')
  if (references.length === 0) throw new TusErrors.INVALID_CONCAT('a final upload needs at least one partial upload URL')
  const basePath = collectionPath(services, request)
  const collection = `http://${PLACEHOLDER_HOST}${basePath}/`
  const parts = references.map((reference) => {
    const shown = `"${reference.slice(0, 200)}"`
    // A partial is named by its upload URL, nothing more: a query or a fragment is no part of one (and would let
    // one reference look like another), nor is a dot segment that the URL parser would fold away.
    if (/[?#]/.test(reference)) throw new TusErrors.INVALID_CONCAT(`${shown} has a query or a fragment: name a partial upload by its URL alone`)
    if (DOT_SEGMENT.test(reference)) throw new TusErrors.INVALID_CONCAT(`${shown} has a "." or ".." segment: name a partial upload by its URL alone`)
    let url: URL
    try {
      url = new URL(reference, collection)
    } catch {
      throw new TusErrors.INVALID_CONCAT(`${shown} is not a URL`)
    }
    const path = url.pathname
    const id = path.startsWith(`${basePath}/`) ? idFromSegment(services, request, path.slice(basePath.length + 1)) : ''
    if (!isValidUploadId(id)) {
      throw new TusErrors.INVALID_CONCAT(`${shown} is not an upload of this endpoint: its path is not an upload's under ${basePath}/`)
    }
    // A host read from the reference however it was written (backslashes for slashes: `\\host/...`, `/\host/...`, which the URL
    // parser reads as `//host/...`) names an origin, which must be this server's.
    if (namesOrigin(reference) || url.host !== PLACEHOLDER_HOST) {
      const origins = ownOrigins(services, request, id)
      if (url.username !== '' || url.password !== '' || !origins.includes(url.origin)) {
        throw new TusErrors.INVALID_CONCAT(`${shown} is not an upload of this endpoint: an absolute reference names this server (${origins.join(' or ')}), with no credentials`)
      }
    }
    return id
  })
  return { type: 'final', parts, header }
}

/** The host relative references are resolved against: a reserved name (RFC 2606) no reference may name. */
const PLACEHOLDER_HOST = 'upload.invalid'

/** A reference with a scheme (`https:`, `javascript:`) or an authority (`//host/...`): it says where it points. */
function namesOrigin (reference: string): boolean {
  return /^[A-Za-z][A-Za-z0-9+.-]*:/.test(reference) || reference.startsWith('//')
}

/** A "." or ".." path segment, written as it is or percent-encoded (the URL parser folds both away). */
const DOT_SEGMENT = /(^|[/\\])(\.|%2e){1,2}([/\\]|$)/i

/**
 * The origins (scheme, host and port) of this server's upload URLs, which an absolute reference must name: the one
 * the request came to, its scheme as Fastify reads it (`https` behind a proxy only when `trustProxy` says so), and the
 * one this server's URLs for the upload name (`generateUrl`). Elsewhere, the id would name another server's upload,
 * which a local one of the same id must not stand in for.
 */
function ownOrigins (services: TusServices, request: FastifyRequest, id: string): string[] {
  const origins = new Set<string>()
  for (const base of [`${request.protocol}://${request.host}/`, uploadLocation(services, request, id)]) {
    if (!/^https?:\/\//i.test(base)) continue
    try {
      origins.add(new URL(base).origin)
    } catch {}
  }
  return [...origins]
}
