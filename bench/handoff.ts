/**
 * What a round trip through libuv's thread pool costs the event loop on this machine, against the same call made
 * synchronously: CPU of the main thread (from /proc) per call, for `open` + `write` of a small new file, 5,000 of
 * each kind in a row. On a VM, waking a pool thread can cost more than the call itself (bench/RESULTS.md, session 18).
 *
 *   node --import tsx bench/handoff.ts [directory]   # default: bench/data (ext4 here); try /dev/shm too
 */
import fs, { readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { DATA_ROOT } from './servers.js'

const CALLS = 5000
const root = process.argv[2] ?? DATA_ROOT
fs.mkdirSync(root, { recursive: true })
const directory = await mkdtemp(join(root, 'handoff-'))

/** CPU milliseconds of this process's main thread. */
function mainThreadMs (): number {
  const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) * 10
}

async function measure (name: string, round: (index: number) => Promise<void> | void): Promise<void> {
  const cpu = mainThreadMs()
  const wall = performance.now()
  for (let index = 0; index < CALLS; index++) await round(index)
  const perCall = (ms: number): string => (ms * 1000 / CALLS / 2).toFixed(1)
  console.log(`${name}: ${perCall(mainThreadMs() - cpu)} µs of the main thread's CPU per call, ${perCall(performance.now() - wall)} µs wall`)
}

const bytes = Buffer.alloc(100)
await measure('through the thread pool', async (index) => {
  const fd = await new Promise<number>((resolve, reject) => { fs.open(join(directory, `a${index}`), 'w', (error, fd) => { if (error === null) resolve(fd); else reject(error) }) })
  await new Promise<void>((resolve, reject) => { fs.write(fd, bytes, (error) => { if (error === null) resolve(); else reject(error) }) })
  fs.closeSync(fd)
})
await measure('synchronous', (index) => {
  const fd = fs.openSync(join(directory, `s${index}`), 'w')
  fs.writeSync(fd, bytes)
  fs.closeSync(fd)
})
await rm(directory, { recursive: true, force: true })
