import t from 'tap'
import { request as httpRequest } from 'node:http'
import { connect as connectHttp2 } from 'node:http2'
import { connect } from 'node:net'
import { createHash } from 'node:crypto'
import { readFile, readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import type { UploadInfo } from '../lib/index.js'
import { createUpload, idOf, randomBytesSeeded, sha256, startServer, stored, tusRequest } from './helpers.js'

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }
// The spec's examples for the body "hello world".
const HELLO_WORLD = {
  sha1: 'Kq5sNclPz7QV2+lfQIuc6R7oRu0=',
  md5: 'XrY7u+Ae7tCTyyK7j1rNww==',
  sha256: 'uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=',
  sha512: 'MJ7MSJwS1utMxA9QyQLytNDtd+5RGnx6m808qG1M2G+YndNbxf9JlnDaNCVbRbDP2DDoH2Bdz33FVC6TrpzXbw==',
  crc32: 'DUoRhQ=='
}

async function patch (url: string, offset: number, body: string, headers: Record<string, string> = {}) {
  return await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': String(offset), ...OCTET, ...headers }, body })
}

/** A chunked PATCH whose Upload-Checksum comes as a trailer; resolves with status, reason and headers. */
async function patchWithTrailer (url: string, offset: number, body: string, checksum: string, announce = true) {
  return await new Promise<{ status: number, reason: string, offset: string | undefined, text: string }>((resolve, reject) => {
    const request = httpRequest(url, {
      method: 'PATCH',
      headers: { 'Tus-Resumable': '1.0.0', 'Upload-Offset': String(offset), ...OCTET, ...(announce ? { Trailer: 'Upload-Checksum' } : {}) }
    }, (response) => {
      let text = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => { text += chunk })
      response.on('end', () => {
        resolve({ status: response.statusCode!, reason: response.statusMessage!, offset: response.headers['upload-offset'] as string | undefined, text })
      })
    })
    request.on('error', reject)
    request.write(body.slice(0, 3))
    request.write(body.slice(3))
    request.addTrailers({ 'Upload-Checksum': checksum })
    request.end()
  })
}

t.test('OPTIONS announces checksum, checksum-trailer and the algorithms', async (t) => {
  const server = await startServer(t)
  const response = await tusRequest(server.endpoint, { method: 'OPTIONS' })
  t.equal(response.status, 204)
  const extensions = response.headers['tus-extension']!.split(',')
  t.ok(extensions.includes('checksum'))
  t.ok(extensions.includes('checksum-trailer'))
  t.same(response.headers['tus-checksum-algorithm']!.split(','), ['sha1', 'md5', 'sha256', 'sha512', 'crc32'])
})

for (const [algorithm, digest] of Object.entries(HELLO_WORLD)) {
  t.test(`a ${algorithm} checksum that matches stores the chunk (spec example)`, async (t) => {
    const server = await startServer(t)
    const url = await createUpload(server, { 'Upload-Length': '11' })
    const response = await patch(url, 0, 'hello world', { 'Upload-Checksum': `${algorithm} ${digest}` })
    t.equal(response.status, 204, response.text)
    t.equal(response.headers['upload-offset'], '11')
    t.equal(sha256(await stored(server, url)), sha256('hello world'))
  })
}

t.test('a mismatching checksum: 460 Checksum Mismatch, the chunk discarded, the offset unmoved', async (t) => {
  const server = await startServer(t)
  const url = await createUpload(server, { 'Upload-Length': '22' })
  t.equal((await patch(url, 0, 'hello world', { 'Upload-Checksum': `sha1 ${HELLO_WORLD.sha1}` })).status, 204)
  const response = await new Promise<{ status: number, reason: string, text: string, offset: unknown }>((resolve, reject) => {
    const request = httpRequest(url, {
      method: 'PATCH',
      headers: { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '11', ...OCTET, 'Upload-Checksum': `sha1 ${HELLO_WORLD.sha1}` }
    }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { text += chunk })
      res.on('end', () => { resolve({ status: res.statusCode!, reason: res.statusMessage!, text, offset: res.headers['upload-offset'] }) })
    })
    request.on('error', reject)
    request.end('hello World')
  })
  t.equal(response.status, 460)
  t.equal(response.reason, 'Checksum Mismatch')
  t.match(response.text, /Checksum Mismatch/)
  t.equal(response.offset, '11')
  t.equal((await tusRequest(url, { method: 'HEAD' })).headers['upload-offset'], '11')
  t.equal((await stored(server, url)).toString(), 'hello world')
  t.same(await readdir(join(server.dir, '.staging')), [], 'no staged chunk left behind')
  // The client resends the chunk correctly and the upload completes.
  t.equal((await patch(url, 11, 'hello world', { 'Upload-Checksum': `md5 ${HELLO_WORLD.md5}` })).status, 204)
  t.equal((await stored(server, url)).toString(), 'hello worldhello world')
})

t.test('unsupported algorithm or malformed header: 400 before anything is stored', async (t) => {
  const server = await startServer(t)
  const url = await createUpload(server, { 'Upload-Length': '11' })
  const cases: Array<[string, RegExp]> = [
    ['sha3 Kq5sNclPz7QV2+lfQIuc6R7oRu0=', /Unsupported checksum algorithm "sha3"/],
    ['sha1', /Upload-Checksum/],
    ['sha1 not-base64!', /Upload-Checksum/],
    ['sha1 XrY7u+Ae7tCTyyK7j1rNww==', /not a base64 sha1 digest/],
    ['sha1  Kq5sNclPz7QV2+lfQIuc6R7oRu0=', /Upload-Checksum/]
  ]
  for (const [header, message] of cases) {
    const response = await patch(url, 0, 'hello world', { 'Upload-Checksum': header })
    t.equal(response.status, 400, header)
    t.match(response.text, message)
  }
  t.equal((await tusRequest(url, { method: 'HEAD' })).headers['upload-offset'], '0')
  t.equal((await stored(server, url)).length, 0)
})

t.test('creation-with-upload honours Upload-Checksum', async (t) => {
  const server = await startServer(t)
  const bad = await tusRequest(server.endpoint, {
    method: 'POST',
    headers: { 'Upload-Length': '11', ...OCTET, 'Upload-Checksum': `sha256 ${HELLO_WORLD.md5.replace('==', 'AAAAAAAAAAAAAAAAAAAAAA=')}` },
    body: 'hello world'
  })
  t.equal(bad.status, 400, 'a digest of the wrong length is malformed')
  const mismatch = await tusRequest(server.endpoint, {
    method: 'POST',
    headers: { 'Upload-Length': '11', ...OCTET, 'Upload-Checksum': `sha256 ${HELLO_WORLD.sha256}` },
    body: 'HELLO WORLD'
  })
  t.equal(mismatch.status, 460)
  const good = await tusRequest(server.endpoint, {
    method: 'POST',
    headers: { 'Upload-Length': '11', ...OCTET, 'Upload-Checksum': `crc32 ${HELLO_WORLD.crc32}` },
    body: 'hello world'
  })
  t.equal(good.status, 201)
  t.equal(good.headers['upload-offset'], '11')
  t.equal((await readFile(join(server.dir, idOf(good.headers.location!)))).toString(), 'hello world')
})

t.test('checksum-trailer: a chunked PATCH with Upload-Checksum as a trailer is verified', async (t) => {
  const server = await startServer(t)
  const url = await createUpload(server, { 'Upload-Length': '11' })
  const wrong = await patchWithTrailer(url, 0, 'hello earth', `sha1 ${HELLO_WORLD.sha1}`)
  t.equal(wrong.status, 460)
  t.equal(wrong.reason, 'Checksum Mismatch')
  t.equal(wrong.offset, '0')
  t.equal((await stored(server, url)).length, 0)
  const malformed = await patchWithTrailer(url, 0, 'hello world', 'sha1')
  t.equal(malformed.status, 400)
  t.equal((await stored(server, url)).length, 0)
  const unannounced = await patchWithTrailer(url, 0, 'hello world', `sha512 ${HELLO_WORLD.sha512}`, false)
  t.equal(unannounced.status, 204, 'a trailer is honoured without the Trailer announcement too')
  t.equal(unannounced.offset, '11')
  t.equal((await stored(server, url)).toString(), 'hello world')
})

t.test('an interrupted checksummed PATCH commits nothing; an unchecksummed one keeps its bytes', async (t) => {
  const server = await startServer(t, { progressInterval: 0 })
  const url = await createUpload(server, { 'Upload-Length': '11' })
  const { port, pathname } = { port: new URL(url).port, pathname: new URL(url).pathname }
  async function cutShort (checksum: boolean): Promise<void> {
    const socket = connect(Number(port), '127.0.0.1')
    await new Promise<void>((resolve) => socket.on('connect', resolve))
    socket.write(`PATCH ${pathname} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n` +
      'Content-Type: application/offset+octet-stream\r\nContent-Length: 11\r\n' +
      (checksum ? `Upload-Checksum: sha1 ${HELLO_WORLD.sha1}\r\n` : '') + '\r\nhello')
    // The server has the five bytes once they are staged (a checksummed body: progress reports no staged byte) or
    // a progress event says so; then the client vanishes.
    await (checksum
      ? staged(server.dir, 5)
      : new Promise<void>((resolve) => {
        const listener = (upload: UploadInfo): void => {
          if (upload.offset < 5) return
          server.app.tus.off('progress', listener)
          resolve()
        }
        server.app.tus.on('progress', listener)
      }))
    socket.destroy()
  }
  await cutShort(true)
  // A zero-length PATCH waits for the upload's lock, so it answers after the cut request is done.
  const afterChecksummed = await patch(url, 0, '')
  t.equal(afterChecksummed.status, 204)
  t.equal(afterChecksummed.headers['upload-offset'], '0')
  t.equal((await stored(server, url)).length, 0)
  await cutShort(false)
  const after = await patch(url, 5, '')
  t.equal(after.status, 204)
  t.equal(after.headers['upload-offset'], '5')
  t.equal((await stored(server, url)).toString(), 'hello')
})

/** Resolves once a staged body in `dir` holds `size` bytes. */
async function staged (dir: string, size: number): Promise<void> {
  const staging = join(dir, '.staging')
  for (;;) {
    const names = await readdir(staging).catch(() => [])
    const sizes = await Promise.all(names.filter((name) => name.endsWith('.chunk')).map(async (name) => (await stat(join(staging, name)).catch(() => undefined))?.size))
    if (sizes.some((each) => each !== undefined && each >= size)) return
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

/** The Upload-Checksum value of `data` (computed here, independently of the server's code). */
function checksumOf (algorithm: string, data: Buffer): string {
  if (algorithm !== 'crc32') return `${algorithm} ${createHash(algorithm).update(data).digest('base64')}`
  const digest = Buffer.alloc(4)
  digest.writeUInt32BE(crc32(data) >>> 0)
  return `crc32 ${digest.toString('base64')}`
}

/**
 * A PATCH whose body goes out in `parts` separate writes, each waiting for the socket to drain, so the
 * server reads many chunks. The checksum goes as a header (with Content-Length) or as a trailer (chunked).
 */
async function streamedPatch (url: string, offset: number, data: Buffer, parts: number, checksum: { header?: string, trailer?: string }) {
  return await new Promise<{ status: number, offset: string | undefined, text: string }>((resolve, reject) => {
    const request = httpRequest(url, {
      method: 'PATCH',
      headers: {
        'Tus-Resumable': '1.0.0',
        'Upload-Offset': String(offset),
        ...OCTET,
        ...(checksum.header === undefined ? {} : { 'Upload-Checksum': checksum.header, 'Content-Length': String(data.length) }),
        ...(checksum.trailer === undefined ? {} : { Trailer: 'Upload-Checksum' })
      }
    }, (response) => {
      let text = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => { text += chunk })
      response.on('end', () => { resolve({ status: response.statusCode!, offset: response.headers['upload-offset'] as string | undefined, text }) })
    })
    request.on('error', reject)
    const size = Math.ceil(data.length / parts)
    const writeFrom = (start: number): void => {
      if (start >= data.length) {
        if (checksum.trailer !== undefined) request.addTrailers({ 'Upload-Checksum': checksum.trailer })
        request.end()
        return
      }
      if (request.write(data.subarray(start, start + size))) setImmediate(() => { writeFrom(start + size) })
      else request.once('drain', () => { writeFrom(start + size) })
    }
    writeFrom(0)
  })
}

const BIG = randomBytesSeeded(3 * 1024 * 1024 + 5, 41)

for (const form of ['header', 'trailer'] as const) {
  t.test(`a ${form} checksum covers every byte of a multi-MiB body sent in several writes`, async (t) => {
    const server = await startServer(t)
    for (const algorithm of Object.keys(HELLO_WORLD)) {
      const url = await createUpload(server, { 'Upload-Length': String(BIG.length) })
      // The last byte differs: a digest of anything less than the whole body cannot tell.
      const corrupted = Buffer.from(BIG)
      corrupted[corrupted.length - 1]! ^= 0xff
      const wrong = await streamedPatch(url, 0, corrupted, 7, { [form]: checksumOf(algorithm, BIG) })
      t.equal(wrong.status, 460, `${algorithm}: the last byte changed is a mismatch`)
      t.equal(wrong.offset, '0')
      t.equal((await stored(server, url)).length, 0, `${algorithm}: nothing of it stored`)
      const right = await streamedPatch(url, 0, BIG, 7, { [form]: checksumOf(algorithm, BIG) })
      t.equal(right.status, 204, `${algorithm}: ${right.text}`)
      t.equal(right.offset, String(BIG.length))
      t.equal(sha256(await stored(server, url)), sha256(BIG), `${algorithm}: every byte stored`)
    }
    t.same(await readdir(join(server.dir, '.staging')), [], 'no staged chunk left behind')
  })
}

t.test('a mismatch over HTTP/2 is 460 without a reason phrase (HTTP/2 has none, and Node warns about one)', async (t) => {
  const warnings: string[] = []
  const onWarning = (warning: Error): void => { warnings.push(`${warning.name}: ${warning.message}`) }
  process.on('warning', onWarning)
  t.teardown(() => { process.off('warning', onWarning) })
  const server = await startServer(t, {}, undefined, { http2: true } as Parameters<typeof startServer>[3])
  const session = connectHttp2(server.origin)
  t.teardown(() => { session.close() })
  const send = async (headers: Record<string, string>, body?: string): Promise<Record<string, unknown>> => await new Promise((resolve, reject) => {
    const stream = session.request(headers, { endStream: body === undefined })
    stream.on('response', (response) => { stream.resume(); stream.on('end', () => { resolve(response) }) })
    stream.on('error', reject)
    if (body !== undefined) stream.end(body)
  })
  const created = await send({ ':method': 'POST', ':path': '/files/', 'tus-resumable': '1.0.0', 'upload-length': '11' })
  t.equal(created[':status'], 201)
  const path = new URL(created.location as string, server.origin).pathname
  const mismatch = await send({
    ':method': 'PATCH', ':path': path, 'tus-resumable': '1.0.0', 'upload-offset': '0', 'content-type': OCTET['Content-Type'], 'upload-checksum': `sha1 ${createHash('sha1').update('other').digest('base64')}`
  }, 'hello world')
  t.equal(mismatch[':status'], 460)
  t.equal(mismatch['upload-offset'], '0')
  await new Promise((resolve) => { setImmediate(resolve) })
  t.same(warnings, [], 'no warning')
})

t.test('an unsupported or malformed Upload-Checksum is refused before anything changes: no upload created, no deferred length declared', async (t) => {
  const created: string[] = []
  const server = await startServer(t, { onUploadCreate: (upload) => { created.push(upload.id) } })
  const before = await readdir(server.dir)
  for (const checksum of ['md4 AAAA', 'sha1']) {
    const creation = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '11', 'Upload-Checksum': checksum, ...OCTET }, body: 'hello world' })
    t.equal(creation.status, 400, checksum)
    t.equal(creation.headers.location, undefined, `${checksum}: no upload to point at`)
  }
  t.same(created, [], 'onUploadCreate never ran')
  t.same(await readdir(server.dir), before, 'nothing stored')

  const url = await createUpload(server, { 'Upload-Defer-Length': '1' })
  created.length = 0
  for (const checksum of ['md4 AAAA', 'sha1']) {
    const refused = await patch(url, 0, 'hello world', { 'Upload-Length': '11', 'Upload-Checksum': checksum })
    t.equal(refused.status, 400, checksum)
    const head = await tusRequest(url, { method: 'HEAD' })
    t.equal(head.headers['upload-length'], undefined, `${checksum}: the length is still deferred`)
    t.equal(head.headers['upload-defer-length'], '1')
  }
})
