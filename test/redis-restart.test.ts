// Redis restarts empty (no persistence) while a lock is held: no instance may take a lock until every lease
// granted before the restart has run out, or two requests would write one upload at once. Real redis-servers,
// killed and started again on the same port.
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { RedisLocker } from '../lib/lockers/redis-locker.js'
import { idOf, randomBytesSeeded, sha256, startChild, tusRequest, type RawResponse, freePort } from './helpers.js'
import { uniqueName } from './services.js'

const run = promisify(execFile)
const MiB = 1024 * 1024
const OCTET = { 'Content-Type': 'application/offset+octet-stream' }
const TTL = 1500
const scripts = join(import.meta.dirname, '..', 'scripts', 'services')

interface RedisServer { url: string, restart: () => Promise<void> }

/**
 * A redis-server of this test's own (redis-up.sh: no persistence), up for longer than TTL + 1 s when returned;
 * `restart` kills it (SIGKILL) and starts an empty one on the same port.
 */
async function redisServer (t: { teardown: (fn: () => unknown) => void }): Promise<RedisServer> {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-restart-redis-'))
  const port = await freePort()
  const env = { ...process.env, REDIS_PORT: String(port) }
  const up = async (): Promise<void> => { await run('bash', [join(scripts, 'redis-up.sh'), dir], { env }) }
  await up()
  t.teardown(async () => { await run('bash', [join(scripts, 'redis-down.sh'), dir]) })
  await run('bash', [join(scripts, 'redis-settled.sh'), String(Math.ceil(TTL / 1000) + 1)], { env })
  return {
    url: `redis://127.0.0.1:${env.REDIS_PORT}`,
    restart: async () => {
      const pid = Number(await readFile(join(dir, 'redis.pid'), 'utf8'))
      process.kill(pid, 'SIGKILL')
      // Gone once its port refuses connections (the process itself may linger as a zombie for a second).
      while (await new Promise<boolean>((resolve) => {
        const socket = connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true) }).on('error', () => { resolve(false) })
      })) await new Promise((resolve) => setTimeout(resolve, 10))
      await up()
    }
  }
}

function locker (t: { teardown: (fn: () => unknown) => void }, url: string, prefix: string): { locker: RedisLocker, redis: Redis } {
  const redis = new Redis(url)
  redis.on('error', () => {})
  const locker = new RedisLocker({ redis, prefix, ttlMs: TTL })
  t.teardown(async () => {
    await locker.close()
    redis.disconnect()
  })
  return { locker, redis }
}

t.test('after a restart that lost the keys, no instance locks until the leases from before ran out', async (t) => {
  t.setTimeout(60_000)
  const server = await redisServer(t)
  const prefix = `${uniqueName('tus-restart')}:`
  const a = locker(t, server.url, prefix)
  const b = locker(t, server.url, prefix)

  // A server up for longer than the ttl at the first connection: no hold-off.
  let begin = Date.now()
  const held = await a.locker.lock('u', { timeoutMs: 1000 })
  // A hold-off would refuse this lock (it lasts the ttl, 1.5 s, beyond the 1 s wait); the bound below is the ttl, not
  // the wait: an attempt sent just before the wait ends still answers (a loaded run took 1009 ms).
  t.ok(Date.now() - begin < TTL, `taken at once on a server up for long (${Date.now() - begin} ms)`)
  const lost = new Promise<number>((resolve) => { held.signal!.addEventListener('abort', () => { resolve(Date.now()) }) })
  await (await b.locker.lock('other', { timeoutMs: 1000 })).release()

  // A reconnection to the same server (same run_id): no hold-off either.
  const reconnected = new Promise((resolve) => b.redis.once('ready', resolve))
  b.redis.disconnect(true)
  await reconnected
  begin = Date.now()
  await (await b.locker.lock('other', { timeoutMs: 1000 })).release()
  t.ok(Date.now() - begin < TTL, `taken at once after a reconnection to the same server (${Date.now() - begin} ms)`)

  // The leases granted before the restart ran out a ttl after the kill at the latest: the waits are counted from it.
  // From the end of restart(), they were not: the lockers see the new server as soon as it answers, and redis-up.sh
  // may tell so much later on a loaded machine (it pings every 50 ms, each a new redis-cli).
  // d is idle across the restart: it checks the new server as soon as it reconnects, not at its next lock.
  const d = locker(t, server.url, prefix)
  await (await d.locker.lock('idle', { timeoutMs: 1000 })).release()
  const dReconnected = new Promise<number>((resolve) => d.redis.once('ready', () => { resolve(Date.now()) }))
  const killed = Date.now()
  await server.restart()
  const restarted = Date.now()
  // A locker connecting for the first time to the new server has no run_id to compare: it goes by its uptime.
  const c = locker(t, server.url, prefix)
  const refusals: Array<{ locker: string, retryAfter: string | undefined, message: string }> = []
  const lockWhenAllowed = async (name: string, instance: RedisLocker, id: string): Promise<number> => {
    for (;;) {
      try {
        const lock = await instance.lock(id, { timeoutMs: 1000, requestRelease: false })
        const takenAt = Date.now()
        await lock.release()
        return takenAt
      } catch (error) {
        const refused = error as { statusCode?: number, headers?: Record<string, string>, message: string }
        if (refused.statusCode !== 503) throw error
        if (/restarted|started/.test(refused.message)) refusals.push({ locker: name, retryAfter: refused.headers?.['Retry-After'], message: refused.message })
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    }
  }
  const [bTook, cTook] = await Promise.all([lockWhenAllowed('b', b.locker, 'u'), lockWhenAllowed('c', c.locker, 'v')])
  const lostAt = await lost
  t.match(held.signal!.reason, { code: 'FST_TUS_LOCK_FAILED' }, 'the holder from before the restart lost its lock')
  t.ok(lostAt <= bTook, `before the other instance took it (lost ${lostAt - restarted} ms, taken ${bTook - restarted} ms after the restart)`)
  t.ok(bTook - killed >= TTL, `b (which saw the run_id change) waited a ttl (${bTook - killed} ms after the kill)`)
  t.ok(cTook - killed >= TTL, `c (first connection, a server up for ~0 s) waited a ttl (${cTook - killed} ms after the kill)`)
  t.ok(bTook - restarted < TTL + 3000 && cTook - restarted < TTL + 3000, 'and not much more')
  for (const name of ['b', 'c']) {
    const own = refusals.filter((refusal) => refusal.locker === name)
    t.ok(own.length > 0, `${name} was refused with 503 meanwhile`)
    t.ok(own.every((refusal) => ['1', '2', '3'].includes(refusal.retryAfter ?? '')), `${name}: Retry-After the seconds left (${own.map((refusal) => refusal.retryAfter).join(',')})`)
  }
  t.match(refusals[0]?.message, /locks resume once every lease granted before has run out/)
  await held.release()
  const taken = await b.locker.lock('u', { timeoutMs: 1000 })
  t.pass('locks are taken at once again')
  await taken.release()

  // Its hold-off ran from its reconnection; a check at its first lock would refuse it (503) for a ttl more.
  const dReadyAt = await dReconnected
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, dReadyAt + TTL + 100 - Date.now())))
  begin = Date.now()
  await (await d.locker.lock('idle', { timeoutMs: 1000, requestRelease: false })).release()
  t.ok(Date.now() - begin < TTL, `an instance idle across the restart locks at once a ttl after it reconnected (${Date.now() - begin} ms)`)

  // close() leaves no listener of the locker on the app's connection.
  const listening = { close: a.redis.listenerCount('close'), ready: a.redis.listenerCount('ready') }
  await a.locker.close()
  t.same({ close: a.redis.listenerCount('close'), ready: a.redis.listenerCount('ready') }, { close: listening.close - 1, ready: listening.ready - 1 })
})

t.test('a server that refuses INFO (a proxy without it) is not checked: locks are taken at once', async (t) => {
  const server = await redisServer(t)
  await server.restart()
  const a = locker(t, server.url, `${uniqueName('tus-restart')}:`)
  // The server just started (it would hold locks off for a ttl), but answers INFO as a proxy without it does: an error reply.
  const info = a.redis.info.bind(a.redis)
  let refused = 0
  // (ioredis's own ready check calls info() without a section: left alone.)
  Object.assign(a.redis, {
    info: async (...args: unknown[]) => {
      if (args[0] !== 'server') return await (info as (...args: unknown[]) => Promise<string>)(...args)
      refused++
      return await (a.redis.call('NO-SUCH-COMMAND') as Promise<string>)
    }
  })
  t.teardown(() => { Object.assign(a.redis, { info }) })
  const lock = await a.locker.lock('u', { timeoutMs: 1000 })
  t.equal(refused, 1, 'INFO was asked once')
  await lock.release()
  t.equal(refused, 1, 'and not again on the same connection')
})

t.test('two instances: Redis restarts empty under a running PATCH; the other instance waits, the upload stays byte-identical', async (t) => {
  t.setTimeout(120_000)
  const redis = await redisServer(t)
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-restart-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const env = { TUS_CHILD_REDIS_PREFIX: `${uniqueName('tus-restart')}:`, TUS_CHILD_REDIS_URL: redis.url, TUS_CHILD_REDIS_TTL: String(TTL) }
  const [a, b] = await Promise.all([
    startChild(t, dir, { ...env, TUS_CHILD_PROGRESS: '1' }),
    startChild(t, dir, { ...env, TUS_CHILD_REDIS_OPTIONS: JSON.stringify({ enableOfflineQueue: false, maxRetriesPerRequest: 0 }) })
  ])
  const size = 16 * MiB
  const data = randomBytesSeeded(size, 120)
  const created = await tusRequest(`${b!.origin}/files/`, { method: 'POST', headers: { 'Upload-Length': String(size) } })
  t.equal(created.status, 201)
  const id = idOf(new URL(created.headers.location!, b!.origin).href)
  const url = `/files/${id}`

  // A streams the client's bytes, slowly, from offset 0 and keeps doing so after the restart.
  const body = new PassThrough()
  const patchA = tusRequest(`${a!.origin}${url}`, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body })
    .then((response) => response.status, () => 'closed')
  let sent = MiB
  body.write(data.subarray(0, sent))
  for (;;) {
    const { value, done } = await a!.lines.next()
    if (done === true) throw new Error('A exited')
    if (/^progress (\d+)$/.test(value) && Number(value.slice(9)) >= MiB) break
  }
  // Every offset A reports storing from now on.
  const storedByA: number[] = []
  void (async () => {
    for await (const line of a!.lines) if (line.startsWith('progress ')) storedByA.push(Number(line.slice(9)))
  })()
  const trickle = setInterval(() => {
    if (sent >= size / 2) return
    body.write(data.subarray(sent, sent + 16 * 1024))
    sent += 16 * 1024
  }, 10)
  void patchA.then(() => {
    clearInterval(trickle)
    body.destroy()
  })
  t.teardown(() => { clearInterval(trickle) })

  // As in the first test: the leases from before the restart ran out a ttl after the kill at the latest; B may see the
  // new server well before restart() returns.
  const killed = Date.now()
  await redis.restart()
  // B's HEADs, as a client that lost A would send them: 503 until the leases from before the restart ran out.
  const refusals: RawResponse[] = []
  let head: RawResponse
  for (;;) {
    head = await tusRequest(`${b!.origin}${url}`, { method: 'HEAD' })
    if (head.status !== 503) break
    refusals.push(head)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  const headAt = Date.now()
  t.equal(head.status, 200)
  t.ok(headAt - killed >= TTL, `B answered the HEAD only a ttl after the restart (${headAt - killed} ms after the kill)`)
  t.ok(refusals.length > 0 && refusals.every((refusal) => refusal.headers['retry-after'] !== undefined), `${refusals.length} HEADs answered 503 with Retry-After meanwhile`)
  const offset = Number(head.headers['upload-offset'])
  const lastStoredByA = storedByA.at(-1) ?? MiB
  t.equal(offset, lastStoredByA, `the offset is what A stored before it lost the lock (${offset})`)

  // The client resumes through B from the offset B gave.
  const resumed = await tusRequest(`${b!.origin}${url}`, { method: 'PATCH', headers: { 'Upload-Offset': String(offset), ...OCTET }, body: data.subarray(offset) })
  t.equal(resumed.status, 204, `B stores the rest (${resumed.status} ${resumed.text})`)
  t.equal(resumed.headers['upload-offset'], String(size))
  const finalA = await patchA
  t.not(finalA, 204, `A's PATCH, whose lock was lost, is not acknowledged (${String(finalA)})`)
  t.ok(storedByA.every((stored) => stored <= offset), `A stored nothing after B took the upload (A's last ${storedByA.at(-1) ?? 'none'})`)
  t.equal(sha256(await readFile(join(dir, id))), sha256(data), 'the data file is byte-identical to what the client sent')
  for (const server of [a!, b!]) {
    const download = await tusRequest(`${server.origin}${url}`)
    t.equal(download.status, 200)
    t.equal(sha256(download.body), sha256(data), `GET through instance ${server.port} is byte-identical`)
  }
})
