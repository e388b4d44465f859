import { Http2ServerResponse } from 'node:http2'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { appendBody, isComplete } from '../append.js'
import { RequestBody } from '../body.js'
import { expiresAt, getLiveUpload, settledUpload, uploadIdOf, type TusContext } from '../context.js'
import { TusErrors, withHeaders } from '../errors.js'
import type { TusEvents } from '../events.js'
import { handleGet } from '../handlers/get.js'
import { completeUpload, createUpload, prepareUpload, sendUploadResponse, terminateUpload, type UploadResponse } from '../hooks.js'
import { newUploadId } from '../ids.js'
import { uploadLocation } from '../location.js'
import { parseMetadata } from '../metadata.js'
import { hasBody, integerHeader, mediaType, stringHeader } from '../protocol.js'
import type { UploadInfo } from '../store/types.js'
import { completeFlag, completeHeaderValue, hasAnyHeader, representationMetadata, sfInteger } from './headers.js'
import { TusDraftErrors, completedUpload, inconsistentLength, mismatchingOffset, sendDraftError, withProblem } from './problems.js'
import type { DraftVersion } from './versions.js'

/**
 * The draft-ietf-httpbis-resumable-upload side of the routes: creation (POST to the creation endpoint),
 * offset retrieval (HEAD, and GET from -12), append (PATCH), cancellation (DELETE) and limits (OPTIONS).
 * Uploads are the same uploads as tus ones: the same store, locker, hooks, events and metrics, and
 * the draft's representation metadata is kept as tus `filename` / `filetype`.
 */
export type DraftHandler = (context: TusContext, version: DraftVersion, request: FastifyRequest, reply: FastifyReply) => Promise<void>

export const INTEROP_HEADER = 'upload-draft-interop-version'
export const PARTIAL_UPLOAD = 'application/partial-upload'
const INTEROP_VALUE = /^(0|[1-9][0-9]{0,14})$/

/**
 * Which protocol a request speaks: undefined for tus 1.0.0 (no `Upload-Draft-Interop-Version`, or the
 * draft switched off), else its draft version. A version the server does not accept is a 400 (I-V-4).
 */
export function draftVersionOf (context: TusContext, request: FastifyRequest): DraftVersion | undefined {
  const versions = context.options.ietfDraftVersions
  const header = stringHeader(request, INTEROP_HEADER)
  if (header === undefined || versions.size === 0) return undefined
  const value = header.trim()
  const version = INTEROP_VALUE.test(value) ? versions.get(Number(value)) : undefined
  if (version === undefined) {
    throw new TusDraftErrors.UNSUPPORTED_INTEROP_VERSION(value.slice(0, 32), [...versions.keys()].join(', '))
  }
  return version
}

/**
 * The routes' error handler: requests that name a draft interop version (even one not accepted) get the
 * draft's answer (`sendDraftError`), every other request `tusErrorHandler`'s.
 */
export function draftAwareErrorHandler<E extends FastifyError> (
  context: TusContext,
  tusErrorHandler: (error: E, request: FastifyRequest, reply: FastifyReply) => void
): (error: E, request: FastifyRequest, reply: FastifyReply) => void {
  return (error, request, reply) => {
    if (request.headers[INTEROP_HEADER] === undefined || context.options.ietfDraftVersions.size === 0) {
      tusErrorHandler(error, request, reply)
      return
    }
    let version: DraftVersion | undefined
    try {
      version = draftVersionOf(context, request)
    } catch {
      version = undefined
    }
    sendDraftError(error, request, reply, version)
  }
}

/** POST to the creation endpoint: a new upload, with none, some or all of its bytes (I-C-*). */
export const handleDraftCreation: DraftHandler = async (context, version, request, reply) => {
  const complete = completeFlag(request, version)
  if (complete === undefined) throw new TusErrors.INVALID_HEADER(version.completeHeader, 'missing, or not ?0 / ?1')
  if (request.headers['upload-offset'] !== undefined) throw new TusErrors.INVALID_HEADER('Upload-Offset', 'not allowed on a creation request')
  const contentLength = integerHeader(request, 'Content-Length')
  const length = declaredLength(request, complete, 0, contentLength)
  const limit = uploadLimit(context, version)
  if (length !== undefined && length > context.options.maxSize) {
    throw withLimit(new TusErrors.MAX_SIZE_EXCEEDED(length, context.options.maxSize), limit)
  }
  if (contentLength !== undefined && contentLength > context.options.maxSize) {
    throw withLimit(new TusErrors.LENGTH_EXCEEDED(context.options.maxSize), limit)
  }
  // tus-js-client in draft mode still sends Upload-Metadata; the draft's own headers win over it.
  const header = stringHeader(request, 'upload-metadata')
  const metadata = { ...(header === undefined ? {} : parseMetadata(header, context.options.maxMetadataSize)), ...representationMetadata(request) }
  const prepared = await prepareUpload(context, request, { id: newUploadId(), size: length, metadata })

  const lock = await context.locker.lock(prepared.id, lockOptions(context, request))
  let response: UploadResponse | undefined
  try {
    let upload = await createUpload(context, request, prepared)
    const location = uploadLocation(context, request, upload.id)
    reply.header('Location', location)
    // Before a byte of the body is read, so an interrupted client knows where to resume (I-C-1).
    sendInterim(request, reply, version, { Location: location, ...(limit === undefined ? {} : { 'Upload-Limit': limit }) })
    const stopProgress = version.progressInterim ? reportProgress(context.events, request, reply, version, upload) : undefined
    try {
      upload = await receive(context, version, request, upload, complete)
    } finally {
      stopProgress?.()
    }
    setUploadHeaders(context, version, reply, upload)
    if (isComplete(upload)) response = await completeUpload(context, request, upload)
  } finally {
    await lock.release()
  }
  await sendUploadResponse(reply, 201, response)
}

/** PATCH on an upload: append at `Upload-Offset` (I-A-*). Every check runs before a byte is written. */
export const handleDraftAppend: DraftHandler = async (context, version, request, reply) => {
  const id = uploadIdOf(request)
  if (version.appendNeedsPartialUploadType && mediaType(request) !== PARTIAL_UPLOAD) {
    throw new TusDraftErrors.PARTIAL_UPLOAD_TYPE(stringHeader(request, 'content-type') ?? '')
  }
  const offset = sfInteger(request, 'Upload-Offset')
  if (offset === undefined) throw new TusErrors.INVALID_HEADER('Upload-Offset', 'missing, or not a non-negative integer')
  let complete = completeFlag(request, version)
  if (complete === undefined) {
    if (version.appendNeedsComplete) throw new TusErrors.INVALID_HEADER(version.completeHeader, 'missing, or not ?0 / ?1')
    complete = false
  }
  const contentLength = integerHeader(request, 'Content-Length')

  const lock = await context.locker.lock(id, lockOptions(context, request))
  let response: UploadResponse | undefined
  let upload: UploadInfo
  try {
    upload = await getLiveUpload(context, id)
    if (isComplete(upload)) {
      // The upload is never modified (I-A-8); from -12 there is no completed-upload type, and bytes
      // beyond a finished upload are an inconsistent length.
      const error = version.completedUploadProblem || !version.problemTypes
        ? withProblem(new TusDraftErrors.COMPLETED_UPLOAD(), completedUpload())
        : withProblem(new TusDraftErrors.INCONSISTENT_LENGTH('the upload is already complete'), inconsistentLength())
      throw withHeaders(error, { 'Upload-Offset': String(upload.offset) })
    }
    if (offset !== upload.offset) {
      const [name, value] = completeHeaderValue(version, false)
      throw withHeaders(withProblem(new TusErrors.OFFSET_MISMATCH(offset, upload.offset), mismatchingOffset(upload.offset, offset)),
        { 'Upload-Offset': String(upload.offset), [name]: value })
    }
    const length = declaredLength(request, complete, offset, contentLength)
    if (length !== undefined && length !== upload.size) {
      if (upload.size !== undefined) throw inconsistent(`${length} now, ${upload.size} before`, upload)
      if (length < upload.offset) throw inconsistent(`${length} is below the ${upload.offset} bytes already stored`, upload)
      if (length > context.options.maxSize) {
        throw withLimit(new TusErrors.MAX_SIZE_EXCEEDED(length, context.options.maxSize), uploadLimit(context, version, upload))
      }
      await context.store.declareLength(upload.id, length)
      upload = { ...upload, size: length }
    }
    if (upload.size !== undefined && contentLength !== undefined && upload.offset + contentLength > upload.size) {
      throw inconsistent(`${contentLength} more bytes go beyond the length of ${upload.size}`, upload)
    }
    upload = await receive(context, version, request, upload, complete)
    setUploadHeaders(context, version, reply, upload)
    if (isComplete(upload)) response = await completeUpload(context, request, upload)
  } finally {
    await lock.release()
  }
  // -01 acknowledged an append that leaves the upload incomplete with 201 (and Upload-Incomplete: ?1).
  await sendUploadResponse(reply, version.completeHeader === 'Upload-Incomplete' && !isComplete(upload) ? 201 : 204, response)
}

/** HEAD on an upload: offset retrieval (I-H-*). Under the lock, so the offset is never stale (I-H-3). */
export const handleDraftHead: DraftHandler = async (context, version, request, reply) => {
  const forbidden = hasAnyHeader(request, ['Upload-Offset', version.completeHeader, 'Upload-Length'])
  if (forbidden !== undefined) throw new TusErrors.INVALID_HEADER(forbidden, 'not allowed on offset retrieval')
  const upload = await settledUpload(context, uploadIdOf(request), lockOptions(context, request))
  setUploadHeaders(context, version, reply, upload)
  if (upload.size !== undefined) reply.header('Upload-Length', String(upload.size))
  await reply.code(204).header('Cache-Control', 'no-store').send()
}

/**
 * GET on an upload. From -12 it is offset retrieval too: the HEAD headers, and the bytes once the
 * upload is complete (204 before). Earlier versions leave GET undefined: the tus download.
 */
export const handleDraftGet: DraftHandler = async (context, version, request, reply) => {
  if (!version.getRetrievesOffset) {
    await handleGet(context, request, reply)
    return
  }
  const upload = await settledUpload(context, uploadIdOf(request), lockOptions(context, request))
  setUploadHeaders(context, version, reply, upload)
  if (upload.size !== undefined) reply.header('Upload-Length', String(upload.size))
  reply.header('Cache-Control', 'no-store')
  if (isComplete(upload)) await handleGet(context, request, reply)
  else await reply.code(204).send()
}

/** DELETE on an upload: cancellation. Interrupts a running append to it first. */
export const handleDraftDelete: DraftHandler = async (context, version, request, reply) => {
  const forbidden = hasAnyHeader(request, ['Upload-Offset', version.completeHeader])
  if (forbidden !== undefined) throw new TusErrors.INVALID_HEADER(forbidden, 'not allowed on cancellation')
  const id = uploadIdOf(request)
  const lock = await context.locker.lock(id, lockOptions(context, request))
  try {
    await terminateUpload(context, request, await getLiveUpload(context, id))
  } finally {
    await lock.release()
  }
  await reply.code(204).header('Upload-Draft-Interop-Version', String(version.interop)).send()
}

/** OPTIONS: the limits every upload gets (I-L-1), and the append media type (-10/-11, harmless elsewhere). */
export const handleDraftOptions: DraftHandler = async (context, version, _request, reply) => {
  const limit = uploadLimit(context, version) ?? uploadLimit(context, { ...version, uploadLimit: 'max-age' })
  reply.header('Upload-Draft-Interop-Version', String(version.interop)).header('Accept-Patch', PARTIAL_UPLOAD)
  if (limit !== undefined) reply.header('Upload-Limit', limit)
  await reply.code(204).send()
}

/** The draft handler of each method on an upload URL (also for X-HTTP-Method-Override). */
export const DRAFT_UPLOAD_HANDLERS: Record<string, DraftHandler> = {
  PATCH: handleDraftAppend, DELETE: handleDraftDelete, HEAD: handleDraftHead, GET: handleDraftGet
}

/**
 * Streams the body (if any) into the upload and settles its length. `Upload-Complete: ?1` on a body
 * that arrived whole fixes a still unknown length at the bytes stored; a body cut short leaves the
 * upload incomplete and resumable (I-C-8, I-A-4).
 */
async function receive (context: TusContext, version: DraftVersion, request: FastifyRequest, upload: UploadInfo, complete: boolean): Promise<UploadInfo> {
  let result = upload
  if (hasBody(request)) {
    try {
      result = await appendBody(context, request, upload)
    } catch (error) {
      const exceeded = (error as { code?: string }).code === 'FST_TUS_LENGTH_EXCEEDED'
      // Beyond maxSize (the length still unknown): a 413 caused by the limits says which (I-L-4).
      if (exceeded && upload.size === undefined) throw withLimit(error as Error, uploadLimit(context, version, upload))
      if (exceeded) {
        // I-A-7: bytes beyond the known length make the upload invalid; it is removed, later requests get 404.
        request.log.info({ uploadId: upload.id }, 'fastify-tus: draft upload went beyond its length; removed')
        await context.store.terminate(upload.id)
        throw withProblem(new TusDraftErrors.INCONSISTENT_LENGTH(`the body goes beyond the length of ${upload.size}`), inconsistentLength())
      }
      throw error
    }
  }
  const aborted = request.body instanceof RequestBody && request.body.aborted
  if (complete && !aborted) {
    if (result.size === undefined) {
      await context.store.declareLength(result.id, result.offset)
      result = { ...result, size: result.offset }
    } else if (result.offset !== result.size) {
      throw inconsistent(`the request completes the upload but ${result.offset} of ${result.size} bytes are stored`, result)
    }
  }
  // appendBody flushes when its bytes reach a length it knew; a length known only now, or no body, needs it here.
  if (isComplete(result) && (!hasBody(request) || upload.size === undefined)) await context.store.flush(result.id)
  return result
}

/**
 * The length a request declares (I-C-4): `Upload-Length`, and when it completes the upload also
 * offset + Content-Length. Both present must agree (400 inconsistent-upload-length).
 */
function declaredLength (request: FastifyRequest, complete: boolean, offset: number, contentLength: number | undefined): number | undefined {
  const header = sfInteger(request, 'Upload-Length')
  const fromContent = complete && contentLength !== undefined ? offset + contentLength : undefined
  if (header !== undefined && fromContent !== undefined && header !== fromContent) {
    throw withProblem(new TusDraftErrors.INCONSISTENT_LENGTH(`Upload-Length ${header} but the content ends at ${fromContent}`), inconsistentLength())
  }
  return header ?? fromContent
}

function inconsistent (detail: string, upload: UploadInfo): Error {
  return withHeaders(withProblem(new TusDraftErrors.INCONSISTENT_LENGTH(detail), inconsistentLength()), { 'Upload-Offset': String(upload.offset) })
}

/** `Upload-Limit` (a Structured Fields dictionary) for this version, or undefined where it has none. */
export function uploadLimit (context: TusContext, version: DraftVersion, upload?: UploadInfo): string | undefined {
  if (version.uploadLimit === 'none') return undefined
  const parts = [`max-size=${context.options.maxSize}`, 'min-size=0']
  if (Number.isFinite(context.options.daysToKeep)) {
    const expiry = upload === undefined ? undefined : expiresAt(context, upload)
    const seconds = expiry === undefined
      ? Math.floor(context.options.daysToKeep * 86_400)
      : Math.max(0, Math.floor((expiry.getTime() - Date.now()) / 1000))
    parts.push(`${version.uploadLimit}=${seconds}`)
  }
  return parts.join(', ')
}

function setUploadHeaders (context: TusContext, version: DraftVersion, reply: FastifyReply, upload: UploadInfo): void {
  const [name, value] = completeHeaderValue(version, isComplete(upload))
  reply.header('Upload-Draft-Interop-Version', String(version.interop)).header('Upload-Offset', String(upload.offset)).header(name, value)
  const limit = uploadLimit(context, version, upload)
  if (limit !== undefined) reply.header('Upload-Limit', limit)
}

/** Adds Upload-Limit to an error's headers (keeping the ones it has, such as Upload-Offset). */
function withLimit<E extends Error> (error: E, limit: string | undefined): E {
  if (limit === undefined) return error
  const headers = (error as { headers?: Record<string, string> }).headers
  return withHeaders(error, { ...headers, 'Upload-Limit': limit })
}

/**
 * Lock options of a draft request. The draft RECOMMENDS that a newer request on an upload terminates an
 * older one still receiving bytes (its client is most likely gone): while this request reads its body,
 * a waiter closes its connection; the bytes that arrived are kept.
 */
function lockOptions (context: TusContext, request: FastifyRequest): { timeoutMs: number, onReleaseRequested: () => void } {
  return {
    timeoutMs: context.options.lockTimeout,
    onReleaseRequested: () => {
      const body = request.body
      if (body instanceof RequestBody && !body.ended) request.raw.destroy()
    }
  }
}

/**
 * Sends a `104 Upload Resumption Supported` interim response. HTTP/2: the stream's `additionalHeaders`.
 * HTTP/1.1: Node has no API for arbitrary 1xx (writeEarlyHints is 103 only), so it is written on the
 * socket before the final response head, as writeEarlyHints does; only while this response owns the
 * socket (not a pipelined request still queued) and never after the final head. HTTP/1.0 clients get
 * no 1xx at all (RFC 9110 §15.2).
 */
export function sendInterim (request: FastifyRequest, reply: FastifyReply, version: DraftVersion, headers: Record<string, string>): boolean {
  const all = { ...headers, 'Upload-Draft-Interop-Version': String(version.interop) }
  if (Object.values(all).some((value) => /[\r\n]/.test(value))) return false
  const response: unknown = reply.raw
  if (response instanceof Http2ServerResponse) {
    if (response.headersSent || response.stream.destroyed) return false
    response.stream.additionalHeaders({ ':status': 104, ...lowerCase(all) })
    return true
  }
  const socket = reply.raw.socket
  if (request.raw.httpVersion !== '1.1' || socket === null || reply.raw.headersSent || socket.destroyed || !socket.writable) return false
  let head = 'HTTP/1.1 104 Upload Resumption Supported\r\n'
  for (const [name, value] of Object.entries(all)) head += `${name}: ${value}\r\n`
  socket.write(head + '\r\n')
  return true
}

function lowerCase (headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value]))
}

/**
 * Progress 104s (-03 on, I-C-5): one with `Upload-Offset` each time the plugin reports progress
 * (every `progressInterval` ms), while the request is still being read. Returns the unsubscribe.
 */
function reportProgress (events: TusEvents, request: FastifyRequest, reply: FastifyReply, version: DraftVersion, upload: UploadInfo): () => void {
  let last = upload.offset
  return onUploadProgress(events, upload.id, (current) => {
    if (current.offset <= last) return
    last = current.offset
    sendInterim(request, reply, version, { 'Upload-Offset': String(current.offset) })
  })
}

// One listener per emitter, so many concurrent creations never trip EventEmitter's leak warning.
const progressListeners = new WeakMap<TusEvents, Map<string, (upload: UploadInfo) => void>>()

function onUploadProgress (events: TusEvents, id: string, listener: (upload: UploadInfo) => void): () => void {
  let listeners = progressListeners.get(events)
  if (listeners === undefined) {
    const map = new Map<string, (upload: UploadInfo) => void>()
    listeners = map
    progressListeners.set(events, map)
    events.on('progress', (upload) => { map.get(upload.id)?.(upload) })
  }
  listeners.set(id, listener)
  return () => { listeners.delete(id) }
}
