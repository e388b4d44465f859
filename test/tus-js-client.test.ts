// The real tus-js-client (v4, Node) against the plugin: every way a client uploads, bytes compared by sha256.
import t from 'tap'
import { createReadStream } from 'node:fs'
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import * as tus from 'tus-js-client'
import { Upload, type UploadOptions, type UrlStorage } from 'tus-js-client'
import { idOf, randomBytesSeeded, sha256, startServer, tusRequest, tusUpload, type TestServer } from './helpers.js'

// Exported by the Node build of tus-js-client but missing from its type declarations.
const { FileUrlStorage } = tus as unknown as { FileUrlStorage: new (path: string) => UrlStorage }

async function storedHash (server: TestServer, url: string): Promise<string> {
  return sha256(await readFile(join(server.dir, idOf(url))))
}

async function tempFile (t: { teardown: (fn: () => unknown) => void }, data: Buffer): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-client-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const path = join(dir, 'source.bin')
  await writeFile(path, data)
  return path
}

/**
 * The real FileUrlStorage, whose removals can be awaited: tus-js-client removes a fingerprint on success
 * without waiting for it, and a test that ends meanwhile races that write (its directory cannot be removed).
 */
class AwaitableUrlStorage extends FileUrlStorage {
  readonly removals = new Set<Promise<void>>()

  override async removeUpload (urlStorageKey: string): Promise<void> {
    const removal = super.removeUpload(urlStorageKey)
    this.removals.add(removal)
    try {
      await removal
    } finally {
      this.removals.delete(removal)
    }
  }
}

/** Starts an upload and aborts it once its first chunk is acknowledged; resolves with its URL. */
async function uploadFirstChunkThenAbort (input: Buffer | Readable, options: UploadOptions): Promise<string> {
  return await new Promise((resolve, reject) => {
    const upload: Upload = new Upload(input, {
      retryDelays: null,
      ...options,
      onChunkComplete: () => {
        void upload.abort().then(() => { resolve(upload.url!) }, reject)
      },
      onSuccess: () => { reject(new Error('the upload finished before it could be interrupted')) },
      onError: reject
    })
    upload.start()
  })
}

t.test('a Buffer in one request and in chunks', async (t) => {
  const server = await startServer(t)
  const data = randomBytesSeeded(300_000, 11)
  const whole = await tusUpload(data, { endpoint: server.endpoint, metadata: { filename: 'one.bin', filetype: 'application/x-test' } })
  t.equal(await storedHash(server, whole), sha256(data))
  const chunked = await tusUpload(data, { endpoint: server.endpoint, chunkSize: 64 * 1024 })
  t.equal(await storedHash(server, chunked), sha256(data))
  const head = await tusRequest(whole, { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], '300000')
})

t.test('an fs.ReadStream, and uploadDataDuringCreation', async (t) => {
  const server = await startServer(t)
  const data = randomBytesSeeded(500_000, 12)
  const path = await tempFile(t, data)
  const url = await tusUpload(createReadStream(path), { endpoint: server.endpoint, chunkSize: 100_000 })
  t.equal(await storedHash(server, url), sha256(data))
  const during = await tusUpload(data, { endpoint: server.endpoint, uploadDataDuringCreation: true, chunkSize: 200_000 })
  t.equal(await storedHash(server, during), sha256(data))
})

t.test('interrupted part-way, then resumed from the stored URL and from FileUrlStorage', async (t) => {
  const server = await startServer(t)
  const data = randomBytesSeeded(400_000, 13)
  const url = await uploadFirstChunkThenAbort(data, { endpoint: server.endpoint, chunkSize: 100_000 })
  t.equal((await tusRequest(url, { method: 'HEAD' })).headers['upload-offset'], '100000', 'interrupted after one chunk')
  const resumed = await tusUpload(data, { endpoint: server.endpoint, uploadUrl: url, chunkSize: 100_000 })
  t.equal(resumed, url)
  t.equal(await storedHash(server, url), sha256(data))

  const path = await tempFile(t, data)
  const storage = new AwaitableUrlStorage(join(path, '..', 'urls.json'))
  const options = { endpoint: server.endpoint, chunkSize: 100_000, urlStorage: storage, storeFingerprintForResuming: true, removeFingerprintOnSuccess: true }
  const first = await uploadFirstChunkThenAbort(createReadStream(path), options)
  const previous = await new Promise<string>((resolve, reject) => {
    const upload: Upload = new Upload(createReadStream(path), {
      ...options,
      retryDelays: null,
      onSuccess: () => { resolve(upload.url!) },
      onError: reject
    })
    upload.findPreviousUploads().then((found) => {
      if (found[0] === undefined) throw new Error('no previous upload in the URL storage')
      upload.resumeFromPreviousUpload(found[0])
      upload.start()
    }).catch(reject)
  })
  t.equal(previous, first, 'resumed the same upload')
  t.equal(await storedHash(server, first), sha256(data))
  await Promise.all(storage.removals)
  t.same(await storage.findAllUploads(), [], 'the fingerprint was removed on success')
})

t.test('deferred length from a generic Readable', async (t) => {
  const server = await startServer(t)
  const data = randomBytesSeeded(250_000, 14)
  const source = Readable.from((function * () { for (let i = 0; i < data.length; i += 30_000) yield data.subarray(i, i + 30_000) })())
  const url = await tusUpload(source, { endpoint: server.endpoint, uploadLengthDeferred: true, chunkSize: 64 * 1024 })
  t.equal(await storedHash(server, url), sha256(data))
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.headers['upload-length'], '250000')
  t.equal(head.headers['upload-defer-length'], undefined)
})

t.test('parallelUploads: 4 for 64 MiB (concatenation)', async (t) => {
  const server = await startServer(t)
  const data = randomBytesSeeded(64 * 1024 * 1024, 15)
  const completed: string[] = []
  server.app.tus.on('completed', (upload) => { completed.push(upload.id) })
  const url = await tusUpload(data, { endpoint: server.endpoint, parallelUploads: 4, metadata: { filename: 'big.bin' } })
  t.equal(await storedHash(server, url), sha256(data))
  t.same(completed, [idOf(url)], 'completed once, as the final upload')
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.headers['upload-length'], String(data.length))
  t.equal(head.headers['upload-offset'], String(data.length))
  t.match(head.headers['upload-concat'], /^final;/)
  t.equal(head.headers['upload-metadata'], `filename ${Buffer.from('big.bin').toString('base64')}`)
})

t.test('overridePatchMethod, an empty file and an empty metadata value', async (t) => {
  const server = await startServer(t)
  const data = randomBytesSeeded(100_000, 16)
  const url = await tusUpload(data, { endpoint: server.endpoint, overridePatchMethod: true, chunkSize: 30_000 })
  t.equal(await storedHash(server, url), sha256(data))
  const empty = await tusUpload(Buffer.alloc(0), { endpoint: server.endpoint, metadata: { filename: 'empty.txt', note: '' } })
  t.equal((await stat(join(server.dir, idOf(empty)))).size, 0)
  const head = await tusRequest(empty, { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], '0')
  t.equal(head.headers['upload-length'], '0')
  t.match(head.headers['upload-metadata'], /(^|,)note($|,)/)
})

t.test('abort(true) terminates the upload', async (t) => {
  const server = await startServer(t)
  const data = randomBytesSeeded(300_000, 17)
  const url = await new Promise<string>((resolve, reject) => {
    const upload: Upload = new Upload(data, {
      endpoint: server.endpoint,
      chunkSize: 100_000,
      retryDelays: null,
      onChunkComplete: () => { void upload.abort(true).then(() => { resolve(upload.url!) }, reject) },
      onError: reject
    })
    upload.start()
  })
  t.equal((await tusRequest(url, { method: 'HEAD' })).status, 404)
  t.same((await readdir(server.dir)).filter((name) => name.startsWith(idOf(url))), [])
})
