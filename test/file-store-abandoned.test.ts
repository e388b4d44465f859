// What crashes leave behind, collected by FileStore.removeAbandoned() and app.tus.removeExpired(): torn info
// files, data files without an info file, temporary info files, stale staged bodies. Valid uploads, fresh files
// and files that are not the store's stay, byte for byte.
import t from 'tap'
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, symlink, utimes, watch, writeFile } from 'node:fs/promises'
import { request as httpRequest } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { FileStore, type DataStore } from '../lib/index.js'
import { removeStaleStaged } from '../lib/core/staging.js'
import { createUpload, idOf, sha256, startServer, tusRequest } from './helpers.js'

const DAY_MS = 86_400_000
const OCTET = { 'Content-Type': 'application/offset+octet-stream' }

async function tempDir (t: { teardown: (fn: () => unknown) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-abandoned-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

/** Writes `path` (parents made) and sets its times `days` days back (0: now). */
async function put (path: string, content: string, days: number): Promise<void> {
  await mkdir(join(path, '..'), { recursive: true })
  await writeFile(path, content)
  await age(path, days)
}

async function age (path: string, days: number): Promise<void> {
  const when = new Date(Date.now() - days * DAY_MS)
  await utimes(path, when, when)
}

async function exists (path: string): Promise<boolean> {
  return await lstat(path).then(() => true, () => false)
}

/** Every file under `dir` (links as links, `.staging` included) with the sha256 of its bytes. */
async function snapshot (dir: string): Promise<Map<string, string>> {
  const files = new Map<string, string>()
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name)
    if (entry.isFile()) files.set(path.slice(dir.length + 1), sha256(await readFile(path)))
    else if (entry.isSymbolicLink()) files.set(path.slice(dir.length + 1), 'link')
  }
  return files
}

/** A complete upload made through the store, its files set `days` back. */
async function validUpload (store: FileStore, id: string, body: string, days: number, directory?: string): Promise<void> {
  await store.create({ id, size: body.length, metadata: { name: id }, ...(directory === undefined ? {} : { directory }) })
  await store.write(id, 0, (async function * () { yield Buffer.from(body) })())
  await store.flush(id)
  await age(join(store.directory, `${id}.json`), days)
  await age(join(store.directory, ...(directory === undefined ? [] : [directory]), id), days)
}

t.test('FileStore.removeAbandoned: old leftovers of each kind go, fresh ones, valid uploads and foreign files stay', async (t) => {
  const dir = await tempDir(t)
  const store = new FileStore({ directory: dir })
  t.teardown(async () => { await store.close() })
  // Valid uploads, old (a retention that keeps them: completed), in the root and in a sub-directory.
  await validUpload(store, 'valid-root', 'kept bytes', 30)
  await validUpload(store, 'valid-sub', 'kept in a sub-directory', 30, 'users/bob')
  // Another store reads them without its cache: the same answer must come from the files.
  const leftovers = {
    // 1. Torn info files (a creation died writing them), with and without a data file in the root.
    tornOld: ['torn-old.json', 'torn-old'],
    tornEmpty: ['torn-empty.json'],
    tornSub: ['torn-sub.json', 'users/bob/torn-sub'],
    // 2. Data files with no info file, in the root and in a sub-directory a valid info names.
    orphanRoot: ['orphan-root'],
    orphanSub: ['users/bob/orphan-sub'],
    // 3. A temporary info file whose rename never happened.
    temporary: ['valid-root.json.0123456789ab-7.tmp']
  }
  await put(join(dir, 'torn-old.json'), '{"id":"torn-old","size":10,"meta', 30)
  await put(join(dir, 'torn-old'), 'torn bytes', 30)
  await put(join(dir, 'torn-empty.json'), '', 30)
  await put(join(dir, 'torn-sub.json'), '{"id":"torn-sub","size":3,"metadata":{},"direc', 30)
  await put(join(dir, 'users/bob/torn-sub'), 'abc', 30)
  await put(join(dir, 'orphan-root'), 'a termination died between its unlinks', 30)
  await put(join(dir, 'users/bob/orphan-sub'), 'a creation died before its info', 30)
  await put(join(dir, 'valid-root.json.0123456789ab-7.tmp'), '{"id":"valid-root","size":10,"metadata":{}', 30)
  // Fresh ones of each kind (a creation or a replacement in progress), and a torn info whose data is fresh.
  await put(join(dir, 'torn-fresh.json'), '{"id":"torn-fr', 0)
  await put(join(dir, 'torn-fresh'), 'x', 30)
  await put(join(dir, 'torn-fresh-data.json'), '{"id":"torn-fr', 30)
  await put(join(dir, 'torn-fresh-data'), 'being written', 0)
  await put(join(dir, 'orphan-fresh'), 'y', 0)
  await put(join(dir, 'users/bob/orphan-fresh-sub'), 'z', 0)
  await put(join(dir, 'valid-root.json.0123456789ab-8.tmp'), '{"id":', 0)
  // Not the store's: other names, a sub-directory no upload names, links, directories named like ids.
  await put(join(dir, 'notes.txt'), 'mine', 30)
  await put(join(dir, '.hidden'), 'mine', 30)
  await put(join(dir, 'bad!id.json'), '{"torn', 30)
  await put(join(dir, 'bad!id'), 'mine', 30)
  await put(join(dir, 'valid-root.json.bak'), 'mine', 30)
  await put(join(dir, 'x.json.tmp'), 'mine', 30)
  await put(join(dir, 'x.json.0123456789ab-1.tmp.old'), 'mine', 30)
  await put(join(dir, 'elsewhere/stray-id'), 'in a directory no upload names', 30)
  await put(join(dir, 'target.txt'), 'a link points here', 30)
  await symlink(join(dir, 'target.txt'), join(dir, 'link-id'))
  await mkdir(join(dir, 'dir-named-like-an-id'))
  const before = await snapshot(dir)
  const removedPaths = Object.values(leftovers).flat()
  for (const path of removedPaths) t.ok(before.has(path), `${path} is there to begin with`)

  const removed = await store.removeAbandoned(new Date(Date.now() - DAY_MS))
  // torn-old (with its data), torn-empty, torn-sub (the info; its data then goes as an orphan), orphan-root,
  // orphan-sub, the temporary file.
  t.equal(removed, 7, 'the count: torn infos, data files without an info, temporary files')
  const after = await snapshot(dir)
  for (const path of removedPaths) t.notOk(after.has(path), `${path} is removed`)
  const kept = new Map([...before].filter(([path]) => !removedPaths.includes(path)))
  t.same(after, kept, 'everything else is byte-identical')
  t.ok(await exists(join(dir, 'dir-named-like-an-id')), 'a directory named like an id stays')
  t.equal((await store.getInfo('valid-sub')).offset, 'kept in a sub-directory'.length)
  const reader = new FileStore({ directory: dir, cacheSize: 0 })
  t.equal(await (await reader.read('valid-root')).toArray().then((chunks) => Buffer.concat(chunks).toString()), 'kept bytes')
  t.equal(await store.removeAbandoned(new Date(Date.now() - DAY_MS)), 0, 'nothing more the second time')
})

t.test('FileStore.removeAbandoned never removes a valid upload, even older than `before`, cached or not', async (t) => {
  const dir = await tempDir(t)
  const writer = new FileStore({ directory: dir })
  t.teardown(async () => { await writer.close() })
  await validUpload(writer, 'done', 'complete', 0)
  await writer.create({ id: 'empty', size: undefined, metadata: {} })
  await writer.create({ id: 'deferred', size: undefined, metadata: {}, directory: 'd' })
  await writer.declareLength('deferred', 5)
  const before = await snapshot(dir)
  // `before` in the future: every file is older than it; only what is abandoned may go, and nothing is.
  const future = new Date(Date.now() + DAY_MS)
  t.equal(await writer.removeAbandoned(future), 0, 'the store that has them cached')
  const cold = new FileStore({ directory: dir, cacheSize: 0 })
  t.equal(await cold.removeAbandoned(future), 0, 'a store that reads every info file')
  t.same(await snapshot(dir), before, 'byte-identical')
  t.equal((await writer.getInfo('deferred')).size, 5)
})

t.test('FileStore.removeAbandoned on a directory that does not exist removes nothing', async (t) => {
  const dir = await tempDir(t)
  const store = new FileStore({ directory: join(dir, 'never-made') })
  t.equal(await store.removeAbandoned(new Date()), 0)
  await t.rejects(store.removeAbandoned(new Date(Number.NaN)), TypeError)
})

t.test('removeStaleStaged: old staged bodies go, fresh ones, ones in use and other names stay', async (t) => {
  const dir = await tempDir(t)
  const stale = `${'a'.repeat(24)}.chunk`
  const fresh = `${'b'.repeat(24)}.chunk`
  await put(join(dir, stale), 'left by a crash', 30)
  await put(join(dir, fresh), 'being staged', 0)
  await put(join(dir, 'mine.chunk'), 'not a staged name', 30)
  await put(join(dir, `${'c'.repeat(24)}.chunk.bak`), 'not a staged name', 30)
  t.equal(await removeStaleStaged(dir, new Date(Date.now() - DAY_MS)), 1)
  t.same((await readdir(dir)).sort(), [`${'b'.repeat(24)}.chunk`, `${'c'.repeat(24)}.chunk.bak`, 'mine.chunk'])
  t.equal(await removeStaleStaged(join(dir, 'missing'), new Date()), 0, 'no staging directory: nothing')
})

t.test('a body being staged by a request is never swept, whatever its age', async (t) => {
  const server = await startServer(t)
  const url = await createUpload(server, { 'Upload-Length': '11' })
  const body = new PassThrough()
  const answer = new Promise<number>((resolve, reject) => {
    const request = httpRequest(url, {
      method: 'PATCH',
      headers: { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', 'Content-Length': '11', 'Upload-Checksum': 'sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=', ...OCTET }
    }, (response) => { response.resume(); resolve(response.statusCode!) })
    request.on('error', reject)
    body.pipe(request)
  })
  const staging = join(server.dir, '.staging')
  await mkdir(staging, { recursive: true })
  const watcher = new AbortController()
  const events = watch(staging, { signal: watcher.signal })[Symbol.asyncIterator]()
  // The first next() starts the watcher, before the first byte is sent.
  let next = events.next()
  body.write('hello ')
  let name: string | undefined
  while (name === undefined) {
    const event = await next
    if (event.done === true) break
    if (event.value.filename?.endsWith('.chunk') === true) name = event.value.filename
    else next = events.next()
  }
  watcher.abort()
  t.ok(name, 'the body is being staged')
  await age(join(staging, name!), 30)
  t.equal(await removeStaleStaged(staging, new Date(Date.now() + DAY_MS)), 0, 'the staged body in use is skipped')
  body.end('world')
  t.equal(await answer, 204)
  t.equal((await readFile(join(server.dir, idOf(url)))).toString(), 'hello world', 'its bytes were committed whole')
  t.same(await readdir(staging), [], 'and removed by its request')
})

t.test('app.tus.removeExpired() collects what crashes left, keeps valid uploads that did not expire', async (t) => {
  const server = await startServer(t, { daysToKeep: 2 })
  const dir = server.dir
  // A complete upload (kept: expireCompleted is false) and an unfinished one that is not expired, both old files.
  const complete = await createUpload(server, { 'Upload-Length': '5' })
  t.equal((await tusRequest(complete, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: 'whole' })).status, 204)
  const unfinished = await createUpload(server, { 'Upload-Length': '10' })
  t.equal((await tusRequest(unfinished, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET }, body: 'half' })).status, 204)
  await age(join(dir, `${idOf(complete)}.json`), 30)
  await age(join(dir, idOf(complete)), 30)
  await age(join(dir, `${idOf(unfinished)}.json`), 30)
  await age(join(dir, idOf(unfinished)), 1)
  await put(join(dir, 'torn.json'), '{"id":"to', 3)
  await put(join(dir, 'torn'), '', 3)
  await put(join(dir, 'orphan'), 'bytes of nobody', 3)
  await put(join(dir, 'orphan-young'), 'bytes of nobody, younger than the retention', 1)
  await put(join(dir, `${idOf(unfinished)}.json.00112233aabb-0.tmp`), '{', 3)
  await put(join(dir, '.staging', `${'d'.repeat(24)}.chunk`), 'staged before a crash', 3)
  await put(join(dir, '.staging', `${'e'.repeat(24)}.chunk`), 'staged an hour ago', 1 / 24)
  await put(join(dir, 'readme.txt'), 'mine', 30)
  const before = await snapshot(dir)

  t.equal(await server.app.tus.removeExpired(), 0, 'no upload expired')
  const gone = ['torn.json', 'torn', 'orphan', `${idOf(unfinished)}.json.00112233aabb-0.tmp`, `.staging/${'d'.repeat(24)}.chunk`]
  const after = await snapshot(dir)
  t.same(after, new Map([...before].filter(([path]) => !gone.includes(path))), 'only the abandoned files went; the rest is byte-identical')
  t.equal((await tusRequest(complete, { method: 'HEAD' })).headers['upload-offset'], '5', 'the complete upload answers')
  t.equal((await tusRequest(unfinished, { method: 'HEAD' })).headers['upload-offset'], '4', 'the unfinished one too')
})

t.test('removeExpired() sweeps staged bodies with any store; never when uploads never expire', async (t) => {
  const dir = await tempDir(t)
  // Stores without removeAbandoned (FileStore's calls, passed on).
  const bare = (directory: string): DataStore => {
    const inner = new FileStore({ directory })
    return {
      create: async (...args) => await inner.create(...args),
      getInfo: async (...args) => await inner.getInfo(...args),
      write: async (...args) => await inner.write(...args),
      flush: async (id) => { await inner.flush(id) },
      declareLength: async (...args) => await inner.declareLength(...args),
      read: async (...args) => await inner.read(...args),
      terminate: async (...args) => await inner.terminate(...args),
      list: () => inner.list(),
      close: async () => { await inner.close() }
    }
  }
  const stale = join(dir, '.staging', `${'f'.repeat(24)}.chunk`)
  await put(stale, 'staged before a crash', 30)
  const never = await startServer(t, { dir, store: bare(join(dir, 'a')), daysToKeep: Number.POSITIVE_INFINITY })
  t.equal(await never.app.tus.removeExpired(), 0)
  t.ok(await exists(stale), 'uploads never expire: staged bodies are kept too')
  const server = await startServer(t, { dir, store: bare(join(dir, 'b')), daysToKeep: 5 })
  t.equal(await server.app.tus.removeExpired(), 0)
  t.notOk(await exists(stale), 'removed with a store that has no removeAbandoned')
})
