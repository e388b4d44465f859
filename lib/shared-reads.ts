import type { UploadLock } from './lock.js'
import type { UploadInfo } from './store/types.js'

/**
 * Requests that only read an upload under its lock (HEAD) and arrive while another such read of the same
 * upload still waits for the lock join it: one lock, one store read, one answer for all of them. A read
 * that has its lock already is not joined, so every answer reflects the upload as it was at some point
 * after its request arrived. Thirty-two clients polling one upload cost one read, not thirty-two in a row.
 */
export class SharedReads {
  readonly #waiting = new Map<string, Promise<UploadInfo>>()

  async read (id: string, lock: () => Promise<UploadLock>, read: () => Promise<UploadInfo>): Promise<UploadInfo> {
    const waiting = this.#waiting.get(id)
    if (waiting !== undefined) return await waiting
    const shared = this.#lockAndRead(id, lock, read)
    this.#waiting.set(id, shared)
    return await shared
  }

  async #lockAndRead (id: string, lock: () => Promise<UploadLock>, read: () => Promise<UploadInfo>): Promise<UploadInfo> {
    let held: UploadLock
    try {
      held = await lock()
    } finally {
      this.#waiting.delete(id)
    }
    try {
      return await read()
    } finally {
      await held.release()
    }
  }
}
