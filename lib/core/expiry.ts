import { eachConcurrently } from '../each-concurrently.js'
import { notify } from '../observe/events.js'
import type { UploadInfo } from '../store/types.js'
import type { TusServices } from './services.js'
import { removeStaleStaged, stagingDirectory } from './staging.js'
import { isExpired } from './uploads.js'

/** Uploads checked at once: file-system calls overlap (the thread pool has 4 threads), memory stays bounded. */
const CONCURRENCY = 16
const DAY_MS = 24 * 60 * 60 * 1000

/**
 * Removes every upload whose retention period has passed and resolves with how many it removed; each is
 * emitted as `expired`. Each upload is re-checked under its lock, so one that a request is still writing to
 * is never removed. The store's listing is consumed as it streams, by CONCURRENCY workers, and nothing is kept
 * per upload removed: memory stays flat however many there are.
 */
export async function removeExpired (services: TusServices): Promise<number> {
  let removed = 0
  // A sweep is work in flight too: the server's close waits for the removal under way (not for the rest of the
  // listing, which stops), so that no store or lock call comes after the store and the locker are closed.
  const settled = services.inFlight.begin(undefined)
  try {
    await eachConcurrently(services.store.list(), CONCURRENCY, async (id) => {
      if (await removeIfExpired(services, id)) removed++
    })
    if (!services.inFlight.closing) await removeAbandoned(services)
  } finally {
    settled()
  }
  return removed
}

/**
 * What crashes and failures left behind that no upload refers to, once as old as an expired upload: the store's
 * (FileStore: torn info files, data files without an info file, temporary info files; S3Store: multipart
 * uploads without an info object, what an interrupted termination left) and the core's staged bodies (any
 * store). Nothing when uploads never expire.
 */
async function removeAbandoned (services: TusServices): Promise<void> {
  const { daysToKeep, dir } = services.options
  if (!Number.isFinite(daysToKeep)) return
  const before = new Date(Date.now() - daysToKeep * DAY_MS)
  const staged = await removeStaleStaged(stagingDirectory(dir), before)
  const abandoned = services.store.removeAbandoned === undefined ? 0 : await services.store.removeAbandoned(before)
  if (staged + abandoned > 0) services.log.info({ abandoned, staged }, 'fastify-tus: removed what interrupted uploads left behind')
}

/** Whether it removed the upload `id`. */
async function removeIfExpired (services: TusServices, id: string): Promise<boolean> {
  if (services.inFlight.closing) return false
  const candidate = await services.store.getInfo(id).catch(() => undefined)
  if (candidate === undefined || !await hasExpired(services, candidate)) return false
  const lock = await services.locker.lock(id, { timeoutMs: services.options.lockTimeout, requestRelease: false }).catch(() => undefined)
  if (lock === undefined) return false
  try {
    if (services.inFlight.closing) return false
    const upload = await services.store.getInfo(id).catch(() => undefined)
    if (upload === undefined || !await hasExpired(services, upload)) return false
    // Requests that wait for the lock longer than lockTimeout meanwhile are told why (423 with Retry-After).
    services.expiring.add(id)
    if (!await mayExpire(services, upload)) return false
    await services.store.terminate(id)
    services.diskReserve.release(id)
    services.metrics.uploadsExpired++
    notify(services.events, services.log, 'expired', upload)
    return true
  } finally {
    services.expiring.delete(id)
    await lock.release()
  }
}

/** isExpired, false when a partial of an unfinished final cannot be read now: the next sweep decides. */
async function hasExpired (services: TusServices, upload: UploadInfo): Promise<boolean> {
  return await Promise.resolve(isExpired(services, upload)).catch(() => false)
}

/** onUploadExpire's answer: false or a throw keeps the upload (a throw is logged). */
async function mayExpire (services: TusServices, upload: UploadInfo): Promise<boolean> {
  const hook = services.options.onUploadExpire
  if (hook === undefined) return true
  try {
    if (await hook(upload, services.store) !== false) return true
    services.log.info({ uploadId: upload.id }, 'fastify-tus: onUploadExpire kept an expired upload')
  } catch (error) {
    services.log.error({ err: error, uploadId: upload.id }, 'fastify-tus: onUploadExpire failed; the upload is kept')
  }
  return false
}
