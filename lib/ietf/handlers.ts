import type { FastifyReply, FastifyRequest } from 'fastify'
import { appendToUpload, createUpload, readFinished, readStatus, removeUpload, type ProgressListener } from '../core/operations.js'
import { contentLength, hasBody, mediaType, stringHeader } from '../core/request.js'
import type { TusServices } from '../core/services.js'
import { expiresAt, isComplete } from '../core/uploads.js'
import { TusDraftErrors, TusErrors } from '../errors.js'
import { parseMetadata } from '../metadata.js'
import type { UploadInfo } from '../store/types.js'
import { sendDownload } from '../wire/download.js'
import { parseConcat } from '../wire/concat.js'
import { uploadIdOf, uploadLocation } from '../wire/location.js'
import { sendUploadResponse } from '../wire/response.js'
import { completeFlag, completeHeaderValue, hasAnyHeader, representationMetadata, sfInteger, sfIntegerValue } from './headers.js'
import { sendInterim } from './interim.js'
import { DRAFT_VERSIONS, type DraftVersion } from './versions.js'

/**
 * The draft-ietf-httpbis-resumable-upload dialect: creation (POST to the creation endpoint), offset
 * retrieval (HEAD, and GET from interop 8), append (PATCH), cancellation (DELETE) and limits (OPTIONS).
 * Each handler reads the draft's headers, calls the same operation as tus (lib/core/operations.ts) and
 * writes the outcome in the draft's headers; the draft's representation metadata is kept as tus
 * `filename` / `filetype`. What differs between interop versions is data, in versions.ts.
 */
export type DraftHandler = (services: TusServices, version: DraftVersion, request: FastifyRequest, reply: FastifyReply) => Promise<void>

export const INTEROP_HEADER = 'upload-draft-interop-version'
export const PARTIAL_UPLOAD = 'application/partial-upload'

/**
 * Which protocol a request speaks: undefined for tus 1.0.0 (no `Upload-Draft-Interop-Version`, or the
 * draft switched off), else its draft version. A version the server does not accept is a 400 (I-V-4).
 */
export function draftVersionOf (services: TusServices, request: FastifyRequest): DraftVersion | undefined {
  const accepted = services.options.ietfDraftVersions
  const header = stringHeader(request, INTEROP_HEADER)
  if (header === undefined || accepted.length === 0) return undefined
  // An sf-integer Item like the draft's other numbers: `06` is 6 (I-V-1).
  const value = header.trim()
  const interop = sfIntegerValue(value)
  const version = interop !== undefined && accepted.includes(interop) ? DRAFT_VERSIONS.get(interop) : undefined
  if (version === undefined) throw new TusDraftErrors.UNSUPPORTED_INTEROP_VERSION(value.slice(0, 32), accepted.join(', '))
  return version
}

/** POST to the creation endpoint: a new upload, with none, some or all of its bytes (I-C-*). */
export const handleDraftCreation: DraftHandler = async (services, version, request, reply) => {
  // tus-js-client's parallel uploads in a draft mode: partials with `Upload-Concat: partial`, then a final with
  // `Upload-Concat: final;<urls>` and no complete flag (its bytes and length are its partials').
  const concat = parseConcat(services, request)
  const final = concat?.type === 'final'
  const complete = completeFlag(request, version)
  if (complete === undefined && !final) throw new TusErrors.INVALID_HEADER(version.completeHeader, 'missing, or not ?0 / ?1')
  if (request.headers['upload-offset'] !== undefined) throw new TusErrors.INVALID_HEADER('Upload-Offset', 'not allowed on a creation request')
  // tus-js-client in draft mode still sends Upload-Metadata; the draft's own headers win over it.
  const header = stringHeader(request, 'upload-metadata')
  const metadata = { ...(header === undefined ? {} : parseMetadata(header, services.options.maxMetadataSize)), ...representationMetadata(request) }
  const declared = final ? { length: sfInteger(request, 'Upload-Length') } : declaredLength(request, complete ?? false, 0)
  const outcome = await createUpload(services, request, {
    size: declared.length,
    lengthFromBody: declared.fromBody,
    metadata,
    concat,
    completes: final ? undefined : complete,
    onCreated: (upload) => {
      const location = uploadLocation(services, request, upload.id)
      reply.header('Location', location)
      // Before a byte of the body is read, so an interrupted client knows where to resume (I-C-1).
      const limit = uploadLimit(services, version)
      sendInterim(request, reply, version, { Location: location, ...(limit === undefined ? {} : { 'Upload-Limit': limit }) })
    },
    ...progressInterims(request, reply, version)
  })
  setUploadHeaders(services, version, reply, outcome.upload, await expiresAt(services, outcome.upload))
  await sendUploadResponse(reply, 201, outcome.response)
}

/** PATCH on an upload: append at `Upload-Offset` (I-A-*). */
export const handleDraftAppend: DraftHandler = async (services, version, request, reply) => {
  const id = uploadIdOf(request)
  if (version.appendNeedsPartialUploadType && mediaType(request) !== PARTIAL_UPLOAD) {
    throw new TusDraftErrors.PARTIAL_UPLOAD_TYPE(stringHeader(request, 'content-type') ?? '')
  }
  const offset = sfInteger(request, 'Upload-Offset')
  if (offset === undefined) throw new TusErrors.INVALID_HEADER('Upload-Offset', 'missing, or not a non-negative integer')
  let complete = completeFlag(request, version)
  if (complete === undefined) {
    // An empty append without it is read as ?0 in every version: it stores nothing, and tus-js-client's last PATCH of
    // a stream of unknown length (its length in Upload-Length, no body) carries none in its ietf-draft-05 mode too.
    if (version.appendNeedsComplete && hasBody(request)) throw new TusErrors.INVALID_HEADER(version.completeHeader, 'missing, or not ?0 / ?1')
    complete = false
  }
  const declared = declaredLength(request, complete, offset)
  const outcome = await appendToUpload(services, request, id, {
    offset, length: declared.length, lengthFromBody: declared.fromBody, completes: complete, ...progressInterims(request, reply, version)
  })
  setUploadHeaders(services, version, reply, outcome.upload, await expiresAt(services, outcome.upload))
  // -01 acknowledged an append that leaves the upload incomplete with 201 (and Upload-Incomplete: ?1).
  const status = version.completeHeader === 'Upload-Incomplete' && !isComplete(outcome.upload) ? 201 : 204
  await sendUploadResponse(reply, status, outcome.response)
}

/** HEAD on an upload: offset retrieval (I-H-*). */
export const handleDraftHead: DraftHandler = async (services, version, request, reply) => {
  const forbidden = version.refusesStateHeaders ? hasAnyHeader(request, ['Upload-Offset', version.completeHeader, 'Upload-Length']) : undefined
  if (forbidden !== undefined) throw new TusErrors.INVALID_HEADER(forbidden, 'not allowed on offset retrieval')
  const upload = await readStatus(services, request, uploadIdOf(request))
  setStatusHeaders(services, version, reply, upload, await expiresAt(services, upload))
  await reply.code(204).send()
}

/**
 * GET on an upload. From interop 8 it is offset retrieval too: the HEAD headers, and the bytes once the
 * upload is complete (204 before). Earlier versions leave GET undefined: the download every upload has.
 */
export const handleDraftGet: DraftHandler = async (services, version, request, reply) => {
  const id = uploadIdOf(request)
  if (!version.getRetrievesOffset) {
    await sendDownload(services, request, reply, await readFinished(services, request, id))
    return
  }
  const upload = await readStatus(services, request, id)
  const expiry = await expiresAt(services, upload)
  if (isComplete(upload)) {
    await sendDownload(services, request, reply, upload, (reply) => { setStatusHeaders(services, version, reply, upload, expiry) })
    return
  }
  setStatusHeaders(services, version, reply, upload, expiry)
  await reply.code(204).send()
}

/** DELETE on an upload: cancellation. Interrupts a running append to it first. */
export const handleDraftDelete: DraftHandler = async (services, version, request, reply) => {
  const forbidden = version.refusesStateHeaders ? hasAnyHeader(request, ['Upload-Offset', version.completeHeader]) : undefined
  if (forbidden !== undefined) throw new TusErrors.INVALID_HEADER(forbidden, 'not allowed on cancellation')
  await removeUpload(services, request, uploadIdOf(request))
  await reply.code(204).header('Upload-Draft-Interop-Version', String(version.interop)).send()
}

/** OPTIONS: the limits every upload gets (I-L-1), and the append media type (-10/-11, harmless elsewhere). */
export const handleDraftOptions: DraftHandler = async (services, version, _request, reply) => {
  const limit = uploadLimit(services, version) ?? uploadLimit(services, { ...version, uploadLimit: 'max-age' })
  reply.header('Upload-Draft-Interop-Version', String(version.interop)).header('Accept-Patch', PARTIAL_UPLOAD)
  if (limit !== undefined) reply.header('Upload-Limit', limit)
  await reply.code(204).send()
}

/** The draft handler of each method on an upload URL (also for X-HTTP-Method-Override). */
export const DRAFT_UPLOAD_HANDLERS: Readonly<Record<string, DraftHandler>> = {
  PATCH: handleDraftAppend, DELETE: handleDraftDelete, HEAD: handleDraftHead, GET: handleDraftGet
}

/**
 * The length a request declares (I-C-4): `Upload-Length`, else, when it completes the upload, offset +
 * Content-Length. The core refuses one that disagrees with where the body ends (400 inconsistent-upload-length),
 * with the upload's offset.
 */
function declaredLength (request: FastifyRequest, complete: boolean, offset: number): { length: number | undefined, fromBody?: true } {
  const header = sfInteger(request, 'Upload-Length')
  if (header !== undefined) return { length: header }
  const bodyLength = contentLength(request)
  return complete && bodyLength !== undefined ? { length: offset + bodyLength, fromBody: true } : { length: undefined }
}

/** Progress 104s (interop 5 on, I-C-5, I-A-9): one with `Upload-Offset` at each progress report, while the body is read. */
function progressInterims (request: FastifyRequest, reply: FastifyReply, version: DraftVersion): ProgressListener {
  if (!version.progressInterim) return {}
  // The first report comes before the first byte: the offset the client already knows.
  let last: number | undefined
  return {
    onProgress: (upload) => {
      if (last !== undefined && upload.offset <= last) return
      const first = last === undefined
      last = upload.offset
      if (first) return
      sendInterim(request, reply, version, { 'Upload-Offset': String(upload.offset) })
    }
  }
}

/**
 * `Upload-Limit` (a Structured Fields dictionary) for this version, or undefined where it has none; for an upload
 * when `upload` is given, with its `expiry` (expiresAt).
 */
export function uploadLimit (services: TusServices, version: DraftVersion, upload?: { expiry: Date | undefined }): string | undefined {
  if (version.uploadLimit === 'none') return undefined
  // A maxSize beyond a Structured Fields Integer's 15 digits (Number.MAX_SAFE_INTEGER for "no limit") is announced as
  // the largest one, a limit no upload reaches: written as it is, it would make the whole field unparseable. The
  // retention needs no such care: options cap it at 1,000,000 days (11 digits of seconds).
  const parts = [`max-size=${Math.min(services.options.maxSize, SF_MAX_INTEGER)}`, 'min-size=0']
  if (upload === undefined) {
    if (Number.isFinite(services.options.daysToKeep)) parts.push(`${version.uploadLimit}=${Math.floor(services.options.daysToKeep * 86_400)}`)
  } else {
    const { expiry } = upload
    if (expiry !== undefined) parts.push(`${version.uploadLimit}=${Math.max(0, Math.floor((expiry.getTime() - Date.now()) / 1000))}`)
  }
  return parts.join(', ')
}

/** The largest Structured Fields Integer (RFC 9651 §3.3.1: at most 15 digits). */
const SF_MAX_INTEGER = 999_999_999_999_999

function setUploadHeaders (services: TusServices, version: DraftVersion, reply: FastifyReply, upload: UploadInfo, expiry: Date | undefined): void {
  const [name, value] = completeHeaderValue(version, isComplete(upload))
  reply.header('Upload-Draft-Interop-Version', String(version.interop)).header('Upload-Offset', String(upload.offset)).header(name, value)
  const limit = uploadLimit(services, version, { expiry })
  if (limit !== undefined) reply.header('Upload-Limit', limit)
}

function setStatusHeaders (services: TusServices, version: DraftVersion, reply: FastifyReply, upload: UploadInfo, expiry: Date | undefined): void {
  setUploadHeaders(services, version, reply, upload, expiry)
  if (upload.size !== undefined) reply.header('Upload-Length', String(upload.size))
  reply.header('Cache-Control', 'no-store')
}
