import type { LockOptions, UploadLock, UploadLocker } from '../lockers/lock.js'
import type { RequestBody } from './body.js'

interface Write {
  body: RequestBody | undefined
  done: Promise<void>
}

/**
 * The appends running now, and the locks held: closing the server ends the appends' bodies, then waits for their
 * writes to settle and for every lock to be released. A cross-process lock left held by a process that exits keeps
 * its upload from every other process until its ttl (a lock file, a Redis key).
 */
export class InFlightWrites {
  readonly #writes = new Set<Write>()
  readonly #held = new Set<Promise<void>>()
  /** The server is closing (drain was called): no request may begin to store or remove anything. */
  closing = false

  /** Registers an append; call the returned function when it has settled. */
  begin (body: RequestBody | undefined): () => void {
    let settle = (): void => {}
    const write: Write = { body, done: new Promise<void>((resolve) => { settle = resolve }) }
    this.#writes.add(write)
    return () => {
      this.#writes.delete(write)
      settle()
    }
  }

  /** `locker`, with each lock it gives counted as held until its release has ended. */
  counting (locker: UploadLocker): UploadLocker {
    const held = this.#held
    return {
      async lock (id: string, options: LockOptions): Promise<UploadLock> {
        const lock = await locker.lock(id, options)
        let released = (): void => {}
        const release = new Promise<void>((resolve) => { released = resolve })
        held.add(release)
        return {
          // Read when asked for: a lease makes its signal only then.
          get signal () { return lock.signal },
          ...(lock.soleWriter === undefined ? {} : { soleWriter: lock.soleWriter }),
          release: async () => {
            try {
              await lock.release()
            } finally {
              held.delete(release)
              released()
            }
          }
        }
      }
    }
  }

  /**
   * Ends every body being appended (their bytes are kept), then waits up to `timeoutMs` for the writes and for
   * every held lock's release.
   */
  async drain (timeoutMs: number): Promise<void> {
    this.closing = true
    const writes = [...this.#writes]
    if (writes.length === 0 && this.#held.size === 0) return
    for (const write of writes) write.body?.release('shutdown')
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<void>((resolve) => { timer = setTimeout(resolve, timeoutMs) })
    const settled = (async () => {
      await Promise.all(writes.map(async (write) => await write.done))
      // Locks taken meanwhile (a request that waited for one of these) are waited for too.
      while (this.#held.size > 0) await Promise.all([...this.#held])
    })()
    await Promise.race([settled, timeout])
    clearTimeout(timer)
  }
}
