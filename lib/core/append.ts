import type { FastifyRequest } from 'fastify'
import { TusDraftErrors, TusErrors, errorMessage, loggedAlready, retryLater, withFacts, type TusErrorFacts, type TusHttpError } from '../errors.js'
import type { UploadInfo, WriteOptions } from '../store/types.js'
import { BoundedBody, RequestBody } from './body.js'
import {
  announcesChecksumTrailer, headerChecksum, runningChecksum, trailerChecksum, type ExpectedChecksum, type RunningChecksum
} from './checksum.js'
import { freeReadChunk } from './free-memory.js'
import { ProgressTracker, uploadFailed } from './lifecycle.js'
import { contentLength } from './request.js'
import { whileHeld, type TusServices } from './services.js'
import { StagedChunk, stagingDirectory } from './staging.js'
import { noteBytes } from './touched.js'

/**
 * Streams the request body into `upload` at its current offset (the caller holds the lock and has
 * checked the offset). Never stores a byte beyond the upload length; flushes the data to disk when the
 * upload becomes complete. Runs onUploadProgress as bytes arrive and keeps the metrics. Resolves with the
 * upload as it is afterwards; the caller runs `completeUpload` (lifecycle.ts) when this completed it.
 * `held` is the caller's lock hold (services.ts heldBy), passed on to the store.
 *
 * A body that carries a checksum (header) or announces one as a trailer (`Trailer: Upload-Checksum`) is staged
 * first and committed only once verified: on a mismatch or an interruption nothing of it reaches the upload.
 * Every other body streams straight into the store. A chunked one (no Content-Length) may still bring a trailer
 * checksum nobody announced, or go beyond the limit: it is checked once it has ended, and cut off again (the
 * store's `truncate`) when it fails, so that nothing of it stays, as if it had been staged. With a store that
 * cannot cut, every chunked body is staged. A body that arrives whole but short of a known length while the request
 * says it completes the upload (`input.completes`) is refused the same way, nothing of it kept.
 */
export async function appendBody (
  services: TusServices, request: FastifyRequest, upload: UploadInfo, input: AppendInput, held?: WriteOptions
): Promise<UploadInfo> {
  const declared = contentLength(request)
  ensureRoom(services, upload, declared ?? 0)
  const { limit, room } = roomOf(services, upload)
  const expected = headerChecksum(request)

  const requestBody = request.body instanceof RequestBody ? request.body : undefined
  if (upload.size !== undefined) requestBody?.wholeAt(room)
  const body = new BoundedBody(requestBody, room)
  const progress = new ProgressTracker(services, request, upload, input.onProgress)
  let offset = upload.offset
  // Bytes streamed straight to the store are counted as the store takes them; staged ones once committed.
  let counted = 0
  const count = (bytes: number): void => {
    counted += bytes
    services.metrics.bytesReceived += bytes
    services.diskReserve.stored(upload.id, bytes)
  }
  services.metrics.activeUploads++
  const settled = services.inFlight.begin(requestBody)
  try {
    const chunked = declared === undefined && body.present
    const staging = expected !== undefined || (chunked && (announcesChecksumTrailer(request) || services.store.truncate === undefined))
    const staged = staging ? await storeFailure(services, request, upload, async () => await stageBody(services, progress.track(body), expected, requestBody?.reclaim)) : undefined
    try {
      const source = staged === undefined ? progress.track(body, count) : await verifiedSource(request, staged, expected, body, progress, upload, input.completes)
      if (source !== undefined) {
        // Chunks are freed as the store is done with them: the request body's (RequestBody.reclaim), or a staged body's
        // as read back from its file, which nothing else reads.
        const reclaim = staged === undefined ? requestBody?.reclaim : freeReadChunk
        // Bytes the store holds are acknowledged as they land (the draft's 104s), unless they may yet be cut off
        // again: a chunked body streamed straight in is checked only once it has ended (checkStreamed), a staged one
        // before it is committed.
        const stored = staged !== undefined || !chunked ? progress.stored : undefined
        const options = writeOptions(held, reclaim, stored)
        offset = await storeFailure(services, request, upload, async () => await services.store.write(upload.id, upload.offset, whileHeld(source, held), options))
        if (staged === undefined && chunked) {
          const checked = await checkStreamed(services, request, upload, offset, body, progress, input.completes, held)
          offset = checked.offset
          if (checked.refusal !== undefined) throw checked.refusal
          progress.stored(offset)
        }
      }
    } finally {
      await staged?.chunk.remove()
    }
    if (requestBody?.released !== undefined) {
      request.log.info({ uploadId: upload.id, offset, reason: requestBody.released }, 'fastify-tus: body ended by the server; bytes kept')
    } else if (body.aborted) {
      request.log.info({ uploadId: upload.id, offset }, 'fastify-tus: client went away mid-body; bytes kept')
    }
    if (body.exceeded) throw exceeded(upload, limit, offset)
    await progress.finish(offset)
    if (progress.stopped !== undefined) {
      // Refused at the report of the bytes that complete the upload: they are stored, and the store completed its
      // file with them. Too late to stop anything: answering the refusal would leave an upload that is complete
      // without onUploadComplete ever running. Completion goes on.
      if (offset !== upload.size) throw withFacts(progress.stopped, { offset })
      request.log.warn({ uploadId: upload.id, offset, err: progress.stopped }, 'fastify-tus: onUploadProgress refused the bytes that complete the upload, already stored; completed anyway')
    }
    // Not before a length still to be recorded is (receive): a store completes an upload only at a length it knows.
    if (offset === upload.size && input.lengthUnrecorded !== true) await services.store.flush(upload.id, held)
  } catch (error) {
    // A store that failed part-way knows what it kept (storeFailure asked it): the upload stands there.
    const kept = (error as TusErrorFacts).offset ?? offset
    // Reports may have counted bytes that were then cut off again: a progress listener is left with the truth.
    await progress.finish(kept)
    throw uploadFailed(services, request, { ...upload, offset: kept, modifiedAt: new Date() }, error)
  } finally {
    settled()
    services.metrics.activeUploads--
    services.metrics.bytesReceived += Math.max(0, offset - upload.offset - counted)
    noteBytes(request, { ...upload, offset, modifiedAt: new Date() }, offset - upload.offset)
  }
  return { ...upload, offset, modifiedAt: new Date() }
}

/** What the request says besides its body. */
export interface AppendInput {
  /** The protocol's own progress reporting (the draft's 104s). */
  onProgress?: ((upload: UploadInfo) => void) | undefined
  /** The request says it ends the upload; undefined when its protocol has no way to say. */
  completes?: boolean | undefined
  /** `upload.size` is a length this request declares, not yet recorded in the store (the caller records it, then flushes). */
  lengthUnrecorded?: boolean | undefined
}

interface Staged {
  chunk: StagedChunk
  /** The digest computed while staging, when the algorithm was known from the header. */
  running: RunningChecksum | undefined
}

async function stageBody (
  services: TusServices, source: AsyncIterable<Buffer>, expected: ExpectedChecksum | undefined, reclaim: ((chunk: Buffer) => void) | undefined
): Promise<Staged> {
  const running = expected === undefined ? undefined : runningChecksum(expected.algorithm)
  const chunk = await StagedChunk.from(stagingDirectory(services.options.dir), source, running, reclaim)
  return { chunk, running }
}

/**
 * Whether an appended body may stay, one rule for staged and streamed bodies: 'keep' when it carries no checksum
 * (header or trailer) or its checksum verifies; 'drop' when it went beyond the limit or a checksummed body was cut
 * short; else the refusal to answer with, nothing of it kept either: 400 for a malformed or unsupported trailer,
 * 460 for a mismatch, 400 for a body that arrived whole short of the known length while the request `completes` the
 * upload. `digestOf` computes the body's digest for the checksum it carries.
 */
async function verdictOn (
  request: FastifyRequest, expected: ExpectedChecksum | undefined, body: BoundedBody, progress: ProgressTracker,
  upload: UploadInfo, completes: boolean | undefined, digestOf: (checksum: ExpectedChecksum) => Promise<Buffer>
): Promise<'keep' | 'drop' | Error> {
  // A body cut short, or stopped by the progress hook, is no claim about the length: its bytes stay, resumable.
  const whole = (): 'keep' | Error => {
    const end = upload.offset + body.received
    if (completes !== true || upload.size === undefined || end === upload.size || body.cutShort || progress.stopped !== undefined) return 'keep'
    return withFacts(new TusDraftErrors.INCONSISTENT_LENGTH(`the request completes the upload but its body ends at ${end} of ${upload.size} bytes`), { offset: upload.offset })
  }
  let checksum = expected
  if (!body.aborted) {
    let trailer: ExpectedChecksum | undefined
    try {
      trailer = trailerChecksum(request)
    } catch (error) {
      return withFacts(error as Error, { offset: upload.offset })
    }
    // Two checksums that disagree: whichever were checked, the other says the body is not what was sent.
    if (trailer !== undefined && expected !== undefined && (trailer.algorithm !== expected.algorithm || !trailer.digest.equals(expected.digest))) {
      return withFacts(new TusErrors.INVALID_HEADER('Upload-Checksum', 'the trailer differs from the header'), { offset: upload.offset })
    }
    checksum ??= trailer
  }
  if (body.exceeded) return 'drop'
  if (checksum === undefined) {
    if (!announcesChecksumTrailer(request)) return whole()
    // A body announcing its checksum as a trailer was sent to be committed only once checked: cut short before
    // the trailer, it is dropped; ended without it (a proxy that drops trailers), it is refused, never taken unchecked.
    if (body.aborted) return 'drop'
    return withFacts(new TusErrors.INVALID_HEADER('Upload-Checksum', 'announced as a trailer (Trailer: Upload-Checksum), it did not come with the body; nothing of the body was stored'), { offset: upload.offset })
  }
  if (body.aborted || progress.stopped !== undefined) return 'drop'
  if ((await digestOf(checksum)).equals(checksum.digest)) return whole()
  return withFacts(new TusErrors.CHECKSUM_MISMATCH(checksum.algorithm), { offset: upload.offset })
}

/** What of a staged body may be committed (verdictOn): all of it, or nothing (undefined); throws a refusal. */
async function verifiedSource (
  request: FastifyRequest, staged: Staged, expected: ExpectedChecksum | undefined, body: BoundedBody,
  progress: ProgressTracker, upload: UploadInfo, completes: boolean | undefined
): Promise<AsyncIterable<Buffer> | undefined> {
  const verdict = await verdictOn(request, expected, body, progress, upload, completes, async (checksum) =>
    staged.running?.digest() ?? await staged.chunk.digest(runningChecksum(checksum.algorithm)))
  if (verdict instanceof Error) throw verdict
  return verdict === 'keep' ? staged.chunk.read() : undefined
}

/**
 * What of a chunked body streamed straight into the store may stay (verdictOn, with the bytes as stored read back
 * for a trailer checksum): the offset it reached, or the upload's offset once the store has cut the body off again,
 * with the refusal to answer with, if any.
 */
async function checkStreamed (
  services: TusServices, request: FastifyRequest, upload: UploadInfo, offset: number, body: BoundedBody,
  progress: ProgressTracker, completes: boolean | undefined, held: WriteOptions | undefined
): Promise<{ offset: number, refusal?: Error }> {
  const verdict = await verdictOn(request, undefined, body, progress, upload, completes, async (checksum) => await storeFailure(services, request, upload, async () => {
    const running = runningChecksum(checksum.algorithm)
    if (offset > upload.offset) {
      for await (const chunk of await services.store.read(upload.id, { start: upload.offset, end: offset - 1 })) {
        running.update(chunk as Buffer)
        if (services.store.readChunksDisposable === true) freeReadChunk(chunk as Buffer)
      }
    }
    return running.digest()
  }, UNCHECKED))
  if (verdict === 'keep') return { offset }
  await storeFailure(services, request, upload, async () => { await services.store.truncate!(upload.id, upload.offset, held) }, UNCHECKED)
  return verdict === 'drop' ? { offset: upload.offset } : { offset: upload.offset, refusal: verdict }
}

/**
 * Runs a storage step; a failure is logged and answered 500 with the offset actually stored (offsetStored tells it
 * unless the step is not `vouched`: bytes stored then may still be unchecked). A lock lost while held
 * (the store stopped at its signal: another holder may be writing) is answered as such, 503 with Retry-After: the
 * client's retry finds the upload where it stands, and the store did not fail.
 */
export async function storeFailure<T> (
  services: TusServices, request: FastifyRequest, upload: UploadInfo, step: () => Promise<T>, { vouched = true }: { vouched?: boolean } = {}
): Promise<T> {
  try {
    return await step()
  } catch (error) {
    const lockLost = (error as TusHttpError).code === 'FST_TUS_LOCK_FAILED'
    if (lockLost) request.log.warn({ err: error, uploadId: upload.id }, 'fastify-tus: the upload\'s lock was lost while writing; bytes kept')
    else request.log.error({ err: error, uploadId: upload.id }, 'fastify-tus: writing an upload failed')
    const read = await services.store.getInfo(upload.id).then((info) => info.offset, () => undefined)
    const offset = read ?? upload.offset
    const failure = lockLost ? retryLater(error as TusHttpError, 1) : new TusErrors.STORE_FAILED(errorMessage(error))
    if (read !== undefined && vouched) storedAtFailure.set(failure, read)
    throw loggedAlready(withFacts(failure, { offset }))
  }
}

/**
 * A step that fails with bytes stored that are not checked yet (a trailer checksum's, or refused and not yet cut off
 * again): what the store holds then is no offset to go on from (offsetStored says none), whatever it answers.
 */
const UNCHECKED = { vouched: false }

/** The offsets the store said it holds after a failure (storeFailure), by the error answered for it. */
const storedAtFailure = new WeakMap<object, number>()

/**
 * What the store said it holds after the storage step that failed with `error` (storeFailure): undefined for any
 * other error, and for one whose store could not say (its offset in the answer is then what the upload had before).
 */
export function offsetStored (error: unknown): number | undefined {
  return typeof error === 'object' && error !== null ? storedAtFailure.get(error) : undefined
}

/** How far an upload may grow: to its length, or to `maxSize` while the length is unknown. */
function roomOf (services: TusServices, upload: Growth): { limit: number, room: number } {
  const limit = upload.size ?? services.options.maxSize
  return { limit, room: limit - (upload.offset ?? 0) }
}

/** Refuses (413) a request announcing more bytes than the upload has room for, before any is read. */
export function ensureRoom (services: TusServices, upload: Growth, bytes: number): void {
  const { limit, room } = roomOf(services, upload)
  if (bytes > room) throw exceeded(upload, limit, upload.offset)
}

/**
 * An upload's length and offset; a creation checks its body before the upload exists: no offset then, and its
 * refusal reports none (there is no upload whose offset a client could resume from).
 */
type Growth = Pick<UploadInfo, 'size'> & { offset?: number }

function exceeded (upload: Growth, limit: number, offset: number | undefined): Error {
  const stored = offset === undefined ? {} : { offset }
  if (upload.size === undefined) return withFacts(new TusErrors.BODY_BEYOND_MAX_SIZE(limit), { ...stored, limit: 'max-size' })
  return withFacts(new TusErrors.LENGTH_EXCEEDED(limit), { ...stored, limit: 'length' })
}

/** The lock hold's write options, with what this write adds to them (the hold's own object when it adds nothing). */
function writeOptions (held: WriteOptions | undefined, reclaim: WriteOptions['reclaim'], onStored: WriteOptions['onStored']): WriteOptions | undefined {
  if (reclaim === undefined && onStored === undefined) return held
  const options: WriteOptions = { ...held }
  if (reclaim !== undefined) options.reclaim = reclaim
  if (onStored !== undefined) options.onStored = onStored
  return options
}
