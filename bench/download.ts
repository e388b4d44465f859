/**
 * Downloads: GET of one finished upload (1 GiB by default), fastify-tus against a plain pipe of the same file
 * (bench/servers/plain-download.mjs), each server fresh per GET, alternated, with the server's CPU time and its
 * garbage collections by kind (bench/probe-preload.mjs) while it served the GET.
 *
 *   npm run bench:download -- [--servers fastify-tus-nofsync,plain-download] [--mib 1024] [--rounds 3]
 */
import { createHash } from 'node:crypto'
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { request } from 'undici'
import { RunningServer, SERVERS } from './servers.js'
import { median } from './stats.js'
import { slice, TusClient } from './workloads.js'

const { values: args } = parseArgs({
  options: {
    servers: { type: 'string', default: 'fastify-tus-nofsync,plain-download' },
    mib: { type: 'string', default: '1024' },
    rounds: { type: 'string', default: '3' }
  }
})
const size = Number(args.mib) * 1024 * 1024
const keys = args.servers.split(',')
for (const key of keys) if (SERVERS[key] === undefined) throw new Error(`unknown server ${key}`)

// The upload, made once through the plugin; every server then serves that data directory.
const maker = await RunningServer.start(SERVERS['fastify-tus-nofsync']!, [])
const client = new TusClient(maker.origin, 1)
const upload = await client.create(size)
const chunk = 16 * 1024 * 1024
const hasher = createHash('sha256')
for (let offset = 0; offset < size; offset += chunk) {
  const body = slice(8, size, offset, Math.min(size, offset + chunk))
  hasher.update(body)
  await client.patch(upload.path, offset, body.length, body)
}
const expected = hasher.digest('hex')
await client.close()
await maker.stop()

const results = new Map<string, Array<{ mbps: number, cpu: number, scavenges: number, markCompacts: number }>>(keys.map((key) => [key, []]))
for (let round = 1; round <= Number(args.rounds); round++) {
  for (const key of keys) {
    const out = join(import.meta.dirname, 'data', `download-${process.pid}.json`)
    process.env.PROBE_OUT = out
    const server = await RunningServer.start(SERVERS[key]!, ['--import', join(import.meta.dirname, 'probe-preload.mjs')], { dataDir: maker.dataDir })
    try {
      process.kill(server.pid, 'SIGUSR2')
      const cpuBefore = await server.cpuSeconds()
      const start = performance.now()
      const response = await request(`${server.origin}${upload.path}`)
      if (response.statusCode !== 200) throw new Error(`${key}: GET answered ${response.statusCode}`)
      const received = createHash('sha256')
      for await (const part of response.body) received.update(part as Buffer)
      const seconds = (performance.now() - start) / 1000
      const cpu = await server.cpuSeconds() - cpuBefore
      await server.stop()
      if (received.digest('hex') !== expected) throw new Error(`${key}: the download differs from the upload`)
      const { gc } = JSON.parse(await readFile(out, 'utf8')) as { gc: { scavenges: number, markCompacts: number } }
      const result = { mbps: size / 1e6 / seconds, cpu, scavenges: gc.scavenges, markCompacts: gc.markCompacts }
      results.get(key)!.push(result)
      console.error(`round ${round} ${SERVERS[key]!.name}: ${result.mbps.toFixed(0)} MB/s, server CPU ${cpu.toFixed(2)} s, ${gc.scavenges} scavenges, ${gc.markCompacts} mark-compacts`)
    } finally {
      await server.stop()
      await rm(out, { force: true })
    }
  }
}
await rm(maker.dataDir, { recursive: true, force: true })

console.log(`\nGET of one ${args.mib} MiB upload, medians of ${args.rounds} alternated rounds, node ${process.version}:\n`)
console.log('| server | MB/s | server CPU s | scavenges | mark-compacts |')
console.log('| --- | ---: | ---: | ---: | ---: |')
for (const key of keys) {
  const runs = results.get(key)!
  const of = (pick: (run: typeof runs[number]) => number): number => median(runs.map(pick))
  console.log(`| ${SERVERS[key]!.name} | ${of((run) => run.mbps).toFixed(0)} | ${of((run) => run.cpu).toFixed(2)} | ${of((run) => run.scavenges)} | ${of((run) => run.markCompacts)} |`)
}
