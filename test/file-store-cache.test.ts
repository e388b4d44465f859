// FileStore's in-memory info cache (cacheSize, on by default): the whole store contract, the plugin on top of
// it, two stores sharing a directory, and the races between a cache fill and the changes that make it stale.
import t from 'tap'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FileStore } from '../lib/index.js'
import { createUpload, idOf, randomBytesSeeded, sha256, startServer, tusRequest } from './helpers.js'
import { contractId, storeContract } from './store-contract.js'

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }

const directory = await mkdtemp(join(tmpdir(), 'fastify-tus-cache-'))
t.teardown(async () => { await rm(directory, { recursive: true, force: true }) })

t.test('the store contract holds with a cache smaller than the number of uploads (entries evicted)', async (t) => {
  const store = new FileStore({ directory: join(directory, 'contract'), cacheSize: 2 })
  t.teardown(async () => { await store.close() })
  storeContract(t, store)
})

t.test('cacheSize must be a non-negative integer', async (t) => {
  for (const cacheSize of [-1, 1.5, Number.NaN]) {
    t.throws(() => new FileStore({ directory, cacheSize }), { message: 'cacheSize must be a non-negative integer' }, String(cacheSize))
  }
})

t.test('the plugin on a caching store: offsets from the data file, bytes intact, termination seen at once', async (t) => {
  const dir = join(directory, 'plugin')
  const store = new FileStore({ directory: dir, cacheSize: 100 })
  const server = await startServer(t, { dir, store })
  const data = randomBytesSeeded(300_000, 4)
  const url = await createUpload(server, { 'Upload-Length': String(data.length) })
  const first = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: data.subarray(0, 100_000) })
  t.equal(first.status, 204)
  t.equal(first.headers['upload-offset'], '100000')
  t.equal((await tusRequest(url, { method: 'HEAD' })).headers['upload-offset'], '100000')
  const stale = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: 'x' })
  t.equal(stale.status, 409)
  t.equal(stale.headers['upload-offset'], '100000')
  const rest = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '100000', ...OCTET }, body: data.subarray(100_000) })
  t.equal(rest.status, 204)
  t.equal(rest.headers['upload-offset'], String(data.length))
  t.equal(sha256(await readFile(join(dir, idOf(url)))), sha256(data))
  const download = await tusRequest(url)
  t.equal(download.status, 200)
  t.equal(sha256(download.body), sha256(data))
  t.equal((await tusRequest(url, { method: 'DELETE' })).status, 204)
  t.equal((await tusRequest(url, { method: 'HEAD' })).status, 404)
  t.same(await readdir(dir), [])
})

t.test('a deferred length declared on a PATCH is what later requests see', async (t) => {
  const dir = join(directory, 'deferred')
  const server = await startServer(t, { dir, store: new FileStore({ directory: dir, cacheSize: 100 }) })
  const url = await createUpload(server, { 'Upload-Defer-Length': '1' })
  t.equal((await tusRequest(url, { method: 'HEAD' })).headers['upload-defer-length'], '1')
  const patched = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', 'Upload-Length': '5', ...OCTET }, body: 'abc' })
  t.equal(patched.status, 204)
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.headers['upload-length'], '5')
  t.equal(head.headers['upload-defer-length'], undefined)
  t.equal(head.headers['upload-offset'], '3')
})

t.test('a cache fill racing a termination or a declared length does not keep what it read', async (t) => {
  const dir = join(directory, 'races')
  // A fresh store per round: its cache is cold, so getInfo reads the info file while the change runs.
  for (let round = 0; round < 20; round++) {
    const writer = new FileStore({ directory: dir, cacheSize: 100 })
    const removed = contractId()
    const deferred = contractId()
    await writer.create({ id: removed, size: 10, metadata: {} })
    await writer.create({ id: deferred, size: undefined, metadata: {} })
    const store = new FileStore({ directory: dir, cacheSize: 100 })
    await Promise.allSettled([store.getInfo(removed), store.terminate(removed)])
    await t.rejects(store.getInfo(removed), { code: 'FST_TUS_NOT_FOUND' }, `round ${round}: removed`)
    // The info file is replaced atomically: the racing read sees the old length or the new one, never fails.
    const [raced] = await Promise.all([store.getInfo(deferred), store.declareLength(deferred, 7)])
    t.ok(raced.size === undefined || raced.size === 7, `round ${round}: the racing read saw a whole info file`)
    t.equal((await store.getInfo(deferred)).size, 7, `round ${round}: declared`)
    await store.terminate(deferred)
  }
})

t.test('a store sharing the directory sees what another store changed, whatever it has cached', async (t) => {
  const dir = join(directory, 'shared')
  const reader = new FileStore({ directory: dir })
  const writer = new FileStore({ directory: dir })
  t.teardown(async () => { await Promise.all([reader.close(), writer.close()]) })

  const id = contractId()
  await writer.create({ id, size: 10, metadata: { filename: 'first' } })
  t.equal((await reader.getInfo(id)).metadata.filename, 'first', 'cached by the reader')
  await writer.write(id, 0, (async function * () { yield Buffer.from('abc') })())
  t.equal((await reader.getInfo(id)).offset, 3, 'bytes written elsewhere')
  await writer.terminate(id)
  await t.rejects(reader.getInfo(id), { code: 'FST_TUS_NOT_FOUND' }, 'terminated elsewhere')

  await writer.create({ id, size: 10, metadata: { filename: 'first' } })
  t.equal((await reader.getInfo(id)).size, 10)
  await writer.terminate(id)
  await writer.create({ id, size: 20, metadata: { filename: 'second' } })
  const recreated = await reader.getInfo(id)
  t.same([recreated.size, recreated.metadata.filename, recreated.offset], [20, 'second', 0], 're-created elsewhere under the same id')

  const own = contractId()
  await reader.create({ id: own, size: 10, metadata: { filename: 'mine' } })
  await writer.terminate(own)
  await writer.create({ id: own, size: 30, metadata: { filename: 'theirs' } })
  const replaced = await reader.getInfo(own)
  t.same([replaced.size, replaced.metadata.filename], [30, 'theirs'], 'an upload this store created, re-created elsewhere before this store looked at it again')

  const deferred = contractId()
  await writer.create({ id: deferred, size: undefined, metadata: {} })
  t.equal((await reader.getInfo(deferred)).size, undefined)
  await writer.declareLength(deferred, 7)
  t.equal((await reader.getInfo(deferred)).size, 7, 'length declared elsewhere')
})

/** Rewrites an info file by hand with other metadata: seen only by a store that reads it again. */
async function editByHand (dir: string, id: string): Promise<void> {
  const path = join(dir, `${id}.json`)
  const info = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>
  await writeFile(path, JSON.stringify({ ...info, metadata: { filename: 'edited' } }))
}

t.test('by default the cache is bounded by memory, not by a count: 3000 small infos all stay cached', async (t) => {
  const dir = join(directory, 'many')
  const store = new FileStore({ directory: dir })
  t.teardown(async () => { await store.close() })
  const ids = Array.from({ length: 3000 }, () => contractId())
  for (const id of ids) await store.create({ id, size: 10, metadata: { filename: 'original' } })
  // Edited on disk after they were cached: a store that reads an info file again sees 'edited'.
  for (const id of [ids[0]!, ids[1500]!]) await editByHand(dir, id)
  for (const id of [ids[0]!, ids[1500]!]) t.equal((await store.getInfo(id)).metadata.filename, 'original', 'served from the cache, no read of the info file')
  t.equal((await new FileStore({ directory: dir }).getInfo(ids[0]!)).metadata.filename, 'edited', 'a fresh store reads the file')
})

t.test('cacheBytes bounds the cache: the least recently used infos are read again', async (t) => {
  const dir = join(directory, 'bytes')
  // About 500 bytes an entry here: room for a few, not for 40.
  const store = new FileStore({ directory: dir, cacheBytes: 2000 })
  t.teardown(async () => { await store.close() })
  const ids = Array.from({ length: 40 }, () => contractId())
  for (const id of ids) await store.create({ id, size: 10, metadata: { filename: 'original' } })
  await editByHand(dir, ids[0]!)
  await editByHand(dir, ids[39]!)
  t.equal((await store.getInfo(ids[39]!)).metadata.filename, 'original', 'the most recent is cached')
  t.equal((await store.getInfo(ids[0]!)).metadata.filename, 'edited', 'the oldest was evicted')
  for (const cacheBytes of [-1, 0.5]) {
    t.throws(() => new FileStore({ directory, cacheBytes }), { message: 'cacheBytes must be a non-negative integer' }, String(cacheBytes))
  }
  const off = new FileStore({ directory: dir, cacheBytes: 0 })
  await off.getInfo(ids[5]!)
  await editByHand(dir, ids[5]!)
  t.equal((await off.getInfo(ids[5]!)).metadata.filename, 'edited', 'cacheBytes: 0 turns the cache off')
})

t.test('an info file larger than one read (big metadata) is read whole', async (t) => {
  const dir = join(directory, 'big')
  const store = new FileStore({ directory: dir })
  t.teardown(async () => { await store.close() })
  const id = contractId()
  const metadata = { filename: 'ä'.repeat(9000), note: 'x'.repeat(20_000) }
  await store.create({ id, size: 10, metadata })
  t.same((await new FileStore({ directory: dir }).getInfo(id)).metadata, metadata)
})
