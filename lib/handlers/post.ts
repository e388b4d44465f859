import type { FastifyReply, FastifyRequest } from 'fastify'
import { appendBody, isComplete } from '../append.js'
import { ensureFreeSpace } from '../capacity.js'
import { handleFinalCreation, parseConcat } from '../concat.js'
import type { TusContext } from '../context.js'
import { TusErrors } from '../errors.js'
import { completeUpload, createUpload, prepareUpload, sendUploadResponse, type UploadResponse } from '../hooks.js'
import { newUploadId } from '../ids.js'
import { uploadLocation } from '../location.js'
import { parseMetadata } from '../metadata.js'
import { OCTET_STREAM, hasBody, integerHeader, mediaType, stringHeader } from '../protocol.js'
import { setExpires } from '../reply.js'
import type { NewUpload } from '../store/types.js'

/** POST: creation, with the first bytes in the body when it has one (creation-with-upload). */
export async function handlePost (context: TusContext, request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const concat = parseConcat(context, request)
  if (concat?.type === 'final') {
    await handleFinalCreation(context, request, reply, concat)
    return
  }
  const upload = { ...parseCreation(context, request), ...(concat === undefined ? {} : { concat }) }
  const withBody = hasBody(request)
  if (withBody && mediaType(request) !== OCTET_STREAM) {
    throw new TusErrors.UNSUPPORTED_MEDIA_TYPE(stringHeader(request, 'content-type') ?? '')
  }
  const declared = integerHeader(request, 'Content-Length')
  if (upload.size !== undefined && declared !== undefined && declared > upload.size) {
    throw new TusErrors.LENGTH_EXCEEDED(upload.size)
  }
  const prepared = await prepareUpload(context, request, upload)
  await ensureFreeSpace(context, prepared.size)

  const lock = await context.locker.lock(prepared.id, { timeoutMs: context.options.lockTimeout })
  let response: UploadResponse | undefined
  try {
    let created = await createUpload(context, request, prepared)
    reply.header('Location', uploadLocation(context, request, created.id))
    if (withBody) created = await appendBody(context, request, created)
    else if (created.size === 0) await context.store.flush(created.id)
    reply.header('Upload-Offset', String(created.offset))
    setExpires(context, reply, created)
    // A partial upload is only material for a final one: it never completes on its own (T-N-2).
    if (isComplete(created) && created.concat === undefined) response = await completeUpload(context, request, created)
  } finally {
    await lock.release()
  }
  await sendUploadResponse(reply, 201, response)
}

function parseCreation (context: TusContext, request: FastifyRequest): NewUpload {
  const length = integerHeader(request, 'Upload-Length')
  const defer = stringHeader(request, 'upload-defer-length')
  if (defer !== undefined && defer !== '1') throw new TusErrors.INVALID_HEADER('Upload-Defer-Length', 'only "1" is allowed')
  if (length !== undefined && defer !== undefined) throw new TusErrors.AMBIGUOUS_LENGTH()
  if (length === undefined && defer === undefined) throw new TusErrors.MISSING_LENGTH()
  if (length !== undefined && length > context.options.maxSize) {
    throw new TusErrors.MAX_SIZE_EXCEEDED(length, context.options.maxSize)
  }
  const header = stringHeader(request, 'upload-metadata')
  const metadata = header === undefined ? {} : parseMetadata(header, context.options.maxMetadataSize)
  return { id: newUploadId(), size: length, metadata }
}
