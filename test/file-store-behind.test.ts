// Files changed behind the server's back (by hand, a cleanup script) while it runs, through tus 1.0.0 and the IETF
// draft (interop 6 and 9). With the default in-process lock the file store is the sole writer of its uploads and
// keeps an upload's data file open between its PATCHes (5 s): a PATCH must still never write through that
// descriptor once the file was truncated, removed or moved away, nor complete an upload over a hole.
import t, { type Test } from 'tap'
import { existsSync } from 'node:fs'
import { appendFile, mkdir, mkdtemp, readFile, rename, rm, truncate, unlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { UploadInfo } from '../lib/index.js'
import { idOf, send, sha256, sha256File, startServer, type HttpAnswer, type TestServer } from './helpers.js'

interface Protocol {
  name: string
  /** Creates an upload of `length` bytes and returns its URL. */
  create: (server: TestServer, length: number) => Promise<string>
  append: (url: string, offset: number, body: string, last: boolean) => Promise<HttpAnswer>
  head: (url: string) => Promise<HttpAnswer>
}

const tus: Protocol = {
  name: 'tus 1.0.0',
  async create (server, length) {
    const response = await send(server.endpoint, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Length': String(length) })
    if (response.status !== 201) throw new Error(`creation: ${response.status} ${response.body}`)
    return new URL(response.headers.location!, server.origin).href
  },
  async append (url, offset, body) {
    return await send(url, 'PATCH', { 'Tus-Resumable': '1.0.0', 'Upload-Offset': String(offset), 'Content-Type': 'application/offset+octet-stream' }, body)
  },
  async head (url) {
    return await send(url, 'HEAD', { 'Tus-Resumable': '1.0.0' })
  }
}

function draft (interop: number): Protocol {
  const version = { 'Upload-Draft-Interop-Version': String(interop) }
  return {
    name: `draft interop ${interop}`,
    async create (server, length) {
      const response = await send(server.endpoint, 'POST', { ...version, 'Upload-Complete': '?0', 'Upload-Length': String(length) })
      if (response.status !== 201) throw new Error(`creation: ${response.status} ${response.body}`)
      return new URL(response.headers.location!, server.origin).href
    },
    async append (url, offset, body, last) {
      return await send(url, 'PATCH', { ...version, 'Upload-Offset': String(offset), 'Upload-Complete': last ? '?1' : '?0', 'Content-Type': 'application/partial-upload' }, body)
    },
    async head (url) {
      return await send(url, 'HEAD', version)
    }
  }
}

const PROTOCOLS = [tus, draft(6), draft(9)]

/** A server on a fresh directory, with the uploads onUploadComplete was called for. */
async function server (t: Test): Promise<{ server: TestServer, completed: UploadInfo[] }> {
  const completed: UploadInfo[] = []
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-behind-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  return { server: await startServer(t, { dir, onUploadComplete: (upload) => { completed.push(upload) } }), completed }
}

/** Moves an upload's data file into `<dir>/aside/` (still linked there, so its descriptor's link count says nothing); its new path. */
async function moveAside (dir: string, path: string): Promise<string> {
  await mkdir(join(dir, 'aside'))
  const moved = join(dir, 'aside', 'moved')
  await rename(path, moved)
  return moved
}

for (const protocol of PROTOCOLS) {
  t.test(`${protocol.name}: a data file truncated behind the server within 5 s of a PATCH: the next PATCH is refused at the bytes on disk, nothing completes over a hole`, async (t) => {
    const { server: s, completed } = await server(t)
    const url = await protocol.create(s, 10)
    const path = join(s.dir, idOf(url))
    t.equal((await protocol.append(url, 0, 'ABCDE', false)).status, 204)
    await truncate(path, 3)
    const refused = await protocol.append(url, 5, 'FGHIJ', true)
    t.equal(refused.status, 409, 'the offset the client sent is no longer the upload\'s')
    t.equal(refused.headers['upload-offset'], '3', 'the bytes on disk')
    t.same(completed, [], 'onUploadComplete did not run')
    t.equal(await sha256File(path), sha256('ABC'), 'nothing written past the cut')
    const head = await protocol.head(url)
    t.equal(head.headers['upload-offset'], '3')
    const resumed = await protocol.append(url, 3, 'DEFGHIJ', true)
    t.equal(resumed.status, 204)
    t.equal(resumed.headers['upload-offset'], '10')
    t.equal(await sha256File(path), sha256('ABCDEFGHIJ'), 'every byte where its offset says, no hole')
    t.same(completed.map((upload) => [upload.id, upload.offset]), [[idOf(url), 10]], 'completed once, when whole')
  })

  t.test(`${protocol.name}: data grown behind the server (the same size is not what it left): the next PATCH is refused`, async (t) => {
    const { server: s, completed } = await server(t)
    const url = await protocol.create(s, 10)
    const path = join(s.dir, idOf(url))
    t.equal((await protocol.append(url, 0, 'ABC', false)).status, 204)
    // Another tool appends two bytes: the store's own last write left 3.
    await appendFile(path, 'xy')
    const refused = await protocol.append(url, 3, 'DEFGHIJ', true)
    t.equal(refused.status, 409)
    t.equal(refused.headers['upload-offset'], '5')
    t.same(completed, [])
    t.equal(await sha256File(path), sha256('ABCxy'))
  })

  for (const removal of ['data and info files', 'the whole directory'] as const) {
    for (const headFirst of [false, true]) {
      t.test(`${protocol.name}: ${removal} removed behind the server within 5 s of a PATCH${headFirst ? ', then a HEAD (404)' : ''}: the next PATCH is 404, nothing completes, nothing is written`, async (t) => {
        const { server: s, completed } = await server(t)
        const url = await protocol.create(s, 10)
        const path = join(s.dir, idOf(url))
        t.equal((await protocol.append(url, 0, '12345', false)).status, 204)
        if (removal === 'the whole directory') {
          await rm(s.dir, { recursive: true })
        } else {
          await unlink(path)
          await unlink(`${path}.json`)
        }
        if (headFirst) t.equal((await protocol.head(url)).status, 404)
        const patch = await protocol.append(url, 5, '67890', true)
        t.equal(patch.status, 404, 'the upload is gone')
        t.same(completed, [], 'onUploadComplete did not run')
        t.notOk(existsSync(path), 'no data file made again')
        t.equal((await protocol.head(url)).status, 404)
      })
    }
  }

  t.test(`${protocol.name}: data moved away (still linked elsewhere) and its info removed; once a HEAD said 404, the next PATCH is 404 too: the 404 drops the kept descriptor`, async (t) => {
    const { server: s, completed } = await server(t)
    const url = await protocol.create(s, 10)
    const path = join(s.dir, idOf(url))
    t.equal((await protocol.append(url, 0, '12345', false)).status, 204)
    const moved = await moveAside(s.dir, path)
    await unlink(`${path}.json`)
    t.equal((await protocol.head(url)).status, 404)
    const patch = await protocol.append(url, 5, '67890', true)
    t.equal(patch.status, 404)
    t.same(completed, [])
    t.equal(await readFile(moved, 'utf8'), '12345', 'nothing written through the old descriptor')
    t.notOk(existsSync(path))
  })
}

t.test('a kept descriptor whose file changed size behind the server is not trusted: the path decides (here another file, made there by hand)', async (t) => {
  const { server: s, completed } = await server(t)
  const url = await tus.create(s, 10)
  const path = join(s.dir, idOf(url))
  t.equal((await tus.append(url, 0, '12345', false)).status, 204)
  // The data file moved aside and written to there; a
  // file of the same 5 bytes put at the path in its place.
  const moved = await moveAside(s.dir, path)
  await appendFile(moved, 'xy')
  await writeFile(path, 'ABCDE')
  const patch = await tus.append(url, 5, '67890', true)
  t.equal(patch.status, 204)
  t.equal(patch.headers['upload-offset'], '10')
  t.equal(await sha256File(path), sha256('ABCDE67890'), 'written to the file at the path')
  t.equal(await readFile(moved, 'utf8'), '12345xy', 'not through the old descriptor')
  t.same(completed.map((upload) => upload.path), [path])
})

for (const protocol of PROTOCOLS) {
  t.test(`${protocol.name}: the upload directory removed while the server runs: the next creation makes it again (not 500 until a restart)`, async (t) => {
    const { server: s, completed } = await server(t)
    const first = await protocol.create(s, 3)
    t.equal((await protocol.append(first, 0, 'abc', true)).status, 204)
    await rm(s.dir, { recursive: true })
    const url = await protocol.create(s, 5)
    const path = join(s.dir, idOf(url))
    t.ok(existsSync(`${path}.json`), 'the info file is in the directory made again')
    const patch = await protocol.append(url, 0, 'hello', true)
    t.equal(patch.status, 204)
    t.equal(patch.headers['upload-offset'], '5')
    t.equal(await sha256File(path), sha256('hello'))
    t.same(completed.map((upload) => [upload.id, upload.offset]), [[idOf(first), 3], [idOf(url), 5]])
    const head = await protocol.head(url)
    t.equal(head.headers['upload-offset'], '5', 'complete (not left pending completion)')
    const download = await send(url, 'GET', {})
    t.equal(download.status, 200)
    t.equal(download.body, 'hello')
    // And again, with the directory gone once more.
    await rm(s.dir, { recursive: true })
    const again = await protocol.create(s, 2)
    t.equal((await protocol.append(again, 0, 'ok', true)).status, 204)
    t.equal(await readFile(join(s.dir, idOf(again)), 'utf8'), 'ok')
  })
}
