// Several instances share S3 (Ceph radosgw) for bytes and Redis for locks: an upload's PATCHes land on
// different instances, one instance dies mid-upload, and requests for one upload never interleave.
import t from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DefaultHttpStack, type HttpRequest, type HttpStack } from 'tus-js-client'
import { concurrentPatchRounds, idOf, randomBytesSeeded, sha256, startChild, tusRequest, tusUpload, type ChildServer } from './helpers.js'
import { testBucket, uniqueName } from './services.js'

const MiB = 1024 * 1024

async function instances (t: Parameters<typeof testBucket>[0] & { teardown: (fn: () => unknown) => void }, count: number): Promise<ChildServer[]> {
  const bucket = await testBucket(t)
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-multi-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const env = { TUS_CHILD_BUCKET: bucket, TUS_CHILD_REDIS_PREFIX: `${uniqueName('tus-multi')}:` }
  return await Promise.all(Array.from({ length: count }, async () => await startChild(t, dir, env)))
}

/**
 * Sends each request to the next live instance in turn, whatever host the upload URL names; kills the
 * victim while the second PATCH sent to it is under way.
 */
class RotatingStack implements HttpStack {
  readonly #inner = new DefaultHttpStack({})
  readonly #victim: ChildServer
  readonly live: number[]
  #next = 0
  #patchesToVictim = 0
  used = new Set<number>()

  constructor (ports: number[], victim: ChildServer) {
    this.live = [...ports]
    this.#victim = victim
  }

  createRequest (method: string, url: string): HttpRequest {
    const port = this.live[this.#next++ % this.live.length]!
    this.used.add(port)
    if (port === this.#victim.port && method === 'PATCH' && ++this.#patchesToVictim === 2) {
      // Not a wait for something: the fault is injected while the 8 MiB body is on its way.
      setTimeout(() => {
        this.#victim.child.kill('SIGKILL')
        this.live.splice(this.live.indexOf(port), 1)
      }, 20)
    }
    const target = new URL(url)
    target.port = String(port)
    return this.#inner.createRequest(method, target.href)
  }

  getName (): string {
    return 'RotatingStack'
  }
}

t.test('a 64 MiB upload alternates between three instances, one is killed mid-upload, the others finish it', async (t) => {
  t.setTimeout(300_000)
  const servers = await instances(t, 3)
  const victim = servers[1]!
  const stack = new RotatingStack(servers.map((server) => server.port), victim)
  const data = randomBytesSeeded(64 * MiB, 41)
  const url = await tusUpload(data, {
    endpoint: `http://127.0.0.1:${servers[0]!.port}/files/`,
    chunkSize: 8 * MiB,
    httpStack: stack,
    // The dead instance's lock on the upload expires after RedisLocker's ttlMs (10 s); tus-js-client retries 423.
    retryDelays: [0, 500, 1000, 2000, 4000, 8000],
    metadata: { filename: 'shared.bin' }
  })
  t.equal(victim.child.signalCode, 'SIGKILL', 'the victim was killed during the upload')
  t.equal(stack.used.size, 3, 'requests went to all three instances')
  t.equal(stack.live.length, 2)
  for (const port of stack.live) {
    const download = await tusRequest(`http://127.0.0.1:${port}/files/${idOf(url)}`)
    t.equal(download.status, 200)
    t.equal(sha256(download.body), sha256(data), `byte-identical through instance ${port}`)
  }
})

t.test('concurrent PATCHes for one upload on two instances never interleave', async (t) => {
  t.setTimeout(120_000)
  const [a, b] = await instances(t, 2)
  const size = 12 * MiB
  await concurrentPatchRounds(t, a!.port, b!.port, size)
})
