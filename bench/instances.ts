/**
 * Several instances: small uploads (as W3: POST, PATCH of 16 KiB, then HEAD) against fastify-tus processes that
 * share one data directory and one lock service, each upload created on one instance and written and read on the
 * next (as a load balancer without affinity sends them), against one instance with the same locker and one with
 * the in-process lock. Prints uploads/s and the servers' CPU per upload (user + system, all instances), medians of
 * interleaved rounds. The Redis runs share one throwaway redis-server on 127.0.0.1 (or BENCH_REDIS_URL).
 *
 *   npm run build && node --import tsx bench/instances.ts [--instances 2] [--count 2000] [--rounds 3] [--affinity]
 *   BENCH_DATA_ROOT=/dev/shm/bench node --import tsx bench/instances.ts   # the data on a tmpfs: the locks are what differs
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { DATA_ROOT, RedisServer, RunningServer, SERVERS } from './servers.js'
import { median } from './stats.js'
import { inParallel, slice, TusClient, warmUp } from './workloads.js'

const { values: args } = parseArgs({
  options: {
    instances: { type: 'string', default: '2' },
    count: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '3' },
    /** Every request of an upload on the instance that created it (a load balancer with affinity). */
    affinity: { type: 'boolean', default: false }
  }
})
const instances = Number(args.instances)
const count = Number(args.count)
const SIZE = 16 * 1024
const body = slice(3, SIZE, 0, SIZE)

interface Setup { label: string, server: string, instances: number }
const SETUPS: Setup[] = [
  { label: 'one instance, in-process lock', server: 'fastify-tus-nofsync', instances: 1 },
  { label: 'one instance, RedisLocker', server: 'fastify-tus-redis', instances: 1 },
  { label: `${instances} instances, RedisLocker`, server: 'fastify-tus-redis', instances },
  { label: `${instances} instances, FileLocker`, server: 'fastify-tus-filelock', instances }
]

/** One round of a setup: uploads/s and the servers' CPU per upload (µs). */
async function round (setup: Setup, redisUrl: string): Promise<{ rate: number, cpuMicros: number }> {
  const dataDir = await mkdtemp(join(DATA_ROOT, 'instances-'))
  const servers: RunningServer[] = []
  try {
    for (let index = 0; index < setup.instances; index++) {
      servers.push(await RunningServer.start(SERVERS[setup.server]!, [], { dataDir, redisUrl }))
    }
    for (const server of servers) await warmUp(server.origin)
    const clients = servers.map((server) => new TusClient(server.origin, 16))
    const before = await Promise.all(servers.map(async (server) => await server.cpuSeconds()))
    const start = performance.now()
    await inParallel(count, 16, async (index) => {
      const creating = clients[index % clients.length]!
      const writing = clients[(index + (args.affinity ? 0 : 1)) % clients.length]!
      const { path } = await creating.create(SIZE)
      await writing.patch(path, 0, SIZE, body)
      await writing.head(path, SIZE)
    })
    const seconds = (performance.now() - start) / 1000
    const after = await Promise.all(servers.map(async (server) => await server.cpuSeconds()))
    for (const client of clients) await client.close()
    const cpu = after.reduce((sum, value, index) => sum + value - before[index]!, 0)
    return { rate: count / seconds, cpuMicros: cpu / count * 1e6 }
  } finally {
    for (const server of servers) await server.stop()
    await rm(dataDir, { recursive: true, force: true })
  }
}

await mkdir(DATA_ROOT, { recursive: true })
const ownRedis = process.env.BENCH_REDIS_URL === undefined ? await RedisServer.start() : undefined
const redisUrl = process.env.BENCH_REDIS_URL ?? ownRedis!.url
try {
  const results = new Map<string, Array<{ rate: number, cpuMicros: number }>>()
  for (let index = 0; index < Number(args.rounds); index++) {
    for (const setup of SETUPS) {
      const result = await round(setup, redisUrl)
      console.error(`round ${index + 1} ${setup.label}: ${result.rate.toFixed(0)} uploads/s, ${result.cpuMicros.toFixed(0)} µs CPU per upload`)
      results.set(setup.label, [...results.get(setup.label) ?? [], result])
    }
  }
  const baseline = median(results.get(SETUPS[0]!.label)!.map((result) => result.rate))
  const placement = args.affinity ? 'each on the instance that created it' : 'POST on one instance, PATCH and HEAD on the next'
  console.log(`\n${count} uploads of 16 KiB (${placement}), 16 at a time, data in ${DATA_ROOT}; medians of ${args.rounds} rounds:\n`)
  console.log('| setup | uploads/s | / one instance, in-process lock | servers\' CPU per upload |')
  console.log('| --- | ---: | ---: | ---: |')
  for (const setup of SETUPS) {
    const runs = results.get(setup.label)!
    const rate = median(runs.map((result) => result.rate))
    console.log(`| ${setup.label} | ${rate.toFixed(0)} | ${(rate / baseline).toFixed(2)}x | ${median(runs.map((result) => result.cpuMicros)).toFixed(0)} µs |`)
  }
} finally {
  ownRedis?.stop()
}
