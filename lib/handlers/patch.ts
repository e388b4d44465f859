import type { FastifyReply, FastifyRequest } from 'fastify'
import { appendBody, isComplete } from '../append.js'
import { RequestBody } from '../body.js'
import { finishFinalsWaitingOn } from '../concat.js'
import { getLiveUpload, uploadIdOf, type TusContext } from '../context.js'
import { TusErrors, withHeaders } from '../errors.js'
import { completeUpload, sendUploadResponse, type UploadResponse } from '../hooks.js'
import { OCTET_STREAM, integerHeader, mediaType, stringHeader } from '../protocol.js'
import { setExpires } from '../reply.js'
import type { UploadInfo } from '../store/types.js'

/** PATCH: append the body at Upload-Offset. Every check runs before the first byte is written. */
export async function handlePatch (context: TusContext, request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const id = uploadIdOf(request)
  if (mediaType(request) !== OCTET_STREAM) {
    throw new TusErrors.UNSUPPORTED_MEDIA_TYPE(stringHeader(request, 'content-type') ?? '')
  }
  const offset = integerHeader(request, 'Upload-Offset')
  if (offset === undefined) throw new TusErrors.INVALID_HEADER('Upload-Offset', 'missing')
  const length = integerHeader(request, 'Upload-Length')

  // A newer request for this upload (its client reconnected) ends this one's body: tusd's lock release.
  const onReleaseRequested = (): void => { if (request.body instanceof RequestBody) request.body.release('superseded') }
  const lock = await context.locker.lock(id, { timeoutMs: context.options.lockTimeout, onReleaseRequested })
  let response: UploadResponse | undefined
  let completed = false
  try {
    let upload = await getLiveUpload(context, id)
    if (upload.concat?.type === 'final') throw new TusErrors.FINAL_UPLOAD()
    if (offset !== upload.offset) {
      throw withHeaders(new TusErrors.OFFSET_MISMATCH(offset, upload.offset), { 'Upload-Offset': String(upload.offset) })
    }
    // Before the length is declared: declaring it equal to the stored offset is what completes the upload.
    const wasComplete = isComplete(upload)
    if (length !== undefined) upload = await declareLength(context, upload, length)
    upload = await appendBody(context, request, upload)
    reply.header('Upload-Offset', String(upload.offset))
    setExpires(context, reply, upload)
    completed = !wasComplete && isComplete(upload)
    if (completed && upload.concat === undefined) response = await completeUpload(context, request, upload)
  } finally {
    await lock.release()
  }
  if (completed) await finishFinalsWaitingOn(context, request, id)
  await sendUploadResponse(reply, 204, response)
}

/** creation-defer-length: the length arrives on a PATCH, once, and never changes afterwards. */
async function declareLength (context: TusContext, upload: UploadInfo, length: number): Promise<UploadInfo> {
  if (upload.size !== undefined) {
    if (upload.size !== length) throw new TusErrors.LENGTH_ALREADY_SET(upload.size)
    return upload
  }
  if (length > context.options.maxSize) throw new TusErrors.MAX_SIZE_EXCEEDED(length, context.options.maxSize)
  if (length < upload.offset) throw new TusErrors.LENGTH_BELOW_OFFSET(length, upload.offset)
  await context.store.declareLength(upload.id, length)
  return { ...upload, size: length }
}
