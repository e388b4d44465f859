// RedisLocker against a real redis-server. Each RedisLocker gets its own ioredis connection, as two app
// instances would.
import t from 'tap'
import { Redis } from 'ioredis'
import { RedisLocker, type RedisLockerOptions } from '../lib/lockers/redis-locker.js'
import { lockError } from './helpers.js'
import { redisUrl, uniqueName } from './services.js'

const url = redisUrl()

interface Instance { locker: RedisLocker, redis: Redis, prefix: string }

function instances (t: { teardown: (fn: () => unknown) => void }, count: number, options: Partial<RedisLockerOptions> = {}): Instance[] {
  const prefix = `${uniqueName('tus-test')}:`
  return Array.from({ length: count }, () => {
    const redis = new Redis(url)
    const locker = new RedisLocker({ redis, prefix, ...options })
    t.teardown(async () => {
      await locker.close()
      redis.disconnect()
    })
    return { locker, redis, prefix }
  })
}

/** Runs each attempt to take a lock (the script that SETs the key NX) of this connection through `wrap`. */
function onAttempts (redis: Redis, wrap: (attempt: () => Promise<unknown>) => Promise<unknown>): void {
  const evaluate = redis.eval.bind(redis) as (...args: unknown[]) => Promise<unknown>
  Object.assign(redis, {
    eval: async (...args: unknown[]) => String(args[0]).includes("'NX'") ? await wrap(async () => await evaluate(...args)) : await evaluate(...args)
  })
}

/**
 * A locker on a port nothing listens on, with ioredis's default options: it keeps reconnecting (and by itself
 * would hold a command for 10 s or more); every command is bounded by 300 ms.
 */
function unreachable (t: { teardown: (fn: () => unknown) => void }): { redis: Redis, locker: RedisLocker } {
  const redis = new Redis({ host: '127.0.0.1', port: 1 })
  redis.on('error', () => {})
  const locker = new RedisLocker({ redis, commandTimeoutMs: 300 })
  t.teardown(async () => {
    await locker.close()
    redis.disconnect()
  })
  return { redis, locker }
}

t.test('a held lock refuses another instance with FST_TUS_LOCKED (423) until it is released', async (t) => {
  const [a, b] = instances(t, 2)
  const held = await a!.locker.lock('upload1', { timeoutMs: 1000 })
  const refused = await lockError(b!.locker.lock('upload1', { timeoutMs: 300, requestRelease: false }))
  t.equal(refused.code, 'FST_TUS_LOCKED')
  t.equal(refused.statusCode, 423)
  const other = await b!.locker.lock('upload2', { timeoutMs: 1000 })
  t.pass('another upload id is independent')
  await other.release()
  await held.release()
  await held.release()
  const after = await b!.locker.lock('upload1', { timeoutMs: 1000 })
  t.equal(await a!.redis.exists(`${a!.prefix}lock:upload1`), 1, 'the lock key exists while held')
  await after.release()
  t.equal(await a!.redis.exists(`${a!.prefix}lock:upload1`), 0, 'release deletes the key')
})

t.test('a waiter gets the lock as soon as the holder on another instance releases it', async (t) => {
  const [a, b] = instances(t, 2, { retryMs: 60_000 })
  const held = await a!.locker.lock('u', { timeoutMs: 1000 })
  // The waiter's attempts, seen on its connection: the release must come after its first attempt failed,
  // else the waiter would simply take the free lock at its first try.
  let failedOnce: () => void = () => {}
  const firstFailure = new Promise<void>((resolve) => { failedOnce = resolve })
  const attempts: unknown[] = []
  onAttempts(b!.redis, async (attempt) => {
    const result = await attempt()
    attempts.push(result)
    if (result === 0) failedOnce()
    return result
  })
  // retryMs is a minute and the timeout 30 s: only the release announcement can wake the waiter in time.
  const begin = Date.now()
  const waiting = b!.locker.lock('u', { timeoutMs: 30_000, requestRelease: false })
  await firstFailure
  await held.release()
  // A deadline, not a sleep: the release wakes the waiter within milliseconds; without it the waiter
  // would sleep until its timeout (30 s) and take the lock only then.
  let deadline: NodeJS.Timeout | undefined
  const next = await Promise.race([
    waiting,
    new Promise<undefined>((resolve) => { deadline = setTimeout(() => { resolve(undefined) }, 5000) })
  ])
  clearTimeout(deadline)
  t.ok(next !== undefined, `woken by the release (after ${Date.now() - begin} ms)`)
  t.same(attempts, [0, 1], 'refused once while held, then taken at the next attempt')
  if (next !== undefined) await next.release()
  else void waiting.then(async (lock) => { await lock.release() }, () => {})
})

t.test('a release is announced to the instances only when a request waits for the upload', async (t) => {
  const [a, b] = instances(t, 2)
  const channel = `${a!.prefix}released`
  const listener = new Redis(url)
  t.teardown(() => { listener.disconnect() })
  const heard: string[] = []
  let onHeard: () => void = () => {}
  listener.on('message', (_channel: string, id: string) => {
    heard.push(id)
    onHeard()
  })
  await listener.subscribe(channel)
  /** Every announcement made so far, up to a marker published after them (Redis keeps their order). */
  const announced = async (): Promise<string[]> => {
    const marked = new Promise<void>((resolve) => { onHeard = () => { if (heard.at(-1) === 'marker') resolve() } })
    await a!.redis.publish(channel, 'marker')
    await marked
    return heard.splice(0).filter((id) => id !== 'marker')
  }

  await (await a!.locker.lock('quiet', { timeoutMs: 1000 })).release()
  t.same(await announced(), [], 'nobody waited: nothing announced')

  const held = await a!.locker.lock('busy', { timeoutMs: 1000 })
  const waiting = b!.locker.lock('busy', { timeoutMs: 5000, requestRelease: false })
  while (await a!.redis.exists(`${a!.prefix}awaited:busy`) === 0) await new Promise((resolve) => setImmediate(resolve))
  await held.release()
  await (await waiting).release()
  t.same(await announced(), ['busy'], 'the release the waiter waited for is announced, and the waiter\'s own is not')
  t.equal(await a!.redis.exists(`${a!.prefix}awaited:busy`), 0, 'the mark is gone with the announcement')
})

t.test('three instances contending for one upload never overlap', async (t) => {
  t.setTimeout(120_000)
  const all = instances(t, 3)
  const counter = `${all[0]!.prefix}counter`
  let inside = 0
  let overlaps = 0
  const rounds = 20
  await Promise.all(all.map(async ({ locker, redis }) => {
    for (let i = 0; i < rounds; i++) {
      const lock = await locker.lock('shared', { timeoutMs: 60_000, requestRelease: false })
      inside++
      if (inside > 1) overlaps++
      // A non-atomic read-modify-write through Redis: lost updates if two holders ever overlap.
      const value = Number(await redis.get(counter) ?? '0')
      await redis.set(counter, String(value + 1))
      inside--
      await lock.release()
    }
  }))
  t.equal(overlaps, 0)
  t.equal(await all[0]!.redis.get(counter), String(3 * rounds))
})

t.test('waiting asks the holder on another instance to finish; requestRelease: false does not', async (t) => {
  const [a, b] = instances(t, 2)
  let asked = 0
  let askedToRelease = (): void => {}
  const releasedOnRequest = new Promise<void>((resolve) => { askedToRelease = resolve })
  const held = await a!.locker.lock('u', {
    timeoutMs: 1000,
    onReleaseRequested: () => {
      asked++
      askedToRelease()
    }
  })

  const quiet = await lockError(b!.locker.lock('u', { timeoutMs: 300, requestRelease: false }))
  t.equal(quiet.code, 'FST_TUS_LOCKED')
  t.equal(asked, 0, 'background waiters do not disturb the holder')

  const waiting = b!.locker.lock('u', { timeoutMs: 30_000 })
  await releasedOnRequest
  t.equal(asked, 1, 'the holder was asked once')
  await held.release()
  const next = await waiting
  await next.release()
})

t.test('a holder that stops renewing (crashed) loses the lock after ttlMs; a live one keeps it', async (t) => {
  const [a, b] = instances(t, 2, { ttlMs: 1000, retryMs: 50 })
  const live = await a!.locker.lock('live', { timeoutMs: 1000 })
  // Three ttls: without renewal the key would have expired long before the wait ends.
  const refused = await lockError(b!.locker.lock('live', { timeoutMs: 3000, requestRelease: false }))
  t.equal(refused.code, 'FST_TUS_LOCKED', 'renewed while held')
  await live.release()

  await a!.locker.lock('crashed', { timeoutMs: 1000 })
  a!.redis.disconnect() // no renewals, no release: what a SIGKILLed instance leaves behind
  const taken = await b!.locker.lock('crashed', { timeoutMs: 30_000, requestRelease: false })
  t.pass('taken over after expiry')
  await taken.release()
})

t.test('a holder whose lock was lost is asked to stop, and its release never deletes the new holder\'s lock', async (t) => {
  // A ttl of 1.5 s, not 300 ms: b's key must outlive the check below, and a loaded run saw b's renewals (every
  // ttl/3) late by more than the 300 ms: the key expired, and a took the lock.
  const [a, b] = instances(t, 2, { ttlMs: 1500 })
  let stop: () => void = () => {}
  const stopped = new Promise<void>((resolve) => { stop = resolve })
  const stale = await a!.locker.lock('u', { timeoutMs: 1000, onReleaseRequested: () => { stop() } })
  // As if this process froze past the ttl and another instance took the lock in the meantime.
  await a!.redis.del(`${a!.prefix}lock:u`)
  const current = await b!.locker.lock('u', { timeoutMs: 1000, requestRelease: false })
  await stopped
  t.pass('the old holder was told at its next renewal')
  await stale.release()
  const refused = await lockError(a!.locker.lock('u', { timeoutMs: 200, requestRelease: false }))
  t.equal(refused.code, 'FST_TUS_LOCKED', 'the new holder still holds it')
  await current.release()
})

t.test('Redis unreachable: FST_TUS_LOCK_FAILED (503)', async (t) => {
  const redis = new Redis({ host: '127.0.0.1', port: 1, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  redis.on('error', () => {})
  const locker = new RedisLocker({ redis })
  t.teardown(async () => {
    await locker.close()
    redis.disconnect()
  })
  const error = await lockError(locker.lock('u', { timeoutMs: 1000 }))
  t.equal(error.code, 'FST_TUS_LOCK_FAILED')
  t.equal(error.statusCode, 503)
})

t.test('requests waiting for a Redis that is not ready share one wait: no listener each, every one answered in its bound', async (t) => {
  const { redis, locker } = unreachable(t)
  const warnings: string[] = []
  const onWarning = (warning: Error): void => { warnings.push(warning.name) }
  process.on('warning', onWarning)
  t.teardown(() => { process.off('warning', onWarning) })
  const baseline = { ready: redis.listenerCount('ready'), end: redis.listenerCount('end') }
  const waiting = Array.from({ length: 40 }, async (_, index) => await lockError(locker.lock(`u${index}`, { timeoutMs: 300 })))
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal(redis.listenerCount('ready'), baseline.ready + 1, 'one listener for the readiness of the connection, not one per request')
  t.equal(redis.listenerCount('end'), baseline.end + 1)
  for (const error of await Promise.all(waiting)) t.equal((error as { statusCode?: number }).statusCode, 503)
  t.same(warnings, [], 'no MaxListenersExceededWarning')

  // A connection made on first use (lazyConnect) that does come up: every waiter goes on, and the wait is gone.
  const lazy = new Redis(url, { lazyConnect: true })
  const lazyLocker = new RedisLocker({ redis: lazy })
  const ownListeners = lazy.listenerCount('ready')
  t.teardown(async () => {
    await lazyLocker.close()
    lazy.disconnect()
  })
  const locks = await Promise.all(Array.from({ length: 40 }, async (_, index) => await lazyLocker.lock(`v${index}`, { timeoutMs: 3000 })))
  t.equal(locks.length, 40, 'every request got its lock once connected')
  await Promise.all(locks.map(async (lock) => { await lock.release() }))
  t.equal(lazy.listenerCount('ready'), ownListeners, 'the shared wait is gone once the connection is ready')
  t.same(warnings, [])
})

t.test('invalid options are refused at construction', async (t) => {
  const redis = new Redis(url, { lazyConnect: true })
  for (const options of [{ ttlMs: 0 }, { ttlMs: 1.5 }, { retryMs: -1 }]) {
    t.throws(() => new RedisLocker({ redis, ...options }), { code: 'FST_TUS_INVALID_OPTION' }, JSON.stringify(options))
  }
  // From JavaScript: no client, or a URL where the client goes.
  for (const options of [{}, { redis: 'redis://127.0.0.1:6379' }, { redis: null }]) {
    t.throws(() => new RedisLocker(options as unknown as RedisLockerOptions), { code: 'FST_TUS_INVALID_OPTION', message: /RedisLocker redis must be an ioredis client/ }, JSON.stringify(options))
  }
  redis.disconnect()
})

t.test('Redis unreachable with ioredis\'s default options (offline queue, 20 retries): LOCK_FAILED with Retry-After within the wait', async (t) => {
  const { locker } = unreachable(t)
  for (const timeoutMs of [800, 50]) {
    const begin = Date.now()
    const error = await lockError(locker.lock('u', { timeoutMs })) as { code?: string, statusCode?: number, headers?: Record<string, string> }
    const elapsed = Date.now() - begin
    t.equal(error.code, 'FST_TUS_LOCK_FAILED')
    t.equal(error.statusCode, 503)
    t.equal(error.headers?.['Retry-After'], '1')
    // Unbounded, ioredis's 20 retries would take about 10 s; the upper margin is for a loaded machine.
    t.ok(elapsed >= Math.max(timeoutMs, 300) - 20 && elapsed < Math.max(timeoutMs, 300) + 1500, `answered after ${elapsed} ms (wait ${timeoutMs} ms, command bound 300 ms)`)
  }
  const begin = Date.now()
  await locker.close()
  t.ok(Date.now() - begin < 1500, `close does not wait for Redis's retries (${Date.now() - begin} ms)`)
})

t.test('an attempt that answers only after the lock gave up is given back: the upload is not locked for a ttl', async (t) => {
  // A ttl of 10 s, not 30: a server up for less than the ttl holds every first lock off (restart check), and one
  // started for this file alone (scripts/services/run.sh) was up for 24 s here.
  const [a, b] = instances(t, 2, { commandTimeoutMs: 200, ttlMs: 10_000 })
  // The first lock on a connection reads the server's INFO first (restart check): done here, so that the attempt
  // below is sent within its 200 ms whatever the time to connect.
  await (await a!.locker.lock('warm-up', { timeoutMs: 1000 })).release()
  // The attempt reaches Redis only after the bound (as after an outage): it takes the lock for nobody.
  let arrived: () => void = () => {}
  const lateSetDone = new Promise<void>((resolve) => { arrived = resolve })
  onAttempts(a!.redis, async (attempt) => {
    await new Promise((resolve) => setTimeout(resolve, 600))
    const result = await attempt()
    arrived()
    return result
  })
  const error = await lockError(a!.locker.lock('u', { timeoutMs: 100 }))
  t.equal(error.code, 'FST_TUS_LOCK_FAILED')
  await lateSetDone
  // Without the give-back the key would live 10 s; b waits at most 3 s.
  const taken = await b!.locker.lock('u', { timeoutMs: 3000, requestRelease: false })
  t.pass('another instance takes the lock')
  await taken.release()
})

t.test('a lock\'s signal is aborted when it is lost: taken by another holder, or not renewed in time', async (t) => {
  // 1.5 s, not 400 ms: b's lease must still be current when read below; with 400 ms, renewals late by 300 ms (a
  // loaded machine) would have it read as lost.
  const [a, b] = instances(t, 2, { ttlMs: 1500 })
  const taken = await a!.locker.lock('u', { timeoutMs: 1000 })
  t.equal(taken.signal?.aborted, false, 'held')
  await a!.redis.del(`${a!.prefix}lock:u`)
  const current = await b!.locker.lock('u', { timeoutMs: 1000, requestRelease: false })
  // Perhaps aborted already: a's renewal may find the key gone while b takes it (a loaded run waited here forever).
  await aborted(taken.signal!)
  t.match(taken.signal!.reason, { code: 'FST_TUS_LOCK_FAILED' }, 'lost: the reason says so')
  t.equal(current.signal?.aborted, false, 'the new holder\'s is not')
  await taken.release()
  await current.release()

  // A ttl of 2 s: the lease ends at most 1.5 s after the last renewal (the margin is a quarter), which leaves timers
  // half a second to run late on a loaded machine.
  const [e] = instances(t, 1, { ttlMs: 2000 })
  const quiet = await e!.locker.lock('v', { timeoutMs: 1000 })
  const began = Date.now()
  e!.redis.disconnect() // no renewal can succeed now: the lock may expire any time after its ttl
  await aborted(quiet.signal!)
  const after = Date.now() - began
  t.ok(after < 2000, `aborted before the ttl could run out (${after} ms)`)
  await quiet.release()

  // A signal read for the first time only after the lease was lost is aborted already, with the same reason.
  let told: () => void = () => {}
  const wasTold = new Promise<void>((resolve) => { told = resolve })
  const [c, d] = instances(t, 2, { ttlMs: 400 })
  const unread = await c!.locker.lock('w', { timeoutMs: 1000, onReleaseRequested: () => { told() } })
  await c!.redis.del(`${c!.prefix}lock:w`)
  const taker = await d!.locker.lock('w', { timeoutMs: 1000, requestRelease: false })
  await wasTold
  t.equal(unread.signal?.aborted, true, 'lost before its first read: aborted when read')
  t.match(unread.signal!.reason, { code: 'FST_TUS_LOCK_FAILED' })
  await unread.release()
  await taker.release()
})

/** Resolves once `signal` is aborted: at once if it is already (its abort event is not sent again to a late listener). */
async function aborted (signal: AbortSignal): Promise<void> {
  if (signal.aborted) return
  await new Promise((resolve) => { signal.addEventListener('abort', resolve, { once: true }) })
}

t.test('a lock\'s signal checks the lease when read: a write right after a freeze sees it expired before any timer runs', async (t) => {
  const [a] = instances(t, 1, { ttlMs: 400 })
  const lock = await a!.locker.lock('frozen', { timeoutMs: 1000 })
  t.equal(lock.signal?.aborted, false)
  // Block the event loop past the ttl, as a frozen process: no timer or renewal can run meanwhile.
  const until = Date.now() + 500
  while (Date.now() < until);
  t.equal(lock.signal?.aborted, true, 'aborted when read, before the expiry timer had a chance')
  t.throws(() => { lock.signal!.throwIfAborted() }, { code: 'FST_TUS_LOCK_FAILED' })
  await lock.release()
})
