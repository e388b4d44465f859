// onUploadCreate's `directory`: per-request storage sub-directories in the FileStore.
import t from 'tap'
import { mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createUpload, idOf, randomBytesSeeded, removeExpired, sha256, startServer, tusRequest, tusUpload } from './helpers.js'

const OCTET = { 'Content-Type': 'application/offset+octet-stream' }

t.test('an upload in a per-user sub-directory: data there, info in the root; every request finds it', async (t) => {
  const server = await startServer(t, {
    auth: (request) => { if (request.headers.authorization === undefined) throw Object.assign(new Error('who?'), { statusCode: 401 }) },
    onUploadCreate: (_upload, request) => ({ directory: `users/${request.headers.authorization!.slice(7)}` })
  })
  const data = randomBytesSeeded(120_000, 4)
  const headers = { Authorization: 'Bearer alice' }
  const url = await tusUpload(data, { endpoint: server.endpoint, chunkSize: 50_000, headers, metadata: { filename: 'a.bin' } })
  const id = idOf(url)
  t.same(await readdir(join(server.dir, 'users', 'alice')), [id])
  t.equal(sha256(await readFile(join(server.dir, 'users', 'alice', id))), sha256(data))
  const info = JSON.parse(await readFile(join(server.dir, `${id}.json`), 'utf8')) as { directory: string }
  t.equal(info.directory, 'users/alice', 'the directory is recorded in the info file')
  const head = await tusRequest(url, { method: 'HEAD', headers })
  t.equal(head.headers['upload-offset'], String(data.length))
  const range = await tusRequest(url, { headers: { ...headers, Range: 'bytes=100-199' } })
  t.equal(range.status, 206)
  t.equal(sha256(range.body), sha256(data.subarray(100, 200)))
  t.equal((await tusRequest(url, { method: 'DELETE', headers })).status, 204)
  t.same(await readdir(join(server.dir, 'users', 'alice')), [], 'the data file is gone')
  t.notOk((await readdir(server.dir)).includes(`${id}.json`), 'the info file is gone')
})

t.test('ids stay unique across sub-directories, and a partial upload resumes from its sub-directory', async (t) => {
  let directory = 'one'
  const server = await startServer(t, { onUploadCreate: () => ({ id: 'shared-id', directory }) })
  const url = await createUpload(server, { 'Upload-Length': '10' })
  t.equal((await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: 'hello' })).status, 204)
  directory = 'two'
  const clash = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '3' } })
  t.equal(clash.status, 409)
  t.equal(clash.text, 'Upload id "shared-id" is already in use')
  t.same(await readdir(join(server.dir, 'two')), [], 'the refused upload left no data file behind')
  t.equal((await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '5', ...OCTET }, body: 'world' })).status, 204)
  t.equal(await readFile(join(server.dir, 'one', 'shared-id'), 'utf8'), 'helloworld')
})

t.test('sub-directories that could leave the root or confuse the store are refused before anything is created', async (t) => {
  const bad = ['../evil', 'a/../b', '/abs', 'a//b', 'a/', '.hidden', 'a\\b', 'x.json', 'a/./b', '', 'a\0b', 'é', 'a/b/c/d/e/f/g/h/i', 'x'.repeat(129)]
  let current = ''
  // A parent of our own: the system temp dir beside it changes as other test files run.
  const parent = await ownParent(t)
  const server = await startServer(t, { dir: join(parent, 'root'), onUploadCreate: () => ({ directory: current }) })
  const outside = await readdir(parent)
  for (const directory of bad) {
    current = directory
    const response = await tusRequest(server.endpoint, { method: 'POST', headers: { 'Upload-Length': '3' } })
    t.equal(response.status, 500, JSON.stringify(directory))
    t.match(response.text, /^onUploadCreate failed: it returned an invalid directory/)
  }
  t.same(await readdir(server.dir), [])
  t.same((await readdir(parent)).sort(), outside.sort(), 'nothing appeared beside the upload directory')
})

t.test('an info file whose recorded directory was tampered with is never followed', async (t) => {
  const parent = await ownParent(t)
  const server = await startServer(t, { dir: join(parent, 'root'), onUploadCreate: () => ({ directory: 'safe' }) })
  const url = await createUpload(server, { 'Upload-Length': '3' })
  const id = idOf(url)
  const infoPath = join(server.dir, `${id}.json`)
  const info = JSON.parse(await readFile(infoPath, 'utf8')) as Record<string, unknown>
  await mkdir(join(dirname(server.dir), 'victim'), { recursive: true })
  t.teardown(async () => { await writeFile(infoPath, JSON.stringify(info)) })
  await writeFile(infoPath, JSON.stringify({ ...info, directory: '../victim' }))
  // A server started after the tampering reads the info file (the first one serves it from its cache).
  const restarted = await startServer(t, { dir: server.dir })
  for (const method of ['HEAD', 'GET', 'PATCH']) {
    const response = await tusRequest(`${restarted.endpoint}${id}`, { method, headers: method === 'PATCH' ? { 'Upload-Offset': '0', ...OCTET } : {}, ...(method === 'PATCH' ? { body: 'abc' } : {}) })
    t.equal(response.status, 500, method)
  }
  t.same(await readdir(join(dirname(server.dir), 'victim')), [], 'nothing written outside the root')
})

t.test('expiry finds and removes uploads in sub-directories', async (t) => {
  const server = await startServer(t, { onUploadCreate: () => ({ directory: 'tenant-7' }) })
  const url = await createUpload(server, { 'Upload-Length': '3' })
  const id = idOf(url)
  // Aged by hand: the helper backdate() knows only root data files.
  const past = new Date(Date.now() - 30 * 86_400_000)
  const infoPath = join(server.dir, `${id}.json`)
  const info = JSON.parse(await readFile(infoPath, 'utf8')) as Record<string, unknown>
  await writeFile(infoPath, JSON.stringify({ ...info, createdAt: past.toISOString() }))
  await utimes(join(server.dir, 'tenant-7', id), past, past)
  const removed = await removeExpired(server.app)
  t.same(removed.map((upload) => [upload.id, upload.directory]), [[id, 'tenant-7']])
  t.same(await readdir(join(server.dir, 'tenant-7')), [])
  t.equal((await tusRequest(url, { method: 'HEAD' })).status, 404)
})

async function ownParent (t: { teardown: (fn: () => unknown) => void }): Promise<string> {
  const parent = await mkdtemp(join(tmpdir(), 'fastify-tus-parent-'))
  t.teardown(async () => { await rm(parent, { recursive: true, force: true }) })
  await mkdir(join(parent, 'root'))
  return parent
}
