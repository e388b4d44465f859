import type { FastifyRequest } from 'fastify'
import { TusErrors, errorMessage, type TusHttpError } from '../errors.js'
import type { UploadLock } from '../lockers/lock.js'
import type { UploadInfo, WriteOptions } from '../store/types.js'
import type { UploadResponse } from '../types.js'
import { freeReadChunk } from './free-memory.js'
import { completeUpload } from './lifecycle.js'
import { waitingFinals, type WaitingFinals } from './pending-finals.js'
import { partialsOf, type FinalConcat } from './partials.js'
import { heldBy, whileHeld, type TusServices } from './services.js'
import { isComplete, loadFor } from './uploads.js'

/**
 * The concatenation extensions. A final upload is created from the URLs of partial uploads; its length
 * is the sum of theirs, and its bytes are copied from them in order (streamed through the store, so any
 * backend can do it) once every partial is complete: at creation when they already are
 * (`concatenation`), else when the last of them completes (`concatenation-unfinished`). The copy holds
 * the final's lock and resumes where it stopped after a crash, since the final's offset is the bytes
 * durably copied; the final is reported complete only after its bytes are flushed.
 *
 * The finals waiting for partials are listed where every instance sees them when the store keeps such a
 * record (pending-finals.ts): the request that completes the last partial finishes the final, on whichever
 * instance it runs. Any request that reads a final (HEAD, GET) finishes it too once its partials are complete.
 *
 * A final knows each partial by the identity it had when the final was made (`UploadConcat.partials`): one that is
 * gone, or another upload created since under its id, makes the final one that can never complete (410).
 */

/** After `partialId` completed: completes the finals that were waiting for it and now can be. */
export async function finishFinalsWaitingOn (services: TusServices, request: FastifyRequest, partialId: string): Promise<void> {
  const waiting = waitingFinals(services.store, services.pendingFinals)
  const finals = await waiting.waitingOn(partialId).catch((error: unknown) => {
    request.log.error({ err: error, uploadId: partialId }, `fastify-tus: listing the final uploads waiting for a partial failed: ${errorMessage(error)}`)
    return []
  })
  for (const finalId of finals) {
    await finishFinal(services, request, finalId, services.options.lockTimeout).catch(async (error: unknown) => {
      const { code } = error as TusHttpError
      if (code === 'FST_TUS_NOT_FOUND') {
        // The final was terminated (or expired) while it waited.
        await waiting.remove(finalId, [partialId]).catch(() => undefined)
        return
      }
      // Another of its partials is gone: the final can never complete, and its own HEAD and GET say so.
      if (code === 'FST_TUS_PARTIAL_GONE') return
      request.log.error({ err: error, uploadId: finalId }, `fastify-tus: concatenating a final upload failed: ${errorMessage(error)}`)
    })
  }
}

export interface FinalOutcome {
  upload: UploadInfo
  /** This call completed the final (and ran onUploadComplete). */
  completed: boolean
  response?: UploadResponse | undefined
}

/**
 * Completes a final upload if all its partials are complete (copying what is not copied yet, then
 * running onUploadComplete), or registers it to wait for the rest. Resolves with the final as it is
 * afterwards and the hook's response when this call completed it; undefined when the final stayed
 * busy for `timeoutMs`. Rejects with PARTIAL_GONE (410) when a partial is gone, and forgets the final.
 */
export async function finishFinal (
  services: TusServices, request: FastifyRequest, finalId: string, timeoutMs: number
): Promise<FinalOutcome | undefined> {
  const lock = await services.locker.lock(finalId, { timeoutMs, requestRelease: false }).catch(() => undefined)
  if (lock === undefined) return undefined
  const copied: { parts?: string[] } = {}
  try {
    return await finishLocked(services, request, finalId, heldBy(lock), timeoutMs, copied)
  } finally {
    await lock.release()
    // This completion held the partials' locks for its copy: a final created meanwhile found one of them busy and was
    // left waiting for it (concatenateWhenReady), and is finished now, in this request (whatever the hook did).
    for (const partialId of new Set(copied.parts)) await finishFinalsWaitingOn(services, request, partialId)
  }
}

/** finishFinal with the final's lock held; `copied` gets the final's partials once it is complete. */
async function finishLocked (
  services: TusServices, request: FastifyRequest, finalId: string, held: WriteOptions, timeoutMs: number, copied: { parts?: string[] }
): Promise<FinalOutcome> {
  const final = await services.store.getInfo(finalId, held)
  if (final.concat?.type !== 'final') return { upload: final, completed: false }
  const list = waitingFinals(services.store, services.pendingFinals)
  if (isComplete(final)) {
    await forget(list, request, final)
    return { upload: final, completed: false }
  }
  const completed = await concatenateWhenReady(services, final, final.concat, held, list, timeoutMs).catch(async (error: unknown) => {
    // Nothing can complete it any more: no partial's completion need look for it.
    if ((error as TusHttpError).code === 'FST_TUS_PARTIAL_GONE') await forget(list, request, final)
    throw error
  })
  if (completed === undefined) return { upload: final, completed: false }
  // Before onUploadComplete: the final is complete whatever the hook does, and nothing waits for it any more.
  await forget(list, request, final)
  copied.parts = final.concat.parts
  return { upload: completed, completed: true, response: await completeUpload(services, request, completed) }
}

/**
 * After a request let go of the lock of `upload` without completing it (a refused termination): when it is a complete
 * partial, the finals created while it was held found it busy and were left waiting for it; they are finished now, in
 * this request. (A request that completes a partial finishes them anyway: finishFinalsWaitingOn.)
 */
export async function finishFinalsAfterHold (services: TusServices, request: FastifyRequest, upload: UploadInfo): Promise<void> {
  if (upload.concat?.type === 'partial' && isComplete(upload)) await finishFinalsWaitingOn(services, request, upload.id)
}

/**
 * The final with its partials' bytes copied, if they are all complete (the final's lock held); else undefined, the
 * final recorded as waiting for those that are not.
 */
async function concatenateWhenReady (
  services: TusServices, final: UploadInfo, concat: FinalConcat, held: WriteOptions, list: WaitingFinals, timeoutMs: number
): Promise<UploadInfo | undefined> {
  let waiting = await incompletePartials(services, concat)
  if (waiting.length > 0) {
    await list.add(final.id, waiting)
    // A partial may have completed between the check and the registration, and looked for waiting finals in between.
    waiting = await incompletePartials(services, concat)
    if (waiting.length > 0) return undefined
  }
  let partialLocks = await lockPartials(services, concat.parts, timeoutMs)
  if (partialLocks.busy.length > 0) {
    // A partial is still held: by the request completing it, which finishes the final afterwards; by another final's
    // copy, which finishes it once it completed that final (finishFinal); by a termination that is refused, which
    // finishes it once it let go (finishFinalsAfterHold). It may have looked for waiting finals just before the
    // registration, hence one more try.
    await list.add(final.id, partialLocks.busy)
    partialLocks = await lockPartials(services, concat.parts, 1)
    if (partialLocks.busy.length > 0) return undefined
  }
  try {
    // Read again under their locks: a body still arriving at the first look may have been refused and cut back since
    // (a checksum trailer that did not match, a chunked body beyond the length). Such a partial is waited for again.
    const partials = await partialsOf(services, concat)
    waiting = unfinished(partials)
    if (waiting.length > 0) {
      await list.add(final.id, waiting)
      return undefined
    }
    return await copyPartials(services, final, concat, partials, held)
  } finally {
    await Promise.all(partialLocks.held.map(async (taken) => { await taken.release() }))
  }
}

/**
 * The partials' locks, taken before their bytes are read: a partial whose last bytes are stored may still be
 * completing (S3: CompleteMultipartUpload not done yet, so its object cannot be read) under the lock of the
 * request that stored them. In id order, so finals sharing partials never wait for each other. Resolves with
 * the locks taken, or with the partials still busy after `timeoutMs` (and no lock held).
 */
async function lockPartials (services: TusServices, ids: string[], timeoutMs: number): Promise<{ held: UploadLock[], busy: string[] }> {
  const held: UploadLock[] = []
  for (const id of [...new Set(ids)].sort()) {
    const lock = await services.locker.lock(id, { timeoutMs, requestRelease: false }).catch(() => undefined)
    if (lock === undefined) {
      await Promise.all(held.map(async (taken) => { await taken.release() }))
      return { held: [], busy: [id] }
    }
    held.push(lock)
  }
  return { held, busy: [] }
}

/**
 * Removes a complete final, or one that can never complete, from the waiting list; a failure leaves entries that
 * the next look finds complete (or broken).
 */
async function forget (list: WaitingFinals, request: FastifyRequest, final: UploadInfo): Promise<void> {
  if (final.concat?.type !== 'final') return
  await list.remove(final.id, final.concat.parts).catch((error: unknown) => {
    request.log.warn({ err: error, uploadId: final.id }, `fastify-tus: forgetting a final upload's partials failed: ${errorMessage(error)}`)
  })
}

async function incompletePartials (services: TusServices, concat: FinalConcat): Promise<string[]> {
  return unfinished(await partialsOf(services, concat))
}

function unfinished (partials: UploadInfo[]): string[] {
  return [...new Set(partials.filter((partial) => !isComplete(partial)).map((partial) => partial.id))]
}

/** A final's Upload-Concat with the identity of each partial it is made of (as `partialUpload` found them). */
export function withPartials (concat: FinalConcat, partials: UploadInfo[]): FinalConcat {
  return { ...concat, partials: partials.map((partial) => ({ createdAt: partial.createdAt.toISOString(), size: partial.size ?? 0 })) }
}

/**
 * A referenced upload, which must exist, be one this request may use (onUploadAccess, action `concatenate`), be
 * a partial upload and have a known length. Every unusable reference gets the same answer, so a reference
 * tells nothing about an upload the request may not see.
 */
export async function partialUpload (services: TusServices, request: FastifyRequest, id: string): Promise<UploadInfo> {
  const unusable = (): Error => new TusErrors.INVALID_CONCAT(`"${id}" is not a usable partial upload of this endpoint`)
  let upload: UploadInfo
  try {
    upload = await loadFor(services, request, id, 'concatenate')
  } catch (error) {
    const status = (error as { statusCode?: number }).statusCode
    if (status !== undefined && status >= 400 && status < 500) throw unusable()
    throw error
  }
  if (upload.concat?.type !== 'partial' || upload.size === undefined) throw unusable()
  return upload
}

/**
 * Copies the complete `partials` (read under their locks) into the final from where the copy stands, then flushes
 * them (the final's lock and the partials' held).
 */
async function copyPartials (services: TusServices, final: UploadInfo, concat: FinalConcat, partials: UploadInfo[], held: WriteOptions): Promise<UploadInfo> {
  // Completes a partial whose completion was cut short (its request failed after storing the last byte).
  for (const id of new Set(concat.parts)) await services.store.flush(id)
  const size = final.size ?? 0
  if (final.offset === 0 && await services.store.concatenate?.(final.id, concat.parts) === true) {
    await services.store.flush(final.id, held)
    return { ...final, offset: size, modifiedAt: new Date() }
  }
  let offset = final.offset
  let start = 0
  // The partials' chunks, read for this copy alone, are freed as soon as the final has them (see free-memory.ts).
  const options = services.store.readChunksDisposable === true ? { ...held, reclaim: freeReadChunk } : held
  for (const partial of partials) {
    const id = partial.id
    const end = start + partial.offset
    // Never past the final's length: a final without its partials' identities cannot tell a longer upload
    // created under a partial's id from the partial.
    if (end > size) throw new TusErrors.PARTIAL_GONE(id)
    if (offset < end) {
      const source = await services.store.read(id, { start: offset - start, end: partial.offset - 1 })
      offset = await services.store.write(final.id, offset, whileHeld(source, held), options)
      if (offset !== end) throw new TusErrors.STORE_FAILED(`partial upload ${id} changed while it was being concatenated`)
    }
    start = end
  }
  await services.store.flush(final.id, held)
  return { ...final, offset, modifiedAt: new Date() }
}
