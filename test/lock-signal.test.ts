// A lock that can be lost fences the body in the core, whatever the store does: once the lock's signal is
// aborted no further chunk of the body reaches the store, and the request fails with the offset stored.
import t from 'tap'
import tusPlugin, { FileStore, MemoryLocker, type LockOptions, type UploadLock, type UploadLocker, type WriteOptions } from '../lib/index.js'
import { createUpload, startServer, tusRequest } from './helpers.js'

const MiB = 1024 * 1024

/** MemoryLocker's locks, with a signal the test aborts (as RedisLocker or FileLocker do when a lock is lost). */
class LosableLocker implements UploadLocker {
  readonly #inner = new MemoryLocker()
  readonly controllers: AbortController[] = []

  async lock (id: string, options: LockOptions): Promise<UploadLock> {
    const lock = await this.#inner.lock(id, options)
    const controller = new AbortController()
    this.controllers.push(controller)
    return { release: async () => { await lock.release() }, signal: controller.signal }
  }
}

/** A real FileStore that never reads the lock's signal, as a store of an app's own may not: the core must fence. */
class SignalBlindStore extends FileStore {
  override async write (id: string, offset: number, source: AsyncIterable<Buffer>, options?: WriteOptions): Promise<number> {
    const { signal: _, ...blind } = options ?? {}
    return await super.write(id, offset, source, blind)
  }
}

t.test('chunks after the lock is lost never reach the store, even one that does not read the signal', async (t) => {
  const locker = new LosableLocker()
  let reports = 0
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(tusPlugin, { dir, store: new SignalBlindStore({ directory: dir }), locker, progressInterval: 0, onUploadProgress })
  })
  function onUploadProgress (upload: { offset: number }): void {
    // The first report comes before any byte, the second after the first chunk: the lock is lost then.
    if (++reports === 2 && upload.offset > 0) locker.controllers.at(-1)!.abort(new Error('lock lost'))
  }
  const url = await createUpload(server, { 'Upload-Length': String(4 * MiB) })
  const patch = await tusRequest(url, {
    method: 'PATCH', headers: { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }, body: Buffer.alloc(4 * MiB, 7)
  })
  t.equal(patch.status, 500, 'the request fails')
  const stored = Number(patch.headers['upload-offset'])
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], String(stored), 'the answer tells the offset stored')
  t.ok(stored > 0 && stored <= MiB, `only what arrived before the loss is stored (${stored} of ${4 * MiB})`)
})
