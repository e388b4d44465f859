// A final upload created while one of its partials is still completing: the partial's last bytes are in S3 (its
// offset is its length) but the request that stored them has not yet turned them into the object
// (CompleteMultipartUpload). The final must wait for that request, not read an object that is not there yet; so
// must a download of the upload itself.
import t from 'tap'
import { S3Store } from '../lib/store/s3-store.js'
import { idOf, randomBytesSeeded, sha256, signal, startServer, tusRequest, WatchedLocker } from './helpers.js'
import { s3ClientConfig, testBucket } from './services.js'

const MiB = 1024 * 1024

/** S3Store whose completion of one upload waits until the test lets it go. */
class HeldCompletionStore extends S3Store {
  held: string | undefined
  reached = signal()
  proceed = signal()

  override async flush (id: string): Promise<void> {
    if (id === this.held) {
      this.held = undefined
      this.reached.resolve()
      await this.proceed.promise
    }
    await super.flush(id)
  }
}

// The first partial large enough for S3 to copy it itself (UploadPartCopy), and too small for that (streamed).
for (const [label, firstSize] of [['copied by S3', 6 * MiB], ['streamed', 100 * 1024]] as const) {
  t.test(`a final created while its partial completes waits for the completion and is byte-identical (${label})`, async (t) => {
    t.setTimeout(120_000)
    const store = new HeldCompletionStore({ bucket: await testBucket(t), s3: s3ClientConfig(), prefix: 'uploads/', partSize: 5 * MiB })
    t.teardown(async () => { await store.close() })
    const locker = new WatchedLocker()
    const server = await startServer(t, { store, locker })
    const first = randomBytesSeeded(firstSize, 71)
    const second = randomBytesSeeded(1000, 72)
    const partial = async (data: Buffer): Promise<string> => {
      const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Concat': 'partial', 'Upload-Length': String(data.length) } })
      t.equal(created.status, 201)
      return idOf(new URL(created.headers.location!, server.origin).href)
    }
    const [firstId, secondId] = [await partial(first), await partial(second)]
    const secondPatch = await tusRequest(`${server.endpoint}${secondId}`, {
      method: 'PATCH', headers: { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }, body: second
    })
    t.equal(secondPatch.status, 204)

    store.held = firstId
    const firstPatch = tusRequest(`${server.endpoint}${firstId}`, {
      method: 'PATCH', headers: { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }, body: first
    })
    await store.reached.promise
    t.equal((await store.getInfo(firstId)).offset, first.length, 'every byte of the partial is stored; its completion is held')
    // The PATCH holds the partial's lock: whoever asks for it now is the final's creation. Without that wait
    // the creation answers first (it read a partial whose object is not there), and the completion goes on after it.
    locker.watched = firstId
    void locker.asked.promise.then(() => { store.proceed.resolve() })
    const final = tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Concat': `final;/files/${firstId} /files/${secondId}` } })
    const created = await final
    store.proceed.resolve()
    t.equal(created.status, 201, created.text)
    t.equal((await firstPatch).status, 204)
    const finalUrl = new URL(created.headers.location!, server.origin).href
    const head = await tusRequest(finalUrl, { method: 'HEAD' })
    t.equal(head.headers['upload-offset'], String(first.length + second.length), 'the final is complete')
    const download = await tusRequest(finalUrl)
    t.equal(download.status, 200)
    t.equal(sha256(download.body), sha256(Buffer.concat([first, second])), 'the final is the partials, byte for byte')
  })
}

t.test('a download of an upload that is completing waits for the completion and is byte-identical', async (t) => {
  t.setTimeout(120_000)
  const store = new HeldCompletionStore({ bucket: await testBucket(t), s3: s3ClientConfig(), prefix: 'uploads/', partSize: 5 * MiB })
  t.teardown(async () => { await store.close() })
  const locker = new WatchedLocker()
  const server = await startServer(t, { store, locker })
  const data = randomBytesSeeded(100 * 1024, 73)
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': String(data.length) } })
  const url = new URL(created.headers.location!, server.origin).href
  const id = idOf(url)
  store.held = id
  const patch = tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }, body: data })
  await store.reached.promise
  t.equal((await store.getInfo(id)).offset, data.length, 'every byte is stored; the completion is held')
  // The PATCH holds the lock until the object exists: the download asks for it, and the completion goes on then.
  locker.watched = id
  void locker.asked.promise.then(() => { store.proceed.resolve() })
  const download = await tusRequest(url)
  store.proceed.resolve()
  t.equal((await patch).status, 204)
  t.equal(download.status, 200, `the download is answered (${download.status === 200 ? 'the bytes follow' : download.text})`)
  t.equal(sha256(download.body), sha256(data), 'the download is the upload, byte for byte')
})
