/**
 * One workload against one server, with what the benchmark's tables do not show: garbage collections by kind
 * (counted from after the warm-up), peak heap and array-buffer memory, and the server's CPU time split between
 * its main thread and its other threads (libuv's thread pool, V8's GC helpers). A steadier view than
 * throughput on a shared machine, for work on the body path.
 *
 *   node --import tsx bench/probe.ts fastify-tus-nofsync W1 [runs] [node flags...]
 *   PROBE_IDLE_SECONDS=12 node --import tsx bench/probe.ts ...   # the server idle between warm-up and workload
 */
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { RunningServer, SERVERS } from './servers.js'
import { FULL, WORKLOADS, verifyStored, warmUp } from './workloads.js'

const [serverKey = 'fastify-tus-nofsync', workloadId = 'W1', runsText = '1', ...nodeFlags] = process.argv.slice(2)
const definition = SERVERS[serverKey]
const workload = WORKLOADS.find((candidate) => candidate.id === workloadId)
if (definition === undefined || workload === undefined) throw new Error('usage: probe.ts <server> <workload> [runs] [node flags...]')
const out = join(import.meta.dirname, 'data', `probe-${process.pid}.json`)
process.env.PROBE_OUT = out
const flags = ['--import', join(import.meta.dirname, 'probe-preload.mjs'), ...nodeFlags]
const MiB = 1024 * 1024

/** CPU seconds of the main thread and of all the others, from /proc/<pid>/task/<tid>/stat. */
async function threadCpu (pid: number): Promise<{ main: number, other: number }> {
  const { readdir } = await import('node:fs/promises')
  let main = 0
  let other = 0
  for (const tid of await readdir(`/proc/${pid}/task`)) {
    const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8').catch(() => '')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const ticks = Number(fields[11]) + Number(fields[12])
    if (Number.isNaN(ticks)) continue
    if (Number(tid) === pid) main += ticks / 100
    else other += ticks / 100
  }
  return { main, other }
}

for (let run = 0; run < Number(runsText); run++) {
  const server = await RunningServer.start(definition, flags)
  try {
    await warmUp(server.origin)
    await workload.warm?.(server.origin, FULL)
    await server.resetPeakRss()
    // PROBE_IDLE_SECONDS: an idle server, as in production between uploads (V8's memory reducer may run).
    await new Promise((resolve) => setTimeout(resolve, Number(process.env.PROBE_IDLE_SECONDS ?? 0) * 1000))
    process.kill(server.pid, 'SIGUSR2')
    const before = await threadCpu(server.pid)
    const { measurement, uploads } = await workload.run(server.origin, FULL)
    const after = await threadCpu(server.pid)
    const rss = await server.peakRssMiB()
    await server.stop()
    await verifyStored(server.dataDir, uploads)
    const { peak, gc } = JSON.parse(await readFile(out, 'utf8')) as { peak: Record<string, number>, gc: Record<string, number> }
    console.log(`${definition.name} ${workload.id} ${nodeFlags.join(' ')}: ${measurement.value.toFixed(0)} ${workload.unit}; CPU main ${(after.main - before.main).toFixed(2)} s, ` +
      `other threads ${(after.other - before.other).toFixed(2)} s; VmHWM ${rss.toFixed(1)} MiB (heapTotal ${(peak.heapTotal! / MiB).toFixed(1)}, ` +
      `arrayBuffers ${(peak.arrayBuffers! / MiB).toFixed(1)}); GC: ${gc.scavenges} scavenges, ${gc.markCompacts} mark-compacts, ${gc.ms!.toFixed(0)} ms`)
  } finally {
    await server.stop()
    await server.removeData()
    await rm(out, { force: true })
  }
}
