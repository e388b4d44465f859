import type { HeldLocks } from '../lockers/lock.js'
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
  /** The locks given and not yet released (counted by the locker the services use). */
  readonly #held: HeldLocks
  /** The server is closing (drain was called): no request may begin to store or remove anything. */
  closing = false
  /** When the close stops waiting (set by the first drain). */
  #deadline: number | undefined

  constructor (held: HeldLocks) {
    this.#held = held
  }

  /**
   * Registers an append (or, without a body, other work the close must wait for: an expiry sweep); call the returned
   * function when it has settled. One that begins while the server closes (its
   * request was admitted before the close, and waited for a hook or a lock meanwhile) has its body ended at once,
   * as drain ends those running: nothing else would, and the server's close would wait for its client to finish.
   */
  begin (body: RequestBody | undefined): () => void {
    let settle = (): void => {}
    const write: Write = { body, done: new Promise<void>((resolve) => { settle = resolve }) }
    this.#writes.add(write)
    if (this.closing) body?.release('shutdown')
    return () => {
      this.#writes.delete(write)
      settle()
    }
  }

  /**
   * Ends every body being appended (their bytes are kept), then waits up to `timeoutMs` for the writes and for
   * every held lock's release.
   */
  async drain (timeoutMs: number): Promise<void> {
    this.closing = true
    // One close has one budget: a second drain (before the store closes) waits only for what is left of it.
    this.#deadline ??= Date.now() + timeoutMs
    const writes = [...this.#writes]
    if (writes.length === 0 && !this.#held.any) return
    for (const write of writes) write.body?.release('shutdown')
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<void>((resolve) => { timer = setTimeout(resolve, Math.max(0, this.#deadline! - Date.now())) })
    const settled = (async () => {
      await Promise.all(writes.map(async (write) => await write.done))
      // Locks taken meanwhile (a request that waited for one of these) are waited for too.
      await this.#held.allReleased()
    })()
    await Promise.race([settled, timeout])
    clearTimeout(timer)
  }
}
