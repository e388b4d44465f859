// Redis stops for about ten seconds while two instances (S3 + RedisLocker) serve uploads: every answer comes
// within lockTimeout + 1 s (503 with Retry-After while the lock is unreachable), nothing stored is lost, and
// the uploads go on once Redis is back. One instance uses ioredis's defaults, the other the README's options.
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { promisify } from 'node:util'
import { idOf, randomBytesSeeded, sha256, startChild, tusRequest, type ChildServer, type RawResponse, freePort } from './helpers.js'
import { testBucket, uniqueName } from './services.js'

const run = promisify(execFile)
const MiB = 1024 * 1024
const OCTET = { 'Content-Type': 'application/offset+octet-stream' }
const LOCK_TIMEOUT = 2000
const BOUND = LOCK_TIMEOUT + 1000
const OUTAGE_MS = 10_000
const scripts = join(import.meta.dirname, '..', 'scripts', 'services')

async function timed (request: Promise<RawResponse>): Promise<RawResponse & { ms: number }> {
  const begin = Date.now()
  const response = await request
  return { ...response, ms: Date.now() - begin }
}

async function nextLine (server: ChildServer, pattern: RegExp): Promise<RegExpExecArray> {
  for (;;) {
    const { value, done } = await server.lines.next()
    if (done === true) throw new Error('the child exited')
    const match = pattern.exec(value)
    if (match !== null) return match
  }
}

t.test('Redis down for ~10 s: bounded answers (503 + Retry-After), nothing lost, uploads resume', async (t) => {
  t.setTimeout(240_000)
  const redisDir = await mkdtemp(join(tmpdir(), 'fastify-tus-outage-redis-'))
  const redisPort = await freePort()
  const redisEnv = { ...process.env, REDIS_PORT: String(redisPort) }
  const redisUp = async (): Promise<void> => { await run('bash', [join(scripts, 'redis-up.sh'), redisDir], { env: redisEnv }) }
  const redisDown = async (): Promise<void> => { await run('bash', [join(scripts, 'redis-down.sh'), redisDir]) }
  await redisUp()
  t.teardown(redisDown)
  // RedisLocker takes no lock from a server up for less than its ttl + 1 s (it may have restarted and lost locks still held).
  await run('bash', [join(scripts, 'redis-settled.sh'), '11'], { env: redisEnv })
  const bucket = await testBucket(t)
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-outage-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const env = {
    TUS_CHILD_BUCKET: bucket,
    TUS_CHILD_REDIS_PREFIX: `${uniqueName('tus-outage')}:`,
    TUS_CHILD_REDIS_URL: `redis://127.0.0.1:${redisPort}`,
    TUS_CHILD_LOCK_TIMEOUT: String(LOCK_TIMEOUT)
  }
  const [a, b] = await Promise.all([
    startChild(t, dir, { ...env, TUS_CHILD_PROGRESS: '1' }),
    startChild(t, dir, { ...env, TUS_CHILD_REDIS_OPTIONS: JSON.stringify({ enableOfflineQueue: false, maxRetriesPerRequest: 0 }) })
  ])
  const servers = [a!, b!]

  // A finished upload, and one under way.
  const done = randomBytesSeeded(300_000, 90)
  const finished = await tusRequest(`${a!.origin}/files/`, { method: 'POST', headers: { 'Upload-Length': String(done.length), ...OCTET }, body: done })
  t.equal(finished.status, 201)
  const finishedUrl = `/files/${idOf(new URL(finished.headers.location!, a!.origin).href)}`
  const data = randomBytesSeeded(6 * MiB, 91)
  const created = await tusRequest(`${b!.origin}/files/`, { method: 'POST', headers: { 'Upload-Length': String(data.length), ...OCTET }, body: data.subarray(0, MiB) })
  t.equal(created.status, 201)
  const url = `/files/${idOf(new URL(created.headers.location!, b!.origin).href)}`

  // A PATCH holding the lock when Redis stops: its answer is not held up by the release.
  const body = new PassThrough()
  const inFlight = tusRequest(`${a!.origin}${url}`, { method: 'PATCH', headers: { 'Upload-Offset': String(MiB), ...OCTET }, body })
  body.write(data.subarray(MiB, MiB + 512 * 1024))
  // Its bytes are arriving (the finished upload's own reports are all below 1 MiB): it holds the lock.
  while (Number((await nextLine(a!, /^progress (\d+)$/))[1]) <= MiB);
  await redisDown()
  const stopped = Date.now()
  const ended = stopped
  body.end(data.subarray(MiB + 512 * 1024, 2 * MiB))
  const patched = await inFlight
  const patchMs = Date.now() - ended
  t.equal(patched.status, 204, `the running PATCH stores its bytes (${patched.status} ${patched.text})`)
  t.equal(patched.headers['upload-offset'], String(2 * MiB), `offset ${patched.headers['upload-offset']}`)
  // Storing the last bytes in S3 takes some of it; the release gives up after 1 s.
  t.ok(patchMs < 2000, `answered ${patchMs} ms after its last byte (release bounded by 1 s)`)

  // During the outage: HEAD, POST and PATCH on both instances get 503 + Retry-After within the bound.
  let round = 0
  const slow: string[] = []
  while (Date.now() - stopped < OUTAGE_MS) {
    const server = servers[round++ % 2]!
    const answers = {
      HEAD: await timed(tusRequest(`${server.origin}${url}`, { method: 'HEAD' })),
      POST: await timed(tusRequest(`${server.origin}/files/`, { method: 'POST', headers: { 'Upload-Length': '10' } })),
      PATCH: await timed(tusRequest(`${server.origin}${url}`, { method: 'PATCH', headers: { 'Upload-Offset': String(2 * MiB), ...OCTET }, body: data.subarray(2 * MiB, 2 * MiB + 1000) }))
    }
    for (const [method, answer] of Object.entries(answers)) {
      if (answer.status !== 503 || answer.headers['retry-after'] !== '1' || answer.ms > BOUND) {
        slow.push(`${method} on instance ${round % 2}: ${answer.status} Retry-After ${answer.headers['retry-after'] ?? 'none'} after ${answer.ms} ms`)
      }
    }
    // A finished upload is still sent: its download is sent without the lock when the lock service fails.
    const download = await timed(tusRequest(`${server.origin}${finishedUrl}`))
    if (download.status !== 200 || sha256(download.body) !== sha256(done) || download.ms > BOUND) slow.push(`GET: ${download.status} after ${download.ms} ms`)
  }
  t.same(slow, [], `${round} rounds of HEAD, POST, PATCH, GET during the outage: each 503 + Retry-After: 1 within ${BOUND} ms (GET 200)`)
  await redisUp()

  // Back: the upload resumes where it stood, through both instances, as a client honouring Retry-After does. The
  // server came back empty (a new run_id): the instances take no lock for a ttl (10 s), as the locks held before the
  // outage may still be held, for all they can tell.
  let offset = -1
  for (let attempt = 0; offset < 0 && attempt < 30; attempt++) {
    const head = await tusRequest(`${servers[attempt % 2]!.origin}${url}`, { method: 'HEAD' })
    if (head.status === 200) offset = Number(head.headers['upload-offset'])
    else await new Promise((resolve) => setTimeout(resolve, Number(head.headers['retry-after'] ?? '1') * 1000))
  }
  t.equal(offset, 2 * MiB, `the offset is what was acknowledged before the outage (${offset})`)
  for (let chunk = 0; offset < data.length; chunk++) {
    const end = Math.min(data.length, offset + 2 * MiB)
    const response = await tusRequest(`${servers[chunk % 2]!.origin}${url}`, {
      method: 'PATCH', headers: { 'Upload-Offset': String(offset), ...OCTET }, body: data.subarray(offset, end)
    })
    t.equal(response.status, 204)
    offset = Number(response.headers['upload-offset'])
  }
  for (const server of servers) {
    const download = await tusRequest(`${server.origin}${url}`)
    t.equal(download.status, 200)
    t.equal(sha256(download.body), sha256(data), 'byte-identical')
  }
  const fresh = await tusRequest(`${a!.origin}/files/`, { method: 'POST', headers: { 'Upload-Length': '10' } })
  t.equal(fresh.status, 201, 'uploads are created again')
})
