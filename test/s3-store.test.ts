// S3Store against a real S3-compatible server (Ceph radosgw, started by scripts/services/run.sh).
import t from 'tap'
import {
  AbortMultipartUploadCommand, CreateMultipartUploadCommand, DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command,
  ListPartsCommand, PutObjectCommand, S3Client, UploadPartCommand, type S3ClientConfig
} from '@aws-sdk/client-s3'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { connect } from 'node:net'
import { Readable } from 'node:stream'
import { S3Store } from '../lib/store/s3-store.js'
import { randomBytesSeeded, rawRequest, removeExpired, sha256, startServer, tusRequest, tusUpload, createUpload, idOf } from './helpers.js'
import { s3ClientConfig, testBucket, testS3Client } from './services.js'
import { contractId, storeContract } from './store-contract.js'

const MiB = 1024 * 1024
const client = testS3Client()
t.teardown(() => { client.destroy() })

function newStore (bucket: string, partSize = 5 * MiB, s3: S3ClientConfig = s3ClientConfig()): S3Store {
  const store = new S3Store({ bucket, s3, prefix: 'uploads/', partSize })
  t.teardown(async () => { await store.close() })
  return store
}

async function keys (bucket: string): Promise<string[]> {
  const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket }))
  return (listed.Contents ?? []).map(({ Key }) => Key!).sort()
}

async function multipartUploads (bucket: string): Promise<number> {
  return (await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads?.length ?? 0
}

async function * bytes (data: Buffer): AsyncIterable<Buffer> {
  yield data
}

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }

t.test('the store contract', async (t) => {
  t.setTimeout(300_000)
  storeContract(t, newStore(await testBucket(t)))
})

t.test('a write that ends mid-part keeps its bytes in the incomplete-part object; completion leaves only data + info', async (t) => {
  t.setTimeout(120_000)
  const bucket = await testBucket(t)
  const store = newStore(bucket)
  const data = randomBytesSeeded(5 * MiB + 100, 11)
  const id = contractId()
  await store.create({ id, size: data.length, metadata: {} })
  t.equal(await multipartUploads(bucket), 1, 'one multipart upload per tus upload')
  await t.rejects(store.create({ id, size: 1, metadata: {} }), { code: 'FST_TUS_ID_TAKEN' }, 'a taken id is refused')
  t.equal(await multipartUploads(bucket), 1, 'the multipart upload of the refused create is aborted, the other one stands')
  await store.write(id, 0, bytes(data.subarray(0, 4 * MiB)))
  t.same(await keys(bucket), [`uploads/${id}.info`, `uploads/${id}.part`])
  // Another instance continues: a second store on the same bucket.
  const other = newStore(bucket)
  t.equal((await other.getInfo(id)).offset, 4 * MiB)
  await other.write(id, 4 * MiB, bytes(data.subarray(4 * MiB)))
  t.equal((await store.getInfo(id)).offset, data.length)
  await store.flush(id)
  t.equal(await multipartUploads(bucket), 0, 'completed')
  t.same(await keys(bucket), [`uploads/${id}`, `uploads/${id}.info`])
  const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: `uploads/${id}` }))
  t.equal(head.ContentLength, data.length)
  const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: `uploads/${id}` }))
  t.equal(sha256(Buffer.from(await object.Body!.transformToByteArray())), sha256(data), 'the data object is the upload')
  t.equal((await other.getInfo(id)).offset, data.length, 'offset of a completed upload')
})

t.test('an incomplete part already turned into a part (crash before its removal) is not counted twice', async (t) => {
  t.setTimeout(120_000)
  const bucket = await testBucket(t)
  const store = newStore(bucket)
  const data = randomBytesSeeded(5 * MiB + 10, 12)
  const id = contractId()
  await store.create({ id, size: data.length, metadata: {} })
  await store.write(id, 0, bytes(data.subarray(0, 1000)))
  const stale = await client.send(new GetObjectCommand({ Bucket: bucket, Key: `uploads/${id}.part` }))
  const staleBytes = Buffer.from(await stale.Body!.transformToByteArray())
  await store.write(id, 1000, bytes(data.subarray(1000, 5 * MiB)))
  t.same(await keys(bucket), [`uploads/${id}.info`], 'part 1 is full, the incomplete part is gone')
  // Put the old incomplete part back, as a crash between UploadPart and DeleteObject leaves it.
  await client.send(new PutObjectCommand({
    Bucket: bucket, Key: `uploads/${id}.part`, Body: staleBytes, ContentLength: staleBytes.length, Metadata: { 'tus-part-number': '1' }
  }))
  t.equal((await store.getInfo(id)).offset, 5 * MiB)
  await store.write(id, 5 * MiB, bytes(data.subarray(5 * MiB)))
  await store.flush(id)
  const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: `uploads/${id}` }))
  t.equal(sha256(Buffer.from(await object.Body!.transformToByteArray())), sha256(data))
})

t.test('termination aborts the multipart upload and deletes every object', async (t) => {
  const bucket = await testBucket(t)
  const store = newStore(bucket)
  const id = contractId()
  await store.create({ id, size: 10 * MiB, metadata: {} })
  await store.write(id, 0, bytes(randomBytesSeeded(5 * MiB + 1, 13)))
  t.same(await keys(bucket), [`uploads/${id}.info`, `uploads/${id}.part`])
  await store.terminate(id)
  t.same(await keys(bucket), [])
  t.equal(await multipartUploads(bucket), 0)
})

t.test('DELETE of an unfinished upload aborts every multipart upload of its key, one a crashed create left too', async (t) => {
  t.setTimeout(120_000)
  const bucket = await testBucket(t)
  const server = await startServer(t, { store: newStore(bucket) })
  const data = randomBytesSeeded(5 * MiB + 3, 31)
  const url = await createUpload(server, { 'Upload-Length': String(2 * data.length) })
  const id = idOf(url)
  // A second multipart upload of the same key, as an instance that crashed between CreateMultipartUpload and its
  // info object leaves (or a part that landed while an abort ran).
  await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: `uploads/${id}` }))
  const patched = await tusRequest(url, { method: 'PATCH', headers: { ...OCTET, 'Upload-Offset': '0' }, body: data })
  t.equal(patched.status, 204)
  t.equal(patched.headers['upload-offset'], String(data.length))
  t.equal(await multipartUploads(bucket), 2)
  const removed = await tusRequest(url, { method: 'DELETE' })
  t.equal(removed.status, 204)
  t.equal((await tusRequest(url, { method: 'HEAD' })).status, 404)
  t.equal(await multipartUploads(bucket), 0, 'ListMultipartUploads is empty')
  t.same(await keys(bucket), [])
})

t.test('removeExpired() aborts the expired upload\'s multipart upload and those no upload refers to', async (t) => {
  t.setTimeout(120_000)
  const bucket = await testBucket(t)
  const store = newStore(bucket)
  const id = contractId()
  await store.create({ id, size: 10 * MiB, metadata: {} })
  await store.write(id, 0, bytes(randomBytesSeeded(5 * MiB + 1, 32)))
  // No info object refers to these: a create that crashed before writing it, in the root and in a sub-directory.
  await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: `uploads/${contractId()}` }))
  await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: `uploads/team-a/${contractId()}` }))
  t.equal(await multipartUploads(bucket), 3)
  const keeping = await startServer(t, { store: newStore(bucket) })
  t.equal(await keeping.app.tus.removeExpired(), 0, 'nothing expired with the default 5 days')
  t.equal(await multipartUploads(bucket), 3, 'recent abandoned multipart uploads are kept (a create may be running)')
  const expiring = await startServer(t, { store: newStore(bucket), daysToKeep: 1e-8 })
  const expired = await removeExpired(expiring.app)
  t.same(expired.map((upload) => upload.id), [id])
  t.equal(await multipartUploads(bucket), 0, 'ListMultipartUploads is empty')
  t.same(await keys(bucket), [])
})

/** What the SDK hands its HTTP handler, as far as these tests look at it. */
interface SentRequest { method: string, query?: Record<string, string | string[] | null> }
type Handle = (request: SentRequest, options?: unknown) => Promise<unknown>

/** S3 client settings whose HTTP handler runs `around` for every UploadPart (PUT with a partNumber), no retries. */
function gatedConfig (around: (partNumber: number, send: () => Promise<unknown>) => Promise<unknown>): S3ClientConfig {
  const plain = new S3Client(s3ClientConfig())
  t.teardown(() => { plain.destroy() })
  const inner = plain.config.requestHandler as unknown as { handle: Handle }
  const handle: Handle = async (request, options) => {
    const partNumber = request.query?.partNumber
    const send = async (): Promise<unknown> => await inner.handle(request, options)
    return request.method === 'PUT' && typeof partNumber === 'string' ? await around(Number(partNumber), send) : await send()
  }
  return { ...s3ClientConfig(), maxAttempts: 1, requestHandler: { handle } as unknown as S3ClientConfig['requestHandler'] }
}

async function * chunked (data: Buffer, size = 64 * 1024): AsyncIterable<Buffer> {
  for (let start = 0; start < data.length; start += size) yield data.subarray(start, start + size)
}

t.test('parts upload concurrently, up to partsInFlight, numbered in order', async (t) => {
  t.setTimeout(120_000)
  const bucket = await testBucket(t)
  let running = 0
  let most = 0
  // Every UploadPart waits until four are on their way at once: a store sending one part at a time never gets there.
  let opened!: () => void
  const barrier = new Promise<void>((resolve) => { opened = resolve })
  const store = new S3Store({
    bucket,
    prefix: 'uploads/',
    partSize: 5 * MiB,
    partsInFlight: 4,
    s3: gatedConfig(async (_partNumber, send) => {
      running++
      most = Math.max(most, running)
      if (running === 4) opened()
      await barrier
      try {
        return await send()
      } finally {
        running--
      }
    })
  })
  t.teardown(async () => { await store.close() })
  t.equal(store.partsInFlight, 4)
  t.equal(newStore(bucket).partsInFlight, 4, 'the default')
  const data = randomBytesSeeded(6 * 5 * MiB + 100, 41)
  const id = contractId()
  await store.create({ id, size: data.length, metadata: {} })
  t.equal(await store.write(id, 0, chunked(data)), data.length)
  t.equal(most, 4, 'four parts at once, never more')
  const listed = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))
  const parts = await client.send(new ListPartsCommand({ Bucket: bucket, Key: `uploads/${id}`, UploadId: listed.Uploads![0]!.UploadId }))
  // The write ends the upload: its last 100 bytes go straight into the last part, not the incomplete-part object.
  t.same(parts.Parts!.map(({ PartNumber, Size }) => [PartNumber, Size]), [...[1, 2, 3, 4, 5, 6].map((n) => [n, 5 * MiB]), [7, 100]])
  t.same(await keys(bucket), [`uploads/${id}.info`], 'no incomplete-part object')
  t.equal((await store.getInfo(id)).offset, data.length)
  await store.flush(id)
  const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: `uploads/${id}` }))
  t.equal(sha256(Buffer.from(await object.Body!.transformToByteArray())), sha256(data), 'the parts are in order')
})

t.test('an UploadPart issued before the lock was lost, still waiting to be sent, is aborted with it: nothing lands', async (t) => {
  t.setTimeout(120_000)
  const bucket = await testBucket(t)
  // The SDK has the part (send() was called) but the request waits, as for a free socket, until the lock is lost.
  let issued!: () => void
  const waiting = new Promise<void>((resolve) => { issued = resolve })
  let proceed!: () => void
  const lockLost = new Promise<void>((resolve) => { proceed = resolve })
  const store = new S3Store({
    bucket,
    prefix: 'uploads/',
    partSize: 5 * MiB,
    s3: gatedConfig(async (_partNumber, send) => {
      issued()
      await lockLost
      return await send()
    })
  })
  t.teardown(async () => { await store.close() })
  const id = contractId()
  await store.create({ id, size: 6 * MiB, metadata: {} })
  const lock = new AbortController()
  const data = randomBytesSeeded(5 * MiB, 43)
  const write = store.write(id, 0, chunked(data), { signal: lock.signal, hold: {} })
  await waiting
  lock.abort(new Error('the lock was lost'))
  proceed()
  await t.rejects(write, { message: 'the lock was lost' })
  const listed = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))
  const parts = await client.send(new ListPartsCommand({ Bucket: bucket, Key: `uploads/${id}`, UploadId: listed.Uploads![0]!.UploadId }))
  t.same(parts.Parts ?? [], [], 'the part never reached S3')
  t.equal((await store.getInfo(id)).offset, 0)
})

t.test('a part that fails while later ones land: the upload resumes after the last part before it', async (t) => {
  t.setTimeout(180_000)
  const bucket = await testBucket(t)
  // Part 2 fails, but only once parts 3 and 4 are stored: a gap, with parts after it.
  const stored = new Map<number, () => void>()
  const landed = (n: number): Promise<void> => new Promise((resolve) => { stored.set(n, resolve) })
  const later = Promise.all([landed(3), landed(4)])
  const failing = new S3Store({
    bucket,
    prefix: 'uploads/',
    partSize: 5 * MiB,
    partsInFlight: 4,
    s3: gatedConfig(async (partNumber, send) => {
      if (partNumber === 2) {
        await later
        throw new Error('injected: part 2 failed')
      }
      const result = await send()
      stored.get(partNumber)?.()
      return result
    })
  })
  t.teardown(async () => { await failing.close() })
  const data = randomBytesSeeded(4 * 5 * MiB + 2 * MiB + 10, 42)
  const id = contractId()
  await failing.create({ id, size: data.length, metadata: {} })
  // Short of the end by 10 bytes, so that the bytes after part 4 would go to the incomplete-part object.
  await t.rejects(failing.write(id, 0, chunked(data.subarray(0, data.length - 10))), { code: 'FST_TUS_STORE_FAILED', message: /injected: part 2 failed/ })
  const listed = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))
  const parts = await client.send(new ListPartsCommand({ Bucket: bucket, Key: `uploads/${id}`, UploadId: listed.Uploads![0]!.UploadId }))
  t.same(parts.Parts!.map(({ PartNumber }) => PartNumber), [1, 3, 4], 'parts 3 and 4 landed after the gap')
  t.same(await keys(bucket), [`uploads/${id}.info`], 'the bytes after the failure were not kept')

  // Another instance: HEAD says the last durable offset; the client resumes there, in two PATCHes.
  const server = await startServer(t, { store: newStore(bucket) })
  const url = `${server.endpoint}${id}`
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(head.headers['upload-offset'], String(5 * MiB))
  const middle = 2 * 5 * MiB + 100
  const first = await tusRequest(url, { method: 'PATCH', headers: { ...OCTET, 'Upload-Offset': String(5 * MiB) }, body: data.subarray(5 * MiB, middle) })
  t.equal(first.status, 204)
  t.equal(first.headers['upload-offset'], String(middle))
  // The stale part 3 (beyond the old gap) is not counted: the offset is what this PATCH left.
  t.equal((await tusRequest(url, { method: 'HEAD' })).headers['upload-offset'], String(middle))
  const rest = await tusRequest(url, { method: 'PATCH', headers: { ...OCTET, 'Upload-Offset': String(middle) }, body: data.subarray(middle) })
  t.equal(rest.status, 204)
  t.equal(rest.headers['upload-offset'], String(data.length))
  const download = await tusRequest(url)
  t.equal(download.status, 200)
  t.equal(download.headers['content-length'], String(data.length))
  t.equal(sha256(download.body), sha256(data), 'byte-identical')
  t.equal(await multipartUploads(bucket), 0)
})

t.test('onStored: only bytes S3 holds, as the run of completed parts grows (parts land out of order), then the incomplete part', async (t) => {
  t.setTimeout(180_000)
  const bucket = await testBucket(t)
  // Part 1 lands only after parts 2 and 3: until then S3 holds nothing this write can count.
  const landed = new Map<number, () => void>()
  const after = (n: number): Promise<void> => new Promise((resolve) => { landed.set(n, resolve) })
  const later = Promise.all([after(2), after(3)])
  const gated = new S3Store({
    bucket,
    prefix: 'uploads/',
    partSize: 5 * MiB,
    partsInFlight: 4,
    s3: gatedConfig(async (partNumber, send) => {
      if (partNumber === 1) await later
      const result = await send()
      landed.get(partNumber)?.()
      return result
    })
  })
  t.teardown(async () => { await gated.close() })
  const other = newStore(bucket)
  const data = randomBytesSeeded(3 * 5 * MiB + MiB, 43)
  const id = contractId()
  await gated.create({ id, size: data.length + 100, metadata: {} })
  const acknowledged: number[] = []
  const seen: Array<Promise<number>> = []
  const written = await gated.write(id, 0, chunked(data), {
    onStored: (offset) => {
      acknowledged.push(offset)
      seen.push(other.getInfo(id).then((upload) => upload.offset))
    }
  })
  t.equal(written, data.length)
  t.same(acknowledged, [3 * 5 * MiB, data.length], 'the three parts once part 1 closed the run, then the incomplete part')
  const offsets = await Promise.all(seen)
  t.ok(offsets.every((offset, i) => offset >= acknowledged[i]!), `another instance saw at least each acknowledged offset (${offsets.join(', ')})`)
  t.equal((await other.getInfo(id)).offset, data.length)
})

/** S3 client settings that log every request the SDK sends as `METHOD key` (a path's last segment, `?` and the query's names). */
function countingConfig (log: string[]): S3ClientConfig {
  const plain = new S3Client(s3ClientConfig())
  t.teardown(() => { plain.destroy() })
  const inner = plain.config.requestHandler as unknown as { handle: Handle }
  const handle: Handle = async (request, options) => {
    const { path } = request as SentRequest & { path: string }
    const name = path.slice(path.lastIndexOf('/') + 1)
    const query = Object.keys(request.query ?? {}).filter((key) => key !== 'x-id').sort().join('&')
    log.push(`${request.method} ${name.endsWith('.info') ? 'info' : name.endsWith('.part') ? 'part' : 'data'}${query === '' ? '' : `?${query}`}`)
    return await inner.handle(request, options)
  }
  return { ...s3ClientConfig(), requestHandler: { handle } as unknown as S3ClientConfig['requestHandler'] }
}

t.test('HEAD of an unfinished upload: 2 S3 requests once its info is cached, and right across instances', async (t) => {
  t.setTimeout(120_000)
  const bucket = await testBucket(t)
  const log: string[] = []
  const counted = newStore(bucket, 5 * MiB, countingConfig(log))
  const a = await startServer(t, { store: counted })
  const b = await startServer(t, { store: newStore(bucket) })
  const data = randomBytesSeeded(5 * MiB + 20, 61)
  const url = await createUpload(b, { 'Upload-Length': String(data.length) })
  const id = idOf(url)
  const onA = `${a.endpoint}${id}`
  async function headOnA (): Promise<{ status: number, offset: string | undefined, requests: string[] }> {
    log.length = 0
    const head = await tusRequest(onA, { method: 'HEAD' })
    return { status: head.status, offset: head.headers['upload-offset'] as string | undefined, requests: [...log] }
  }
  const cold = await headOnA()
  t.same(cold, { status: 200, offset: '0', requests: ['GET info', 'GET data?uploadId', 'HEAD part'] }, 'first HEAD: info, ListParts, the incomplete part')
  const warm = await headOnA()
  t.same(warm, { status: 200, offset: '0', requests: ['GET data?uploadId', 'HEAD part'] }, 'then the info object is not read again')

  // Bytes stored by another instance: counted at once (the parts and the incomplete part are always read).
  const patched = await tusRequest(url, { method: 'PATCH', headers: { ...OCTET, 'Upload-Offset': '0' }, body: data.subarray(0, 5 * MiB + 10) })
  t.equal(patched.status, 204)
  t.same(await headOnA(), { status: 200, offset: String(5 * MiB + 10), requests: ['GET data?uploadId', 'HEAD part'] })
  // Completed by another instance: the multipart upload is gone, so the info object is read again.
  const last = await tusRequest(url, { method: 'PATCH', headers: { ...OCTET, 'Upload-Offset': String(5 * MiB + 10) }, body: data.subarray(5 * MiB + 10) })
  t.equal(last.status, 204)
  const completed = await headOnA()
  t.equal(completed.status, 200)
  t.equal(completed.offset, String(data.length), 'complete')
  t.same(completed.requests.slice(0, 2), ['GET data?uploadId', 'GET info'], 'the stale entry was noticed and dropped')
  const download = await tusRequest(onA)
  t.equal(download.status, 200)
  t.equal(sha256(download.body), sha256(data))
  // Terminated by another instance: 404 on A at once.
  const other = await createUpload(b, { 'Upload-Length': '100' })
  t.equal((await tusRequest(`${a.endpoint}${idOf(other)}`, { method: 'HEAD' })).status, 200)
  t.equal((await tusRequest(other, { method: 'DELETE' })).status, 204)
  t.equal((await tusRequest(`${a.endpoint}${idOf(other)}`, { method: 'HEAD' })).status, 404)
  // A deferred length declared by another instance: seen by A (such uploads are not cached).
  const deferred = await createUpload(b, { 'Upload-Defer-Length': '1' })
  t.equal((await tusRequest(`${a.endpoint}${idOf(deferred)}`, { method: 'HEAD' })).headers['upload-defer-length'], '1')
  const declared = await tusRequest(deferred, { method: 'PATCH', headers: { ...OCTET, 'Upload-Offset': '0', 'Upload-Length': '10' }, body: 'abc' })
  t.equal(declared.status, 204)
  const seen = await tusRequest(`${a.endpoint}${idOf(deferred)}`, { method: 'HEAD' })
  t.equal(seen.headers['upload-length'], '10')
  t.equal(seen.headers['upload-offset'], '3')
})

t.test('a PATCH that completes an upload reads its state from S3 once, under the lock; write and flush reuse it', async (t) => {
  t.setTimeout(120_000)
  const bucket = await testBucket(t)
  const log: string[] = []
  const counted = newStore(bucket, 5 * MiB, countingConfig(log))
  const a = await startServer(t, { store: counted })
  const data = randomBytesSeeded(10 * MiB + 20, 62)
  log.length = 0
  const url = await createUpload(a, { 'Upload-Length': String(data.length) })
  t.same(log, ['POST data?uploads', 'PUT info'], 'creation: the multipart upload, the info object (written only if the id is free)')
  log.length = 0
  const patched = await tusRequest(url, { method: 'PATCH', headers: { ...OCTET, 'Upload-Offset': '0' }, body: data })
  t.equal(patched.status, 204)
  t.equal(patched.headers['upload-offset'], String(data.length))
  t.same(log.slice(0, 2), ['GET data?uploadId', 'HEAD part'], 'the state, read once the lock is taken (the info object is cached)')
  t.same(log.slice(2, 5).sort(), ['PUT data?partNumber&uploadId', 'PUT data?partNumber&uploadId', 'PUT data?partNumber&uploadId'], 'three parts, no listing before or after them')
  t.same(log.slice(5), ['POST data?uploadId', 'PUT info'], 'completion: CompleteMultipartUpload, the info object; no look for waiting finals')
  const download = await tusRequest(url)
  t.equal(download.status, 200)
  t.equal(sha256(download.body), sha256(data))
})

t.test('what one lock hold kept is never used by another: bytes another instance stored in between count', async (t) => {
  t.setTimeout(120_000)
  const bucket = await testBucket(t)
  const store = newStore(bucket)
  const other = newStore(bucket)
  const data = randomBytesSeeded(16 * MiB, 63)
  const id = contractId()
  const first = { hold: {} }
  await store.create({ id, size: data.length, metadata: {} }, first)
  t.equal(await store.write(id, 0, bytes(data.subarray(0, 5 * MiB + 10)), first), 5 * MiB + 10)
  // The hold ends here; another instance appends a part and a half under its own.
  t.equal(await other.write(id, 5 * MiB + 10, bytes(data.subarray(5 * MiB + 10, 11 * MiB)), { hold: {} }), 11 * MiB)
  // The next hold here writes and completes without a getInfo first: it must start from what S3 holds.
  const second = { hold: {} }
  t.equal(await store.write(id, 11 * MiB, bytes(data.subarray(11 * MiB)), second), data.length)
  await store.flush(id, second)
  t.equal(await multipartUploads(bucket), 0, 'completed')
  const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: `uploads/${id}` }))
  t.equal(sha256(Buffer.from(await object.Body!.transformToByteArray())), sha256(data), 'every part, in order')

  // A hold whose lock was lost keeps nothing either: the state is read again (and the write is refused).
  const lost = new AbortController()
  const third = { hold: {}, signal: lost.signal }
  const next = contractId()
  await store.create({ id: next, size: 6 * MiB, metadata: {} }, third)
  await other.write(next, 0, bytes(data.subarray(0, MiB)), { hold: {} })
  lost.abort(new Error('lock lost'))
  await t.rejects(store.write(next, 0, bytes(data.subarray(0, MiB)), third), { message: 'lock lost' })
  t.equal((await store.getInfo(next)).offset, MiB, 'the other instance\'s bytes stand')
})

t.test('a multipart upload aborted behind the store\'s back: the upload is gone (404), not broken', async (t) => {
  const bucket = await testBucket(t)
  const store = newStore(bucket)
  const id = contractId()
  await store.create({ id, size: 10, metadata: {} })
  const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))
  await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: uploads.Uploads![0]!.Key, UploadId: uploads.Uploads![0]!.UploadId }))
  await t.rejects(store.getInfo(id), { code: 'FST_TUS_NOT_FOUND' })
})

/** An S3Store whose upload a termination is removing (data object first, info object last) when a download reads it. */
class RemovedUnderReadStore extends S3Store {
  override async read (id: string, range?: { start: number, end: number }): ReturnType<S3Store['read']> {
    await client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: `${this.prefix}${id}` }))
    return await super.read(id, range)
  }
}

t.test('a download whose upload a DELETE is removing once it was read answers 404 without the file\'s headers, not 500 (tus, drafts)', async (t) => {
  const bucket = await testBucket(t)
  const store = new RemovedUnderReadStore({ bucket, s3: s3ClientConfig(), prefix: 'uploads/' })
  t.teardown(async () => { await store.close() })
  const server = await startServer(t, { store })
  const data = randomBytesSeeded(1000, 31)
  for (const [name, headers] of [['tus', { 'Tus-Resumable': '1.0.0' }], ['draft 6', { 'Upload-Draft-Interop-Version': '6' }], ['draft 9', { 'Upload-Draft-Interop-Version': '9' }]] as const) {
    const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': String(data.length), 'Upload-Metadata': 'filename YS5iaW4=', ...OCTET }, body: data })
    t.equal(created.status, 201)
    const response = await rawRequest(created.headers.location!, { headers })
    t.equal(response.status, 404, `${name}: the upload is gone`)
    t.equal(response.headers['content-disposition'], undefined, `${name}: no download header`)
  }
})

t.test('S3 unreachable or a missing bucket: FST_TUS_STORE_FAILED naming the S3 operation', async (t) => {
  const missing = newStore('no-such-bucket-fastify-tus')
  // What S3 said, by name and HTTP status, for the log (the SDK's message for an S3-compatible store may say nothing).
  await t.rejects(missing.create({ id: contractId(), size: 1, metadata: {} }), { code: 'FST_TUS_STORE_FAILED', message: /^Storage error: S3 CreateMultipartUpload: .*\(NoSuchBucket, HTTP 404\)$/ })
  const closed = new S3Store({
    bucket: 'b', s3: { ...s3ClientConfig(), endpoint: 'http://127.0.0.1:1', maxAttempts: 1 }
  })
  t.teardown(async () => { await closed.close() })
  await t.rejects(closed.getInfo(contractId()), { code: 'FST_TUS_STORE_FAILED', message: /S3 GetObject/ })
})

t.test('invalid options are refused at construction', async (t) => {
  // Up to 4 GiB, not S3's 5: a part is buffered whole, and Node 20's largest Buffer is 4 GiB.
  for (const partSize of [5 * MiB - 1, 4 * 1024 * MiB + 1, 5 * 1024 * MiB, 5 * MiB + 0.5]) {
    t.throws(() => new S3Store({ bucket: 'b', s3: s3ClientConfig(), partSize }), { code: 'FST_TUS_INVALID_OPTION' }, String(partSize))
  }
  for (const partsInFlight of [0, 65, 1.5]) {
    t.throws(() => new S3Store({ bucket: 'b', s3: s3ClientConfig(), partsInFlight }), { code: 'FST_TUS_INVALID_OPTION', message: /partsInFlight/ }, String(partsInFlight))
  }
  t.throws(() => new S3Store({ bucket: '', s3: s3ClientConfig() }), { code: 'FST_TUS_INVALID_OPTION' })
})

t.test('through the plugin: tus-js-client upload, HEAD, GET whole and ranged, DELETE, expiry', async (t) => {
  t.setTimeout(180_000)
  const bucket = await testBucket(t)
  const store = newStore(bucket)
  const server = await startServer(t, { store })
  const data = randomBytesSeeded(12 * MiB + 7, 21)
  const url = await tusUpload(data, { endpoint: server.endpoint, chunkSize: 3 * MiB, metadata: { filename: 'big.bin' } })
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], String(data.length))
  const whole = await tusRequest(url)
  t.equal(whole.status, 200)
  t.equal(whole.headers['content-length'], String(data.length))
  t.equal(sha256(whole.body), sha256(data))
  const ranged = await tusRequest(url, { headers: { Range: `bytes=${5 * MiB - 5}-${5 * MiB + 4}` } })
  t.equal(ranged.status, 206)
  t.equal(ranged.headers['content-range'], `bytes ${5 * MiB - 5}-${5 * MiB + 4}/${data.length}`)
  t.same(ranged.body, data.subarray(5 * MiB - 5, 5 * MiB + 5))

  // A PATCH that ends mid-part, then HEAD on a fresh server (another instance) sees the same offset.
  const partial = await createUpload(server, { 'Upload-Length': '20' })
  const patched = await tusRequest(partial, { method: 'PATCH', headers: { ...OCTET, 'Upload-Offset': '0' }, body: 'hello' })
  t.equal(patched.status, 204)
  const second = await startServer(t, { store: newStore(bucket) })
  const elsewhere = await tusRequest(`${second.endpoint}${idOf(partial)}`, { method: 'HEAD' })
  t.equal(elsewhere.headers['upload-offset'], '5')
  const incomplete = await tusRequest(partial)
  t.equal(incomplete.status, 409, 'GET of an unfinished upload')

  const removed = await tusRequest(url, { method: 'DELETE' })
  t.equal(removed.status, 204)
  t.equal((await tusRequest(url, { method: 'HEAD' })).status, 404)
  t.notOk((await keys(bucket)).some((key) => key.includes(idOf(url))), 'no object of the deleted upload is left')

  // Expiry: with a retention of ~1 ms every upload is stale; its multipart upload goes too.
  const expiring = await startServer(t, { store: newStore(bucket), daysToKeep: 1e-8 })
  const expired = await removeExpired(expiring.app)
  t.same(expired.map(({ id }) => id), [idOf(partial)])
  t.equal(await multipartUploads(bucket), 0)
  t.same(await keys(bucket), [])
})

t.test('a draft append that completes an upload of unknown length, streamed, with its Upload-Length: recorded once its body stands, then completed once', async (t) => {
  const bucket = await testBucket(t)
  const completed: string[] = []
  const server = await startServer(t, { store: newStore(bucket), onUploadComplete: (upload) => { completed.push(upload.id) } })
  const draft = { 'Upload-Draft-Interop-Version': '8', 'Content-Type': 'application/partial-upload' }
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Draft-Interop-Version': '8', 'Upload-Complete': '?0' }, body: 'hello' })
  const url = new URL(created.headers.location!, server.origin).href
  // Refused: the streamed body ends at 7, not at the 10 it declares. The length stays unknown.
  const short = await tusRequest(url, {
    method: 'PATCH', headers: { ...draft, 'Upload-Offset': '5', 'Upload-Complete': '?1', 'Upload-Length': '10' }, body: Readable.from([Buffer.from('!!')])
  })
  t.equal(short.status, 400)
  const head = await tusRequest(url, { method: 'HEAD', headers: { 'Upload-Draft-Interop-Version': '8' } })
  t.equal(head.headers['upload-length'], undefined)
  t.equal(head.headers['upload-offset'], '5')
  const last = await tusRequest(url, {
    method: 'PATCH', headers: { ...draft, 'Upload-Offset': '5', 'Upload-Complete': '?1', 'Upload-Length': '11' }, body: Readable.from([Buffer.from(' world')])
  })
  t.equal(last.status, 204)
  t.equal(last.headers['upload-complete'], '?1')
  t.equal(await multipartUploads(bucket), 0, 'the multipart upload completed')
  t.equal((await tusRequest(url)).text, 'hello world')
  t.same(completed, [idOf(url)], 'onUploadComplete once')
  t.equal((await tusRequest(url, { method: 'HEAD', headers: { 'Upload-Draft-Interop-Version': '8' } })).headers['upload-complete'], '?1')
  t.same(completed, [idOf(url)], 'and not again when read')
})

t.test('concatenation: S3 copies complete partials itself (UploadPartCopy), or the plugin streams them when it cannot', async (t) => {
  t.setTimeout(180_000)
  const bucket = await testBucket(t)
  const store = newStore(bucket, 8 * MiB)
  const first = randomBytesSeeded(6 * MiB, 51)
  const second = randomBytesSeeded(6 * MiB + 11, 52)
  const last = randomBytesSeeded(MiB, 53)
  async function partial (id: string, data: Buffer): Promise<void> {
    await store.create({ id, size: data.length, metadata: {}, concat: { type: 'partial' } })
    await store.write(id, 0, bytes(data))
    await store.flush(id)
  }
  await partial('p1', first)
  await partial('p2', second)
  await partial('p3', last)
  const whole = Buffer.concat([first, second, last])
  await store.create({ id: 'final', size: whole.length, metadata: {}, concat: { type: 'final', parts: ['p1', 'p2', 'p3'], header: 'final;p1 p2 p3' } })
  t.equal(await store.concatenate('final', ['p1', 'p2', 'p3']), true, 'copied inside S3')
  t.equal((await store.getInfo('final')).offset, whole.length)
  await store.flush('final')
  const chunks: Buffer[] = []
  for await (const chunk of await store.read('final')) chunks.push(chunk as Buffer)
  t.equal(sha256(Buffer.concat(chunks)), sha256(whole))

  // A small partial before the last cannot be a part of its own: the store declines.
  await store.create({ id: 'final2', size: last.length + first.length, metadata: {}, concat: { type: 'final', parts: ['p3', 'p1'], header: 'final;p3 p1' } })
  t.equal(await store.concatenate('final2', ['p3', 'p1']), false)
  t.equal((await store.getInfo('final2')).offset, 0, 'nothing copied')

  // Through the plugin both ways end byte-identical.
  const server = await startServer(t, { store })
  for (const order of [['p1', 'p2', 'p3'], ['p3', 'p1']]) {
    const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Concat': `final;${order.join(' ')}` } })
    t.equal(created.status, 201, created.text)
    const download = await tusRequest(new URL(created.headers.location!, server.origin).href)
    const expected = Buffer.concat(order.map((id) => ({ p1: first, p2: second, p3: last })[id as 'p1']))
    t.equal(sha256(download.body), sha256(expected), order.join(' '))
  }
})

t.test('the finals waiting for a partial are objects every instance lists; terminating the partial removes them', async (t) => {
  t.setTimeout(120_000)
  const bucket = await testBucket(t)
  const store = newStore(bucket)
  const other = newStore(bucket)
  const [partial, final1, final2] = [contractId(), contractId(), contractId()]
  await store.create({ id: partial, size: 10, metadata: {}, concat: { type: 'partial' } })
  t.same(await other.listPendingFinals(partial), [], 'none at first')
  await store.addPendingFinal(final1, [partial, partial])
  await store.addPendingFinal(final2, [partial])
  t.same((await other.listPendingFinals(partial)).sort(), [final1, final2].sort(), 'seen by another instance')
  const ids: string[] = []
  for await (const id of other.list()) ids.push(id)
  t.same(ids, [partial], 'the records are not uploads')
  await other.removePendingFinal(final1, [partial])
  t.same(await store.listPendingFinals(partial), [final2])
  await store.removePendingFinal(final1, [partial])
  t.pass('removing what is gone is harmless')
  await store.terminate(partial)
  t.same(await keys(bucket), [], 'termination removed the records with the partial')
})

t.test('completed objects carry Content-Type and Content-Disposition from the metadata, as GET sends them', async (t) => {
  t.setTimeout(120_000)
  const bucket = await testBucket(t)
  const store = newStore(bucket)
  const cases: Array<{ metadata: Record<string, string>, size: number, type: string, disposition: string }> = [
    {
      metadata: { filename: 'résumé "1"/x.pdf', filetype: 'application/pdf' },
      size: 5 * MiB + 10,
      type: 'application/pdf',
      disposition: 'attachment; filename="r_sum_ _1__x.pdf"; filename*=UTF-8\'\'r%C3%A9sum%C3%A9%20%221%22_x.pdf'
    },
    { metadata: { filename: 'a.txt', filetype: 'text/plain\r\nX-Evil: 1' }, size: 100, type: 'application/octet-stream', disposition: 'attachment; filename="a.txt"; filename*=UTF-8\'\'a.txt' },
    // A line break before a parameter, and half an emoji (a name cut short): the object is made all the same.
    { metadata: { filename: 'b.txt', filetype: 'text/plain\r\n;a=b' }, size: 100, type: 'application/octet-stream', disposition: 'attachment; filename="b.txt"; filename*=UTF-8\'\'b.txt' },
    { metadata: { filename: 'c\ud83d.txt', filetype: 'text/plain; charset=utf-8' }, size: 100, type: 'text/plain; charset=utf-8', disposition: 'attachment; filename="c_.txt"; filename*=UTF-8\'\'c%EF%BF%BD.txt' },
    { metadata: { filetype: 'image/png' }, size: 0, type: 'image/png', disposition: '' }
  ]
  for (const { metadata, size, type, disposition } of cases) {
    const id = contractId()
    await store.create({ id, size, metadata })
    if (size > 0) await store.write(id, 0, bytes(randomBytesSeeded(size, 14)))
    await store.flush(id)
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: `uploads/${id}` }))
    t.equal(head.ContentType, type, `Content-Type of ${JSON.stringify(metadata)}`)
    t.equal(head.ContentDisposition, disposition === '' ? `attachment; filename="${id}"; filename*=UTF-8''${id}` : disposition, 'Content-Disposition')
    t.equal(head.ContentLength, size)
  }
})

t.test('a final concatenated by S3 or streamed carries its own metadata\'s headers', async (t) => {
  t.setTimeout(120_000)
  const bucket = await testBucket(t)
  const server = await startServer(t, {}, async (app, dir) => {
    const { default: tus } = await import('../lib/index.js')
    await app.register(tus, { dir, store: newStore(bucket) })
  })
  for (const sizes of [[5 * MiB, 10], [10, 20]]) {
    const parts: string[] = []
    for (const [index, size] of sizes.entries()) {
      const created = await tusRequest(server.endpoint, {
        method: 'POST', headers: { 'Upload-Length': String(size), 'Upload-Concat': 'partial', ...OCTET }, body: randomBytesSeeded(size, 20 + index)
      })
      t.equal(created.status, 201)
      parts.push(new URL(created.headers.location!).pathname)
    }
    const final = await tusRequest(server.endpoint, {
      method: 'POST', headers: { 'Upload-Concat': `final;${parts.join(' ')}`, 'Upload-Metadata': `filename ${Buffer.from('all.csv').toString('base64')},filetype ${Buffer.from('text/csv').toString('base64')}` }
    })
    t.equal(final.status, 201)
    const id = idOf(final.headers.location!)
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: `uploads/${id}` }))
    t.equal(head.ContentType, 'text/csv')
    t.equal(head.ContentDisposition, 'attachment; filename="all.csv"; filename*=UTF-8\'\'all.csv')
  }
})

/** A real S3Store whose first completions fail, as S3 answering 503 to CompleteMultipartUpload does. */
class FailingCompletionStore extends S3Store {
  failures = 1
  override async flush (id: string, options?: Parameters<S3Store['flush']>[1]): Promise<void> {
    if (this.failures > 0) {
      this.failures--
      throw new Error('CompleteMultipartUpload: 503 Slow Down')
    }
    await super.flush(id, options)
  }
}

t.test('an upload whose completion failed (every byte in S3, the multipart upload still open) is completed by the next request that reads it, and onUploadComplete runs then, once', async (t) => {
  t.setTimeout(120_000)
  const bucket = await testBucket(t)
  const store = new FailingCompletionStore({ bucket, s3: s3ClientConfig(), prefix: 'uploads/', partSize: 5 * MiB })
  t.teardown(async () => { await store.close() })
  const completed: string[] = []
  const server = await startServer(t, { store, onUploadComplete: (upload) => { completed.push(upload.id) } })
  const data = randomBytesSeeded(5 * MiB + 10, 140)
  const readers: Array<[string, (url: string) => Promise<{ status: number }>]> = [
    ['a tus HEAD', async (url) => await tusRequest(url, { method: 'HEAD' })],
    ['a draft HEAD (interop 6)', async (url) => await tusRequest(url, { method: 'HEAD', headers: { 'Upload-Draft-Interop-Version': '6' } })],
    ['a download', async (url) => await tusRequest(url)],
    ['an empty PATCH at the end', async (url) => await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': String(data.length), ...OCTET } })]
  ]
  for (const [reader, read] of readers) {
    store.failures = 1
    completed.length = 0
    const url = await createUpload(server, { 'Upload-Length': String(data.length) })
    const last = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: data })
    t.equal(last.status, 500, `${reader}: the PATCH storing the last byte fails at the completion`)
    t.same(completed, [], `${reader}: not reported complete`)
    const answer = await read(url)
    t.ok(answer.status < 300, `${reader}: ${answer.status}`)
    t.same(completed, [idOf(url)], `${reader}: completed it, and ran onUploadComplete once`)
    const download = await tusRequest(url)
    t.equal(download.status, 200)
    t.equal(sha256(download.body), sha256(data), `${reader}: byte-identical`)
    t.equal((await tusRequest(url, { method: 'HEAD' })).status, 200)
    t.same(completed, [idOf(url)], `${reader}: never again`)
  }
})

t.test('a missing bucket is a storage error on every route, never "this upload does not exist" (clients would start over)', async (t) => {
  const server = await startServer(t, { store: newStore(`missing-${Date.now()}`) })
  const url = `${server.endpoint}${contractId()}`
  for (const method of ['HEAD', 'GET', 'DELETE']) {
    const answer = await tusRequest(url, { method })
    t.equal(answer.status, 500, method)
  }
  const patch = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: 'abc' })
  t.equal(patch.status, 500, 'PATCH')
  t.equal((await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '3' } })).status, 500, 'POST')
})

/** Every multipart upload in the bucket, as `key` (sorted). */
async function multipartKeys (bucket: string): Promise<string[]> {
  return ((await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? []).map(({ Key }) => Key!).sort()
}

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }
const DAY_MS = 24 * 60 * 60 * 1000

for (const prefix of ['tus-', '']) {
  t.test(`removeExpired() with the prefix '${prefix}': live uploads started before the retention keep every byte; only what no upload refers to goes`, async (t) => {
    t.setTimeout(120_000)
    const bucket = await testBucket(t)
    const store = new S3Store({ bucket, s3: s3ClientConfig(), prefix, partSize: 5 * MiB })
    t.teardown(async () => { await store.close() })
    // A retention of 8 s: the live uploads are written every 3 s and swept right after their last write, when their
    // multipart uploads are 9 s old. S3 dates have whole seconds: a write can look up to 1 s older than it is, which
    // leaves a loaded machine 4 s for each request until the checks below (a retention of 4 s, written every 2 s and
    // swept 2 s after, left 1 s: a HEAD under load found its upload expired).
    const server = await startServer(t, { store, daysToKeep: 8000 / DAY_MS })
    const data = randomBytesSeeded(5000, 61)
    const root = contractId()
    const nested = contractId()
    await store.create({ id: root, size: data.length, metadata: {} })
    await store.create({ id: nested, size: data.length, metadata: {}, directory: 'team-a' })
    // No info object refers to these: creates that crashed before writing it.
    const abandoned = [`${prefix}${contractId()}`, `${prefix}team-b/${contractId()}`]
    for (const Key of abandoned) await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key }))
    // Keys under the prefix that are none of the store's: someone else's, never touched.
    const foreign = `${prefix}not.ours/${contractId()}`
    await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: foreign }))
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: `${foreign}.part`, Body: 'x', ContentLength: 1 }))
    for (const offset of [0, 1000, 2000, 3000]) {
      if (offset > 0) await sleep(3000)
      for (const id of [root, nested]) {
        const patched = await tusRequest(`${server.endpoint}${id}`, { method: 'PATCH', headers: { ...OCTET, 'Upload-Offset': String(offset) }, body: data.subarray(offset, offset + 1000) })
        t.equal(patched.status, 204, `at ${offset}: written within the retention, not expired`)
      }
    }
    t.same(await removeExpired(server.app), [])
    t.same(await multipartKeys(bucket), [`${prefix}${root}`, foreign, `${prefix}team-a/${nested}`].sort(), 'the live and the foreign multipart uploads stand, the abandoned ones are aborted')
    t.ok((await keys(bucket)).includes(`${foreign}.part`), 'a foreign object is not touched')
    for (const id of [root, nested]) {
      const url = `${server.endpoint}${id}`
      const head = await tusRequest(url, { method: 'HEAD' })
      t.equal(head.status, 200)
      t.equal(head.headers['upload-offset'], '4000')
      const rest = await tusRequest(url, { method: 'PATCH', headers: { ...OCTET, 'Upload-Offset': '4000' }, body: data.subarray(4000) })
      t.equal(rest.status, 204)
      t.equal(rest.headers['upload-offset'], String(data.length))
      const download = await tusRequest(url)
      t.equal(download.status, 200)
      t.equal(sha256(download.body), sha256(data), `${id}: every byte`)
    }
    t.same(await keys(bucket), [`${prefix}${root}`, `${prefix}${root}.info`, `${prefix}${nested}.info`, `${foreign}.part`, `${prefix}team-a/${nested}`].sort())
  })
}

/**
 * S3 client settings that fail one request, the `plan.in`-th from when it is set (then unset), no retries: what S3
 * sees of a process that dies there, since the store's calls after it never come.
 */
function crashingConfig (plan: { in?: number }): S3ClientConfig {
  const plain = new S3Client(s3ClientConfig())
  t.teardown(() => { plain.destroy() })
  const inner = plain.config.requestHandler as unknown as { handle: Handle }
  const handle: Handle = async (request, options) => {
    if (plan.in !== undefined && --plan.in === 0) {
      plan.in = undefined
      throw new Error('injected crash')
    }
    return await inner.handle(request, options)
  }
  return { ...s3ClientConfig(), maxAttempts: 1, requestHandler: { handle } as unknown as S3ClientConfig['requestHandler'] }
}

t.test('a DELETE that dies at any S3 call: a retried DELETE or removeExpired() finishes it, and the id starts afresh', async (t) => {
  t.setTimeout(300_000)
  const bucket = await testBucket(t)
  const plan: { in?: number } = {}
  const crashing = new S3Store({ bucket, s3: crashingConfig(plan), prefix: 'uploads/', partSize: 5 * MiB })
  t.teardown(async () => { await crashing.close() })
  const dying = await startServer(t, { store: crashing })
  // Another instance, choosing the ids of new uploads (onUploadCreate), as the old upload's client re-uploading.
  let reuse = ''
  const other = newStore(bucket)
  const retrying = await startServer(t, { store: other, onUploadCreate: () => ({ id: reuse }) })
  let sweeps = 0
  for (let step = 1; ; step++) {
    const id = contractId()
    await crashing.create({ id, size: 100_000, metadata: {} })
    await crashing.write(id, 0, bytes(randomBytesSeeded(4000, 70 + step)))
    await crashing.addPendingFinal(`final-${id}`, [id])
    t.same((await keys(bucket)).filter((key) => key.includes(id)), [`uploads/${id}.finals/final-${id}`, `uploads/${id}.info`, `uploads/${id}.part`])
    plan.in = step
    const deleted = await tusRequest(`${dying.endpoint}${id}`, { method: 'DELETE' })
    if (deleted.status === 204) {
      plan.in = undefined
      t.ok(step > 8, `every S3 call of the DELETE was failed once (${step - 1})`)
      t.same((await keys(bucket)).filter((key) => key.includes(id)), [])
      break
    }
    t.equal(deleted.status, 500, `step ${step}: the failed DELETE`)
    const retried = await tusRequest(`${retrying.endpoint}${id}`, { method: 'DELETE' })
    if (retried.status === 404) {
      // Only once the multipart upload is aborted: the upload is gone, its info object is removed once as old
      // as the retention (here: any age).
      t.same((await keys(bucket)).filter((key) => key.includes(id)), [`uploads/${id}.info`], `step ${step}: only the info object is left`)
      t.equal(await other.removeAbandoned(new Date(Date.now() + 60_000)), 1)
      sweeps++
    } else {
      t.equal(retried.status, 204, `step ${step}: the retried DELETE`)
    }
    t.same((await keys(bucket)).filter((key) => key.includes(id)), [], `step ${step}: no object of the upload is left`)
    t.same((await multipartKeys(bucket)).filter((key) => key.includes(id)), [], `step ${step}: no multipart upload of it is left`)
    reuse = id
    const url = await createUpload(retrying, { 'Upload-Length': '10' })
    t.equal(idOf(url), id)
    const head = await tusRequest(url, { method: 'HEAD' })
    t.equal(head.headers['upload-offset'], '0', `step ${step}: the new upload under the same id starts at 0`)
    const patched = await tusRequest(url, { method: 'PATCH', headers: { ...OCTET, 'Upload-Offset': '0' }, body: '0123456789' })
    t.equal(patched.status, 204)
    t.equal(sha256((await tusRequest(url)).body), sha256('0123456789'), `step ${step}: exactly its bytes`)
  }
  t.equal(sweeps, 1, 'one S3 call leaves the upload gone but its info object there: the info object\'s removal')
})

t.test('an incomplete-part object of another multipart upload under the same id is not counted; removeExpired() sweeps it', async (t) => {
  t.setTimeout(120_000)
  const bucket = await testBucket(t)
  const store = newStore(bucket)
  const id = contractId()
  await store.create({ id, size: 100_000, metadata: {} })
  await store.write(id, 0, bytes(randomBytesSeeded(4000, 81)))
  const leftover = await client.send(new GetObjectCommand({ Bucket: bucket, Key: `uploads/${id}.part` }))
  const leftoverBytes = Buffer.from(await leftover.Body!.transformToByteArray())
  t.equal(leftoverBytes.length, 4000)
  await store.terminate(id)
  // What a termination that died before removing it leaves (any version): the object of the old upload.
  await client.send(new PutObjectCommand({ Bucket: bucket, Key: `uploads/${id}.part`, Body: leftoverBytes, ContentLength: 4000, Metadata: leftover.Metadata }))
  t.ok(leftover.Metadata?.['tus-upload-id'], 'the object names its multipart upload')
  const server = await startServer(t, { store, daysToKeep: 2000 / DAY_MS, onUploadCreate: () => ({ id }) })
  const url = await createUpload(server, { 'Upload-Length': '10' })
  t.equal((await tusRequest(url, { method: 'HEAD' })).headers['upload-offset'], '0', 'the new upload starts at 0')
  const patched = await tusRequest(url, { method: 'PATCH', headers: { ...OCTET, 'Upload-Offset': '0' }, body: '0123456789' })
  t.equal(patched.status, 204)
  t.equal(patched.headers['upload-offset'], '10')
  t.equal(sha256((await tusRequest(url)).body), sha256('0123456789'))
  t.same(await removeExpired(server.app), [])
  t.ok((await keys(bucket)).includes(`uploads/${id}.part`), 'within the retention it is kept')
  await sleep(2500)
  t.same(await removeExpired(server.app), [])
  t.same(await keys(bucket), [`uploads/${id}`, `uploads/${id}.info`], 'once older than the retention it is removed; the upload stays')
  t.equal(sha256((await tusRequest(url)).body), sha256('0123456789'))

  // Objects written before the multipart upload was recorded in them count as they did.
  const legacy = contractId()
  const data = randomBytesSeeded(5000, 82)
  await store.create({ id: legacy, size: data.length, metadata: {} })
  await store.write(legacy, 0, bytes(data.subarray(0, 1000)))
  await client.send(new PutObjectCommand({
    Bucket: bucket, Key: `uploads/${legacy}.part`, Body: data.subarray(0, 1000), ContentLength: 1000, Metadata: { 'tus-part-number': '1' }
  }))
  t.equal((await store.getInfo(legacy)).offset, 1000)
  await store.write(legacy, 1000, bytes(data.subarray(1000)))
  await store.flush(legacy)
  const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: `uploads/${legacy}` }))
  t.equal(sha256(Buffer.from(await object.Body!.transformToByteArray())), sha256(data))
})

t.test('completing an empty upload that dies at any S3 call leaves it complete or completable, never gone', async (t) => {
  t.setTimeout(120_000)
  const bucket = await testBucket(t)
  const plan: { in?: number } = {}
  const crashing = new S3Store({ bucket, s3: crashingConfig(plan), prefix: 'uploads/', partSize: 5 * MiB })
  t.teardown(async () => { await crashing.close() })
  const other = newStore(bucket)
  for (let step = 1; ; step++) {
    const id = contractId()
    await crashing.create({ id, size: 0, metadata: {} })
    plan.in = step
    const failed = await crashing.flush(id).then(() => false, () => true)
    plan.in = undefined
    const info = await other.getInfo(id)
    t.equal(info.offset, 0, `step ${step}: the upload is still there`)
    await other.flush(id)
    const object = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: `uploads/${id}` }))
    t.equal(object.ContentLength, 0)
    t.same((await multipartKeys(bucket)).filter((key) => key.includes(id)), [], `step ${step}: no multipart upload left`)
    t.same((await keys(bucket)).filter((key) => key.includes(id)), [`uploads/${id}`, `uploads/${id}.info`])
    if (!failed) {
      t.ok(step > 3, 'every S3 call of the completion was failed once')
      break
    }
  }
})

t.test('downloads whose clients take no byte are cut after idleTimeout: they never keep the S3 client\'s sockets from other requests', async (t) => {
  t.setTimeout(120_000)
  const bucket = await testBucket(t)
  const server = await startServer(t, { store: newStore(bucket), idleTimeout: 500 })
  const data = randomBytesSeeded(16 * MiB, 23)
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': String(data.length), ...OCTET }, body: data })
  t.equal(created.status, 201)
  const path = new URL(created.headers.location!).pathname
  // More downloads than the AWS SDK's 50 pooled sockets, each reading its head and then nothing.
  const port = Number(new URL(server.origin).port)
  const stalled = await Promise.all(Array.from({ length: 52 }, async () => {
    const socket = connect(port, '127.0.0.1')
    socket.on('error', () => undefined)
    await once(socket, 'connect')
    socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n\r\n`)
    await once(socket, 'data')
    socket.pause()
    return socket
  }))
  t.teardown(() => { for (const socket of stalled) socket.destroy() })
  const other = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '3', ...OCTET }, body: 'abc' })
  t.equal(other.status, 201, 'a creation is answered once the stalled downloads are cut')
  const whole = await tusRequest(`${server.origin}${path}`)
  t.equal(whole.status, 200)
  t.equal(sha256(whole.body), sha256(data))
})

/**
 * Uploads parts 1-999 of an upload as parts of one byte (S3 checks part sizes only at completion), so that its
 * next part is the 1000th, the last before the first doubling, without sending 5 GiB. Returns their bytes' count.
 */
async function fillEarlyParts (bucket: string, id: string, uploadId: string): Promise<number> {
  const early = 999
  // Ten at a time: the radosgw is shared with the test files running beside this one.
  for (let first = 1; first <= early; first += 10) {
    await Promise.all(Array.from({ length: Math.min(10, early - first + 1) }, async (_, k) => await client.send(new UploadPartCommand({
      Bucket: bucket, Key: `uploads/${id}`, UploadId: uploadId, PartNumber: first + k, Body: Buffer.from('x'), ContentLength: 1
    }))))
  }
  return early
}

function md5 (bytes: Buffer): string {
  return `"${createHash('md5').update(bytes).digest('hex')}"`
}

t.test('an upload of deferred length doubles its part size every 1000 parts, so it is not capped at 10000 x partSize (tus, draft 6)', async (t) => {
  t.setTimeout(240_000)
  const bucket = await testBucket(t)
  const server = await startServer(t, { store: newStore(bucket) })
  const protocols: Array<{ name: string, create: Record<string, string>, append: (offset: number) => Record<string, string>, head: Record<string, string> }> = [
    {
      name: 'tus',
      create: { 'Upload-Defer-Length': '1' },
      append: (offset: number) => ({ 'Tus-Resumable': '1.0.0', 'Upload-Offset': String(offset), ...OCTET }),
      head: { 'Tus-Resumable': '1.0.0' }
    },
    {
      name: 'draft 6',
      create: { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?0' },
      append: (offset: number) => ({ 'Upload-Draft-Interop-Version': '6', 'Upload-Offset': String(offset), 'Upload-Complete': '?0', 'Content-Type': 'application/partial-upload' }),
      head: { 'Upload-Draft-Interop-Version': '6' }
    }
  ]
  for (const [index, protocol] of protocols.entries()) {
    const created = await rawRequest(server.endpoint, { method: 'POST', headers: { ...protocol.head, ...protocol.create } })
    t.equal(created.status, 201, `${protocol.name}: created`)
    const url = new URL(created.headers.location!, server.origin).href
    const id = idOf(url)
    const info = await client.send(new GetObjectCommand({ Bucket: bucket, Key: `uploads/${id}.info` }))
    const { uploadId } = JSON.parse(await info.Body!.transformToString()) as { uploadId: string }
    const early = await fillEarlyParts(bucket, id, uploadId)
    const head = await rawRequest(url, { method: 'HEAD', headers: protocol.head })
    t.equal(head.headers['upload-offset'], String(early), `${protocol.name}: the early parts count`)
    const data = randomBytesSeeded(25 * MiB + 14, 60 + index)
    const firstHalf = data.subarray(0, 15 * MiB + 7)
    const patched = await rawRequest(url, { method: 'PATCH', headers: protocol.append(early), body: firstHalf })
    t.equal(patched.status, 204, `${protocol.name}: appended across the first doubling`)
    t.equal(patched.headers['upload-offset'], String(early + firstHalf.length))
    const resumed = await rawRequest(url, { method: 'PATCH', headers: protocol.append(early + firstHalf.length), body: data.subarray(firstHalf.length) })
    t.equal(resumed.status, 204, `${protocol.name}: resumed with a part of the new size`)
    t.equal(resumed.headers['upload-offset'], String(early + data.length))
    const listed = await client.send(new ListPartsCommand({ Bucket: bucket, Key: `uploads/${id}`, UploadId: uploadId, PartNumberMarker: String(early) }))
    t.same((listed.Parts ?? []).map(({ PartNumber, Size, ETag }) => ({ PartNumber, Size, ETag })), [
      { PartNumber: 1000, Size: 5 * MiB, ETag: md5(data.subarray(0, 5 * MiB)) },
      { PartNumber: 1001, Size: 10 * MiB, ETag: md5(data.subarray(5 * MiB, 15 * MiB)) },
      { PartNumber: 1002, Size: 10 * MiB, ETag: md5(data.subarray(15 * MiB, 25 * MiB)) }
    ], `${protocol.name}: part 1000 is 5 MiB, parts 1001 on are 10 MiB, byte for byte`)
    const incomplete = await client.send(new GetObjectCommand({ Bucket: bucket, Key: `uploads/${id}.part` }))
    t.equal(sha256(Buffer.from(await incomplete.Body!.transformToByteArray())), sha256(data.subarray(25 * MiB)), `${protocol.name}: the rest waits in the incomplete part`)
  }
})

t.test('an upload of deferred length created before the doubling keeps its one part size', async (t) => {
  t.setTimeout(120_000)
  const bucket = await testBucket(t)
  const id = contractId()
  await newStore(bucket).create({ id, size: undefined, metadata: {} })
  // Its info object as the store wrote it before parts doubled: no partSizeDoublesEvery.
  const key = `uploads/${id}.info`
  const written = JSON.parse(await (await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToString()) as Record<string, unknown>
  t.equal(written.partSizeDoublesEvery, 1000, 'a new upload of deferred length records its doubling')
  delete written.partSizeDoublesEvery
  const older = JSON.stringify(written)
  await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: older, ContentLength: Buffer.byteLength(older) }))
  const early = await fillEarlyParts(bucket, id, written.uploadId as string)
  const store = newStore(bucket)
  const data = randomBytesSeeded(10 * MiB + 3, 62)
  t.equal(await store.write(id, early, bytes(data)), early + data.length)
  const listed = await client.send(new ListPartsCommand({ Bucket: bucket, Key: `uploads/${id}`, UploadId: written.uploadId as string, PartNumberMarker: String(early) }))
  t.same((listed.Parts ?? []).map(({ PartNumber, Size, ETag }) => ({ PartNumber, Size, ETag })), [
    { PartNumber: 1000, Size: 5 * MiB, ETag: md5(data.subarray(0, 5 * MiB)) },
    { PartNumber: 1001, Size: 5 * MiB, ETag: md5(data.subarray(5 * MiB, 10 * MiB)) }
  ])
})
