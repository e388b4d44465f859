import type { FastifyRequest } from 'fastify'
import { TusErrors } from '../errors.js'
import type { LockOptions } from '../lockers/lock.js'
import type { UploadInfo } from '../store/types.js'
import type { UploadAction } from '../types.js'
import { checkAccess } from './lifecycle.js'
import { latestPartialWrite } from './partials.js'
import { lockUpload, type TusServices } from './services.js'

const DAY_MS = 24 * 60 * 60 * 1000

export function isComplete (upload: UploadInfo): boolean {
  return upload.size !== undefined && upload.offset === upload.size
}

/**
 * When `upload` expires, or undefined when it never does (no retention, or a complete upload, kept by default):
 * `daysToKeep` after its last write. An unfinished final's last write is the latest among it and its partials: it
 * can still complete while a partial is written to, and must not be lost before the partial it waits for. A promise
 * only for such a final, whose partials are read (at most `maxConcatReferences`); every other upload, the common
 * case, is decided from its own info, without a store call or a promise.
 */
export function expiresAt (services: TusServices, upload: UploadInfo): Date | undefined | Promise<Date | undefined> {
  const { daysToKeep, expireCompleted } = services.options
  if (!Number.isFinite(daysToKeep) || (!expireCompleted && isComplete(upload))) return undefined
  const after = (lastWrite: number): Date => new Date(lastWrite + daysToKeep * DAY_MS)
  if (upload.concat?.type !== 'final' || isComplete(upload)) return after(upload.modifiedAt.getTime())
  return latestPartialWrite(services, upload.concat).then((partialWrite) => after(Math.max(upload.modifiedAt.getTime(), partialWrite)))
}

export function isExpired (services: TusServices, upload: UploadInfo, now = Date.now()): boolean | Promise<boolean> {
  const passed = (expiry: Date | undefined): boolean => expiry !== undefined && expiry.getTime() <= now
  const expiry = expiresAt(services, upload)
  return expiry instanceof Promise ? expiry.then(passed) : passed(expiry)
}

/**
 * The upload a request may act on without its lock: 404 when unknown; then onUploadAccess, before any answer that
 * depends on the upload (410 included); then 410 when expired.
 */
export async function loadFor (services: TusServices, request: FastifyRequest, id: string, action: UploadAction): Promise<UploadInfo> {
  const upload = await services.store.getInfo(id)
  await checkAccess(services, request, upload, action)
  return unexpired(services, upload)
}

/**
 * onUploadAccess for a request that is about to wait for the upload's lock, run before it does, on the upload as
 * it stands (404 unknown): waiting asks the request holding the lock to let go (its body ends where it stands),
 * and a request the app refuses must never cut one it allows. Resolves with the upload admitted, which what the
 * request reads under the lock must still be (`underLock`); nothing is read when there is no hook.
 */
export async function admitBeforeLock (services: TusServices, request: FastifyRequest, id: string, action: UploadAction): Promise<UploadInfo | undefined> {
  if (services.options.onUploadAccess === undefined) return undefined
  const upload = await services.store.getInfo(id)
  await checkAccess(services, request, upload, action)
  return upload
}

/**
 * The upload as read under its lock: 404 when it is no longer the one admitted (removed and created again under the
 * same id, which onUploadCreate may choose, while the request waited: someone else's, maybe); 410 when expired.
 * A promise only for an unfinished final (expiresAt).
 */
export function underLock (services: TusServices, upload: UploadInfo, admitted: UploadInfo | undefined): UploadInfo | Promise<UploadInfo> {
  return unexpired(services, stillAdmitted(upload, admitted))
}

/** underLock's first half, for a request that acts on an expired upload too (a termination). */
export function stillAdmitted (upload: UploadInfo, admitted: UploadInfo | undefined): UploadInfo {
  if (admitted !== undefined && admitted.createdAt.getTime() !== upload.createdAt.getTime()) throw new TusErrors.NOT_FOUND()
  return upload
}

/** `upload`, unless it has expired (410); a promise only for an unfinished final (expiresAt). */
function unexpired (services: TusServices, upload: UploadInfo): UploadInfo | Promise<UploadInfo> {
  const gone = (expired: boolean): UploadInfo => {
    if (expired) throw new TusErrors.GONE()
    return upload
  }
  const expired = isExpired(services, upload)
  return typeof expired === 'boolean' ? gone(expired) : expired.then(gone)
}

/**
 * The upload once no request is writing to it (404 unknown). Under the lock, so the offset is never one a
 * running append is about to move (a stuck one is asked to let go, unless `requestRelease` is false); requests
 * reading the same upload at the same time share one lock and one read, but never one that began before a write
 * still to come.
 */
export async function loadSettled (services: TusServices, id: string, options: Pick<LockOptions, 'requestRelease'> = {}): Promise<UploadInfo> {
  return await services.sharedReads.read(id, () => lockUpload(services, id, options), () => services.store.getInfo(id))
}
