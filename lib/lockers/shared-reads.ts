import type { UploadLock } from './lock.js'
import type { UploadInfo } from '../store/types.js'

/**
 * Requests that only read an upload under its lock (HEAD; a download once its upload looks complete) share the
 * read of another such request of the same upload that is still waiting for the lock or reading under it: one
 * lock, one store read, one answer for all of them. Nothing can change the upload while that lock is held, so
 * each answer is the upload as it was when the request joined. A request that will write (`beforeWrite`) closes
 * the read to later joiners: a read that queued for the lock ahead of a write must not answer a request that
 * arrived after it (a HEAD that comes once another client's PATCH has queued reports that PATCH's bytes).
 * Thirty-two clients polling one upload cost a few reads, not thirty-two in a row. The read keeps the lock until
 * the event loop's current turn is over (setImmediate), so the HEADs that arrive in that turn join it too.
 */
interface SharedRead {
  answer: Promise<UploadInfo>
}

export class SharedReads {
  readonly #current = new Map<string, SharedRead>()

  /** The shared answer itself (not an async wrapper around it: a HEAD is mostly such small costs). */
  read (id: string, lock: () => Promise<UploadLock>, read: () => Promise<UploadInfo>): Promise<UploadInfo> {
    const current = this.#current.get(id)
    if (current !== undefined) return current.answer
    const shared: SharedRead = { answer: Promise.resolve() as unknown as Promise<UploadInfo> }
    shared.answer = this.#lockAndRead(id, shared, lock, read)
    this.#current.set(id, shared)
    return shared.answer
  }

  /** Called by a request that is about to wait for the upload's lock to change it. */
  beforeWrite (id: string): void {
    this.#current.delete(id)
  }

  async #lockAndRead (id: string, shared: SharedRead, lock: () => Promise<UploadLock>, read: () => Promise<UploadInfo>): Promise<UploadInfo> {
    let held: UploadLock
    try {
      held = await lock()
    } catch (error) {
      this.#forget(id, shared)
      throw error
    }
    try {
      const answer = await read()
      // The lock is kept until the event loop has handled the I/O at hand, so that HEADs parsed from the same
      // poll still join this read: nothing can change the upload while its lock is held. A read that takes no
      // thread-pool round trip (a synchronous stat) would otherwise end before any other HEAD arrives.
      await new Promise((resolve) => { setImmediate(resolve) })
      return answer
    } finally {
      // Before the release: from then on the upload may change, so later requests must read again.
      this.#forget(id, shared)
      await held.release()
    }
  }

  /** Only while the entry is still this read's own: a write may have closed it, and a newer read taken its place. */
  #forget (id: string, shared: SharedRead): void {
    if (this.#current.get(id) === shared) this.#current.delete(id)
  }
}
