import { randomBytes } from 'node:crypto'
import { TusErrors } from '../errors.js'

/** A held lock on one upload. */
export interface UploadLock {
  release (): Promise<void>
  /**
   * Aborted when the lock is lost while held (a cross-process lock that expired: its holder froze or lost its
   * lock service past the ttl, and another request may hold it now). Stores check it before each write, so a
   * stale holder never overwrites bytes the new holder acknowledged. Absent for locks that cannot be lost.
   */
  readonly signal?: AbortSignal | undefined
  /**
   * True when no other process can change the upload, while or between this process's holds: the lock is
   * in-process (MemoryLocker), and a store served by it serves one process (several processes sharing
   * uploads need a cross-process locker). Stores then trust what they know of their own writes.
   */
  readonly soleWriter?: boolean
}

export interface LockOptions {
  /**
   * Called while this lock is held and another request waits for it: the holder should finish soon
   * (a PATCH whose client vanished ends its body so the newer request can go on).
   */
  onReleaseRequested?: () => void
  /** How long to wait before giving up with FST_TUS_LOCKED (423). */
  timeoutMs: number
  /**
   * Whether waiting asks the current holder to finish (its `onReleaseRequested`). Default true: a client
   * that reconnects must not wait behind its own dead request. Background work (expiry) passes false.
   */
  requestRelease?: boolean
}

/**
 * Serialises the requests that change one upload (PATCH, DELETE, concatenation, expiry). The default is
 * in-process; a cross-process implementation (e.g. Redis) plugs in through the `locker` option.
 */
export interface UploadLocker {
  lock (id: string, options: LockOptions): Promise<UploadLock>
  /** Releases resources (connections) when the server closes. */
  close? (): Promise<void>
}

interface Waiter {
  grant: () => void
  onReleaseRequested: (() => void) | undefined
}

interface Holder {
  onReleaseRequested: (() => void) | undefined
  waiters: Waiter[]
}

/** In-process locker: a FIFO queue of waiters per upload id. */
export class MemoryLocker implements UploadLocker {
  readonly #held = new Map<string, Holder>()

  async lock (id: string, options: LockOptions): Promise<UploadLock> {
    const holder = this.#held.get(id)
    if (holder === undefined) {
      this.#held.set(id, { onReleaseRequested: options.onReleaseRequested, waiters: [] })
      return this.#lockFor(id)
    }
    await new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        grant: () => {
          clearTimeout(timer)
          resolve()
        },
        onReleaseRequested: options.onReleaseRequested
      }
      const timer = setTimeout(() => {
        holder.waiters.splice(holder.waiters.indexOf(waiter), 1)
        reject(new TusErrors.LOCKED())
      }, options.timeoutMs)
      holder.waiters.push(waiter)
      if (options.requestRelease !== false) holder.onReleaseRequested?.()
    })
    return this.#lockFor(id)
  }

  #lockFor (id: string): UploadLock {
    let released = false
    return {
      soleWriter: true,
      release: async () => {
        if (released) return
        released = true
        const holder = this.#held.get(id)
        if (holder === undefined) return
        const next = holder.waiters.shift()
        if (next === undefined) {
          this.#held.delete(id)
          return
        }
        holder.onReleaseRequested = next.onReleaseRequested
        next.grant()
      }
    }
  }
}

const signalAborted = Object.getOwnPropertyDescriptor(AbortSignal.prototype, 'aborted')!.get!
const signalThrowIfAborted = AbortSignal.prototype.throwIfAborted

/**
 * `controller`'s signal, made to check a lease whenever it is read (`aborted`, `throwIfAborted()`): `lapse` is
 * called first and may abort it. A process that resumes after a freeze handles the I/O that was waiting
 * before its timers run, so a timer alone would let a write through; a store checking the signal right before
 * it writes sees an expired lease at once.
 */
export function leaseSignal (controller: AbortController, lapse: () => void): AbortSignal {
  const signal = controller.signal
  const check = (): void => {
    if (!(signalAborted.call(signal) as boolean)) lapse()
  }
  Object.defineProperty(signal, 'aborted', { get: () => { check(); return signalAborted.call(signal) as boolean } })
  Object.defineProperty(signal, 'throwIfAborted', { value: () => { check(); signalThrowIfAborted.call(signal) } })
  return signal
}

/**
 * The lease of a cross-process lock this process holds (RedisLocker, FileLocker): renewed every ttl/3 while held.
 * It is lost (`signal` aborted with FST_TUS_LOCK_FAILED, then `onLost`, which asks the holder to finish) when a
 * renewal finds another holder, or when no renewal succeeded for ttl minus a margin (the process froze, or the
 * lock service is unreachable), counted from when the last successful renewal was sent, so that a process
 * resuming after a freeze sees the overdue expiry (timers run before its I/O) before it writes again.
 */
export class Lease {
  readonly #id: string
  readonly #ttlMs: number
  readonly #margin: number
  /** Its signal is the lease's, made when first read (see `signal`). */
  #lost: AbortController | undefined
  /** Why the lease was lost, once it is. */
  #lostWith: Error | undefined
  readonly #onLost: () => void
  readonly #renewal: NodeJS.Timeout
  #expiry: NodeJS.Timeout | undefined
  #validUntil = 0
  #gone = false

  /**
   * `renew` renews the lease in the lock service: it resolves with undefined when renewed, with why when the lock
   * is no longer this holder's, and rejects when it cannot tell (the next renewal tries again).
   */
  constructor (id: string, ttlMs: number, takenAt: number, renew: () => Promise<string | undefined>, onLost: () => void) {
    this.#id = id
    this.#ttlMs = ttlMs
    this.#margin = Math.min(1000, Math.floor(ttlMs / 4))
    this.#onLost = onLost
    this.#expireAt(takenAt + ttlMs)
    this.#renewal = setInterval(() => {
      const sent = Date.now()
      renew().then((lost) => {
        if (lost !== undefined) this.#lose(lost)
        else if (!this.#gone) this.#expireAt(sent + this.#ttlMs)
      }, () => { /* Unknown for now: the next renewal tries again before the lease runs out. */ })
    }, Math.max(1, Math.floor(ttlMs / 3)))
    this.#renewal.unref()
  }

  /**
   * Aborted once the lease is lost, and checked when read too: after a freeze, waiting I/O runs before the expiry
   * timer. Made on first read: a lock taken only to read (HEAD) never needs it, and it costs as much as a lock.
   */
  get signal (): AbortSignal {
    if (this.#lost === undefined) {
      this.#lost = new AbortController()
      if (this.#lostWith !== undefined) this.#lost.abort(this.#lostWith)
      leaseSignal(this.#lost, () => { if (Date.now() >= this.#validUntil - this.#margin) this.#lose('not renewed in time') })
    }
    return this.#lost.signal
  }

  /**
   * Whether the lease still runs by a margin: not lost, and its last renewal (or the take) is recent enough that
   * the lock cannot look expired to another process for at least the margin. Checked without a signal.
   */
  get current (): boolean {
    return !this.#gone && Date.now() < this.#validUntil - this.#margin
  }

  /** The held lock: its release, once whatever the caller does, stops the renewals and then runs `release`. */
  lock (release: () => Promise<void>): UploadLock {
    const lease = this
    let released = false
    return {
      get signal () { return lease.signal },
      release: async () => {
        if (released) return
        released = true
        this.#stop()
        await release()
      }
    }
  }

  #stop (): void {
    clearInterval(this.#renewal)
    clearTimeout(this.#expiry)
  }

  #expireAt (until: number): void {
    this.#validUntil = until
    clearTimeout(this.#expiry)
    this.#expiry = setTimeout(() => { this.#lose('not renewed in time') }, Math.max(0, until - this.#margin - Date.now()))
    this.#expiry.unref()
  }

  #lose (why: string): void {
    this.#stop()
    if (this.#gone) return
    this.#gone = true
    this.#lostWith = new TusErrors.LOCK_FAILED(`the lock of upload ${this.#id} was lost while held: ${why}`)
    this.#lost?.abort(this.#lostWith)
    this.#onLost()
  }
}

/**
 * Counts the locks given and not yet released, so that closing can wait for their release: a cross-process lock
 * left held by a process that exits keeps its upload from every other process until its ttl.
 */
export class HeldLocks {
  #count = 0
  #allReleased: (() => void) | undefined

  taken (): void {
    this.#count++
  }

  released (): void {
    if (--this.#count === 0) this.#allReleased?.()
  }

  get any (): boolean {
    return this.#count > 0
  }

  /** Resolves once no lock is held (at once if none is). */
  async allReleased (): Promise<void> {
    if (this.#count > 0) await new Promise<void>((resolve) => { this.#allReleased = resolve })
    this.#allReleased = undefined
  }
}

/**
 * A request of this process waiting for a lock held elsewhere (another instance, another process): it tries again
 * when signalled (a release was announced: pub/sub, a lock file removed) or after `ms`, whichever comes first. A
 * signal that came before the wait is not lost.
 */
export class RetryWaiter {
  #signalled = false
  #wake: (() => void) | undefined

  signal (): void {
    this.#signalled = true
    this.#wake?.()
  }

  async wait (ms: number): Promise<void> {
    if (!this.#signalled) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, ms)
        this.#wake = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    }
    this.#wake = undefined
    this.#signalled = false
  }
}

/** Adds `item` to the set kept for `id`. */
export function addTo<T> (map: Map<string, Set<T>>, id: string, item: T): void {
  const set = map.get(id)
  if (set === undefined) map.set(id, new Set([item]))
  else set.add(item)
}

/** Removes `item` from the set kept for `id`, and the set once empty. */
export function removeFrom<T> (map: Map<string, Set<T>>, id: string, item: T): void {
  const set = map.get(id)
  if (set === undefined) return
  set.delete(item)
  if (set.size === 0) map.delete(id)
}

/**
 * The longest delay a Node.js timer takes: a longer one fires after 1 ms (with a TimeoutOverflowWarning). Every option
 * that becomes a timer's delay (the plugin's, the lockers', the hooks') is bounded by it.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * A locker option in ms (every one is a timer's delay: a lease, a retry, a command's bound): a positive integer a
 * timer can wait for, refused with a message naming the locker and the option. A longer ttl made every lease expire
 * after 1 ms: each lock lost as soon as taken, each append cut.
 */
export function positiveInteger (locker: string, name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new TusErrors.INVALID_OPTION(`${locker} ${name} must be a positive integer (got ${String(value)})`)
  }
  if (value > MAX_TIMER_MS) {
    throw new TusErrors.INVALID_OPTION(`${locker} ${name} must be at most ${MAX_TIMER_MS} ms (about 24.8 days), the longest a Node.js timer waits (got ${value})`)
  }
  return value
}

/**
 * The tokens of one cross-process locker's holders: each differs from every other holder's, in any process (a
 * random name per locker, then a count), without a random draw per lock.
 */
export class HolderTokens {
  readonly #name = randomBytes(12).toString('base64url')
  #count = 0

  next (): string {
    return `${this.#name}.${(++this.#count).toString(36)}`
  }
}
