import t from 'tap'
import { connect } from 'node:net'
import { Readable } from 'node:stream'
import type { UploadInfo } from '../lib/index.js'
import { backdate, createUpload, idOf, sha256, startServer, stored, tusRequest } from './helpers.js'

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }

async function patch (url: string, offset: number | string, body: string | Buffer | Readable, headers: Record<string, string> = {}) {
  return await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': String(offset), ...OCTET, ...headers }, body })
}

t.test('PATCH appends at the offset; HEAD reports offset, length, no-store', async (t) => {
  const server = await startServer(t)
  const url = await createUpload(server, { 'Upload-Length': '11' })
  const first = await patch(url, 0, 'hello')
  t.equal(first.status, 204)
  t.equal(first.headers['upload-offset'], '5')
  t.match(first.headers['upload-expires'], /GMT$/)
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(head.headers['upload-offset'], '5')
  t.equal(head.headers['upload-length'], '11')
  t.equal(head.headers['cache-control'], 'no-store')
  t.equal(head.headers['upload-metadata'], undefined)
  t.match(head.headers['upload-expires'], /GMT$/)
  const second = await patch(url, 5, ' world')
  t.equal(second.status, 204)
  t.equal(second.headers['upload-offset'], '11')
  t.equal(sha256(await stored(server, url)), sha256('hello world'))
})

t.test('PATCH refusals change nothing: 415, 400, 409 (with the current offset), 404', async (t) => {
  const server = await startServer(t)
  const url = await createUpload(server, { 'Upload-Length': '11' })
  t.equal((await patch(url, 0, 'hello')).status, 204)

  const wrongType = await patch(url, 5, 'xx', { 'Content-Type': 'application/octet-stream' })
  t.equal(wrongType.status, 415)
  t.match(wrongType.text, /Content-Type must be application\/offset\+octet-stream/)
  const noType = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '5' }, body: 'xx' })
  t.equal(noType.status, 415)

  for (const offset of ['', '-1', 'abc', '1.5', '+5', '05']) {
    const bad = await patch(url, offset, 'xx')
    t.equal(bad.status, 400, `Upload-Offset "${offset}"`)
  }
  const missing = await tusRequest(url, { method: 'PATCH', headers: OCTET, body: 'xx' })
  t.equal(missing.status, 400)
  t.match(missing.text, /Upload-Offset/)

  for (const offset of [0, 4, 6]) {
    const conflict = await patch(url, offset, 'xx')
    t.equal(conflict.status, 409)
    t.equal(conflict.headers['upload-offset'], '5')
    t.match(conflict.text, new RegExp(`Upload-Offset ${offset} does not match the current offset 5`))
  }
  const unknown = await patch(`${server.endpoint}AAAAAAAAAAAAAAAAAAAAA`, 0, 'xx')
  t.equal(unknown.status, 404)
  t.equal(unknown.text, 'Upload not found')
  t.equal((await stored(server, url)).toString(), 'hello', 'stored bytes untouched')
})

t.test('a body beyond Upload-Length: 413 and not one byte beyond the length stored', async (t) => {
  const server = await startServer(t)
  const url = await createUpload(server, { 'Upload-Length': '8' })
  const declared = await patch(url, 0, 'hello world')
  t.equal(declared.status, 413, 'Content-Length beyond the length is refused before writing')
  t.equal((await stored(server, url)).length, 0)

  // Chunked (no Content-Length): the body streams in up to the length, and what it stored is cut off again when it
  // goes beyond.
  const chunked = await patch(url, 0, Readable.from([Buffer.from('hello'), Buffer.from(' world')]))
  t.equal(chunked.status, 413)
  t.equal(chunked.headers['upload-offset'], '0')
  t.equal((await stored(server, url)).length, 0, 'nothing of an overflowing body is stored')
  t.equal((await tusRequest(url, { method: 'HEAD' })).headers['upload-offset'], '0')
  const exact = await patch(url, 0, Readable.from([Buffer.from('hello'), Buffer.from(' wo')]))
  t.equal(exact.status, 204, 'a chunked body of exactly the length is stored')
  t.equal((await stored(server, url)).toString(), 'hello wo')
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], '8')
  const more = await patch(url, 8, 'x')
  t.equal(more.status, 413, 'no byte goes beyond a complete upload')
  const empty = await patch(url, 8, '')
  t.equal(empty.status, 204, 'an empty PATCH at the end is fine')
})

t.test('deferred length: declared on a PATCH, then immutable; checks on the declared value', async (t) => {
  const completed: UploadInfo[] = []
  const server = await startServer(t, { maxSize: 100, onUploadComplete: (upload) => { completed.push(upload) } })
  const url = await createUpload(server, { 'Upload-Defer-Length': '1' })
  t.equal((await patch(url, 0, 'hello')).status, 204)
  const below = await patch(url, 5, '', { 'Upload-Length': '3' })
  t.equal(below.status, 400)
  t.match(below.text, /smaller than the current offset/)
  const tooBig = await patch(url, 5, '', { 'Upload-Length': '101' })
  t.equal(tooBig.status, 413)
  const last = await patch(url, 5, ' world', { 'Upload-Length': '11' })
  t.equal(last.status, 204)
  t.equal(last.headers['upload-offset'], '11')
  t.equal(completed.length, 1)
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.headers['upload-length'], '11')
  t.equal(head.headers['upload-defer-length'], undefined)
  const change = await patch(url, 11, '', { 'Upload-Length': '12' })
  t.equal(change.status, 400)
  t.match(change.text, /already set to 11/)
})

t.test('a deferred upload never grows beyond maxSize', async (t) => {
  const server = await startServer(t, { maxSize: 10 })
  const url = await createUpload(server, { 'Upload-Defer-Length': '1' })
  const response = await patch(url, 0, Readable.from([Buffer.alloc(6), Buffer.alloc(6)]))
  t.equal(response.status, 413)
  t.equal(response.headers['upload-offset'], '0')
  t.equal((await stored(server, url)).length, 0, 'nothing of an overflowing body is stored')
  const within = await patch(url, 0, Readable.from([Buffer.alloc(6), Buffer.alloc(4)]))
  t.equal(within.status, 204, 'up to maxSize is fine')
  t.equal((await stored(server, url)).length, 10)
})

t.test('X-HTTP-Method-Override on POST is honoured for PATCH, HEAD and DELETE', async (t) => {
  const server = await startServer(t)
  const url = await createUpload(server, { 'Upload-Length': '5' })
  const patched = await tusRequest(url, {
    method: 'POST',
    headers: { 'X-HTTP-Method-Override': 'PATCH', 'Upload-Offset': '0', ...OCTET },
    body: 'hello'
  })
  t.equal(patched.status, 204)
  t.equal(patched.headers['upload-offset'], '5')
  const head = await tusRequest(url, { method: 'POST', headers: { 'X-HTTP-Method-Override': 'HEAD' } })
  t.equal(head.headers['upload-offset'], '5')
  const bogus = await tusRequest(url, { method: 'POST', headers: { 'X-HTTP-Method-Override': 'PUT' } })
  t.equal(bogus.status, 405)
  t.equal(bogus.headers.allow, 'OPTIONS, PATCH, DELETE, HEAD, GET', 'a 405 names the methods the URL has')
  const plain = await tusRequest(url, { method: 'POST' })
  t.equal(plain.status, 405)
  t.equal(plain.headers.allow, 'OPTIONS, PATCH, DELETE, HEAD, GET')
  const draft = await tusRequest(url, { method: 'POST', headers: { 'X-HTTP-Method-Override': 'PUT', 'Upload-Draft-Interop-Version': '6' } })
  t.equal(draft.status, 405)
  t.equal(draft.headers.allow, 'OPTIONS, PATCH, DELETE, HEAD, GET', 'through the draft too')
  const deleted = await tusRequest(url, { method: 'POST', headers: { 'X-HTTP-Method-Override': 'DELETE' } })
  t.equal(deleted.status, 204)
  t.equal((await tusRequest(url, { method: 'HEAD' })).status, 404)
})

t.test('an X-HTTP-Method-Override may name every method its URL has, OPTIONS included, in both protocols; any other is 405 saying so, with Allow naming exactly those', async (t) => {
  const server = await startServer(t)
  const url = await createUpload(server, { 'Upload-Length': '3' })
  t.equal((await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: 'abc' })).status, 204)
  const upload = 'OPTIONS, PATCH, DELETE, HEAD, GET'
  for (const protocol of [{}, { 'Upload-Draft-Interop-Version': '6' }] as Array<Record<string, string>>) {
    const name = Object.keys(protocol).length === 0 ? 'tus' : 'draft'
    for (const target of [url, server.endpoint]) {
      const options = await tusRequest(target, { method: 'POST', headers: { ...protocol, 'X-HTTP-Method-Override': 'options' } })
      t.equal(options.status, 204, `${name}: OPTIONS through ${target}`)
      if (name === 'tus') t.equal(options.headers['tus-version'], '1.0.0', 'the discovery answer')
      else t.match(options.headers['upload-limit'], /max-size=/, 'the discovery answer')
    }
    const head = await tusRequest(url, { method: 'POST', headers: { ...protocol, 'X-HTTP-Method-Override': 'HEAD' } })
    t.same([head.status < 300, head.headers['upload-offset'], head.text], [true, '3', ''], `${name}: HEAD through the override`)
    const get = await tusRequest(url, { method: 'POST', headers: { ...protocol, 'X-HTTP-Method-Override': 'GET' } })
    t.same([get.status, get.text], [200, 'abc'], `${name}: GET through the override downloads`)
    for (const [target, method, allow] of <Array<[string, string, string]>>[[url, 'PUT', upload], [url, 'POST', upload], [url, 'TRACE', upload], [server.endpoint, 'DELETE', 'OPTIONS, POST'], [server.endpoint, 'GET', 'OPTIONS, POST']]) {
      const refused = await tusRequest(target, { method: 'POST', headers: { ...protocol, 'X-HTTP-Method-Override': method } })
      t.equal(refused.status, 405, `${name}: ${method} through ${target}`)
      t.equal(refused.headers.allow, allow, 'Allow names the methods an override may name')
      t.match(refused.text, new RegExp(`X-HTTP-Method-Override names \\\\?"${method}\\\\?", which this URL does not have; it may name ${allow}`))
    }
  }
  t.equal((await stored(server, url)).toString(), 'abc', 'nothing changed')
})

t.test('a method a URL does not have is 405 with the methods it has, in both protocols; other paths under the prefix are 404', async (t) => {
  const server = await startServer(t, { prefix: '/:tenant/files' })
  const endpoint = `${server.origin}/acme/files`
  const url = await createUpload({ ...server, endpoint: `${endpoint}/` }, { 'Upload-Length': '5' })
  const upload = 'OPTIONS, PATCH, DELETE, HEAD, GET'
  for (const protocol of [{}, { 'Upload-Draft-Interop-Version': '6' }] as Array<Record<string, string>>) {
    const name = Object.keys(protocol).length === 0 ? 'tus' : 'draft'
    for (const [method, target, allow] of [
      ['PUT', url, upload], ['PUT', `${server.origin}/acme/files/AAAAAAAAAAAAAAAAAAAAA`, upload],
      ['PUT', endpoint, 'OPTIONS, POST'], ['PUT', `${endpoint}/`, 'OPTIONS, POST'], ['GET', `${endpoint}/`, 'OPTIONS, POST'],
      ['HEAD', endpoint, 'OPTIONS, POST'], ['DELETE', `${endpoint}/`, 'OPTIONS, POST']
    ] as const) {
      const response = await tusRequest(target, { method, headers: protocol })
      t.equal(response.status, 405, `${name}: ${method} ${new URL(target).pathname}`)
      t.equal(response.headers.allow, allow)
    }
    const elsewhere = await tusRequest(`${url}/more`, { method: 'GET', headers: protocol })
    t.equal(elsewhere.status, 404, `${name}: a path below an upload's is no URL of ours`)
    for (const override of ['GET', 'DELETE', 'PATCH', 'PUT']) {
      for (const target of [`${url}/more`, `${endpoint}/a/b/c`]) {
        const tunnelled = await tusRequest(target, { method: 'POST', headers: { ...protocol, 'X-HTTP-Method-Override': override } })
        t.equal(tunnelled.status, 404, `${name}: POST with X-HTTP-Method-Override: ${override} to ${new URL(target).pathname} is no URL of ours either`)
        t.equal(tunnelled.headers.allow, undefined)
      }
    }
  }
  // A body sent with such a method is not stored.
  const put = await tusRequest(url, { method: 'PUT', headers: { 'Upload-Offset': '0', ...OCTET }, body: Buffer.alloc(8 * 1024 * 1024, 1) })
  t.equal(put.status, 405)
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(head.headers['upload-offset'], '0', 'the upload is untouched')
})

t.test('a client that disconnects mid-body keeps what arrived; HEAD reports it; the upload resumes', async (t) => {
  const completed: UploadInfo[] = []
  const server = await startServer(t, { onUploadComplete: (upload) => { completed.push(upload) } })
  const url = await createUpload(server, { 'Upload-Length': '1000' })
  const data = Buffer.alloc(1000, 'x')
  const { pathname, port } = new URL(url)
  await new Promise<void>((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1', () => {
      socket.write(`PATCH ${pathname} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n` +
        'Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: 1000\r\n\r\n')
      socket.end(data.subarray(0, 400))
    })
    socket.on('error', reject)
    socket.on('close', () => { resolve() })
    socket.resume()
  })
  // HEAD takes the upload's lock, so it answers once the cut request has stored what arrived.
  t.equal((await tusRequest(url, { method: 'HEAD' })).headers['upload-offset'], '400', 'HEAD right after the disconnect')
  t.equal((await stored(server, url)).length, 400)
  t.equal(completed.length, 0)
  const rest = await patch(url, 400, data.subarray(400))
  t.equal(rest.status, 204)
  t.equal(sha256(await stored(server, url)), sha256(data))
  t.equal(completed.length, 1)
})

t.test('an expired upload answers 410 on every route but DELETE, which removes it', async (t) => {
  const server = await startServer(t, { daysToKeep: 1 })
  const url = await createUpload(server, { 'Upload-Length': '5' })
  const id = idOf(url)
  await backdate(server.dir, id, 2)
  for (const method of ['HEAD', 'PATCH', 'GET']) {
    const response = method === 'PATCH' ? await patch(url, 0, 'hello') : await tusRequest(url, { method })
    t.equal(response.status, 410, method)
  }
  t.equal((await stored(server, url)).length, 0)
  t.equal((await tusRequest(url, { method: 'DELETE' })).status, 204)
  t.equal((await tusRequest(url, { method: 'HEAD' })).status, 404)
})

t.test('a refused PATCH with a large body leaves the keep-alive connection usable', async (t) => {
  const { Client } = await import('undici')
  const server = await startServer(t)
  const url = new URL(await createUpload(server, { 'Upload-Length': '10' }))
  const client = new Client(server.origin, { pipelining: 1 })
  t.teardown(async () => { await client.close() })
  let connections = 0
  server.app.server.on('connection', () => { connections++ })
  const refused = await client.request({
    path: url.pathname,
    method: 'PATCH',
    headers: { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', 'Content-Type': 'text/plain' },
    body: Buffer.alloc(2 * 1024 * 1024)
  })
  await refused.body.dump()
  t.equal(refused.statusCode, 415)
  const conflict = await client.request({
    path: url.pathname,
    method: 'PATCH',
    headers: { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '3', ...OCTET },
    body: Buffer.alloc(1024 * 1024)
  })
  await conflict.body.dump()
  t.equal(conflict.statusCode, 409)
  const head = await client.request({ path: url.pathname, method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } })
  await head.body.dump()
  t.equal(head.statusCode, 200)
  t.equal(head.headers['upload-offset'], '0')
  t.equal(connections, 1, 'all three requests used one connection')
})

t.test('Upload-Expires comes with every PATCH answer about an unfinished upload, its refusals too (T-E-2); not with the draft\'s, nor once complete', async (t) => {
  const server = await startServer(t)
  const url = await createUpload(server, { 'Upload-Length': '11' })
  const written = await patch(url, 0, 'hello')
  const expires = written.headers['upload-expires']
  t.match(expires, /GMT$/)
  const refusals: Array<[string, Awaited<ReturnType<typeof patch>>, number]> = [
    ['a wrong offset', await patch(url, 3, 'lo'), 409],
    ['a checksum mismatch', await patch(url, 5, ' world', { 'Upload-Checksum': `sha1 ${Buffer.alloc(20).toString('base64')}` }), 460],
    ['a body beyond the length', await patch(url, 5, ' world and more'), 413],
    ['a length already set', await patch(url, 5, ' world', { 'Upload-Length': '12' }), 400]
  ]
  for (const [name, answer, status] of refusals) {
    t.same([answer.status, answer.headers['upload-offset'], answer.headers['upload-expires']], [status, '5', expires], `${name}: ${status}, the offset, and when the upload expires`)
  }
  const draft = await tusRequest(url, {
    method: 'PATCH',
    headers: { 'Upload-Draft-Interop-Version': '6', 'Upload-Offset': '3', 'Upload-Complete': '?1', 'Content-Type': 'application/partial-upload' },
    body: 'lo'
  })
  t.same([draft.status, draft.headers['upload-offset'], draft.headers['upload-expires']], [409, '5', undefined], 'the draft has no Upload-Expires')
  t.equal((await patch(url, 5, ' world')).status, 204)
  const done = await patch(url, 5, ' world')
  t.same([done.status, done.headers['upload-expires']], [409, undefined], 'a complete upload is kept: no expiry to tell')
})
