import t from 'tap'
import { once } from 'node:events'
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FileStore, type UploadInfo } from '../lib/index.js'
import { delegatingTo, idOf, rawRequest, send, sha256, signal, startServer, tusRequest, type TestServer } from './helpers.js'

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }

async function partial (server: TestServer, content: string, upload = true): Promise<string> {
  const response = await tusRequest(server.endpoint, {
    method: 'POST',
    headers: { 'Upload-Length': String(Buffer.byteLength(content)), 'Upload-Concat': 'partial', 'Upload-Metadata': 'filename cGFydA==' }
  })
  if (response.status !== 201) throw new Error(`partial creation: ${response.status} ${response.text}`)
  const url = new URL(response.headers.location!, server.origin).href
  if (upload) await append(url, 0, content)
  return url
}

async function append (url: string, offset: number, content: string) {
  const response = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': String(offset), ...OCTET, 'Upload-Concat': 'partial' }, body: content })
  if (response.status !== 204) throw new Error(`append: ${response.status} ${response.text}`)
  return response
}

async function final (server: TestServer, concat: string, headers: Record<string, string> = {}) {
  return await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Concat': concat, ...headers } })
}

function completions (server: TestServer): UploadInfo[] {
  const seen: UploadInfo[] = []
  server.app.tus.on('completed', (upload) => { seen.push(upload) })
  return seen
}

t.test('a final upload of complete partials: absolute, relative and repeated URLs, length the sum, bytes in order', async (t) => {
  const hooked: UploadInfo[] = []
  const server = await startServer(t, { onUploadComplete: (upload) => { hooked.push(upload) } })
  const a = await partial(server, 'hello ')
  const b = await partial(server, 'world')
  const header = `final;${a} ${new URL(b).pathname} ${idOf(a)}`
  const response = await final(server, header, { 'Upload-Metadata': 'filename d2hvbGUudHh0' })
  t.equal(response.status, 201, response.text)
  t.equal(response.headers['upload-offset'], '17')
  const url = new URL(response.headers.location!, server.origin).href
  t.equal((await readFile(join(server.dir, idOf(url)))).toString(), 'hello worldhello ')
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.headers['upload-length'], '17')
  t.equal(head.headers['upload-offset'], '17')
  t.equal(head.headers['upload-concat'], header, 'Upload-Concat echoed as received')
  t.equal(head.headers['upload-metadata'], 'filename d2hvbGUudHh0', 'only the final request\'s metadata')
  const partialHead = await tusRequest(a, { method: 'HEAD' })
  t.equal(partialHead.headers['upload-concat'], 'partial')
  t.equal(partialHead.headers['upload-offset'], '6')
  t.same(hooked.map((upload) => upload.id), [idOf(url)], 'the completion hook fired once, for the final only')
  t.same(hooked[0]!.metadata, { filename: 'whole.txt' })
  const download = await tusRequest(url)
  t.equal(download.text, 'hello worldhello ')
  t.match(download.headers['content-disposition'], /whole\.txt/)
})

t.test('PATCH on a final upload is 403 and changes nothing', async (t) => {
  const server = await startServer(t)
  const a = await partial(server, 'abc')
  const response = await final(server, `final;${a}`)
  const url = new URL(response.headers.location!, server.origin).href
  const refused = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '3', ...OCTET }, body: 'more' })
  t.equal(refused.status, 403)
  t.match(refused.text, /final/)
  t.equal((await readFile(join(server.dir, idOf(url)))).toString(), 'abc')
  t.equal((await readFile(join(server.dir, idOf(a)))).toString(), 'abc')
})

t.test('bad final creations are 400 with what was wrong, and create nothing', async (t) => {
  const server = await startServer(t)
  const a = await partial(server, 'abc')
  const plain = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '1' } })
  const plainUrl = new URL(plain.headers.location!, server.origin).href
  const deferred = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Defer-Length': '1', 'Upload-Concat': 'partial' } })
  const deferredUrl = new URL(deferred.headers.location!, server.origin).href
  const cases: Array<[string, Record<string, string>, RegExp, string?]> = [
    ['final;', {}, /at least one/],
    ['final;/files/nonexistent', {}, /"nonexistent" is not a usable partial upload of this endpoint/],
    [`final;${plainUrl}`, {}, /is not a usable partial upload of this endpoint/],
    [`final;${deferredUrl}`, {}, /is not a usable partial upload of this endpoint/],
    ['final;/elsewhere/abc', {}, /not an upload of this endpoint/],
    ['final;http://[bad', {}, /not a URL|not an upload/],
    ['whole', {}, /expected "partial"/],
    [`final;${a}`, { 'Upload-Length': '3' }, /send no Upload-Length/],
    [`final;${a}`, { 'Upload-Length': 'three' }, /Upload-Length/],
    [`final;${a}`, { 'Upload-Defer-Length': '1' }, /send no Upload-Defer-Length/],
    [`final;${a}`, { ...OCTET }, /cannot carry a body/, 'abc']
  ]
  for (const [concat, headers, message, body] of cases) {
    const response = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Concat': concat, ...headers }, ...(body === undefined ? {} : { body }) })
    t.equal(response.status, 400, concat)
    t.match(response.text, message, concat)
    t.equal(response.headers.location, undefined)
  }
  const tooBig = await startServer(t, { maxSize: 5 })
  const small = await partial(tooBig, 'abc')
  for (const protocol of [{}, { 'Upload-Draft-Interop-Version': '6' }] as Array<Record<string, string>>) {
    const refused = await final(tooBig, `final;${small} ${small}`, protocol)
    t.equal(refused.status, 413)
    t.match(refused.text, /final upload would be 6 bytes \(the sum of its partial uploads\), beyond the maximum upload size of 5 bytes/)
    t.notMatch(refused.text, /Upload-Length/, 'no Upload-Length was sent: none is named')
    t.equal(refused.headers.location, undefined)
  }
})

t.test('a reference to another scheme, host or port, with a query, fragment or dot segment, or outside the prefix is 400 in both protocols, though a local partial has its id', async (t) => {
  const server = await startServer(t)
  const local = await partial(server, 'abc')
  const { pathname, host } = new URL(local)
  const elsewhere = [
    `http://evil.example:9${pathname}`, `https://evil.example${pathname}`, `//evil.example${pathname}`,
    `javascript:${pathname}`, `file://${pathname}`, `ftp://${host}${pathname}`, `http://user:secret@${host}${pathname}`,
    `https://${host}${pathname}`, `http://${new URL(local).hostname}:1${pathname}`, `ws://${host}${pathname}`,
    `\\\\evil.example${pathname}`, `/\\evil.example${pathname}`, `\\/evil.example${pathname}`
  ]
  // Whatever the reference's form, the query, fragment or dot segment is refused before anything is looked up.
  const unnamed: Array<[string, RegExp]> = [
    [`${local}?q=1`, /has a query or a fragment/], [`${local}#f`, /has a query or a fragment/], [`${pathname}?`, /has a query or a fragment/],
    [`${idOf(local)}#`, /has a query or a fragment/], [`/files/../files/${idOf(local)}`, /has a "\." or "\.\." segment/],
    [`/other/../files/${idOf(local)}`, /has a "\." or "\.\." segment/], [`http://${host}/files/%2e/${idOf(local)}`, /has a "\." or "\.\." segment/],
    [`/other/${idOf(local)}`, /its path is not an upload's under \/files\//], [`/files/x/${idOf(local)}`, /its path is not an upload's under \/files\//]
  ]
  for (const protocol of [{}, { 'Upload-Draft-Interop-Version': '6' }] as Array<Record<string, string>>) {
    const name = Object.keys(protocol).length === 0 ? 'tus' : 'draft'
    for (const reference of elsewhere) {
      const refused = await final(server, `final;${reference}`, protocol)
      t.equal(refused.status, 400, `${name}: ${reference}`)
      t.match(refused.text, /not an upload of this endpoint: an absolute reference names this server \(http:\/\/127\.0\.0\.1:\d+\), with no credentials/)
      t.equal(refused.headers.location, undefined)
    }
    for (const [reference, message] of unnamed) {
      const refused = await final(server, `final;${local} ${reference}`, protocol)
      t.equal(refused.status, 400, `${name}: ${reference}`)
      t.match(refused.text, message, `${name}: ${reference}`)
      t.equal(refused.headers.location, undefined)
    }
    // The partial's own URL (the default port written or not), its path and its id are here.
    for (const reference of [local, pathname, idOf(local), `http://${host.toUpperCase()}${pathname}`]) {
      const accepted = await final(server, `final;${reference}`, protocol)
      t.equal(accepted.status, 201, `${name}: ${reference}`)
    }
  }
  // The host of the URLs generateUrl makes is this server's too.
  const generated = await startServer(t, { generateUrl: (_request, { path, id }) => `https://uploads.example.com${path}/${id}` })
  const made = await tusRequest(generated.endpoint, { method: 'POST', headers: { 'Upload-Length': '3', 'Upload-Concat': 'partial' } })
  t.equal(made.status, 201)
  const location = made.headers.location!
  t.match(location, /^https:\/\/uploads\.example\.com\/files\//)
  await append(`${generated.origin}${new URL(location).pathname}`, 0, 'abc')
  t.equal((await final(generated, `final;${location}`)).status, 201, 'a reference as generateUrl made it')
  t.equal((await final(generated, `final;${location.replace('uploads.example.com', 'other.example.com')}`)).status, 400, 'another host')
  t.equal((await final(generated, `final;${location.replace('https:', 'http:')}`)).status, 400, 'another scheme')
  // https is this server's scheme only when a trusted proxy says so.
  for (const trustProxy of [false, true]) {
    const proxied = await startServer(t, {}, undefined, { trustProxy })
    const part = await partial(proxied, 'abc')
    const { host: proxiedHost, pathname: proxiedPath } = new URL(part)
    for (const protocol of [{}, { 'Upload-Draft-Interop-Version': '6' }] as Array<Record<string, string>>) {
      const https = await final(proxied, `final;https://${proxiedHost}${proxiedPath}`, { ...protocol, 'X-Forwarded-Proto': 'https' })
      t.equal(https.status, trustProxy ? 201 : 400, `trustProxy ${String(trustProxy)}: an https reference`)
      const http = await final(proxied, `final;http://${proxiedHost}${proxiedPath}`, { ...protocol, 'X-Forwarded-Proto': 'https' })
      t.equal(http.status, trustProxy ? 400 : 201, `trustProxy ${String(trustProxy)}: an http reference`)
    }
  }
})

t.test('concatenation-unfinished: a final created before its partials finish completes when they do', async (t) => {
  const server = await startServer(t)
  const seen = completions(server)
  const a = await partial(server, 'first-', false)
  const b = await partial(server, 'second')
  const response = await final(server, `final;${a} ${b}`)
  t.equal(response.status, 201)
  t.equal(response.headers['upload-offset'], undefined, 'no offset before the concatenation is done')
  const url = new URL(response.headers.location!, server.origin).href
  const pending = await tusRequest(url, { method: 'HEAD' })
  t.equal(pending.headers['upload-offset'], undefined)
  t.equal(pending.headers['upload-length'], '12')
  t.equal((await tusRequest(url)).status, 409, 'no download before it is complete')
  // The draft's HEAD always carries an offset: 0, and not complete; an append is refused as in tus.
  const draft = { 'Upload-Draft-Interop-Version': '6' }
  const draftHead = await tusRequest(url, { method: 'HEAD', headers: draft })
  t.equal(draftHead.status, 204)
  t.equal(draftHead.headers['upload-offset'], '0')
  t.equal(draftHead.headers['upload-complete'], '?0')
  const draftAppend = await tusRequest(url, { method: 'PATCH', headers: { ...draft, 'Upload-Offset': '0', 'Upload-Complete': '?0', 'Content-Type': 'application/partial-upload' }, body: 'x' })
  t.equal(draftAppend.status, 403, 'no append to a final, in the draft either')
  await append(a, 0, 'fir')
  t.same(seen, [])
  await append(a, 3, 'st-')
  t.same(seen.map((upload) => upload.id), [idOf(url)], 'the final completed with its last partial, once')
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], '12')
  t.equal(sha256(await readFile(join(server.dir, idOf(url)))), sha256('first-second'))
})

t.test('a final whose last partial completes after a restart is finished by that request (its record is in the directory)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-concat-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const first = await startServer(t, { dir })
  const a = await partial(first, 'abc', false)
  const url = new URL((await final(first, `final;${a}`)).headers.location!, first.origin).href
  await first.app.close()
  const second = await startServer(t, { dir })
  const seen = completions(second)
  await append(a.replace(first.origin, second.origin), 0, 'abc')
  t.equal(seen.length, 1, 'the restarted server found the waiting final and finished it')
  t.equal((await readFile(join(dir, idOf(url)))).toString(), 'abc')
  const head = await tusRequest(url.replace(first.origin, second.origin), { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], '3')
  t.equal(seen.length, 1, 'once')
})

t.test('a final whose partials completed while nothing recorded it waiting is finished by HEAD', async (t) => {
  const server = await startServer(t)
  const seen = completions(server)
  const a = await partial(server, 'abc', false)
  const url = new URL((await final(server, `final;${a}`)).headers.location!, server.origin).href
  // As if the record were lost (a process died between the final's creation and the record).
  await rm(join(server.dir, '.finals'), { recursive: true, force: true })
  await append(a, 0, 'abc')
  t.same(seen, [], 'nothing knew the final was waiting')
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], '3')
  t.equal(seen.length, 1)
  t.equal((await readFile(join(server.dir, idOf(url)))).toString(), 'abc')
})

t.test('an interrupted concatenation resumes where it stopped and completes byte-identical', async (t) => {
  const server = await startServer(t)
  const a = await partial(server, 'aaaa', false)
  const b = await partial(server, 'bbbb')
  const url = new URL((await final(server, `final;${a} ${b}`)).headers.location!, server.origin).href
  // As if a crash had cut the copy after two bytes of the first partial.
  await server.app.tus.store.write(idOf(url), 0, (async function * () { yield Buffer.from('aa') })())
  await append(a, 0, 'aaaa')
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], '8')
  t.equal((await readFile(join(server.dir, idOf(url)))).toString(), 'aaaabbbb')
})

t.test('a partial whose body is refused after a final found its bytes stored is waited for again: the final never takes the wrong bytes', async (t) => {
  const protocols: Array<[string, Record<string, string>]> = [['tus', { 'Tus-Resumable': '1.0.0' }], ['draft 6', { 'Upload-Draft-Interop-Version': '6' }]]
  for (const [name, protocol] of protocols) {
    const server = await startServer(t)
    const seen = completions(server)
    const a = await partial(server, 'CCCC', false)
    const b = await partial(server, 'BBBB')
    // A chunked body with a trailer nobody announced is streamed straight into the partial, then checked at its end.
    const socket = connect(Number(new URL(a).port), '127.0.0.1')
    t.teardown(() => { socket.destroy() })
    await once(socket, 'connect')
    socket.write(`PATCH ${new URL(a).pathname} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n` +
      'Content-Type: application/offset+octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nAAAA\r\n')
    while ((await stat(join(server.dir, idOf(a)))).size < 4) await new Promise((resolve) => setImmediate(resolve))
    // Finds both partials complete, then waits for the lock of the request still writing to the first.
    const created = rawRequest(server.endpoint, { method: 'POST', headers: { ...protocol, 'Upload-Concat': `final;${a} ${b}` } })
    await waitForLockWaits(server, 1)
    socket.write(`0\r\nUpload-Checksum: sha1 ${Buffer.alloc(20, 7).toString('base64')}\r\n\r\n`)
    const [answer] = await once(socket, 'data') as [Buffer]
    t.match(answer.toString('latin1'), /^HTTP\/1\.1 460 /, `${name}: the partial's body is refused, its bytes cut off`)
    const response = await created
    t.equal(response.status, 201, `${name}: the final is created`)
    const url = new URL(response.headers.location!, server.origin).href
    t.same(seen, [], `${name}: and not complete`)
    t.equal((await tusRequest(url)).status, 409, `${name}: no download yet`)
    await append(a, 0, 'CCCC')
    t.same(seen.map((upload) => upload.id), [idOf(url)], `${name}: completed once, by the partial's completion`)
    const download = await tusRequest(url)
    t.equal(download.status, 200)
    t.equal(download.text, 'CCCCBBBB', `${name}: the partials' bytes, in order`)
  }
})

/** Until the plugin has counted `count` lock waits (a request found the upload held and queued). */
async function waitForLockWaits (server: TestServer, count: number): Promise<void> {
  while (Number(/^tus_lock_waits_total (\d+)$/m.exec(server.app.tus.metrics())?.[1] ?? '0') < count) {
    await new Promise((resolve) => setImmediate(resolve))
  }
}

// Partials of length 0 make a final complete at its creation, with nothing to copy: its creating POST completes it,
// once, before its 201 (it read complete, as if completed already, and only a later HEAD or GET completed it).
// The draft reaches the same creation (Upload-Concat with its own headers); a zero-length upload of either protocol
// that is not concatenated completes in its POST as well.
const ZERO_CASES: Array<[string, Record<string, string>]> = [
  ['tus', { 'Tus-Resumable': '1.0.0' }],
  ['draft interop 6', { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?1' }],
  ['draft interop 9', { 'Upload-Draft-Interop-Version': '9', 'Upload-Complete': '?1' }]
]
for (const [label, protocol] of ZERO_CASES) {
  t.test(`a final of zero-length partials completes once in its creating POST, before its 201 (${label})`, async (t) => {
    const hooked: Array<{ id: string, method: string }> = []
    const server = await startServer(t, { onUploadComplete: (upload, request) => { hooked.push({ id: upload.id, method: request.method }) } })
    const seen = completions(server)
    const tus = label === 'tus'
    const create = async (headers: Record<string, string>) => {
      const answer = await send(server.endpoint, 'POST', { ...protocol, ...(tus ? {} : { 'Content-Length': '0' }), ...headers }, tus ? undefined : '')
      t.equal(answer.status, 201, answer.body)
      return { answer, id: idOf(new URL(answer.headers.location!, server.origin).href) }
    }
    const lengths: Record<string, string> = tus ? { 'Upload-Length': '0' } : {}
    const a = await create({ 'Upload-Concat': 'partial', ...lengths })
    const b = await create({ 'Upload-Concat': 'partial', ...lengths })
    t.same(hooked, [], 'partials never complete on their own')
    const { 'Upload-Complete': _, ...finalProtocol } = protocol
    const created = await send(server.endpoint, 'POST', { ...finalProtocol, 'Upload-Concat': `final;/files/${a.id} /files/${b.id}` })
    t.equal(created.status, 201, created.body)
    const finalId = idOf(new URL(created.headers.location!, server.origin).href)
    t.same(hooked, [{ id: finalId, method: 'POST' }], 'onUploadComplete ran once, in the creating POST, before its answer')
    if (tus) t.equal(created.headers['upload-offset'], '0')
    else t.equal(created.headers['upload-complete'], '?1')
    t.same(seen.map((upload) => upload.id), [finalId], 'one completed event, for the final')
    t.match(server.app.tus.metrics(), /^tus_uploads_completed_total 1$/m)
    t.match(server.app.tus.metrics(), /^tus_upload_size_bytes_count 1$/m)
    t.equal((await stat(join(server.dir, finalId))).size, 0, 'the final is an empty file on disk')
    const head = await send(`${server.endpoint}${finalId}`, 'HEAD', finalProtocol)
    t.ok(head.status === 200 || head.status === 204, `HEAD ${head.status}`)
    const download = await send(`${server.endpoint}${finalId}`, 'GET', {})
    t.equal(download.status, 200)
    t.equal(download.bytes.length, 0)
    t.same(hooked, [{ id: finalId, method: 'POST' }], 'a later HEAD and GET complete nothing more')
    t.equal(seen.length, 1)

    // Not concatenated: a zero-length upload completes in its POST too.
    const plain = await create(lengths)
    t.same(hooked, [{ id: finalId, method: 'POST' }, { id: plain.id, method: 'POST' }], 'a zero-length upload completes once, in its POST')
    t.match(server.app.tus.metrics(), /^tus_uploads_completed_total 2$/m)
    t.equal((await stat(join(server.dir, plain.id))).size, 0)
    await send(`${server.endpoint}${plain.id}`, 'HEAD', finalProtocol)
    t.equal(hooked.length, 2, 'its HEAD completes nothing more')
  })
}

// A final created while one of its complete partials is held past lockTimeout by a request that does not complete
// it: the final waits for that partial, and the holder finishes it once it lets go, in its own request, before its
// answer (nothing else would: only a later HEAD or GET completed it).
t.test('a final created while a refused DELETE holds its complete partial is completed by that DELETE, once, before its answer', async (t) => {
  const hooked: Array<{ id: string, method: string }> = []
  const entered = signal()
  const refuse = signal()
  const server = await startServer(t, {
    lockTimeout: 100,
    onUploadComplete: (upload, request) => { hooked.push({ id: upload.id, method: request.method }) },
    onUploadTerminate: async () => {
      entered.resolve()
      await refuse.promise
      throw Object.assign(new Error('legal hold'), { statusCode: 403 })
    }
  })
  const seen = completions(server)
  const a = await partial(server, 'abc')
  const b = await partial(server, 'de')
  const deletion = tusRequest(b, { method: 'DELETE' })
  await entered.promise
  const created = await final(server, `final;${a} ${b}`)
  t.equal(created.status, 201, created.text)
  t.equal(created.headers['upload-offset'], undefined, 'b is held: the final waits for it')
  t.same(hooked, [], 'not complete yet')
  const finalId = idOf(new URL(created.headers.location!, server.origin).href)
  refuse.resolve()
  const refused = await deletion
  t.equal(refused.status, 403, refused.text)
  t.same(hooked, [{ id: finalId, method: 'DELETE' }], 'the DELETE that let go of b completed the final, before its answer')
  t.same(seen.map((upload) => upload.id), [finalId])
  t.match(server.app.tus.metrics(), /^tus_uploads_completed_total 1$/m)
  t.equal((await readFile(join(server.dir, finalId))).toString(), 'abcde')
  const head = await tusRequest(`${server.endpoint}${finalId}`, { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], '5')
  t.equal(hooked.length, 1, 'a later HEAD completes nothing more')
})

t.test('a final created while another final\'s copy holds their shared partial is completed by that copy\'s request, once', async (t) => {
  const hooked: Array<{ id: string, method: string }> = []
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-shared-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const files = new FileStore({ directory: dir })
  const reading = signal()
  const proceed = signal()
  let held: string | undefined
  const store = delegatingTo(files, {
    read: async (id, range) => {
      if (id === held) {
        held = undefined
        reading.resolve()
        await proceed.promise
      }
      return await files.read(id, range)
    }
  })
  const server = await startServer(t, { store, dir, lockTimeout: 100, onUploadComplete: (upload, request) => { hooked.push({ id: upload.id, method: request.method }) } })
  const a = await partial(server, 'shared ')
  const b = await partial(server, 'tail')
  held = idOf(a)
  const first = final(server, `final;${a} ${b}`)
  await reading.promise
  // The first final's copy holds a and b: the second finds a busy past lockTimeout and is left waiting for it.
  const second = await final(server, `final;${a}`)
  t.equal(second.status, 201, second.text)
  t.equal(second.headers['upload-offset'], undefined, 'a is held by the first copy')
  const secondId = idOf(new URL(second.headers.location!, server.origin).href)
  proceed.resolve()
  const created = await first
  t.equal(created.status, 201, created.text)
  t.equal(created.headers['upload-offset'], '11')
  const firstId = idOf(new URL(created.headers.location!, server.origin).href)
  t.same(hooked, [{ id: firstId, method: 'POST' }, { id: secondId, method: 'POST' }], 'both completed, once each, before the first POST answered')
  t.equal((await readFile(join(dir, firstId))).toString(), 'shared tail')
  t.equal((await readFile(join(dir, secondId))).toString(), 'shared ')
  t.equal((await tusRequest(`${server.endpoint}${secondId}`, { method: 'HEAD' })).headers['upload-offset'], '7')
  t.equal(hooked.length, 2, 'a later HEAD completes nothing more')
})
