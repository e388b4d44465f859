// Upload ids are refused by their form, not merely not found: a decoy upload sits exactly where a loosened
// id check would look (an id with a dot, an id one character too long), and must never be served or touched.
import t, { type Test } from 'tap'
import { readFile, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { FileStore } from '../lib/index.js'
import { rawRequest, sha256, startServer, tusRequest, type TestServer } from './helpers.js'

const CONTENT = Buffer.from('decoy bytes!')
const DOTTED = 'decoy.1'
const LONGEST = 'l'.repeat(128)
const TOO_LONG = 'd'.repeat(129)

/** Writes an upload's two files by hand, as the store would have: data `<id>` and info `<id>.json`. */
async function plant (dir: string, id: string): Promise<void> {
  await writeFile(join(dir, id), CONTENT)
  await writeFile(join(dir, `${id}.json`), JSON.stringify({ id, size: CONTENT.length, metadata: { filename: 'decoy' }, createdAt: new Date().toISOString() }))
}

async function snapshot (dir: string): Promise<Record<string, string>> {
  const files: Record<string, string> = {}
  for (const name of (await readdir(dir)).sort()) files[name] = sha256(await readFile(join(dir, name)))
  return files
}

/** Every route, tus and draft, on `id`: each must answer 404 and leave the directory as it was. */
async function refusedEverywhere (t: Test, server: TestServer, id: string): Promise<void> {
  const before = await snapshot(server.dir)
  const url = `${server.endpoint}${id}`
  const octet = { 'Content-Type': 'application/offset+octet-stream', 'Upload-Offset': '0' }
  const draft = { 'Upload-Draft-Interop-Version': '6' }
  const requests: Array<[string, Promise<{ status: number, text: string }>]> = [
    ['tus HEAD', tusRequest(url, { method: 'HEAD' })],
    ['tus GET', rawRequest(url)],
    ['tus PATCH', tusRequest(url, { method: 'PATCH', headers: { ...octet, 'Upload-Offset': String(CONTENT.length) }, body: 'x' })],
    ['tus DELETE', tusRequest(url, { method: 'DELETE' })],
    ['override PATCH', tusRequest(url, { method: 'POST', headers: { 'X-HTTP-Method-Override': 'PATCH', ...octet }, body: 'x' })],
    ['draft HEAD', rawRequest(url, { method: 'HEAD', headers: draft })],
    ['draft GET', rawRequest(url, { headers: { 'Upload-Draft-Interop-Version': '8' } })],
    ['draft PATCH', rawRequest(url, { method: 'PATCH', headers: { ...draft, 'Upload-Offset': String(CONTENT.length), 'Upload-Complete': '?1', 'Content-Type': 'application/partial-upload' }, body: 'x' })],
    ['draft DELETE', rawRequest(url, { method: 'DELETE', headers: draft })]
  ]
  for (const [what, pending] of requests) {
    const response = await pending
    t.equal(response.status, 404, `${what} ${id.slice(0, 12)}…`)
    t.notOk(response.text.includes(CONTENT.toString()), `${what}: the decoy's bytes are not served`)
  }
  t.same(await snapshot(server.dir), before, `${id.slice(0, 12)}…: nothing read into or changed on disk`)
}

t.test('an id with a dot is refused on every route, though an upload of that name exists', async (t) => {
  const server = await startServer(t)
  await plant(server.dir, DOTTED)
  await refusedEverywhere(t, server, DOTTED)
})

t.test('an id of 129 characters is refused, though an upload of that name exists; 128 is served', async (t) => {
  // Fastify refuses path parameters over 100 characters by default (414): let them reach the plugin.
  const server = await startServer(t, {}, undefined, { routerOptions: { maxParamLength: 1000 } })
  await plant(server.dir, TOO_LONG)
  await plant(server.dir, LONGEST)
  await refusedEverywhere(t, server, TOO_LONG)
  const longest = await tusRequest(`${server.endpoint}${LONGEST}`, { method: 'HEAD' })
  t.equal(longest.status, 200, 'the longest valid id is found: the refusal above is the length rule')
  t.equal(longest.headers['upload-offset'], String(CONTENT.length))
  const download = await rawRequest(`${server.endpoint}${LONGEST}`)
  t.equal(download.status, 200)
  t.equal(sha256(download.body), sha256(CONTENT))
})

t.test('FileStore used directly refuses those ids too, and does not list them', async (t) => {
  const server = await startServer(t)
  const store = new FileStore({ directory: server.dir })
  t.teardown(async () => { await store.close() })
  await plant(server.dir, DOTTED)
  await plant(server.dir, TOO_LONG)
  await plant(server.dir, LONGEST)
  const before = await snapshot(server.dir)
  for (const id of [DOTTED, TOO_LONG]) {
    await t.rejects(store.getInfo(id), { code: 'FST_TUS_NOT_FOUND' }, `getInfo ${id.slice(0, 12)}`)
    await t.rejects(store.read(id), { code: 'FST_TUS_NOT_FOUND' }, `read ${id.slice(0, 12)}`)
    await t.rejects(store.write(id, CONTENT.length, (async function * () { yield Buffer.from('x') })()), { code: 'FST_TUS_NOT_FOUND' })
    await t.rejects(store.declareLength(id, 20), { code: 'FST_TUS_NOT_FOUND' })
    await store.terminate(id).catch(() => undefined)
  }
  t.same(await snapshot(server.dir), before, 'the decoys are untouched')
  const listed: string[] = []
  for await (const id of store.list()) listed.push(id)
  t.same(listed, [LONGEST], 'only the valid id is listed')
})
