import t from 'tap'
import fs from 'node:fs'
import { readFile, readdir, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import tusPlugin, { FileStore } from '../lib/index.js'
import { idOf, randomBytesSeeded, rawRequest, sha256, startServer, tusRequest, type TestServer } from './helpers.js'

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }
// filename "report.pdf", filetype application/pdf
const METADATA = 'filename cmVwb3J0LnBkZg==,filetype YXBwbGljYXRpb24vcGRm'

/** Every protocol's download: tus, a draft version whose GET is the tus download (3, 6), one whose GET is offset retrieval (9). */
const DOWNLOADERS: Array<[string, Record<string, string>]> = [
  ['tus', {}], ['draft 3', { 'Upload-Draft-Interop-Version': '3' }], ['draft 6', { 'Upload-Draft-Interop-Version': '6' }],
  ['draft 9', { 'Upload-Draft-Interop-Version': '9' }]
]

/** The headers only a download sends: none of them may be on an error answer. */
const DOWNLOAD_HEADERS = [
  'content-disposition', 'content-range', 'accept-ranges', 'last-modified', 'x-content-type-options', 'cache-control',
  'upload-offset', 'upload-complete', 'upload-length', 'upload-limit'
]

async function finished (server: TestServer, data: Buffer): Promise<string> {
  const created = await tusRequest(server.endpoint, {
    method: 'POST', headers: { 'Upload-Length': String(data.length), 'Upload-Metadata': METADATA, ...OCTET }, body: data
  })
  if (created.status !== 201) throw new Error(created.text)
  return new URL(created.headers.location!, server.origin).href
}

t.test('every download, whole or a range, of any size, is Cache-Control: no-store (tus, drafts); an onSend hook may set another', async (t) => {
  const server = await startServer(t)
  const data = randomBytesSeeded(70_000, 21)
  const url = await finished(server, data)
  const empty = await finished(server, Buffer.alloc(0))
  for (const [name, headers] of DOWNLOADERS) {
    const whole = await rawRequest(url, { headers })
    t.equal(whole.status, 200, `${name}: whole`)
    t.equal(whole.headers['cache-control'], 'no-store', `${name}: a whole download is kept by no cache`)
    t.equal(sha256(whole.body), sha256(data))
    const part = await rawRequest(url, { headers: { ...headers, Range: 'bytes=100-199' } })
    t.equal(part.status, 206, `${name}: a range`)
    t.equal(part.headers['cache-control'], 'no-store', `${name}: a range is kept by no cache`)
    t.equal(sha256(part.body), sha256(data.subarray(100, 200)))
    const nothing = await rawRequest(empty, { headers })
    t.equal(nothing.status, 200, `${name}: an empty upload`)
    t.equal(nothing.headers['cache-control'], 'no-store', `${name}: an empty upload's download is kept by no cache`)
  }

  const overridden = await startServer(t, {}, async (app, dir) => {
    app.addHook('onSend', async (request, reply) => {
      if (request.method === 'GET') reply.header('Cache-Control', 'private, max-age=60')
    })
    await app.register(tusPlugin, { dir })
  })
  const own = await finished(overridden, data)
  for (const [name, headers] of DOWNLOADERS) {
    const response = await rawRequest(own, { headers })
    t.equal(response.status, 200)
    t.equal(response.headers['cache-control'], 'private, max-age=60', `${name}: the app's onSend hook sets its own`)
    t.equal(sha256(response.body), sha256(data))
  }
})

/** A FileStore whose reads fail as a disk does: a throw when opening, or a stream that fails before its first byte. */
class FailingReadStore extends FileStore {
  failure: 'open' | 'first read' | undefined
  override async read (id: string, range?: { start: number, end: number }): ReturnType<FileStore['read']> {
    if (this.failure === 'open') throw Object.assign(new Error('EIO: i/o error, open'), { code: 'EIO' })
    if (this.failure === 'first read') {
      return new Readable({ read () { this.destroy(Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' })) } })
    }
    return await super.read(id, range)
  }
}

t.test('a download whose store fails to read answers 500 with the error\'s headers only, never the file\'s (tus, drafts)', async (t) => {
  let store: FailingReadStore | undefined
  const server = await startServer(t, {}, async (app, dir) => {
    store = new FailingReadStore({ directory: dir })
    await app.register(tusPlugin, { dir, store })
  }, { logger: false })
  const data = randomBytesSeeded(40_000, 22)
  const url = await finished(server, data)
  for (const failure of ['open', 'first read'] as const) {
    store!.failure = failure
    for (const [name, headers] of DOWNLOADERS) {
      for (const range of [{}, { Range: 'bytes=10-' }] as Array<Record<string, string>>) {
        const what = `${name}, ${failure}${range.Range === undefined ? '' : ', a range'}`
        const response = await rawRequest(url, { headers: { ...headers, ...range } })
        t.equal(response.status, 500, what)
        t.same(DOWNLOAD_HEADERS.filter((header) => response.headers[header] !== undefined), [], `${what}: no download header`)
        t.equal(response.headers['content-type'], 'text/plain; charset=utf-8', `${what}: the error's type`)
        t.equal(response.headers['content-length'], String(response.body.length), `${what}: the error's length`)
      }
    }
  }
  store!.failure = undefined
  t.equal(sha256(await readFile(join(server.dir, idOf(url)))), sha256(data), 'the upload is untouched')
  const whole = await rawRequest(url)
  t.equal(whole.status, 200)
  t.equal(sha256(whole.body), sha256(data), 'and downloads once the store reads again')
})

/** A FileStore that removes the upload (as a DELETE that took the lock once the download had read it) before reading it. */
class RemovedBeforeReadStore extends FileStore {
  override async read (id: string, range?: { start: number, end: number }): ReturnType<FileStore['read']> {
    await this.terminate(id)
    return await super.read(id, range)
  }
}

t.test('a download whose upload a DELETE removes once it was read answers 404, without the file\'s headers (tus, drafts)', async (t) => {
  const server = await startServer(t, {}, async (app, dir) => {
    await app.register(tusPlugin, { dir, store: new RemovedBeforeReadStore({ directory: dir }) })
  })
  const data = randomBytesSeeded(10_000, 23)
  for (const [name, headers] of DOWNLOADERS) {
    const url = await finished(server, data)
    const response = await rawRequest(url, { headers })
    t.equal(response.status, 404, `${name}: the upload is gone`)
    t.same(DOWNLOAD_HEADERS.filter((header) => response.headers[header] !== undefined), [], `${name}: no download header`)
  }
  t.same(await readdir(server.dir), [], 'every upload is removed')
})

t.test('a GET or HEAD whose upload a DELETE (elsewhere) removes between its info and its data file answers 404, not 409 or offset 0', async (t) => {
  const data = randomBytesSeeded(10_000, 24)
  const requests: Array<[string, string, Record<string, string>]> = [
    ...DOWNLOADERS.map(([name, headers]): [string, string, Record<string, string>] => [`GET ${name}`, 'GET', headers]),
    ['HEAD tus', 'HEAD', { 'Tus-Resumable': '1.0.0' }], ['HEAD draft 9', 'HEAD', { 'Upload-Draft-Interop-Version': '9' }]
  ]
  for (const [name, method, headers] of requests) {
    const first = await startServer(t)
    const id = idOf(await finished(first, data))
    // Another process (or this one restarted): a store that has read nothing of the upload yet.
    const other = await startServer(t, { dir: first.dir })
    const path = join(first.dir, id)
    // The termination (info file first, then data file) runs right after the request read the info file, when it
    // goes for the data file.
    const stat = fs.stat
    t.teardown(() => { fs.stat = stat })
    fs.stat = ((file: fs.PathLike, ...rest: unknown[]) => {
      if (file !== path) return (stat as (...args: unknown[]) => void)(file, ...rest)
      fs.stat = stat
      void unlink(`${path}.json`).then(async () => { await unlink(path) }).then(() => { (stat as (...args: unknown[]) => void)(file, ...rest) })
    }) as typeof fs.stat
    const response = await rawRequest(`${other.endpoint}${id}`, { method, headers })
    t.equal(fs.stat, stat, `${name}: the request met the termination`)
    t.equal(response.status, 404, `${name}: the upload is gone`)
    t.equal(response.headers['upload-offset'], undefined, `${name}: no offset`)
  }
})

/** An IMF-fixdate in the obsolete RFC 850 form (RFC 9110 5.6.7), which recipients must still accept. */
function rfc850Date (imf: string): string {
  const [weekday, day, month, year, time] = imf.replace(',', '').split(' ')
  const days: Record<string, string> = { Mon: 'Monday', Tue: 'Tuesday', Wed: 'Wednesday', Thu: 'Thursday', Fri: 'Friday', Sat: 'Saturday', Sun: 'Sunday' }
  return `${days[weekday!]!}, ${day!}-${month!}-${year!.slice(2)} ${time!} GMT`
}

/** An IMF-fixdate in ANSI C's asctime() form: `Sun Nov  6 08:49:37 1994`. */
function asctimeDate (imf: string): string {
  const [weekday, day, month, year, time] = imf.replace(',', '').split(' ')
  return `${weekday!} ${month!} ${String(Number(day)).padStart(2, ' ')} ${time!} ${year!}`
}

t.test('a strong ETag, and If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since, If-Range honour it (RFC 9110; tus, drafts)', async (t) => {
  // An app that names uploads itself (onUploadCreate) can remove one and make another under the same URL.
  const server = await startServer(t, { onUploadCreate: (upload) => ({ id: upload.metadata.slot ?? upload.id }) })
  const slot = `slot ${Buffer.from('report').toString('base64')}`
  const put = async (data: Buffer): Promise<string> => {
    const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': String(data.length), 'Upload-Metadata': slot, ...OCTET }, body: data })
    t.equal(created.status, 201)
    t.equal(sha256(await readFile(join(server.dir, 'report'))), sha256(data), 'stored whole')
    return new URL(created.headers.location!, server.origin).href
  }
  const first = randomBytesSeeded(6000, 25)
  const url = await put(first)
  const plain = await rawRequest(url)
  const etag = plain.headers.etag!
  const lastModified = plain.headers['last-modified']!
  t.match(etag, /^"[^"]+"$/, 'a strong entity tag')
  const before = new Date(Date.parse(lastModified) - 10_000).toUTCString()
  const after = new Date(Date.parse(lastModified) + 10_000).toUTCString()
  for (const [name, headers] of DOWNLOADERS) {
    const whole = await rawRequest(url, { headers })
    t.equal(whole.headers.etag, etag, `${name}: the same tag`)
    const cases: Array<[string, Record<string, string>, number]> = [
      ['If-None-Match the tag', { 'If-None-Match': etag }, 304],
      ['If-None-Match its weak form', { 'If-None-Match': `"x", W/${etag}` }, 304],
      ['If-None-Match *', { 'If-None-Match': '*' }, 304],
      ['If-None-Match another tag', { 'If-None-Match': '"x"' }, 200],
      ['If-Modified-Since Last-Modified', { 'If-Modified-Since': lastModified }, 304],
      ['If-Modified-Since an earlier date', { 'If-Modified-Since': before }, 200],
      ['If-None-Match another tag wins over If-Modified-Since', { 'If-None-Match': '"x"', 'If-Modified-Since': after }, 200],
      ['If-Match the tag', { 'If-Match': `"x", ${etag}` }, 200],
      ['If-Match *', { 'If-Match': '*' }, 200],
      ['If-Match another tag', { 'If-Match': '"x"' }, 412],
      ['If-Match the weak form', { 'If-Match': `W/${etag}` }, 412],
      ['If-Unmodified-Since Last-Modified', { 'If-Unmodified-Since': lastModified }, 200],
      ['If-Unmodified-Since an earlier date', { 'If-Unmodified-Since': before }, 412],
      ['If-Match the tag wins over If-Unmodified-Since', { 'If-Match': etag, 'If-Unmodified-Since': before }, 200],
      ['a date that does not parse is ignored', { 'If-Modified-Since': 'yesterday', 'If-Unmodified-Since': 'soon' }, 200],
      ['a value that is no HTTP-date is ignored, where Date.parse reads a date in it (the year -1)', { 'If-Unmodified-Since': '-1' }, 200],
      ['an HTTP-date with a five-digit year is ignored', { 'If-Modified-Since': 'Sat, 01 Jan 10000 00:00:00 GMT' }, 200],
      ['an impossible date (Feb 30) is ignored', { 'If-Unmodified-Since': 'Mon, 30 Feb 2026 00:00:00 GMT' }, 200],
      ['If-Modified-Since Last-Modified in the obsolete RFC 850 form', { 'If-Modified-Since': rfc850Date(lastModified) }, 304],
      ['If-Unmodified-Since an earlier date in the asctime form', { 'If-Unmodified-Since': asctimeDate(before) }, 412]
    ]
    for (const [what, conditions, status] of cases) {
      const response = await rawRequest(url, { headers: { ...headers, ...conditions } })
      t.equal(response.status, status, `${name}: ${what}`)
      if (status === 200) t.equal(sha256(response.body), sha256(first), `${name}: ${what}: the bytes`)
      if (status === 304) {
        t.equal(response.body.length, 0, `${name}: ${what}: no body`)
        t.equal(response.headers.etag, etag, `${name}: ${what}: the tag`)
        t.equal(response.headers['cache-control'], 'no-store')
        t.equal(response.headers['content-disposition'], undefined)
      }
      if (status === 412) t.equal(response.headers['content-disposition'], undefined, `${name}: ${what}: no download header`)
    }
    const resumed = await rawRequest(url, { headers: { ...headers, Range: 'bytes=1000-', 'If-Range': etag } })
    t.equal(resumed.status, 206, `${name}: If-Range with the tag: the range`)
    t.equal(sha256(resumed.body), sha256(first.subarray(1000)))
    const weak = await rawRequest(url, { headers: { ...headers, Range: 'bytes=1000-', 'If-Range': `W/${etag}` } })
    t.equal(weak.status, 200, `${name}: If-Range with a weak tag: the whole upload`)
    t.equal(sha256(weak.body), sha256(first))
  }

  t.equal((await tusRequest(url, { method: 'DELETE' })).status, 204)
  const second = randomBytesSeeded(6000, 26)
  t.equal(await put(second), url, 'the same URL holds other bytes of the same length')
  for (const [name, headers] of DOWNLOADERS) {
    const response = await rawRequest(url, { headers })
    t.not(response.headers.etag, etag, `${name}: another tag`)
    const resumed = await rawRequest(url, { headers: { ...headers, Range: 'bytes=1000-', 'If-Range': etag } })
    t.equal(resumed.status, 200, `${name}: a download of the removed upload resumed: the new one whole`)
    t.equal(sha256(resumed.body), sha256(second))
    t.equal((await rawRequest(url, { headers: { ...headers, 'If-Match': etag } })).status, 412, `${name}: If-Match the removed upload's tag`)
    const fresh = await rawRequest(url, { headers: { ...headers, 'If-None-Match': etag } })
    t.equal(fresh.status, 200, `${name}: If-None-Match the removed upload's tag: the new one`)
    t.equal(sha256(fresh.body), sha256(second))
  }
})

/** A FileStore under which, when a download opens an upload, the upload is removed and made again (same id, other bytes). */
class RecreatedBeforeReadStore extends FileStore {
  replacement: Buffer | undefined
  override async read (id: string, range?: { start: number, end: number }): ReturnType<FileStore['read']> {
    const replacement = this.replacement
    if (replacement !== undefined) {
      this.replacement = undefined
      await this.terminate(id)
      await this.create({ id, size: replacement.length, metadata: { slot: id, filename: 'someone-elses.pdf' } })
      await this.write(id, 0, Readable.from([replacement]))
    }
    return await super.read(id, range)
  }
}

t.test('a download whose upload is made again under its id (other bytes) once it was read answers 404, never the new bytes (tus, drafts)', async (t) => {
  let store: RecreatedBeforeReadStore | undefined
  const server = await startServer(t, {}, async (app, dir) => {
    store = new RecreatedBeforeReadStore({ directory: dir })
    await app.register(tusPlugin, { dir, store, onUploadCreate: (upload) => ({ id: upload.metadata.slot ?? upload.id }) })
  })
  const data = randomBytesSeeded(8000, 27)
  const other = randomBytesSeeded(8000, 28)
  for (const [name, headers] of DOWNLOADERS) {
    for (const range of [{}, { Range: 'bytes=100-' }] as Array<Record<string, string>>) {
      const what = `${name}${range.Range === undefined ? '' : ', a range'}`
      const created = await tusRequest(server.endpoint, {
        method: 'POST', headers: { 'Upload-Length': String(data.length), 'Upload-Metadata': `slot ${Buffer.from('report').toString('base64')}`, ...OCTET }, body: data
      })
      t.equal(created.status, 201)
      store!.replacement = other
      const response = await rawRequest(new URL(created.headers.location!, server.origin).href, { headers: { ...headers, ...range } })
      t.equal(store!.replacement, undefined, `${what}: made again under the download`)
      t.equal(response.status, 404, `${what}: the upload read is gone`)
      t.not(sha256(response.body), sha256(other), `${what}: none of the new upload's bytes`)
      t.same(DOWNLOAD_HEADERS.filter((header) => response.headers[header] !== undefined), [], `${what}: no download header`)
      t.equal(sha256(await readFile(join(server.dir, 'report'))), sha256(other), `${what}: the new upload is stored whole`)
      t.equal((await tusRequest(created.headers.location!, { method: 'DELETE' })).status, 204)
    }
  }
})
