import type { FastifyBaseLogger } from 'fastify'
import { TusErrors, retryLater, type TusHttpError } from '../errors.js'
import type { LockOptions, UploadLock, UploadLocker } from '../lockers/lock.js'
import type { SharedReads } from '../lockers/shared-reads.js'
import type { TusEvents } from '../observe/events.js'
import type { TusMetrics } from '../observe/metrics.js'
import type { DataStore, WriteOptions } from '../store/types.js'
import type {
  GenerateUrl, GetUploadIdFromRequest, MaxSizeOf, OnUploadAccess, OnUploadComplete, OnUploadCreate, OnUploadExpire, OnUploadProgress,
  OnUploadTerminate, TusAuthHook, FormatError
} from '../types.js'
import type { DiskReserve } from './capacity.js'
import type { PendingFinals } from './pending-finals.js'
import type { InFlightWrites } from './in-flight.js'

/** The plugin's options, validated once at register time (lib/options.ts), defaults filled in. */
export interface ResolvedOptions {
  prefix: string
  dir: string
  /** The largest upload; when `maxSizeOf` is set, what the http layer resolved for the request at hand. */
  maxSize: number
  maxSizeOf?: MaxSizeOf | undefined
  daysToKeep: number
  auth: TusAuthHook | undefined
  formatError: FormatError | undefined
  onUploadAccess: OnUploadAccess | undefined
  onUploadCreate: OnUploadCreate | undefined
  onUploadProgress: OnUploadProgress | undefined
  progressInterval: number
  onUploadComplete: OnUploadComplete | undefined
  onUploadTerminate: OnUploadTerminate | undefined
  onUploadExpire?: OnUploadExpire | undefined
  generateUrl?: GenerateUrl | undefined
  getUploadIdFromRequest?: GetUploadIdFromRequest | undefined
  metricsPath: string | undefined
  relativeLocation: boolean
  maxMetadataSize: number
  lockTimeout: number
  idleTimeout: number
  closeTimeout: number
  minFreeSpace: number
  /** Whether complete uploads expire too (the default keeps them: expiration is for unfinished uploads). */
  expireCompleted: boolean
  /** Most partial uploads one final upload may list (each listing counts, repeats too). */
  maxConcatReferences: number
  /** Longest upload id the routes can reach: 128, or less when Fastify's `maxParamLength` is shorter. */
  maxIdLength: number
  /** Accepted interop versions of the IETF draft; empty when the draft is off. */
  ietfDraftVersions: readonly number[]
}

/** What every operation needs: the validated options, the two seams (store, locker) and the observers. */
export interface TusServices {
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
  /** What accepted uploads may still write, against `minFreeSpace`. */
  diskReserve: DiskReserve
  /** Appends running now, for a graceful close. */
  inFlight: InFlightWrites
  /** HEADs of one upload sharing one read under its lock. */
  sharedReads: SharedReads
  /** Uploads the expiry sweep holds the lock of, expired, while onUploadExpire decides (in this process). */
  expiring: Set<string>
  /** For work outside a request (expiry); requests log through `request.log`. */
  log: FastifyBaseLogger
}

/**
 * What the store is told of a lock hold: its signal (when it can be lost), the hold itself (the lock object), and
 * whether it is the sole writer. Properties set one by one: a literal with conditional spreads costs ten times as
 * much, and every request that takes a lock makes one.
 */
export function heldBy (lock: UploadLock): WriteOptions {
  const held: WriteOptions = { hold: lock }
  const signal = lock.signal
  if (signal !== undefined) held.signal = signal
  if (lock.soleWriter === true) held.soleWriter = true
  return held
}

/**
 * The chunks of `source` while the hold lasts: once its lock is lost (a cross-process lock: the process froze past
 * its lease), its signal's reason is thrown, so no further chunk reaches any store, whether or not the store
 * checks the signal itself. A lock that cannot be lost (the in-process one) passes `source` on as it is.
 */
export function whileHeld (source: AsyncIterable<Buffer>, held: WriteOptions | undefined): AsyncIterable<Buffer> {
  const lockLost = held?.signal
  return lockLost === undefined ? source : untilAborted(source, lockLost)
}

async function * untilAborted (source: AsyncIterable<Buffer>, signal: AbortSignal): AsyncIterable<Buffer> {
  for await (const chunk of source) {
    signal.throwIfAborted()
    yield chunk
  }
}

/**
 * Takes the lock of one upload, waiting at most `lockTimeout` (423 after that). A lock service that is
 * unreachable answers 503 FST_TUS_LOCK_FAILED, which always tells clients when to retry (Retry-After).
 */
export async function lockUpload (services: TusServices, id: string, options: Omit<LockOptions, 'timeoutMs'> = {}): Promise<UploadLock> {
  try {
    return await services.locker.lock(id, { timeoutMs: services.options.lockTimeout, ...options })
  } catch (error) {
    const failure = error as TusHttpError
    if (failure.code === 'FST_TUS_LOCK_FAILED' && failure.headers?.['Retry-After'] === undefined) throw retryLater(failure, 1)
    // Held by the expiry sweep for longer than the wait (a slow onUploadExpire): the client is told so, and when to ask again.
    if (failure.code === 'FST_TUS_LOCKED' && services.expiring.has(id)) throw retryLater(new TusErrors.EXPIRING(), 1)
    throw error
  }
}
