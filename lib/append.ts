import type { FastifyRequest } from 'fastify'
import { BoundedBody, RequestBody } from './body.js'
import type { TusContext } from './context.js'
import { TusErrors, withHeaders } from './errors.js'
import { integerHeader } from './protocol.js'
import type { UploadInfo } from './store/types.js'

/**
 * Streams the request body into `upload` at its current offset (the caller holds the lock and has
 * checked the offset). Never stores a byte beyond the upload length; flushes the data to disk when the
 * upload becomes complete. Resolves with the upload as it is afterwards.
 */
export async function appendBody (context: TusContext, request: FastifyRequest, upload: UploadInfo): Promise<UploadInfo> {
  const limit = upload.size ?? context.options.maxSize
  const room = limit - upload.offset
  const declared = integerHeader(request, 'Content-Length')
  if (declared !== undefined && declared > room) throw new TusErrors.LENGTH_EXCEEDED(limit)

  const body = new BoundedBody(request.body instanceof RequestBody ? request.body : undefined, room)
  let offset: number
  try {
    offset = await context.store.write(upload.id, upload.offset, body)
  } catch (error) {
    request.log.error({ err: error, uploadId: upload.id }, 'fastify-tus: writing an upload failed')
    const stored = await context.store.getInfo(upload.id).then((info) => info.offset, () => upload.offset)
    throw withHeaders(new TusErrors.STORE_FAILED(describe(error)), { 'Upload-Offset': String(stored) })
  }
  if (body.aborted) request.log.info({ uploadId: upload.id, offset }, 'fastify-tus: client went away mid-body; bytes kept')
  if (body.exceeded) throw withHeaders(new TusErrors.LENGTH_EXCEEDED(limit), { 'Upload-Offset': String(offset) })
  if (offset === upload.size) await context.store.flush(upload.id)
  return { ...upload, offset, modifiedAt: new Date() }
}

export function isComplete (upload: UploadInfo): boolean {
  return upload.size !== undefined && upload.offset === upload.size
}

/** Runs onUploadComplete; its failure becomes a 500 that names it, and the stored upload is kept. */
export async function runCompletionHook (context: TusContext, request: FastifyRequest, upload: UploadInfo): Promise<void> {
  const hook = context.options.onUploadComplete
  if (hook === undefined) return
  try {
    await hook(upload, request)
  } catch (error) {
    request.log.error({ err: error, uploadId: upload.id }, 'fastify-tus: onUploadComplete failed')
    throw withHeaders(new TusErrors.HOOK_FAILED('onUploadComplete', describe(error)), { 'Upload-Offset': String(upload.offset) })
  }
}

export function describe (error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
