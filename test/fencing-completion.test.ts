// Completion is fenced too: a process that stored an upload's last byte, then froze (SIGSTOP) past its lock's lease
// before completing it, finds its lock lost when it wakes and leaves the completion to the process holding the lock
// now (whose HEAD found the upload `completing` and completed it): onUploadComplete runs once across the processes.
// Two processes share one FileStore directory, with RedisLocker (real redis-server) and with FileLocker.
import t from 'tap'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { idOf, randomBytesSeeded, rawRequest, sha256, startChild, tusRequest, type ChildServer } from './helpers.js'
import { uniqueName } from './services.js'

const TTL = '1500'

async function completions (server: ChildServer): Promise<Record<string, number>> {
  return JSON.parse((await rawRequest(`${server.origin}/test/completions`)).text) as Record<string, number>
}

interface Protocol {
  name: string
  /** Headers of a PATCH that sends the whole upload from offset 0. */
  append: Record<string, string>
  /** Headers of an offset retrieval, and the status of a complete upload's. */
  head: Record<string, string>
  headStatus: number
}

const protocols: Protocol[] = [
  {
    name: 'tus 1.0.0',
    append: { 'Tus-Resumable': '1.0.0', 'Content-Type': 'application/offset+octet-stream', 'Upload-Offset': '0' },
    head: { 'Tus-Resumable': '1.0.0' },
    headStatus: 200
  },
  ...[6, 9].map((version) => ({
    name: `draft interop ${version}`,
    append: { 'Upload-Draft-Interop-Version': String(version), 'Content-Type': 'application/partial-upload', 'Upload-Offset': '0', 'Upload-Complete': '?1' },
    head: { 'Upload-Draft-Interop-Version': String(version) },
    headStatus: 204
  }))
]

const lockers: Array<{ name: string, env: (dir: string) => Record<string, string> }> = [
  { name: 'RedisLocker', env: () => ({ TUS_CHILD_REDIS_PREFIX: `${uniqueName('tus-fenced-completion')}:`, TUS_CHILD_REDIS_TTL: TTL }) },
  { name: 'FileLocker', env: (dir) => ({ TUS_CHILD_FILE_LOCKS: join(dir, '.locks'), TUS_CHILD_LOCK_TTL: TTL }) }
]

for (const locker of lockers) {
  for (const protocol of protocols) {
    t.test(`${locker.name}, ${protocol.name}: a holder frozen between the last byte and the completion completes nothing when it wakes; onUploadComplete runs once, where the lock is`, async (t) => {
      t.setTimeout(120_000)
      const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-fenced-completion-'))
      t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
      const env = { ...locker.env(dir), TUS_CHILD_LOCK_TIMEOUT: '8000' }
      // A's onUploadProgress holds the request once the last byte is in the data file, until POST /test/resume.
      const [a, b] = await Promise.all([startChild(t, dir, { ...env, TUS_CHILD_HOLD_AT_END: '1' }), startChild(t, dir, env)])
      t.teardown(() => { a!.child.kill('SIGCONT') })
      const data = randomBytesSeeded(300_000, 61)
      const created = await tusRequest(`${b!.origin}/files/`, { method: 'POST', headers: { 'Upload-Length': String(data.length) } })
      t.equal(created.status, 201)
      const id = idOf(new URL(created.headers.location!, b!.origin).href)
      const path = `/files/${id}`

      const patchA = rawRequest(`${a!.origin}${path}`, { method: 'PATCH', headers: protocol.append, body: data })
      for (;;) {
        const { value, done } = await a!.lines.next()
        if (done === true) throw new Error('A exited')
        if (value === 'at-end') break
      }
      a!.child.kill('SIGSTOP')

      // B's HEAD waits for A's lease to run out, finds every byte stored but the upload not completed, and completes it.
      const head = await rawRequest(`${b!.origin}${path}`, { method: 'HEAD', headers: protocol.head })
      t.equal(head.status, protocol.headStatus)
      t.equal(head.headers['upload-offset'], String(data.length))
      t.same(await completions(b!), { [id]: 1 }, 'B completed the upload')

      a!.child.kill('SIGCONT')
      t.equal((await rawRequest(`${a!.origin}/test/resume`, { method: 'POST' })).text, 'resumed')
      const answer = await patchA
      t.equal(answer.status, 503, 'A, whose lock was lost, does not report the completion')
      t.equal(answer.headers['retry-after'], '1')
      t.same(await completions(a!), {}, 'A did not run onUploadComplete')
      t.same(await completions(b!), { [id]: 1 }, 'onUploadComplete ran once')

      for (const server of [a!, b!]) {
        const again = await rawRequest(`${server.origin}${path}`, { method: 'HEAD', headers: protocol.head })
        t.equal(again.status, protocol.headStatus)
        t.equal(again.headers['upload-offset'], String(data.length))
        const download = await rawRequest(`${server.origin}${path}`)
        t.equal(download.status, 200)
        t.equal(sha256(download.body), sha256(data), 'every byte, once')
      }
      t.equal((await stat(join(dir, id))).mode & 0o100, 0, 'the data file is marked complete')
      const runs = [...Object.values(await completions(a!)), ...Object.values(await completions(b!))]
      t.same(runs, [1], 'still once, in all')
    })
  }
}
