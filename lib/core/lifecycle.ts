import type { FastifyRequest } from 'fastify'
import { TusErrors, refusalStatus, withFacts } from '../errors.js'
import { isValidDirectory, isValidUploadId } from '../ids.js'
import { nearestName } from '../known-keys.js'
import { isMetadataKey } from '../metadata.js'
import { notify } from '../observe/events.js'
import type { NewUpload, UploadInfo, UploadMetadata, WriteOptions } from '../store/types.js'
import type { UploadAction, UploadCreateChanges, UploadResponse } from '../types.js'
import type { BoundedBody } from './body.js'
import type { TusServices } from './services.js'
import { noteCompleted, noteCreated, noteTerminated, touchUpload } from './touched.js'

/**
 * The lifecycle hooks and the one place each of them runs. The operations (lib/core/operations.ts), which
 * every protocol (tus 1.0 and the IETF draft) goes through, call these functions, so every hook sees every upload the same way. One rule for errors
 * (`hookError`, which `auth` and a `maxSize` function go through too): an error or an object with an HTTP error
 * `statusCode` reaches the client with it; any other error is logged and answered 500 FST_TUS_HOOK_FAILED naming the hook. Stored bytes are never removed by a hook error.
 */

const MAX_RESPONSE_BODY = 64 * 1024
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const PROTECTED_HEADER = /^(upload-|tus-|location$|content-length$|transfer-encoding$|connection$|cache-control$)/i

/** Runs onUploadCreate and resolves with the upload to create, changes applied and validated. */
export async function prepareUpload (services: TusServices, request: FastifyRequest, proposed: NewUpload): Promise<NewUpload> {
  const hook = services.options.onUploadCreate
  if (hook === undefined) return proposed
  let changes: UploadCreateChanges | undefined | void
  try {
    changes = await hook(proposed, request)
  } catch (error) {
    throw hookError('onUploadCreate', error, request)
  }
  const fail = (problem: string): Error => new TusErrors.HOOK_RESULT_INVALID('onUploadCreate', problem)
  // The upload it was given, changed in place, is an answer too: its other keys are the upload's own.
  const shape = changes === proposed ? undefined : shapeProblem(changes, ['id', 'metadata', 'directory'])
  if (shape !== undefined) throw fail(shape)
  // Validated after merging: a hook that changed `upload` in place instead of returning changes is checked too.
  const upload: NewUpload = { ...proposed, ...pick(changes ?? {}) }
  if (typeof upload.id !== 'string' || !isValidUploadId(upload.id)) throw fail('it returned an invalid id (1-128 of A-Z a-z 0-9 _ -)')
  const { maxIdLength } = services.options
  if (upload.id.length > maxIdLength) throw fail(`it returned an id longer than ${maxIdLength} characters, Fastify's maxParamLength: the upload could not be reached`)
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
export async function storeUpload (services: TusServices, request: FastifyRequest, upload: NewUpload, held?: WriteOptions): Promise<UploadInfo> {
  const created = await services.store.create(upload, held)
  noteCreated(request, created)
  services.metrics.uploadsCreated++
  notify(services.events, request.log, 'created', created, request)
  return created
}

/**
 * Calls onUploadProgress (and emits `progress`) as the bytes of one request are stored. `track` wraps
 * the body: when the hook stops the upload the body simply ends, so the store keeps what it wrote, and
 * `stopped` holds the error to answer with.
 *
 * The protocol's own reports (`onProgress`: the draft's 104s, whose `Upload-Offset` acknowledges bytes a client may
 * then free) carry only what the store said it holds (`stored`, given to it as WriteOptions.onStored): never bytes
 * still queued or buffered in memory, which a crash or a failing backend loses, nor bytes that may yet be dropped
 * (a staged body, or a chunked one checked once it has ended: their writes get no `stored`).
 */
export class ProgressTracker {
  stopped: Error | undefined
  readonly #services: TusServices
  readonly #request: FastifyRequest
  readonly #upload: UploadInfo
  readonly #onProgress: ((upload: UploadInfo) => void) | undefined
  /** The upload's offset as the store last said it holds it (WriteOptions.onStored). */
  #acknowledged: number
  #stored = 0
  #reported = 0
  #lastReport = 0

  /** `onProgress`: the protocol's own reporting (the draft's 104s), called with every report. */
  constructor (services: TusServices, request: FastifyRequest, upload: UploadInfo, onProgress?: (upload: UploadInfo) => void) {
    this.#services = services
    this.#request = request
    this.#upload = upload
    this.#onProgress = onProgress
    this.#acknowledged = upload.offset
  }

  /** The store holds the upload up to `offset` (WriteOptions.onStored). */
  readonly stored = (offset: number): void => {
    if (offset > this.#acknowledged) this.#acknowledged = offset
  }

  /**
   * The body's chunks within its limit, with the reports as they pass. `onChunk`: told the length of each chunk
   * once the store has taken it (and asked for the next).
   *
   * A hand-written iterator rather than an async generator: every chunk of every upload passes here, and a
   * generator's `yield` inside a `for await` costs several promises and objects per chunk (a quarter of the
   * JavaScript garbage of a large body, by bench/probe.ts's allocation sampling). Here a chunk costs the body's
   * own promise and one `then`; a report (at most one per progressInterval) goes through the hook's promise.
   */
  track (body: BoundedBody, onChunk?: (bytes: number) => void): AsyncIterable<Buffer> {
    const source = body.chunks()
    const chunks: Iterator<Buffer> | AsyncIterator<Buffer> = Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : source[Symbol.iterator]()
    const reporting = this.#upload.offset !== this.#upload.size
    const interval = this.#services.options.progressInterval
    const end: IteratorResult<Buffer> = { value: undefined, done: true }
    let started = false
    let ended = false
    /** The chunk last handed out, until the store asks for the next: its admitted and its received length (-1: none). */
    let admitted = 0
    let received = -1
    const finish = (): IteratorResult<Buffer> => {
      ended = true
      return end
    }
    const take = (result: IteratorResult<Buffer>): IteratorResult<Buffer> => {
      if (result.done === true) return finish()
      const chunk = result.value
      const part = body.admit(chunk)
      if (part === undefined) return finish()
      admitted = part.length
      received = chunk.length
      return part === chunk ? result : { value: part, done: false }
    }
    const read = (): Promise<IteratorResult<Buffer>> => Promise.resolve(chunks.next()).then(take)
    const proceed = (go: boolean): Promise<IteratorResult<Buffer>> => go ? read() : Promise.resolve(finish())
    /** The store asked for more, so it has taken the last chunk: count it, and report when it is time. */
    const taken = (): boolean | Promise<boolean> => {
      if (received < 0) return true
      const length = received
      received = -1
      onChunk?.(admitted)
      if (body.exceeded) return false
      if (!reporting) return true
      // The FileStore may still hold up to 128 KiB of taken chunks in its write queue, so a crash can lose bytes
      // a progress report already counted.
      this.#stored += length
      return Date.now() - this.#lastReport >= interval ? this.#report() : true
    }
    const iterator: AsyncIterator<Buffer> = {
      next: () => {
        if (ended) return Promise.resolve(end)
        if (!started) {
          started = true
          if (reporting) return this.#report().then(proceed)
          return read()
        }
        const go = taken()
        return typeof go === 'boolean' ? proceed(go) : go.then(proceed)
      },
      return: async () => finish()
    }
    return { [Symbol.asyncIterator]: () => iterator }
  }

  /**
   * The report of where the upload stands once the request is done with it, unless the last report said so already
   * or the upload is complete (completion follows): bytes committed from staging, or counted and then cut off again.
   * When the last report said so, the protocol's own report still follows the store's acknowledgement (`stored`).
   */
  async finish (offset: number): Promise<void> {
    const stored = offset - this.#upload.offset
    if (this.stopped !== undefined || offset === this.#upload.size) return
    if (stored !== this.#reported) {
      this.#stored = stored
      await this.#report()
    } else {
      // The hook heard of these bytes as they arrived; the protocol's report acknowledges them once stored.
      this.#onProgress?.({ ...this.#upload, offset: Math.min(offset, this.#acknowledged), modifiedAt: new Date() })
    }
  }

  async #report (): Promise<boolean> {
    this.#lastReport = Date.now()
    this.#reported = this.#stored
    const upload: UploadInfo = { ...this.#upload, offset: this.#upload.offset + this.#stored, modifiedAt: new Date() }
    const hook = this.#services.options.onUploadProgress
    if (hook !== undefined) {
      try {
        refuseReturned('onUploadProgress', await hook(upload, this.#request))
      } catch (error) {
        this.stopped = hookError('onUploadProgress', error, this.#request)
        return false
      }
    }
    notify(this.#services.events, this.#request.log, 'progress', upload, this.#request)
    this.#onProgress?.(upload.offset <= this.#acknowledged ? upload : { ...upload, offset: this.#acknowledged })
    return true
  }
}

/**
 * Runs onUploadComplete for an upload whose last byte just became durable (the caller holds the lock
 * and calls this once per upload: when a request turns it complete), then counts it and emits `completed`
 * whether the hook succeeded or not. Resolves with the response the hook asked for, if any.
 */
export async function completeUpload (services: TusServices, request: FastifyRequest, upload: UploadInfo): Promise<UploadResponse | undefined> {
  const hook = services.options.onUploadComplete
  try {
    if (hook === undefined) return undefined
    let response: UploadResponse | undefined | void
    try {
      response = await hook(upload, request)
    } catch (error) {
      throw uploadFailed(services, request, upload, withFacts(hookError('onUploadComplete', error, request), { offset: upload.offset }))
    }
    if (response === undefined || response === null) return undefined
    const problem = responseProblem(response)
    if (problem !== undefined) {
      throw uploadFailed(services, request, upload, withFacts(new TusErrors.HOOK_RESULT_INVALID('onUploadComplete', problem), { offset: upload.offset }))
    }
    return response
  } finally {
    noteCompleted(request, upload)
    services.metrics.uploadsCompleted++
    services.metrics.sizeUpload(upload.size ?? upload.offset)
    notify(services.events, request.log, 'completed', upload, request)
  }
}

/** Runs onUploadAccess: the app's say on whether this request may act on this upload. */
export async function checkAccess (services: TusServices, request: FastifyRequest, upload: UploadInfo, action: UploadAction): Promise<void> {
  const hook = services.options.onUploadAccess
  if (hook === undefined) return
  try {
    refuseReturned('onUploadAccess', await hook(upload, action, request))
  } catch (error) {
    throw hookError('onUploadAccess', error, request)
  }
}

/** Runs onUploadTerminate, removes the upload (the caller holds its lock), counts it and emits `terminated`. */
export async function terminateUpload (services: TusServices, request: FastifyRequest, upload: UploadInfo): Promise<void> {
  touchUpload(request, upload)
  const hook = services.options.onUploadTerminate
  if (hook !== undefined) {
    try {
      refuseReturned('onUploadTerminate', await hook(upload, request))
    } catch (error) {
      throw hookError('onUploadTerminate', error, request)
    }
  }
  await services.store.terminate(upload.id)
  noteTerminated(request, upload)
  services.metrics.uploadsTerminated++
  notify(services.events, request.log, 'terminated', upload, request)
}

/** A request storing bytes ends in `error`: counted, and the `failed` event. Returns the error to throw. */
export function uploadFailed (services: TusServices, request: FastifyRequest, upload: UploadInfo, error: unknown): unknown {
  services.metrics.uploadFailures++
  const failure = error instanceof Error ? error : new Error(String(error))
  notify(services.events, request.log, 'failed', failure, upload, request)
  return error
}

/**
 * What a hook's throw is answered with, the one rule for every hook that may refuse a request (`auth`, a `maxSize`
 * function, the lifecycle hooks, the tusd hooks through them), in every protocol: an error with an HTTP error status
 * (a 401 or 403 refusal, a 503 with Retry-After for back-pressure, a 507 quota) as thrown, its headers included; a
 * plain object with one (`throw { statusCode: 401, message }`) as an Error saying the same; anything else (no status,
 * one that is no integer from 400 to 599) logged and wrapped as FST_TUS_HOOK_FAILED (500) naming the hook. The
 * message of what the hook threw stays in the log: a crash can tell internals (hosts, queries) no client may read.
 */
export function hookError (name: string, error: unknown, request: FastifyRequest): Error {
  const status = refusalStatus(error)
  if (status !== undefined) return sendable(name, error instanceof Error ? error : refusalOf(error as Record<string, unknown>, status), request)
  request.log.error({ err: error }, `fastify-tus: ${name} failed`)
  return new TusErrors.HOOK_FAILED(name)
}

/**
 * What a hook that refuses by throwing (`auth`, `onUploadAccess`, `onUploadTerminate`, `onUploadProgress`) returned:
 * nothing, or `true` (a predicate letting the request in), goes on; anything else fails closed, `500 <hook> failed`
 * saying how to refuse. A predicate's `false` (`(upload, action, request) => upload.metadata.owner === request.user.id`:
 * TypeScript accepts a function returning a boolean where one returning void is expected), an error returned instead of
 * thrown, or a value such as `null` for "no user", refused nothing: every user was let in.
 */
export function refuseReturned (name: string, returned: unknown): void {
  if (returned === undefined || returned === true) return
  const how = 'throw to refuse (an error with a statusCode, e.g. 403)'
  if (returned === false) throw new TusErrors.HOOK_RESULT_INVALID(name, `it returned false, which refuses nothing: ${how}`)
  const what = returned instanceof Error ? 'an error' : returned === null ? 'null' : `a value of type ${typeof returned}`
  throw new TusErrors.HOOK_RESULT_INVALID(name, `it returned ${what}, which refuses nothing: return nothing to let the request in, ${how}`)
}

/**
 * A refusal with only the headers its answer may carry: the protocol's own (`Upload-Offset`, `Content-Length`,
 * `Transfer-Encoding`...) and malformed ones are left out, with a warning. Sent, they would contradict the answer or
 * break it (a `Content-Length` beside `Transfer-Encoding: chunked`, which proxies read two ways), or make Fastify
 * answer 500 of its own. A hook that rethrows an upstream server's error, headers and all, does that. Numbers are
 * sent as text (`Retry-After: 7`). The refusal stands.
 */
function sendable (name: string, refusal: Error & { headers?: unknown }, request: FastifyRequest): Error {
  const { headers } = refusal
  if (headers === undefined) return refusal
  const kept: Record<string, string | string[]> = {}
  const dropped: string[] = []
  for (const [field, value] of typeof headers === 'object' && headers !== null ? Object.entries(headers) : []) {
    const text = typeof value === 'number' && Number.isFinite(value) ? String(value) : value as unknown
    if (headerProblem(field, text) === undefined) kept[field] = text as string | string[]
    else dropped.push(field.slice(0, 64))
  }
  if (typeof headers !== 'object' || headers === null || Array.isArray(headers)) dropped.push(`headers: ${headers === null ? 'null' : typeof headers}`)
  if (dropped.length === 0) return refusal
  request.log.warn({ dropped }, `fastify-tus: ${name} refused with headers its answer may not carry; sent without them`)
  return Object.assign(refusal, { headers: kept })
}

function refusalOf (thrown: Record<string, unknown>, statusCode: number): Error {
  const { message, code, headers } = thrown
  const refusal: Error & { statusCode: number, code?: string, headers?: Record<string, string> } =
    Object.assign(new Error(typeof message === 'string' ? message : ''), { statusCode })
  if (typeof code === 'string') refusal.code = code
  if (typeof headers === 'object' && headers !== null) refusal.headers = headers as Record<string, string>
  return refusal
}

function isMetadata (value: unknown): value is UploadMetadata {
  return typeof value === 'object' && value !== null && !Array.isArray(value) &&
    Object.entries(value).every(([key, item]) => isMetadataKey(key) && typeof item === 'string')
}

/**
 * Why a hook's answer is not a plain object of `known` keys, or nothing: a misspelt key (`metdata`) would otherwise be
 * ignored without a word, and the upload made or answered as if the hook had not asked.
 */
function shapeProblem (answer: unknown, known: readonly string[]): string | undefined {
  if (answer === undefined || answer === null) return undefined
  const prototype: unknown = typeof answer === 'object' ? Object.getPrototypeOf(answer) : undefined
  if (prototype !== Object.prototype && prototype !== null) return 'it must return a plain object or nothing'
  for (const key of Object.keys(answer)) {
    if (known.includes(key)) continue
    const near = nearestName(key, known)
    return `it returned an unknown key ${JSON.stringify(key)}${near === undefined ? '' : ` (did you mean ${JSON.stringify(near)}?)`}; it may return ${known.join(', ')}`
  }
  return undefined
}

function responseProblem (response: UploadResponse): string | undefined {
  const shape = shapeProblem(response, ['status', 'headers', 'body'])
  if (shape !== undefined) return shape
  const { status, headers, body } = response
  if (status !== undefined && typeof status !== 'number') return `status must be a number (got ${typeof status})`
  if (status !== undefined && !(Number.isInteger(status) && status >= 200 && status <= 299)) return `status ${String(status)} is not a 2xx status`
  if (body !== undefined) {
    if (typeof body !== 'string' && !Buffer.isBuffer(body)) return 'body must be a string or a Buffer'
    if (Buffer.byteLength(body) > MAX_RESPONSE_BODY) return `body is larger than ${MAX_RESPONSE_BODY} bytes`
    if (status === 204) return 'a 204 response cannot have a body'
  }
  for (const [name, value] of Object.entries(headers ?? {})) {
    const problem = headerProblem(name, value)
    if (problem !== undefined) return problem
  }
  return undefined
}

/** Why a header a hook gives may not go out: a malformed name or value, or a header of the protocol's own. */
function headerProblem (name: string, value: unknown): string | undefined {
  const values: unknown[] = Array.isArray(value) ? value : [value]
  if (!HEADER_NAME.test(name) || values.length === 0 || values.some((each) => typeof each !== 'string' || /[\r\n\0]/.test(each))) return `header "${name.slice(0, 64)}" is invalid`
  if (PROTECTED_HEADER.test(name)) return `header "${name}" belongs to the protocol`
  return undefined
}
