// FileStore.write batches the chunks that arrive while a write is in progress (writev); every byte must
// land once, in order, whatever the chunk sizes and however fast the source is.
import t, { type Test } from 'tap'
import fs, { readlinkSync } from 'node:fs'
import { mkdtemp, open, readFile, rm } from 'node:fs/promises'
import { basename } from 'node:path'
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
 * file descriptors (spies on node's own class and module; the calls still run), and names the file each fsync
 * was for (`synced`, base names in call order).
 */
async function countSyncs<T> (work: () => Promise<T>): Promise<{ result: T, sync: number, datasync: number, synced: string[] }> {
  const probe = await open(join(directory, 'probe'), 'w')
  const prototype = Object.getPrototypeOf(probe) as { sync: () => Promise<void>, datasync: () => Promise<void> }
  await probe.close()
  const { sync, datasync } = prototype
  const { fsync, fdatasync } = fs
  const counts = { sync: 0, datasync: 0, synced: [] as string[] }
  const named = (fd: number): void => { counts.sync++; counts.synced.push(basename(readlinkSync(`/proc/self/fd/${fd}`))) }
  prototype.sync = async function (this: { fd: number }) {
    named(this.fd)
    await sync.call(this)
  }
  prototype.datasync = async function (this: unknown) { counts.datasync++; await datasync.call(this) }
  fs.fsync = ((fd: number, callback: (error: NodeJS.ErrnoException | null) => void) => { named(fd); fsync(fd, callback) }) as typeof fs.fsync
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

t.test('a lock lost while chunks wait for the disk: none of them is written (a frozen holder that wakes up), the write rejects with its reason', async (t) => {
  const data = randomBytesSeeded(512 * 1024, 14)
  const id = contractId()
  await store.create({ id, size: data.length, metadata: {} })
  const lost = new AbortController()
  const reason = new Error('the lock was lost')
  async function * losing (): AsyncIterable<Buffer> {
    // The first chunk goes to the disk at once; the next queues behind it, then the lease runs out.
    yield data.subarray(0, 1000)
    yield data.subarray(1000, 5096)
    lost.abort(reason)
    yield * cut(data.subarray(5096), [4096])
  }
  await t.rejects(store.write(id, 0, losing(), { signal: lost.signal }), reason)
  t.equal((await readFile(join(directory, id))).length, 1000, 'only the write in flight when the lock was lost')
})

t.test('a write at an offset goes there, whatever the file holds beyond it (no append mode: a stale write never lands after newer bytes)', async (t) => {
  const data = randomBytesSeeded(300_000, 15)
  const id = contractId()
  await store.create({ id, size: data.length, metadata: {} })
  t.equal(await store.write(id, 0, cut(data.subarray(0, 200_000), [65536])), 200_000)
  t.equal(await store.write(id, 100_000, cut(data.subarray(100_000), [65536])), data.length)
  t.equal(sha256(await readFile(join(directory, id))), sha256(data), 'the second write rewrote 100,000 to 200,000 with the same bytes and went on')
})

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

t.test('fsync: an upload sent as 1 MiB writes is flushed while it arrives, as one sent whole is (the descriptor kept between them counts its bytes)', async (t) => {
  const dir = join(directory, 'small-writes-fsync')
  const own = new FileStore({ directory: dir })
  t.teardown(async () => { await own.close() })
  const chunk = 1024 * 1024
  const data = randomBytesSeeded(40 * chunk + 3, 16)
  const id = contractId()
  const { result, datasync, synced } = await countSyncs(async () => {
    await own.create({ id, size: data.length, metadata: {} })
    let offset = 0
    while (offset < data.length) offset = await own.write(id, offset, cut(data.subarray(offset, offset + chunk), [64 * 1024]))
    await own.flush(id)
    return offset
  })
  t.equal(result, data.length)
  t.equal(sha256(await readFile(join(dir, id))), sha256(data), 'bytes intact')
  // One at least: a flush still running when the next 16 MiB are in is not doubled (a loaded disk may take that long).
  t.ok(datasync >= 1, `40 MiB in 1 MiB writes flushed while they arrived (${datasync} fdatasync; none before: each write alone is below the 16 MiB step)`)
  t.same(synced, [`${id}.json`, id], 'the info file at creation, the data file at its last byte')
})

/**
 * A store with an upload of 17 MiB whose first 16 were written in 1 MiB writes while fdatasync failed with EIO (on
 * its next turn, as a disk would): the 16th began a flush in the background, answered without waiting for it, and
 * that flush failed. fdatasync works again after `heal`, or when the test ends.
 */
async function afterFailedFlush (t: Test, name: string, seed: number): Promise<{ own: FileStore, dir: string, id: string, data: Buffer, offset: number, heal: () => void }> {
  const dir = join(directory, name)
  const own = new FileStore({ directory: dir })
  t.teardown(async () => { await own.close() })
  const chunk = 1024 * 1024
  const data = randomBytesSeeded(17 * chunk, seed)
  const id = contractId()
  await own.create({ id, size: data.length, metadata: {} })
  const { fdatasync } = fs
  let flushes = 0
  fs.fdatasync = ((_fd: number, callback: (error: NodeJS.ErrnoException | null) => void) => {
    flushes++
    setImmediate(() => { callback(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' })) })
  }) as typeof fs.fdatasync
  const heal = (): void => { fs.fdatasync = fdatasync }
  t.teardown(heal)
  let offset = 0
  for (let index = 0; index < 16; index++) offset = await own.write(id, offset, cut(data.subarray(offset, offset + chunk), [64 * 1024]))
  t.equal(flushes, 1, 'the 16th MiB began a flush in the background; its write was answered without waiting for it')
  return { own, dir, id, data, offset, heal }
}

t.test('fsync: a background flush that fails fails the write after it, and the completing one: no completion over data the disk may have lost', async (t) => {
  const { own, dir, id, data, offset, heal } = await afterFailedFlush(t, 'failed-flush', 17)
  await t.rejects(own.write(id, offset, cut(data.subarray(offset), [64 * 1024])), { code: 'EIO' }, 'the completing write fails as the flush did')
  heal()
  // What arrived before the failure was known is kept: all of it, when the completion's fsync was the first to see it.
  const stored = (await own.getInfo(id)).offset
  t.equal(sha256(await readFile(join(dir, id))), sha256(data.subarray(0, stored)), `the ${stored} bytes kept are the upload's`)
})

t.test('fsync: a background flush that failed on a data file closed unused (evicted, idle) fails the next write of its upload, once', async (t) => {
  const { own, dir, id, data, offset, heal } = await afterFailedFlush(t, 'failed-flush-closed', 18)
  heal()
  // Uploads created after it push its kept descriptor out (the store keeps 128), as idleness would after 5 s.
  for (let index = 0; index < 130; index++) await own.create({ id: contractId(), size: 1, metadata: {} })
  await own.getInfo(id)
  await t.rejects(own.write(id, offset, cut(data.subarray(offset), [64 * 1024])), { code: 'EIO' }, 'the completing write fails as the flush did, on a descriptor opened after it')
  t.equal((await own.getInfo(id)).offset, offset, 'nothing written by the refused write')
  t.equal(await own.write(id, offset, cut(data.subarray(offset), [64 * 1024])), data.length, 'told once: the client\'s retry is stored')
  t.equal(sha256(await readFile(join(dir, id))), sha256(data))
})

t.test('fsync: a background flush still running when the length comes last fails the completion if it fails then', async (t) => {
  const dir = join(directory, 'failed-flush-deferred')
  const own = new FileStore({ directory: dir })
  t.teardown(async () => { await own.close() })
  const chunk = 1024 * 1024
  const data = randomBytesSeeded(17 * chunk, 19)
  const id = contractId()
  await own.create({ id, size: undefined, metadata: {} })
  const { fdatasync } = fs
  t.teardown(() => { fs.fdatasync = fdatasync })
  // The disk answers the background flush only when told to, and then with EIO.
  let fail: () => void = () => {}
  fs.fdatasync = ((_fd: number, callback: (error: NodeJS.ErrnoException | null) => void) => {
    fail = () => { callback(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' })) }
  }) as typeof fs.fdatasync
  let offset = 0
  for (let index = 0; index < 17; index++) offset = await own.write(id, offset, cut(data.subarray(offset, offset + chunk), [64 * 1024]))
  fs.fdatasync = fdatasync
  // What the core does for an append that declares the length: recorded once the body stands (the kept descriptor is
  // closed, once its flush ends), then the upload completed.
  await own.declareLength(id, data.length)
  const completing = own.flush(id)
  fail()
  await t.rejects(completing, { code: 'EIO' }, 'the completion fails as the flush did')
})

t.test('deferred length: flush fsyncs the data written before the length was known', async (t) => {
  const dir = join(directory, 'deferred-fsync')
  const own = new FileStore({ directory: dir })
  t.teardown(async () => { await own.close() })
  const data = randomBytesSeeded(300 * 1024 + 9, 15)
  const id = contractId()
  await own.create({ id, size: undefined, metadata: {} })
  const { result, sync, synced } = await countSyncs(async () => {
    // The length is unknown while the bytes arrive: write cannot know it stored the last one.
    const offset = await own.write(id, 0, cut(data, [64 * 1024]))
    await own.declareLength(id, offset)
    await own.flush(id)
    return offset
  })
  t.equal(result, data.length)
  t.equal(sync, 2, 'the new info file, then the data file at flush')
  t.match(synced[0], new RegExp(`^${id}\\.json\\.[0-9a-f]+-\\d+\\.tmp$`), 'the info file, before it replaces the old one')
  t.equal(synced[1], id, 'the data file, by flush')
  t.equal(sha256(await readFile(join(dir, id))), sha256(data))
  t.equal((await own.getInfo(id)).size, data.length)

  // Completed by a write that knew the length: that write fsynced, so flush has nothing left to do.
  const known = contractId()
  await own.create({ id: known, size: undefined, metadata: {} })
  await own.write(known, 0, cut(data.subarray(0, 1000), [100]))
  await own.declareLength(known, data.length)
  const second = await countSyncs(async () => {
    await own.write(known, 1000, cut(data.subarray(1000), [64 * 1024]))
    await own.flush(known)
  })
  t.same(second.synced, [known], 'one fsync of the data, by the write that stored the last byte')
  t.equal(sha256(await readFile(join(dir, known))), sha256(data))
})
