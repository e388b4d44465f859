import type { FastifyReply, FastifyRequest } from 'fastify'
import type { TusHttpError } from './errors.js'
import type { DataStore, NewUpload, UploadInfo, UploadMetadata } from './store/types.js'

/** Runs before every tus route but OPTIONS; throw (an error with statusCode 401/403) or reply to refuse. */
export type TusAuthHook = (request: FastifyRequest, reply: FastifyReply) => Promise<void> | void

/** What onUploadCreate may change about the upload it is asked about. */
export interface UploadCreateChanges {
  /** The upload id instead of a random one: 1-128 of `A-Z a-z 0-9 _ -`, unused (409 when taken). */
  id?: string
  /** The metadata to store instead of what the client sent. */
  metadata?: UploadMetadata
  /**
   * A storage sub-directory for this upload, relative to the store's root: up to 8 `/`-separated
   * segments of `A-Z a-z 0-9 _ -` (no dots, so no way out of the root). The FileStore keeps the data
   * file at `<dir>/<directory>/<id>` and records the directory in `<dir>/<id>.json`; ids stay unique
   * across directories.
   */
  directory?: string
}

type Awaitable<T> = T | Promise<T>

/** Before an upload is created: refuse it (throw), or return changes (id, metadata, sub-directory). */
export type OnUploadCreate = (upload: NewUpload, request: FastifyRequest) => Awaitable<UploadCreateChanges | undefined | void>
/**
 * While bytes arrive: before the first byte of each request on an unfinished upload, then at most every
 * `progressInterval` ms and once more after the request's last byte unless it completed the upload.
 * `upload.offset` counts the bytes handed to the store so far (written once the request ends). Throw to stop the
 * upload (bytes stored are kept).
 */
export type OnUploadProgress = (upload: UploadInfo, request: FastifyRequest) => Awaitable<void>
/** Once per upload, after its last byte is durable and before the final response; may shape that response. */
export type OnUploadComplete = (upload: UploadInfo, request: FastifyRequest) => Awaitable<UploadResponse | undefined | void>
/**
 * What a request is about to do with an existing upload: `read` (HEAD, GET, the draft's offset retrieval),
 * `write` (an append), `terminate` (DELETE), `concatenate` (a reference in a final upload's `Upload-Concat`).
 */
export type UploadAction = 'read' | 'write' | 'terminate' | 'concatenate'
/**
 * Before any answer that depends on an existing upload, in every protocol: throw to refuse the request. Throw
 * `new TusErrors.NOT_FOUND()` to make another user's upload indistinguishable from one that does not exist;
 * refused concatenation references get the same 400 as unusable ones.
 */
export type OnUploadAccess = (upload: UploadInfo, action: UploadAction, request: FastifyRequest) => Awaitable<void>
/** Before a DELETE removes an upload: throw to refuse it. */
export type OnUploadTerminate = (upload: UploadInfo, request: FastifyRequest) => Awaitable<void>

/**
 * Before `app.tus.removeExpired()` removes an expired upload, under its lock: return `false` to keep it (it stays
 * expired, answered 410, and is asked about again at the next sweep), or archive it first (read its bytes with
 * `store.read(upload.id)`) and return nothing to let it go. A hook that throws keeps the upload; the error is logged.
 */
export type OnUploadExpire = (upload: UploadInfo, store: DataStore) => Awaitable<boolean | undefined | void>

/** How onUploadComplete shapes the response to the request that completed the upload. */
export interface UploadResponse {
  /** A 2xx status instead of 201 (POST) / 204 (PATCH); 200 by default when a body is given to a PATCH. */
  status?: number
  /**
   * Extra headers; the protocol's own (Upload-*, Tus-*, Location, Content-Length...) cannot be replaced. A list sends
   * the field once per value (several `Set-Cookie`s).
   */
  headers?: Record<string, string | readonly string[]>
  /** A small body (at most 64 KiB). */
  body?: string | Buffer
}

/**
 * What one request did to an upload: `request.tus` (null on requests that touched none, such as OPTIONS or
 * a refused creation). Set by the plugin for every tus route and both protocols, readable in the app's hooks
 * (`onResponse`, `onSend`, an error handler) and in the upload hooks.
 */
export interface TusRequestUpload {
  /** The id of the upload the request addressed or created. */
  id: string
  /** The upload as the request last saw it: after its bytes are stored, completion, termination. */
  upload: UploadInfo
  /** The request created the upload. */
  created: boolean
  /** Bytes of this request that reached the upload (0 when it carried none, or none were kept). */
  bytesStored: number
  /** The request made the upload it addressed (`id`) complete: onUploadComplete ran in it for that upload. */
  completed: boolean
  /** The request removed the upload (DELETE). */
  terminated: boolean
  /**
   * The final uploads (concatenation) this request completed besides the one it addressed, as completed
   * (onUploadComplete ran in it for each): the finals waiting for the partial a PATCH completes, say. Mostly empty.
   */
  finalsCompleted: UploadInfo[]
}

/** What `generateUrl` builds an upload's URL from. */
export interface UploadUrlParts {
  /** `http` or `https`: as Fastify reads the request under trustProxy (the proxy's only when trusted). */
  proto: string
  /** The Host (HTTP/2: :authority; a trusted proxy's X-Forwarded-Host); undefined when none is valid. */
  host: string | undefined
  /** The creation endpoint's path for this request, route parameters filled in (`/product/42/images`). */
  path: string
  id: string
}

/**
 * Builds the URL of a new upload (the `Location` of a creation), e.g. on another host or with a signed query. The
 * upload must still be reachable at `<path>/<id>` through the tus routes (a proxy may rewrite to it). Synchronous.
 */
export type GenerateUrl = (request: FastifyRequest, parts: UploadUrlParts) => string

/**
 * `maxSize` as a function of the request (a quota per user or plan): the largest upload this request may create
 * or grow, in bytes, announced in its own OPTIONS answer. Throw a 4xx error to refuse the request.
 */
export type MaxSizeOf = (request: FastifyRequest) => Awaitable<number>

/**
 * The upload id in an upload URL's last path segment, the reverse of `generateUrl` (@tus/server's
 * `getFileIdFromRequest`): e.g. decode an id that `generateUrl` encoded. Undefined: no upload (404).
 */
export type GetUploadIdFromRequest = (request: FastifyRequest, lastPath: string) => string | undefined

/** An error answer as the plugin is about to send it; `formatError` may give it another body. */
export interface TusErrorAnswer {
  /** The protocol the request spoke: `tus`, or `ietf-draft` (also when it named a draft version the server does not accept). */
  protocol: 'tus' | 'ietf-draft'
  /** The status sent (already set, with the protocol's headers; `formatError` changes only the body). */
  status: number
  /** The text a client may read: the error's message, never the internals of a 5xx. */
  message: string
  /** The body and Content-Type the plugin sends when `formatError` returns undefined. */
  body: string | Buffer
  contentType: string
  /** The draft's problem type (RFC 9457 `type` URI) when `body` is the draft's problem details for it. */
  problemType?: string
}

/** The body (and its Content-Type) of an error answer, as the app wants it. */
export interface TusErrorBody {
  body: string | Buffer
  contentType: string
}

/**
 * Gives the body of every error answer of the tus routes, in both protocols: return a body, or undefined to keep
 * the plugin's (`answer.body`). Status and protocol headers (Upload-Offset, Tus-Resumable, Upload-Limit ...) stay.
 */
export type FormatError = (error: TusHttpError, request: FastifyRequest, answer: TusErrorAnswer) => TusErrorBody | undefined
