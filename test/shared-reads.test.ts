// HEADs (and downloads) of one upload that arrive while another waits for its lock (or reads under it) share one lock and one store read, and all report
// the upload as it is once the lock holder is done.
import t from 'tap'
import { appendFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import tusPlugin, { FileStore, MemoryLocker, type LockOptions, type UploadLock, type UploadLocker } from '../lib/index.js'
import { createUpload, idOf, startServer, tusRequest } from './helpers.js'

const HEADS = 10

/** A real MemoryLocker that counts acquisitions, and tells of each (before it waits). */
class CountingLocker implements UploadLocker {
  locks = 0
  onLock: () => void = () => {}
  readonly #inner = new MemoryLocker()
  async lock (id: string, options: LockOptions): Promise<UploadLock> {
    this.locks++
    this.onLock()
    return await this.#inner.lock(id, options)
  }
}

/** A real FileStore that counts reads of an upload's state. */
class CountingStore extends FileStore {
  reads = 0
  override async getInfo (id: string): ReturnType<FileStore['getInfo']> {
    this.reads++
    return await super.getInfo(id)
  }
}

/**
 * Resolves once HEADS requests of `method` have reached their handler: preHandler runs right before it, and the
 * handler joins the shared read without waiting for anything.
 */
async function whenAllArrive (app: FastifyInstance, method: string): Promise<void> {
  let arrived = 0
  await new Promise<void>((resolve) => {
    app.addHook('preHandler', async (request) => {
      if (request.method === method && ++arrived === HEADS) setImmediate(resolve)
    })
  })
}

t.test('HEADs waiting for a held lock share one lock and one read, and report the offset after the holder', async (t) => {
  const locker = new CountingLocker()
  let store: CountingStore | undefined
  let everyHeadArrived: Promise<void> | undefined
  const server = await startServer(t, {}, async (app, dir) => {
    everyHeadArrived = whenAllArrive(app, 'HEAD')
    store = new CountingStore({ directory: dir })
    await app.register(tusPlugin, { dir, store, locker })
  })
  const dir = server.dir
  const url = await createUpload(server, { 'Upload-Length': '100' })
  const id = idOf(url)

  // Stands for a PATCH still writing: the lock is held and bytes land while the HEADs wait.
  const held = await locker.lock(id, { timeoutMs: 1000 })
  const locksBefore = locker.locks
  const readsBefore = store!.reads
  const heads = Array.from({ length: HEADS }, async () => await tusRequest(url, { method: 'HEAD' }))
  await everyHeadArrived
  await appendFile(join(dir, id), Buffer.alloc(42))
  await held.release()
  const responses = await Promise.all(heads)
  t.same(responses.map((response) => response.status), Array(HEADS).fill(200))
  t.same(responses.map((response) => response.headers['upload-offset']), Array(HEADS).fill('42'), 'every HEAD reports the bytes written while it waited')
  t.equal(locker.locks - locksBefore, 1, 'one lock for all of them')
  t.equal(store!.reads - readsBefore, 1, 'one read for all of them')

  const after = await tusRequest(url, { method: 'HEAD' })
  t.equal(after.headers['upload-offset'], '42')
  t.equal(locker.locks - locksBefore, 2, 'a HEAD after them takes a lock of its own')
})

t.test('HEADs sharing a read of an unknown upload all get 404', async (t) => {
  const locker = new CountingLocker()
  const server = await startServer(t, { locker })
  const url = `${server.endpoint}unknown-upload`
  const responses = await Promise.all(Array.from({ length: HEADS }, async () => await tusRequest(url, { method: 'HEAD' })))
  t.same(responses.map((response) => response.status), Array(HEADS).fill(404))
  t.ok(locker.locks <= HEADS)
})

t.test('downloads of a complete upload whose lock is held wait for it without asking it to let go, and share one lock', async (t) => {
  const locker = new CountingLocker()
  let everyGetArrived: Promise<void> | undefined
  const server = await startServer(t, {}, async (app, dir) => {
    everyGetArrived = whenAllArrive(app, 'GET')
    await app.register(tusPlugin, { dir, locker })
  })
  const url = await createUpload(server, { 'Upload-Length': '42' })
  const bytes = Buffer.alloc(42, 7)
  const patch = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }, body: bytes })
  t.equal(patch.status, 204)

  // Stands for the request that stored the last bytes, still completing them (a trailer checked, a hook running).
  let askedToLetGo = false
  const held = await locker.lock(idOf(url), { timeoutMs: 1000, onReleaseRequested: () => { askedToLetGo = true } })
  const locksBefore = locker.locks
  const askedForLock = new Promise<void>((resolve) => { locker.onLock = resolve })
  const downloads = Array.from({ length: HEADS }, async () => await tusRequest(url))
  await everyGetArrived
  // The first to read the upload (complete, without the lock) asks for the lock; a holder asked to let go is told
  // within that call.
  await askedForLock
  t.equal(askedToLetGo, false, 'a download never interrupts the request holding the upload')
  await held.release()
  const responses = await Promise.all(downloads)
  t.same(responses.map((response) => response.status), Array(HEADS).fill(200))
  t.ok(responses.every((response) => response.body.equals(bytes)), 'every download is the upload')
  t.equal(locker.locks - locksBefore, 1, 'one lock for all of them')
})
