// The behaviour every DataStore must have, run against each store (test/file-store.test.ts, test/s3-store.test.ts).
// Sizes cross S3's 5 MiB part size on purpose, so a multipart store is exercised across part boundaries.
import { randomBytes } from 'node:crypto'
import type { Readable } from 'node:stream'
import type { Test } from 'tap'
import type { DataStore } from '../lib/index.js'
import { randomBytesSeeded, sha256 } from './helpers.js'

const MiB = 1024 * 1024

/** A fresh valid upload id. */
export function contractId (): string {
  return `contract-${randomBytes(8).toString('hex')}`
}

async function * chunksOf (data: Buffer, size = 64 * 1024): AsyncIterable<Buffer> {
  for (let start = 0; start < data.length; start += size) yield data.subarray(start, start + size)
}

async function collect (stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

async function ids (store: DataStore): Promise<string[]> {
  const found: string[] = []
  for await (const id of store.list()) found.push(id)
  return found
}

export function storeContract (t: Test, store: DataStore): void {
  t.test('create and getInfo: length, metadata, offset 0, times; a taken id is refused', async (t) => {
    const id = contractId()
    const before = Date.now()
    const created = await store.create({ id, size: 11, metadata: { filename: 'ä.txt', empty: '' } })
    t.equal(created.offset, 0)
    const info = await store.getInfo(id)
    t.equal(info.id, id)
    t.equal(info.size, 11)
    t.same(info.metadata, { filename: 'ä.txt', empty: '' })
    t.equal(info.offset, 0)
    t.ok(info.createdAt.getTime() >= before - 1000, 'createdAt is now')
    t.ok(info.modifiedAt.getTime() >= info.createdAt.getTime() - 1000, 'modifiedAt is not before creation')
    await t.rejects(store.create({ id, size: 5, metadata: {} }), { code: 'FST_TUS_ID_TAKEN' })
    t.equal((await store.getInfo(id)).size, 11, 'the first upload is untouched')
    await t.rejects(store.getInfo(contractId()), { code: 'FST_TUS_NOT_FOUND' })
  })

  t.test('writes of odd sizes across part boundaries; offsets; whole and ranged reads', async (t) => {
    t.setTimeout(120_000)
    const data = randomBytesSeeded(11 * MiB + 12_345, 7)
    const id = contractId()
    await store.create({ id, size: data.length, metadata: {} })
    // Ends mid-part, crosses a boundary, ends exactly on one, then a tiny write, then the rest.
    const cuts = [1, 3 * MiB + 17, 5 * MiB, 10 * MiB, 10 * MiB + 5, data.length]
    let offset = 0
    for (const cut of cuts) {
      const next = await store.write(id, offset, chunksOf(data.subarray(offset, cut)))
      t.equal(next, cut, `write up to ${cut}`)
      t.equal((await store.getInfo(id)).offset, cut, `getInfo after ${cut}`)
      offset = next
    }
    await store.flush(id)
    const info = await store.getInfo(id)
    t.equal(info.offset, data.length)
    t.equal(sha256(await collect(await store.read(id))), sha256(data), 'whole read')
    for (const range of [{ start: 0, end: 0 }, { start: 5 * MiB - 3, end: 5 * MiB + 2 }, { start: data.length - 10, end: data.length - 1 }]) {
      const bytes = await collect(await store.read(id, range))
      t.equal(sha256(bytes), sha256(data.subarray(range.start, range.end + 1)), `range ${range.start}-${range.end}`)
    }
  })

  t.test('reclaim: each chunk once, after the store is done with its bytes (spoiling it then changes nothing stored)', async (t) => {
    t.setTimeout(120_000)
    const data = randomBytesSeeded(6 * MiB + 777, 11)
    const id = contractId()
    await store.create({ id, size: data.length, metadata: {} })
    // Copies, so that spoiling one cannot touch `data`; odd sizes, so chunks straddle S3 parts.
    const chunks: Buffer[] = []
    for (let start = 0; start < data.length; start += 100_003) chunks.push(Buffer.from(data.subarray(start, start + 100_003)))
    const reclaimed: Buffer[] = []
    const reclaim = (chunk: Buffer): void => {
      reclaimed.push(chunk)
      chunk.fill(0)
    }
    // A first write that stops mid-part, then the rest: the store's later reads must not need a reclaimed chunk.
    const middle = 2 * 100_003
    async function * head (): AsyncIterable<Buffer> { yield * chunks.slice(0, 2) }
    async function * tail (): AsyncIterable<Buffer> { yield * chunks.slice(2) }
    t.equal(await store.write(id, 0, head(), { reclaim }), middle)
    t.equal(await store.write(id, middle, tail(), { reclaim }), data.length)
    await store.flush(id)
    t.equal(reclaimed.length, chunks.length, 'every chunk reclaimed')
    t.ok(reclaimed.every((chunk, index) => chunk === chunks[index]), 'each once, in order, the chunk itself')
    t.equal(sha256(await collect(await store.read(id))), sha256(data), 'the stored bytes are the original ones')
  })

  t.test('an empty write changes nothing', async (t) => {
    const id = contractId()
    await store.create({ id, size: 10, metadata: {} })
    t.equal(await store.write(id, 0, chunksOf(Buffer.from('abc'))), 3)
    t.equal(await store.write(id, 3, chunksOf(Buffer.alloc(0))), 3)
    t.equal((await store.getInfo(id)).offset, 3)
  })

  t.test('a zero-length upload completes and reads back empty', async (t) => {
    const id = contractId()
    await store.create({ id, size: 0, metadata: {} })
    await store.flush(id)
    const info = await store.getInfo(id)
    t.equal(info.offset, 0)
    t.equal(info.size, 0)
    t.equal((await collect(await store.read(id))).length, 0)
  })

  t.test('deferred length: declared once, bytes before and after it kept', async (t) => {
    const data = randomBytesSeeded(6 * MiB + 3, 9)
    const id = contractId()
    await store.create({ id, size: undefined, metadata: { a: 'b' } })
    t.equal((await store.getInfo(id)).size, undefined)
    const half = await store.write(id, 0, chunksOf(data.subarray(0, 1000)))
    await store.declareLength(id, data.length)
    const info = await store.getInfo(id)
    t.equal(info.size, data.length)
    t.equal(info.offset, 1000)
    t.same(info.metadata, { a: 'b' })
    t.equal(await store.write(id, half, chunksOf(data.subarray(half))), data.length)
    await store.flush(id)
    t.equal(sha256(await collect(await store.read(id))), sha256(data))
  })

  t.test('a source that fails mid-way: the bytes that arrived stay, and the upload continues from there', async (t) => {
    const data = randomBytesSeeded(2000, 3)
    const id = contractId()
    await store.create({ id, size: data.length, metadata: {} })
    async function * failing (): AsyncIterable<Buffer> {
      yield data.subarray(0, 700)
      throw new Error('client vanished')
    }
    await t.rejects(store.write(id, 0, failing()), { message: 'client vanished' })
    t.equal((await store.getInfo(id)).offset, 700)
    t.equal(await store.write(id, 700, chunksOf(data.subarray(700))), data.length)
    await store.flush(id)
    t.equal(sha256(await collect(await store.read(id))), sha256(data))
  })

  const truncate = store.truncate?.bind(store)
  if (truncate !== undefined) {
    t.test('truncate: cuts back to an offset, under one hold and the next; never once the lock is lost', async (t) => {
      const data = randomBytesSeeded(3 * 1000 + 17, 9)
      const id = contractId()
      await store.create({ id, size: data.length, metadata: {} })
      const hold = { hold: {}, soleWriter: true }
      t.equal(await store.write(id, 0, chunksOf(data.subarray(0, 2000), 300), hold), 2000)
      await truncate(id, 1000, hold)
      t.equal((await store.getInfo(id, hold)).offset, 1000, 'the offset under the same hold')
      t.equal((await store.getInfo(id)).offset, 1000, 'and as read again')
      t.equal(await store.write(id, 1000, chunksOf(data.subarray(1000)), hold), data.length, 'the next write goes on from the cut')
      await store.flush(id, hold)
      t.equal(sha256(await collect(await store.read(id))), sha256(data), 'no byte of the cut part is left')

      const lost = new AbortController()
      lost.abort(new Error('lock lost'))
      await t.rejects(truncate(id, 0, { signal: lost.signal }), { message: 'lock lost' })
      t.equal(sha256(await collect(await store.read(id))), sha256(data), 'nothing cut once the lock is lost')
    })
  }

  t.test('a sub-directory and a concat record are kept', async (t) => {
    const id = contractId()
    await store.create({ id, size: 3, metadata: {}, directory: 'team-a/2024', concat: { type: 'partial' } })
    await store.write(id, 0, chunksOf(Buffer.from('xyz')))
    await store.flush(id)
    const info = await store.getInfo(id)
    t.equal(info.directory, 'team-a/2024')
    t.same(info.concat, { type: 'partial' })
    t.equal((await collect(await store.read(id))).toString(), 'xyz')
  })

  t.test('list has every upload; terminate removes one at once, data and all; terminating a gone upload is fine', async (t) => {
    const kept = contractId()
    const removed = contractId()
    await store.create({ id: kept, size: 5, metadata: {} })
    await store.create({ id: removed, size: 5, metadata: {} })
    await store.write(removed, 0, chunksOf(Buffer.from('ab')))
    const listed = await ids(store)
    t.ok(listed.includes(kept) && listed.includes(removed), 'both listed')
    await store.terminate(removed)
    await t.rejects(store.getInfo(removed), { code: 'FST_TUS_NOT_FOUND' })
    t.ok(!(await ids(store)).includes(removed), 'no longer listed')
    t.ok((await ids(store)).includes(kept), 'the other stays')
    await store.terminate(removed)
    await store.create({ id: removed, size: 1, metadata: {} })
    t.equal((await store.getInfo(removed)).offset, 0, 'the id can be used again, with nothing left over')
  })

  t.test('invalid ids are never turned into keys or paths', async (t) => {
    for (const id of ['../etc', 'a/b', '', '.json']) {
      await t.rejects(store.getInfo(id), { code: 'FST_TUS_NOT_FOUND' }, JSON.stringify(id))
    }
  })
}
