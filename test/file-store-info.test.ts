// FileStore's info files (`<id>.json`) are created exclusively in place and replaced atomically: a reader,
// another process or a crash at any moment sees no upload yet, the old info or the new one, never a
// half-written info; a failed write leaves nothing behind.
import t from 'tap'
import fs, { readlinkSync } from 'node:fs'
import { mkdtemp, open, readFile, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { FileStore } from '../lib/index.js'
import { contractId } from './store-contract.js'

const directory = await mkdtemp(join(tmpdir(), 'fastify-tus-info-'))
t.teardown(async () => { await rm(directory, { recursive: true, force: true }) })

type Callback = (error: NodeJS.ErrnoException | null, ...results: unknown[]) => void

/**
 * Replaces node's callback `fs.write` or `fs.fsync` (what FileStore writes info files with) for the duration of
 * `work`: `around` runs before each call, with the path of the call's file descriptor, and resolves to an error
 * to fail the call with, or undefined to make it.
 */
async function onFs<T> (
  method: 'write' | 'fsync',
  around: (path: string) => Promise<NodeJS.ErrnoException | undefined>,
  work: () => Promise<T>
): Promise<T> {
  const module = fs as unknown as Record<string, (fd: number, ...args: unknown[]) => void>
  const original = module[method]!
  module[method] = function (fd: number, ...args: unknown[]) {
    const callback = args.at(-1) as Callback
    around(readlinkSync(`/proc/self/fd/${fd}`)).then((error) => {
      if (error === undefined) original.call(fs, fd, ...args)
      else callback(error)
    }, callback)
  }
  try {
    return await work()
  } finally {
    module[method] = original
  }
}

async function leftovers (dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name.endsWith('.tmp'))
}

t.test('declareLength: a reader while the new info is being written sees the complete old info', async (t) => {
  const dir = join(directory, 'atomic')
  const writer = new FileStore({ directory: dir })
  // Another process's store: no cache, so every getInfo reads the info file.
  const reader = new FileStore({ directory: dir, cacheSize: 0 })
  t.teardown(async () => { await Promise.all([writer.close(), reader.close()]) })
  const id = contractId()
  await writer.create({ id, size: undefined, metadata: { name: 'x' } })
  const infoPath = join(dir, `${id}.json`)
  const before = await stat(infoPath)
  const old = await open(infoPath, 'r')
  t.teardown(async () => { await old.close() })

  const seen: Array<{ path: string, size: number | undefined }> = []
  await onFs('write', async (path) => {
    if (path.startsWith(infoPath)) {
      // The moment a crash or a concurrent request would hit: the new info is about to be written.
      const info = await reader.getInfo(id)
      seen.push({ path, size: info.size })
      JSON.parse(await readFile(infoPath, 'utf8'))
    }
    return undefined
  }, async () => { await writer.declareLength(id, 7) })

  t.equal(seen.length, 1, 'one info file written')
  t.not(seen[0]!.path, infoPath, 'written beside the info file, not over it')
  t.equal(seen[0]!.size, undefined, 'meanwhile the old info is read, whole')
  t.equal((await reader.getInfo(id)).size, 7, 'then the new one')
  const after = await stat(infoPath)
  t.not(after.ino, before.ino, 'the info file was replaced (rename), not rewritten')
  t.same(JSON.parse(await old.readFile('utf8')).size, null, 'the replaced file still holds the old info, whole')
  t.same(await leftovers(dir), [])
})

t.test('a failed info write leaves no temporary file and the old info in place', async (t) => {
  const dir = join(directory, 'failures')
  const store = new FileStore({ directory: dir })
  t.teardown(async () => { await store.close() })
  // Info files only: temporary ones (declareLength) and `<id>.json` (a creation writes it in place).
  const fail = async (path: string): Promise<NodeJS.ErrnoException | undefined> =>
    path.endsWith('.tmp') || path.endsWith('.json') ? Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' }) : undefined

  for (const method of ['write', 'fsync'] as const) {
    const id = contractId()
    await store.create({ id, size: undefined, metadata: {} })
    await t.rejects(onFs(method, fail, async () => { await store.declareLength(id, 5) }), { code: 'EIO' }, `declareLength, ${method} failing`)
    t.same(await leftovers(dir), [], `declareLength, ${method} failing: no temporary file left`)
    t.equal((await store.getInfo(id)).size, undefined, 'the old info stays')

    const created = contractId()
    await t.rejects(onFs(method, fail, async () => { await store.create({ id: created, size: 5, metadata: {} }) }), { code: 'EIO' }, `create, ${method} failing`)
    t.same(await leftovers(dir), [], `create, ${method} failing: no temporary file left`)
    t.notOk((await readdir(dir)).some((name) => name.startsWith(created)), 'nor a data file of the upload that failed')
    await t.rejects(store.getInfo(created), { code: 'FST_TUS_NOT_FOUND' })
  }
})

t.test('create: a reader while the info is being written finds no upload, never a half-written info', async (t) => {
  const dir = join(directory, 'creating')
  const writer = new FileStore({ directory: dir })
  // Another process's store: no cache, so every getInfo reads the info file.
  const reader = new FileStore({ directory: dir, cacheSize: 0 })
  t.teardown(async () => { await Promise.all([writer.close(), reader.close()]) })
  const id = contractId()
  const infoPath = join(dir, `${id}.json`)
  const seen: string[] = []
  await onFs('write', async (path) => {
    if (path === infoPath) {
      // The info file exists, empty: the moment a concurrent HEAD (or a crash) would hit.
      seen.push(await readFile(infoPath, 'utf8'))
      await t.rejects(reader.getInfo(id), { code: 'FST_TUS_NOT_FOUND' }, 'the upload is not there yet')
    }
    return undefined
  }, async () => { await writer.create({ id, size: 9, metadata: { name: 'x' } }) })
  t.same(seen, [''], 'written in place, exclusively, in one write')
  t.equal((await reader.getInfo(id)).size, 9, 'then whole')
  await t.rejects(writer.create({ id, size: 1, metadata: {} }), { code: 'FST_TUS_ID_TAKEN' }, 'never created over')
  t.same(JSON.parse(await readFile(infoPath, 'utf8')).size, 9, 'the first info stays')
})

t.test('an info file cut short by a crash during its creation is no upload (and its id stays taken)', async (t) => {
  const dir = join(directory, 'cut')
  const store = new FileStore({ directory: dir, cacheSize: 0 })
  t.teardown(async () => { await store.close() })
  const id = contractId()
  await store.create({ id, size: 9, metadata: { name: 'x' } })
  const infoPath = join(dir, `${id}.json`)
  const whole = await readFile(infoPath, 'utf8')
  for (const cut of [0, 1, whole.length - 1]) {
    fs.writeFileSync(infoPath, whole.slice(0, cut))
    await t.rejects(store.getInfo(id), { code: 'FST_TUS_NOT_FOUND' }, `${cut} of ${whole.length} characters: not found`)
  }
  await t.rejects(store.create({ id, size: 1, metadata: {} }), { code: 'FST_TUS_ID_TAKEN' })
})

t.test('an info file edited by hand or overwritten by another tool is a storage error naming what is wrong, never an upload', async (t) => {
  const edits: Array<[string, (info: Record<string, unknown>) => unknown, RegExp]> = [
    ['a size that is no number', (info) => ({ ...info, size: 'abc' }), /malformed \(size\)/],
    ['a negative size', (info) => ({ ...info, size: -5 }), /malformed \(size\)/],
    ['metadata that is no object of strings', (info) => ({ ...info, metadata: { name: 5 } }), /malformed \(metadata\)/],
    ['no creation time', (info) => ({ ...info, createdAt: 'yesterday' }), /malformed \(createdAt\)/],
    ['another upload\'s info', (info) => ({ ...info, id: 'someoneelse' }), /malformed \(another id\)/],
    ['an array', () => [], /malformed \(not an object\)/],
    ['null', () => null, /malformed \(not an object\)/],
    ['a final without parts', (info) => ({ ...info, concat: { type: 'final' } }), /malformed \(concat\)/],
    ['a length shorter than the data', (info) => ({ ...info, size: 3 }), /holds 10 bytes, more than its length 3/]
  ]
  for (const [what, edit, message] of edits) {
    const id = contractId()
    const writer = new FileStore({ directory })
    await writer.create({ id, size: 20, metadata: { name: 'a' } })
    await writer.write(id, 0, Readable.from([Buffer.alloc(10, 1)]))
    await writer.close()
    const path = join(directory, `${id}.json`)
    fs.writeFileSync(path, JSON.stringify(edit(JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>)))
    // A fresh store: nothing cached, the file is read as a restarted server reads it.
    const reader = new FileStore({ directory })
    await t.rejects(reader.getInfo(id), { code: 'FST_TUS_STORE_FAILED', statusCode: 500, message }, what)
    await reader.close()
  }
})
