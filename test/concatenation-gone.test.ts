// A final upload whose partial is gone: terminated, expired and removed, or replaced by another upload created
// under the same id (onUploadCreate may choose ids). Such a final can never complete: HEAD and GET answer 410 in
// every protocol, it copies nothing, it stops waiting, and DELETE still removes it.
import t, { type Test } from 'tap'
import { access, mkdtemp, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FileStore, TusErrors, type DataStore, type UploadInfo } from '../lib/index.js'
import { backdate, delegatingTo, idOf, removeExpired, send, sha256, startServer, tusRequest, type TestServer } from './helpers.js'

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }
const GONE = /^A partial upload of this final upload is gone \(([A-Za-z0-9_-]+)\): it can never complete$/

function b64 (text: string): string {
  return Buffer.from(text).toString('base64')
}

async function exists (path: string): Promise<boolean> {
  return await access(path).then(() => true, () => false)
}

/** A partial upload of `length` bytes with `content` appended; its URL. `wanted` asks onUploadCreate for that id. */
async function partial (server: TestServer, length: number, content = '', headers: Record<string, string> = {}, wanted?: string): Promise<string> {
  const created = await tusRequest(server.endpoint, {
    method: 'POST',
    headers: { 'Upload-Length': String(length), 'Upload-Concat': 'partial', ...(wanted === undefined ? {} : { 'Upload-Metadata': `wanted ${b64(wanted)}` }), ...headers }
  })
  if (created.status !== 201) throw new Error(`partial creation: ${created.status} ${created.text}`)
  const url = new URL(created.headers.location!, server.origin).href
  if (content !== '') {
    const appended = await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET, ...headers }, body: content })
    if (appended.status !== 204) throw new Error(`append: ${appended.status} ${appended.text}`)
  }
  return url
}

async function final (server: TestServer, parts: string[], headers: Record<string, string> = {}): Promise<string> {
  const created = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Concat': `final;${parts.join(' ')}`, ...headers } })
  if (created.status !== 201) throw new Error(`final creation: ${created.status} ${created.text}`)
  return new URL(created.headers.location!, server.origin).href
}

/** The final's files as they stand: its info file's text and its data file's bytes. */
async function filesOf (server: TestServer, url: string): Promise<{ info: string, data: Buffer }> {
  return { info: await readFile(join(server.dir, `${idOf(url)}.json`), 'utf8'), data: await readFile(join(server.dir, idOf(url))) }
}

/** tus HEAD and GET of a broken final: 410 naming `partialId`, never the partial's 404. */
async function assertGone (t: Test, url: string, partialId: string, headers: Record<string, string> = {}): Promise<void> {
  const head = await tusRequest(url, { method: 'HEAD', headers })
  t.equal(head.status, 410, 'HEAD of the final')
  t.equal(head.headers['tus-resumable'], '1.0.0')
  t.equal(head.headers['upload-offset'], undefined, 'no offset: it never completes')
  const get = await tusRequest(url, { headers })
  t.equal(get.status, 410, 'GET of the final')
  t.equal(get.text.match(GONE)?.[1], partialId, get.text)
}

/** Each upload its owner's (the README's Security setup), and ids chosen by the client through onUploadCreate. */
async function scopedServer (t: Test, options: { store?: DataStore } = {}): Promise<TestServer> {
  const owner = (request: { headers: Record<string, unknown> }): string => String(request.headers.authorization)
  return await startServer(t, {
    ...options,
    onUploadCreate: (upload, request) => ({
      ...(upload.metadata.wanted === undefined ? {} : { id: upload.metadata.wanted }),
      metadata: { ...upload.metadata, owner: owner(request) }
    }),
    onUploadAccess: (upload, _action, request) => {
      if (upload.metadata.owner !== owner(request)) throw new TusErrors.NOT_FOUND()
    }
  })
}

t.test('tus: a final whose partial was terminated answers 410 on HEAD and GET, stays as it was, and DELETE removes it', async (t) => {
  const server = await startServer(t)
  const completed: UploadInfo[] = []
  server.app.tus.on('completed', (upload) => { completed.push(upload) })
  const a = await partial(server, 5, 'abcde')
  const b = await partial(server, 5, 'fg')
  const url = await final(server, [a, b])
  const before = await filesOf(server, url)
  t.equal(before.data.length, 0, 'nothing copied while b is unfinished')
  t.equal((await tusRequest(b, { method: 'DELETE' })).status, 204)

  await assertGone(t, url, idOf(b))
  t.same(await filesOf(server, url), before, 'the final\'s info and data are untouched')
  t.same(completed, [], 'never completed')
  t.equal((await readFile(join(server.dir, idOf(a)))).toString(), 'abcde', 'the other partial is untouched')

  t.equal((await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: 'x' })).status, 403)
  t.equal((await tusRequest(url, { method: 'DELETE' })).status, 204)
  t.notOk(await exists(join(server.dir, idOf(url))), 'data file removed')
  t.notOk(await exists(join(server.dir, `${idOf(url)}.json`)), 'info file removed')
  t.equal((await tusRequest(url, { method: 'HEAD' })).status, 404, 'now it is gone itself')
})

t.test('tus: a partial that expired and was swept makes its final 410', async (t) => {
  const server = await startServer(t, { daysToKeep: 1 })
  const a = await partial(server, 4, 'ab')
  const url = await final(server, [a])
  await backdate(server.dir, idOf(a), 2)
  t.same((await removeExpired(server.app)).map((upload) => upload.id), [idOf(a)], 'the partial expired, not the final')
  await assertGone(t, url, idOf(a))
  t.equal((await stat(join(server.dir, idOf(url)))).size, 0)
})

t.test('the draft answers HEAD and GET of such a final with the same 410 (interop 6 and 9)', async (t) => {
  const server = await startServer(t)
  const a = await partial(server, 3, 'a')
  const url = await final(server, [a])
  t.equal((await tusRequest(a, { method: 'DELETE' })).status, 204)
  for (const version of [6, 9]) {
    const headers = { 'Upload-Draft-Interop-Version': String(version) }
    const head = await send(url, 'HEAD', headers)
    t.equal(head.status, 410, `interop ${version}: HEAD`)
    t.equal(head.headers['upload-draft-interop-version'], String(version))
    t.equal(head.headers['tus-resumable'], undefined)
    // GET is offset retrieval from interop 8, a download before: both reach the same rule.
    const get = await send(url, 'GET', headers)
    t.equal(get.status, 410, `interop ${version}: GET`)
    t.equal(get.body.match(GONE)?.[1], idOf(a), get.body)
    t.equal(get.headers['upload-draft-interop-version'], String(version))
  }
  t.equal((await stat(join(server.dir, idOf(url)))).size, 0)
  const removed = await send(url, 'DELETE', { 'Upload-Draft-Interop-Version': '9' })
  t.equal(removed.status, 204)
  t.notOk(await exists(join(server.dir, `${idOf(url)}.json`)))
})

t.test('another user\'s upload created under a removed partial\'s id never reaches the final', async (t) => {
  const server = await scopedServer(t)
  const alice = { Authorization: 'alice' }
  const bob = { Authorization: 'bob' }
  const completed: UploadInfo[] = []
  server.app.tus.on('completed', (upload) => { completed.push(upload) })
  const mine = await partial(server, 5, '', alice, 'report-part-1')
  t.equal(idOf(mine), 'report-part-1')
  const url = await final(server, [mine], alice)
  t.equal((await tusRequest(mine, { method: 'DELETE', headers: alice })).status, 204)
  // Bob's upload must not share the removed partial's creation time (milliseconds), or only its length would differ.
  await new Promise((resolve) => setTimeout(resolve, 5))

  // Bob's partial completes under the id the final waits for: the final is looked at, and left alone.
  const theirs = await partial(server, 5, 'BOB!!', bob, 'report-part-1')
  t.equal(theirs, mine, 'the same URL')
  await assertGone(t, url, 'report-part-1', alice)
  const data = await readFile(join(server.dir, idOf(url)))
  t.equal(data.length, 0, 'not one of Bob\'s bytes in Alice\'s final')
  t.not(sha256(data), sha256('BOB!!'))
  t.same(completed, [])
  t.equal((await readFile(join(server.dir, 'report-part-1'))).toString(), 'BOB!!', 'Bob\'s upload is his own, untouched')
  const bobsHead = await tusRequest(theirs, { method: 'HEAD', headers: bob })
  t.equal(bobsHead.headers['upload-offset'], '5')
  t.equal((await tusRequest(url, { method: 'HEAD', headers: bob })).status, 404, 'Bob learns nothing of Alice\'s final')
})

t.test('a longer upload under a removed partial\'s id: 410, never a data file beyond the final\'s length', async (t) => {
  const server = await scopedServer(t)
  const alice = { Authorization: 'alice' }
  const mine = await partial(server, 5, 'hello', alice, 'part')
  const other = await partial(server, 3, 'abc', alice)
  // Created while `part` is complete: the final is copied at once; a second one waits for an unfinished partial.
  const copied = await final(server, [mine, other], alice)
  const waiting = await partial(server, 2, 'x', alice)
  const url = await final(server, [mine, waiting], alice)
  t.equal((await tusRequest(mine, { method: 'DELETE', headers: alice })).status, 204)
  await partial(server, 50, 'y'.repeat(50), alice, 'part')

  await assertGone(t, url, 'part', alice)
  t.equal((await stat(join(server.dir, idOf(url)))).size, 0)
  // Completing the other partial looks at the final again: still nothing copied, and its PATCH succeeds.
  const last = await tusRequest(waiting, { method: 'PATCH', headers: { ...alice, 'Upload-Offset': '1', ...OCTET }, body: 'z' })
  t.equal(last.status, 204)
  t.equal((await stat(join(server.dir, idOf(url)))).size, 0)
  await assertGone(t, url, 'part', alice)

  const done = await tusRequest(copied, { headers: alice })
  t.equal(done.status, 200, 'a final completed before its partial went is complete for good')
  t.equal(done.text, 'helloabc')
})

t.test('a final records which partials it was made of; intact ones still complete it, byte-identical', async (t) => {
  const server = await startServer(t)
  const a = await partial(server, 6, 'first-')
  const b = await partial(server, 6, 'sec')
  const url = await final(server, [a, b, a])
  const stored = JSON.parse(await readFile(join(server.dir, `${idOf(url)}.json`), 'utf8')) as { concat: { partials: unknown } }
  const infoOf = async (id: string): Promise<{ createdAt: string }> => JSON.parse(await readFile(join(server.dir, `${id}.json`), 'utf8')) as { createdAt: string }
  const [first, second] = [await infoOf(idOf(a)), await infoOf(idOf(b))]
  t.same(stored.concat.partials, [{ createdAt: first.createdAt, size: 6 }, { createdAt: second.createdAt, size: 6 }, { createdAt: first.createdAt, size: 6 }])
  t.equal((await tusRequest(b, { method: 'PATCH', headers: { 'Upload-Offset': '3', ...OCTET }, body: 'ond' })).status, 204)
  const head = await tusRequest(url, { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(head.headers['upload-offset'], '18')
  t.equal(sha256(await readFile(join(server.dir, idOf(url)))), sha256('first-secondfirst-'))
})

t.test('a partial removed while its final is being created: the final is created (201) and answers 410', async (t) => {
  const server = await startServer(t, {
    // After the partials were checked, before the final is stored.
    onUploadCreate: async (upload) => {
      if (upload.concat?.type === 'final') for (const id of upload.concat.parts) await server.app.tus.store.terminate(id)
    }
  })
  const a = await partial(server, 2, 'ab')
  const url = await final(server, [a])
  await assertGone(t, url, idOf(a))
  t.equal((await stat(join(server.dir, idOf(url)))).size, 0)
})

t.test('a broken final leaves the list of finals waiting for partials', async (t) => {
  const waiting = new Map<string, Set<string>>()
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-gone-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const files = new FileStore({ directory: dir })
  const store = delegatingTo(files, {
    addPendingFinal: async (finalId, partialIds) => { for (const id of partialIds) waiting.set(id, new Set([...waiting.get(id) ?? [], finalId])) },
    listPendingFinals: async (partialId) => [...waiting.get(partialId) ?? []],
    removePendingFinal: async (finalId, partialIds) => { for (const id of partialIds) waiting.get(id)?.delete(finalId) }
  })
  const server = await startServer(t, { store, dir })
  const a = await partial(server, 2, 'a')
  const b = await partial(server, 2, 'b')
  const url = await final(server, [a, b])
  t.same([...waiting.get(idOf(a)) ?? []], [idOf(url)], 'the final waits for a')
  t.equal((await tusRequest(b, { method: 'DELETE' })).status, 204)
  await assertGone(t, url, idOf(b))
  t.same([...waiting.values()].flatMap((finals) => [...finals]), [], 'no partial lists it any more')
})

t.test('a final stored without its partials\' identities (older versions) is still finished by id, never beyond its length', async (t) => {
  const server = await startServer(t)
  const store = server.app.tus.store
  const a = await partial(server, 3, 'abc')
  const b = await partial(server, 4, 'de')
  const legacy = async (id: string, parts: string[], size: number): Promise<string> => {
    await store.create({ id, size, metadata: {}, concat: { type: 'final', parts, header: `final;${parts.join(' ')}` } })
    return `${server.endpoint}${id}`
  }
  const whole = await legacy('old-final', [idOf(a), idOf(b)], 7)
  t.equal((await tusRequest(b, { method: 'PATCH', headers: { 'Upload-Offset': '2', ...OCTET }, body: 'fg' })).status, 204)
  const head = await tusRequest(whole, { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], '7')
  t.equal((await readFile(join(server.dir, 'old-final'))).toString(), 'abcdefg')

  const short = await partial(server, 2, 'xy')
  const broken = await legacy('old-broken', [idOf(short)], 2)
  t.equal((await tusRequest(short, { method: 'DELETE' })).status, 204)
  await assertGone(t, broken, idOf(short))
  // The id taken again by a longer partial: an older final cannot tell, but never copies past its length.
  await store.create({ id: idOf(short), size: 9, metadata: {}, concat: { type: 'partial' } })
  await store.write(idOf(short), 0, (async function * () { yield Buffer.from('123456789') })())
  await assertGone(t, broken, idOf(short))
  t.equal((await stat(join(server.dir, 'old-broken'))).size, 0)
})
