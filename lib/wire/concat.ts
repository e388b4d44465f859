import type { FastifyRequest } from 'fastify'
import type { TusServices } from '../core/services.js'
import { stringHeader } from '../core/request.js'
import { TusErrors } from '../errors.js'
import { isValidUploadId } from '../ids.js'
import type { UploadConcat } from '../store/types.js'
import { collectionPath, idFromSegment } from './location.js'

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
    let path: string
    try {
      path = new URL(reference, collection).pathname
    } catch {
      throw new TusErrors.INVALID_CONCAT(`"${reference.slice(0, 200)}" is not a URL`)
    }
    const id = path.startsWith(`${basePath}/`) ? idFromSegment(services, request, path.slice(basePath.length + 1)) : ''
    if (!isValidUploadId(id)) throw new TusErrors.INVALID_CONCAT(`"${reference.slice(0, 200)}" is not an upload of this endpoint`)
    return id
  })
  return { type: 'final', parts, header }
}
