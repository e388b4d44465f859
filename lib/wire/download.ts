import type { FastifyReply, FastifyRequest } from 'fastify'
import { stringHeader } from '../core/request.js'
import type { TusServices } from '../core/services.js'
import { TusErrors, withFacts } from '../errors.js'
import { contentDisposition, contentType } from '../metadata.js'
import type { ByteRange, UploadInfo } from '../store/types.js'

// The file name and type rules live in the bottom layer, where the stores use them too (S3 object headers).
export { cleanFilename, contentDisposition } from '../metadata.js'

/** Sends a finished upload (see readFinished), whole or one byte range (206). The same download for every protocol. */
export async function sendDownload (services: TusServices, request: FastifyRequest, reply: FastifyReply, upload: UploadInfo): Promise<void> {
  const size = upload.offset
  const rangeHeader = stringHeader(request, 'range')
  const range = rangeHeader === undefined ? undefined : parseRange(rangeHeader, size)

  reply
    .header('Content-Type', contentType(upload.metadata))
    .header('Content-Disposition', contentDisposition(upload.metadata, upload.id))
    .header('X-Content-Type-Options', 'nosniff')
    .header('Accept-Ranges', 'bytes')
    .header('Last-Modified', upload.modifiedAt.toUTCString())
  if (range === undefined) {
    reply.code(200).header('Content-Length', String(size))
    await reply.send(size === 0 ? '' : await services.store.read(upload.id))
    return
  }
  reply
    .code(206)
    .header('Content-Range', `bytes ${range.start}-${range.end}/${size}`)
    .header('Content-Length', String(range.end - range.start + 1))
  await reply.send(await services.store.read(upload.id, range))
}

/**
 * One `bytes=` range (first-last, first-, or -suffix). Several ranges or another unit: the whole body
 * (RFC 9110 lets a server ignore Range). Unsatisfiable: 416 with `Content-Range: bytes * /size`.
 */
export function parseRange (header: string, size: number): ByteRange | undefined {
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (match === null) return undefined
  const [, first = '', last = ''] = match
  let start: number
  let end: number
  if (first === '') {
    if (last === '') return undefined
    const suffix = Number(last)
    if (suffix === 0 || size === 0) throw unsatisfiable(header, size)
    start = Math.max(0, size - suffix)
    end = size - 1
  } else {
    start = Number(first)
    end = last === '' ? size - 1 : Math.min(Number(last), size - 1)
    if (last !== '' && Number(last) < start) return undefined
    if (start >= size) throw unsatisfiable(header, size)
  }
  return { start, end }
}

function unsatisfiable (header: string, size: number): Error {
  return withFacts(new TusErrors.RANGE_NOT_SATISFIABLE(header.slice(0, 64), size), { headers: { 'Content-Range': `bytes */${size}` } })
}
