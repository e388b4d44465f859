import { randomBytes } from 'node:crypto'
import type { Redis } from 'ioredis'
import { TusErrors, errorMessage } from '../errors.js'
import type { LockOptions, UploadLock, UploadLocker } from './lock.js'

export interface RedisLockerOptions {
  /**
   * The ioredis connection the lock commands go through; the locker never closes it. Pub/sub needs a
   * connection of its own, which the locker opens with `redis.duplicate()` and closes in `close()`.
   */
  redis: Redis
  /** Prefix of the lock keys and pub/sub channels, so that several apps can share one Redis. Default `fastify-tus:`. */
  prefix?: string
  /**
   * How long a lock outlives a holder that stopped renewing it (a crashed or frozen process), in ms.
   * The holder renews it every third of this. Default 10000.
   */
  ttlMs?: number
  /**
   * Longest wait between two attempts of a waiting request, in ms. Waiters are woken at once by the
   * holder's release; this bounds the wait for a lock whose holder vanished and that expires instead. Default 200.
   */
  retryMs?: number
}

// Compare-and-act scripts: a holder touches the key only while it still holds its own token, so a lock that
// expired and was taken by another instance is never extended or deleted by the old holder.
const RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
const RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"

interface Holder {
  onReleaseRequested: (() => void) | undefined
}

/** A request waiting in this process for a lock: woken when any instance announces a release of its id. */
class Waiter {
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

/**
 * Serialises the requests on one upload across processes and machines with Redis: `SET key token NX PX ttl`
 * takes the lock, the holder renews it while it runs, and it expires `ttlMs` after a holder crashed.
 * A waiting request asks the holder, on whichever instance it runs, to finish (pub/sub), so a client that
 * reconnects to another instance goes on at once instead of waiting behind its own dead request.
 */
export class RedisLocker implements UploadLocker {
  readonly #redis: Redis
  readonly #prefix: string
  readonly #ttlMs: number
  readonly #retryMs: number
  readonly #holders = new Map<string, Set<Holder>>()
  readonly #waiters = new Map<string, Set<Waiter>>()
  #subscriber: Promise<Redis> | undefined

  constructor (options: RedisLockerOptions) {
    this.#redis = options.redis
    this.#prefix = options.prefix ?? 'fastify-tus:'
    this.#ttlMs = positiveInteger('ttlMs', options.ttlMs ?? 10_000)
    this.#retryMs = positiveInteger('retryMs', options.retryMs ?? 200)
  }

  async lock (id: string, options: LockOptions): Promise<UploadLock> {
    await this.#subscribe()
    const key = `${this.#prefix}lock:${id}`
    const token = randomBytes(16).toString('base64url')
    const deadline = Date.now() + options.timeoutMs
    // Registered before the first attempt, so a release between a failed attempt and the wait is not missed.
    const waiter = new Waiter()
    addTo(this.#waiters, id, waiter)
    try {
      let asked = false
      while (await this.#command(async () => await this.#redis.set(key, token, 'PX', this.#ttlMs, 'NX')) !== 'OK') {
        const remaining = deadline - Date.now()
        if (remaining <= 0) throw new TusErrors.LOCKED()
        if (!asked && options.requestRelease !== false) {
          asked = true
          await this.#command(async () => await this.#redis.publish(this.#channel('release-requested'), id))
        }
        await waiter.wait(Math.min(remaining, this.#retryMs))
      }
    } finally {
      removeFrom(this.#waiters, id, waiter)
    }
    return this.#hold(id, key, token, options.onReleaseRequested)
  }

  /** Closes the pub/sub connection. Locks still held are left to expire. */
  async close (): Promise<void> {
    const subscriber = this.#subscriber
    this.#subscriber = undefined
    if (subscriber !== undefined) await subscriber.then(async (connection) => await connection.quit(), () => undefined)
  }

  #hold (id: string, key: string, token: string, onReleaseRequested: (() => void) | undefined): UploadLock {
    const holder: Holder = { onReleaseRequested }
    addTo(this.#holders, id, holder)
    const renewal = setInterval(() => {
      this.#redis.eval(RENEW, 1, key, token, this.#ttlMs).then((renewed) => {
        // Lost (it expired while this process was frozen, and maybe another instance holds it now): the
        // request must stop writing as soon as it can.
        if (renewed !== 1) {
          clearInterval(renewal)
          holder.onReleaseRequested?.()
        }
      }, () => { /* Redis unreachable for now: the next renewal tries again before the lock expires. */ })
    }, Math.max(1, Math.floor(this.#ttlMs / 3)))
    renewal.unref()
    let released = false
    return {
      release: async () => {
        if (released) return
        released = true
        clearInterval(renewal)
        removeFrom(this.#holders, id, holder)
        try {
          await this.#redis.eval(RELEASE, 1, key, token)
          await this.#redis.publish(this.#channel('released'), id)
        } catch {
          // The request's work is done; with Redis unreachable the lock expires by itself after ttlMs.
        }
      }
    }
  }

  #subscribe (): Promise<Redis> {
    this.#subscriber ??= (async () => {
      const subscriber = this.#redis.duplicate()
      // ioredis reconnects and resubscribes by itself; meanwhile waiters still retry every retryMs.
      subscriber.on('error', () => {})
      subscriber.on('message', (channel: string, id: string) => {
        if (channel === this.#channel('released')) {
          for (const waiter of this.#waiters.get(id) ?? []) waiter.signal()
        } else if (channel === this.#channel('release-requested')) {
          for (const holder of this.#holders.get(id) ?? []) holder.onReleaseRequested?.()
        }
      })
      await subscriber.subscribe(this.#channel('released'), this.#channel('release-requested'))
      return subscriber
    })()
    return this.#subscriber.catch((error: unknown) => {
      this.#subscriber = undefined
      throw new TusErrors.LOCK_FAILED(errorMessage(error))
    })
  }

  #channel (name: string): string {
    return `${this.#prefix}${name}`
  }

  async #command<T> (run: () => Promise<T>): Promise<T> {
    try {
      return await run()
    } catch (error) {
      throw new TusErrors.LOCK_FAILED(errorMessage(error))
    }
  }
}

function addTo<T> (map: Map<string, Set<T>>, id: string, item: T): void {
  const set = map.get(id)
  if (set === undefined) map.set(id, new Set([item]))
  else set.add(item)
}

function removeFrom<T> (map: Map<string, Set<T>>, id: string, item: T): void {
  const set = map.get(id)
  if (set === undefined) return
  set.delete(item)
  if (set.size === 0) map.delete(id)
}

function positiveInteger (name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new TusErrors.INVALID_OPTION(`RedisLocker ${name} must be a positive integer (got ${String(value)})`)
  }
  return value
}
