// Concatenation across processes sharing one FileStore directory: the finals waiting for partials are recorded in the
// directory (`.finals/<partial id>/<final id>`), so the request that completes a final's last partial finishes the
// final in whichever process it runs, wherever the final was created (README, concatenation-unfinished).
import t from 'tap'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FileStore } from '../lib/index.js'
import { idOf, randomBytesSeeded, rawRequest, sha256, sha256File, startChild, tusRequest, type ChildServer } from './helpers.js'
import { uniqueName } from './services.js'

async function directory (t: { teardown: (fn: () => unknown) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-file-finals-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

t.test('the records are seen by every FileStore on the directory; removing them, and terminating the partial, leaves nothing', async (t) => {
  const dir = await directory(t)
  const [store, other] = [new FileStore({ directory: dir }), new FileStore({ directory: dir })]
  t.teardown(async () => { await store.close(); await other.close() })
  t.same(await other.listPendingFinals('partial1'), [], 'none at first')
  await store.addPendingFinal('final1', ['partial1', 'partial1', 'partial2'])
  await store.addPendingFinal('final2', ['partial1'])
  await store.addPendingFinal('final2', ['partial1'])
  t.same((await other.listPendingFinals('partial1')).sort(), ['final1', 'final2'], 'seen by another store on the directory')
  t.same(await other.listPendingFinals('partial2'), ['final1'])
  await other.removePendingFinal('final1', ['partial1', 'partial2'])
  await other.removePendingFinal('final1', ['partial1'])
  t.same(await store.listPendingFinals('partial1'), ['final2'])
  t.same(await store.listPendingFinals('partial2'), [])
  await store.create({ id: 'partial1', size: 3, metadata: {}, concat: { type: 'partial' } })
  await store.terminate('partial1')
  t.same(await other.listPendingFinals('partial1'), [], 'terminating a partial removes its records')
  t.same(await readdir(join(dir, '.finals')), [], 'no directory left for either partial')
  await t.rejects(store.addPendingFinal('../x', ['partial1']), { code: 'FST_TUS_NOT_FOUND' })
  await t.rejects(store.listPendingFinals('a/b'), { code: 'FST_TUS_NOT_FOUND' })
})

/** The names in a directory; none when it does not exist. */
async function listed (path: string): Promise<string[]> {
  return await readdir(path).catch(() => [])
}

async function completions (server: ChildServer): Promise<Record<string, number>> {
  return JSON.parse((await rawRequest(`${server.origin}/test/completions`)).text) as Record<string, number>
}

const lockers: Array<{ name: string, env: (dir: string) => Record<string, string> }> = [
  { name: 'RedisLocker', env: () => ({ TUS_CHILD_REDIS_PREFIX: `${uniqueName('tus-file-finals')}:` }) },
  { name: 'FileLocker', env: (dir) => ({ TUS_CHILD_FILE_LOCKS: join(dir, '.locks') }) }
]

// How the last partial's completing PATCH is spelled.
const protocols: Array<{ name: string, headers: Record<string, string> }> = [
  { name: 'tus 1.0.0', headers: { 'Tus-Resumable': '1.0.0', 'Content-Type': 'application/offset+octet-stream' } },
  ...[6, 9].map((version) => ({
    name: `draft interop ${version}`,
    headers: { 'Upload-Draft-Interop-Version': String(version), 'Content-Type': 'application/partial-upload', 'Upload-Complete': '?1' }
  }))
]

for (const locker of lockers) {
  for (const protocol of protocols) {
    t.test(`${locker.name}, ${protocol.name}: a final created on A is finished by B completing its last partial; onUploadComplete once, on B`, async (t) => {
      t.setTimeout(60_000)
      const dir = await directory(t)
      const env = locker.env(dir)
      const [a, b] = await Promise.all([startChild(t, dir, env), startChild(t, dir, env)])
      const parts = [randomBytesSeeded(70_000, 71), randomBytesSeeded(90_001, 72)]
      const ids: string[] = []
      for (const part of parts) {
        const created = await tusRequest(`${a!.origin}/files/`, { method: 'POST', headers: { 'Upload-Length': String(part.length), 'Upload-Concat': 'partial' } })
        t.equal(created.status, 201)
        ids.push(idOf(new URL(created.headers.location!, a!.origin).href))
      }
      const first = await tusRequest(`${a!.origin}/files/${ids[0]!}`, { method: 'PATCH', headers: { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }, body: parts[0]! })
      t.equal(first.status, 204)

      // The second partial is unfinished when A makes the final: the final waits for it.
      const half = 40_000
      const started = await tusRequest(`${b!.origin}/files/${ids[1]!}`, { method: 'PATCH', headers: { 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream' }, body: parts[1]!.subarray(0, half) })
      t.equal(started.status, 204)
      const final = await tusRequest(`${a!.origin}/files/`, { method: 'POST', headers: { 'Upload-Concat': `final;/files/${ids[0]!} /files/${ids[1]!}` } })
      t.equal(final.status, 201)
      const finalId = idOf(new URL(final.headers.location!, a!.origin).href)
      t.same(await listed(join(dir, '.finals', ids[1]!)), [finalId], 'the final is recorded beside the partial it waits for')

      // B completes the last partial: it finishes the final before it answers.
      const last = await rawRequest(`${b!.origin}/files/${ids[1]!}`, { method: 'PATCH', headers: { ...protocol.headers, 'Upload-Offset': String(half) }, body: parts[1]!.subarray(half) })
      t.equal(last.status, 204)
      t.same(await completions(b!), { [finalId]: 1 }, 'B completed the final when it completed its last partial')
      t.same(await completions(a!), {}, 'A did not')
      const whole = Buffer.concat(parts)
      t.equal(await sha256File(join(dir, finalId)), sha256(whole), 'the final\'s data file holds both partials, in order')
      t.same(await listed(join(dir, '.finals')), [], 'no record is left')

      for (const server of [a!, b!]) {
        const head = await tusRequest(`${server.origin}/files/${finalId}`, { method: 'HEAD' })
        t.equal(head.status, 200)
        t.equal(head.headers['upload-offset'], String(whole.length))
        const download = await rawRequest(`${server.origin}/files/${finalId}`)
        t.equal(download.status, 200)
        t.equal(sha256(download.body), sha256(whole))
      }
      const runs = [...Object.values(await completions(a!)), ...Object.values(await completions(b!))]
      t.same(runs, [1], 'onUploadComplete ran once, in all')
    })
  }
}
