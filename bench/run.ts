/**
 * The benchmark: fastify-tus against @tus/server and against the "limit" server (node's http server piping
 * bodies into files, no protocol), in separate processes on 127.0.0.1.
 *
 *   npm run build && npm run bench                   # 3 rounds, full sizes
 *   npm run bench -- --quick                         # about a minute: fastify-tus, @tus/server, limit
 *   npm run bench -- --rounds 5 --workloads W3,W5 --servers fastify-tus,limit
 *   npm run bench -- --cpu-prof                      # CPU profiles of fastify-tus into bench/data/profiles
 *   npm run bench -- --workloads scale --scale 20000 # only the scale workload (bench/scale.ts), N = 20000
 *   npm run bench -- --node-flags=--max-semi-space-size=1   # every server with these node flags
 *   BENCH_DATA_ROOT=/dev/shm/bench npm run bench ...        # data directories on a tmpfs: the disk's file system out of the figures
 *
 * Every server process is fresh for each workload (so its VmHWM is that workload's peak RSS), with a
 * fresh data directory under bench/data/ that is removed after the stored bytes have been verified.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { cpus, loadavg } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { expireAll, fillAndProbe, UnlinkPeer, type ScaleFill, type ScaleResult } from './scale.js'
import { DATA_ROOT, NODE_FLAGS, RunningServer, SERVERS, type ServerDefinition } from './servers.js'
import { format, median } from './stats.js'
import { FULL, QUICK, WORKLOADS, verifyStored, warmUp, type Measurement, type Sizes, type Workload } from './workloads.js'

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    servers: { type: 'string' },
    workloads: { type: 'string', default: [...WORKLOADS.map((workload) => workload.id), 'scale'].join(',') },
    /** N of the scale workload. */
    scale: { type: 'string' },
    'scale-servers': { type: 'string', default: 'fastify-tus-nofsync' },
    /** Node flags for every server, space-separated (default: none, node's defaults). */
    'node-flags': { type: 'string' },
    'no-extras': { type: 'boolean', default: false },
    'cpu-prof': { type: 'boolean', default: false }
  }
})

const sizes: Sizes = args.quick ? QUICK : FULL
const rounds = Number(args.rounds ?? (args.quick ? 1 : 3))
// --quick compares the three servers the issue is about; a full run adds both sides without fsync / with fsync.
const serverList = args.servers ?? (args.quick ? 'fastify-tus,tus-server,limit' : 'fastify-tus,fastify-tus-nofsync,tus-server,limit,limit-fsync')
const servers = serverList.split(',').map((key) => {
  const definition = SERVERS[key]
  if (definition === undefined) throw new Error(`unknown server ${key}; known: ${Object.keys(SERVERS).join(', ')}`)
  return { key, definition }
})
const runScaleWorkload = args.workloads.split(',').includes('scale')
const scaleN = Number(args.scale ?? (args.quick ? 5000 : 100_000))
const scaleServers = args['scale-servers'].split(',').map((key) => {
  const definition = SERVERS[key]
  if (definition?.script !== 'fastify-tus.mjs') throw new Error(`scale runs only fastify-tus servers, not ${key}`)
  return { key, definition }
})
const nodeFlags = args['node-flags'] === undefined ? NODE_FLAGS : args['node-flags'].split(' ').filter((flag) => flag !== '')
/** The flags the extras compare nodeFlags with. */
const otherFlags = nodeFlags.length === 0 ? ['--max-semi-space-size=1'] : []
const workloads = args.workloads.split(',').filter((id) => id !== 'scale').map((id) => {
  const workload = WORKLOADS.find((candidate) => candidate.id === id)
  if (workload === undefined) throw new Error(`unknown workload ${id}`)
  return workload
})
const PROFILES = join(DATA_ROOT, 'profiles')

interface Sample extends Measurement {
  rssMiB: number
  /** CPU time the server used for the workload (warm-up excluded), seconds. */
  cpuSeconds: number
}

/** Data directories of workloads with many files (Workload.manyFiles), removed once the run is over. */
const removeAtEnd: RunningServer[] = []

/** Starts a fresh server, warms it up, runs the workload, reads the peak RSS, verifies what was stored. */
async function measure (definition: ServerDefinition, workload: Workload, runSizes: Sizes, nodeFlags: string[]): Promise<Sample> {
  const flags = args['cpu-prof'] && definition.script === 'fastify-tus.mjs'
    ? [...nodeFlags, '--cpu-prof', `--cpu-prof-dir=${PROFILES}`, `--cpu-prof-name=${workload.id}-${Date.now()}.cpuprofile`]
    : nodeFlags
  const server = await RunningServer.start(definition, flags)
  try {
    await warmUp(server.origin)
    await workload.warm?.(server.origin, runSizes)
    await server.resetPeakRss()
    const cpuBefore = await server.cpuSeconds()
    const { measurement, uploads } = await workload.run(server.origin, runSizes)
    const cpuSeconds = await server.cpuSeconds() - cpuBefore
    const rssMiB = await server.peakRssMiB()
    await server.stop()
    await verifyStored(server.dataDir, uploads)
    return { ...measurement, rssMiB, cpuSeconds }
  } catch (error) {
    throw new Error(`${definition.name} failed ${workload.id}: ${error instanceof Error ? error.message : String(error)}`, { cause: error })
  } finally {
    await server.stop()
    if (workload.manyFiles === true) removeAtEnd.push(server)
    else await server.removeData()
  }
}

function flagsText (flags: string[]): string {
  return flags.length === 0 ? "node's default flags" : `\`node ${flags.join(' ')}\``
}

/**
 * The scale workload (bench/scale.ts) on a fresh server for each server, once per server, not per round (it takes
 * minutes): every server's creations and HEADs first, each server kept running, then every server's removeExpired(),
 * so that no server creates its uploads right after another removed 100,000 (see bench/scale.ts).
 */
async function measureScale (definitions: ServerDefinition[]): Promise<{ results: Array<ScaleResult & { peakRssMiB: number }>, unlinksPerSecond: number }> {
  const running: Array<{ server: RunningServer, definition: ServerDefinition, fill?: ScaleFill }> = []
  const peer = new UnlinkPeer(join(DATA_ROOT, 'unlink-peer'), scaleN)
  try {
    await peer.fill()
    for (const definition of definitions) {
      const flags = args['cpu-prof'] ? [...nodeFlags, '--cpu-prof', `--cpu-prof-dir=${PROFILES}`, `--cpu-prof-name=scale-${Date.now()}.cpuprofile`] : nodeFlags
      const entry: (typeof running)[number] = { server: await RunningServer.start(definition, flags), definition }
      running.push(entry)
      await warmUp(entry.server.origin)
      entry.fill = await fillAndProbe(entry.server, scaleN, (line) => { console.error(`${definition.name}: ${line}`) })
    }
    const unlinksPerSecond = await peer.remove((line) => { console.error(`unlink peer: ${line}`) })
    const results: Array<ScaleResult & { peakRssMiB: number }> = []
    for (const { server, definition, fill } of running) {
      const result = await expireAll(server, fill!, (line) => { console.error(`${definition.name}: ${line}`) })
      results.push({ ...result, peakRssMiB: await server.peakRssMiB() })
      await server.stop()
    }
    return { results, unlinksPerSecond }
  } finally {
    await rm(peer.directory, { recursive: true, force: true })
    for (const { server } of running) {
      await server.stop()
      await server.removeData()
    }
  }
}

function describe (sample: Sample, workload: Workload): string {
  const latency = sample.p50 === undefined ? '' : ` p50 ${format(sample.p50)} ms p99 ${format(sample.p99!)} ms`
  return `${format(sample.value)} ${workload.unit} in ${sample.seconds.toFixed(2)} s,${latency} peak RSS ${format(sample.rssMiB)} MiB, server CPU ${sample.cpuSeconds.toFixed(2)} s`
}

async function main (): Promise<void> {
  await mkdir(DATA_ROOT, { recursive: true })
  if (args['cpu-prof']) await mkdir(PROFILES, { recursive: true })
  const samples = new Map<string, Sample[]>()
  const key = (server: string, workload: string): string => `${server}/${workload}`
  const machine = `${cpus().length} CPUs (${cpus()[0]?.model ?? 'unknown'}), node ${process.version}, load average at start ${loadavg().map((load) => load.toFixed(2)).join(' ')}`
  console.error(`${rounds} round(s), ${args.quick ? 'quick' : 'full'} sizes, server flags: ${flagsText(nodeFlags)}; ${machine}`)
  const started = Date.now()

  for (let round = 1; round <= rounds && workloads.length > 0; round++) {
    for (const workload of workloads) {
      // Servers alternate within each round (A B C A B C ...), so drifting background load hits all alike.
      for (const { key: server, definition } of servers) {
        const sample = await measure(definition, workload, sizes, nodeFlags)
        console.error(`round ${round} ${workload.id} ${definition.name}: ${describe(sample, workload)}`)
        const list = samples.get(key(server, workload.id)) ?? []
        list.push(sample)
        samples.set(key(server, workload.id), list)
      }
    }
  }

  const lines: string[] = []
  const medianOf = (server: string, workload: string, pick: (sample: Sample) => number | undefined): number | undefined => {
    const list = samples.get(key(server, workload))
    if (list === undefined) return undefined
    return median(list.map(pick).filter((value): value is number => value !== undefined))
  }
  const name = (server: string): string => SERVERS[server]!.name
  const has = (server: string): boolean => servers.some((entry) => entry.key === server)
  const ratios: Array<[string, string]> = ([
    ['fastify-tus', 'tus-server'],
    ['fastify-tus', 'limit'],
    ['fastify-tus', 'limit-fsync'],
    ['fastify-tus-nofsync', 'limit'],
    ['fastify-tus-nocache', 'fastify-tus'],
    ['fastify-tus', 'fastify-tus-base'],
    ['fastify-tus-nofsync', 'fastify-tus-base-nofsync'],
    ['fastify-tus-redis', 'fastify-tus-nofsync'],
    ['fastify-tus-filelock', 'fastify-tus-nofsync'],
    ['fastify-tus-redis', 'fastify-tus-base-redis'],
    ['fastify-tus-filelock', 'fastify-tus-base-filelock']
  ] as Array<[string, string]>).filter(([a, b]) => has(a) && has(b))
  const row = (cells: string[]): string => `| ${cells.join(' | ')} |`
  const names = servers.map((entry) => entry.definition.name)
  const ratioNames = ratios.map(([a, b]) => `${name(a)} / ${name(b)}`)

  if (workloads.length > 0) {
    lines.push(`Medians of ${rounds} round(s); ${args.quick ? 'quick' : 'full'} sizes; every server run with ${flagsText(nodeFlags)}.`)
    lines.push(`Machine: ${machine}; rounds took ${((Date.now() - started) / 60000).toFixed(1)} min, load average at the end ${loadavg().map((load) => load.toFixed(2)).join(' ')}.`, '')
    lines.push(row(['workload', 'unit', ...names, ...ratioNames]))
    lines.push(row(['---', '---', ...[...names, ...ratioNames].map(() => '---:')]))
    for (const workload of workloads) {
      const values = servers.map(({ key: server }) => medianOf(server, workload.id, (sample) => sample.value)!)
      const cells = ratios.map(([a, b]) => `${(medianOf(a, workload.id, (sample) => sample.value)! / medianOf(b, workload.id, (sample) => sample.value)!).toFixed(2)}x`)
      lines.push(row([`${workload.id} ${workload.title}`, workload.unit, ...values.map(format), ...cells]))
      if (workload.id === 'W3') {
        for (const [label, pick] of [['p50', (sample: Sample) => sample.p50], ['p99', (sample: Sample) => sample.p99]] as const) {
          const latencies = servers.map(({ key: server }) => medianOf(server, workload.id, pick)!)
          lines.push(row([`W3 latency ${label}`, 'ms', ...latencies.map(format), ...ratios.map(() => '')]))
        }
      }
    }
    lines.push('', 'Peak RSS (VmHWM) of each server process, fresh per workload, MiB (median):', '')
    lines.push(row(['workload', ...names]))
    lines.push(row(['---', ...names.map(() => '---:')]))
    for (const workload of workloads) {
      lines.push(row([workload.id, ...servers.map(({ key: server }) => format(medianOf(server, workload.id, (sample) => sample.rssMiB)!))]))
    }

    lines.push('', 'Server CPU time (user + system) per workload, seconds (median); less sensitive to other load on the machine than throughput:', '')
    lines.push(row(['workload', ...names, ...ratioNames]))
    lines.push(row(['---', ...[...names, ...ratioNames].map(() => '---:')]))
    for (const workload of workloads) {
      const cpu = (server: string): number => medianOf(server, workload.id, (sample) => sample.cpuSeconds)!
      lines.push(row([workload.id, ...servers.map(({ key: server }) => cpu(server).toFixed(2)), ...ratios.map(([a, b]) => `${(cpu(a) / cpu(b)).toFixed(2)}x`)]))
    }
  }
  if (!args['no-extras'] && has('fastify-tus') && workloads.some((workload) => workload.id === 'W1')) {
    // Memory flat with upload size: the same single PATCH at a quarter of the size and at full size.
    const single = WORKLOADS.find((workload) => workload.id === 'W1')!
    const small = { ...sizes, singlePatch: sizes.singlePatch / 4 }
    const definition = SERVERS['fastify-tus']!
    const mib = (bytes: number): string => `${bytes / 1024 / 1024} MiB`
    lines.push('', 'fastify-tus peak RSS for one upload in a single PATCH (W1), by size (one run each):', '')
    lines.push('| node flags | ' + `${mib(small.singlePatch)} | ${mib(sizes.singlePatch)} |`, '| --- | ---: | ---: |')
    for (const flags of [nodeFlags, otherFlags]) {
      const quarter = await measure(definition, single, small, flags)
      const whole = await measure(definition, single, sizes, flags)
      console.error(`extra W1 ${mib(small.singlePatch)} [${flags.join(' ')}]: ${describe(quarter, single)}`)
      console.error(`extra W1 ${mib(sizes.singlePatch)} [${flags.join(' ')}]: ${describe(whole, single)}`)
      lines.push(`| ${flagsText(flags)} | ${format(quarter.rssMiB)} MiB (${format(quarter.value)} MB/s) | ${format(whole.rssMiB)} MiB (${format(whole.value)} MB/s) |`)
    }
    // The other flags, once per workload, to show what --max-semi-space-size changes (full runs only).
    if (!args.quick && workloads.length > 0) {
      lines.push('', `fastify-tus with ${flagsText(otherFlags)} (one run per workload):`, '')
      lines.push('| workload | unit | value | peak RSS MiB |', '| --- | --- | ---: | ---: |')
      for (const workload of workloads) {
        const sample = await measure(definition, workload, sizes, otherFlags)
        console.error(`extra ${workload.id} fastify-tus [${flagsText(otherFlags)}]: ${describe(sample, workload)}`)
        lines.push(`| ${workload.id} | ${workload.unit} | ${format(sample.value)} | ${format(sample.rssMiB)} |`)
      }
    }
  }

  if (runScaleWorkload && scaleN > 0) {
    lines.push('', `Scale: ${scaleN} uploads of 1 KiB in one store (bench/scale.ts), one run per server, ${flagsText(nodeFlags)}:`, '')
    lines.push('| server | created/s | first tenth | last tenth | HEAD one /s | HEAD spread /s | spread / one | HEAD unshared /s | spread / unshared | removeExpired /s | removeExpired / unlinks alone | RSS growth during it | RSS before it | peak RSS |')
    lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
    const { results, unlinksPerSecond } = await measureScale(scaleServers.map(({ definition }) => definition))
    for (const [index, { definition }] of scaleServers.entries()) {
      const result = results[index]!
      const tenths = result.createByTenth
      lines.push(`| ${definition.name} | ${format(result.createPerSecond)} | ${format(tenths[0]!)} | ${format(tenths[tenths.length - 1]!)} | ${format(result.headOnePerSecond)} | ${format(result.headSpreadPerSecond)} | ${(result.headSpreadPerSecond / result.headOnePerSecond).toFixed(2)}x | ${format(result.headUnsharedPerSecond)} | ${(result.headSpreadPerSecond / result.headUnsharedPerSecond).toFixed(2)}x | ${format(result.removePerSecond)} | ${(result.removePerSecond / unlinksPerSecond).toFixed(2)}x | ${format(result.removeRssGrowthMiB)} MiB | ${format(result.rssBeforeRemoveMiB)} MiB | ${format(result.peakRssMiB)} MiB |`)
    }
    lines.push('', `Unlinks alone (bench/scale.ts \`UnlinkPeer\`: the same number of uploads' two files, written back, removed by plain unlinks 16 at a time): ${format(unlinksPerSecond)} uploads/s.`)
  }

  const report = lines.join('\n') + '\n'
  process.stdout.write('\n' + report)
  await writeFile(join(DATA_ROOT, `results-${new Date().toISOString().replace(/[:.]/g, '-')}.md`), report)
}

try {
  await main()
} finally {
  for (const server of removeAtEnd) await server.removeData()
}
