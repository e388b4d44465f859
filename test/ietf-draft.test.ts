// The IETF "Resumable Uploads for HTTP" draft on the tus routes: real tus-js-client uploads in both of its
// draft modes, and raw node:http / node:net requests for each rule and interop version (104s included).
import t from 'tap'
import { createReadStream } from 'node:fs'
import { readdir, rm, writeFile } from 'node:fs/promises'
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import { connect as connectHttp2 } from 'node:http2'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { createRequire } from 'node:module'
import { Upload, type UploadOptions } from 'tus-js-client'
import type { UploadInfo } from '../lib/index.js'
import { backdate, idOf, randomBytesSeeded, removeExpired, sha256, startServer, stored, tusRequest, type TestServer } from './helpers.js'

type Protocol = 'ietf-draft-03' | 'ietf-draft-05'
type DraftOptions = UploadOptions & { protocol: Protocol }

interface DraftResponse {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
  text: string
  /** Every 1xx the server sent before the final response. */
  interim: Array<{ status: number, headers: IncomingHttpHeaders }>
}

/** One request over node:http, whose 'information' event shows 1xx responses (fetch/undici hide them). */
async function draftRequest (
  url: string,
  init: { method?: string, headers?: Record<string, string>, body?: string | Buffer | Readable } = {}
): Promise<DraftResponse> {
  return await new Promise((resolve, reject) => {
    const interim: DraftResponse['interim'] = []
    const request = httpRequest(url, { method: init.method ?? 'GET', headers: init.headers ?? {}, agent: false })
    request.on('information', (info) => { interim.push({ status: info.statusCode, headers: info.headers }) })
    request.on('error', reject)
    request.on('response', (response) => {
      const chunks: Buffer[] = []
      response.on('data', (chunk: Buffer) => chunks.push(chunk))
      response.on('error', reject)
      response.on('end', () => {
        const body = Buffer.concat(chunks)
        resolve({ status: response.statusCode!, headers: response.headers, body, text: body.toString('utf8'), interim })
      })
    })
    if (init.body instanceof Readable) init.body.pipe(request)
    else request.end(init.body)
  })
}

/** A draft request of interop `version`: draftRequest with Upload-Draft-Interop-Version added. */
async function draft (version: number, url: string, init: { method?: string, headers?: Record<string, string>, body?: string | Buffer | Readable } = {}) {
  return await draftRequest(url, { ...init, headers: { 'Upload-Draft-Interop-Version': String(version), ...init.headers } })
}

const COMPLETE = (version: number, complete: boolean): Record<string, string> =>
  version === 3 ? { 'Upload-Incomplete': complete ? '?0' : '?1' } : { 'Upload-Complete': complete ? '?1' : '?0' }
const APPEND_TYPE = (version: number): Record<string, string> => version >= 6 ? { 'Content-Type': 'application/partial-upload' } : {}

async function create (server: TestServer, version: number, complete: boolean, body?: string | Buffer, headers: Record<string, string> = {}) {
  const response = await draft(version, server.endpoint, { method: 'POST', headers: { ...COMPLETE(version, complete), ...headers }, ...(body === undefined ? {} : { body }) })
  return { response, url: response.headers.location === undefined ? '' : new URL(response.headers.location, server.origin).href }
}

async function append (version: number, url: string, offset: number, complete: boolean, body: string | Buffer | Readable, headers: Record<string, string> = {}) {
  return await draft(version, url, { method: 'PATCH', headers: { 'Upload-Offset': String(offset), ...COMPLETE(version, complete), ...APPEND_TYPE(version), ...headers }, body })
}

/** tus-js-client in a draft mode; resolves with the upload URL. */
async function clientUpload (input: Buffer | Readable, options: DraftOptions): Promise<string> {
  return await new Promise((resolve, reject) => {
    const upload: Upload = new Upload(input, { retryDelays: null, ...options, onSuccess: () => { resolve(upload.url!) }, onError: reject })
    upload.start()
  })
}

/** A server that records onUploadComplete calls. */
async function recordingServer (t: Parameters<typeof startServer>[0], options: Parameters<typeof startServer>[1] = {}) {
  const completed: UploadInfo[] = []
  const server = await startServer(t, { ...options, onUploadComplete: (upload) => { completed.push(upload) } })
  return { server, completed }
}

// tus-js-client's browser build (what Uppy and web apps run), its requests through the Node HTTP stack of its Node build.
const require = createRequire(import.meta.url)
const BrowserUpload = (require('tus-js-client/lib.es5/browser/index.js') as { Upload: typeof Upload }).Upload
const NodeHttpStack = (require('tus-js-client/lib.es5/node/httpStack.js') as { default: new () => NonNullable<UploadOptions['httpStack']> }).default

const CLIENT_MODES: Array<[Protocol, number]> = [['ietf-draft-03', 5], ['ietf-draft-05', 6]]

for (const [protocol, interop] of CLIENT_MODES) {
  t.test(`tus-js-client ${protocol} (interop ${interop}): chunked, data during creation, deferred length`, async (t) => {
    const seen = new Set<string>()
    // The auth hook runs on draft requests too: it records which protocol each one spoke.
    const { server, completed } = await recordingServer(t, { auth: (request) => { seen.add(String(request.headers['upload-draft-interop-version'])) } })
    const data = randomBytesSeeded(300_000, interop)

    const chunked = await clientUpload(data, { endpoint: server.endpoint, protocol, chunkSize: 100_000, metadata: { filename: 'chunked.bin' } })
    t.equal(sha256(await stored(server, chunked)), sha256(data), 'chunked upload stored byte-identical')

    const single = await clientUpload(data, { endpoint: server.endpoint, protocol, uploadDataDuringCreation: true })
    t.equal(sha256(await stored(server, single)), sha256(data), 'single creation request')

    const deferred = await clientUpload(Readable.from([data.subarray(0, 70_000), data.subarray(70_000)]),
      { endpoint: server.endpoint, protocol, chunkSize: 64 * 1024, uploadLengthDeferred: true })
    t.equal(sha256(await stored(server, deferred)), sha256(data), 'deferred length, fixed by the completing append')

    t.same([...seen], [String(interop)], 'every request spoke the draft')
    t.same(completed.map((upload) => upload.id).sort(), [chunked, single, deferred].map(idOf).sort(), 'completion hook once per upload')
    t.equal(completed.find((upload) => upload.id === idOf(chunked))?.metadata.filename, 'chunked.bin', 'Upload-Metadata is kept')
    const download = await tusRequest(chunked)
    t.equal(download.status, 200)
    t.equal(sha256(download.body), sha256(data), 'GET downloads a draft upload')
  })

  t.test(`tus-js-client ${protocol}: a file stream of known size sends its last chunk with ?0, and reaching the length completes the upload`, async (t) => {
    // tus-js-client 4.x marks a chunk ?1 only when its source says it is done; a stream does not know that before its
    // 'end' event, after the last chunk was read. The client stops once the offset reaches the size and never sends a
    // completing request: for interop 5 and 6 (its modes) the length reached must complete the upload.
    const flags: string[] = []
    const { server, completed } = await recordingServer(t, {
      auth: (request) => { if (request.method === 'PATCH') flags.push(String(request.headers['upload-complete'])) }
    })
    const data = randomBytesSeeded(300_000, interop + 10)
    const path = join(tmpdir(), `fastify-tus-source-${process.pid}-${interop}.bin`)
    await writeFile(path, data)
    t.teardown(async () => { await rm(path, { force: true }) })
    const url = await clientUpload(createReadStream(path), { endpoint: server.endpoint, protocol, chunkSize: 100_000, uploadSize: data.length })
    t.same(flags, ['?0', '?0', '?0'], 'three chunks, the last one too with Upload-Complete: ?0')
    t.equal(sha256(await stored(server, url)), sha256(data), 'stored byte-identical')
    t.same(completed.map((upload) => upload.id), [idOf(url)], 'completed once')
    const head = await draft(interop, url, { method: 'HEAD' })
    t.equal(head.headers['upload-complete'], '?1')
    t.equal(sha256((await tusRequest(url)).body), sha256(data), 'downloadable')
  })

  t.test(`tus-js-client ${protocol} (browser build): a ReadableStream of unknown length ends with an empty PATCH that carries only Upload-Length`, async (t) => {
    // Its browser StreamSource (a stream reader, as apps recording a camera hand it) marks no chunk done: the data goes
    // with ?0, then an empty PATCH with the length and no Upload-Complete at all ends the upload.
    const requests: string[] = []
    const { server, completed } = await recordingServer(t, {
      auth: (request) => { if (request.method === 'PATCH') requests.push(`${String(request.headers['upload-complete'])} ${String(request.headers['upload-length'])}`) }
    })
    const data = randomBytesSeeded(250_000, interop + 20)
    const stream = new ReadableStream<Uint8Array>({
      start: (controller) => {
        controller.enqueue(new Uint8Array(data.subarray(0, 120_000)))
        controller.enqueue(new Uint8Array(data.subarray(120_000)))
        controller.close()
      }
    })
    const url = await new Promise<string>((resolve, reject) => {
      const options: DraftOptions = {
        endpoint: server.endpoint,
        protocol,
        chunkSize: 100_000,
        uploadLengthDeferred: true,
        retryDelays: null,
        httpStack: new NodeHttpStack(),
        onSuccess: () => { resolve(upload.url!) },
        onError: reject
      }
      const upload = new BrowserUpload(stream.getReader() as unknown as Buffer, options)
      upload.start()
    })
    t.same(requests, ['?0 undefined', '?0 undefined', '?0 undefined', 'undefined 250000'], 'the last PATCH: no body, no complete flag')
    t.equal(sha256(await stored(server, url)), sha256(data), 'stored byte-identical')
    t.same(completed.map((upload) => upload.id), [idOf(url)], 'completed once')
    t.equal((await draft(interop, url, { method: 'HEAD' })).headers['upload-complete'], '?1')
  })

  t.test(`tus-js-client ${protocol}: abort after the first chunk, resume from HEAD`, async (t) => {
    const heads: string[] = []
    const { server, completed } = await recordingServer(t, {
      auth: (request) => { if (request.method === 'HEAD') heads.push(String(request.headers['upload-draft-interop-version'])) }
    })
    const data = randomBytesSeeded(300_000, 7)
    let url: string | undefined
    // Aborted once the server has acknowledged the first chunk (its response carried Upload-Offset 100000).
    await new Promise<void>((resolve, reject) => {
      const upload = new Upload(data, {
        endpoint: server.endpoint,
        protocol,
        chunkSize: 100_000,
        retryDelays: null,
        onUploadUrlAvailable: () => { url = upload.url! },
        onChunkComplete: (_size, accepted) => { if (accepted === 100_000) upload.abort().then(resolve, reject) },
        onError: reject
      } as DraftOptions)
      upload.start()
    })
    const head = await draft(interop, url!, { method: 'HEAD' })
    t.equal(head.status, 204)
    t.equal(head.headers['upload-offset'], '100000')
    t.equal(head.headers['upload-complete'], '?0')
    t.equal(completed.length, 0, 'not complete after the abort')

    const resumed = await clientUpload(data, { endpoint: server.endpoint, protocol, chunkSize: 100_000, uploadUrl: url! })
    t.equal(resumed, url)
    t.equal(sha256(await stored(server, url!)), sha256(data))
    t.ok(heads.length >= 2 && heads.every((value) => value === String(interop)), 'resumption asked HEAD with the interop version')
    t.equal(completed.length, 1)
  })

  t.test(`tus-js-client ${protocol}: parallelUploads go through concatenation, one completion for the whole file`, async (t) => {
    const { server, completed } = await recordingServer(t)
    const data = randomBytesSeeded(200_000, interop + 20)
    const url = await clientUpload(data, { endpoint: server.endpoint, protocol, parallelUploads: 3, metadata: { filename: 'parallel.bin' } })
    t.equal(sha256(await stored(server, url)), sha256(data), 'the final upload is the file, byte-identical')
    t.same(completed.map((upload) => [upload.id, upload.size, upload.metadata.filename]), [[idOf(url), data.length, 'parallel.bin']],
      'onUploadComplete once, for the final: never for a partial')
    const head = await draft(interop, url, { method: 'HEAD' })
    t.equal(head.status, 204)
    t.equal(head.headers['upload-offset'], String(data.length))
    t.equal(head.headers['upload-complete'], '?1')
  })
}

const ALL_VERSIONS = [3, 4, 5, 6, 7, 8, 9]

t.test('creation with all content: 104 with the Location first, then 201 complete; metadata from Content-Disposition and Content-Type', async (t) => {
  for (const version of ALL_VERSIONS) {
    const { server, completed } = await recordingServer(t)
    const { response, url } = await create(server, version, true, 'hello world', {
      'Content-Type': 'text/plain',
      'Content-Disposition': 'inline; filename="report.txt"; filename*=UTF-8\'\'r%C3%A9sum%C3%A9.txt'
    })
    t.equal(response.status, 201, `v${version}`)
    t.match(response.headers.location, new RegExp(`^${server.endpoint}[A-Za-z0-9_-]+$`))
    t.equal(response.headers['upload-offset'], '11')
    t.same(pick(response.headers, version === 3 ? 'upload-incomplete' : 'upload-complete'), version === 3 ? '?0' : '?1')
    t.equal(response.headers['upload-draft-interop-version'], String(version))
    t.equal(response.headers['tus-resumable'], undefined, 'no tus header on draft responses')
    t.equal(response.interim.length, 1, 'one 104 (no progress 104s for a small body)')
    const [interim] = response.interim
    t.equal(interim?.status, 104)
    t.equal(interim?.headers.location, response.headers.location, 'the 104 names the same upload URL')
    t.equal(interim?.headers['upload-draft-interop-version'], String(version))
    t.equal(interim?.headers['upload-limit'] !== undefined, version >= 6, 'Upload-Limit in the 104 where the version defines it')
    t.equal((await stored(server, url)).toString(), 'hello world')
    t.equal(completed.length, 1, 'completion hook ran once')
    t.same(completed[0]?.metadata, { filetype: 'text/plain', filename: 'résumé.txt' }, 'filename* wins over filename')
    const download = await tusRequest(url)
    t.equal(download.status, 200)
    t.equal(download.headers['content-type'], 'text/plain')
    t.equal(download.headers['content-disposition'], 'attachment; filename="r_sum_.txt"; filename*=UTF-8\'\'r%C3%A9sum%C3%A9.txt')
  }
})

t.test('a Content-Disposition name that is only a path step (or nothing once cleaned) names no file: the download is named by the id', async (t) => {
  const { server, completed } = await recordingServer(t)
  for (const disposition of ['attachment; filename=".."', 'attachment; filename=.', 'attachment; filename*=UTF-8\'\'%2E%2E', 'attachment; filename*=UTF-8\'\'%E2%80%AE']) {
    const { response, url } = await create(server, 6, true, 'abc', { 'Content-Disposition': disposition })
    t.equal(response.status, 201, disposition)
    const id = idOf(url)
    t.equal(completed.find((upload) => upload.id === id)?.metadata.filename, undefined, `${disposition}: no filename recorded`)
    t.equal((await tusRequest(url)).headers['content-disposition'], `attachment; filename="${id}"; filename*=UTF-8''${id}`)
  }
})

function pick (headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name]
  return Array.isArray(value) ? value.join(', ') : value
}

t.test('creation with part of the content, then HEAD and appends up to completion', async (t) => {
  for (const version of ALL_VERSIONS) {
    const { server, completed } = await recordingServer(t)
    const { response, url } = await create(server, version, false, 'hello', { 'Upload-Length': '11' })
    t.equal(response.status, 201, `v${version}`)
    t.equal(response.headers['upload-offset'], '5')
    t.equal(pick(response.headers, version === 3 ? 'upload-incomplete' : 'upload-complete'), version === 3 ? '?1' : '?0')

    const head = await draft(version, url, { method: 'HEAD' })
    t.equal(head.status, 204)
    t.equal(head.headers['upload-offset'], '5')
    t.equal(head.headers['upload-length'], '11')
    t.equal(head.headers['cache-control'], 'no-store')
    t.equal(pick(head.headers, version === 3 ? 'upload-incomplete' : 'upload-complete'), version === 3 ? '?1' : '?0')
    t.equal(head.headers['upload-limit'] !== undefined, version >= 6)
    if (version === 6) t.match(head.headers['upload-limit'], /^max-size=\d+, min-size=0, expires=\d+$/)
    if (version >= 7) t.match(head.headers['upload-limit'], /^max-size=\d+, min-size=0, max-age=\d+$/)
    t.equal(head.interim.length, 0, 'no 104 outside creation')

    const middle = await append(version, url, 5, false, ' wor')
    t.equal(middle.status, version === 3 ? 201 : 204)
    t.equal(middle.headers['upload-offset'], '9')
    t.equal(completed.length, 0)
    const last = await append(version, url, 9, true, 'ld')
    t.equal(last.status, 204)
    t.equal(last.headers['upload-offset'], '11')
    t.equal(pick(last.headers, version === 3 ? 'upload-incomplete' : 'upload-complete'), version === 3 ? '?0' : '?1')
    t.equal(sha256(await stored(server, url)), sha256('hello world'))
    t.equal(completed.length, 1)
    t.equal(completed[0]?.size, 11)
  }
})

t.test('empty creations: ?0 only obtains the URL; ?1 is a complete empty upload', async (t) => {
  for (const version of ALL_VERSIONS) {
    const { server, completed } = await recordingServer(t)
    const open = await create(server, version, false)
    t.equal(open.response.status, 201, `v${version}`)
    t.equal(open.response.headers['upload-offset'], '0')
    t.equal((await draft(version, open.url, { method: 'HEAD' })).headers['upload-length'], undefined, 'length unknown yet')
    t.equal(completed.length, 0)
    // Completing with the last bytes fixes the length at offset + Content-Length.
    const done = await append(version, open.url, 0, true, 'abc')
    t.equal(done.status, 204)
    t.equal((await draft(version, open.url, { method: 'HEAD' })).headers['upload-length'], '3')
    t.equal(completed.length, 1)

    const empty = await create(server, version, true)
    t.equal(empty.response.status, 201)
    t.equal(empty.response.headers['upload-offset'], '0')
    t.equal(completed.length, 2, 'an empty complete creation is a finished upload')
    t.equal(completed[1]?.size, 0)
    t.equal((await tusRequest(empty.url)).status, 200, 'and downloadable')
  }
})

t.test('an empty append with ?1 completes an upload of deferred length', async (t) => {
  const { server, completed } = await recordingServer(t)
  const { url } = await create(server, 6, false, 'abc')
  const done = await append(6, url, 3, true, '')
  t.equal(done.status, 204)
  t.equal(done.headers['upload-complete'], '?1')
  t.equal(completed.length, 1)
  t.equal(completed[0]?.size, 3)
})

t.test('an empty append without a complete flag reads as ?0 in every version; one with a body needs the flag from interop 6', async (t) => {
  for (const version of ALL_VERSIONS) {
    const { server, completed } = await recordingServer(t)
    const data = randomBytesSeeded(40, version + 30)
    const { url } = await create(server, version, false, data.subarray(0, 25))
    const flagless = { 'Upload-Offset': '25', ...APPEND_TYPE(version) }
    const withBody = await draft(version, url, { method: 'PATCH', headers: flagless, body: data.subarray(25) })
    t.equal(withBody.status, version >= 6 ? 400 : version === 3 ? 201 : 204, `v${version}: a body without the flag (before interop 6: ?0)`)
    if (version < 6) continue
    t.equal(withBody.text, 'Invalid Upload-Complete header: missing, or not ?0 / ?1')
    const noop = await draft(version, url, { method: 'PATCH', headers: flagless })
    t.equal(noop.status, 204, `v${version}: an empty one stores nothing and completes nothing`)
    t.equal(noop.headers['upload-complete'], '?0')
    t.equal(noop.headers['upload-offset'], '25')
    t.equal((await append(version, url, 25, false, data.subarray(25))).status, 204)
    const last = await draft(version, url, { method: 'PATCH', headers: { 'Upload-Offset': '40', 'Upload-Length': '40', ...APPEND_TYPE(version) } })
    t.equal(last.status, 204, `v${version}: an empty one that declares the length reached`)
    t.equal(last.headers['upload-complete'], '?1')
    t.equal(sha256(await stored(server, url)), sha256(data))
    t.same(completed.map((upload) => upload.id), [idOf(url)], 'completed once')
  }
  // tus 1.0.0: the same last request of a deferred length.
  const { server, completed } = await recordingServer(t)
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Defer-Length': '1' } })
  const url = new URL(created.headers.location!, server.origin).href
  const octet = { 'Content-Type': 'application/offset+octet-stream' }
  t.equal((await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...octet }, body: 'abc' })).status, 204)
  t.equal((await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '3', 'Upload-Length': '3', ...octet } })).status, 204)
  t.equal((await stored(server, url)).toString(), 'abc')
  t.equal(completed.length, 1)
})

t.test('Upload-Concat on draft creations: partials and a final, as over tus; a final takes no length and no body', async (t) => {
  for (const version of ALL_VERSIONS) {
    const { server, completed } = await recordingServer(t)
    const a = await create(server, version, false, 'hello ', { 'Upload-Concat': 'partial', 'Upload-Length': '6' })
    t.equal(a.response.status, 201, `v${version}: partial created`)
    const b = await create(server, version, false, undefined, { 'Upload-Concat': 'partial' })
    const appended = await append(version, b.url, 0, true, 'world')
    t.equal(appended.status, 204)
    t.equal(pick(appended.headers, version === 3 ? 'upload-incomplete' : 'upload-complete'), version === 3 ? '?0' : '?1')
    t.equal(completed.length, 0, 'a partial never completes on its own')
    const tusHead = await tusRequest(a.url, { method: 'HEAD' })
    t.equal(tusHead.headers['upload-concat'], 'partial', 'a partial upload, as tus sees it')

    // tus-js-client's final: Upload-Concat and the interop version, no complete flag, no length.
    const final = await draft(version, server.endpoint, { method: 'POST', headers: { 'Upload-Concat': `final;${new URL(a.url).pathname} ${new URL(b.url).pathname}` } })
    t.equal(final.status, 201, 'final created')
    t.equal(final.headers['upload-offset'], '11')
    t.equal(pick(final.headers, version === 3 ? 'upload-incomplete' : 'upload-complete'), version === 3 ? '?0' : '?1')
    const url = new URL(final.headers.location!, server.origin).href
    t.equal((await stored(server, url)).toString(), 'hello world', 'the final holds its partials\' bytes')
    t.same(completed.map((upload) => upload.id), [idOf(url)], 'completion once, for the final')

    const refs = `final;${new URL(a.url).pathname}`
    const lengthy = await draft(version, server.endpoint, { method: 'POST', headers: { 'Upload-Concat': refs, 'Upload-Length': '6' } })
    t.equal(lengthy.status, 400, 'a final with Upload-Length is refused, as over tus')
    t.equal(lengthy.text, 'Invalid Upload-Concat: a final upload takes its length from its partials: send no Upload-Length')
    const bodied = await draft(version, server.endpoint, { method: 'POST', headers: { 'Upload-Concat': refs }, body: 'x' })
    t.equal(bodied.status, 400, 'a final with a body is refused')
    t.equal(bodied.interim.length, 0, 'refused before anything exists: no 104')
    const plain = await create(server, version, true, 'plain')
    const notPartial = await draft(version, server.endpoint, { method: 'POST', headers: { 'Upload-Concat': `final;${new URL(plain.url).pathname}` } })
    t.equal(notPartial.status, 400, 'a final of an upload that is no partial is refused')
    t.equal(completed.length, 2, 'no further completion')
  }
})

t.test('offset mismatch: 409 with the current offset, problem details from interop 6, nothing written', async (t) => {
  for (const version of ALL_VERSIONS) {
    const server = await startServer(t)
    const { url } = await create(server, version, false, 'hello', { 'Upload-Length': '11' })
    const conflict = await append(version, url, 3, false, 'xx')
    t.equal(conflict.status, 409, `v${version}`)
    t.equal(conflict.headers['upload-offset'], '5')
    t.equal(pick(conflict.headers, version === 3 ? 'upload-incomplete' : 'upload-complete'), version === 3 ? '?1' : '?0')
    if (version >= 6) {
      t.equal(conflict.headers['content-type'], 'application/problem+json')
      t.same(JSON.parse(conflict.text), {
        type: 'https://iana.org/assignments/http-problem-types#mismatching-upload-offset',
        title: 'offset from request does not match offset of resource',
        status: 409,
        detail: 'Upload-Offset 3 does not match the current offset 5',
        'expected-offset': 5,
        'provided-offset': 3
      })
    } else {
      t.match(conflict.headers['content-type'], /^text\/plain/)
      t.equal(conflict.text, 'Upload-Offset 3 does not match the current offset 5')
    }
    t.equal((await stored(server, url)).toString(), 'hello')
  }
})

t.test('appends to a completed upload are refused and change nothing', async (t) => {
  for (const version of ALL_VERSIONS) {
    const { server, completed } = await recordingServer(t)
    const { url } = await create(server, version, true, 'done')
    for (const body of ['more', '']) {
      const refused = await append(version, url, 4, true, body)
      t.equal(refused.status, 400, `v${version} body "${body}"`)
      t.equal(refused.headers['upload-offset'], '4')
      if (version >= 6) {
        const type = version <= 8 ? 'completed-upload' : 'inconsistent-upload-length'
        t.equal(JSON.parse(refused.text).type, `https://iana.org/assignments/http-problem-types#${type}`)
      } else {
        t.equal(refused.text, 'The upload is already complete (4 bytes); nothing more can be appended')
      }
    }
    // A client that lost the answer to its completing request and sends it again, from an older offset: a 409 that
    // says where the upload stands, complete (never "?0, resume at 4": a completing append there is refused).
    const late = await append(version, url, 2, true, 'ne')
    t.equal(late.status, 409, `v${version}: a wrong offset on a complete upload`)
    t.equal(late.headers['upload-offset'], '4')
    t.equal(pick(late.headers, version === 3 ? 'upload-incomplete' : 'upload-complete'), version === 3 ? '?0' : '?1', `v${version}: said complete`)
    if (version >= 6) t.equal(JSON.parse(late.text).type, 'https://iana.org/assignments/http-problem-types#mismatching-upload-offset')
    const head = await draft(version, url, { method: 'HEAD' })
    t.equal(pick(head.headers, version === 3 ? 'upload-incomplete' : 'upload-complete'), version === 3 ? '?0' : '?1', 'as HEAD says')
    t.equal((await stored(server, url)).toString(), 'done')
    t.equal(completed.length, 1, 'completion hook not run again')
  }
  // tus 1.0.0 has no complete flag: the same request is a 409 with the offset, as it always was.
  const { server } = await recordingServer(t)
  const { url } = await create(server, 8, true, 'done')
  const tus = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '2', 'Content-Type': 'application/offset+octet-stream' }, body: 'ne' })
  t.equal(tus.status, 409)
  t.equal(tus.headers['upload-offset'], '4')
  t.equal(tus.headers['upload-complete'], undefined)
  t.equal((await stored(server, url)).toString(), 'done')
})

t.test('inconsistent lengths: 400 inconsistent-upload-length, nothing stored beyond the length', async (t) => {
  const server = await startServer(t)
  const mismatch = await create(server, 8, true, 'hello', { 'Upload-Length': '10' })
  t.equal(mismatch.response.status, 400, 'Upload-Length vs Content-Length of a completing creation')
  t.equal(mismatch.response.headers['content-type'], 'application/problem+json')
  t.equal(JSON.parse(mismatch.response.text).type, 'https://iana.org/assignments/http-problem-types#inconsistent-upload-length')
  t.equal(mismatch.response.interim.length, 0, 'refused before the upload exists: no 104')

  const { url } = await create(server, 8, false, 'hello', { 'Upload-Length': '10' })
  const changed = await append(8, url, 5, false, 'ab', { 'Upload-Length': '12' })
  t.equal(changed.status, 400, 'a length that changes')
  t.equal(changed.headers['upload-offset'], '5')
  const beyond = await append(8, url, 5, false, 'abcdefgh')
  t.equal(beyond.status, 400, 'Content-Length beyond the length')
  t.equal(JSON.parse(beyond.text).type, 'https://iana.org/assignments/http-problem-types#inconsistent-upload-length')
  const early = await append(8, url, 5, true, 'ab')
  t.equal(early.status, 400, 'completing before the length is reached')
  t.equal(early.headers['upload-offset'], '5')
  const contradicting = await append(8, url, 5, true, 'ab', { 'Upload-Length': '10' })
  t.equal(contradicting.status, 400, 'an append completing at 7 that declares 10')
  t.equal(JSON.parse(contradicting.text).type, 'https://iana.org/assignments/http-problem-types#inconsistent-upload-length')
  t.equal(contradicting.headers['upload-offset'], '5', 'with the offset, as every refusal of an active upload (I6-2)')
  t.equal((await stored(server, url)).toString(), 'hello', 'nothing appended by refused requests')

  // Without Content-Length the server counts while it stages the body: none of a body that goes beyond the
  // length is stored, and the upload stays as it was (only a DELETE, through onUploadTerminate, removes one).
  const chunked = await append(8, url, 5, false, Readable.from([Buffer.from('abc'), Buffer.from('defgh')]))
  t.equal(chunked.status, 400)
  t.equal(JSON.parse(chunked.text).type, 'https://iana.org/assignments/http-problem-types#inconsistent-upload-length')
  t.equal(chunked.headers['upload-offset'], '5')
  const kept = await draft(8, url, { method: 'HEAD' })
  t.equal(kept.status, 204, 'the upload is kept')
  t.equal(kept.headers['upload-offset'], '5')
  t.equal((await stored(server, url)).toString(), 'hello', 'nothing of the overflowing body stored')

  const short = await create(server, 5, false, 'hello', { 'Upload-Length': '10' })
  const below = await append(5, short.url, 5, false, '', { 'Upload-Length': '3' })
  t.equal(below.status, 400, 'v5: plain-text body, same rule')
  t.match(below.headers['content-type'], /^text\/plain/)
})

/** A request over a raw socket with exactly these header lines and no body framing at all (no Content-Length, no Transfer-Encoding). */
async function bodiless (url: string, method: string, headers: Record<string, string>): Promise<{ status: number, text: string, interim: number }> {
  const { port, pathname } = new URL(url)
  const socket = connect(Number(port), '127.0.0.1')
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('')
  // Written, not ended: Connection: close has the server close the socket once it has answered.
  socket.write(`${method} ${pathname} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n${lines}\r\n`)
  let received = ''
  socket.on('data', (chunk: Buffer) => { received += chunk.toString('latin1') })
  await new Promise((resolve, reject) => { socket.on('close', resolve).on('error', reject) })
  const parts = received.split('\r\n\r\n')
  const final = parts.findIndex((part) => /^HTTP\/1\.1 [2-5]/.test(part))
  return { status: Number(parts[final]!.slice(9, 12)), text: parts.slice(final + 1).join('\r\n\r\n'), interim: final }
}

t.test('a completing request whose Upload-Length is not where its content ends is refused, the length left unrecorded', async (t) => {
  for (const version of ALL_VERSIONS) {
    const { server, completed } = await recordingServer(t)
    const { url } = await create(server, version, false, 'hello')
    const headers = { 'Upload-Draft-Interop-Version': String(version), 'Upload-Offset': '5', 'Upload-Length': '10', ...COMPLETE(version, true), ...APPEND_TYPE(version) }
    // No content at all (no Content-Length either, as HTTP/2 clients send it), then a streamed body that ends short.
    const empty = await bodiless(url, 'PATCH', headers)
    t.equal(empty.status, 400, `v${version}: no content ends the upload at 5, not 10`)
    if (version >= 6) t.equal(JSON.parse(empty.text).type, 'https://iana.org/assignments/http-problem-types#inconsistent-upload-length')
    const streamed = await append(version, url, 5, true, Readable.from([Buffer.from('!'), Buffer.from('!')]), { 'Upload-Length': '10' })
    t.equal(streamed.status, 400, `v${version}: a streamed body ending at 7, not 10`)
    t.equal(streamed.headers['upload-offset'], '5')
    const head = await draft(version, url, { method: 'HEAD' })
    t.equal(head.headers['upload-length'], undefined, 'no length recorded by the refused requests')
    t.equal(head.headers['upload-offset'], '5')
    t.equal((await stored(server, url)).toString(), 'hello', 'nothing of them stored')
    // The client's real last bytes (streamed, with the length they end at) complete the upload.
    const last = await append(version, url, 5, true, Readable.from([Buffer.from(' world')]), { 'Upload-Length': '11' })
    t.equal(last.status, 204, `v${version}: completed`)
    t.equal(sha256(await stored(server, url)), sha256('hello world'))
    t.same(completed.map((upload) => [upload.id, upload.size]), [[idOf(url), 11]], 'completed once, at its length')
    const done = await draft(version, url, { method: 'HEAD' })
    t.equal(done.headers['upload-length'], '11')
    t.equal(pick(done.headers, version === 3 ? 'upload-incomplete' : 'upload-complete'), version === 3 ? '?0' : '?1')

    // A creation that says so is refused before the upload exists: no 104, nothing left behind.
    const before = (await readdir(server.dir)).length
    const creation = await bodiless(server.endpoint, 'POST', { 'Upload-Draft-Interop-Version': String(version), 'Upload-Length': '3', ...COMPLETE(version, true) })
    t.equal(creation.status, 400, `v${version}: a creation without content that declares 3 bytes`)
    t.equal(creation.interim, 0, 'no 104')
    t.equal((await readdir(server.dir)).length, before, 'no upload created')
  }
  // tus 1.0.0 has no completing request: the same empty PATCH declares the length, as it always did.
  const server = await startServer(t)
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Defer-Length': '1' } })
  const url = new URL(created.headers.location!, server.origin).href
  const tus = await bodiless(url, 'PATCH', { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', 'Upload-Length': '10', 'Content-Type': 'application/offset+octet-stream' })
  t.equal(tus.status, 204)
  t.equal((await tusRequest(url, { method: 'HEAD' })).headers['upload-length'], '10')
})

t.test('limits: 413 with Upload-Limit beyond maxSize; OPTIONS announces Upload-Limit and Accept-Patch', async (t) => {
  const server = await startServer(t, { maxSize: 1000, daysToKeep: 2 })
  const big = await create(server, 8, false, undefined, { 'Upload-Length': '1001' })
  t.equal(big.response.status, 413)
  t.equal(big.response.headers['upload-limit'], 'max-size=1000, min-size=0, max-age=172800')
  for (const [version, limit] of [[6, 'max-size=1000, min-size=0, expires=172800'], [8, 'max-size=1000, min-size=0, max-age=172800'], [5, 'max-size=1000, min-size=0, max-age=172800']] as const) {
    const options = await draft(version, server.endpoint, { method: 'OPTIONS' })
    t.equal(options.status, 204, `v${version}`)
    t.equal(options.headers['upload-limit'], limit)
    t.equal(options.headers['accept-patch'], 'application/partial-upload')
    t.equal(options.headers['upload-draft-interop-version'], String(version))
  }
  const { url } = await create(server, 8, false, 'x')
  const head = await draft(8, url, { method: 'HEAD' })
  const age = Number(/max-age=(\d+)/.exec(pick(head.headers, 'upload-limit') ?? '')?.[1])
  t.ok(age > 172_790 && age <= 172_800, 'max-age of an upload is what is left of its retention')
  const streamed = await draft(8, server.endpoint, { method: 'POST', headers: { 'Upload-Complete': '?0' }, body: Readable.from([randomBytesSeeded(600), randomBytesSeeded(600)]) })
  t.equal(streamed.status, 413, 'a body of unknown length beyond maxSize')
  t.match(streamed.headers['upload-limit'], /^max-size=1000, min-size=0, max-age=\d+$/)
  t.equal(streamed.headers['upload-offset'], '0', 'nothing of a body that goes beyond maxSize is stored')
  const forever = await startServer(t, { daysToKeep: Infinity })
  t.match((await draft(8, forever.endpoint, { method: 'OPTIONS' })).headers['upload-limit'], /^max-size=\d+, min-size=0$/, 'no max-age when uploads never expire')
})

t.test('Upload-Limit stays a Structured Fields dictionary: limits beyond 15 digits are announced as the largest Integer', async (t) => {
  const largest = '999999999999999'
  const server = await startServer(t, { maxSize: Number.MAX_SAFE_INTEGER })
  const options = await draft(8, server.endpoint, { method: 'OPTIONS' })
  t.equal(options.headers['upload-limit'], `max-size=${largest}, min-size=0, max-age=432000`)
  const { response, url } = await create(server, 6, false, 'abc')
  t.equal(response.interim[0]?.headers['upload-limit'], `max-size=${largest}, min-size=0, expires=432000`, 'the 104')
  t.match(response.headers['upload-limit'], new RegExp(`^max-size=${largest}, min-size=0, expires=43[12]\\d{3}$`), 'the 201')
  t.match(pick((await draft(8, url, { method: 'HEAD' })).headers, 'upload-limit'), new RegExp(`^max-size=${largest}, min-size=0, max-age=43[12]\\d{3}$`))
  const uploaded = await append(6, url, 3, true, 'de')
  t.equal(uploaded.status, 204, 'and the upload goes on as before')
  t.equal((await stored(server, url)).toString(), 'abcde')

  // The longest retention allowed (1,000,000 days; a longer one is refused at registration): max-age has 11 digits.
  const ages = await startServer(t, { daysToKeep: 1_000_000 })
  t.equal((await draft(8, ages.endpoint, { method: 'OPTIONS' })).headers['upload-limit'], 'max-size=128849018880, min-size=0, max-age=86400000000')
  const aged = await create(ages, 8, false, 'abc')
  const age = /^max-size=128849018880, min-size=0, max-age=(\d+)$/.exec(String(aged.response.headers['upload-limit']))?.[1]
  t.ok(Number(age) > 86_400_000_000 - 60 && Number(age) <= 86_400_000_000, `max-age=${String(age)}: the retention left, in seconds`)
})

t.test('dispatch: unsupported interop versions get 400 and no 104; no header means tus 1.0.0', async (t) => {
  const server = await startServer(t, { ietfDraftVersions: [5, 6] })
  for (const value of ['2', '8', 'abc', '6.0', '']) {
    const response = await draftRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Draft-Interop-Version': value, 'Upload-Complete': '?1' }, body: 'abc' })
    t.equal(response.status, 400, `"${value}"`)
    t.equal(response.text, `Unsupported Upload-Draft-Interop-Version "${value}"; this server speaks interop versions 5, 6`)
    t.equal(response.interim.length, 0)
    t.equal(response.headers['tus-resumable'], undefined)
  }
  const tus = await draftRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Complete': '?1' }, body: 'abc' })
  t.equal(tus.status, 412, 'without the header the request is tus, and Tus-Resumable is required')
  t.equal(tus.headers['tus-resumable'], '1.0.0')

  const tusOnly = await startServer(t, { ietfDraftVersions: [] })
  const ignored = await draft(6, tusOnly.endpoint, { method: 'POST', headers: { 'Upload-Complete': '?1' }, body: 'abc' })
  t.equal(ignored.status, 412, 'ietfDraftVersions: [] turns the draft off: the header is ignored')
  // @ts-expect-error what a JavaScript caller may pass
  await t.rejects(startServer(t, { ietfDraftVersions: [2] }), /ietfDraftVersions: 2 is not a known interop version/)
})

t.test('Upload-Draft-Interop-Version is an Integer item: leading zeros and parameters name the same version', async (t) => {
  const server = await startServer(t)
  for (const version of [3, 4, 5, 6, 7, 8, 9]) {
    for (const spelled of [`0${version}`, `00${version}`, `${version};x=1`]) {
      const body = randomBytesSeeded(64, version)
      const created = await draftRequest(server.endpoint, {
        method: 'POST', headers: { 'Upload-Draft-Interop-Version': spelled, ...COMPLETE(version, false), 'Upload-Length': '64' }, body: body.subarray(0, 20)
      })
      t.equal(created.status, 201, `"${spelled}": created`)
      t.equal(created.headers['upload-draft-interop-version'], String(version), `"${spelled}": answered as interop ${version}`)
      t.equal(created.interim[0]?.headers['upload-draft-interop-version'], String(version), `"${spelled}": its 104 names interop ${version}`)
      const url = new URL(created.headers.location!, server.origin).href
      const appended = await draftRequest(url, {
        method: 'PATCH',
        headers: { 'Upload-Draft-Interop-Version': spelled, 'Upload-Offset': '20', ...COMPLETE(version, true), ...APPEND_TYPE(version) },
        body: body.subarray(20)
      })
      t.equal(appended.status, 204, `"${spelled}": appended, complete`)
      t.equal(appended.headers[version === 3 ? 'upload-incomplete' : 'upload-complete'], version === 3 ? '?0' : '?1')
      const head = await draftRequest(url, { method: 'HEAD', headers: { 'Upload-Draft-Interop-Version': spelled } })
      t.equal(head.status, 204)
      t.equal(head.headers['upload-offset'], '64')
      t.equal(sha256(await stored(server, url)), sha256(body), `"${spelled}": the bytes on disk`)
    }
  }
  for (const value of ['-6', '6.0', '0x6', '6 6', '1234567890123456']) {
    const refused = await draftRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Draft-Interop-Version': value, 'Upload-Complete': '?1' }, body: 'abc' })
    t.equal(refused.status, 400, `"${value}" is no Integer of a known version`)
    t.equal(refused.interim.length, 0)
  }
})

t.test('a Structured Field that is no Item (two members, a parameter naming no key) is ignored as a whole, never read as its first member', async (t) => {
  const server = await startServer(t)
  const completed: string[] = []
  server.app.tus.on('completed', (upload) => { completed.push(upload.id) })
  const { url } = await create(server, 6, false)
  // Upload-Complete sent twice (`?1;a` and `?0`) reads as one field `?1;a, ?0`: a List, not the Item it must be.
  for (const value of ['?1;a, ?0', '?1, ?0', '?1;', '?1;A', '?1;a="x']) {
    const response = await append(6, url, 0, true, 'abc', { 'Upload-Complete': value })
    t.equal(response.status, 400, `Upload-Complete: ${value}`)
    t.equal(response.text, 'Invalid Upload-Complete header: missing, or not ?0 / ?1')
  }
  for (const value of ['0;', '0, 0', '0;a, 3']) {
    t.equal((await append(6, url, 0, false, 'abc', { 'Upload-Offset': value })).status, 400, `Upload-Offset: ${value}`)
  }
  t.equal((await stored(server, url)).length, 0, 'nothing stored by the refused appends')
  t.same(completed, [], 'nothing completed')
  const withParameters = await append(6, url, 0, true, 'abc', { 'Upload-Complete': '?1;a=1; b="x;y, z";c' })
  t.equal(withParameters.status, 204, 'an Item with parameters reads as the Item')
  t.equal((await stored(server, url)).toString(), 'abc')
})

t.test('malformed draft requests: 400 or 415 naming the header', async (t) => {
  const server = await startServer(t)
  const noComplete = await draft(6, server.endpoint, { method: 'POST', body: 'abc' })
  t.equal(noComplete.status, 400)
  t.equal(noComplete.text, 'Invalid Upload-Complete header: missing, or not ?0 / ?1')
  t.equal((await draft(6, server.endpoint, { method: 'POST', headers: { 'Upload-Complete': 'true' } })).status, 400, 'not a Structured Fields boolean')
  t.equal((await create(server, 6, false, undefined, { 'Upload-Offset': '0' })).response.status, 400, 'creation with Upload-Offset')
  t.equal((await draft(3, server.endpoint, { method: 'POST', headers: { 'Upload-Complete': '?0' } })).status, 400, 'v3 reads Upload-Incomplete only')

  const { url } = await create(server, 6, false, 'abc')
  const untyped = await draft(6, url, { method: 'PATCH', headers: { 'Upload-Offset': '3', 'Upload-Complete': '?0' }, body: 'de' })
  t.equal(untyped.status, 415, 'interop 6 appends must be application/partial-upload')
  t.equal(untyped.text, 'An append must be Content-Type: application/partial-upload (got "")')
  t.equal((await append(6, url, 3, false, 'de', { 'Upload-Offset': 'x' })).status, 400, 'Upload-Offset not an integer')
  const padded = await append(6, url, 3, false, 'de', { 'Upload-Offset': '003' })
  t.equal(padded.status, 204, 'an Integer may have leading zeros (RFC 9651: 1*15DIGIT): 003 is 3')
  t.equal(padded.headers['upload-offset'], '5')
  t.equal((await draft(6, url, { method: 'PATCH', headers: { 'Upload-Offset': '3', ...APPEND_TYPE(6) }, body: 'de' })).status, 400, 'interop 6 appends must say Upload-Complete')
  t.equal((await draft(6, url, { method: 'HEAD', headers: { 'Upload-Offset': '3' } })).status, 400, 'HEAD with Upload-Offset')
  t.equal((await draft(6, url, { method: 'DELETE', headers: { 'Upload-Complete': '?1' } })).status, 400, 'DELETE with Upload-Complete')

  // Before interop 6 any media type (or none) is an append, and a missing Upload-Complete means ?0.
  const v5 = await create(server, 5, false, 'abc')
  const loose = await draft(5, v5.url, { method: 'PATCH', headers: { 'Upload-Offset': '3' }, body: 'de' })
  t.equal(loose.status, 204)
  t.equal(loose.headers['upload-offset'], '5')
  t.equal(loose.headers['upload-complete'], '?0')
  t.equal((await stored(server, v5.url)).toString(), 'abcde')
})

t.test('state headers on HEAD and DELETE: 400 up to interop 6 (-01 to -05), no reason to refuse from interop 7 (-06 on)', async (t) => {
  const server = await startServer(t)
  for (const version of ALL_VERSIONS) {
    const { url } = await create(server, version, false, 'abc', { 'Upload-Length': '10' })
    const state = { 'Upload-Offset': '3', 'Upload-Length': '10', ...COMPLETE(version, false) }
    const head = await draft(version, url, { method: 'HEAD', headers: state })
    const deleted = await draft(version, url, { method: 'DELETE', headers: state })
    if (version <= 6) {
      t.equal(head.status, 400, `v${version}: HEAD refused`)
      t.equal(deleted.status, 400, `v${version}: DELETE refused`)
      t.equal((await stored(server, url)).toString(), 'abc', 'the upload is kept')
    } else {
      t.equal(head.status, 204, `v${version}: HEAD answered`)
      t.equal(head.headers['upload-offset'], '3')
      t.equal(head.headers['upload-length'], '10')
      t.equal(deleted.status, 204, `v${version}: DELETE cancels`)
      t.equal((await draft(version, url, { method: 'HEAD' })).status, 404, 'and the upload is gone')
    }
  }
})

t.test('DELETE cancels: 204, the onUploadTerminate hook runs, then 404', async (t) => {
  const terminated: string[] = []
  const server = await startServer(t, { onUploadTerminate: (upload) => { terminated.push(upload.id) } })
  const { url } = await create(server, 8, false, 'abc')
  const deleted = await draft(8, url, { method: 'DELETE' })
  t.equal(deleted.status, 204)
  t.same(terminated, [idOf(url)])
  t.equal((await draft(8, url, { method: 'HEAD' })).status, 404)
  t.equal((await append(8, url, 3, false, 'x')).status, 404)
})

t.test('GET: offset retrieval from interop 8 (204 until complete, then the bytes); a download before', async (t) => {
  const server = await startServer(t)
  const { url } = await create(server, 9, false, 'abc', { 'Upload-Length': '5' })
  const pending = await draft(9, url)
  t.equal(pending.status, 204)
  t.equal(pending.headers['upload-offset'], '3')
  t.equal(pending.headers['upload-length'], '5')
  t.equal(pending.headers['upload-complete'], '?0')
  t.equal(pending.headers['cache-control'], 'no-store')
  const eight = await draft(8, url)
  t.equal(eight.status, 204, 'interop 8 (the editor\'s copy of -12) retrieves the offset by GET too')
  t.equal(eight.headers['upload-offset'], '3')
  t.equal((await draft(7, url)).status, 409, 'interop 7: GET is the tus download, which needs a complete upload')
  await append(9, url, 3, true, 'de')
  for (const version of [8, 9]) {
    const done = await draft(version, url)
    t.equal(done.status, 200)
    t.equal(done.text, 'abcde')
    t.equal(done.headers['upload-complete'], '?1')
  }
})

t.test('X-HTTP-Method-Override: PATCH works for draft appends', async (t) => {
  const server = await startServer(t)
  const { url } = await create(server, 6, false, 'abc')
  const response = await draft(6, url, { method: 'POST', headers: { 'X-HTTP-Method-Override': 'PATCH', 'Upload-Offset': '3', 'Upload-Complete': '?1', ...APPEND_TYPE(6) }, body: 'de' })
  t.equal(response.status, 204)
  t.equal(response.headers['upload-complete'], '?1')
  t.equal((await stored(server, url)).toString(), 'abcde')
})

t.test('progress 104s carry Upload-Offset (interop 5 on), never a second Location; none for interop 3/4', async (t) => {
  const data = randomBytesSeeded(2 * 1024 * 1024, 3)
  for (const version of [4, 5, 9]) {
    const server = await startServer(t, { progressInterval: 0 })
    // A streamed body: the server stores it chunk by chunk, reporting progress after each (progressInterval 0).
    const body = Readable.from((function * () { for (let i = 0; i < data.length; i += 256 * 1024) yield data.subarray(i, i + 256 * 1024) })())
    const response = await draft(version, server.endpoint, { method: 'POST', headers: { ...COMPLETE(version, true), 'Content-Length': String(data.length) }, body })
    const url = new URL(response.headers.location!, server.origin).href
    t.equal(response.status, 201, `v${version}`)
    t.equal(sha256(await stored(server, url)), sha256(data))
    const [first, ...progress] = response.interim
    t.equal(first?.headers.location, response.headers.location)
    t.ok(progress.every((interim) => interim.status === 104 && interim.headers.location === undefined), 'later 104s have no Location')
    const offsets = progress.map((interim) => Number(interim.headers['upload-offset']))
    if (version < 5) {
      t.equal(progress.length, 0)
    } else {
      t.ok(offsets.length > 0, `${offsets.length} progress 104s`)
      t.ok(offsets.every((offset, i) => offset > (offsets[i - 1] ?? 0) && offset <= data.length), 'offsets increase')
    }
  }
})

/**
 * A draft creation over a raw socket that sends only `sent` bytes of a `total`-byte body, then resolves
 * with the upload URL from the 104 (read before any final response) and the still-open socket.
 */
async function stalledCreation (server: TestServer, total: number, sent: Buffer, headers: Record<string, string> = {}) {
  const { port } = new URL(server.origin)
  const socket = connect(Number(port), '127.0.0.1')
  const lines = Object.entries({ 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?1', 'Content-Length': String(total), ...headers })
    .map(([name, value]) => `${name}: ${value}\r\n`).join('')
  socket.write(`POST /files/ HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n${lines}\r\n`)
  socket.write(sent)
  let received = ''
  const location = await new Promise<string>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1')
      const match = /^HTTP\/1\.1 104 Upload Resumption Supported\r\n(?:.*\r\n)*?Location: (\S+)\r\n/i.exec(received)
      if (match !== null) resolve(match[1]!)
    })
    socket.on('error', reject)
    socket.on('close', () => { reject(new Error(`closed before a 104: ${received}`)) })
  })
  const closed = new Promise<string>((resolve) => { socket.on('close', () => { resolve(received) }) })
  return { socket, url: new URL(location, server.origin).href, closed }
}

t.test('an interrupted creation keeps what arrived, is not complete, and resumes to the right bytes', async (t) => {
  const { server, completed } = await recordingServer(t)
  const data = randomBytesSeeded(100_000, 11)
  const { socket, url, closed } = await stalledCreation(server, data.length, data.subarray(0, 40_000))
  socket.destroy()
  await closed
  // HEAD waits for the creation request to let go of the upload, so it sees everything that was stored.
  const head = await draft(6, url, { method: 'HEAD' })
  t.equal(head.status, 204)
  t.equal(head.headers['upload-complete'], '?0')
  t.equal(head.headers['upload-length'], '100000', 'the length from ?1 + Content-Length is recorded')
  const offset = Number(head.headers['upload-offset'])
  t.ok(offset > 0 && offset <= 40_000, `offset ${offset} of the 40000 bytes sent`)
  t.equal(completed.length, 0)
  const rest = await append(6, url, offset, true, data.subarray(offset))
  t.equal(rest.status, 204)
  t.equal(rest.headers['upload-complete'], '?1')
  t.equal(sha256(await stored(server, url)), sha256(data))
  t.equal(completed.length, 1)
})

t.test('a newer request on an upload interrupts the request still sending to it (no 423, no stale offset)', async (t) => {
  const server = await startServer(t, { lockTimeout: 60_000 })
  const data = randomBytesSeeded(50_000, 12)
  const { url, closed } = await stalledCreation(server, data.length, data.subarray(0, 20_000))
  const head = await draft(6, url, { method: 'HEAD' })
  t.equal(head.status, 204, 'answered without waiting for the stalled body')
  t.equal(head.headers['upload-offset'], '20000', 'everything the stalled request sent was stored')
  // A creation is answered all the same: its client learns the offset stored, its connection closes.
  const answer = await closed
  t.match(answer, /HTTP\/1\.1 201 Created\r\n/, 'the stalled creation is answered as created')
  t.match(answer, /\r\nupload-offset: 20000\r\n/, 'with the offset stored')
  t.match(answer, /\r\nupload-complete: \?0\r\n/)
  t.match(answer, /\r\nconnection: close\r\n/)
  const rest = await append(6, url, 20_000, true, data.subarray(20_000))
  t.equal(rest.status, 204)
  t.equal(sha256(await stored(server, url)), sha256(data))
})

t.test('Expect: 100-continue still gets its 100 before the 104; HTTP/1.0 clients get no 104', async (t) => {
  const server = await startServer(t)
  const interim: number[] = []
  const response = await new Promise<{ status: number }>((resolve, reject) => {
    const request = httpRequest(server.endpoint, {
      method: 'POST',
      headers: { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?1', 'Content-Length': '3', Expect: '100-continue' },
      agent: false
    })
    request.on('information', (info) => { interim.push(info.statusCode) })
    request.on('continue', () => { request.end('abc') })
    request.on('response', (res) => { res.resume(); res.on('end', () => { resolve({ status: res.statusCode! }) }) })
    request.on('error', reject)
  })
  t.equal(response.status, 201)
  // The 104 (with Location) once the upload exists; the 100 when its body is about to be read, after every check.
  t.same(interim, [104, 100])

  const { port } = new URL(server.origin)
  const socket = connect(Number(port), '127.0.0.1')
  // Not end(): Node's server closes a connection whose client half-closed it. HTTP/1.0 closes after the response.
  socket.write('POST /files/ HTTP/1.0\r\nHost: 127.0.0.1\r\nUpload-Draft-Interop-Version: 6\r\nUpload-Complete: ?1\r\nContent-Length: 3\r\n\r\nabc')
  let raw = ''
  for await (const chunk of socket) raw += (chunk as Buffer).toString('latin1')
  t.match(raw, /^HTTP\/1\.1 201 /, 'the final response comes first')
  t.notMatch(raw, / 104 /)
})

t.test('draft uploads share hooks and expiry with tus uploads', async (t) => {
  const created: string[] = []
  const server = await startServer(t, {
    auth: (request) => {
      if (request.headers.authorization !== 'Bearer ok') throw Object.assign(new Error('Who are you?'), { statusCode: 401 })
    },
    onUploadCreate: (upload) => {
      if (upload.metadata.filename === 'forbidden.exe') throw Object.assign(new Error('Not that file'), { statusCode: 403 })
      created.push(upload.metadata.filename ?? '')
      return { metadata: { ...upload.metadata, owner: 'alice' } }
    }
  })
  const auth = { Authorization: 'Bearer ok' }
  const refused = await create(server, 6, true, 'abc')
  t.equal(refused.response.status, 401, 'auth runs on draft requests')
  t.equal(refused.response.text, 'Who are you?')
  t.equal(refused.response.headers['upload-draft-interop-version'], '6')
  t.equal(refused.response.headers['tus-resumable'], undefined)
  const forbidden = await create(server, 6, true, 'abc', { ...auth, 'Content-Disposition': 'attachment; filename=forbidden.exe' })
  t.equal(forbidden.response.status, 403, 'onUploadCreate sees the draft filename and can refuse')
  t.equal(forbidden.response.interim.length, 0, 'no 104 for a refused creation')

  const { url } = await create(server, 6, false, 'abc', { ...auth, 'Content-Disposition': 'attachment; filename=keep.txt' })
  const head = await tusRequest(url, { method: 'HEAD', headers: auth })
  t.equal(head.status, 200, 'a draft upload is a tus upload too')
  t.equal(head.headers['upload-offset'], '3')
  t.match(head.headers['upload-metadata'], /owner /, 'onUploadCreate changes are stored')
  t.same(created, ['keep.txt'])

  await backdate(server.dir, idOf(url), 10)
  const removed = await removeExpired(server.app)
  t.same(removed.map((upload) => upload.id), [idOf(url)], 'removeExpired removes an expired draft upload')
  t.equal((await draft(6, url, { method: 'HEAD', headers: auth })).status, 404)
})

t.test('HTTP/2: the 104 goes out as an informational HEADERS frame', async (t) => {
  const server = await startServer(t, {}, undefined, { http2: true } as Parameters<typeof startServer>[3])
  const session = connectHttp2(server.origin)
  t.teardown(() => { session.close() })
  const informational: Array<Record<string, unknown>> = []
  const { status, location } = await new Promise<{ status: number, location: string }>((resolve, reject) => {
    const stream = session.request({ ':method': 'POST', ':path': '/files/', 'upload-draft-interop-version': '6', 'upload-complete': '?1', 'content-length': '5' })
    stream.on('headers', (headers) => { informational.push(headers) })
    stream.on('response', (headers) => {
      stream.resume()
      stream.on('end', () => { resolve({ status: Number(headers[':status']), location: String(headers.location) }) })
    })
    stream.on('error', reject)
    stream.end('hello')
  })
  t.equal(status, 201)
  t.equal(informational.length, 1)
  t.equal(informational[0]?.[':status'], 104)
  t.equal(informational[0]?.location, location)
  t.equal(informational[0]?.['upload-draft-interop-version'], '6')
})

t.test('an interrupted append keeps what arrived and stays resumable', async (t) => {
  const { server, completed } = await recordingServer(t, { progressInterval: 0 })
  const data = randomBytesSeeded(50_000, 13)
  const { url } = await create(server, 6, false, undefined, { 'Upload-Length': String(data.length) })
  const stored20k = new Promise<void>((resolve) => {
    server.app.tus.on('progress', (upload) => { if (upload.offset === 20_000) resolve() })
  })
  const { port, pathname } = new URL(url)
  const socket = connect(Number(port), '127.0.0.1')
  socket.write(`PATCH ${pathname} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpload-Draft-Interop-Version: 6\r\n` +
    `Upload-Offset: 0\r\nUpload-Complete: ?1\r\nContent-Type: application/partial-upload\r\nContent-Length: ${data.length}\r\n\r\n`)
  socket.write(data.subarray(0, 20_000))
  await stored20k
  socket.destroy()
  const head = await draft(6, url, { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], '20000')
  t.equal(head.headers['upload-complete'], '?0', 'a cut-short ?1 append does not complete the upload')
  t.equal(completed.length, 0)
  const rest = await append(6, url, 20_000, true, data.subarray(20_000))
  t.equal(rest.status, 204)
  t.equal(sha256(await stored(server, url)), sha256(data))
  t.equal(completed.length, 1)
})

t.test('an append completing short of (or beyond) the recorded length says where it completes and the length, not that Upload-Length changed', async (t) => {
  const server = await startServer(t)
  for (const version of ALL_VERSIONS) {
    const { url } = await create(server, version, false, '', { 'Upload-Length': '10' })
    for (const body of ['abc', 'abcdefghijkl']) {
      const refused = await append(version, url, 0, true, body)
      t.equal(refused.status, 400, `interop ${version}: ${body.length} bytes completing a 10-byte upload`)
      t.equal(refused.headers['upload-offset'] ?? '0', '0')
      t.match(refused.text, new RegExp(`completes the upload at ${body.length} bytes \\(where its body ends\\), but its length is 10 bytes`))
      t.notMatch(refused.text, /already set/, 'no Upload-Length was sent: none is said to change')
    }
    t.equal((await stored(server, url)).length, 0, 'nothing stored')
    const changed = await append(version, url, 0, false, 'abc', { 'Upload-Length': '11' })
    t.same([changed.status, /Upload-Length is already set to 10/.test(changed.text)], [400, true], `interop ${version}: an Upload-Length that changes is named`)
  }
})

t.test('maxSize: a length beyond it is refused in the words of the request: its Upload-Length, or where its completing body ends', async (t) => {
  const server = await startServer(t, { maxSize: 1000 })
  const body = Buffer.alloc(1500, 1)
  for (const version of [6, 9]) {
    const bodied = await create(server, version, true, body)
    t.equal(bodied.response.status, 413, `interop ${version}: a complete creation of 1500 bytes, no Upload-Length`)
    t.match(bodied.response.text, /completes the upload at 1500 bytes \(where its body ends\), beyond the maximum upload size of 1000 bytes/)
    t.notMatch(bodied.response.text, /Upload-Length/, 'no Upload-Length was sent: none is named')
    const declared = await create(server, version, true, body, { 'Upload-Length': '1500' })
    t.same([declared.response.status, /Upload-Length 1500 exceeds the maximum upload size of 1000 bytes/.test(declared.response.text)], [413, true], `interop ${version}: an Upload-Length of 1500 is named`)
    const { url } = await create(server, version, false, 'abc')
    const appended = await append(version, url, 3, true, body)
    t.equal(appended.status, 413, `interop ${version}: an append completing at 1503`)
    t.match(appended.text, /completes the upload at 1503 bytes \(where its body ends\)/)
  }
  const tus = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '1500' } })
  t.same([tus.status, /Upload-Length 1500 exceeds/.test(tus.text)], [413, true], 'tus: its Upload-Length')
})
