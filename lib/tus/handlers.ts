import type { FastifyReply, FastifyRequest } from 'fastify'
import { CHECKSUM_ALGORITHMS } from '../core/checksum.js'
import { appendToUpload, createUpload, readFinished, readStatus, removeUpload, type UploadOutcome } from '../core/operations.js'
import { bringsBytes, integerHeader, mediaType, stringHeader } from '../core/request.js'
import type { TusServices } from '../core/services.js'
import { expiresAt, isComplete } from '../core/uploads.js'
import { TusErrors } from '../errors.js'
import { parseMetadata, serializeMetadata } from '../metadata.js'
import { sendDownload } from '../wire/download.js'
import { parseConcat } from '../wire/concat.js'
import { uploadIdOf, uploadLocation } from '../wire/location.js'
import { sendUploadResponse } from '../wire/response.js'
import { EXTENSIONS, OCTET_STREAM, TUS_VERSION } from './headers.js'

/**
 * tus 1.0.0: each handler reads the request's headers, calls one operation of lib/core/operations.ts and
 * writes its outcome as tus headers. No rule about uploads lives here, only how tus spells them.
 */
export type TusHandler = (services: TusServices, request: FastifyRequest, reply: FastifyReply) => Promise<void>

/** OPTIONS: discovery. Tus-Resumable in the request is ignored (T-O-3). */
export const handleOptions: TusHandler = async (services, _request, reply) => {
  const extensions = Number.isFinite(services.options.daysToKeep) ? EXTENSIONS : EXTENSIONS.filter((name) => name !== 'expiration')
  await reply
    .code(204)
    .header('Tus-Version', TUS_VERSION)
    .header('Tus-Extension', extensions.join(','))
    .header('Tus-Max-Size', String(services.options.maxSize))
    .header('Tus-Checksum-Algorithm', CHECKSUM_ALGORITHMS.join(','))
    .send()
}

/** POST: creation, with the first bytes in the body when it has one (creation-with-upload), or concatenation. */
export const handlePost: TusHandler = async (services, request, reply) => {
  const concat = parseConcat(services, request)
  const size = concat?.type === 'final' ? finalLength(request) : creationLength(request)
  // An empty body framed as one (chunked, or HTTP/2 without Content-Length) needs no Content-Type (T-C-10).
  if (concat?.type !== 'final' && mediaType(request) !== OCTET_STREAM && await bringsBytes(request)) requireOctetStream(request)
  const header = stringHeader(request, 'upload-metadata')
  const metadata = header === undefined ? {} : parseMetadata(header, services.options.maxMetadataSize)
  const outcome = await createUpload(services, request, {
    size, metadata, concat, onCreated: (upload) => { reply.header('Location', uploadLocation(services, request, upload.id)) }
  })
  // A final upload has no offset until its concatenation is done (T-N-9).
  if (outcome.upload.concat?.type !== 'final' || isComplete(outcome.upload)) reply.header('Upload-Offset', String(outcome.upload.offset))
  await sendOutcome(services, reply, 201, outcome)
}

/** HEAD: the upload's offset, length and metadata. */
export const handleHead: TusHandler = async (services, request, reply) => {
  const upload = await readStatus(services, request, uploadIdOf(request))
  reply.header('Cache-Control', 'no-store')
  if (upload.concat?.type !== 'final' || isComplete(upload)) reply.header('Upload-Offset', String(upload.offset))
  if (upload.concat !== undefined) reply.header('Upload-Concat', upload.concat.type === 'final' ? upload.concat.header : 'partial')
  if (upload.size === undefined) reply.header('Upload-Defer-Length', '1')
  else reply.header('Upload-Length', String(upload.size))
  if (Object.keys(upload.metadata).length > 0) reply.header('Upload-Metadata', serializeMetadata(upload.metadata))
  setExpires(reply, await expiresAt(services, upload))
  await reply.code(200).send()
}

/** PATCH: append the body at Upload-Offset; `Upload-Length` declares a deferred length. */
export const handlePatch: TusHandler = async (services, request, reply) => {
  const id = uploadIdOf(request)
  requireOctetStream(request)
  const offset = integerHeader(request, 'Upload-Offset')
  if (offset === undefined) throw new TusErrors.INVALID_HEADER('Upload-Offset', 'missing')
  const outcome = await appendToUpload(services, request, id, { offset, length: integerHeader(request, 'Upload-Length') })
  reply.header('Upload-Offset', String(outcome.upload.offset))
  await sendOutcome(services, reply, 204, outcome)
}

/** GET: download a finished upload (not a tus request: no Tus-Resumable needed). */
export const handleGet: TusHandler = async (services, request, reply) => {
  await sendDownload(services, request, reply, await readFinished(services, request, uploadIdOf(request)))
}

/** DELETE: termination. */
export const handleDelete: TusHandler = async (services, request, reply) => {
  await removeUpload(services, request, uploadIdOf(request))
  await reply.code(204).send()
}

/** The tus handler of each method on an upload URL (also for X-HTTP-Method-Override). */
export const TUS_UPLOAD_HANDLERS: Readonly<Record<string, TusHandler>> = { PATCH: handlePatch, DELETE: handleDelete, HEAD: handleHead, GET: handleGet }

async function sendOutcome (services: TusServices, reply: FastifyReply, status: number, outcome: UploadOutcome): Promise<void> {
  setExpires(reply, await expiresAt(services, outcome.upload))
  await sendUploadResponse(reply, status, outcome.response)
}

function setExpires (reply: FastifyReply, expiry: Date | undefined): void {
  if (expiry !== undefined) reply.header('Upload-Expires', expiry.toUTCString())
}

function requireOctetStream (request: FastifyRequest): void {
  if (mediaType(request) !== OCTET_STREAM) throw new TusErrors.UNSUPPORTED_MEDIA_TYPE(stringHeader(request, 'content-type') ?? '')
}

/** Upload-Length, or undefined for `Upload-Defer-Length: 1`: exactly one of them. */
function creationLength (request: FastifyRequest): number | undefined {
  const length = integerHeader(request, 'Upload-Length')
  const defer = stringHeader(request, 'upload-defer-length')
  if (defer !== undefined && defer !== '1') throw new TusErrors.INVALID_HEADER('Upload-Defer-Length', 'only "1" is allowed')
  if (length !== undefined && defer !== undefined) throw new TusErrors.AMBIGUOUS_LENGTH()
  if (length === undefined && defer === undefined) throw new TusErrors.MISSING_LENGTH()
  return length
}

/** A final's Upload-Length, for the core to refuse (a final takes its length from its partials); tus's deferral too. */
function finalLength (request: FastifyRequest): number | undefined {
  if (request.headers['upload-defer-length'] !== undefined) {
    throw new TusErrors.INVALID_CONCAT('a final upload takes its length from its partials: send no Upload-Defer-Length')
  }
  return integerHeader(request, 'Upload-Length')
}
