// The Dockerfile, checked without Docker: its final stage runs the package's bin as a non-root user that owns the
// /data volume, and its command line (ENTRYPOINT, CMD, ENV) run with Node serves uploads into the directory the
// volume stands for, answers its HEALTHCHECK (also with flags added after the image name), and closes on SIGTERM
// (docker stop) with exit 0.
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { randomBytesSeeded, rawRequest, sha256, tusUpload } from './helpers.js'
import { builtCli, runProcess, startProcess, waitForOutput } from './process.js'

const root = join(import.meta.dirname, '..')
const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { name: string, bin: Record<string, string> }

interface Instruction { keyword: string, args: string }

/** The instructions of a Dockerfile: comments dropped, `\` continuations joined. */
function parse (text: string): Instruction[] {
  const joined = text.split('\n').filter((line) => !line.trimStart().startsWith('#')).join('\n').replace(/\\\n/g, ' ')
  return joined.split('\n').map((line) => line.trim()).filter((line) => line !== '').map((line) => {
    const [keyword = '', ...rest] = line.split(/\s+/)
    return { keyword: keyword.toUpperCase(), args: rest.join(' ') }
  })
}

/** An exec-form (JSON array) argument list; the shell form is refused (no shell between docker stop and Node). */
function execForm (args: string): string[] {
  const parsed: unknown = JSON.parse(args)
  if (!Array.isArray(parsed) || !parsed.every((item) => typeof item === 'string')) throw new Error(`not exec form: ${args}`)
  return parsed
}

function envOf (instructions: Instruction[]): Record<string, string> {
  const env: Record<string, string> = {}
  for (const { args } of instructions.filter((instruction) => instruction.keyword === 'ENV')) {
    for (const pair of args.split(/\s+/)) {
      const [name = '', ...value] = pair.split('=')
      env[name] = value.join('=')
    }
  }
  return env
}

const all = parse(await readFile(join(root, 'Dockerfile'), 'utf8'))
const lastFrom = all.findLastIndex((instruction) => instruction.keyword === 'FROM')
const final = all.slice(lastFrom)
const one = (keyword: string): string => {
  const found = final.filter((instruction) => instruction.keyword === keyword)
  if (found.length !== 1) throw new Error(`the final stage has ${found.length} ${keyword}`)
  return found[0]!.args
}

t.test('the image has the optional peers of the CLI\'s scale-out flags, at the versions of the lock', async (t) => {
  // The build stage's RUN that lists them, run here against the repository's lock (its output to a temporary file).
  const listing = all.slice(0, lastFrom).find(({ keyword, args }) => keyword === 'RUN' && args.includes('/tmp/scale-peers'))
  t.ok(listing !== undefined, 'the build stage lists them')
  const out = join(await mkdtemp(join(tmpdir(), 'fastify-tus-docker-')), 'scale-peers')
  await promisify(execFile)('sh', ['-c', listing!.args.replace('/tmp/scale-peers', out)], { cwd: root })
  const locked = (JSON.parse(await readFile(join(root, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version: string }> }).packages
  t.equal((await readFile(out, 'utf8')).trim(), ['@aws-sdk/client-s3', 'ioredis'].map((name) => `${name}@${locked[`node_modules/${name}`]!.version}`).join(' '))
  await rm(join(out, '..'), { recursive: true, force: true })
  t.ok(final.some(({ keyword, args }) => keyword === 'RUN' && /npm install --global .*\/tmp\/fastify-tus-\*\.tgz \$\(cat \/tmp\/scale-peers\)/.test(args)),
    'the final stage installs them globally beside the package, where the CLI looks for them')
})

t.test('the final stage: a non-root user owning the /data volume, the package bin as entrypoint', async (t) => {
  const user = one('USER')
  t.notOk(['root', '0', '0:0'].includes(user) || user.startsWith('root:') || user.startsWith('0:'), `USER ${user} is not root`)
  const volume = one('VOLUME')
  t.same(volume.startsWith('[') ? execForm(volume) : volume.split(/\s+/), ['/data'], 'VOLUME /data')
  t.ok(final.some(({ keyword, args }) => keyword === 'RUN' && args.includes(`chown ${user}:${user} /data`)), 'the user owns /data')
  t.equal(final.findIndex(({ keyword }) => keyword === 'USER') > final.findIndex(({ keyword, args }) => keyword === 'RUN' && args.includes('chown')), true, 'USER after the last RUN as root')
  t.equal(envOf(final).FASTIFY_TUS_DIR, '/data', 'the CLI stores in the volume')
  t.same(execForm(one('ENTRYPOINT')), [pkg.name], 'the package bin (an exec-form entrypoint: SIGTERM reaches Node)')
  t.ok(pkg.bin[pkg.name] !== undefined)
  // Every file the build stage copies is in the repository (and not ignored by .dockerignore).
  const ignored = (await readFile(join(root, '.dockerignore'), 'utf8')).split('\n').filter((line) => line !== '')
  for (const { args } of all.slice(0, lastFrom).filter(({ keyword }) => keyword === 'COPY')) {
    const sources = args.split(/\s+/).slice(0, -1)
    for (const source of sources) {
      t.ok(existsSync(join(root, source)), `COPY ${source} exists`)
      t.notOk(ignored.includes(source.split('/')[0]!), `${source} is not in .dockerignore`)
    }
  }
})

t.test('the image\'s command line, run with Node: uploads into the volume, healthy with flags after the image name, SIGTERM exits 0', async (t) => {
  await builtCli()
  const data = await mkdtemp(join(tmpdir(), 'fastify-tus-docker-'))
  const scratch = await mkdtemp(join(tmpdir(), 'fastify-tus-docker-tmp-'))
  t.teardown(async () => { await rm(data, { recursive: true, force: true }); await rm(scratch, { recursive: true, force: true }) })
  const env = envOf(final)
  // The container's /data and /tmp are temporary directories; loopback instead of 0.0.0.0. The image's port
  // stays in the environment: the server is told another one, and another health path, after the image name
  // (`docker run ... fastify-tus --port 0 --health-path /live`), which the health check must follow.
  t.ok(env.FASTIFY_TUS_HEALTH_FILE?.startsWith('/tmp/'), 'the health file is in the container\'s /tmp, which the user can write')
  const healthFile = join(scratch, 'fastify-tus-health')
  const processEnv = { ...env, FASTIFY_TUS_DIR: data, FASTIFY_TUS_HOST: '127.0.0.1', FASTIFY_TUS_HEALTH_FILE: healthFile }
  const [bin = '', ...args] = [...execForm(one('ENTRYPOINT')), ...(final.some(({ keyword }) => keyword === 'CMD') ? execForm(one('CMD')) : [])]
  const server = startProcess(t, process.execPath, [join(root, pkg.bin[bin]!), ...args, '--port', '0', '--health-path', '/live'], { env: processEnv, cwd: data })
  const [, endpoint = '', port = ''] = await waitForOutput(server, /tus endpoint at (http:\/\/127\.0\.0\.1:(\d+)\/files\/)/)
  t.not(port, env.FASTIFY_TUS_PORT, 'not the image\'s port')

  const bytes = randomBytesSeeded(3 * 1024 * 1024, 21)
  const url = await tusUpload(bytes, { endpoint, chunkSize: 1024 * 1024 })
  const id = new URL(url).pathname.split('/').pop()!
  t.ok((await readdir(data)).includes(id), 'the upload is in the volume')
  t.equal(sha256(await readFile(join(data, id))), sha256(bytes))
  t.equal(sha256((await rawRequest(url)).body), sha256(bytes))

  // The HEALTHCHECK, as Docker runs it inside the container: with the image's environment only.
  const health = one('HEALTHCHECK')
  t.ok(health.startsWith('CMD '), 'HEALTHCHECK CMD')
  const [probe = '', ...probeArgs] = execForm(health.slice('CMD '.length))
  t.equal(probe, 'node')
  t.equal(await readFile(healthFile, 'utf8'), `http://127.0.0.1:${port}/live`, 'the server wrote where it listens')
  const healthy = await runProcess(t, process.execPath, probeArgs, { env: processEnv })
  t.equal(healthy.code, 0, 'healthy')

  server.child.kill('SIGTERM')
  const exit = await server.exited
  t.equal(exit.code, 0, 'docker stop: a graceful exit')
  t.notOk(existsSync(healthFile), 'the health file is removed at shutdown')
  const unhealthy = await runProcess(t, process.execPath, probeArgs, { env: processEnv })
  t.equal(unhealthy.code, 1, 'unhealthy once stopped')
})
