// An in-process lock (MemoryLocker, the default) makes this process the sole writer of its uploads: the store is
// told so on creation and on the PATCH's load, and may answer from its own writes (FileStore: no stat). A
// cross-process lock (FileLocker) never says so, and every PATCH sees what another process appended.
import t from 'tap'
import { appendFile, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FileLocker, FileStore, type NewUpload, type UploadInfo, type WriteOptions } from '../lib/index.js'
import { createUpload, idOf, startServer, tusRequest } from './helpers.js'

/** A FileStore that records what each create and getInfo was told. */
class RecordingStore extends FileStore {
  readonly calls: Array<{ call: string, soleWriter: boolean | undefined }> = []

  override async create (upload: NewUpload, options?: WriteOptions): Promise<UploadInfo> {
    this.calls.push({ call: 'create', soleWriter: options?.soleWriter })
    return await super.create(upload, options)
  }

  override async getInfo (id: string, options?: WriteOptions): Promise<UploadInfo> {
    this.calls.push({ call: 'getInfo', soleWriter: options?.soleWriter })
    return await super.getInfo(id, options)
  }
}

const PATCH = { 'Content-Type': 'application/offset+octet-stream' }

t.test('MemoryLocker: creation and the PATCH\'s load are told they are the sole writer; HEAD is not', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-sole-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const store = new RecordingStore({ directory: dir })
  const server = await startServer(t, { dir, store })
  const url = await createUpload(server, { 'Upload-Length': '6' })
  const first = await tusRequest(url, { method: 'PATCH', headers: { ...PATCH, 'Upload-Offset': '0' }, body: 'abc' })
  t.equal(first.headers['upload-offset'], '3')
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], '3')
  const second = await tusRequest(url, { method: 'PATCH', headers: { ...PATCH, 'Upload-Offset': '3' }, body: 'def' })
  t.equal(second.status, 204)
  t.equal(second.headers['upload-offset'], '6')
  t.same(store.calls, [
    { call: 'create', soleWriter: true },
    { call: 'getInfo', soleWriter: true },
    { call: 'getInfo', soleWriter: undefined },
    { call: 'getInfo', soleWriter: true }
  ])
  t.equal(await readFile(join(dir, idOf(url)), 'utf8'), 'abcdef')
})

t.test('FileLocker: never the sole writer; a PATCH sees the bytes another process appended', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-shared-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const store = new RecordingStore({ directory: dir })
  const server = await startServer(t, { dir, store, locker: new FileLocker({ directory: join(dir, '.locks') }) })
  const url = await createUpload(server, { 'Upload-Length': '10' })
  const first = await tusRequest(url, { method: 'PATCH', headers: { ...PATCH, 'Upload-Offset': '0' }, body: 'abc' })
  t.equal(first.headers['upload-offset'], '3')
  // Another process sharing the directory appends under its own hold of the lock.
  await appendFile(join(dir, idOf(url)), 'de')
  const stale = await tusRequest(url, { method: 'PATCH', headers: { ...PATCH, 'Upload-Offset': '3' }, body: 'xxxxx' })
  t.equal(stale.status, 409, 'the offset this process last wrote is no longer the upload\'s')
  const second = await tusRequest(url, { method: 'PATCH', headers: { ...PATCH, 'Upload-Offset': '5' }, body: 'fghij' })
  t.equal(second.status, 204)
  t.equal(second.headers['upload-offset'], '10')
  t.equal(await readFile(join(dir, idOf(url)), 'utf8'), 'abcdefghij', 'every byte where its offset says')
  t.ok(store.calls.every((call) => call.soleWriter === undefined), 'the store was never told it writes alone')
})
