/**
 * Instructions per small upload (POST + PATCH of 16 KiB, as W3), or per HEAD (`--kind head-spread`: each HEAD of
 * another upload, none sharing a read; `--kind head-one`: HEADs of one upload, 4 at a time, as W5), counted by
 * valgrind's callgrind in the server's user space, after `--warm` untimed requests of the same kind. Like
 * bench/fs-calls.ts, a figure the load on the machine barely moves (CPU time on this shared machine moved 3x between
 * rounds of one server); kernel work is not in it (fs-calls.ts counts the calls that cause most of it). Slow:
 * valgrind runs the server about 50x slower, so keep --count small.
 *
 * The main thread (JavaScript, node, the event loop) is counted apart from the others (libuv's pool, V8's
 * compiler and GC threads): V8 compiles a hot function with TurboFan on a worker thread after thousands of calls,
 * and with a warm-up of 50 uploads that compilation was two thirds of fastify-tus's count (bench/RESULTS.md,
 * session 17), a cost a warm server no longer pays.
 *
 *   npm run build && node --import tsx bench/instructions.ts [--servers fastify-tus-nofsync,fastify-tus-base-nofsync,limit] [--count 200] [--warm 1000]
 *   node --import tsx bench/instructions.ts --kind head-spread --servers fastify-tus-nofsync,fastify-floor,limit --count 2000
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { DATA_ROOT, SERVERS } from './servers.js'
import { inParallel, slice, TusClient, warmUp } from './workloads.js'

const { values: args } = parseArgs({
  options: {
    servers: { type: 'string', default: 'fastify-tus-nofsync,limit' },
    count: { type: 'string', default: '200' },
    warm: { type: 'string', default: '1000' },
    kind: { type: 'string', default: 'upload' }
  }
})
const KINDS = ['upload', 'head-spread', 'head-one']
if (!KINDS.includes(args.kind)) throw new Error(`--kind: one of ${KINDS.join(', ')}`)
const count = Number(args.count)
const warm = Number(args.warm)
const SIZE = 16 * 1024
const SCRIPTS = join(import.meta.dirname, 'servers')

async function control (pid: number, flag: string): Promise<void> {
  const child = spawn('callgrind_control', [flag, String(pid)], { stdio: 'ignore' })
  const [code] = await once(child, 'exit') as [number]
  if (code !== 0) throw new Error(`callgrind_control ${flag} exited with ${code}`)
}

await mkdir(DATA_ROOT, { recursive: true })
const unit = args.kind === 'upload' ? 'upload' : 'HEAD'
console.log(`Instructions per ${unit}, millions, user space: ${count} ${args.kind === 'upload' ? 'uploads' : `HEADs, ${args.kind}`}, after ${warm} untimed.`)
console.log('| server | main thread | other threads | all |')
console.log('| --- | ---: | ---: | ---: |')
for (const key of args.servers.split(',')) {
  const definition = SERVERS[key]
  if (definition === undefined) throw new Error(`unknown server ${key}`)
  const dataDir = await mkdtemp(join(DATA_ROOT, `${definition.script.replace('.mjs', '')}-`))
  const outDir = await mkdtemp(join(DATA_ROOT, 'callgrind-'))
  const child = spawn('valgrind', [
    '--tool=callgrind', '--separate-threads=yes', `--callgrind-out-file=${join(outDir, 'out.%p')}`,
    process.execPath, join(SCRIPTS, definition.script), dataDir, ...definition.args
  ], { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, NODE_OPTIONS: '' } })
  try {
    const lines = createInterface({ input: child.stdout! })
    const [line] = await once(lines, 'line') as [string]
    lines.close()
    const origin = `http://127.0.0.1:${Number(line)}`
    await warmUp(origin)
    const body = slice(3, SIZE, 0, SIZE)
    // Warm the JIT on the workload itself, then count.
    const client = new TusClient(origin, 4)
    const upload = async (): Promise<string> => {
      const { path } = await client.create(SIZE)
      await client.patch(path, 0, SIZE, body)
      return path
    }
    let measured: () => Promise<void>
    if (args.kind === 'upload') {
      await inParallel(warm, 4, async () => { await upload() })
      measured = async () => { await inParallel(count, 4, async () => { await upload() }) }
    } else {
      // As many uploads as HEADs for head-spread, one for head-one. A first pass of the same HEADs warms the JIT and
      // lets the creations' aftermath (garbage, timers) pass; the second is counted.
      const paths: string[] = []
      await inParallel(args.kind === 'head-spread' ? count : 1, 4, async () => { paths.push(await upload()) })
      const heads = async (times: number): Promise<void> => { await inParallel(times, 4, async (index) => { await client.head(paths[index % paths.length]!, SIZE) }) }
      await heads(Math.max(warm, count))
      measured = async () => { await heads(count) }
    }
    await control(child.pid!, '--zero')
    await measured()
    await control(child.pid!, '--dump')
    await client.close()
    let main = 0
    let other = 0
    // The dump asked for (out.<pid>.1-<thread>, thread 01 the main one); out.<pid>-<thread> is written at exit,
    // with what ran after it.
    for (const name of await readdir(outDir)) {
      const thread = /^out\.\d+\.\d+-(\d+)$/.exec(name)?.[1]
      if (thread === undefined) continue
      const summary = /^summary: (\d+)/m.exec(await readFile(join(outDir, name), 'utf8'))
      if (summary === null) continue
      if (Number(thread) === 1) main += Number(summary[1])
      else other += Number(summary[1])
    }
    const millions = (instructions: number): string => (instructions / count / 1e6).toFixed(3)
    console.log(`| ${definition.name} | ${millions(main)} | ${millions(other)} | ${millions(main + other)} |`)
  } finally {
    child.kill('SIGTERM')
    await once(child, 'exit')
    await rm(dataDir, { recursive: true, force: true })
    if (process.env.KEEP_CALLGRIND === undefined) await rm(outDir, { recursive: true, force: true })
  }
}
