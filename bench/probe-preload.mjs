// Preloaded into a server by bench/probe.ts (`node --import`): counts garbage collections by kind and samples
// process.memoryUsage() every 10 ms; at exit writes the figures as JSON to the file in PROBE_OUT. It observes
// only: it sets no V8 flag.
import { writeFileSync } from 'node:fs'
import { PerformanceObserver, constants } from 'node:perf_hooks'

const out = process.env.PROBE_OUT
const peak = { rss: 0, heapTotal: 0, heapUsed: 0, external: 0, arrayBuffers: 0 }
const gc = { scavenges: 0, markCompacts: 0, incremental: 0, weak: 0, ms: 0 }
let counting = false
const sampler = setInterval(() => {
  const usage = process.memoryUsage()
  for (const key of Object.keys(peak)) peak[key] = Math.max(peak[key], usage[key])
}, 10)
sampler.unref()
new PerformanceObserver((list) => {
  if (!counting) return
  for (const entry of list.getEntries()) {
    const kind = entry.detail?.kind
    if (kind === constants.NODE_PERFORMANCE_GC_MINOR) gc.scavenges++
    else if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) gc.markCompacts++
    else if (kind === constants.NODE_PERFORMANCE_GC_INCREMENTAL) gc.incremental++
    else gc.weak++
    gc.ms += entry.duration
  }
}).observe({ entryTypes: ['gc'] })
// SIGUSR2 from the probe: the warm-up is over, count from here.
process.on('SIGUSR2', () => { counting = true })
process.on('exit', () => {
  if (out !== undefined) writeFileSync(out, JSON.stringify({ peak, gc }))
})
