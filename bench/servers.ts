import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { connect, createServer, type AddressInfo } from 'node:net'
import { createInterface } from 'node:readline'

/** USER_HZ: the unit of utime and stime in /proc/<pid>/stat (100 on Linux everywhere in practice). */
const CLOCK_TICKS = 100

/** Where the servers' data directories go: bench/data, or BENCH_DATA_ROOT (e.g. a tmpfs, to take the disk's file system out of a figure). */
export const DATA_ROOT = process.env.BENCH_DATA_ROOT ?? join(import.meta.dirname, 'data')
const SCRIPTS = join(import.meta.dirname, 'servers')

/**
 * Every server runs with the same node flags, so no server gets a memory or speed advantage from flags: by
 * default none (node's defaults, as users run it); `npm run bench -- --node-flags=...` sets others.
 */
export const NODE_FLAGS: string[] = []

export interface ServerDefinition {
  /** Name in the tables. */
  name: string
  script: string
  args: string[]
  /** Locks through Redis: given BENCH_REDIS_URL, or a redis-server of its own (RedisServer). */
  redis?: boolean
}

export const SERVERS: Record<string, ServerDefinition> = {
  'fastify-tus': { name: 'fastify-tus', script: 'fastify-tus.mjs', args: [] },
  'fastify-tus-nofsync': { name: 'fastify-tus (fsync: false)', script: 'fastify-tus.mjs', args: ['--no-fsync'] },
  // With the lockers of several instances (RedisLocker on a redis-server of its own, or BENCH_REDIS_URL; FileLocker in
  // <data dir>/.locks). bench/instances.ts runs several such processes on one directory.
  'fastify-tus-redis': { name: 'fastify-tus (fsync: false, RedisLocker)', script: 'fastify-tus.mjs', args: ['--no-fsync', '--locker=redis'], redis: true },
  'fastify-tus-base-redis': { name: 'fastify-tus (base, fsync: false, RedisLocker)', script: 'fastify-tus.mjs', args: ['--base', '--no-fsync', '--locker=redis'], redis: true },
  'fastify-tus-filelock': { name: 'fastify-tus (fsync: false, FileLocker)', script: 'fastify-tus.mjs', args: ['--no-fsync', '--locker=file'] },
  'fastify-tus-base-filelock': { name: 'fastify-tus (base, fsync: false, FileLocker)', script: 'fastify-tus.mjs', args: ['--base', '--no-fsync', '--locker=file'] },
  'fastify-tus-nocache': { name: 'fastify-tus (cacheSize: 0)', script: 'fastify-tus.mjs', args: ['--cache-size=0'] },
  // The same from another build (BENCH_BASE_DIST=<path of its dist/index.js>), e.g. main before a change.
  'fastify-tus-base': { name: 'fastify-tus (base)', script: 'fastify-tus.mjs', args: ['--base'] },
  'fastify-tus-base-nofsync': { name: 'fastify-tus (base, fsync: false)', script: 'fastify-tus.mjs', args: ['--base', '--no-fsync'] },
  'tus-server': { name: '@tus/server', script: 'tus-server.mjs', args: [] },
  limit: { name: 'limit', script: 'limit.mjs', args: [] },
  'limit-fsync': { name: 'limit (fsync)', script: 'limit.mjs', args: ['--fsync'] },
  // Diagnostics for bench/probe.ts (servers/plain-body.mjs): the plugin's RequestBody on node's http server, alone,
  // beside an unused Fastify app, or beside an unused Fastify app with the plugin.
  'plain-body': { name: 'plain body', script: 'plain-body.mjs', args: [] },
  // The bare tus on Fastify routes (servers/fastify-floor.mjs): what Fastify costs a request before the plugin's work.
  'fastify-floor': { name: 'Fastify floor', script: 'fastify-floor.mjs', args: [] },
  // What a download costs at least (servers/plain-download.mjs): the data file piped into the response (bench/download.ts).
  'plain-download': { name: 'plain download', script: 'plain-download.mjs', args: [] },
  'plain-body-fastify': { name: 'plain body + Fastify loaded', script: 'plain-body.mjs', args: ['--load=fastify'] },
  'plain-body-plugin': { name: 'plain body + plugin loaded', script: 'plain-body.mjs', args: ['--load=plugin'] }
}

/** A server process listening on 127.0.0.1 with a data directory of its own. */
export class RunningServer {
  readonly origin: string
  readonly dataDir: string
  readonly #process: ChildProcess
  /** The redis-server started for this server alone, if it needed one. */
  readonly #redis: RedisServer | undefined

  private constructor (process: ChildProcess, port: number, dataDir: string, redis: RedisServer | undefined) {
    this.#process = process
    this.origin = `http://127.0.0.1:${port}`
    this.dataDir = dataDir
    this.#redis = redis
  }

  /**
   * Starts `definition` and resolves once it printed its port: with a fresh data directory, or `shared.dataDir`
   * (several instances of one store); a Redis server's locks go to `shared.redisUrl`, BENCH_REDIS_URL, or a
   * redis-server of its own.
   */
  static async start (definition: ServerDefinition, nodeFlags: string[], shared: { dataDir?: string, redisUrl?: string } = {}): Promise<RunningServer> {
    const dataDir = shared.dataDir ?? await mkdtemp(join(DATA_ROOT, `${definition.script.replace('.mjs', '')}-`))
    const redisUrl = definition.redis === true ? shared.redisUrl ?? process.env.BENCH_REDIS_URL : undefined
    const ownRedis = definition.redis === true && redisUrl === undefined ? await RedisServer.start() : undefined
    const child = spawn(process.execPath, [...nodeFlags, join(SCRIPTS, definition.script), dataDir, ...definition.args], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, NODE_OPTIONS: '', ...(definition.redis === true ? { BENCH_REDIS_URL: redisUrl ?? ownRedis!.url } : {}) }
    })
    child.once('exit', () => { ownRedis?.stop() })
    const lines = createInterface({ input: child.stdout! })
    const exited = once(child, 'exit').then(([code]) => { throw new Error(`${definition.name} exited with ${String(code)} before it listened`) })
    const [line] = await Promise.race([once(lines, 'line') as Promise<[string]>, exited])
    lines.close()
    const port = Number(line)
    if (!Number.isInteger(port) || port <= 0) throw new Error(`${definition.name} printed "${line}" instead of a port`)
    return new RunningServer(child, port, dataDir, ownRedis)
  }

  get pid (): number {
    return this.#process.pid!
  }

  /** From now on, peakRssMiB is the peak since this call (Linux: clear_refs 5 sets VmHWM to the RSS of the moment). */
  async resetPeakRss (): Promise<void> {
    await writeFile(`/proc/${this.#process.pid!}/clear_refs`, '5')
  }

  /** Peak resident set size of the server process so far (VmHWM), in MiB. */
  async peakRssMiB (): Promise<number> {
    const status = await readFile(`/proc/${this.#process.pid!}/status`, 'utf8')
    const match = /VmHWM:\s+(\d+) kB/.exec(status)
    if (match === null) throw new Error('no VmHWM in /proc/<pid>/status')
    return Number(match[1]) / 1024
  }

  /** CPU time (user + system) the server process has used so far, in seconds. */
  async cpuSeconds (): Promise<number> {
    const stat = await readFile(`/proc/${this.#process.pid!}/stat`, 'utf8')
    // Fields after the command name (which is in parentheses): utime and stime are the 12th and 13th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS
  }

  /** Stops the process (SIGTERM: the servers exit normally, so --cpu-prof writes its profile). */
  async stop (): Promise<void> {
    if (this.#process.exitCode !== null || this.#process.signalCode !== null) return
    const exited = once(this.#process, 'exit')
    this.#process.kill('SIGTERM')
    await exited
  }

  async removeData (): Promise<void> {
    await rm(this.dataDir, { recursive: true, force: true })
  }
}

/** A throwaway redis-server on 127.0.0.1 and a free port, without persistence. */
export class RedisServer {
  readonly url: string
  readonly #process: ChildProcess

  private constructor (process: ChildProcess, port: number) {
    this.#process = process
    this.url = `redis://127.0.0.1:${port}`
  }

  static async start (): Promise<RedisServer> {
    const port = await new Promise<number>((resolve, reject) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const { port } = probe.address() as AddressInfo
        probe.close(() => { resolve(port) })
      }).on('error', reject)
    })
    const child = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
    const server = new RedisServer(child, port)
    // Ready once it accepts a connection.
    for (let attempt = 0; ; attempt++) {
      const connected = await new Promise<boolean>((resolve) => {
        const socket = connect(port, '127.0.0.1', () => { socket.end(); resolve(true) }).on('error', () => { resolve(false) })
      })
      if (connected) {
        // RedisLocker takes no lock from a server up for less than its ttl + 1 s (11 s by default).
        await once(spawn('bash', [join(import.meta.dirname, '..', 'scripts', 'services', 'redis-settled.sh'), '11'], { stdio: 'inherit', env: { ...process.env, REDIS_PORT: String(port) } }), 'exit')
        return server
      }
      if (attempt === 100 || child.exitCode !== null) throw new Error('redis-server did not start (is it installed?)')
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }

  stop (): void {
    this.#process.kill()
  }
}
