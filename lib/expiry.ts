import { isExpired, type TusContext } from './context.js'
import { notify } from './events.js'
import type { UploadInfo } from './store/types.js'

/** Uploads checked at once: file-system calls overlap (the thread pool has 4 threads), memory stays bounded. */
const CONCURRENCY = 16

/**
 * Removes every upload whose retention period has passed and resolves with what it removed. Each
 * upload is re-checked under its lock, so one that a request is still writing to is never removed.
 * The store's listing is consumed as it streams, by CONCURRENCY workers; it is never held whole.
 */
export async function removeExpired (context: TusContext): Promise<UploadInfo[]> {
  const removed: UploadInfo[] = []
  const ids = context.store.list()[Symbol.asyncIterator]()
  let failed = false
  const worker = async (): Promise<void> => {
    try {
      while (!failed) {
        const next = await ids.next()
        if (next.done === true) return
        const upload = await removeIfExpired(context, next.value)
        if (upload !== undefined) removed.push(upload)
      }
    } catch (error) {
      failed = true
      throw error
    }
  }
  const results = await Promise.allSettled(Array.from({ length: CONCURRENCY }, worker))
  const failure = results.find((result) => result.status === 'rejected')
  if (failure !== undefined) {
    await ids.return?.()
    throw failure.reason
  }
  return removed
}

async function removeIfExpired (context: TusContext, id: string): Promise<UploadInfo | undefined> {
  const candidate = await context.store.getInfo(id).catch(() => undefined)
  if (candidate === undefined || !isExpired(context, candidate)) return undefined
  const lock = await context.locker.lock(id, { timeoutMs: context.options.lockTimeout, requestRelease: false }).catch(() => undefined)
  if (lock === undefined) return undefined
  try {
    const upload = await context.store.getInfo(id).catch(() => undefined)
    if (upload === undefined || !isExpired(context, upload)) return undefined
    await context.store.terminate(id)
    context.metrics.uploadsExpired++
    notify(context.events, context.log, 'expired', upload)
    return upload
  } finally {
    await lock.release()
  }
}
