import type { Redis } from 'ioredis'
import { TusErrors, errorMessage, retryLater } from '../errors.js'
import { refuseUnknownKeys } from '../known-keys.js'
import { HolderTokens, Lease, RetryWaiter, addTo, positiveInteger, removeFrom, type LockOptions, type UploadLock, type UploadLocker } from './lock.js'

export interface RedisLockerOptions {
  /**
   * The ioredis connection the lock commands go through; the locker never closes it. Pub/sub needs a
   * connection of its own, which the locker opens with `redis.duplicate()` and closes in `close()`.
   */
  redis: Redis
  /** Prefix of the lock keys (`lock:<id>`, `awaited:<id>`) and pub/sub channels, so that several apps can share one Redis. Default `fastify-tus:`. */
  prefix?: string
  /**
   * How long a lock outlives a holder that stopped renewing it (a crashed or frozen process), in ms.
   * The holder renews it every third of this. Also how long no lock is taken after Redis restarted (it may have
   * lost the keys of locks still held), or until a server this locker first connects to has been up for this
   * plus 1 s. Default 10000.
   */
  ttlMs?: number
  /**
   * Longest wait between two attempts of a waiting request, in ms. Waiters are woken at once by the
   * holder's release; this bounds the wait for a lock whose holder vanished and that expires instead. Default 200.
   */
  retryMs?: number
  /**
   * Longest wait for Redis in a release, and for one command of a lock whose own wait (`lockTimeout`) is
   * shorter, in ms. Every Redis call is bounded: while Redis is unreachable a lock fails with
   * FST_TUS_LOCK_FAILED (503, `Retry-After`) within its wait, or this long; a release gives up after this
   * long (the lock then expires by its ttl) and never delays an answer more. Default 1000.
   */
  commandTimeoutMs?: number
}

// A Redis that restarted (without persistence, or a failover to a replica) may have lost every lock key while their
// holders, on any instance, still write: a holder learns it only at its next renewal, or when its lease runs out
// (ttl after its last renewal, which was before the restart). So after each (re)connection the locker reads the
// server's run_id and uptime (INFO, once per connection, as soon as it is ready: an instance idle across a restart
// must not wait again at its next lock) and takes no lock until every lease granted before the restart has run out:
// ttl after it saw the run_id change; else (the same run_id, or none to compare with at the first connection) until
// the server has been up for ttl, +1 s for the resolution of its uptime.
const UPTIME_RESOLUTION_MS = 1000

/** What a 503 of an unreachable Redis suggests to clients, in seconds. */
const RETRY_AFTER_SECONDS = 1

// Taking the lock (KEYS[1]), or, when another holder has it, marking the upload as awaited (KEYS[2]) in the same
// step, so that no release can fall between a failed attempt and the mark. The mark outlives the waiter's next
// attempt (ARGV[3] ms), which renews it.
const ACQUIRE = "if redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 1 end redis.call('set', KEYS[2], '1', 'PX', ARGV[3]) return 0"
// Compare-and-act scripts: a holder touches the key only while it still holds its own token, so a lock that
// expired and was taken by another instance is never extended or deleted by the old holder.
// The release and, when some request awaits the upload, its announcement (waiters on any instance try again at
// once) in one round trip: a release nobody waits for reaches no instance. Announced even when the key was no
// longer ours: it expired, so a waiter may take it now.
const RELEASE = "local released = 0 if redis.call('get', KEYS[1]) == ARGV[1] then released = redis.call('del', KEYS[1]) end if redis.call('del', KEYS[2]) == 1 then redis.call('publish', ARGV[2], ARGV[3]) end return released"
const RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"

interface Holder {
  onReleaseRequested: (() => void) | undefined
}

/**
 * Serialises the requests on one upload across processes and machines with Redis: `SET key token NX PX ttl`
 * takes the lock, the holder renews it while it runs, and it expires `ttlMs` after a holder crashed.
 * A waiting request asks the holder, on whichever instance it runs, to finish (pub/sub), so a client that
 * reconnects to another instance goes on at once instead of waiting behind its own dead request. A release is
 * announced (pub/sub) only when a request waits for the upload.
 */
export class RedisLocker implements UploadLocker {
  readonly #redis: Redis
  readonly #prefix: string
  readonly #ttlMs: number
  readonly #retryMs: number
  readonly #commandTimeoutMs: number
  readonly #holders = new Map<string, Set<Holder>>()
  readonly #waiters = new Map<string, Set<RetryWaiter>>()
  #subscriber: Promise<Redis> | undefined
  #subscriberConnection: Redis | undefined
  /** The pub/sub connection has subscribed once (and ioredis resubscribes it after a reconnection). */
  #subscribed = false
  readonly #tokens = new HolderTokens()
  /** How many times the main connection closed: a new value is a new connection, maybe to a restarted server. */
  #connection = 0
  /** The connection whose server was checked (INFO) since it connected. */
  #checkedConnection = -1
  /** The check of the server under way, and the connection it checks. */
  #checking: { connection: number, done: Promise<void> } | undefined
  /** The run_id of the server last checked: another one means it restarted, or another server took over. */
  #runId: string | undefined
  /** No lock is taken before this time (ms since the epoch): leases granted before a restart may still be held. */
  #lockableFrom = 0
  /** Why locks wait until #lockableFrom, for the message of the refusal. */
  #holdOffReason = ''
  readonly #onConnectionClosed = (): void => { this.#connection++ }
  // A failed check is made again by the next lock, which waits for it.
  readonly #onConnectionReady = (): void => { this.#checkServer().catch(() => {}) }

  constructor (options: RedisLockerOptions) {
    refuseUnknownKeys('RedisLocker', options, Object.keys({ redis: true, prefix: true, ttlMs: true, retryMs: true, commandTimeoutMs: true } satisfies Record<keyof RedisLockerOptions, true>))
    // From JavaScript, without it the first use would fail with a TypeError naming nothing of ours.
    const redis: unknown = options.redis
    if (typeof redis !== 'object' || redis === null || typeof (redis as { on?: unknown }).on !== 'function') {
      throw new TusErrors.INVALID_OPTION(`RedisLocker redis must be an ioredis client, e.g. new Redis(url) (got ${redis === null ? 'null' : typeof redis})`)
    }
    this.#redis = options.redis
    this.#prefix = options.prefix ?? 'fastify-tus:'
    this.#ttlMs = positiveInteger('RedisLocker', 'ttlMs', options.ttlMs ?? 10_000)
    this.#retryMs = positiveInteger('RedisLocker', 'retryMs', options.retryMs ?? 200)
    this.#commandTimeoutMs = positiveInteger('RedisLocker', 'commandTimeoutMs', options.commandTimeoutMs ?? 1000)
    this.#redis.on('close', this.#onConnectionClosed)
    this.#redis.on('ready', this.#onConnectionReady)
  }

  async lock (id: string, options: LockOptions): Promise<UploadLock> {
    const deadline = Date.now() + options.timeoutMs
    // Once subscribed, ioredis keeps the subscription across reconnections by itself.
    if (!this.#subscribed) await this.#bounded('SUBSCRIBE', this.#budget(deadline), async () => { await this.#subscribe() })
    const key = `${this.#prefix}lock:${id}`
    const awaited = this.#awaitedKey(id)
    const token = this.#tokens.next()
    // Registered before the first attempt, so a release between a failed attempt and the wait is not missed.
    const waiter = new RetryWaiter()
    addTo(this.#waiters, id, waiter)
    let sent = Date.now()
    try {
      let asked = false
      // Runs on a ready connection (#bounded): the checks before the script are synchronous, so the connection the
      // script goes out on is the one that was checked.
      const take = async (): Promise<unknown> => {
        if (this.#checkedConnection !== this.#connection) throw new Error('the connection was replaced since its server was checked')
        this.#refuseBeforeLeasesRanOut()
        const connection = this.#connection
        const result = await this.#redis.eval(ACQUIRE, 2, key, awaited, token, this.#ttlMs, this.#retryMs * 3)
        // ioredis resends a command whose connection closed before its answer: it may have run on a server that
        // restarted meanwhile, unchecked.
        if (connection !== this.#connection) {
          if (result === 1) this.#release(id, key, token).catch(() => {})
          throw new Error('the connection closed during the attempt')
        }
        return result
      }
      // An attempt that answers only after this lock gave up (Redis came back) took a lock nobody holds: give it back.
      const late = (result: unknown): void => {
        if (result === 1) this.#release(id, key, token).catch(() => {})
      }
      const attempt = async (): Promise<unknown> => {
        if (this.#checkedConnection !== this.#connection) await this.#bounded('INFO', this.#budget(deadline), async () => { await this.#checkServer() })
        sent = Date.now()
        return await this.#bounded('lock', this.#budget(deadline), take, late)
      }
      while (await attempt() !== 1) {
        const remaining = deadline - Date.now()
        if (remaining <= 0) throw new TusErrors.LOCKED()
        if (!asked && options.requestRelease !== false) {
          asked = true
          await this.#bounded('PUBLISH', this.#budget(deadline), async () => await this.#redis.publish(this.#channel('release-requested'), id))
        }
        await waiter.wait(Math.min(remaining, this.#retryMs))
      }
    } finally {
      removeFrom(this.#waiters, id, waiter)
    }
    return this.#hold(id, key, token, options.onReleaseRequested, sent)
  }

  /** Closes the pub/sub connection (at once, even while Redis is unreachable). Locks still held are left to expire. */
  async close (): Promise<void> {
    this.#redis.off('close', this.#onConnectionClosed)
    this.#redis.off('ready', this.#onConnectionReady)
    const subscriber = this.#subscriberConnection
    this.#subscribed = false
    this.#subscriber = undefined
    this.#subscriberConnection = undefined
    subscriber?.disconnect()
  }

  /** A taken lock: its lease (lock.ts) renewed by a script that extends the key while it still holds our token. */
  #hold (id: string, key: string, token: string, onReleaseRequested: (() => void) | undefined, takenAt: number): UploadLock {
    const holder: Holder = { onReleaseRequested }
    addTo(this.#holders, id, holder)
    const lease = new Lease(id, this.#ttlMs, takenAt, async () => {
      const renewed = await this.#bounded('EVAL', this.#commandTimeoutMs, async () => await this.#redis.eval(RENEW, 1, key, token, this.#ttlMs))
      // Lost (it expired while this process was frozen, and maybe another instance holds it now): the request
      // must stop writing as soon as it can.
      return renewed === 1 ? undefined : 'another holder has it, or it expired'
    }, () => { holder.onReleaseRequested?.() })
    return lease.lock(async () => {
      removeFrom(this.#holders, id, holder)
      try {
        await this.#bounded('release', this.#commandTimeoutMs, async () => { await this.#release(id, key, token) })
      } catch {
        // The request's work is done; with Redis unreachable the lock expires by itself after ttlMs.
      }
    })
  }

  /**
   * The pub/sub connection, subscribed. Shared by every lock and kept while Redis is unreachable (ioredis
   * reconnects it and subscribes again by itself); a lock waits for it only as long as its own bound.
   */
  #subscribe (): Promise<Redis> {
    this.#subscriber ??= (async () => {
      const subscriber = this.#redis.duplicate()
      // ioredis reconnects and resubscribes by itself; meanwhile waiters still retry every retryMs.
      subscriber.on('error', () => {})
      this.#subscriberConnection = subscriber
      subscriber.on('message', (channel: string, id: string) => {
        if (channel === this.#channel('released')) {
          for (const waiter of this.#waiters.get(id) ?? []) waiter.signal()
        } else if (channel === this.#channel('release-requested')) {
          for (const holder of this.#holders.get(id) ?? []) holder.onReleaseRequested?.()
        }
      })
      try {
        await ready(subscriber)
        await subscriber.subscribe(this.#channel('released'), this.#channel('release-requested'))
      } catch (error) {
        subscriber.disconnect()
        throw error
      }
      this.#subscribed = this.#subscriberConnection === subscriber
      return subscriber
    })()
    return this.#subscriber.catch((error: unknown) => {
      this.#subscriber = undefined
      throw error
    })
  }

  /**
   * Reads the run_id and uptime of the server behind the main connection (which is ready) and holds locks off
   * until every lease granted before a restart has run out. A server that refuses INFO (a proxy without it) is
   * not checked: locking goes on unprotected against its restarts. One check at a time per connection: a lock
   * that comes while the check made at its 'ready' runs waits for that one.
   */
  async #checkServer (): Promise<void> {
    const connection = this.#connection
    if (this.#checking?.connection !== connection) {
      const checking = { connection, done: this.#readServer(connection) }
      this.#checking = checking
      checking.done.catch(() => {}).finally(() => { if (this.#checking === checking) this.#checking = undefined })
    }
    await this.#checking.done
  }

  async #readServer (connection: number): Promise<void> {
    let info: string
    try {
      info = await this.#redis.info('server')
    } catch (error) {
      if ((error as Error).name !== 'ReplyError') throw error
      this.#checkedConnection = connection
      return
    }
    // An answer that came through another connection (resent after a reconnection) tells nothing sure of this one.
    if (connection !== this.#connection) return
    const runId = /^run_id:(\S+)/m.exec(info)?.[1]
    const uptimeSeconds = Number(/^uptime_in_seconds:(\d+)/m.exec(info)?.[1])
    this.#checkedConnection = connection
    if (runId === undefined || !Number.isSafeInteger(uptimeSeconds)) return
    const now = Date.now()
    const uptimeMs = uptimeSeconds * 1000
    if (this.#runId !== undefined && runId !== this.#runId) {
      // It restarted, or another server took over (a failover): the keys were lost at some point before now.
      this.#holdOff(now + this.#ttlMs, 'Redis restarted, or another server took over (its run_id changed)')
    } else {
      this.#holdOff(now - uptimeMs + this.#ttlMs + UPTIME_RESOLUTION_MS, `Redis started ${uptimeMs} ms ago`)
    }
    this.#runId = runId
  }

  /** No lock until `until`, or later if an earlier check said so. */
  #holdOff (until: number, reason: string): void {
    if (until <= this.#lockableFrom) return
    this.#lockableFrom = until
    this.#holdOffReason = reason
  }

  /** Refuses a lock (503, Retry-After) while leases granted before a Redis restart may still be held. */
  #refuseBeforeLeasesRanOut (): void {
    const left = this.#lockableFrom - Date.now()
    if (left <= 0) return
    throw retryLater(new TusErrors.LOCK_FAILED(
      `${this.#holdOffReason} and may have lost the keys of locks still held; locks resume once every lease granted before has run out, in ${left} ms`
    ), left / 1000)
  }

  async #release (id: string, key: string, token: string): Promise<void> {
    await this.#redis.eval(RELEASE, 2, key, this.#awaitedKey(id), token, this.#channel('released'), id)
  }

  /** Set while some request waits for the upload's lock (ACQUIRE), so that its release is announced. */
  #awaitedKey (id: string): string {
    return `${this.#prefix}awaited:${id}`
  }

  #channel (name: string): string {
    return `${this.#prefix}${name}`
  }

  /** The time one step of a lock may take: what is left of its wait, and never less than one command's time. */
  #budget (deadline: number): number {
    return Math.max(deadline - Date.now(), this.#commandTimeoutMs)
  }

  /**
   * Runs Redis commands once the connection is ready, giving up after `ms` with FST_TUS_LOCK_FAILED (503,
   * Retry-After) whatever the client's options (its offline queue and retries could hold a command for a
   * minute). Commands are sent only on a ready connection, so none is queued to run after Redis is back;
   * `late` gets the result of one that was sent and answered only after the bound.
   */
  async #bounded<T> (name: string, ms: number, run: () => Promise<T>, late?: (result: T) => void): Promise<T> {
    let gaveUp = false
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        gaveUp = true
        reject(new Error(`no answer within ${ms} ms (connection ${this.#redis.status})`))
      }, ms)
    })
    let running: Promise<T> | undefined
    try {
      return await Promise.race([
        (async () => {
          // A command is sent only on a ready connection: one sent after this bound gave up would still run.
          if (this.#redis.status !== 'ready') await ready(this.#redis)
          if (gaveUp) throw new Error('gave up waiting for the Redis connection')
          running = run()
          return await running
        })(),
        timeout
      ])
    } catch (error) {
      // A refusal of the locker's own (its Retry-After says when), not a failure of Redis.
      if (error instanceof TusErrors.LOCK_FAILED) throw error
      if (gaveUp && running !== undefined) running.then((result) => { late?.(result) }, () => {})
      throw retryLater(new TusErrors.LOCK_FAILED(`Redis ${name}: ${errorMessage(error)}`), RETRY_AFTER_SECONDS)
    } finally {
      clearTimeout(timer)
    }
  }
}

/** The wait for each connection that is not ready, shared by every caller (a listener each would pile up while it is down). */
const readiness = new WeakMap<Redis, Promise<void>>()

/**
 * Resolves once `redis` is ready for commands (connecting it if it was created with lazyConnect); rejects when
 * it is closed for good. Callers bound their own wait.
 */
async function ready (redis: Redis): Promise<void> {
  if (redis.status === 'ready') return
  if (redis.status === 'end') throw new Error('the Redis connection is closed')
  let waiting = readiness.get(redis)
  if (waiting === undefined) {
    if (redis.status === 'wait') redis.connect().catch(() => {})
    waiting = new Promise<void>((resolve, reject) => {
      const onReady = (): void => { done() }
      const onEnd = (): void => { done(new Error('the Redis connection is closed')) }
      const done = (error?: Error): void => {
        redis.off('ready', onReady)
        redis.off('end', onEnd)
        readiness.delete(redis)
        if (error === undefined) resolve()
        else reject(error)
      }
      redis.on('ready', onReady)
      redis.on('end', onEnd)
    })
    // Every caller that still waits handles the rejection; none may be left when it comes.
    waiting.catch(() => {})
    readiness.set(redis, waiting)
  }
  await waiting
}
