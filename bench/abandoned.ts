/**
 * FileStore.removeAbandoned() over a store of N live uploads (none abandoned but 1% of each kind of leftover),
 * against its peer, the pass removeExpired() makes over the same store when nothing expires (list() + getInfo()
 * of every upload, 16 at a time), in the same process and run: wall time, the process's CPU time and how far
 * RSS rose while each ran. Cold: a store that just opened the directory (empty info cache); warm: the store
 * after that pass (its cache holds every info, as right after removeExpired()'s own pass).
 *
 * Then, when BENCH_BASE_DIST names another build's dist/index.js (e.g. main's), app.tus.removeExpired() over the
 * same N uploads (none expired) with this build's dist and with that one, alternated, each a first (cold) and a
 * second (warm) call in a fresh Fastify instance: what the sweep of abandoned files adds to expiry.
 *
 * With --expired, instead: app.tus.removeExpired() over N uploads that have all expired (made afresh before each
 * call, their data files set 30 days back), against the file system's floor: the same store made the same way, its
 * uploads removed by a loop making only the calls an expiry needs (a synchronous `stat` of the data file, then
 * `unlink` of the info file and of the data file, through the thread pool, EXPIRY_FLOOR_CONCURRENCY at a time). And
 * against BENCH_BASE_DIST's build when set. The order rotates each round. The scale workload's expiry figure
 * (bench/scale.ts) without HTTP, in one process, each call after a full collection (run node with --expose-gc).
 *
 *   npm run build && [BENCH_BASE_DIST=<dist/index.js>] node --expose-gc --import tsx bench/abandoned.ts [--n 100000] [--rounds 3] [--expired]
 */
import { statSync } from 'node:fs'
import { mkdir, rm, utimes, writeFile } from 'node:fs/promises'
import { loadavg } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import Fastify from 'fastify'
import { eachConcurrently } from '../lib/each-concurrently.js'
import { sweepDirectory, unlink } from '../lib/fs-calls.js'
import { FileStore } from '../lib/index.js'
import { DATA_ROOT } from './servers.js'
import { median } from './stats.js'
import { inParallel } from './workloads.js'

const { values: args } = parseArgs({ options: { n: { type: 'string', default: '100000' }, rounds: { type: 'string', default: '3' }, expired: { type: 'boolean', default: false } } })
const n = Number(args.n)
const rounds = Number(args.rounds)
const dir = join(DATA_ROOT, `abandoned-${process.pid}`)
const DAY_MS = 86_400_000
const old = new Date(Date.now() - 30 * DAY_MS)
const before = new Date(Date.now() - 5 * DAY_MS)
const body = Buffer.alloc(1024, 7)

interface Figure { seconds: number, cpuSeconds: number, rssGrowthMiB: number, result: number }

async function measure (run: () => Promise<number>): Promise<Figure> {
  globalThis.gc?.()
  const rss = process.memoryUsage.rss()
  let peak = rss
  const timer = setInterval(() => { peak = Math.max(peak, process.memoryUsage.rss()) }, 5)
  const cpu = process.cpuUsage()
  const start = performance.now()
  const result = await run()
  const seconds = (performance.now() - start) / 1000
  const used = process.cpuUsage(cpu)
  clearInterval(timer)
  peak = Math.max(peak, process.memoryUsage.rss())
  return { seconds, cpuSeconds: (used.user + used.system) / 1e6, rssGrowthMiB: (peak - rss) / 2 ** 20, result }
}

async function leftovers (round: number): Promise<number> {
  const count = Math.max(1, Math.floor(n / 100))
  await inParallel(count, 16, async (index) => {
    const id = `left-${round}-${index}`
    const files = [[`${id}.json`, '{"id":"'], [id, 'x'], [`orphan-${round}-${index}`, 'y'], [`${id}.json.0123456789ab-0.tmp`, '{']]
    for (const [name, text] of files) {
      await writeFile(join(dir, name!), text!)
      await utimes(join(dir, name!), old, old)
    }
  })
  return 3 * count
}

async function listAndGet (store: FileStore): Promise<number> {
  let seen = 0
  await eachConcurrently(store.list(), 16, async (id) => {
    await store.getInfo(id).catch(() => undefined)
    seen++
  })
  return seen
}

/** N complete uploads of 1 KiB made through `maker`, their data files `days` days old. */
async function populate (maker: FileStore, days: number): Promise<void> {
  const directory = maker.directory
  const when = new Date(Date.now() - days * DAY_MS)
  await inParallel(n, 16, async (index) => {
    const id = `u${index}`
    await maker.create({ id, size: body.length, metadata: { name: id } })
    await maker.write(id, 0, (async function * () { yield body })())
    if (days > 0) await utimes(join(directory, id), when, when)
  })
}

function loads (): string {
  return loadavg().map((load) => load.toFixed(2)).join(' ')
}

/** The medians of each pass's runs over the n uploads, as a Markdown table whose first column is `first`. */
function printTable (first: string, figures: Record<string, Figure[]>): void {
  console.log(`| ${first} | uploads/s | wall s | CPU s | RSS growth MiB |`)
  console.log('| --- | ---: | ---: | ---: | ---: |')
  for (const [name, runs] of Object.entries(figures)) {
    const seconds = median(runs.map((figure) => figure.seconds))
    console.log(`| ${name} | ${(n / seconds).toFixed(0)} | ${seconds.toFixed(2)} | ${median(runs.map((figure) => figure.cpuSeconds)).toFixed(2)} | ${median(runs.map((figure) => figure.rssGrowthMiB)).toFixed(1)} |`)
  }
}

/** What removeExpired() resolved with, counted: a number now, the list of removed uploads in builds before 2026-11-30. */
function countRemoved (removed: unknown): number {
  return typeof removed === 'number' ? removed : (removed as unknown[]).length
}

/** Uploads the floor's loop removes at once: the same as app.tus.removeExpired() (lib/core/expiry.ts). */
const EXPIRY_FLOOR_CONCURRENCY = 16

/**
 * The file system's floor for an expiry over `directory`: the data file's `stat` (its modification time decides),
 * then the info file's `unlink` and the data file's, nothing else; resolves with how many it removed.
 */
async function removeExpiredFloor (directory: string): Promise<number> {
  const horizon = before.getTime()
  return await sweepDirectory(directory, EXPIRY_FLOOR_CONCURRENCY, async (entry) => {
    if (!entry.name.endsWith('.json')) return false
    const data = join(directory, entry.name.slice(0, -'.json'.length))
    if (statSync(data).mtimeMs > horizon) return false
    await unlink(join(directory, entry.name))
    await unlink(data)
    return true
  })
}

if (args.expired) {
  const builds: Record<string, string> = { branch: join(import.meta.dirname, '..', 'dist', 'index.js') }
  if (process.env.BENCH_BASE_DIST !== undefined) builds.base = process.env.BENCH_BASE_DIST
  const FLOOR = 'file-system floor (peer)'
  const entries = [...Object.keys(builds), FLOOR]
  const expiry: Record<string, Figure[]> = Object.fromEntries(entries.map((entry) => [entry, []]))
  console.log(`load average at the start: ${loads()}`)
  try {
    for (let round = 0; round < rounds; round++) {
      for (const entry of entries.map((_, index) => entries[(index + round) % entries.length]!)) {
        await rm(dir, { recursive: true, force: true })
        const plugin = await import(builds[entry] ?? builds.branch!) as typeof import('../lib/index.js')
        const store = new plugin.FileStore({ directory: dir, fsync: false })
        const app = Fastify()
        await app.register(plugin.default, { dir, store, daysToKeep: 5, expireCompleted: true })
        await app.ready()
        // Made through the app's own store, as the scale workload does over HTTP: its info cache is warm.
        await populate(store, 30)
        const figure = await measure(async () => entry === FLOOR ? await removeExpiredFloor(dir) : countRemoved(await app.tus.removeExpired()))
        if (figure.result !== n) throw new Error(`${entry} removed ${figure.result}, expected ${n}`)
        expiry[entry]!.push(figure)
        console.log(`round ${round + 1} ${entry}: ${(n / figure.seconds).toFixed(0)}/s, CPU ${figure.cpuSeconds.toFixed(2)} s, RSS +${figure.rssGrowthMiB.toFixed(1)} MiB`)
        await app.close()
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
  console.log(`\napp.tus.removeExpired() over ${n} expired uploads, ${rounds} rounds in rotating order, medians:\n`)
  printTable('build', expiry)
  console.log(`load average at the end: ${loads()}`)
  process.exit(0)
}

await rm(dir, { recursive: true, force: true })
await mkdir(dir, { recursive: true })
try {
  const maker = new FileStore({ directory: dir, fsync: false })
  await populate(maker, 0)
  await maker.close()
  console.log(`${n} uploads created in ${dir}; load average ${loads()}`)
  const figures: Record<string, Figure[]> = { 'removeAbandoned, cold': [], 'list + getInfo, cold (peer)': [], 'removeAbandoned, warm': [], 'list + getInfo, warm (peer)': [] }
  for (let round = 0; round < rounds; round++) {
    const expected = await leftovers(round)
    // Cold runs in turn first and second, so that neither always finds the kernel's caches warmed by the other.
    const peer = new FileStore({ directory: dir, fsync: false })
    if (round % 2 === 1) figures['list + getInfo, cold (peer)']!.push(await measure(async () => await listAndGet(peer)))
    const cold = new FileStore({ directory: dir, fsync: false })
    const abandonedCold = await measure(async () => await cold.removeAbandoned(before))
    if (abandonedCold.result !== expected) throw new Error(`removed ${abandonedCold.result}, expected ${expected}`)
    figures['removeAbandoned, cold']!.push(abandonedCold)
    await cold.close()
    if (round % 2 === 0) figures['list + getInfo, cold (peer)']!.push(await measure(async () => await listAndGet(peer)))
    figures['removeAbandoned, warm']!.push(await measure(async () => await peer.removeAbandoned(before)))
    figures['list + getInfo, warm (peer)']!.push(await measure(async () => await listAndGet(peer)))
    await peer.close()
  }
  console.log(`\n${rounds} rounds, N = ${n} uploads (+1% of each leftover kind, removed in the cold runs), medians:\n`)
  printTable('pass', figures)
  const base = process.env.BENCH_BASE_DIST
  if (base !== undefined) {
    const builds: Record<string, string> = { branch: join(import.meta.dirname, '..', 'dist', 'index.js'), base }
    const expiry: Record<string, Figure[]> = { 'branch cold': [], 'base cold': [], 'branch warm': [], 'base warm': [] }
    for (let round = 0; round < rounds; round++) {
      for (const build of round % 2 === 0 ? ['branch', 'base'] : ['base', 'branch']) {
        const plugin = await import(builds[build]!) as typeof import('../lib/index.js')
        const app = Fastify()
        await app.register(plugin.default, { dir, store: new plugin.FileStore({ directory: dir, fsync: false }), daysToKeep: 5 })
        await app.ready()
        expiry[`${build} cold`]!.push(await measure(async () => countRemoved(await app.tus.removeExpired())))
        expiry[`${build} warm`]!.push(await measure(async () => countRemoved(await app.tus.removeExpired())))
        await app.close()
      }
    }
    console.log(`\napp.tus.removeExpired() over the ${n} uploads (none expired), ${rounds} rounds alternated, medians:\n`)
    printTable('build, call', expiry)
  }
  console.log(`load average at the end: ${loads()}`)
} finally {
  await rm(dir, { recursive: true, force: true })
}
