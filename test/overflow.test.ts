// A body one byte longer than the room left (by the upload length or maxSize) is refused before a byte of it
// is stored; one that fits exactly is taken whole. For tus and the IETF draft, on PATCH and creation.
import t from 'tap'
import { readFile, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { createUpload, randomBytesSeeded, send, sha256, startServer, stored, tusRequest, type TestServer } from './helpers.js'

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }
const MAX = 1000
const DRAFT = { 'Upload-Draft-Interop-Version': '6' }
const PARTIAL = { 'Content-Type': 'application/partial-upload' }
const INCONSISTENT = 'https://iana.org/assignments/http-problem-types#inconsistent-upload-length'

/** The ids of every upload in the store (its info files). */
async function uploads (server: TestServer): Promise<string[]> {
  return (await readdir(server.dir)).filter((name) => name.endsWith('.json')).map((name) => name.slice(0, -'.json'.length)).sort()
}

const data = randomBytesSeeded(MAX + 1, 31)

t.test('tus PATCH: Content-Length one byte beyond the length is 413 and stores nothing; an exact fit is taken', async (t) => {
  const server = await startServer(t, { maxSize: MAX })
  const url = await createUpload(server, { 'Upload-Length': '10' })
  const over = await send(url, 'PATCH', { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', ...OCTET }, data.subarray(0, 11))
  t.equal(over.status, 413)
  t.match(over.body, /beyond the upload length of 10 bytes/)
  t.equal((await stored(server, url)).length, 0, 'not a byte stored')
  t.equal((await send(url, 'PATCH', { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', ...OCTET }, data.subarray(0, 4))).status, 204)
  const overAt4 = await send(url, 'PATCH', { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '4', ...OCTET }, data.subarray(4, 11))
  t.equal(overAt4.status, 413, 'at an offset: 7 bytes where 6 are left')
  t.equal((await tusRequest(url, { method: 'HEAD' })).headers['upload-offset'], '4')
  t.equal(sha256(await stored(server, url)), sha256(data.subarray(0, 4)), 'the stored bytes untouched')
  const exact = await send(url, 'PATCH', { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '4', ...OCTET }, data.subarray(4, 10))
  t.equal(exact.status, 204)
  t.equal(exact.headers['upload-offset'], '10')
  t.equal(sha256(await stored(server, url)), sha256(data.subarray(0, 10)))
})

t.test('tus PATCH of a deferred upload: one byte beyond maxSize is 413 and stores nothing; maxSize exactly is taken', async (t) => {
  const server = await startServer(t, { maxSize: MAX })
  const url = await createUpload(server, { 'Upload-Defer-Length': '1' })
  const over = await send(url, 'PATCH', { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', ...OCTET }, data)
  t.equal(over.status, 413)
  t.equal((await stored(server, url)).length, 0, 'not a byte stored')
  t.equal((await tusRequest(url, { method: 'HEAD' })).headers['upload-offset'], '0')
  const exact = await send(url, 'PATCH', { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', 'Upload-Length': String(MAX), ...OCTET }, data.subarray(0, MAX))
  t.equal(exact.status, 204)
  t.equal(exact.headers['upload-offset'], String(MAX))
  t.equal(sha256(await stored(server, url)), sha256(data.subarray(0, MAX)))
})

t.test('tus creation-with-upload: a body one byte beyond Upload-Length is 413 and creates nothing; an exact fit completes', async (t) => {
  const server = await startServer(t, { maxSize: MAX })
  const over = await send(server.endpoint, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Length': '10', ...OCTET }, data.subarray(0, 11))
  t.equal(over.status, 413)
  t.equal(over.headers.location, undefined)
  t.same(await uploads(server), [], 'no upload created')
  // Deferred length: maxSize is the limit. Whether an (empty) upload is left behind, not a byte of the body is stored.
  const deferred = await send(server.endpoint, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Defer-Length': '1', ...OCTET }, data)
  t.equal(deferred.status, 413)
  for (const id of await uploads(server)) t.equal((await readFile(join(server.dir, id))).length, 0, `upload ${id} holds no byte`)
  const exact = await send(server.endpoint, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Length': '10', ...OCTET }, data.subarray(0, 10))
  t.equal(exact.status, 201)
  t.equal(exact.headers['upload-offset'], '10')
  t.equal(sha256(await stored(server, new URL(exact.headers.location!, server.origin).href)), sha256(data.subarray(0, 10)))
})

t.test('draft creation: a body one byte beyond maxSize is 413 with Upload-Limit and creates nothing; maxSize exactly is taken', async (t) => {
  const server = await startServer(t, { maxSize: MAX })
  const over = await send(server.endpoint, 'POST', { ...DRAFT, 'Upload-Complete': '?0' }, data)
  t.equal(over.status, 413)
  t.match(over.headers['upload-limit'], /^max-size=1000, min-size=0/)
  t.equal(over.headers.location, undefined)
  t.same(await uploads(server), [], 'no upload created')
  const exact = await send(server.endpoint, 'POST', { ...DRAFT, 'Upload-Complete': '?0' }, data.subarray(0, MAX))
  t.equal(exact.status, 201)
  t.equal(exact.headers['upload-offset'], String(MAX))
  t.equal(sha256(await stored(server, new URL(exact.headers.location!, server.origin).href)), sha256(data.subarray(0, MAX)))
})

t.test('draft PATCH: one byte beyond the length is 400 inconsistent-upload-length, the upload kept as it was; an exact fit completes', async (t) => {
  const server = await startServer(t, { maxSize: MAX })
  const created = await send(server.endpoint, 'POST', { ...DRAFT, 'Upload-Complete': '?0', 'Upload-Length': '10' }, data.subarray(0, 4))
  t.equal(created.status, 201)
  const url = new URL(created.headers.location!, server.origin).href
  // Upload-Complete: ?0, so only Content-Length says the body goes beyond the length (with ?1 the declared
  // length, offset + Content-Length, would already disagree with the known one).
  const over = await send(url, 'PATCH', { ...DRAFT, ...PARTIAL, 'Upload-Offset': '4', 'Upload-Complete': '?0' }, data.subarray(4, 11))
  t.equal(over.status, 400)
  t.equal(JSON.parse(over.body).type, INCONSISTENT)
  t.equal(over.headers['upload-offset'], '4')
  const head = await send(url, 'HEAD', DRAFT, Buffer.alloc(0))
  t.equal(head.status, 204, 'refused before a byte was read: the upload is still there')
  t.equal(head.headers['upload-offset'], '4')
  t.equal(sha256(await stored(server, url)), sha256(data.subarray(0, 4)))
  const exact = await send(url, 'PATCH', { ...DRAFT, ...PARTIAL, 'Upload-Offset': '4', 'Upload-Complete': '?1' }, data.subarray(4, 10))
  t.equal(exact.status, 204)
  t.equal(exact.headers['upload-complete'], '?1')
  t.equal(sha256(await stored(server, url)), sha256(data.subarray(0, 10)))
})

t.test('draft PATCH of an upload of unknown length: one byte beyond maxSize is 413 and stores nothing', async (t) => {
  const server = await startServer(t, { maxSize: MAX })
  const created = await send(server.endpoint, 'POST', { ...DRAFT, 'Upload-Complete': '?0' }, data.subarray(0, 4))
  const url = new URL(created.headers.location!, server.origin).href
  const over = await send(url, 'PATCH', { ...DRAFT, ...PARTIAL, 'Upload-Offset': '4', 'Upload-Complete': '?0' }, data.subarray(4, MAX + 1))
  t.equal(over.status, 413)
  t.match(over.headers['upload-limit'], /^max-size=1000, min-size=0/)
  t.equal((await send(url, 'HEAD', DRAFT, Buffer.alloc(0))).headers['upload-offset'], '4')
  t.equal(sha256(await stored(server, url)), sha256(data.subarray(0, 4)), 'not a byte stored')
  const exact = await send(url, 'PATCH', { ...DRAFT, ...PARTIAL, 'Upload-Offset': '4', 'Upload-Complete': '?1' }, data.subarray(4, MAX))
  t.equal(exact.status, 204)
  t.equal(exact.headers['upload-offset'], String(MAX))
  t.equal(sha256(await stored(server, url)), sha256(data.subarray(0, MAX)))
})
