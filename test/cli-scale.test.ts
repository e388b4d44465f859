// The CLI scaled out: two `fastify-tus` processes with the S3 and Redis flags (one reads them from the
// environment) behind a round-robin client share uploads and locks, on the real services.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { HeadObjectCommand } from '@aws-sdk/client-s3'
import t from 'tap'
import { DefaultHttpStack, type HttpRequest, type HttpStack } from 'tus-js-client'
import { idOf, randomBytesSeeded, sha256, tusRequest, tusUpload } from './helpers.js'
import { builtCli, type RunningProcess, runProcess, startProcess, waitForOutput } from './process.js'
import { redisUrl, s3Settings, testBucket, testS3Client, uniqueName } from './services.js'

const cli = await builtCli()
const MiB = 1024 * 1024

const SCALE_FLAGS = ['--s3-bucket', '--s3-endpoint', '--s3-region', '--s3-prefix', '--s3-part-size', '--s3-parts-in-flight', '--redis-url', '--redis-prefix']

t.test('--help documents the scale-out flags and their variables', async (t) => {
  const result = await runProcess(t, process.execPath, [cli, '--help'])
  t.equal(result.code, 0)
  for (const flag of SCALE_FLAGS) t.match(result.stdout, new RegExp(`^ +${flag}\\b.*\\[FASTIFY_TUS_[A-Z0-9_]+\\]$`, 'm'), `documents ${flag}`)
  t.match(result.stdout, /AWS_ACCESS_KEY_ID/)
  // Every source of the region, in the order the CLI reads them (as the README's table has them).
  t.match(result.stdout, /--s3-region .*default: AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1/, 'the region falls back to AWS_DEFAULT_REGION')
})

t.test('bad scale-out flags and variables exit 2 saying what is wrong', async (t) => {
  const cases: Array<[string[], Record<string, string>, RegExp]> = [
    [['--s3-endpoint', 'http://127.0.0.1:1'], {}, /--s3-endpoint needs --s3-bucket/],
    [['--s3-bucket', 'b', '--s3-endpoint', 'ftp://x'], {}, /--s3-endpoint must be an http\(s\) URL/],
    [['--s3-bucket', 'b', '--s3-part-size', 'lots'], {}, /--s3-part-size must be a positive number of bytes/],
    [['--s3-bucket', 'b', '--s3-part-size', '8MB'], {}, /--s3-part-size must be a positive number of bytes/],
    [['--s3-bucket', 'b', '--s3-part-size', '1M', '--port', '0'], {}, /^fastify-tus: --s3-part-size must be an integer from 5242880/m],
    [['--s3-bucket', 'b', '--port', '0'], { FASTIFY_TUS_S3_PART_SIZE: '4M' }, /^fastify-tus: FASTIFY_TUS_S3_PART_SIZE must be an integer from 5242880/m],
    [['--s3-bucket', 'b', '--s3-parts-in-flight', 'many'], {}, /--s3-parts-in-flight must be a whole number/],
    [['--s3-bucket', 'b', '--port', '0'], { FASTIFY_TUS_S3_PARTS_IN_FLIGHT: '65' }, /^fastify-tus: FASTIFY_TUS_S3_PARTS_IN_FLIGHT must be an integer from 1 to 64/m],
    [['--s3-parts-in-flight', '2'], {}, /--s3-parts-in-flight needs --s3-bucket/],
    // A variable is named as the variable (the user never typed --redis-url).
    [[], { FASTIFY_TUS_REDIS_URL: 'http://127.0.0.1:6379' }, /^fastify-tus: FASTIFY_TUS_REDIS_URL must be a redis:\/\/ or rediss:\/\/ URL/m],
    [[], { FASTIFY_TUS_S3_ENDPOINT: 'http://127.0.0.1:1' }, /^fastify-tus: FASTIFY_TUS_S3_ENDPOINT needs --s3-bucket \(or FASTIFY_TUS_S3_BUCKET\)/m],
    [['--redis-prefix', 'x:'], {}, /--redis-prefix needs --redis-url/]
  ]
  for (const [args, env, message] of cases) {
    const result = await runProcess(t, process.execPath, [cli, ...args], { env })
    t.equal(result.code, 2, `${args.join(' ')} ${JSON.stringify(env)}: exit code 2`)
    t.match(result.stderr, message)
    t.match(result.stderr, /fastify-tus --help/)
  }
})

/** Sends each request to the next server in turn, whatever host the upload URL names. */
class RoundRobin implements HttpStack {
  readonly #inner = new DefaultHttpStack({})
  readonly #ports: number[]
  #next = 0
  used = new Map<number, number>()

  constructor (ports: number[]) {
    this.#ports = ports
  }

  createRequest (method: string, url: string): HttpRequest {
    const port = this.#ports[this.#next++ % this.#ports.length]!
    this.used.set(port, (this.used.get(port) ?? 0) + 1)
    const target = new URL(url)
    target.port = String(port)
    return this.#inner.createRequest(method, target.href)
  }

  getName (): string {
    return 'RoundRobin'
  }
}

t.test('two CLI processes on S3 + Redis share uploads and locks behind a round-robin client', async (t) => {
  t.setTimeout(180_000)
  const bucket = await testBucket(t)
  const s3 = s3Settings()
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-cli-scale-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const redisPrefix = `${uniqueName('tus-cli')}:`
  // The usual AWS variables carry the credentials; no flag does.
  const aws = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey }
  const start = (args: string[], env: Record<string, string>): RunningProcess =>
    startProcess(t, process.execPath, [cli, '--dir', dir, '--port', '0', '--log-level', 'warn', ...args], { env: { ...aws, ...env } })
  const a = start(['--s3-bucket', bucket, '--s3-endpoint', s3.endpoint, '--s3-prefix', 'cli/', '--s3-part-size', '5M', '--s3-parts-in-flight', '2', '--redis-url', redisUrl(), '--redis-prefix', redisPrefix, '--health-path', '/healthz'], {})
  const b = start([], {
    FASTIFY_TUS_S3_BUCKET: bucket,
    FASTIFY_TUS_S3_ENDPOINT: s3.endpoint,
    FASTIFY_TUS_S3_PREFIX: 'cli/',
    FASTIFY_TUS_S3_PART_SIZE: '5M',
    FASTIFY_TUS_S3_PARTS_IN_FLIGHT: '3',
    FASTIFY_TUS_REDIS_URL: redisUrl(),
    FASTIFY_TUS_REDIS_PREFIX: redisPrefix
  })
  const endpoints: string[] = []
  for (const server of [a, b]) {
    const [, endpoint = ''] = await waitForOutput(server, /tus endpoint at (http:\/\/127\.0\.0\.1:\d+\/files\/)/)
    t.match(server.stdout(), `(uploads in s3://${bucket}/cli/)`, 'says where the uploads go')
    endpoints.push(endpoint)
  }
  const ports = endpoints.map((endpoint) => Number(new URL(endpoint).port))
  const health = await tusRequest(new URL('/healthz', endpoints[0]).href)
  t.same([health.status, health.text], [200, 'ok'], 'healthy: the directory, S3 and Redis all answer')

  const data = randomBytesSeeded(12 * MiB + 5, 60)
  const stack = new RoundRobin(ports)
  const url = await tusUpload(data, { endpoint: endpoints[0]!, chunkSize: 3 * MiB, httpStack: stack, metadata: { filename: 'shared.bin', filetype: 'application/x-test' } })
  t.ok(stack.used.size === 2 && [...stack.used.values()].every((count) => count >= 2), `requests went to both processes (${JSON.stringify([...stack.used])})`)
  const id = idOf(url)
  for (const endpoint of endpoints) {
    const download = await tusRequest(`${endpoint}${id}`)
    t.equal(download.status, 200)
    t.equal(sha256(download.body), sha256(data), `byte-identical through ${endpoint}`)
  }
  const client = testS3Client()
  t.teardown(() => { client.destroy() })
  const object = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: `cli/${id}` }))
  t.equal(object.ContentLength, data.length, 'the upload is an object under --s3-prefix')
  t.equal(object.ContentType, 'application/x-test')

  // One lock for both: a HEAD on B asks the PATCH running on A to let go (it would wait forever otherwise).
  const created = await tusRequest(endpoints[0]!, { method: 'POST', headers: { 'Upload-Length': String(MiB) } })
  const second = `${idOf(new URL(created.headers.location!, endpoints[0]).href)}`
  const body = new PassThrough()
  // A answers when it ends the body, before the client sent all it declared: the client may only see the close.
  const patch = tusRequest(`${endpoints[0]}${second}`, { method: 'PATCH', headers: { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream', 'Content-Length': String(MiB) }, body })
    .then((response) => response.status, () => 'closed')
  body.write(Buffer.alloc(1000, 1))
  // A HEAD that comes before the PATCH took the lock finds offset 0 at once; the next one finds the PATCH.
  let head = await tusRequest(`${endpoints[1]}${second}`, { method: 'HEAD' })
  for (let attempt = 0; head.headers['upload-offset'] === '0' && attempt < 50; attempt++) head = await tusRequest(`${endpoints[1]}${second}`, { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(head.headers['upload-offset'], '1000', 'B waited for the lock A held, which A gave up')
  t.ok([204, 'closed'].includes(await patch), 'the PATCH on A ended')
  const after = await tusRequest(`${endpoints[0]}${second}`, { method: 'HEAD' })
  t.equal(after.headers['upload-offset'], '1000', 'A ended its body when B asked, keeping its bytes')

  for (const server of [a, b]) {
    server.child.kill('SIGTERM')
    t.same(await server.exited, { code: 0, signal: null }, 'SIGTERM: exit 0')
    t.notMatch(server.stderr(), /"level":(50|60)/, 'no error logged')
  }
})
