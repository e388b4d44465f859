import type { FastifyRequest } from 'fastify'
import type { Readable } from 'node:stream'
import { TusDraftErrors, TusErrors, withFacts, type TusHttpError } from '../errors.js'
import { newUploadId } from '../ids.js'
import type { UploadLock } from '../lockers/lock.js'
import type { ByteRange, UploadConcat, UploadInfo, UploadMetadata, WriteOptions } from '../store/types.js'
import type { UploadResponse } from '../types.js'
import { appendBody, ensureRoom, offsetStored, storeFailure } from './append.js'
import { cutShort, RequestBody } from './body.js'
import { headerChecksum } from './checksum.js'
import { finishFinal, finishFinalsAfterHold, finishFinalsWaitingOn, partialUpload, withPartials } from './finals.js'
import { completeUpload, prepareUpload, storeUpload, terminateUpload } from './lifecycle.js'
import { bringsBytes, contentLength, hasBody } from './request.js'
import { heldBy, lockUpload, type TusServices } from './services.js'
import { waitingFinals } from './pending-finals.js'
import { touched } from './touched.js'
import { admitBeforeLock, expiresAt, isComplete, loadFor, loadSettled, stillAdmitted, underLock } from './uploads.js'

/**
 * The operations on uploads, each written once for every protocol. A protocol (lib/tus, lib/ietf) reads its
 * headers into one of these requests, calls the operation, and writes the outcome in its own headers. Each
 * operation owns the whole step: the lock, the load, every check, the store calls, the hooks, events and
 * metrics, and completion. None of them knows a header name or a reply.
 */

/** What an operation that may store bytes ends with. */
export interface UploadOutcome {
  upload: UploadInfo
  /** This request made the upload complete. */
  completed: boolean
  /** What onUploadComplete asked the response to be. */
  response?: UploadResponse | undefined
}

/** Reporting a protocol does while bytes arrive (the draft's 104 interim responses). */
export interface ProgressListener {
  onProgress?: ((upload: UploadInfo) => void) | undefined
}

export interface CreateRequest extends ProgressListener {
  /** The declared length; undefined while it is unknown (deferred, or left to a completing body). */
  size: number | undefined
  metadata: UploadMetadata
  /** A partial upload, or a final one made of partials (whose length is the sum of theirs). */
  concat?: UploadConcat | undefined
  /** The body ends the upload: once it has arrived whole, the length is what was stored. */
  completes?: boolean | undefined
  /** The length is where the completing body ends (Content-Length), the request sent none. */
  lengthFromBody?: boolean | undefined
  /** Called once the upload exists, before a byte of the body is read. */
  onCreated?: ((upload: UploadInfo) => void) | undefined
}

export interface AppendRequest extends ProgressListener {
  /** Where the request says its bytes go. */
  offset: number
  /** A length the request declares (a deferred length arriving). */
  length?: number | undefined
  /** The length is where the completing body ends (Content-Length), the request sent none. */
  lengthFromBody?: boolean | undefined
  /** Whether the request says it ends the upload; undefined when its protocol has no way to say. */
  completes?: boolean | undefined
}

/** Creation, with the first bytes (or all of them) in the body when it has one. */
export async function createUpload (services: TusServices, request: FastifyRequest, input: CreateRequest): Promise<UploadOutcome> {
  if (input.concat?.type === 'final') return await createFinal(services, request, input, input.concat)
  const { maxSize } = services.options
  if (input.size !== undefined && input.size > maxSize) throw beyondMaxSize(input.size, maxSize, input.lengthFromBody)
  // Refused before anything is stored: a malformed or unsupported Upload-Checksum (400).
  headerChecksum(request)
  const bodyLength = contentLength(request)
  // Once the upload exists, a body the server ends (shutdown, idle, superseded) is answered all the same: the client
  // learns its upload's Location and offset rather than start over and leave it behind.
  if (request.body instanceof RequestBody) request.body.answerWhenReleased()
  // A creation that completes the upload at a length it declares, with a body whose size is known: both agree, or
  // it is refused before the upload exists (no upload left behind, no 104).
  const bodySize = hasBody(request) ? bodyLength : 0
  if (input.completes === true && input.size !== undefined && bodySize !== undefined && bodySize !== input.size) {
    throw new TusDraftErrors.INCONSISTENT_LENGTH(`the request completes the upload at ${bodySize} but declares a length of ${input.size}`)
  }
  ensureRoom(services, { size: input.size }, bodyLength ?? 0)
  const prepared = await prepareUpload(services, request, {
    id: newUploadId(), size: input.size, metadata: input.metadata, ...(input.concat === undefined ? {} : { concat: input.concat })
  })
  await services.diskReserve.claim(prepared.id, prepared.size ?? bodyLength ?? 0)

  const lock = await lockNewUpload(services, prepared.id, releaseBody(request)).catch(unclaimed(services, prepared.id))
  try {
    const held = heldBy(lock)
    const created = await storeUpload(services, request, prepared, held).catch(unclaimed(services, prepared.id))
    input.onCreated?.(created)
    return await settle(services, request, false, await receivedDespiteStore(receive(services, request, created, input, held), created))
  } finally {
    await lock.release()
  }
}

/** Append at `offset`. Every check runs before the first byte is read. */
export async function appendToUpload (services: TusServices, request: FastifyRequest, id: string, input: AppendRequest): Promise<UploadOutcome> {
  // A malformed or unsupported Upload-Checksum (400) is refused before the request waits for the lock: waiting asks
  // the request holding it to let go, and a request sure to be refused must never cut another's body.
  headerChecksum(request)
  const admitted = await admitBeforeLock(services, request, id, 'write')
  services.sharedReads.beforeWrite(id)
  const lock = await lockUpload(services, id, { onReleaseRequested: releaseBody(request) })
  let outcome: UploadOutcome
  try {
    const held = heldBy(lock)
    const found = await underLock(services, await services.store.getInfo(id, held), admitted)
    const upload = touched(request, found.completing === true ? await completePending(services, request, found, held) : found)
    try {
      if (upload.concat?.type === 'final') throw new TusErrors.FINAL_UPLOAD()
      if (input.offset !== upload.offset) {
        // Whether the upload is complete too: a client that lost the answer to its completing request must not be told
        // to resume it.
        const facts = { offset: upload.offset, providedOffset: input.offset, ...(isComplete(upload) ? { uploadComplete: true } : {}) }
        throw withFacts(new TusErrors.OFFSET_MISMATCH(input.offset, upload.offset), facts)
      }
      if (isComplete(upload) && (hasBody(request) || input.completes !== undefined)) {
        // A finished upload is never modified; an empty request of a protocol that cannot say more is a no-op.
        throw withFacts(new TusErrors.UPLOAD_COMPLETE(upload.offset), { offset: upload.offset, uploadComplete: true })
      }
      const announced = contentLength(request)
      const { declared, unrecorded } = input.length === undefined ? { declared: upload, unrecorded: false } : await declareLength(services, request, upload, input.length, input.completes === true, announced, input.lengthFromBody)
      await services.diskReserve.claim(id, announced ?? (declared.size === undefined ? 0 : declared.size - declared.offset))
      outcome = await settle(services, request, isComplete(upload), await receive(services, request, declared, { ...input, lengthUnrecorded: unrecorded }, held))
    } catch (error) {
      throw await withExpiry(services, upload, error)
    }
  } finally {
    await lock.release()
  }
  // Only a partial upload can have finals waiting for it (a final lists partials only): no look for the others.
  if (outcome.completed && outcome.upload.concat?.type === 'partial') await finishFinalsWaitingOn(services, request, id)
  return outcome
}

/**
 * An append refused or failed once its upload was read says when that upload, as it stands after the request,
 * expires: tus sends Upload-Expires with every PATCH answer of an upload that will expire (T-E-2), its errors too.
 * Bytes kept from a failed body moved its last write to now.
 */
async function withExpiry (services: TusServices, upload: UploadInfo, error: unknown): Promise<unknown> {
  // An error that cannot take a fact (frozen) is answered as it is.
  if (!(error instanceof Error) || !Object.isExtensible(error)) return error
  const { offset } = error as TusHttpError
  const standing = offset === undefined || offset === upload.offset ? upload : { ...upload, offset, modifiedAt: new Date() }
  // An unfinished final's expiry reads its partials: a failure to read them leaves the error as it was.
  const expires = await Promise.resolve(expiresAt(services, standing)).catch(() => undefined)
  return expires === undefined ? error : withFacts(error, { expires })
}

/** Offset retrieval: the upload once no request writes to it. A final whose partials are all complete is finished first. */
export async function readStatus (services: TusServices, request: FastifyRequest, id: string): Promise<UploadInfo> {
  const admitted = await admitBeforeLock(services, request, id, 'read')
  const checked = underLock(services, await loadSettled(services, id), admitted)
  // Without a call (and its promise) for the uploads that are neither unfinished finals nor completing: a HEAD is
  // mostly such small costs.
  const upload = checked instanceof Promise ? await checked : checked
  if (upload.completing === true) return touched(request, await finishCompletion(services, request, upload))
  return touched(request, isUnfinishedFinal(upload) ? await finishIfFinal(services, request, upload) : upload)
}

/**
 * The upload to download: 409 until it is complete. One that looks complete is read again under its lock, without
 * asking the holder to let go: the request that stored its last bytes holds the lock until they are checked (a
 * trailer checksum), flushed and completed, and a download must never send bytes that may yet be refused and cut
 * off. An incomplete upload is answered at once, whoever is writing to it.
 */
export async function readFinished (services: TusServices, request: FastifyRequest, id: string): Promise<UploadInfo> {
  const found = await finishIfFinal(services, request, await loadFor(services, request, id, 'read'))
  const settled = isComplete(found) ? await settledUnlessLockDown(services, found) : found
  const upload = touched(request, settled.completing === true ? await finishCompletion(services, request, settled) : settled)
  if (!isComplete(upload)) throw new TusErrors.NOT_COMPLETE(upload.offset, String(upload.size ?? 'unknown'))
  return upload
}

/**
 * The bytes of a finished upload as readFinished read it, whole or a range, once the store has opened them: 404 when
 * the upload is by then removed, or removed and made again under the same id (which onUploadCreate may choose). A
 * download holds no lock once its upload is read, and the bytes opened then may be another upload's, someone
 * else's maybe, under this one's name and length.
 */
export async function openFinished (services: TusServices, upload: UploadInfo, range?: ByteRange): Promise<Readable> {
  const body = await services.store.read(upload.id, range)
  // Any other failure to read it again leaves the bytes to the download's own check (a data file another tool made
  // longer or shorter is cut there).
  const now = await services.store.getInfo(upload.id).catch((error: TusHttpError) => {
    if (error.code === 'FST_TUS_NOT_FOUND') return undefined
    return upload
  })
  if (now === undefined || now.createdAt.getTime() !== upload.createdAt.getTime()) {
    body.destroy()
    throw new TusErrors.NOT_FOUND()
  }
  return body
}

/**
 * A complete upload read again under its lock; as first read when the lock service itself fails (a Redis outage):
 * finished uploads stay downloadable through it, the one case where a download does not wait for a request still
 * completing its upload.
 */
async function settledUnlessLockDown (services: TusServices, found: UploadInfo): Promise<UploadInfo> {
  try {
    return await underLock(services, await loadSettled(services, found.id, { requestRelease: false }), found)
  } catch (error) {
    if ((error as TusHttpError).code === 'FST_TUS_LOCK_FAILED') return found
    throw error
  }
}

/**
 * Termination: waits for (and first ends the body of) a running append, runs onUploadTerminate, removes everything.
 * An expired upload too (T-X-2: 204): its owner's removal must not wait for a sweep that may never run, or that
 * onUploadExpire may refuse.
 */
export async function removeUpload (services: TusServices, request: FastifyRequest, id: string): Promise<void> {
  const admitted = await admitBeforeLock(services, request, id, 'terminate')
  services.sharedReads.beforeWrite(id)
  const lock = await lockUpload(services, id)
  let kept: UploadInfo | undefined
  try {
    const upload = stillAdmitted(await services.store.getInfo(id), admitted)
    kept = upload
    await terminateUpload(services, request, upload)
    kept = undefined
    services.diskReserve.release(id)
  } finally {
    await lock.release()
    // Refused (onUploadTerminate) or failed: a complete partial held all along, maybe past a final's wait for it.
    if (kept !== undefined) await finishFinalsAfterHold(services, request, kept)
  }
}

/**
 * creation-defer-length: declares a deferred length, once a body of `announced` bytes fits in it. A request that
 * `completes` the upload ends it at that length: one whose body's size is known (none, or Content-Length) and ends
 * elsewhere is refused before anything. The length is recorded (receive) only once the body stands: a request
 * refused for its body (a checksum mismatch, a body that ends short of the length it completes, the progress hook, a
 * full disk) leaves the length unknown, as it was.
 */
async function declareLength (
  services: TusServices, request: FastifyRequest, upload: UploadInfo, length: number, completes: boolean, announced: number | undefined,
  fromBody: boolean | undefined
): Promise<{ declared: UploadInfo, unrecorded: boolean }> {
  const facts = { offset: upload.offset }
  const bodySize = hasBody(request) ? announced : 0
  if (completes && bodySize !== undefined && upload.offset + bodySize !== length) {
    throw withFacts(new TusDraftErrors.INCONSISTENT_LENGTH(`the request completes the upload at ${upload.offset + bodySize} but declares a length of ${length}`), facts)
  }
  if (upload.size !== undefined) {
    // A length read from where a completing body ends (no Upload-Length sent) is no attempt to change the length.
    if (upload.size !== length) {
      throw withFacts(fromBody === true ? new TusDraftErrors.COMPLETES_AT_WRONG_LENGTH(length, upload.size) : new TusErrors.LENGTH_ALREADY_SET(upload.size), facts)
    }
    return { declared: upload, unrecorded: false }
  }
  const { maxSize } = services.options
  if (length > maxSize) throw withFacts(beyondMaxSize(length, maxSize, fromBody), facts)
  if (length < upload.offset) throw withFacts(new TusErrors.LENGTH_BELOW_OFFSET(length, upload.offset), facts)
  ensureRoom(services, { offset: upload.offset, size: length }, announced ?? 0)
  return { declared: { ...upload, size: length }, unrecorded: true }
}

/** 413 for a length beyond maxSize, told as the request gave it: its Upload-Length, or where its completing body ends. */
function beyondMaxSize (length: number, maxSize: number, fromBody: boolean | undefined): Error {
  return fromBody === true ? new TusErrors.COMPLETED_BEYOND_MAX_SIZE(length, maxSize) : new TusErrors.MAX_SIZE_EXCEEDED(length, maxSize)
}

/**
 * Streams the body (if any) into the upload (lock held) and settles its length. A request that ends the
 * upload and arrived whole fixes a still unknown length at the bytes stored; one cut short leaves the upload
 * incomplete and resumable. Bytes reach the disk (flush) before the upload counts as complete.
 */
async function receive (
  services: TusServices, request: FastifyRequest, upload: UploadInfo,
  input: ProgressListener & { completes?: boolean | undefined, lengthUnrecorded?: boolean | undefined }, held?: WriteOptions
): Promise<UploadInfo> {
  const withBody = hasBody(request)
  let result = withBody ? await appendBody(services, request, upload, input, held) : upload
  // The length this request declared, recorded once its body stands (declareLength).
  if (input.lengthUnrecorded === true) await storeFailure(services, request, result, async () => { await services.store.declareLength(upload.id, upload.size!) })
  services.diskReserve.track(result)
  if (input.completes === true && !bodyCutShort(request)) {
    if (result.size === undefined) {
      await storeFailure(services, request, result, async () => { await services.store.declareLength(result.id, result.offset) })
      result = { ...result, size: result.offset }
    } else if (result.offset !== result.size) {
      // Only without a body: appendBody refuses (and drops) a whole body that ends short of a known length.
      throw withFacts(new TusDraftErrors.INCONSISTENT_LENGTH(`the request completes the upload but ${result.offset} of ${result.size} bytes are stored`), { offset: result.offset })
    }
  }
  // appendBody flushes when its bytes reach a length it knew; a length known only now, or no body, needs it here.
  if (isComplete(result) && (!withBody || upload.size === undefined || input.lengthUnrecorded === true)) {
    await storeFailure(services, request, result, async () => { await services.store.flush(result.id, held) })
  }
  return result
}

/**
 * The upload a creation's body was received into, also when the store failed while storing it (logged by
 * storeFailure): the upload exists and the store said what it holds, so the creation is answered as one, at that
 * offset (T-CU-3: creation-with-upload accepts what it can and says so). Its client then appends from there and meets
 * the store's failure, if it lasts, with the upload's offset; a failed creation it would send again, leaving this
 * upload behind each time. Still a failure (with the Location, to resume) when the store could not say what it holds,
 * or holds every byte: the upload is then not known to be complete (its completion failed), and must not be told so.
 */
async function receivedDespiteStore (receiving: Promise<UploadInfo>, created: UploadInfo): Promise<UploadInfo> {
  try {
    return await receiving
  } catch (error) {
    const stored = offsetStored(error)
    if (stored === undefined || (created.size !== undefined && stored >= created.size)) throw error
    return { ...created, offset: stored, modifiedAt: new Date() }
  }
}

/** Completion, once per upload, when this request made it complete. Partials never complete on their own (T-N-2). */
async function settle (services: TusServices, request: FastifyRequest, wasComplete: boolean, after: UploadInfo): Promise<UploadOutcome> {
  const completed = !wasComplete && isComplete(touched(request, after))
  if (!completed || after.concat?.type === 'partial') return { upload: after, completed }
  return { upload: after, completed, response: await completeUpload(services, request, after) }
}

async function createFinal (
  services: TusServices, request: FastifyRequest, input: CreateRequest, concat: UploadConcat & { type: 'final' }
): Promise<UploadOutcome> {
  if (await bringsBytes(request)) throw new TusErrors.INVALID_CONCAT('a final upload cannot carry a body')
  if (input.size !== undefined) throw new TusErrors.INVALID_CONCAT('a final upload takes its length from its partials: send no Upload-Length')
  // One small partial listed many times would make a large final from a few bytes sent.
  const { maxConcatReferences } = services.options
  if (concat.parts.length > maxConcatReferences) throw new TusErrors.INVALID_CONCAT(`a final upload may list at most ${maxConcatReferences} partial uploads`)
  const partials = await Promise.all(concat.parts.map(async (id) => await partialUpload(services, request, id)))
  const size = partials.reduce((sum, partial) => sum + (partial.size ?? 0), 0)
  const { maxSize } = services.options
  if (size > maxSize) throw new TusErrors.FINAL_BEYOND_MAX_SIZE(size, maxSize)
  const prepared = await prepareUpload(services, request, { id: newUploadId(), size, metadata: input.metadata, concat: withPartials(concat, partials) })
  // Claimed for the copy its creation makes when its partials are complete; a copy made later is checked by nobody.
  await services.diskReserve.claim(prepared.id, size)
  try {
    const lock = await lockNewUpload(services, prepared.id)
    let final: UploadInfo
    try {
      const held = heldBy(lock)
      final = await storeUpload(services, request, prepared, held)
      // Partials of length 0 make a final complete as it is created, with nothing to copy: it is completed here, under
      // the lock it was created with, as any upload created complete is (settle). Left to finishFinal, it would read
      // complete, as if completed already, and only a later read would complete it (when its store marks it completing).
      if (size === 0) {
        input.onCreated?.(final)
        await storeFailure(services, request, final, async () => { await services.store.flush(final.id, held) })
        return await settle(services, request, false, final)
      }
    } finally {
      await lock.release()
    }
    let outcome: UploadOutcome
    try {
      outcome = await finishFinal(services, request, final.id, services.options.lockTimeout) ?? { upload: final, completed: false }
    } catch (error) {
      // A partial removed since it was checked: the final exists all the same (its Location is sent); HEAD and GET say why it never completes.
      if ((error as TusHttpError).code !== 'FST_TUS_PARTIAL_GONE') throw await withoutUnfinishedFinal(services, request, final, error)
      outcome = { upload: final, completed: false }
    }
    // Only now: a final whose copy failed is removed, and no Location names it.
    input.onCreated?.(final)
    return outcome
  } finally {
    services.diskReserve.release(prepared.id)
  }
}

/**
 * A final whose creation failed while its partials' bytes were copied into it (a full disk, a store error): removed,
 * unless it was completed all the same (onUploadComplete failed after the copy). Its bytes are all its partials', which
 * stay: nothing is lost, and the client's retry makes a final of its own. Left, it would be an upload nobody knows the
 * Location of, half copied. Removal failing leaves it (the next read of it resumes the copy; it expires).
 */
async function withoutUnfinishedFinal (services: TusServices, request: FastifyRequest, final: UploadInfo, error: unknown): Promise<unknown> {
  try {
    const lock = await lockUpload(services, final.id, { requestRelease: false })
    try {
      const current = await services.store.getInfo(final.id, heldBy(lock))
      if (isComplete(current) || current.createdAt.getTime() !== final.createdAt.getTime()) return error
      await services.store.terminate(final.id)
      if (final.concat?.type === 'final') await waitingFinals(services.store, services.pendingFinals).remove(final.id, final.concat.parts).catch(() => undefined)
    } finally {
      await lock.release()
    }
    request.log.warn({ uploadId: final.id }, 'fastify-tus: the final upload whose concatenation failed was removed; its partials stay')
  } catch (removal) {
    request.log.error({ err: removal, uploadId: final.id }, 'fastify-tus: removing a final upload whose concatenation failed failed too')
  }
  return error
}

/** A final upload is finished by whichever request reads it once its partials are complete (after a restart, too). */
async function finishIfFinal (services: TusServices, request: FastifyRequest, upload: UploadInfo): Promise<UploadInfo> {
  if (!isUnfinishedFinal(upload)) return upload
  return (await finishFinal(services, request, upload.id, 1))?.upload ?? upload
}

/**
 * Completes an upload whose bytes are all stored but whose store did not complete it (its last request failed at
 * the completion: S3's CompleteMultipartUpload, or a crash), in whichever request reads it next, as finals are:
 * a client that saw the offset reach the length and stopped would otherwise have an upload never downloadable,
 * and an app never told of it.
 */
async function finishCompletion (services: TusServices, request: FastifyRequest, upload: UploadInfo): Promise<UploadInfo> {
  const lock = await lockUpload(services, upload.id, { requestRelease: false })
  let completed: UploadInfo
  try {
    const held = heldBy(lock)
    const current = await services.store.getInfo(upload.id, held)
    if (current.completing !== true || current.createdAt.getTime() !== upload.createdAt.getTime()) return current
    completed = await completePending(services, request, current, held)
  } finally {
    await lock.release()
  }
  if (completed.concat?.type === 'partial') await finishFinalsWaitingOn(services, request, completed.id)
  return completed
}

/** The completion of a `completing` upload (its lock held): the store's, then onUploadComplete, once. */
async function completePending (services: TusServices, request: FastifyRequest, upload: UploadInfo, held: WriteOptions): Promise<UploadInfo> {
  await services.store.flush(upload.id, held)
  const { completing: _, ...completed } = upload
  if (completed.concat?.type !== 'partial') await completeUpload(services, request, completed)
  return completed
}

function isUnfinishedFinal (upload: UploadInfo): boolean {
  return upload.concat?.type === 'final' && !isComplete(upload)
}

/**
 * The lock of an upload about to be created. onUploadCreate may choose its id, and one held by a request is an upload's
 * that exists (or is being created or removed): it is taken (409), and that request, maybe another client's, is never
 * asked to let go of it.
 */
/** A creation that failed before its upload existed gives back the room it claimed, and fails. */
function unclaimed (services: TusServices, id: string): (error: unknown) => never {
  return (error) => {
    services.diskReserve.release(id)
    throw error
  }
}

async function lockNewUpload (services: TusServices, id: string, onReleaseRequested?: () => void): Promise<UploadLock> {
  try {
    return await lockUpload(services, id, { requestRelease: false, ...(onReleaseRequested === undefined ? {} : { onReleaseRequested }) })
  } catch (error) {
    if ((error as TusHttpError).code === 'FST_TUS_LOCKED') throw new TusErrors.ID_TAKEN(id)
    throw error
  }
}

/** The lock policy of requests with a body: a newer request on the same upload (its client reconnected) ends this body. */
function releaseBody (request: FastifyRequest): () => void {
  return () => {
    if (request.body instanceof RequestBody) request.body.release('superseded')
  }
}

function bodyCutShort (request: FastifyRequest): boolean {
  return request.body instanceof RequestBody && cutShort(request.body)
}
