import createError, { type FastifyErrorConstructor } from '@fastify/error'
import { STATUS_CODES } from 'node:http'
import type { FastifyError } from 'fastify'

/**
 * The type of each of our error classes, spelled with the name imported from @fastify/error. Left to inference,
 * the declarations would say `createError.FastifyErrorConstructor`: a namespace reached through the default import,
 * which consumers resolving with "bundler" or "node10" see as the `default` value, so every error there was `any`.
 */
export type TusErrorConstructor<Args extends unknown[]> = FastifyErrorConstructor<{ code: string }, Args>

function tusError<Args extends unknown[] = []> (code: string, message: string, statusCode?: number): TusErrorConstructor<Args> {
  return createError<Args>(code, message, statusCode)
}

/**
 * Every error the plugin answers with. Each has a stable `code` (FST_TUS_*), the HTTP `statusCode` it is
 * answered with and a short message that becomes the plain-text response body.
 */
export const TusErrors = {
  INVALID_OPTION: tusError<[string]>('FST_TUS_INVALID_OPTION', 'fastify-tus: %s'),
  UNSUPPORTED_VERSION: tusError<[string]>(
    'FST_TUS_UNSUPPORTED_VERSION',
    'Unsupported or missing Tus-Resumable header (got "%s"); this server speaks 1.0.0',
    412
  ),
  INVALID_HEADER: tusError<[string, string]>('FST_TUS_INVALID_HEADER', 'Invalid %s header: %s', 400),
  MISSING_LENGTH: tusError<[]>(
    'FST_TUS_MISSING_LENGTH',
    'Upload-Length or Upload-Defer-Length: 1 is required',
    400
  ),
  AMBIGUOUS_LENGTH: tusError<[]>(
    'FST_TUS_AMBIGUOUS_LENGTH',
    'Upload-Length and Upload-Defer-Length must not be sent together',
    400
  ),
  LENGTH_ALREADY_SET: tusError<[number]>(
    'FST_TUS_LENGTH_ALREADY_SET',
    'Upload-Length is already set to %s and cannot change',
    400
  ),
  LENGTH_BELOW_OFFSET: tusError<[number, number]>(
    'FST_TUS_LENGTH_BELOW_OFFSET',
    'Upload-Length %s is smaller than the current offset %s',
    400
  ),
  INVALID_METADATA: tusError<[string]>('FST_TUS_INVALID_METADATA', 'Invalid Upload-Metadata: %s', 400),
  MAX_SIZE_EXCEEDED: tusError<[number, number]>(
    'FST_TUS_MAX_SIZE_EXCEEDED',
    'Upload-Length %s exceeds the maximum upload size of %s bytes',
    413
  ),
  /** A request that completes the upload where its body ends, with no Upload-Length, ends it beyond maxSize. */
  COMPLETED_BEYOND_MAX_SIZE: tusError<[number, number]>(
    'FST_TUS_MAX_SIZE_EXCEEDED',
    'The request completes the upload at %s bytes (where its body ends), beyond the maximum upload size of %s bytes',
    413
  ),
  /** A final upload whose partials add up to more than maxSize (the client sent no length: its partials make it). */
  FINAL_BEYOND_MAX_SIZE: tusError<[number, number]>(
    'FST_TUS_MAX_SIZE_EXCEEDED',
    'The final upload would be %s bytes (the sum of its partial uploads), beyond the maximum upload size of %s bytes',
    413
  ),
  /** A body of an upload whose length is still unknown went beyond maxSize. */
  BODY_BEYOND_MAX_SIZE: tusError<[number]>(
    'FST_TUS_MAX_SIZE_EXCEEDED',
    'The request body goes beyond the maximum upload size of %s bytes',
    413
  ),
  LENGTH_EXCEEDED: tusError<[number]>(
    'FST_TUS_LENGTH_EXCEEDED',
    'The request body goes beyond the upload length of %s bytes',
    413
  ),
  UNSUPPORTED_MEDIA_TYPE: tusError<[string]>(
    'FST_TUS_UNSUPPORTED_MEDIA_TYPE',
    'Content-Type must be application/offset+octet-stream (got "%s")',
    415
  ),
  OFFSET_MISMATCH: tusError<[number, number]>(
    'FST_TUS_OFFSET_MISMATCH',
    'Upload-Offset %s does not match the current offset %s',
    409
  ),
  CHECKSUM_UNSUPPORTED: tusError<[string, string]>(
    'FST_TUS_CHECKSUM_UNSUPPORTED',
    'Unsupported checksum algorithm "%s" (supported: %s)',
    400
  ),
  CHECKSUM_MISMATCH: tusError<[string]>(
    'FST_TUS_CHECKSUM_MISMATCH',
    'Checksum Mismatch: the %s digest of the received bytes differs from Upload-Checksum; nothing was stored',
    460
  ),
  INVALID_CONCAT: tusError<[string]>('FST_TUS_INVALID_CONCAT', 'Invalid Upload-Concat: %s', 400),
  FINAL_UPLOAD: tusError<[]>(
    'FST_TUS_FINAL_UPLOAD',
    'A final (concatenated) upload cannot be patched; its bytes come from its partial uploads',
    403
  ),
  INSUFFICIENT_STORAGE: tusError<[number]>(
    'FST_TUS_INSUFFICIENT_STORAGE',
    'Not enough storage for an upload of %s bytes; try again later',
    507
  ),
  NOT_FOUND: tusError<[]>('FST_TUS_NOT_FOUND', 'Upload not found', 404),
  GONE: tusError<[]>('FST_TUS_GONE', 'Upload expired', 410),
  /** A final upload one of whose partials was removed, or replaced by another upload under its id. */
  PARTIAL_GONE: tusError<[string]>(
    'FST_TUS_PARTIAL_GONE',
    'A partial upload of this final upload is gone (%s): it can never complete',
    410
  ),
  NOT_COMPLETE: tusError<[number, string]>(
    'FST_TUS_NOT_COMPLETE',
    'Upload is not complete yet (%s of %s bytes)',
    409
  ),
  RANGE_NOT_SATISFIABLE: tusError<[string, number]>(
    'FST_TUS_RANGE_NOT_SATISFIABLE',
    'Range "%s" cannot be satisfied for %s bytes',
    416
  ),
  PRECONDITION_FAILED: tusError<[string]>(
    'FST_TUS_PRECONDITION_FAILED',
    'The upload does not meet %s',
    412
  ),
  METHOD_NOT_ALLOWED: tusError<[string]>(
    'FST_TUS_METHOD_NOT_ALLOWED',
    'Method %s is not allowed here',
    405
  ),
  /** X-HTTP-Method-Override naming a method the URL does not have (the methods it has follow, as in Allow). */
  OVERRIDE_NOT_ALLOWED: tusError<[string, string]>(
    'FST_TUS_METHOD_NOT_ALLOWED',
    'X-HTTP-Method-Override names %s, which this URL does not have; it may name %s',
    405
  ),
  UPLOAD_COMPLETE: tusError<[number]>(
    'FST_TUS_UPLOAD_COMPLETE',
    'The upload is already complete (%s bytes); nothing more can be appended',
    413
  ),
  ID_TAKEN: tusError<[string]>('FST_TUS_ID_TAKEN', 'Upload id "%s" is already in use', 409),
  LOCKED: tusError<[]>('FST_TUS_LOCKED', 'Upload is busy with another request; retry later', 423),
  /** The lock wait ran out while the expiry sweep held the upload, onUploadExpire deciding whether it goes. */
  EXPIRING: tusError<[]>(
    'FST_TUS_LOCKED',
    'The upload has expired and is being removed (onUploadExpire is deciding); retry later: it will be gone, or still expired',
    423
  ),
  LOCK_FAILED: tusError<[string]>('FST_TUS_LOCK_FAILED', 'Upload lock unavailable: %s', 503),
  SHUTTING_DOWN: tusError('FST_TUS_SHUTTING_DOWN', 'The server is shutting down; retry later (uploads resume where they stopped)', 503),
  HOOK_FAILED: tusError<[string]>('FST_TUS_HOOK_FAILED', '%s failed', 500),
  /** A hook returned something it may not: a mistake of the app, said plainly so its developers see it at once. */
  HOOK_RESULT_INVALID: tusError<[string, string]>('FST_TUS_HOOK_FAILED', '%s failed: %s', 500),
  STORE_FAILED: tusError<[string]>('FST_TUS_STORE_FAILED', 'Storage error: %s', 500),
  /** A mistake of the app: one of its hooks made the request body flow before the plugin read it. */
  BODY_READ_ELSEWHERE: tusError<[]>(
    'FST_TUS_BODY_READ_ELSEWHERE',
    'The request body was read before fastify-tus could (a hook listened to request.raw\'s data events before the body was parsed): bytes were lost, nothing was stored',
    500
  ),
  TRANSFER_CODING_UNSUPPORTED: tusError<[string]>(
    'FST_TUS_TRANSFER_CODING_UNSUPPORTED',
    'Transfer-Encoding "%s" is not supported: send the body as it is, chunked or with a Content-Length',
    501
  )
} as const

/**
 * The errors only draft requests get. Stable codes, like TusErrors; the message is the problem's `detail`.
 */
export const TusDraftErrors = {
  UNSUPPORTED_INTEROP_VERSION: tusError<[string, string]>(
    'FST_TUS_DRAFT_UNSUPPORTED_VERSION',
    'Unsupported Upload-Draft-Interop-Version "%s"; this server speaks interop versions %s',
    400
  ),
  INCONSISTENT_LENGTH: tusError<[string]>('FST_TUS_DRAFT_INCONSISTENT_LENGTH', 'Inconsistent upload length: %s', 400),
  /** A request that completes the upload (Upload-Complete: ?1) where its body ends, short of or beyond the recorded length. */
  COMPLETES_AT_WRONG_LENGTH: tusError<[number, number]>(
    'FST_TUS_DRAFT_INCONSISTENT_LENGTH',
    'Inconsistent upload length: the request completes the upload at %s bytes (where its body ends), but its length is %s bytes',
    400
  ),
  PARTIAL_UPLOAD_TYPE: tusError<[string]>(
    'FST_TUS_DRAFT_PARTIAL_UPLOAD_TYPE',
    'An append must be Content-Type: application/partial-upload (got "%s")',
    415
  )
} as const

/**
 * What an error may carry besides its status and message. The core states facts (where the upload stands,
 * which limit was hit); each protocol turns them into its own headers and body.
 */
export interface TusErrorFacts {
  /** Response headers that belong to the error whatever the protocol (e.g. Content-Range with a 416). */
  headers?: Record<string, string>
  /** Where the upload stands after the failed request: every protocol tells its client (Upload-Offset). */
  offset?: number
  /** The offset the request named, when it was the wrong one. */
  providedOffset?: number
  /** Which limit a body or length went beyond: the upload's own length, or `maxSize` while the length is unknown. */
  limit?: 'length' | 'max-size'
  /** The request tried to change an upload that is already complete. */
  uploadComplete?: boolean
  /** When the upload the request concerned expires, as it stands after the request (tus says it: Upload-Expires). */
  expires?: Date
}

/** Every error the routes answer with: a Fastify error (status, code, message) and its facts. */
export type TusHttpError = FastifyError & TusErrorFacts

/** Adds facts to an error (headers are merged with the ones it has). */
export function withFacts<E extends Error> (error: E, facts: TusErrorFacts): E & TusErrorFacts {
  const current = error as E & TusErrorFacts
  const headers = facts.headers === undefined ? current.headers : { ...current.headers, ...facts.headers }
  return Object.assign(error, facts, headers === undefined ? {} : { headers })
}

/**
 * Adds `Retry-After: seconds` to an error: a 503 of a service that is unreachable for now (FST_TUS_LOCK_FAILED)
 * tells clients when to try again.
 */
export function retryLater<E extends Error> (error: E, seconds: number): E & TusErrorFacts {
  return withFacts(error, { headers: { 'Retry-After': String(Math.max(1, Math.ceil(seconds))) } })
}

// Errors logged where they happened, with what only that place knows (the upload, the step): not logged again.
const logged = new WeakSet<object>()

/** Marks an error as logged: the answer sent for it does not log it again. */
export function loggedAlready<E extends Error> (error: E): E {
  logged.add(error)
  return error
}

export function isLogged (error: Error): boolean {
  return logged.has(error)
}

/** The status an error is answered with: its own when it is an HTTP error status, else 500. */
export function errorStatus (error: TusHttpError): number {
  return refusalStatus(error) ?? 500
}

/**
 * The HTTP error status a thrown value carries as its `statusCode`: an integer from 400 to 599, nothing else (a
 * string, 401.5, a 302 or an object without one carry none).
 */
export function refusalStatus (error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null) return undefined
  const status = (error as { statusCode?: unknown }).statusCode
  return typeof status === 'number' && Number.isInteger(status) && status >= 400 && status <= 599 ? status : undefined
}

// Errors whose messages carry what a store or lock service said (paths, hosts): logged, never sent.
const INTERNAL_DETAIL: Readonly<Record<string, string>> = {
  FST_TUS_STORE_FAILED: 'Storage error',
  FST_TUS_LOCK_FAILED: 'Upload lock unavailable; retry later'
}

/**
 * The code of an error that has none (a hook's refusal, `Object.assign(new Error(...), { statusCode: 403 })`): its
 * status, `HTTP_403`, as `formatError` gets it and `tus_errors_total` counts it.
 */
export function statusErrorCode (status: number): string {
  return `HTTP_${status}`
}

/** The text a client may read about an error: the message of our own errors and of 4xx ones; a fixed phrase for the rest. */
export function publicMessage (error: TusHttpError): string {
  const internal = error.code === undefined ? undefined : INTERNAL_DETAIL[error.code]
  if (internal !== undefined) return internal
  const status = errorStatus(error)
  if (status < 500 || (error.code?.startsWith('FST_TUS_') ?? false)) {
    // A refusal thrown without a message (`Object.assign(new Error(), { statusCode: 403 })`) says its status.
    return typeof error.message === 'string' && error.message !== '' ? error.message : STATUS_CODES[status] ?? `Error ${status}`
  }
  return 'Internal server error'
}

export function errorMessage (error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
