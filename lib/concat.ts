import type { FastifyReply, FastifyRequest } from 'fastify'
import { describe, isComplete } from './append.js'
import { ensureFreeSpace } from './capacity.js'
import { getLiveUpload, type TusContext } from './context.js'
import { TusErrors } from './errors.js'
import { completeUpload, createUpload, prepareUpload, sendUploadResponse, type UploadResponse } from './hooks.js'
import { isValidUploadId, newUploadId } from './ids.js'
import { uploadLocation } from './location.js'
import { parseMetadata } from './metadata.js'
import { hasBody, stringHeader } from './protocol.js'
import { setExpires } from './reply.js'
import type { UploadConcat, UploadInfo } from './store/types.js'

/**
 * The concatenation extensions. A final upload is created from the URLs of partial uploads; its length
 * is the sum of theirs, and its bytes are copied from them in order (streamed through the store, so any
 * backend can do it) once every partial is complete: at creation when they already are
 * (`concatenation`), else when the last of them completes (`concatenation-unfinished`). The copy holds
 * the final's lock and resumes where it stopped after a crash, since the final's offset is the bytes
 * durably copied; the final is reported complete only after its bytes are flushed.
 */

/** Final uploads waiting for partials to complete, by partial id; in-process (a restart finds them on HEAD). */
export class PendingFinals {
  readonly #byPartial = new Map<string, Set<string>>()

  add (finalId: string, partialIds: string[]): void {
    for (const partialId of partialIds) {
      const finals = this.#byPartial.get(partialId) ?? new Set<string>()
      finals.add(finalId)
      this.#byPartial.set(partialId, finals)
    }
  }

  /** The finals waiting on `partialId`; they are forgotten here (each is re-registered if still waiting). */
  take (partialId: string): string[] {
    const finals = this.#byPartial.get(partialId)
    this.#byPartial.delete(partialId)
    return finals === undefined ? [] : [...finals]
  }
}

/** The Upload-Concat header of a creation request: partial, final (with its partial ids) or none. */
export function parseConcat (context: TusContext, request: FastifyRequest): UploadConcat | undefined {
  const header = stringHeader(request, 'upload-concat')
  if (header === undefined) return undefined
  const value = header.trim()
  if (value === 'partial') return { type: 'partial' }
  if (!value.startsWith('final;')) throw new TusErrors.INVALID_CONCAT('expected "partial" or "final;<url> <url> ..."')
  const references = value.slice('final;'.length).split(/[ \t]+/).filter((reference) => reference !== '')
  if (references.length === 0) throw new TusErrors.INVALID_CONCAT('a final upload needs at least one partial upload URL')
  const collection = `http://upload.invalid${context.basePath}/`
  const parts = references.map((reference) => {
    let path: string
    try {
      path = new URL(reference, collection).pathname
    } catch {
      throw new TusErrors.INVALID_CONCAT(`"${reference.slice(0, 200)}" is not a URL`)
    }
    const id = path.startsWith(`${context.basePath}/`) ? path.slice(context.basePath.length + 1) : ''
    if (!isValidUploadId(id)) throw new TusErrors.INVALID_CONCAT(`"${reference.slice(0, 200)}" is not an upload of this endpoint`)
    return id
  })
  return { type: 'final', parts, header }
}

/** POST with `Upload-Concat: final;...`: creates the final upload, and completes it when its partials are. */
export async function handleFinalCreation (
  context: TusContext, request: FastifyRequest, reply: FastifyReply, concat: UploadConcat & { type: 'final' }
): Promise<void> {
  if (request.headers['upload-length'] !== undefined || request.headers['upload-defer-length'] !== undefined) {
    throw new TusErrors.INVALID_CONCAT('a final upload takes its length from its partials: send no Upload-Length')
  }
  if (hasBody(request)) throw new TusErrors.INVALID_CONCAT('a final upload cannot carry a body')
  const partials = await Promise.all(concat.parts.map(async (id) => await partialUpload(context, id)))
  const size = partials.reduce((sum, partial) => sum + (partial.size ?? 0), 0)
  if (size > context.options.maxSize) throw new TusErrors.MAX_SIZE_EXCEEDED(size, context.options.maxSize)
  const header = stringHeader(request, 'upload-metadata')
  const metadata = header === undefined ? {} : parseMetadata(header, context.options.maxMetadataSize)
  const prepared = await prepareUpload(context, request, { id: newUploadId(), size, metadata, concat })
  await ensureFreeSpace(context, size)

  const lock = await context.locker.lock(prepared.id, { timeoutMs: context.options.lockTimeout })
  let final: UploadInfo
  try {
    final = await createUpload(context, request, prepared)
  } finally {
    await lock.release()
  }
  reply.header('Location', uploadLocation(context, request, final.id))
  const finished = await finishFinal(context, request, final.id, context.options.lockTimeout)
  if (finished !== undefined) final = finished.upload
  if (isComplete(final)) reply.header('Upload-Offset', String(final.offset))
  setExpires(context, reply, final)
  await sendUploadResponse(reply, 201, finished?.response)
}

/** After `partialId` completed: completes the finals that were waiting for it and now can be. */
export async function finishFinalsWaitingOn (context: TusContext, request: FastifyRequest, partialId: string): Promise<void> {
  for (const finalId of context.pendingFinals.take(partialId)) {
    await finishFinal(context, request, finalId, context.options.lockTimeout).catch((error: unknown) => {
      request.log.error({ err: error, uploadId: finalId }, `fastify-tus: concatenating a final upload failed: ${describe(error)}`)
    })
  }
}

/**
 * Completes a final upload if all its partials are complete (copying what is not copied yet, then
 * running onUploadComplete), or registers it to wait for the rest. Resolves with the final as it is
 * afterwards and the hook's response when this call completed it; undefined when the final stayed
 * busy for `timeoutMs`.
 */
export async function finishFinal (
  context: TusContext, request: FastifyRequest, finalId: string, timeoutMs: number
): Promise<{ upload: UploadInfo, response?: UploadResponse | undefined } | undefined> {
  const lock = await context.locker.lock(finalId, { timeoutMs, requestRelease: false }).catch(() => undefined)
  if (lock === undefined) return undefined
  try {
    const final = await context.store.getInfo(finalId)
    if (isComplete(final) || final.concat?.type !== 'final') return { upload: final }
    const parts = final.concat.parts
    let waiting = await incompletePartials(context, parts)
    if (waiting.length > 0) {
      context.pendingFinals.add(finalId, waiting)
      // A partial may have completed between the check and the registration, and looked for waiting finals in between.
      waiting = await incompletePartials(context, parts)
      if (waiting.length > 0) return { upload: final }
    }
    const completed = await copyPartials(context, final)
    return { upload: completed, response: await completeUpload(context, request, completed) }
  } finally {
    await lock.release()
  }
}

async function incompletePartials (context: TusContext, ids: string[]): Promise<string[]> {
  const partials = await Promise.all([...new Set(ids)].map(async (id) => await context.store.getInfo(id)))
  return partials.filter((partial) => !isComplete(partial)).map((partial) => partial.id)
}

/** A referenced upload, which must exist and be a partial upload with a known length. */
async function partialUpload (context: TusContext, id: string): Promise<UploadInfo> {
  let upload: UploadInfo
  try {
    upload = await getLiveUpload(context, id)
  } catch (error) {
    const code = (error as { code?: string }).code
    if (code === 'FST_TUS_NOT_FOUND' || code === 'FST_TUS_GONE') throw new TusErrors.INVALID_CONCAT(`partial upload ${id} does not exist`)
    throw error
  }
  if (upload.concat?.type !== 'partial') throw new TusErrors.INVALID_CONCAT(`upload ${id} is not a partial upload`)
  if (upload.size === undefined) throw new TusErrors.INVALID_CONCAT(`partial upload ${id} has no length yet`)
  return upload
}

/** Copies the partials' bytes into the final from where the copy stands, then flushes them (lock held). */
async function copyPartials (context: TusContext, final: UploadInfo): Promise<UploadInfo> {
  if (final.concat?.type !== 'final') return final
  if (final.offset === 0 && await context.store.concatenate?.(final.id, final.concat.parts) === true) {
    await context.store.flush(final.id)
    return { ...final, offset: final.size ?? 0, modifiedAt: new Date() }
  }
  let offset = final.offset
  let start = 0
  for (const id of final.concat.parts) {
    const partial = await context.store.getInfo(id)
    const end = start + partial.offset
    if (offset < end) {
      const source = await context.store.read(id, { start: offset - start, end: partial.offset - 1 })
      offset = await context.store.write(final.id, offset, source)
      if (offset !== end) throw new TusErrors.STORE_FAILED(`partial upload ${id} changed while it was being concatenated`)
    }
    start = end
  }
  await context.store.flush(final.id)
  return { ...final, offset, modifiedAt: new Date() }
}
