/**
 * File-system calls per small upload (POST + PATCH of 16 KiB, as W3), counted with strace on the server
 * process: a figure that, unlike throughput, does not move with the load on the machine.
 *
 *   npm run build && node --import tsx bench/fs-calls.ts [--servers fastify-tus,fastify-tus-nofsync,limit] [--count 200]
 *
 * strace (-f, -y: descriptors shown with their paths) is attached after the warm-up; every system call whose
 * arguments or descriptors name a path in the server's data directory is counted, by name.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdir, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { DATA_ROOT, NODE_FLAGS, RunningServer, SERVERS } from './servers.js'
import { inParallel, slice, TusClient, warmUp } from './workloads.js'

const { values: args } = parseArgs({
  options: {
    servers: { type: 'string', default: 'fastify-tus,fastify-tus-nofsync,limit,limit-fsync' },
    count: { type: 'string', default: '200' }
  }
})
const count = Number(args.count)
const SIZE = 16 * 1024
const SYSCALLS = 'openat,open,close,fstat,newfstatat,statx,stat,lstat,link,linkat,unlink,unlinkat,rename,renameat,renameat2,write,writev,pwrite64,pwritev,read,pread64,preadv,fsync,fdatasync,symlink,symlinkat,mkdir,mkdirat,fchmod,chmod,fchmodat'

await mkdir(DATA_ROOT, { recursive: true })
console.log('| server | file-system calls per upload | by call |')
console.log('| --- | ---: | --- |')
for (const key of args.servers.split(',')) {
  const definition = SERVERS[key]
  if (definition === undefined) throw new Error(`unknown server ${key}`)
  const server = await RunningServer.start(definition, NODE_FLAGS)
  const trace = join(DATA_ROOT, `strace-${key}.txt`)
  try {
    await warmUp(server.origin)
    const strace = spawn('strace', ['-f', '-y', '-e', `trace=${SYSCALLS}`, '-o', trace, '-p', String(server.pid)], { stdio: ['ignore', 'ignore', 'pipe'] })
    // strace prints "attached" for each thread once it traces them.
    await new Promise<void>((resolve) => { strace.stderr.on('data', () => { resolve() }) })
    await new Promise((resolve) => setTimeout(resolve, 500))
    const body = slice(3, SIZE, 0, SIZE)
    const client = new TusClient(server.origin, 4)
    await inParallel(count, 4, async () => {
      const { path } = await client.create(SIZE)
      await client.patch(path, 0, SIZE, body)
    })
    await client.close()
    await new Promise((resolve) => setTimeout(resolve, 500))
    strace.kill('SIGINT')
    await once(strace, 'exit')
    const byCall = new Map<string, number>()
    for (const line of (await readFile(trace, 'utf8')).split('\n')) {
      if (!line.includes(server.dataDir) || line.includes('resumed>')) continue
      const name = /^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+)\(/.exec(line)?.[1]
      if (name !== undefined) byCall.set(name, (byCall.get(name) ?? 0) + 1)
    }
    const total = [...byCall.values()].reduce((sum, value) => sum + value, 0)
    const calls = [...byCall.entries()].sort((a, b) => b[1] - a[1]).map(([name, value]) => `${name} ${(value / count).toFixed(2)}`).join(', ')
    console.log(`| ${definition.name} | ${(total / count).toFixed(2)} | ${calls} |`)
  } finally {
    await server.stop()
    await server.removeData()
    await rm(trace, { force: true })
  }
}
