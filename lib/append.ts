import type { FastifyRequest } from 'fastify'
import { BoundedBody, RequestBody } from './body.js'
import type { TusContext } from './context.js'
import { TusErrors, withHeaders } from './errors.js'
import { ProgressTracker, withOffset } from './hooks.js'
import { integerHeader } from './protocol.js'
import type { UploadInfo } from './store/types.js'

/**
 * Streams the request body into `upload` at its current offset (the caller holds the lock and has
 * checked the offset). Never stores a byte beyond the upload length; flushes the data to disk when the
 * upload becomes complete. Runs onUploadProgress as bytes arrive and keeps the metrics. Resolves with the
 * upload as it is afterwards; the caller runs `completeUpload` (lib/hooks.ts) when this completed it.
 */
export async function appendBody (context: TusContext, request: FastifyRequest, upload: UploadInfo): Promise<UploadInfo> {
  const limit = upload.size ?? context.options.maxSize
  const room = limit - upload.offset
  const declared = integerHeader(request, 'Content-Length')
  if (declared !== undefined && declared > room) throw new TusErrors.LENGTH_EXCEEDED(limit)

  const body = new BoundedBody(request.body instanceof RequestBody ? request.body : undefined, room)
  const progress = new ProgressTracker(context, request, upload)
  let offset = upload.offset
  context.metrics.activeUploads++
  try {
    try {
      offset = await context.store.write(upload.id, upload.offset, progress.track(body))
    } catch (error) {
      request.log.error({ err: error, uploadId: upload.id }, 'fastify-tus: writing an upload failed')
      offset = await context.store.getInfo(upload.id).then((info) => info.offset, () => upload.offset)
      throw withHeaders(new TusErrors.STORE_FAILED(describe(error)), { 'Upload-Offset': String(offset) })
    }
    if (body.aborted) request.log.info({ uploadId: upload.id, offset }, 'fastify-tus: client went away mid-body; bytes kept')
    if (body.exceeded) throw withHeaders(new TusErrors.LENGTH_EXCEEDED(limit), { 'Upload-Offset': String(offset) })
    await progress.finish(offset)
    if (progress.stopped !== undefined) throw withOffset(progress.stopped, offset)
    if (offset === upload.size) await context.store.flush(upload.id)
  } catch (error) {
    context.metrics.uploadFailures++
    throw error
  } finally {
    context.metrics.activeUploads--
    context.metrics.bytesReceived += offset - upload.offset
  }
  return { ...upload, offset, modifiedAt: new Date() }
}

export function isComplete (upload: UploadInfo): boolean {
  return upload.size !== undefined && upload.offset === upload.size
}

export function describe (error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
