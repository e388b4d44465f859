import { isExpired, type TusContext } from './context.js'
import { notify } from './events.js'
import type { UploadInfo } from './store/types.js'

/**
 * Removes every upload whose retention period has passed and resolves with what it removed. Each
 * upload is re-checked under its lock, so one that a request is still writing to is never removed.
 */
export async function removeExpired (context: TusContext): Promise<UploadInfo[]> {
  const removed: UploadInfo[] = []
  for await (const id of context.store.list()) {
    const candidate = await context.store.getInfo(id).catch(() => undefined)
    if (candidate === undefined || !isExpired(context, candidate)) continue
    const lock = await context.locker.lock(id, { timeoutMs: context.options.lockTimeout, requestRelease: false }).catch(() => undefined)
    if (lock === undefined) continue
    try {
      const upload = await context.store.getInfo(id).catch(() => undefined)
      if (upload !== undefined && isExpired(context, upload)) {
        await context.store.terminate(id)
        removed.push(upload)
        context.metrics.uploadsExpired++
        notify(context.events, context.log, 'expired', upload)
      }
    } finally {
      await lock.release()
    }
  }
  return removed
}
