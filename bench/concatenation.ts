/**
 * Concatenation through the server: four complete 256 MiB partial uploads, then the final upload that copies them
 * (the file store has no copy of its own, so the bytes go through `read` and `write`), with the server's CPU time and
 * its garbage collections by kind (bench/probe-preload.mjs) while it created the final. Alternated with another build
 * when `--servers` names one (fastify-tus-base-nofsync with BENCH_BASE_DIST).
 *
 *   npm run bench:concat -- [--servers fastify-tus-nofsync,fastify-tus-base-nofsync] [--rounds 2]
 */
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { request } from 'undici'
import { RunningServer, SERVERS } from './servers.js'
import { median } from './stats.js'
import { slice } from './workloads.js'

const PART = 256 * 1024 * 1024
const PARTS = 4
const { values: args } = parseArgs({ options: { servers: { type: 'string', default: 'fastify-tus-nofsync' }, rounds: { type: 'string', default: '2' } } })
const keys = args.servers.split(',')
for (const key of keys) if (SERVERS[key] === undefined) throw new Error(`unknown server ${key}`)
const body = slice(3, PART, 0, 16 * 1024 * 1024)

async function tus (origin: string, method: string, path: string, headers: Record<string, string>, payload?: Buffer): Promise<Record<string, string | string[] | undefined>> {
  const response = await request(`${origin}${path}`, { method: method as 'POST', headers: { 'tus-resumable': '1.0.0', ...headers }, body: payload })
  await response.body.dump()
  if (response.statusCode >= 300) throw new Error(`${method} ${path}: ${response.statusCode}`)
  return response.headers
}

const results = new Map<string, Array<{ mbps: number, cpu: number, markCompacts: number }>>(keys.map((key) => [key, []]))
for (let round = 1; round <= Number(args.rounds); round++) {
  for (const key of keys) {
    const out = join(import.meta.dirname, 'data', `concat-${process.pid}.json`)
    process.env.PROBE_OUT = out
    const server = await RunningServer.start(SERVERS[key]!, ['--import', join(import.meta.dirname, 'probe-preload.mjs')])
    try {
      const paths: string[] = []
      for (let index = 0; index < PARTS; index++) {
        const path = new URL(String((await tus(server.origin, 'POST', '/files', { 'upload-length': String(PART), 'upload-concat': 'partial' })).location), server.origin).pathname
        for (let offset = 0; offset < PART; offset += body.length) {
          await tus(server.origin, 'PATCH', path, { 'upload-offset': String(offset), 'content-type': 'application/offset+octet-stream' }, body)
        }
        paths.push(path)
      }
      process.kill(server.pid, 'SIGUSR2')
      const cpuBefore = await server.cpuSeconds()
      const start = performance.now()
      await tus(server.origin, 'POST', '/files', { 'upload-concat': `final;${paths.join(' ')}` })
      const seconds = (performance.now() - start) / 1000
      const cpu = await server.cpuSeconds() - cpuBefore
      await server.stop()
      const { gc } = JSON.parse(await readFile(out, 'utf8')) as { gc: { markCompacts: number } }
      const result = { mbps: PARTS * PART / 1e6 / seconds, cpu, markCompacts: gc.markCompacts }
      results.get(key)!.push(result)
      console.error(`round ${round} ${SERVERS[key]!.name}: final of ${PARTS} x 256 MiB in ${seconds.toFixed(2)} s (${result.mbps.toFixed(0)} MB/s), server CPU ${cpu.toFixed(2)} s, ${gc.markCompacts} mark-compacts`)
    } finally {
      await server.stop()
      await server.removeData()
      await rm(out, { force: true })
    }
  }
}

console.log(`\nFinal upload of ${PARTS} complete 256 MiB partials, medians of ${args.rounds} alternated rounds, node ${process.version}:\n`)
console.log('| server | MB/s | server CPU s | mark-compacts |')
console.log('| --- | ---: | ---: | ---: |')
for (const key of keys) {
  const runs = results.get(key)!
  console.log(`| ${SERVERS[key]!.name} | ${median(runs.map((run) => run.mbps)).toFixed(0)} | ${median(runs.map((run) => run.cpu)).toFixed(2)} | ${median(runs.map((run) => run.markCompacts))} |`)
}
