import type { UploadLock } from './lock.js'
import type { UploadInfo } from '../store/types.js'

/**
 * Requests that only read an upload under its lock (HEAD) share the read of another such request of the
 * same upload that is still waiting for the lock or reading under it: one lock, one store read, one answer
 * for all of them. Nothing can change the upload while that lock is held, so each answer is the upload as
 * it was when the request joined. Once the lock is released a new request starts a read of its own.
 * Thirty-two clients polling one upload cost a few reads, not thirty-two in a row.
 */
export class SharedReads {
  readonly #current = new Map<string, Promise<UploadInfo>>()

  async read (id: string, lock: () => Promise<UploadLock>, read: () => Promise<UploadInfo>): Promise<UploadInfo> {
    const current = this.#current.get(id)
    if (current !== undefined) return await current
    const shared = this.#lockAndRead(id, lock, read)
    this.#current.set(id, shared)
    return await shared
  }

  async #lockAndRead (id: string, lock: () => Promise<UploadLock>, read: () => Promise<UploadInfo>): Promise<UploadInfo> {
    let held: UploadLock
    try {
      held = await lock()
    } catch (error) {
      this.#current.delete(id)
      throw error
    }
    try {
      return await read()
    } finally {
      // Before the release: from then on the upload may change, so later requests must read again.
      this.#current.delete(id)
      await held.release()
    }
  }
}
