// S3Store when its endpoint freezes: the real Ceph radosgw (scripts/services/run.sh) behind a proxy that can stop
// forwarding. A frozen process looks like that from the network: connections are accepted, bytes go unanswered.
import t from 'tap'
import { createServer, connect, type Server, type Socket } from 'node:net'
import { once } from 'node:events'
import { get, type IncomingMessage } from 'node:http'
import { AbortMultipartUploadCommand, CreateMultipartUploadCommand, DeleteObjectCommand, PutObjectCommand, type S3ClientConfig } from '@aws-sdk/client-s3'
import { S3Store } from '../lib/store/s3-store.js'
import { contractId } from './store-contract.js'
import { randomBytesSeeded, rawRequest, sha256, startServer, type RawResponse } from './helpers.js'
import { s3ClientConfig, testBucket, testS3Client } from './services.js'

const MiB = 1024 * 1024

/**
 * A bucket of its own, after an object and a multipart upload were made in it without a timeout: a fresh radosgw
 * creates its data pools at its first object and its first multipart upload, which takes seconds, longer than the
 * short timeouts of this file's stores (the mutation baseline, on a radosgw of its own, failed so once).
 */
async function warmBucket (t: Parameters<typeof testBucket>[0]): Promise<string> {
  const bucket = await testBucket(t)
  const client = testS3Client()
  try {
    const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'warm-up' }))
    await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: 'warm-up', UploadId }))
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'warm-up', Body: 'x', ContentLength: 1 }))
    await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: 'warm-up' }))
  } finally {
    client.destroy()
  }
  return bucket
}

/** Forwards TCP to the S3 endpoint; freeze() holds every byte both ways (and new connections) until thaw(). */
class FreezableProxy {
  readonly #server: Server
  readonly #target: URL
  readonly #pairs = new Set<[Socket, Socket]>()
  readonly #held: Socket[] = []
  #frozen = false

  constructor (target: string) {
    this.#target = new URL(target)
    this.#server = createServer((client) => {
      client.on('error', () => undefined)
      if (this.#frozen) {
        client.pause()
        this.#held.push(client)
      } else {
        this.#forward(client)
      }
    })
  }

  async listen (): Promise<string> {
    this.#server.listen(0, '127.0.0.1')
    await once(this.#server, 'listening')
    const address = this.#server.address()
    if (address === null || typeof address === 'string') throw new Error('no port')
    return `http://127.0.0.1:${address.port}`
  }

  freeze (): void {
    this.#frozen = true
    for (const [client, upstream] of this.#pairs) {
      client.unpipe(upstream)
      upstream.unpipe(client)
      client.pause()
      upstream.pause()
    }
  }

  thaw (): void {
    this.#frozen = false
    for (const [client, upstream] of this.#pairs) {
      client.pipe(upstream)
      upstream.pipe(client)
    }
    for (const client of this.#held.splice(0)) this.#forward(client)
  }

  async close (): Promise<void> {
    for (const client of this.#held.splice(0)) client.destroy()
    for (const [client, upstream] of this.#pairs) {
      client.destroy()
      upstream.destroy()
    }
    this.#server.close()
    await once(this.#server, 'close')
  }

  #forward (client: Socket): void {
    if (client.destroyed) return
    const upstream = connect(Number(this.#target.port), this.#target.hostname)
    upstream.on('error', () => undefined)
    const pair: [Socket, Socket] = [client, upstream]
    this.#pairs.add(pair)
    const end = (): void => {
      this.#pairs.delete(pair)
      client.destroy()
      upstream.destroy()
    }
    client.on('close', end)
    upstream.on('close', end)
    client.pipe(upstream)
    upstream.pipe(client)
  }
}

async function frozenEndpoint (t: { teardown: (fn: () => unknown) => void }): Promise<{ proxy: FreezableProxy, s3: S3ClientConfig }> {
  const settings = s3ClientConfig()
  const proxy = new FreezableProxy(String(settings.endpoint))
  const endpoint = await proxy.listen()
  t.teardown(async () => { await proxy.close() })
  return { proxy, s3: { ...settings, endpoint, maxAttempts: 1 } }
}

interface Protocol {
  name: string
  create: (size: number) => Record<string, string>
  append: (offset: number, last: boolean) => Record<string, string>
  head: Record<string, string>
}

const PROTOCOLS: Protocol[] = [
  {
    name: 'tus 1.0.0',
    create: (size: number) => ({ 'Tus-Resumable': '1.0.0', 'Upload-Length': String(size), 'Content-Type': 'application/offset+octet-stream' }),
    append: (offset: number, _last: boolean) => ({ 'Tus-Resumable': '1.0.0', 'Upload-Offset': String(offset), 'Content-Type': 'application/offset+octet-stream' }),
    head: { 'Tus-Resumable': '1.0.0' }
  },
  {
    name: 'draft interop 6',
    create: (size: number) => ({ 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?0', 'Upload-Length': String(size) }),
    append: (offset: number, last: boolean) => ({
      'Upload-Draft-Interop-Version': '6', 'Upload-Offset': String(offset), 'Upload-Complete': last ? '?1' : '?0', 'Content-Type': 'application/partial-upload'
    }),
    head: { 'Upload-Draft-Interop-Version': '6' }
  }
]

for (const protocol of PROTOCOLS) {
  t.test(`${protocol.name}: requests to a frozen S3 endpoint fail after the socket timeout, and the upload resumes intact once it answers again`, async (t) => {
    const bucket = await warmBucket(t)
    const { proxy, s3 } = await frozenEndpoint(t)
    // 5 s: room for a radosgw busy with the test files beside this one, and short for the frozen requests.
    const store = new S3Store({ bucket, s3: { ...s3, requestHandler: { socketTimeout: 5000 } }, partSize: 5 * MiB })
    t.teardown(async () => { await store.close() })
    const server = await startServer(t, { store })
    const data = randomBytesSeeded(6 * MiB + 3, 41)
    const first = MiB

    const created = await rawRequest(server.endpoint, { method: 'POST', headers: protocol.create(data.length), body: data.subarray(0, first) })
    t.equal(created.status, 201)
    const url = new URL(created.headers.location!, server.origin).href

    proxy.freeze()
    // The rest: its first whole part goes to S3 by UploadPart, which S3 never answers.
    const stuck = await rawRequest(url, { method: 'PATCH', headers: protocol.append(first, true), body: data.subarray(first) })
    t.equal(stuck.status, 500, 'the append fails; it does not hang')
    const head = await rawRequest(url, { method: 'HEAD', headers: protocol.head })
    t.equal(head.status, 500, 'a HEAD fails too')

    proxy.thaw()
    const resumed: RawResponse = await rawRequest(url, { method: 'HEAD', headers: protocol.head })
    t.equal(resumed.status, protocol.name === 'tus 1.0.0' ? 200 : 204)
    const offset = Number(resumed.headers['upload-offset'])
    t.equal(offset, first, 'S3 holds the bytes of the request before the freeze, and only them')
    const rest = await rawRequest(url, { method: 'PATCH', headers: protocol.append(offset, true), body: data.subarray(offset) })
    t.equal(rest.status, 204)
    const stored = await rawRequest(url, { headers: protocol.head })
    t.equal(stored.status, 200)
    t.equal(sha256(stored.body), sha256(data), 'every byte, once')
  })
}

t.test('by default an S3 request fails after 30 s without a byte, also when s3.requestHandler sets other timeouts only; its own socketTimeout wins', async (t) => {
  t.setTimeout(60_000)
  const { proxy, s3 } = await frozenEndpoint(t)
  const stores: Array<[S3Store, number]> = [
    [new S3Store({ bucket: 'b', s3 }), 30000],
    [new S3Store({ bucket: 'b', s3: { ...s3, requestHandler: { connectionTimeout: 2000 } } }), 30000],
    [new S3Store({ bucket: 'b', s3: { ...s3, requestHandler: { socketTimeout: 1500 } } }), 1500]
  ]
  t.teardown(async () => { for (const [store] of stores) await store.close() })
  proxy.freeze()
  await Promise.all(stores.map(async ([store, timeout]) => {
    await t.rejects(store.getInfo(contractId()), { code: 'FST_TUS_STORE_FAILED', message: new RegExp(`S3 GetObject: .*timed out after ${timeout} ms of inactivity`) })
  }))
})

t.test('a download whose S3 endpoint freezes half-way is cut, not left hanging; once S3 answers again it is whole', async (t) => {
  const bucket = await warmBucket(t)
  const { proxy, s3 } = await frozenEndpoint(t)
  const store = new S3Store({ bucket, s3: { ...s3, requestHandler: { socketTimeout: 5000 } } })
  t.teardown(async () => { await store.close() })
  const server = await startServer(t, { store })
  const data = randomBytesSeeded(32 * MiB, 43)
  const created = await rawRequest(server.endpoint, { method: 'POST', headers: PROTOCOLS[0]!.create(data.length), body: data })
  t.equal(created.status, 201)
  const url = new URL(created.headers.location!, server.origin).href

  const response = await new Promise<IncomingMessage>((resolve, reject) => {
    get(url, { agent: false }, resolve).on('error', reject)
  })
  t.equal(response.statusCode, 200)
  let received = 0
  response.once('data', () => { proxy.freeze() })
  response.on('data', (chunk: Buffer) => { received += chunk.length })
  // Cut: the response ends with an error (ECONNRESET), which once() would throw.
  response.on('error', () => undefined)
  await new Promise((resolve) => response.once('close', resolve))
  t.ok(response.complete === false && received < data.length, `cut after ${received} bytes`)

  proxy.thaw()
  const whole = await rawRequest(url)
  t.equal(whole.status, 200)
  t.equal(sha256(whole.body), sha256(data))
})
