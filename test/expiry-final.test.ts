// An unfinished final upload expires daysToKeep after the latest write among itself and its partials: a partial
// still being written keeps the final it would complete alive, in every place expiry is decided (HEAD, GET,
// removeExpired, Upload-Expires, the draft's Upload-Limit).
import t from 'tap'
import { backdate, idOf, removeExpired, send, sha256, startServer, tusRequest, type TestServer } from './helpers.js'

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }
/** The seconds left of an upload in the draft's Upload-Limit (interop 6: `expires`, from 7: `max-age`). */
const LEFT = /(?:expires|max-age)=(\d+)$/

async function partial (server: TestServer, length: number, content: string): Promise<string> {
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': String(length), 'Upload-Concat': 'partial' } })
  if (created.status !== 201) throw new Error(`partial creation: ${created.status} ${created.text}`)
  const url = new URL(created.headers.location!, server.origin).href
  const appended = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: content })
  if (appended.status !== 204) throw new Error(`append: ${appended.status} ${appended.text}`)
  return url
}

async function final (server: TestServer, parts: string[]): Promise<string> {
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Concat': `final;${parts.join(' ')}` } })
  if (created.status !== 201) throw new Error(`final creation: ${created.status} ${created.text}`)
  return new URL(created.headers.location!, server.origin).href
}

t.test('a final older than daysToKeep lives while a partial is written to, then completes', async (t) => {
  const server = await startServer(t, { daysToKeep: 1 })
  const idle = await partial(server, 3, 'abc')
  const written = await partial(server, 4, 'de')
  const url = await final(server, [idle, written])
  await backdate(server.dir, idOf(url), 2)
  await backdate(server.dir, idOf(idle), 0.9)

  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.status, 200, 'tus HEAD of the final')
  const partialExpires = (await tusRequest(written, { method: 'HEAD' })).headers['upload-expires']
  t.ok(partialExpires !== undefined)
  t.equal(head.headers['upload-expires'], partialExpires, 'Upload-Expires counts from the latest write, the partial\'s')
  for (const version of [6, 9]) {
    const draft = await send(url, 'HEAD', { 'Upload-Draft-Interop-Version': String(version) })
    t.equal(draft.status, 204, `interop ${version}: HEAD of the final`)
    const left = Number(LEFT.exec(String(draft.headers['upload-limit']))?.[1])
    t.ok(left > 86_400 - 60 && left <= 86_400, `interop ${version}: Upload-Limit counts from the partial's write (${left} s left)`)
  }
  t.same(await removeExpired(server.app), [], 'removeExpired keeps the final and its partials')

  t.equal((await tusRequest(written, { method: 'PATCH', headers: { 'Upload-Offset': '2', ...OCTET }, body: 'fg' })).status, 204)
  const get = await tusRequest(url)
  t.equal(get.status, 200, 'the final completed with its last partial')
  t.equal(sha256(get.text), sha256('abcdefg'))
})

t.test('a final whose partials are all idle past daysToKeep expires with them', async (t) => {
  const server = await startServer(t, { daysToKeep: 1 })
  const a = await partial(server, 4, 'abc')
  const b = await partial(server, 4, 'de')
  const url = await final(server, [a, b])
  for (const id of [a, b, url].map(idOf)) await backdate(server.dir, id, 2)

  t.equal((await tusRequest(url, { method: 'HEAD' })).status, 410, 'tus HEAD of the final')
  t.equal((await tusRequest(url)).status, 410, 'tus GET of the final')
  for (const version of [6, 9]) {
    t.equal((await send(url, 'HEAD', { 'Upload-Draft-Interop-Version': String(version) })).status, 410, `interop ${version}: HEAD of the final`)
  }
  const removed = (await removeExpired(server.app)).map((upload) => upload.id).sort()
  t.same(removed, [a, b, url].map(idOf).sort(), 'removeExpired removes the final with its partials')
  t.equal((await tusRequest(url, { method: 'HEAD' })).status, 404)
})

t.test('a final whose partial is gone expires by its own last write', async (t) => {
  const server = await startServer(t, { daysToKeep: 1 })
  const a = await partial(server, 3, 'a')
  const url = await final(server, [a])
  t.equal((await tusRequest(a, { method: 'DELETE' })).status, 204)
  await backdate(server.dir, idOf(url), 2)
  t.same((await removeExpired(server.app)).map((upload) => upload.id), [idOf(url)])
})
