import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type { PendingFinals } from './concat.js'
import { TusErrors } from './errors.js'
import type { InFlightWrites } from './in-flight.js'
import type { TusEvents } from './events.js'
import { isValidUploadId } from './ids.js'
import type { LockOptions, UploadLocker } from './lock.js'
import type { TusMetrics } from './metrics.js'
import type { SharedReads } from './shared-reads.js'
import type { ResolvedOptions } from './options.js'
import type { DataStore, UploadInfo } from './store/types.js'

const DAY_MS = 24 * 60 * 60 * 1000

/** What every handler needs: the validated options and the two seams (store, locker). */
export interface TusContext {
  options: ResolvedOptions
  /** Full path of the creation endpoint, outer register prefixes included (e.g. `/api/files`). */
  basePath: string
  store: DataStore
  locker: UploadLocker
  /** `app.tus` itself: what observers listen to. */
  events: TusEvents
  metrics: TusMetrics
  /** Final uploads waiting for their partials (concatenation-unfinished). */
  pendingFinals: PendingFinals
  /** Appends running now, for a graceful close. */
  inFlight: InFlightWrites
  /** HEADs of one upload sharing one read under its lock. */
  sharedReads: SharedReads
  /** For work outside a request (expiry); requests log through `request.log`. */
  log: FastifyBaseLogger
}

/** When `upload` expires, or undefined when uploads never expire. */
export function expiresAt (context: TusContext, upload: UploadInfo): Date | undefined {
  if (!Number.isFinite(context.options.daysToKeep)) return undefined
  return new Date(upload.modifiedAt.getTime() + context.options.daysToKeep * DAY_MS)
}

export function isExpired (context: TusContext, upload: UploadInfo, now = Date.now()): boolean {
  const expiry = expiresAt(context, upload)
  return expiry !== undefined && expiry.getTime() <= now
}

/** The id from the route, refused with 404 before any storage access when it cannot be one of ours. */
export function uploadIdOf (request: FastifyRequest): string {
  const { id } = request.params as { id?: string }
  if (id === undefined || !isValidUploadId(id)) throw new TusErrors.NOT_FOUND()
  return id
}

/** The upload, or 404 when unknown and 410 when expired. */
export async function getLiveUpload (context: TusContext, id: string): Promise<UploadInfo> {
  const upload = await context.store.getInfo(id)
  if (isExpired(context, upload)) throw new TusErrors.GONE()
  return upload
}

/**
 * The upload once no request is writing to it (404 unknown, 410 expired): what HEAD reports. Under the
 * lock, so the offset is never one a running PATCH is about to move (a stuck one is asked to let go).
 */
export async function settledUpload (context: TusContext, id: string, lockOptions: LockOptions): Promise<UploadInfo> {
  return await context.sharedReads.read(id, async () => await context.locker.lock(id, lockOptions), async () => await getLiveUpload(context, id))
}
