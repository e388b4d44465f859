// The CLI's --health-path (200 only while the upload directory takes a write) and every flag as a FASTIFY_TUS_*
// environment variable, a flag on the command line winning over its variable.
import t from 'tap'
import { mkdir, mkdtemp, readdir, rename, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify from 'fastify'
import { envArguments, envName, parseSize, unknownEnvVariables } from '../lib/cli-env.js'
import { directoryProbe, healthRoute } from '../lib/cli-health.js'
import { freePort, rawRequest, tusRequest } from './helpers.js'
import { startProcess, waitForOutput } from './process.js'

const cli = join(import.meta.dirname, '..', 'lib', 'cli.ts')

async function tempDir (t: { teardown: (fn: () => unknown) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-cli-env-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

t.test('flags from FASTIFY_TUS_* variables; a command-line flag wins; the health path follows the store', async (t) => {
  const root = await tempDir(t)
  const dir = join(root, 'uploads')
  const server = startProcess(t, process.execPath, ['--import', 'tsx', cli, '--max-size', '2K'], {
    env: {
      FASTIFY_TUS_DIR: dir,
      FASTIFY_TUS_PORT: '0',
      FASTIFY_TUS_PREFIX: '/up',
      FASTIFY_TUS_MAX_SIZE: '1K',
      FASTIFY_TUS_RELATIVE_LOCATION: 'true',
      FASTIFY_TUS_CORS_ORIGIN: 'https://a.example, https://b.example',
      FASTIFY_TUS_HEALTH_PATH: '/healthz',
      FASTIFY_TUS_LOG_LEVEL: 'silent'
    }
  })
  const [, endpoint = ''] = await waitForOutput(server, /tus endpoint at (http:\/\/127\.0\.0\.1:\d+\/up\/)/)
  const origin = new URL(endpoint).origin

  const options = await tusRequest(endpoint, { method: 'OPTIONS' })
  t.equal(options.headers['tus-max-size'], '2048', 'the flag wins over FASTIFY_TUS_MAX_SIZE')
  const created = await tusRequest(endpoint, { method: 'POST', headers: { 'Upload-Length': '3' } })
  t.equal(created.status, 201)
  t.match(created.headers.location, /^\/up\/[A-Za-z0-9_-]+$/, 'FASTIFY_TUS_RELATIVE_LOCATION')
  for (const allowed of ['https://a.example', 'https://b.example']) {
    const preflight = await rawRequest(endpoint, { method: 'OPTIONS', headers: { Origin: allowed, 'Access-Control-Request-Method': 'POST' } })
    t.equal(preflight.headers['access-control-allow-origin'], allowed, `FASTIFY_TUS_CORS_ORIGIN lists ${allowed}`)
  }

  const healthy = await rawRequest(`${origin}/healthz`)
  t.equal(healthy.status, 200)
  t.equal(healthy.text, 'ok')
  t.equal(healthy.headers['cache-control'], 'no-store')
  // The directory goes away (an unmounted volume): the store takes no write.
  await rename(dir, join(root, 'gone'))
  const unhealthy = await rawRequest(`${origin}/healthz`)
  t.equal(unhealthy.status, 503)
  t.equal(unhealthy.text, 'store not writable')
  await mkdir(dir)
  t.equal((await rawRequest(`${origin}/healthz`)).status, 200, 'healthy again once it is back')
})

t.test('a bad variable is a usage error (exit 2) naming the variable, not a flag nobody typed; a flag given names the flag', async (t) => {
  for (const [env, args, message] of [
    [{ FASTIFY_TUS_PORT: 'http' }, [], /^fastify-tus: FASTIFY_TUS_PORT must be a whole number/m],
    [{ FASTIFY_TUS_NO_FSYNC: 'maybe' }, [], /FASTIFY_TUS_NO_FSYNC must be 1\/true\/yes\/on or 0\/false\/no\/off/],
    [{ FASTIFY_TUS_HEALTH_PATH: 'healthz' }, [], /^fastify-tus: FASTIFY_TUS_HEALTH_PATH must be a URL path/m],
    [{ FASTIFY_TUS_CORS_ORIGIN: 'https://app.example.com,https://*.example.com' }, [], /^fastify-tus: FASTIFY_TUS_CORS_ORIGIN must be .*no wildcards/m],
    [{ FASTIFY_TUS_METRICS_PATH: '/ops' }, ['--health-path', '/ops'], /^fastify-tus: --health-path and FASTIFY_TUS_METRICS_PATH must differ/m],
    [{ FASTIFY_TUS_PORT: '0' }, ['--port', 'http'], /^fastify-tus: --port must be a whole number/m]
  ] as const) {
    const running = startProcess(t, process.execPath, ['--import', 'tsx', cli, ...args], { env })
    t.equal((await running.exited).code, 2)
    t.match(running.stderr(), message)
  }
})

t.test('a misspelt FASTIFY_TUS_* variable, whose setting is off, is warned about at start, naming the one meant', async (t) => {
  const root = await tempDir(t)
  const server = startProcess(t, process.execPath, ['--import', 'tsx', cli], {
    env: { FASTIFY_TUS_DIR: join(root, 'uploads'), FASTIFY_TUS_PORT: '0', FASTIFY_TUS_MAXSIZE: '1K', FASTIFY_TUS_LOG_LEVEL: 'warn' }
  })
  const [line = ''] = await waitForOutput(server, /^.*FASTIFY_TUS_MAXSIZE.*$/m)
  t.match(JSON.parse(line) as unknown, { level: 40, msg: 'fastify-tus: FASTIFY_TUS_MAXSIZE is no variable of fastify-tus and is ignored (did you mean FASTIFY_TUS_MAX_SIZE?)' })
  const [, endpoint = ''] = await waitForOutput(server, /tus endpoint at (http:\/\/127\.0\.0\.1:\d+\/files\/)/)
  const options = await tusRequest(endpoint, { method: 'OPTIONS' })
  t.equal(options.headers['tus-max-size'], '128849018880', 'the limit meant is off: the warning says why')
  const options2 = { 'max-size': { type: 'string' }, help: { type: 'boolean' } } as const
  t.same(unknownEnvVariables(options2, { FASTIFY_TUS_MAX_SIZE: '1', FASTIFY_TUS_HELP: '1', FASTIFY_TUS_OTHER: 'x', PATH: '/bin' }), [
    'FASTIFY_TUS_HELP is no variable of fastify-tus and is ignored',
    'FASTIFY_TUS_OTHER is no variable of fastify-tus and is ignored'
  ])
})

t.test('envArguments: names, booleans, lists, and flags that win', async (t) => {
  const options = { 'max-size': { type: 'string' }, 'no-fsync': { type: 'boolean' }, 'cors-origin': { type: 'string', multiple: true }, help: { type: 'boolean' } } as const
  t.equal(envName('max-size'), 'FASTIFY_TUS_MAX_SIZE')
  t.same(envArguments(options, { FASTIFY_TUS_MAX_SIZE: '10G', FASTIFY_TUS_NO_FSYNC: '1', FASTIFY_TUS_CORS_ORIGIN: 'a,b', FASTIFY_TUS_HELP: '1' }, []),
    ['--max-size=10G', '--no-fsync', '--cors-origin=a', '--cors-origin=b'])
  t.same(envArguments(options, { FASTIFY_TUS_NO_FSYNC: 'false', FASTIFY_TUS_CORS_ORIGIN: 'a' }, ['--cors-origin', 'c']), [], 'false, and a flag given')
  t.same(envArguments(options, { FASTIFY_TUS_MAX_SIZE: '1K' }, ['--max-size=2K']), [])
  t.same(envArguments(options, { FASTIFY_TUS_MAX_SIZE: '', FASTIFY_TUS_NO_FSYNC: '', FASTIFY_TUS_CORS_ORIGIN: '' }, []), [],
    'an empty variable is one not set (a Docker image\'s default turned off with -e NAME=)')
})

t.test('healthRoute in-process: 200 while the directory takes a write, 503 once it is gone', async (t) => {
  const root = await tempDir(t)
  const dir = join(root, 'store')
  await mkdir(dir)
  const app = Fastify()
  healthRoute(app, '/health', [directoryProbe(dir)])
  t.teardown(async () => { await app.close() })
  const ok = await app.inject({ method: 'GET', url: '/health' })
  t.equal(ok.statusCode, 200)
  t.equal(ok.body, 'ok')
  t.equal(ok.headers['content-type'], 'text/plain; charset=utf-8')
  t.same(await readdir(dir), [], 'the probe file is removed')
  await rm(dir, { recursive: true })
  const down = await app.inject({ method: 'GET', url: '/health' })
  t.equal(down.statusCode, 503)
  t.equal(down.body, 'store not writable')
})

t.test('the health path answers 503 while the lock service or S3 the server uses does not answer', async (t) => {
  const root = await tempDir(t)
  const closed = await freePort()
  for (const [flags, failure] of [
    [['--redis-url', `redis://127.0.0.1:${closed}`], 'lock service unreachable'],
    [['--s3-bucket', 'uploads', '--s3-endpoint', `http://127.0.0.1:${closed}`], 'store unreachable'],
    [['--s3-bucket', 'uploads', '--s3-endpoint', `http://127.0.0.1:${closed}`, '--redis-url', `redis://127.0.0.1:${closed}`], 'store unreachable, lock service unreachable']
  ] as const) {
    const server = startProcess(t, process.execPath, ['--import', 'tsx', cli, '--dir', join(root, 'uploads'), '--port', '0', '--log-level', 'silent', '--health-path', '/healthz', ...flags], {
      env: { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test' }
    })
    const [, origin = ''] = await waitForOutput(server, /tus endpoint at (http:\/\/127\.0\.0\.1:\d+)\//)
    const health = await rawRequest(`${origin}/healthz`)
    t.equal(health.status, 503, flags.join(' '))
    t.equal(health.text, failure)
    server.child.kill('SIGTERM')
    await server.exited
  }
})

t.test('a size flag takes bytes or a binary suffix, and refuses the decimal-looking KB, MB, GB, TB', async (t) => {
  const usage = (message: string): Error => new Error(message)
  for (const [value, bytes] of [['1048576', 1048576], ['1M', 1048576], ['1MiB', 1048576], ['1m', 1048576], [' 5K ', 5120], ['2T', 2 * 1024 ** 4], ['10GiB', 10 * 1024 ** 3]] as const) {
    t.equal(parseSize('--max-size', value, usage), bytes, value)
  }
  for (const value of ['10GB', '1kb', '8B', '0', '1.5G', '-1', 'G', '', '99999999999T']) {
    t.throws(() => parseSize('--max-size', value, usage), { message: `--max-size must be a positive number of bytes, optionally with K, M, G or T (KiB, MiB, GiB, TiB; got "${value}")` }, value)
  }
})
