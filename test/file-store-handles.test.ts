// FileStore keeps an upload's data file open from its creation to its first write, and between writes in
// sequence, so that a small upload costs fewer file-system calls. The handle must never outlive its use
// (termination, completion, close, idleness) nor be written through once the path names another file.
import t from 'tap'
import fs from 'node:fs'
import { appendFile, mkdir, mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FileStore } from '../lib/index.js'
import { OpenFiles } from '../lib/store/open-files.js'
import { DataFile } from '../lib/fs-calls.js'
import { contractId } from './store-contract.js'

const directory = await mkdtemp(join(tmpdir(), 'fastify-tus-handles-'))
t.teardown(async () => { await rm(directory, { recursive: true, force: true }) })

/** How many file descriptors of this process are open on `path` (Linux: /proc/self/fd). */
async function openOn (path: string): Promise<number> {
  let count = 0
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '')
    if (target === path) count++
  }
  return count
}

async function * bytes (text: string): AsyncIterable<Buffer> {
  yield Buffer.from(text)
}

t.test('kept open from creation across unfinished writes; closed at completion, on terminate and on close', { skip: process.platform !== 'linux' && 'needs /proc/self/fd' }, async (t) => {
  const dir = join(directory, 'lifecycle')
  const store = new FileStore({ directory: dir })
  const id = contractId()
  const path = join(dir, id)
  await store.create({ id, size: 6, metadata: {} })
  t.equal(await openOn(path), 1, 'open after creation, for the first write')
  await store.getInfo(id)
  t.equal(await store.write(id, 0, bytes('abc')), 3)
  t.equal(await openOn(path), 1, 'still open after a write that did not finish the upload')
  await store.getInfo(id)
  t.equal(await store.write(id, 3, bytes('def')), 6)
  t.equal(await openOn(path), 0, 'closed once the upload is complete')
  t.equal(await readFile(path, 'utf8'), 'abcdef')

  const terminated = contractId()
  await store.create({ id: terminated, size: 6, metadata: {} })
  t.equal(await openOn(join(dir, terminated)), 1)
  await store.terminate(terminated)
  // The close is started by terminate; it has run by the time another thread-pool round trip has.
  await readdir(dir)
  t.equal(await openOn(join(dir, terminated)), 0, 'closed on terminate')

  const empty = contractId()
  await store.create({ id: empty, size: 0, metadata: {} })
  t.equal(await openOn(join(dir, empty)), 0, 'an empty upload (complete at creation) keeps nothing open')

  const unfinished = contractId()
  await store.create({ id: unfinished, size: 6, metadata: {} })
  t.equal(await openOn(join(dir, unfinished)), 1)
  await store.close()
  t.equal(await openOn(join(dir, unfinished)), 0, 'closed on close')
})

t.test('without the cache nothing is kept open', { skip: process.platform !== 'linux' && 'needs /proc/self/fd' }, async (t) => {
  const dir = join(directory, 'nocache')
  const store = new FileStore({ directory: dir, cacheSize: 0 })
  t.teardown(async () => { await store.close() })
  const id = contractId()
  await store.create({ id, size: 6, metadata: {} })
  await readdir(dir)
  t.equal(await openOn(join(dir, id)), 0)
  await store.getInfo(id)
  t.equal(await store.write(id, 0, bytes('abc')), 3)
  t.equal(await openOn(join(dir, id)), 0)
  t.equal(await readFile(join(dir, id), 'utf8'), 'abc')
})

t.test('a kept handle is not written through once another store removed and re-created the upload', async (t) => {
  const dir = join(directory, 'shared')
  const mine = new FileStore({ directory: dir })
  const theirs = new FileStore({ directory: dir })
  t.teardown(async () => { await Promise.all([mine.close(), theirs.close()]) })
  const id = contractId()
  await mine.create({ id, size: 6, metadata: {} })
  await mine.getInfo(id)
  t.equal(await mine.write(id, 0, bytes('old')), 3, 'the handle is kept open after this write')
  await theirs.terminate(id)
  await theirs.create({ id, size: 6, metadata: {} })
  const info = await mine.getInfo(id)
  t.equal(info.offset, 0, 'the re-created upload is seen')
  t.equal(await mine.write(id, 0, bytes('new')), 3)
  t.equal(await readFile(join(dir, id), 'utf8'), 'new', 'the bytes went into the file at the path, not the removed one')
})

t.test('OpenFiles: at most max kept (least recently kept closed first), closed when idle, a handle on another file closed', async (t) => {
  const dir = join(directory, 'unit')
  await mkdir(dir)
  const closed: string[] = []
  const handles = new Map<string, DataFile>()
  for (const name of ['a', 'b', 'c', 'd']) {
    const handle = await DataFile.open(join(dir, name), 'a')
    const close = handle.close.bind(handle)
    handle.close = async () => { closed.push(name); await close() }
    handles.set(name, handle)
  }
  const files = new OpenFiles(2, 20)
  const identity = { ino: 1, birthtimeMs: 2 }
  files.keep('a', handles.get('a')!, identity, 0, new Date())
  files.keep('b', handles.get('b')!, identity, 0, new Date())
  files.keep('c', handles.get('c')!, identity, 0, new Date())
  t.same(closed, ['a'], 'the oldest is closed beyond max')
  t.equal(files.take('b', { ino: 1, birthtimeMs: 3 }), undefined, 'not lent for another file')
  t.same(closed, ['a', 'b'], 'and closed')
  t.equal(files.take('c', identity), handles.get('c'), 'lent for the same file')
  t.equal(files.size, 0)
  files.keep('d', handles.get('d')!, identity, 0, new Date())
  while (files.size > 0) await new Promise((resolve) => setTimeout(resolve, 10))
  t.same(closed, ['a', 'b', 'd'], 'closed after the idle time')
  await handles.get('c')!.close()
})

t.test('OpenFiles: a failed background flush of a handle closed unused is told to the next take of its upload, once; not after forget', async (t) => {
  const dir = join(directory, 'unit-flush')
  await mkdir(dir)
  const { fdatasync } = fs
  fs.fdatasync = ((_fd: number, callback: (error: NodeJS.ErrnoException | null) => void) => {
    setImmediate(() => { callback(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' })) })
  }) as typeof fs.fdatasync
  t.teardown(() => { fs.fdatasync = fdatasync })
  const files = new OpenFiles(2, 60_000)
  const identity = { ino: 1, birthtimeMs: 2 }
  for (const name of ['dropped', 'removed']) {
    const handle = await DataFile.open(join(dir, name), 'a')
    handle.flushInBackground()
    files.keep(name, handle, identity, 0, new Date())
  }
  files.drop('dropped')
  files.forget('removed')
  await files.closeAll()
  t.throws(() => files.take('dropped', identity), { code: 'EIO' }, 'the next writer hears of it')
  t.equal(files.take('dropped', identity), undefined, 'once')
  t.equal(files.take('removed', identity), undefined, 'a removed upload\'s failure is no one\'s')
})

t.test('a write still running when the store closes does not keep its handle', { skip: process.platform !== 'linux' && 'needs /proc/self/fd' }, async (t) => {
  const dir = join(directory, 'closing')
  const store = new FileStore({ directory: dir })
  const id = contractId()
  const path = join(dir, id)
  await store.create({ id, size: 10, metadata: {} })
  await store.getInfo(id)
  let release: () => void = () => {}
  const gate = new Promise<void>((resolve) => { release = resolve })
  async function * slow (): AsyncIterable<Buffer> {
    yield Buffer.from('abc')
    await gate
  }
  const writing = store.write(id, 0, slow())
  await new Promise((resolve) => setImmediate(resolve))
  const closing = store.close()
  release()
  await Promise.allSettled([writing, closing])
  await readdir(dir)
  t.equal(await openOn(path), 0, 'nothing left open')
})

/** Counts node's callback `fs.stat` calls (what FileStore stats data files with) during `work`. */
/** The stats of files made while `work` runs, through the thread pool or synchronously (a known data file's). */
async function countStats (work: () => Promise<void>): Promise<number> {
  const module = fs as unknown as Record<'stat' | 'statSync', (...args: unknown[]) => unknown>
  const originals = { stat: module.stat, statSync: module.statSync }
  let count = 0
  for (const name of ['stat', 'statSync'] as const) {
    module[name] = (...args: unknown[]) => {
      count++
      return originals[name].apply(fs, args)
    }
  }
  try {
    await work()
  } finally {
    Object.assign(module, originals)
  }
  return count
}

t.test('the sole writer (an in-process lock) trusts its own writes: no stat from creation to completion', { skip: process.platform !== 'linux' && 'needs /proc/self/fd' }, async (t) => {
  const dir = join(directory, 'sole')
  const store = new FileStore({ directory: dir })
  // Another process's store, reading the same directory.
  const other = new FileStore({ directory: dir, cacheSize: 0 })
  t.teardown(async () => { await Promise.all([store.close(), other.close()]) })
  const sole = { soleWriter: true }
  const id = contractId()
  const path = join(dir, id)
  const stats = await countStats(async () => {
    t.equal((await store.create({ id, size: 6, metadata: {} }, sole)).offset, 0)
    t.equal((await store.getInfo(id, sole)).offset, 0, 'offset 0 from the creation')
    t.equal(await store.write(id, 0, bytes('abc')), 3)
    t.equal((await store.getInfo(id, sole)).offset, 3, 'offset from its own write')
  })
  t.equal(stats, 0, 'no stat of the data file')
  t.equal(await openOn(path), 1, 'one descriptor, kept from the creation')
  t.equal((await other.getInfo(id)).offset, 3, 'the bytes are on disk')

  // Without the guarantee (a request that does not hold an in-process lock, e.g. a HEAD), the file is asked.
  t.equal(await countStats(async () => { t.equal((await store.getInfo(id)).offset, 3) }), 1, 'a stat otherwise')
  t.equal(await store.write(id, 3, bytes('def')), 6)
  t.equal(await openOn(path), 0, 'closed at completion, the same handle throughout')
  t.equal(await readFile(path, 'utf8'), 'abcdef')

  // Its identity learnt from that stat: a file re-created at the path is seen as another one.
  const again = contractId()
  await store.create({ id: again, size: 6, metadata: {} }, sole)
  t.equal((await store.getInfo(again)).offset, 0, 'identity learnt from the first stat')
  await store.write(again, 0, bytes('ab'))
  await rm(join(dir, again))
  await appendFile(join(dir, again), 'xyz')
  t.equal((await store.getInfo(again)).offset, 3, 'a data file replaced behind its back is seen when not the sole writer')

  // A stat showing another size than the store's own last write left (a read racing a write, or a writer
  // behind its back): what it knew is dropped, and the next sole-writer load asks the file.
  const raced = contractId()
  await store.create({ id: raced, size: 9, metadata: {} }, sole)
  t.equal(await store.write(raced, 0, bytes('ab')), 2)
  await appendFile(join(dir, raced), 'c')
  t.equal((await store.getInfo(raced)).offset, 3, 'the stat shows 3')
  t.equal(await countStats(async () => { t.equal((await store.getInfo(raced, sole)).offset, 3, 'and so does the next load') }), 1, 'which asked the file')
  // The same size, another time (set by hand): the file's time wins.
  await store.write(raced, 3, bytes('d'))
  const past = new Date(Date.now() - 3 * 24 * 3600 * 1000)
  fs.utimesSync(join(dir, raced), past, past)
  t.equal((await store.getInfo(raced)).modifiedAt.getTime(), past.getTime())
  t.equal(await countStats(async () => { t.equal((await store.getInfo(raced, sole)).modifiedAt.getTime(), past.getTime(), 'the time a stat saw') }), 0)
})

t.test('not the sole writer (a cross-process lock): every getInfo asks the file, and sees other processes\' writes', async (t) => {
  const dir = join(directory, 'shared')
  const store = new FileStore({ directory: dir })
  t.teardown(async () => { await store.close() })
  const id = contractId()
  await store.create({ id, size: 10, metadata: {} })
  await store.getInfo(id)
  t.equal(await store.write(id, 0, bytes('abc')), 3)
  // Another process appends under the cross-process lock.
  await appendFile(join(dir, id), 'de')
  t.equal(await countStats(async () => { t.equal((await store.getInfo(id)).offset, 5, 'its bytes are seen') }), 1)
  t.equal(await store.write(id, 5, bytes('fg')), 7)
  t.equal(await readFile(join(dir, id), 'utf8'), 'abcdefg')
})

t.test('close() during a write: no further batch is written, the write fails, nothing is left open', { skip: process.platform !== 'linux' && 'needs /proc/self/fd' }, async (t) => {
  // The write queue writes through the data file's descriptor with callback fs.writev: close() must stop the writer
  // and wait for its write in flight before it closes the descriptor.
  const dir = join(directory, 'close-during-write')
  const store = new FileStore({ directory: dir })
  const id = contractId()
  const path = join(dir, id)
  await store.create({ id, size: 64 * 1024 * 1024, metadata: {} })
  await store.getInfo(id)
  const chunk = Buffer.alloc(64 * 1024, 7)
  let sent = 0
  let closing: Promise<void> | undefined
  async function * endless (): AsyncIterable<Buffer> {
    for (;;) {
      yield chunk
      sent += chunk.length
      if (sent === 1024 * 1024) closing = store.close()
    }
  }
  await t.rejects(store.write(id, 0, endless()), { message: 'the store was closed' })
  await closing
  const stored = await readFile(path)
  t.ok(stored.length >= 1024 * 1024 - 2 * 64 * 1024 && stored.length <= sent + chunk.length, `a prefix of the body is stored (${stored.length} of ${sent} bytes sent)`)
  t.ok(stored.every((byte) => byte === 7), 'every stored byte is the body\'s')
  t.equal(await openOn(path), 0, 'nothing left open')
})
