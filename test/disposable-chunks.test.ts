// The plugin frees the chunks of a store's read streams (downloads, concatenation) only when the store declares them
// disposable (DataStore.readChunksDisposable, FileStore): a store that emits memory it keeps never has it freed under it.
import t from 'tap'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { FileStore, type ByteRange, type DataStore } from '../lib/index.js'
import { delegatingTo, randomBytesSeeded, sha256, startServer, tusRequest } from './helpers.js'

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }

/** FileStore, but `read` serves complete uploads from copies it keeps in memory (and emits whole when it can). */
function keepingStore (store: FileStore): DataStore & { kept: Map<string, Buffer> } {
  const kept = new Map<string, Buffer>()
  return {
    ...delegatingTo(store),
    kept,
    async read (id: string, range?: ByteRange): Promise<Readable> {
      let copy = kept.get(id)
      if (copy === undefined) {
        const bytes = await readFile((await store.getInfo(id)).path!)
        copy = Buffer.alloc(bytes.length)
        bytes.copy(copy)
        kept.set(id, copy)
      }
      const whole = range === undefined || (range.start === 0 && range.end === copy.length - 1)
      return Readable.from([whole ? copy : copy.subarray(range.start, range.end + 1)])
    }
  }
}

// More than the 16 buffers Node 20 frees at a time (free-memory.ts), so that a chunk freed by mistake is freed here too.
const PARTS = Array.from({ length: 17 }, (_, index) => randomBytesSeeded(8_000 + 1_000 * index, index))

t.test('a store that keeps what it emits: downloads and concatenation never free its memory', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-test-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const store = keepingStore(new FileStore({ directory: dir }))
  const server = await startServer(t, { dir, store })
  const urls: string[] = []
  for (const part of PARTS) {
    const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': String(part.length), 'Upload-Concat': 'partial', ...OCTET }, body: part })
    t.equal(created.status, 201)
    urls.push(created.headers.location!)
  }
  const intact = async (when: string): Promise<void> => {
    for (const [index, url] of urls.entries()) {
      const download = await tusRequest(url)
      t.equal(download.status, 200)
      t.equal(sha256(download.body), sha256(PARTS[index]!), `${when}: partial ${index}`)
      t.equal(store.kept.get(url.split('/').pop()!)?.length, PARTS[index]!.length, `${when}: the kept copy of partial ${index}`)
    }
  }
  await intact('first downloads')
  await intact('second downloads')
  const final = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Concat': `final;${urls.join(' ')}` } })
  t.equal(final.status, 201)
  t.equal(sha256((await tusRequest(final.headers.location!)).body), sha256(Buffer.concat(PARTS)), 'the final has every partial')
  await intact('after the concatenation')
  const draft = await tusRequest(urls[1]!, { headers: { 'Upload-Draft-Interop-Version': '6' } })
  t.equal(sha256(draft.body), sha256(PARTS[1]!), 'a draft GET of a kept copy')
})
