import { notify } from '../observe/events.js'
import type { UploadInfo } from '../store/types.js'
import type { TusServices } from './services.js'
import { isExpired } from './uploads.js'

/**
 * Removes every upload whose retention period has passed and resolves with what it removed. Each
 * upload is re-checked under its lock, so one that a request is still writing to is never removed.
 */
export async function removeExpired (services: TusServices): Promise<UploadInfo[]> {
  const removed: UploadInfo[] = []
  for await (const id of services.store.list()) {
    const candidate = await services.store.getInfo(id).catch(() => undefined)
    if (candidate === undefined || !isExpired(services, candidate)) continue
    const lock = await services.locker.lock(id, { timeoutMs: services.options.lockTimeout, requestRelease: false }).catch(() => undefined)
    if (lock === undefined) continue
    try {
      const upload = await services.store.getInfo(id).catch(() => undefined)
      if (upload !== undefined && isExpired(services, upload) && await mayExpire(services, upload)) {
        await services.store.terminate(id)
        removed.push(upload)
        services.metrics.uploadsExpired++
        notify(services.events, services.log, 'expired', upload)
      }
    } finally {
      await lock.release()
    }
  }
  return removed
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
