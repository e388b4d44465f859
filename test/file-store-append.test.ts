// FileStore.write batches the chunks that arrive while a write is in progress (writev); every byte must
// land once, in order, whatever the chunk sizes and however fast the source is.
import t from 'tap'
import fs from 'node:fs'
import { mkdtemp, open, readFile, rm } from 'node:fs/promises'
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

/**
 * Counts fsync and fdatasync calls on every FileHandle and through `fs.fsync` / `fs.fdatasync` with plain
 * file descriptors (spies on node's own class and module; the calls still run).
 */
async function countSyncs<T> (work: () => Promise<T>): Promise<{ result: T, sync: number, datasync: number }> {
  const probe = await open(join(directory, 'probe'), 'w')
  const prototype = Object.getPrototypeOf(probe) as { sync: () => Promise<void>, datasync: () => Promise<void> }
  await probe.close()
  const { sync, datasync } = prototype
  const { fsync, fdatasync } = fs
  const counts = { sync: 0, datasync: 0 }
  prototype.sync = async function (this: unknown) { counts.sync++; await sync.call(this) }
  prototype.datasync = async function (this: unknown) { counts.datasync++; await datasync.call(this) }
  fs.fsync = ((fd: number, callback: (error: NodeJS.ErrnoException | null) => void) => { counts.sync++; fsync(fd, callback) }) as typeof fs.fsync
  fs.fdatasync = ((fd: number, callback: (error: NodeJS.ErrnoException | null) => void) => { counts.datasync++; fdatasync(fd, callback) }) as typeof fs.fdatasync
  try {
    return { result: await work(), ...counts }
  } finally {
    prototype.sync = sync
    prototype.datasync = datasync
    fs.fsync = fsync
    fs.fdatasync = fdatasync
  }
}

t.test('fsync (the default): the info file at creation, the data while it arrives and at completion; fsync: false never', async (t) => {
  const data = randomBytesSeeded(40 * 1024 * 1024 + 5, 14)
  for (const fsync of [true, false]) {
    const dir = join(directory, `fsync-${String(fsync)}`)
    const own = new FileStore({ directory: dir, fsync })
    t.teardown(async () => { await own.close() })
    const id = contractId()
    const { result, sync, datasync } = await countSyncs(async () => {
      await own.create({ id, size: data.length, metadata: {} })
      const offset = await own.write(id, 0, cut(data, [64 * 1024]))
      await own.flush(id)
      return offset
    })
    t.equal(result, data.length)
    t.equal(sha256(await readFile(join(dir, id))), sha256(data), `fsync: ${String(fsync)}: bytes intact`)
    if (fsync) {
      t.equal(sync, 2, 'info file at creation, data at its last byte (flush then has nothing to do)')
      t.ok(datasync >= 1, `a 40 MiB write flushed while it arrived (${datasync} fdatasync)`)
    } else {
      t.same({ sync, datasync }, { sync: 0, datasync: 0 }, 'fsync: false')
    }
  }
  t.throws(() => new FileStore({ directory, fsync: 'yes' as unknown as boolean }), { message: 'fsync must be a boolean' })
})
