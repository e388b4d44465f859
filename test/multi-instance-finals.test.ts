// Concatenation across instances sharing S3 and Redis: a final upload created on one instance is finished by
// the instance that completes its last partial, and every instance serves it; one whose partial is gone answers
// 410 on every instance.
import t from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { idOf, randomBytesSeeded, sha256, startChild, tusRequest, type ChildServer } from './helpers.js'
import { DeleteObjectCommand } from '@aws-sdk/client-s3'
import { S3Store } from '../lib/store/s3-store.js'
import { s3ClientConfig, testBucket, testS3Client, uniqueName } from './services.js'

const MiB = 1024 * 1024
const OCTET = { 'Content-Type': 'application/offset+octet-stream' }

async function instances (t: Parameters<typeof testBucket>[0] & { teardown: (fn: () => unknown) => void }, count: number): Promise<ChildServer[]> {
  const bucket = await testBucket(t)
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-finals-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const env = { TUS_CHILD_BUCKET: bucket, TUS_CHILD_REDIS_PREFIX: `${uniqueName('tus-finals')}:` }
  return await Promise.all(Array.from({ length: count }, async () => await startChild(t, dir, env)))
}

async function completions (server: ChildServer): Promise<Record<string, number>> {
  return JSON.parse((await tusRequest(`${server.origin}/test/completions`)).body.toString()) as Record<string, number>
}

async function createPartial (server: ChildServer, size: number): Promise<string> {
  const created = await tusRequest(`${server.origin}/files/`, { method: 'POST', headers: { 'Upload-Length': String(size), 'Upload-Concat': 'partial' } })
  if (created.status !== 201) throw new Error(`partial creation answered ${created.status}`)
  return idOf(new URL(created.headers.location!, server.origin).href)
}

async function patch (server: ChildServer, id: string, offset: number, body: Buffer): Promise<number> {
  const response = await tusRequest(`${server.origin}/files/${id}`, { method: 'PATCH', headers: { 'Upload-Offset': String(offset), ...OCTET }, body })
  return response.status
}

// Two layouts: partials S3 can copy itself (the first is >= 5 MiB), and small ones streamed through an instance.
for (const [label, sizes] of [['copied by S3', [5 * MiB + 3, MiB + 7]], ['streamed', [1000, 2001]]] as const) {
  t.test(`a final created on B, its last partial completed on A, is served by C (${label}); onUploadComplete once, on A`, async (t) => {
    t.setTimeout(180_000)
    const [a, b, c] = await instances(t, 3)
    const data = sizes.map((size, index) => randomBytesSeeded(size, 70 + index))
    const [first, second] = [await createPartial(a!, sizes[0]), await createPartial(a!, sizes[1])]
    t.equal(await patch(a!, first, 0, data[0]!), 204)
    const half = Math.floor(sizes[1] / 2)
    t.equal(await patch(a!, second, 0, data[1]!.subarray(0, half)), 204)

    const final = await tusRequest(`${b!.origin}/files/`, {
      method: 'POST', headers: { 'Upload-Concat': `final;/files/${first} /files/${second}`, 'Upload-Metadata': 'filename am9pbmVkLmJpbg==' }
    })
    t.equal(final.status, 201)
    const finalId = idOf(new URL(final.headers.location!, b!.origin).href)
    t.equal((await tusRequest(`${c!.origin}/files/${finalId}`)).status, 409, 'not complete while a partial is not')

    t.equal(await patch(a!, second, half, data[1]!.subarray(half)), 204, 'the last partial completes on A')
    const download = await tusRequest(`${c!.origin}/files/${finalId}`)
    t.equal(download.status, 200)
    t.equal(download.headers['content-length'], String(sizes[0] + sizes[1]))
    t.equal(sha256(download.body), sha256(Buffer.concat(data)), 'the final is the partials, byte for byte')
    const head = await tusRequest(`${b!.origin}/files/${finalId}`, { method: 'HEAD' })
    t.equal(head.status, 200)
    t.equal(head.headers['upload-offset'], String(sizes[0] + sizes[1]))

    t.same(await completions(a!), { [finalId]: 1 }, 'onUploadComplete ran once, on A, for the final only')
    t.same(await completions(b!), {}, 'not on B, which created the final')
    t.same(await completions(c!), {}, 'not on C, which read it')
  })
}

t.test('a final whose partials complete on another instance after its creator restarted is still finished there', async (t) => {
  t.setTimeout(180_000)
  const [a, b] = await instances(t, 2)
  const data = randomBytesSeeded(3000, 80)
  const partial = await createPartial(a!, data.length)
  const final = await tusRequest(`${b!.origin}/files/`, { method: 'POST', headers: { 'Upload-Concat': `final;/files/${partial}` } })
  t.equal(final.status, 201)
  const finalId = idOf(new URL(final.headers.location!, b!.origin).href)
  // B, which registered the final, is gone: the waiting list must not have lived in its memory.
  b!.child.kill('SIGKILL')
  t.equal(await patch(a!, partial, 0, data), 204)
  t.same(await completions(a!), { [finalId]: 1 }, 'finished by A when the partial completed')
  const download = await tusRequest(`${a!.origin}/files/${finalId}`)
  t.equal(download.status, 200)
  t.equal(sha256(download.body), sha256(data))
})

t.test('a final whose waiting record is gone (an instance died before finishing it) is finished by a GET on any instance', async (t) => {
  t.setTimeout(180_000)
  const bucket = await testBucket(t)
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-finals-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const env = { TUS_CHILD_BUCKET: bucket, TUS_CHILD_REDIS_PREFIX: `${uniqueName('tus-finals')}:` }
  const [a, b, c] = await Promise.all([startChild(t, dir, env), startChild(t, dir, env), startChild(t, dir, env)])
  const data = randomBytesSeeded(4000, 81)
  const partial = await createPartial(a!, data.length)
  const final = await tusRequest(`${b!.origin}/files/`, { method: 'POST', headers: { 'Upload-Concat': `final;/files/${partial}` } })
  const finalId = idOf(new URL(final.headers.location!, b!.origin).href)
  // What an instance that crashed between the partial's completion and the final's leaves: no record.
  const client = testS3Client()
  t.teardown(() => { client.destroy() })
  await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: `uploads/${partial}.finals/${finalId}` }))
  t.equal(await patch(a!, partial, 0, data), 204)
  t.same(await completions(a!), {}, 'A did not know of the final')
  const download = await tusRequest(`${c!.origin}/files/${finalId}`)
  t.equal(download.status, 200, 'the GET finished it')
  t.equal(sha256(download.body), sha256(data))
  t.equal((await tusRequest(`${b!.origin}/files/${finalId}`)).status, 200)
  t.same(await completions(c!), { [finalId]: 1 }, 'onUploadComplete ran once, on the instance that finished it')
  t.same(await completions(b!), {})
})

t.test('a final whose partial was terminated, then created again under its id, answers 410 on every instance and copies nothing', async (t) => {
  t.setTimeout(180_000)
  const bucket = await testBucket(t)
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-finals-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const env = { TUS_CHILD_BUCKET: bucket, TUS_CHILD_REDIS_PREFIX: `${uniqueName('tus-finals')}:` }
  const [a, b] = await Promise.all([startChild(t, dir, env), startChild(t, dir, env)])
  const partial = await createPartial(a!, 1000)
  t.equal(await patch(a!, partial, 0, randomBytesSeeded(400, 90)), 204)
  const final = await tusRequest(`${b!.origin}/files/`, { method: 'POST', headers: { 'Upload-Concat': `final;/files/${partial}` } })
  t.equal(final.status, 201)
  const finalId = idOf(new URL(final.headers.location!, b!.origin).href)
  t.equal((await tusRequest(`${a!.origin}/files/${partial}`, { method: 'DELETE' })).status, 204)
  const gone = `A partial upload of this final upload is gone (${partial}): it can never complete`
  t.equal((await tusRequest(`${a!.origin}/files/${finalId}`, { method: 'HEAD' })).status, 410)

  // Another upload under the partial's id, complete, with as many bytes: B read the partial when it made the final.
  const store = new S3Store({ bucket, s3: s3ClientConfig(), prefix: 'uploads/', partSize: 5 * MiB })
  t.teardown(async () => { await store.close() })
  await store.create({ id: partial, size: 1000, metadata: {}, concat: { type: 'partial' } })
  t.equal(await store.write(partial, 0, (async function * () { yield randomBytesSeeded(1000, 91) })()), 1000)
  await store.flush(partial)
  for (const server of [a!, b!]) {
    t.equal((await tusRequest(`${server.origin}/files/${finalId}`, { method: 'HEAD' })).status, 410)
    const get = await tusRequest(`${server.origin}/files/${finalId}`)
    t.equal(get.status, 410)
    t.equal(get.text, gone)
  }
  const stored = await store.getInfo(finalId)
  t.equal(stored.offset, 0, 'nothing copied into the final')
  t.equal(stored.concat?.type === 'final' ? stored.concat.partials?.length : undefined, 1, 'the partial\'s identity is stored with the final')
  t.same(await completions(a!), {})
  t.same(await completions(b!), {})
  t.equal((await tusRequest(`${b!.origin}/files/${finalId}`, { method: 'DELETE' })).status, 204)
  t.equal((await tusRequest(`${a!.origin}/files/${finalId}`, { method: 'HEAD' })).status, 404)
})
