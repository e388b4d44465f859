// fastify-tus as a user gets it: the built package (dist/, through the package's own name) in a plain
// Fastify app without a logger. Usage: node fastify-tus.mjs <data dir> [--no-fsync] [--cache-size=N] [--locker=redis|file]
// --no-fsync and --cache-size=N set the FileStore's `fsync: false` and `cacheSize` options.
// --base: the package built from another checkout instead (its dist/index.js in BENCH_BASE_DIST), to measure a
// change side by side with what it changes.
import { join } from 'node:path'
import Fastify from 'fastify'

const base = process.argv.includes('--base')
if (base && process.env.BENCH_BASE_DIST === undefined) throw new Error('--base needs BENCH_BASE_DIST=<dist/index.js of another build>')
const { default: tus, FileStore } = await import(base ? process.env.BENCH_BASE_DIST : 'fastify-tus')

const dir = process.argv[2]
if (dir === undefined) throw new Error('usage: fastify-tus.mjs <data dir> [--no-fsync] [--cache-size=N]')

const cacheArg = process.argv.find((arg) => arg.startsWith('--cache-size='))
const store = new FileStore({
  directory: dir,
  fsync: !process.argv.includes('--no-fsync'),
  ...(cacheArg === undefined ? {} : { cacheSize: Number(cacheArg.slice('--cache-size='.length)) })
})
// --locker=redis: a RedisLocker on BENCH_REDIS_URL (bench/servers.ts starts a redis-server when it is not set);
// --locker=file: a FileLocker in <data dir>/.locks. Several processes on one data directory share their locks.
let locker
const lockerArg = process.argv.find((arg) => arg.startsWith('--locker='))
if (lockerArg === '--locker=redis') {
  if (process.env.BENCH_REDIS_URL === undefined) throw new Error('--locker=redis needs BENCH_REDIS_URL')
  const { Redis } = await import('ioredis')
  const { RedisLocker } = await import(base ? process.env.BENCH_BASE_DIST.replace(/index\.js$/, 'lockers/redis-locker.js') : 'fastify-tus/redis')
  locker = new RedisLocker({ redis: new Redis(process.env.BENCH_REDIS_URL, { enableOfflineQueue: false, maxRetriesPerRequest: 0 }) })
} else if (lockerArg === '--locker=file') {
  const { FileLocker } = await import(base ? process.env.BENCH_BASE_DIST : 'fastify-tus')
  locker = new FileLocker({ directory: join(dir, '.locks') })
}
const app = Fastify()
// expireCompleted: the scale workload's uploads are complete, and removeExpired() must remove them.
await app.register(tus, { prefix: '/files', dir, store, expireCompleted: true, ...(locker === undefined ? {} : { locker }) })
// For the scale workload (bench/scale.ts): runs app.tus.removeExpired() and reports its time and how far the
// RSS rose above where it started, sampled every 5 ms while it ran. Outside the tus routes.
app.post('/bench/remove-expired', async () => {
  const before = process.memoryUsage.rss()
  let peak = before
  const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage.rss()) }, 5)
  const start = performance.now()
  const removed = await app.tus.removeExpired()
  const seconds = (performance.now() - start) / 1000
  clearInterval(sampler)
  peak = Math.max(peak, process.memoryUsage.rss())
  // A count; the list of removed uploads in builds before 2026-11-30 (BENCH_BASE_DIST).
  return { removed: typeof removed === 'number' ? removed : removed.length, seconds, rssBeforeMiB: before / 1048576, rssGrowthMiB: (peak - before) / 1048576 }
})
await app.listen({ host: '127.0.0.1', port: 0 })
process.stdout.write(`${app.server.address().port}\n`)
// Exit normally on SIGTERM so that --cpu-prof can write its profile.
process.on('SIGTERM', () => { process.exit(0) })
