// The IETF "Resumable Uploads for HTTP" draft on the tus routes: real tus-js-client uploads in both of its
// draft modes, and raw node:http / node:net requests for each rule and interop version (104s included).
import t from 'tap'
import { readFile } from 'node:fs/promises'
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import { connect } from 'node:net'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { Upload, type UploadOptions } from 'tus-js-client'
import type { UploadInfo } from '../lib/index.js'
import { backdate, idOf, randomBytesSeeded, sha256, startServer, tusRequest, type TestServer } from './helpers.js'

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

async function stored (server: TestServer, url: string): Promise<Buffer> {
  return await readFile(join(server.dir, idOf(url)))
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
}

