// FileStore.write batches the chunks that arrive while a write is in progress (writev); every byte must
// land once, in order, whatever the chunk sizes and however fast the source is.
import t from 'tap'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FileStore } from '../lib/index.js'
import { randomBytesSeeded, sha256 } from './helpers.js'
import { contractId } from './store-contract.js'

const directory = await mkdtemp(join(tmpdir(), 'fastify-tus-append-'))
const store = new FileStore({ directory })
t.teardown(async () => {
  await store.close()
  await rm(directory, { recursive: true, force: true })
})

/** `data` cut into chunks of the given sizes in turn, yielded without waiting (a source faster than the disk). */
async function * cut (data: Buffer, sizes: number[]): AsyncIterable<Buffer> {
  let position = 0
  for (let index = 0; position < data.length; index++) {
    const size = sizes[index % sizes.length]!
    yield data.subarray(position, position + size)
    position += size
  }
}

t.test('thousands of tiny chunks (more than one writev takes) mixed with large ones, and empty ones', async (t) => {
  const data = randomBytesSeeded(3 * 1024 * 1024 + 7, 11)
  const id = contractId()
  await store.create({ id, size: data.length, metadata: {} })
  const sizes = [...Array.from({ length: 3000 }, () => 1), 0, 256 * 1024, 3, 0, 1024 * 1024 + 5]
  t.equal(await store.write(id, 0, cut(data, sizes)), data.length)
  t.equal((await store.getInfo(id)).offset, data.length)
  t.equal(sha256(await readFile(join(directory, id))), sha256(data))
})

t.test('a fast source of 64 KiB chunks, in two writes: bytes in order, offsets exact', async (t) => {
  const data = randomBytesSeeded(20 * 1024 * 1024 + 123, 12)
  const id = contractId()
  await store.create({ id, size: data.length, metadata: {} })
  const half = 9 * 1024 * 1024 + 1
  t.equal(await store.write(id, 0, cut(data.subarray(0, half), [64 * 1024])), half)
  t.equal(await store.write(id, half, cut(data.subarray(half), [64 * 1024, 17])), data.length)
  t.equal(sha256(await readFile(join(directory, id))), sha256(data))
})

t.test('a source failing after many queued chunks: everything it yielded is stored', async (t) => {
  const data = randomBytesSeeded(2 * 1024 * 1024, 13)
  const id = contractId()
  await store.create({ id, size: data.length + 10, metadata: {} })
  async function * failing (): AsyncIterable<Buffer> {
    yield * cut(data, [4096, 65536, 1])
    throw new Error('client vanished')
  }
  await t.rejects(store.write(id, 0, failing()), { message: 'client vanished' })
  t.equal((await store.getInfo(id)).offset, data.length)
  t.equal(sha256(await readFile(join(directory, id))), sha256(data))
})
