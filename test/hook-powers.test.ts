// Each lifecycle hook's power (what it may change or refuse) and timing (when, how often).
import t from 'tap'
import { readdir, readFile, stat } from 'node:fs/promises'
import { once } from 'node:events'
import Fastify from 'fastify'
import tusPlugin, { type UploadInfo, type UploadResponse } from '../lib/index.js'
import { createUpload, idOf, randomBytesSeeded, send, sha256, startServer, tusRequest, tusUpload } from './helpers.js'

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }
const patch = async (url: string, offset: number, body: string | Buffer, headers: Record<string, string> = {}) =>
  await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': String(offset), ...OCTET, ...headers }, body })
const refusal = (message: string, statusCode: number): Error => Object.assign(new Error(message), { statusCode })

t.test('onUploadCreate: refuses with its status and message, nothing stored', async (t) => {
  const server = await startServer(t, { onUploadCreate: () => { throw refusal('Only PDFs here', 415) } })
  const response = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '3' } })
  t.equal(response.status, 415)
  t.equal(response.text, 'Only PDFs here')
  t.same(await readdir(server.dir), [])
})

t.test('onUploadCreate: sets the id and rewrites the metadata; HEAD, PATCH and GET use them', async (t) => {
  const server = await startServer(t, {
    onUploadCreate: (upload) => ({ id: `doc-${upload.metadata.filename ?? 'x'}`, metadata: { filename: 'renamed.txt', owner: 'alice' } })
  })
  const url = await createUpload(server, { 'Upload-Length': '5', 'Upload-Metadata': `filename ${Buffer.from('a').toString('base64')}` })
  t.equal(idOf(url), 'doc-a')
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.headers['upload-metadata'], `filename ${Buffer.from('renamed.txt').toString('base64')},owner ${Buffer.from('alice').toString('base64')}`)
  t.equal((await patch(url, 0, 'hello')).status, 204)
  t.equal(await readFile(`${server.dir}/doc-a`, 'utf8'), 'hello')
  const download = await tusRequest(url)
  t.match(download.headers['content-disposition'], /filename="renamed.txt"/)
})

t.test('onUploadCreate: an id already in use is 409 and leaves the existing upload untouched', async (t) => {
  const server = await startServer(t, { onUploadCreate: () => ({ id: 'fixed' }) })
  const url = await createUpload(server, { 'Upload-Length': '5' })
  await patch(url, 0, 'hello')
  const again = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '9' } })
  t.equal(again.status, 409)
  t.equal(again.text, 'Upload id "fixed" is already in use')
  t.equal(again.headers.location, undefined)
  t.equal(await readFile(`${server.dir}/fixed`, 'utf8'), 'hello')
  t.equal((await tusRequest(url, { method: 'HEAD' })).headers['upload-length'], '5')
})

t.test('onUploadCreate: invalid changes are the hook\'s failure (500 naming it), nothing stored', async (t) => {
  const cases: Array<[unknown, string]> = [
    [{ id: '../etc' }, 'invalid id'],
    [{ id: 'a'.repeat(129) }, 'invalid id'],
    [{ metadata: { 'bad key': 'x' } }, 'invalid metadata'],
    [{ metadata: { size: 5 } }, 'invalid metadata'],
    [{ directory: '../outside' }, 'invalid directory'],
    ['yes', 'must return a plain object or nothing'],
    [[{ id: 'abc' }], 'must return a plain object or nothing'],
    [new Date(), 'must return a plain object or nothing'],
    // A misspelt key was ignored: the upload was made with the metadata the hook meant to replace.
    [{ metdata: { owner: 'x' } }, 'unknown key "metdata" (did you mean "metadata"?); it may return id, metadata, directory']
  ]
  let current: unknown
  const server = await startServer(t, { onUploadCreate: () => current as undefined })
  for (const [changes, message] of cases) {
    current = changes
    const response = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '3' } })
    t.equal(response.status, 500, JSON.stringify(changes))
    t.ok(response.text.startsWith('onUploadCreate failed: it ') && response.text.includes(message), response.text)
  }
  t.same(await readdir(server.dir), [])
})

t.test('onUploadCreate may return the upload it was given, changed in place: its own keys are no unknown ones', async (t) => {
  const server = await startServer(t, { onUploadCreate: (upload) => { upload.metadata = { owner: 'alice' }; return upload } })
  const url = await createUpload(server, { 'Upload-Length': '3' })
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.headers['upload-metadata'], `owner ${Buffer.from('alice').toString('base64')}`)
})

t.test('onUploadProgress: stops an upload at a byte quota; bytes kept; a resume is refused with its message', async (t) => {
  const quota = 100_000
  const seen: number[] = []
  const server = await startServer(t, {
    progressInterval: 0,
    onUploadProgress: (upload) => {
      seen.push(upload.offset)
      if (upload.offset >= quota) throw refusal(`Quota of ${quota} bytes reached`, 413)
    }
  })
  const data = randomBytesSeeded(300_000, 7)
  const url = await createUpload(server, { 'Upload-Length': String(data.length) })
  const stopped = await patch(url, 0, data)
  t.equal(stopped.status, 413)
  t.equal(stopped.text, `Quota of ${quota} bytes reached`)
  const kept = Number(stopped.headers['upload-offset'])
  t.ok(kept >= quota && kept < data.length, `stopped at ${kept}, after the quota and before the end`)
  t.equal(seen[0], 0, 'called before the first byte')
  t.equal(seen.at(-1), kept)
  const onDisk = await readFile(`${server.dir}/${idOf(url)}`)
  t.equal(onDisk.length, kept)
  t.equal(sha256(onDisk), sha256(data.subarray(0, kept)), 'the bytes before the stop are kept, intact')
  t.equal((await tusRequest(url, { method: 'HEAD' })).headers['upload-offset'], String(kept))

  const error = await tusUpload(data, { endpoint: server.endpoint, uploadUrl: url }).then(() => undefined, (e: Error) => e)
  t.ok(error !== undefined, 'tus-js-client fails the resume')
  t.match(error?.message, `Quota of ${quota} bytes reached`)
  t.match(error?.message, 'response code: 413')
  t.equal((await stat(`${server.dir}/${idOf(url)}`)).size, kept, 'the refused resume wrote nothing')
})

t.test('onUploadProgress: timing with a long interval: start of each request and after its last byte, never after completion', async (t) => {
  const calls: number[] = []
  const server = await startServer(t, { progressInterval: 60_000, onUploadProgress: (upload) => { calls.push(upload.offset) } })
  const url = await createUpload(server, { 'Upload-Length': '9' })
  await patch(url, 0, 'abc')
  await patch(url, 3, 'def')
  await patch(url, 6, 'ghi')
  await patch(url, 9, '')
  t.same(calls, [0, 3, 3, 6, 6])
})

t.test('onUploadProgress: a plain error is 500 naming the hook, with the offset; the bytes stay', async (t) => {
  const server = await startServer(t, {
    progressInterval: 60_000,
    onUploadProgress: (upload) => { if (upload.offset > 0) throw new Error('quota service down') }
  })
  const url = await createUpload(server, { 'Upload-Length': '10' })
  const response = await patch(url, 0, 'hello')
  t.equal(response.status, 500)
  t.equal(response.text, 'onUploadProgress failed')
  t.equal(response.headers['upload-offset'], '5')
  t.equal(await readFile(`${server.dir}/${idOf(url)}`, 'utf8'), 'hello')
})

t.test('onUploadComplete: shapes the response of the completing PATCH and POST; tus-js-client still succeeds', async (t) => {
  const server = await startServer(t, {
    onUploadComplete: (upload): UploadResponse => ({
      status: 200,
      headers: { 'X-File-Url': `/media/${upload.id}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ id: upload.id, size: upload.size })
    })
  })
  const url = await createUpload(server, { 'Upload-Length': '5' })
  const partial = await patch(url, 0, 'he')
  t.equal(partial.status, 204, 'requests that do not complete the upload are not shaped')
  t.equal(partial.headers['x-file-url'], undefined)
  const done = await patch(url, 2, 'llo')
  t.equal(done.status, 200)
  t.equal(done.headers['x-file-url'], `/media/${idOf(url)}`)
  t.equal(done.headers['upload-offset'], '5')
  t.equal(done.headers['tus-resumable'], '1.0.0')
  t.same(JSON.parse(done.text), { id: idOf(url), size: 5 })

  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '2', ...OCTET }, body: 'hi' })
  t.equal(created.status, 200)
  t.ok(created.headers.location, 'Location stays')
  t.equal(created.headers['upload-offset'], '2')

  const data = randomBytesSeeded(50_000, 5)
  const uploaded = await tusUpload(data, { endpoint: server.endpoint, chunkSize: 20_000 })
  t.equal(sha256(await readFile(`${server.dir}/${idOf(uploaded)}`)), sha256(data))
})

t.test('onUploadComplete: a header given as a list is sent once per value (several Set-Cookie), in tus and the draft', async (t) => {
  const server = await startServer(t, { onUploadComplete: () => ({ headers: { 'Set-Cookie': ['a=1; Path=/', 'b=2; Path=/'] } }) })
  for (const [protocol, headers] of [
    ['tus', { 'Tus-Resumable': '1.0.0', 'Content-Type': 'application/offset+octet-stream' }],
    ['draft', { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?1', 'Content-Type': 'application/partial-upload' }]
  ] as const) {
    const url = await createUpload(server, { 'Upload-Length': '1' })
    const done = await send(url, 'PATCH', { ...headers, 'Upload-Offset': '0' }, 'x')
    t.equal(done.status, 204, protocol)
    t.same(done.headers['set-cookie'], ['a=1; Path=/', 'b=2; Path=/'], `${protocol}: two fields`)
  }
})

t.test('onUploadComplete: a body without a status answers a PATCH 200 and a POST 201', async (t) => {
  const server = await startServer(t, { onUploadComplete: () => ({ body: 'stored' }) })
  const url = await createUpload(server, { 'Upload-Length': '1' })
  const done = await patch(url, 0, 'x')
  t.equal(done.status, 200)
  t.equal(done.text, 'stored')
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '0' } })
  t.equal(created.status, 201)
  t.equal(created.text, 'stored')
})

t.test('onUploadComplete: a response it may not give is its failure: 500 with the offset, the upload kept', async (t) => {
  const cases: Array<[UploadResponse, string]> = [
    [{ headers: { 'Upload-Offset': '0' } }, 'header "Upload-Offset" belongs to the protocol'],
    [{ headers: { Location: '/elsewhere' } }, 'header "Location" belongs to the protocol'],
    [{ headers: { 'X-Bad': 'a\r\nb' } }, 'header "X-Bad" is invalid'],
    [{ status: 302 }, 'status 302 is not a 2xx status'],
    [{ status: 204, body: 'x' }, 'a 204 response cannot have a body'],
    [{ body: Buffer.alloc(64 * 1024 + 1) }, 'body is larger than 65536 bytes'],
    [{ headers: { 'Set-Cookie': ['a=1', 'b=2\r\nX-Injected: 1'] } }, 'header "Set-Cookie" is invalid'],
    [{ headers: { 'X-Empty': [] } }, 'header "X-Empty" is invalid'],
    [{ status: '200' } as unknown as UploadResponse, 'status must be a number (got string)'],
    [{ stauts: 201 } as unknown as UploadResponse, 'it returned an unknown key "stauts" (did you mean "status"?); it may return status, headers, body'],
    [[] as unknown as UploadResponse, 'it must return a plain object or nothing']
  ]
  let current: UploadResponse = {}
  const server = await startServer(t, { onUploadComplete: () => current })
  for (const [response, message] of cases) {
    current = response
    const url = await createUpload(server, { 'Upload-Length': '3' })
    const result = await patch(url, 0, 'abc')
    t.equal(result.status, 500, message)
    t.equal(result.text, `onUploadComplete failed: ${message}`)
    t.equal(result.headers['upload-offset'], '3')
    t.equal(result.headers.location, undefined)
    t.equal((await tusRequest(url)).text, 'abc', 'the upload is kept and downloadable')
  }
})

t.test('onUploadComplete fires once: retried final PATCH, concurrent HEADs, zero-length PATCHes, a resuming client', async (t) => {
  const calls: Array<{ offset: number, onDisk: string }> = []
  let completed = 0
  const server = await startServer(t, {
    onUploadComplete: async (upload: UploadInfo) => {
      calls.push({ offset: upload.offset, onDisk: sha256(await readFile(upload.path!)) })
    }
  })
  server.app.tus.on('completed', () => { completed++ })
  const data = randomBytesSeeded(40_000, 9)
  const url = await createUpload(server, { 'Upload-Length': String(data.length) })
  t.equal((await patch(url, 0, data.subarray(0, 30_000))).status, 204)
  const [final, ...heads] = await Promise.all([
    patch(url, 30_000, data.subarray(30_000)),
    ...Array.from({ length: 8 }, async () => await tusRequest(url, { method: 'HEAD' }))
  ])
  t.equal(final!.status, 204)
  for (const head of heads) t.match(head.headers['upload-offset'], /^(30000|40000)$/)
  const retried = await patch(url, 30_000, data.subarray(30_000))
  t.equal(retried.status, 409, 'a retried final PATCH whose answer was lost finds the offset moved on')
  t.equal(retried.headers['upload-offset'], '40000')
  const empties = await Promise.all(Array.from({ length: 4 }, async () => await patch(url, 40_000, '')))
  for (const empty of empties) t.equal(empty.status, 204)
  await tusUpload(data, { endpoint: server.endpoint, uploadUrl: url })
  t.same(calls, [{ offset: 40_000, onDisk: sha256(data) }], 'once, with every byte on disk')
  t.equal(completed, 1, 'the completed event too')
})

t.test('onUploadComplete fires when a deferred length is declared equal to the bytes already stored', async (t) => {
  const calls: number[] = []
  const server = await startServer(t, { onUploadComplete: (upload) => { calls.push(upload.size!) } })
  const url = await createUpload(server, { 'Upload-Defer-Length': '1' })
  await patch(url, 0, 'hello')
  t.same(calls, [])
  const declared = await patch(url, 5, '', { 'Upload-Length': '5' })
  t.equal(declared.status, 204)
  t.same(calls, [5])
  await patch(url, 5, '', { 'Upload-Length': '5' })
  t.same(calls, [5], 'not again')
})

t.test('onUploadTerminate: refuses a DELETE with its status and message; a plain error is 500; the upload stays', async (t) => {
  let mode: 'hold' | 'crash' | 'allow' = 'hold'
  const terminated: string[] = []
  const server = await startServer(t, {
    onUploadTerminate: (upload) => {
      if (mode === 'hold') throw refusal(`Upload ${upload.id} is under legal hold`, 403)
      if (mode === 'crash') throw new Error('audit log unreachable')
    }
  })
  server.app.tus.on('terminated', (upload) => { terminated.push(upload.id) })
  const url = await createUpload(server, { 'Upload-Length': '5' })
  await patch(url, 0, 'hello')
  const held = await tusRequest(url, { method: 'DELETE' })
  t.equal(held.status, 403)
  t.equal(held.text, `Upload ${idOf(url)} is under legal hold`)
  mode = 'crash'
  const crashed = await tusRequest(url, { method: 'DELETE' })
  t.equal(crashed.status, 500)
  t.equal(crashed.text, 'onUploadTerminate failed')
  t.equal(await readFile(`${server.dir}/${idOf(url)}`, 'utf8'), 'hello')
  t.same(terminated, [])
  mode = 'allow'
  t.equal((await tusRequest(url, { method: 'DELETE' })).status, 204)
  t.same(terminated, [idOf(url)])
  t.same(await readdir(server.dir), [])
})

t.test('hooks run in order around one tus-js-client upload', async (t) => {
  const order: string[] = []
  const server = await startServer(t, {
    progressInterval: 60_000,
    onUploadCreate: () => { order.push('create') },
    onUploadProgress: (upload) => { order.push(`progress ${upload.offset}`) },
    onUploadComplete: (upload) => { order.push(`complete ${upload.offset}`) }
  })
  const created = once(server.app.tus, 'created')
  await tusUpload(randomBytesSeeded(30_000, 2), { endpoint: server.endpoint, chunkSize: 10_000 })
  await created
  t.same(order, ['create', 'progress 0', 'progress 10000', 'progress 10000', 'progress 20000', 'progress 20000', 'complete 30000'])
})

t.test('hook options are validated at register time', async (t) => {
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ onUploadProgress: 'x' }, /onUploadProgress must be a function/],
    [{ onUploadTerminate: {} }, /onUploadTerminate must be a function/],
    [{ progressInterval: -1 }, /progressInterval must be a non-negative integer/],
    [{ progressInterval: 0.5 }, /progressInterval/],
    [{ metricsPath: 'metrics' }, /metricsPath must be a path/],
    [{ metricsPath: '/' }, /metricsPath must be a path/]
  ]
  for (const [options, message] of bad) {
    const app = Fastify()
    await t.rejects(async () => { await app.register(tusPlugin, options as never).ready() }, { code: 'FST_TUS_INVALID_OPTION', message }, JSON.stringify(options))
    await app.close()
  }
})

t.test('onUploadCreate: changing the upload in place (the seed style) still works and is validated the same way', async (t) => {
  let badId = false
  const server = await startServer(t, {
    onUploadCreate: (upload) => {
      upload.metadata.checked = 'yes'
      if (badId) upload.id = 'no/slashes'
    }
  })
  const url = await createUpload(server, { 'Upload-Length': '1' })
  t.equal((await tusRequest(url, { method: 'HEAD' })).headers['upload-metadata'], `checked ${Buffer.from('yes').toString('base64')}`)
  badId = true
  const response = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '1' } })
  t.equal(response.status, 500)
  t.equal(response.text, 'onUploadCreate failed: it returned an invalid id (1-128 of A-Z a-z 0-9 _ -)')
})
