// HEADs of one upload that arrive while another waits for its lock (or reads under it) share one lock and one store read, and all report
// the upload as it is once the lock holder is done.
import t from 'tap'
import { appendFile } from 'node:fs/promises'
import { join } from 'node:path'
import tusPlugin, { FileStore, MemoryLocker, type LockOptions, type UploadLock, type UploadLocker } from '../lib/index.js'
import { createUpload, idOf, startServer, tusRequest } from './helpers.js'

const HEADS = 10

/** A real MemoryLocker that counts acquisitions. */
class CountingLocker implements UploadLocker {
  locks = 0
  readonly #inner = new MemoryLocker()
  async lock (id: string, options: LockOptions): Promise<UploadLock> {
    this.locks++
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

t.test('HEADs waiting for a held lock share one lock and one read, and report the offset after the holder', async (t) => {
  const locker = new CountingLocker()
  let store: CountingStore | undefined
  let arrived = 0
  let allArrived: () => void = () => {}
  const everyHeadArrived = new Promise<void>((resolve) => { allArrived = resolve })
  const server = await startServer(t, {}, async (app, dir) => {
    // preHandler runs right before the handler, which joins the shared read without waiting for anything.
    app.addHook('preHandler', async (request) => {
      if (request.method === 'HEAD' && ++arrived === HEADS) setImmediate(allArrived)
    })
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
