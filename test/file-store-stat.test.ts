// How FileStore reads an upload's state: the info cache keeps the uploads that are used (second-chance
// eviction), and the data file of a cached upload is statted synchronously unless such stats prove slow.
import t from 'tap'
import fs from 'node:fs'
import { appendFile, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { FileStore } from '../lib/index.js'
import { BoundedCache } from '../lib/store/info-cache.js'
import { contractId } from './store-contract.js'

const directory = await mkdtemp(join(tmpdir(), 'fastify-tus-stat-'))
t.teardown(async () => { await rm(directory, { recursive: true, force: true }) })

t.test('an entry hit since it was stored survives the next eviction; one not hit goes first', async (t) => {
  const cache = new BoundedCache<string>(() => 1, Number.POSITIVE_INFINITY, 3)
  cache.set('a', 'A')
  cache.set('b', 'B')
  cache.set('c', 'C')
  t.equal(cache.get('a'), 'A')
  cache.set('d', 'D')
  t.equal(cache.peek('a'), 'A', 'the oldest, hit, is kept')
  t.equal(cache.peek('b'), undefined, 'the oldest not hit is evicted')
  cache.set('e', 'E')
  t.equal(cache.peek('c'), undefined, 'then the next one not hit')
  t.equal(cache.peek('a'), 'A', 'a second chance lasts until the entry comes round again')
  cache.set('f', 'F')
  cache.set('g', 'G')
  t.equal(cache.peek('a'), undefined, 'not hit again: evicted in its turn')
  t.same([cache.size, cache.bytes], [3, 3])
  cache.delete('g')
  t.same([cache.size, cache.bytes], [2, 2])
})

t.test('every entry hit: eviction still makes room (each gets one second chance)', async (t) => {
  const cache = new BoundedCache<string>((value) => value.length, 6)
  for (const key of ['a', 'b', 'c']) cache.set(key, 'xx')
  for (const key of ['a', 'b', 'c']) cache.get(key)
  cache.set('d', 'yyyy')
  t.ok(cache.bytes <= 6)
  t.equal(cache.peek('d'), 'yyyy')
  t.equal(cache.size, 2)
})

t.test('a cached upload is statted synchronously, and reports bytes another writer appended', async (t) => {
  const store = new FileStore({ directory, fsync: false })
  t.teardown(async () => { await store.close() })
  const id = contractId()
  await store.create({ id, size: 100, metadata: {} })
  await appendFile(join(directory, id), Buffer.alloc(7))
  const calls = countStats(t)
  t.equal((await store.getInfo(id)).offset, 7)
  t.same(calls, { sync: 1, async: 0 })
})

t.test('stats that prove slow go back to the thread pool', async (t) => {
  const store = new FileStore({ directory, fsync: false })
  t.teardown(async () => { await store.close() })
  const id = contractId()
  await store.create({ id, size: 100, metadata: {} })
  const calls = countStats(t, 2)
  // 16 slow ones among 1024 are allowed (a busy machine preempts the odd one); the 17th turns them off. Sooner if
  // the machine preempts this busy wait for 20 ms (one blocking call): test/quick-calls.test.ts counts on a clock.
  for (let index = 0; index < 17; index++) t.equal((await store.getInfo(id)).offset, 0)
  t.ok(calls.sync >= 1 && calls.sync <= 17, `${calls.sync} synchronous`)
  t.equal(calls.sync + calls.async, 17)
  const sync = calls.sync
  await appendFile(join(directory, id), Buffer.alloc(3))
  t.equal((await store.getInfo(id)).offset, 3)
  t.same(calls, { sync, async: 18 - sync }, 'through fs.stat now')
})

t.test('one synchronous call that blocks the event loop (over 20 ms) sends every later one to the thread pool at once', async (t) => {
  const store = new FileStore({ directory, fsync: false })
  t.teardown(async () => { await store.close() })
  const id = contractId()
  await store.create({ id, size: 100, metadata: {} })
  const calls = countStats(t, 25)
  t.equal((await store.getInfo(id)).offset, 0)
  t.same(calls, { sync: 1, async: 0 })
  t.equal((await store.getInfo(id)).offset, 0)
  t.same(calls, { sync: 1, async: 1 }, 'through fs.stat after one blocking call')
})

t.test('files are closed on the event loop too, and through the thread pool once synchronous calls prove slow', async (t) => {
  const store = new FileStore({ directory, fsync: false })
  t.teardown(async () => { await store.close() })
  // The store's first creation tries the file system's permissions on a file of its own first (completion marks).
  await store.create({ id: contractId(), size: 1, metadata: {} })
  const closes = countCloses(t)
  const first = contractId()
  await store.create({ id: first, size: 3, metadata: {} })
  t.equal(await store.write(first, 0, Readable.from([Buffer.from('abc')])), 3)
  t.same(closes, { sync: 2, async: 0 }, 'the info file after its creation, the data file at completion')
  // As above: the 17th slow stat at the latest (sooner if the machine preempts a busy wait) turns synchronous calls off.
  const stats = countStats(t, 2)
  for (let index = 0; index < 17; index++) await store.getInfo(first)
  t.ok(stats.sync >= 1 && stats.sync <= 17, `${stats.sync} synchronous`)
  t.equal(stats.sync + stats.async, 17)
  const second = contractId()
  await store.create({ id: second, size: 3, metadata: {} })
  t.equal(await store.write(second, 0, Readable.from([Buffer.from('def')])), 3)
  t.same(closes, { sync: 2, async: 2 }, 'fs.close now')
  t.equal(await readFile(join(directory, second), 'utf8'), 'def')
})

/** Counts fs.closeSync and fs.close calls while the test runs. */
function countCloses (t: { teardown: (fn: () => unknown) => void }): { sync: number, async: number } {
  const calls = { sync: 0, async: 0 }
  const module = fs as unknown as Record<'closeSync' | 'close', (...args: unknown[]) => unknown>
  const { closeSync, close } = module
  module.closeSync = (...args) => {
    calls.sync++
    return closeSync.call(fs, ...args)
  }
  module.close = (...args) => {
    calls.async++
    return close.call(fs, ...args)
  }
  t.teardown(() => {
    module.closeSync = closeSync
    module.close = close
  })
  return calls
}

/** Counts FileStore's fs.statSync and fs.stat calls on data files while the test runs; each statSync takes `delayMs` more. */
function countStats (t: { teardown: (fn: () => unknown) => void }, delayMs = 0): { sync: number, async: number } {
  const calls = { sync: 0, async: 0 }
  const module = fs as unknown as Record<'statSync' | 'stat', (path: unknown, ...args: unknown[]) => unknown>
  const { statSync, stat } = module
  const isData = (path: unknown): boolean => typeof path === 'string' && path.startsWith(directory) && !path.endsWith('.json')
  module.statSync = (path, ...args) => {
    if (isData(path)) {
      calls.sync++
      const until = performance.now() + delayMs
      while (performance.now() < until);
    }
    return statSync.call(fs, path, ...args)
  }
  module.stat = (path, ...args) => {
    if (isData(path)) calls.async++
    return stat.call(fs, path, ...args)
  }
  t.teardown(() => {
    module.statSync = statSync
    module.stat = stat
  })
  return calls
}
