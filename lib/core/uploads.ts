import { TusErrors } from '../errors.js'
import type { UploadInfo } from '../store/types.js'
import { lockUpload, type TusServices } from './services.js'

const DAY_MS = 24 * 60 * 60 * 1000

export function isComplete (upload: UploadInfo): boolean {
  return upload.size !== undefined && upload.offset === upload.size
}

/** When `upload` expires, or undefined when uploads never expire. */
export function expiresAt (services: TusServices, upload: UploadInfo): Date | undefined {
  if (!Number.isFinite(services.options.daysToKeep)) return undefined
  return new Date(upload.modifiedAt.getTime() + services.options.daysToKeep * DAY_MS)
}

export function isExpired (services: TusServices, upload: UploadInfo, now = Date.now()): boolean {
  const expiry = expiresAt(services, upload)
  return expiry !== undefined && expiry.getTime() <= now
}

/** The upload, or 404 when unknown and 410 when expired. */
export async function loadLive (services: TusServices, id: string): Promise<UploadInfo> {
  const upload = await services.store.getInfo(id)
  if (isExpired(services, upload)) throw new TusErrors.GONE()
  return upload
}

/**
 * The upload once no request is writing to it (404 unknown, 410 expired). Under the lock, so the offset
 * is never one a running append is about to move (a stuck one is asked to let go); requests reading the
 * same upload at the same time share one lock and one read.
 */
export async function loadSettled (services: TusServices, id: string): Promise<UploadInfo> {
  return await services.sharedReads.read(id, async () => await lockUpload(services, id), async () => await loadLive(services, id))
}
