import { readFile, readdir } from 'node:fs/promises'
import { RunningServer, SERVERS } from '/work/main/bench/servers.js'
import { FULL, WORKLOADS, warmUp } from '/work/main/bench/workloads.js'
const key = process.argv[2] ?? 'fastify-tus-nofsync'
const w = WORKLOADS.find((x) => x.id === (process.argv[3] ?? 'W3'))!
const server = await RunningServer.start(SERVERS[key]!, [])
async function threads () {
  const out: Record<string, [number, number]> = {}
  for (const tid of await readdir(`/proc/${server.pid}/task`)) {
    const stat = await readFile(`/proc/${server.pid}/task/${tid}/stat`, 'utf8')
    const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    out[`${tid} ${name}`] = [Number(f[11]) / 100, Number(f[12]) / 100]
  }
  return out
}
await warmUp(server.origin)
const before = await threads()
const { measurement } = await w.run(server.origin, FULL)
const after = await threads()
console.log(key, w.id, measurement.value.toFixed(0))
for (const k of Object.keys(after)) { const d = [after[k]![0] - (before[k]?.[0] ?? 0), after[k]![1] - (before[k]?.[1] ?? 0)]; if (d[0] + d[1] > 0.02) console.log(k, 'user', d[0].toFixed(2), 'sys', d[1].toFixed(2)) }
await server.stop(); await server.removeData()
