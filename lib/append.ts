import { join } from 'node:path'
import type { FastifyRequest } from 'fastify'
import { BoundedBody, RequestBody } from './body.js'
import { headerChecksum, runningChecksum, trailerChecksum, type ExpectedChecksum, type RunningChecksum } from './checksum.js'
import type { TusContext } from './context.js'
import { TusErrors, withHeaders } from './errors.js'
import { ProgressTracker, withOffset } from './hooks.js'
import { integerHeader } from './protocol.js'
import { StagedChunk } from './staging.js'
import type { UploadInfo } from './store/types.js'

/**
 * Streams the request body into `upload` at its current offset (the caller holds the lock and has
 * checked the offset). Never stores a byte beyond the upload length; flushes the data to disk when the
 * upload becomes complete. Runs onUploadProgress as bytes arrive and keeps the metrics. Resolves with the
 * upload as it is afterwards; the caller runs `completeUpload` (lib/hooks.ts) when this completed it.
 *
 * A body that carries a checksum (header), or may carry one (a chunked body can end with an
 * Upload-Checksum trailer), is staged first and committed only once verified: on a mismatch or an
 * interruption nothing of it reaches the upload. Every other body streams straight into the store.
 */
export async function appendBody (context: TusContext, request: FastifyRequest, upload: UploadInfo): Promise<UploadInfo> {
  const limit = upload.size ?? context.options.maxSize
  const room = limit - upload.offset
  const declared = integerHeader(request, 'Content-Length')
  if (declared !== undefined && declared > room) throw new TusErrors.LENGTH_EXCEEDED(limit)
  const expected = headerChecksum(request)

  const requestBody = request.body instanceof RequestBody ? request.body : undefined
  const body = new BoundedBody(requestBody, room)
  const progress = new ProgressTracker(context, request, upload)
  let offset = upload.offset
  context.metrics.activeUploads++
  const settled = context.inFlight.begin(requestBody)
  try {
    const staging = expected !== undefined || (declared === undefined && body.present)
    const staged = staging ? await storeFailure(context, request, upload, async () => await stageBody(context, progress.track(body), expected)) : undefined
    try {
      const source = staged === undefined ? progress.track(body) : await verifiedSource(request, staged, expected, body, progress, upload)
      if (source !== undefined) offset = await storeFailure(context, request, upload, async () => await context.store.write(upload.id, upload.offset, source))
    } finally {
      await staged?.chunk.remove()
    }
    if (requestBody?.released !== undefined) {
      request.log.info({ uploadId: upload.id, offset, reason: requestBody.released }, 'fastify-tus: body ended by the server; bytes kept')
    } else if (body.aborted) {
      request.log.info({ uploadId: upload.id, offset }, 'fastify-tus: client went away mid-body; bytes kept')
    }
    if (body.exceeded) throw withHeaders(new TusErrors.LENGTH_EXCEEDED(limit), { 'Upload-Offset': String(offset) })
    await progress.finish(offset)
    if (progress.stopped !== undefined) throw withOffset(progress.stopped, offset)
    if (offset === upload.size) await context.store.flush(upload.id)
  } catch (error) {
    context.metrics.uploadFailures++
    throw error
  } finally {
    settled()
    context.metrics.activeUploads--
    context.metrics.bytesReceived += offset - upload.offset
  }
  return { ...upload, offset, modifiedAt: new Date() }
}

interface Staged {
  chunk: StagedChunk
  /** The digest computed while staging, when the algorithm was known from the header. */
  running: RunningChecksum | undefined
}

async function stageBody (context: TusContext, source: AsyncIterable<Buffer>, expected: ExpectedChecksum | undefined): Promise<Staged> {
  const running = expected === undefined ? undefined : runningChecksum(expected.algorithm)
  const chunk = await StagedChunk.from(join(context.options.dir, '.staging'), source, running)
  return { chunk, running }
}

/**
 * What of a staged body may be committed: all of it when it carries no checksum or its checksum
 * verifies; nothing (undefined) when a checksummed body was cut short. Throws 400 for a malformed or
 * unsupported trailer and 460 for a mismatch.
 */
async function verifiedSource (
  request: FastifyRequest, staged: Staged, expected: ExpectedChecksum | undefined, body: BoundedBody,
  progress: ProgressTracker, upload: UploadInfo
): Promise<AsyncIterable<Buffer> | undefined> {
  let checksum = expected
  if (checksum === undefined && !body.aborted) {
    try {
      checksum = trailerChecksum(request)
    } catch (error) {
      throw withOffset(error as Error, upload.offset)
    }
  }
  if (checksum === undefined) return staged.chunk.read()
  if (body.aborted || body.exceeded || progress.stopped !== undefined) return undefined
  const actual = staged.running?.digest() ?? await staged.chunk.digest(runningChecksum(checksum.algorithm))
  if (!actual.equals(checksum.digest)) throw withOffset(new TusErrors.CHECKSUM_MISMATCH(checksum.algorithm), upload.offset)
  return staged.chunk.read()
}

/** Runs a storage step; a failure is logged and answered 500 with the offset actually stored. */
async function storeFailure<T> (context: TusContext, request: FastifyRequest, upload: UploadInfo, step: () => Promise<T>): Promise<T> {
  try {
    return await step()
  } catch (error) {
    request.log.error({ err: error, uploadId: upload.id }, 'fastify-tus: writing an upload failed')
    const offset = await context.store.getInfo(upload.id).then((info) => info.offset, () => upload.offset)
    throw withHeaders(new TusErrors.STORE_FAILED(describe(error)), { 'Upload-Offset': String(offset) })
  }
}

export function isComplete (upload: UploadInfo): boolean {
  return upload.size !== undefined && upload.offset === upload.size
}

export function describe (error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
