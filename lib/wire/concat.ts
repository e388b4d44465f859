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
  const collection = `http://upload.invalid${basePath}/`
  const parts = references.map((reference) => {
    let url: URL
    try {
      url = new URL(reference, collection)
    } catch {
      throw new TusErrors.INVALID_CONCAT(`"${reference.slice(0, 200)}" is not a URL`)
    }
    const path = url.pathname
    const id = path.startsWith(`${basePath}/`) ? idFromSegment(services, request, path.slice(basePath.length + 1)) : ''
    if (!isValidUploadId(id) || (namesOrigin(reference) && !isServedHere(services, request, url, id))) {
      throw new TusErrors.INVALID_CONCAT(`"${reference.slice(0, 200)}" is not an upload of this endpoint`)
    }
    return id
  })
  return { type: 'final', parts, header }
}

/** A reference with a scheme (`https:`, `javascript:`) or an authority (`//host/...`): it says where it points. */
function namesOrigin (reference: string): boolean {
  return /^[A-Za-z][A-Za-z0-9+.-]*:/.test(reference) || reference.startsWith('//')
}

/**
 * Whether an absolute reference points at this server: http or https, no credentials, and the host the request
 * came to, or the one this server's URLs for the upload name (`generateUrl`). Elsewhere, the id would name
 * another server's upload, which a local one of the same id must not stand in for.
 */
function isServedHere (services: TusServices, request: FastifyRequest, url: URL, id: string): boolean {
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.username !== '' || url.password !== '') return false
  // The request's host as this reference's scheme writes it (no default port); a relative Location names none.
  const own = [`${url.protocol}//${request.host}/`]
  const location = uploadLocation(services, request, id)
  if (/^https?:\/\//i.test(location)) own.push(location)
  return own.some((base) => {
    try {
      return new URL(base).host === url.host
    } catch {
      return false
    }
  })
}
