import type { FastifyReply, FastifyRequest } from 'fastify'
import type { BoundedBody } from './body.js'
import type { TusContext } from './context.js'
import { TusErrors } from './errors.js'
import { notify } from './events.js'
import { isValidDirectory, isValidUploadId } from './ids.js'
import { isMetadataKey } from './metadata.js'
import type { NewUpload, UploadInfo, UploadMetadata } from './store/types.js'

/**
 * The lifecycle hooks and the one place each of them runs. Handlers of every protocol (tus 1.0 and the
 * IETF draft) call these functions, so every hook sees every upload the same way. One rule for errors:
 * an error with a 4xx `statusCode` reaches the client as thrown (status and message); any other error is
 * logged and answered 500 FST_TUS_HOOK_FAILED naming the hook. Stored bytes are never removed by a hook error.
 */

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
/** Before a DELETE removes an upload: throw to refuse it. */
export type OnUploadTerminate = (upload: UploadInfo, request: FastifyRequest) => Awaitable<void>

/** How onUploadComplete shapes the response to the request that completed the upload. */
export interface UploadResponse {
  /** A 2xx status instead of 201 (POST) / 204 (PATCH); 200 by default when a body is given to a PATCH. */
  status?: number
  /** Extra headers; the protocol's own (Upload-*, Tus-*, Location, Content-Length...) cannot be replaced. */
  headers?: Record<string, string>
  /** A small body (at most 64 KiB). */
  body?: string | Buffer
}

const MAX_RESPONSE_BODY = 64 * 1024
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const PROTECTED_HEADER = /^(upload-|tus-|location$|content-length$|transfer-encoding$|connection$|cache-control$)/i

/** Runs onUploadCreate and resolves with the upload to create, changes applied and validated. */
export async function prepareUpload (context: TusContext, request: FastifyRequest, proposed: NewUpload): Promise<NewUpload> {
  const hook = context.options.onUploadCreate
  if (hook === undefined) return proposed
  let changes: UploadCreateChanges | undefined | void
  try {
    changes = await hook(proposed, request)
  } catch (error) {
    throw hookError('onUploadCreate', error, request)
  }
  const fail = (problem: string): Error => hookError('onUploadCreate', new Error(problem), request)
  if (changes !== undefined && changes !== null && typeof changes !== 'object') throw fail('it must return an object or nothing')
  // Validated after merging: a hook that changed `upload` in place instead of returning changes is checked too.
  const upload: NewUpload = { ...proposed, ...pick(changes ?? {}) }
  if (typeof upload.id !== 'string' || !isValidUploadId(upload.id)) throw fail('it returned an invalid id (1-128 of A-Z a-z 0-9 _ -)')
  if (!isMetadata(upload.metadata)) throw fail('it returned invalid metadata (string values, keys without space or comma)')
  if (upload.directory !== undefined && (typeof upload.directory !== 'string' || !isValidDirectory(upload.directory))) {
    throw fail('it returned an invalid directory (up to 8 "/"-separated segments of A-Z a-z 0-9 _ -)')
  }
  return { ...upload, metadata: { ...upload.metadata } }
}

function pick ({ id, metadata, directory }: UploadCreateChanges): UploadCreateChanges {
  return { ...(id === undefined ? {} : { id }), ...(metadata === undefined ? {} : { metadata }), ...(directory === undefined ? {} : { directory }) }
}

/** Stores a prepared upload (the caller holds its lock), counts it and emits `created`. */
export async function createUpload (context: TusContext, request: FastifyRequest, upload: NewUpload): Promise<UploadInfo> {
  const created = await context.store.create(upload)
  context.metrics.uploadsCreated++
  notify(context.events, request.log, 'created', created)
  return created
}

/**
 * Calls onUploadProgress (and emits `progress`) as the bytes of one request are stored. `track` wraps
 * the body: when the hook stops the upload the body simply ends, so the store keeps what it wrote, and
 * `stopped` holds the error to answer with.
 */
export class ProgressTracker {
  stopped: Error | undefined
  readonly #context: TusContext
  readonly #request: FastifyRequest
  readonly #upload: UploadInfo
  #stored = 0
  #reported = 0
  #lastReport = 0

  constructor (context: TusContext, request: FastifyRequest, upload: UploadInfo) {
    this.#context = context
    this.#request = request
    this.#upload = upload
  }

  async * track (body: BoundedBody): AsyncIterable<Buffer> {
    // One generator for both the limit and the reports: a layer per chunk less on the hot path.
    const reporting = this.#upload.offset !== this.#upload.size
    if (reporting && !await this.#report()) return
    const interval = this.#context.options.progressInterval
    for await (const chunk of body.chunks()) {
      const admitted = body.admit(chunk)
      if (admitted !== undefined) yield admitted
      if (body.exceeded) return
      if (!reporting) continue
      // Resumed by the store asking for more: this chunk has been handed over (the FileStore may still hold up to
      // 128 KiB of them in its write queue, so a crash can lose bytes a progress report already counted).
      this.#stored += chunk.length
      if (Date.now() - this.#lastReport >= interval && !await this.#report()) return
    }
  }

  /** The report after the request's last byte, unless that byte completed the upload (completion follows). */
  async finish (offset: number): Promise<void> {
    if (this.stopped !== undefined || offset === this.#upload.size || this.#stored === this.#reported) return
    this.#stored = offset - this.#upload.offset
    await this.#report()
  }

  async #report (): Promise<boolean> {
    this.#lastReport = Date.now()
    this.#reported = this.#stored
    const upload: UploadInfo = { ...this.#upload, offset: this.#upload.offset + this.#stored, modifiedAt: new Date() }
    const hook = this.#context.options.onUploadProgress
    if (hook !== undefined) {
      try {
        await hook(upload, this.#request)
      } catch (error) {
        this.stopped = hookError('onUploadProgress', error, this.#request)
        return false
      }
    }
    notify(this.#context.events, this.#request.log, 'progress', upload)
    return true
  }
}

/**
 * Runs onUploadComplete for an upload whose last byte just became durable (the caller holds the lock
 * and calls this once per upload: when a request turns it complete), then counts it and emits `completed`
 * whether the hook succeeded or not. Resolves with the response the hook asked for, if any.
 */
export async function completeUpload (context: TusContext, request: FastifyRequest, upload: UploadInfo): Promise<UploadResponse | undefined> {
  const hook = context.options.onUploadComplete
  try {
    if (hook === undefined) return undefined
    let response: UploadResponse | undefined | void
    try {
      response = await hook(upload, request)
    } catch (error) {
      context.metrics.uploadFailures++
      throw withOffset(hookError('onUploadComplete', error, request), upload.offset)
    }
    if (response === undefined || response === null) return undefined
    const problem = responseProblem(response)
    if (problem !== undefined) {
      context.metrics.uploadFailures++
      throw withOffset(hookError('onUploadComplete', new Error(problem), request), upload.offset)
    }
    return response
  } finally {
    context.metrics.uploadsCompleted++
    notify(context.events, request.log, 'completed', upload)
  }
}

/** Sends the final answer of a request that stored bytes: `status`, or what onUploadComplete asked for. */
export async function sendUploadResponse (reply: FastifyReply, status: number, response: UploadResponse | undefined): Promise<void> {
  if (response === undefined) {
    await reply.code(status).send()
    return
  }
  if (response.headers !== undefined) reply.headers(response.headers)
  const bodyStatus = status === 204 && response.body !== undefined ? 200 : status
  await reply.code(response.status ?? bodyStatus).send(response.body)
}

/** Runs onUploadTerminate, removes the upload (the caller holds its lock), counts it and emits `terminated`. */
export async function terminateUpload (context: TusContext, request: FastifyRequest, upload: UploadInfo): Promise<void> {
  const hook = context.options.onUploadTerminate
  if (hook !== undefined) {
    try {
      await hook(upload, request)
    } catch (error) {
      throw hookError('onUploadTerminate', error, request)
    }
  }
  await context.store.terminate(upload.id)
  context.metrics.uploadsTerminated++
  notify(context.events, request.log, 'terminated', upload)
}

/** Adds the upload's offset to an error's headers, so a client knows where it stands. */
export function withOffset<E extends Error> (error: E, offset: number): E {
  const headers = (error as { headers?: Record<string, string> }).headers
  return Object.assign(error, { headers: { ...headers, 'Upload-Offset': String(offset) } })
}

/** A 4xx refusal as thrown; anything else logged and wrapped as FST_TUS_HOOK_FAILED (500). */
function hookError (name: string, error: unknown, request: FastifyRequest): Error {
  const status = (error as { statusCode?: unknown } | undefined)?.statusCode
  if (error instanceof Error && typeof status === 'number' && status >= 400 && status < 500) return error
  request.log.error({ err: error }, `fastify-tus: ${name} failed`)
  return new TusErrors.HOOK_FAILED(name, error instanceof Error ? error.message : String(error))
}

function isMetadata (value: unknown): value is UploadMetadata {
  return typeof value === 'object' && value !== null && !Array.isArray(value) &&
    Object.entries(value).every(([key, item]) => isMetadataKey(key) && typeof item === 'string')
}

function responseProblem (response: UploadResponse): string | undefined {
  if (typeof response !== 'object') return 'it must return an object or nothing'
  const { status, headers, body } = response
  if (status !== undefined && !(Number.isInteger(status) && status >= 200 && status <= 299)) return `status ${String(status)} is not a 2xx status`
  if (body !== undefined) {
    if (typeof body !== 'string' && !Buffer.isBuffer(body)) return 'body must be a string or a Buffer'
    if (Buffer.byteLength(body) > MAX_RESPONSE_BODY) return `body is larger than ${MAX_RESPONSE_BODY} bytes`
    if (status === 204) return 'a 204 response cannot have a body'
  }
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (!HEADER_NAME.test(name) || typeof value !== 'string' || /[\r\n\0]/.test(value)) return `header "${name.slice(0, 64)}" is invalid`
    if (PROTECTED_HEADER.test(name)) return `header "${name}" belongs to the protocol`
  }
  return undefined
}
