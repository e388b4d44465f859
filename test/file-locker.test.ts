// FileLocker: lock files with leases for several processes on one host, no lock service. The unit tests use
// several lockers on one directory, as several processes would; the last tests use real processes.
import t from 'tap'
import { link, mkdtemp, readFile, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawn } from 'node:child_process'
import { PassThrough } from 'node:stream'
import { FileLocker, type FileLockerOptions } from '../lib/lockers/file-locker.js'
import type { UploadLock } from '../lib/lockers/lock.js'
import { concurrentPatchRounds, createUpload, idOf, lockError, randomBytesSeeded, sha256, startChild, startServer, tusRequest, type ChildServer } from './helpers.js'

const MiB = 1024 * 1024
const OCTET = { 'Content-Type': 'application/offset+octet-stream' }

async function lockDir (t: { teardown: (fn: () => unknown) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-tus-locks-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

function lockers (t: { teardown: (fn: () => unknown) => void }, directory: string, count: number, options: Partial<FileLockerOptions> = {}): FileLocker[] {
  return Array.from({ length: count }, () => {
    const locker = new FileLocker({ directory, ...options })
    t.teardown(async () => { await locker.close() })
    return locker
  })
}

t.test('a held lock refuses another locker with 423; its release wakes a waiter at once', async (t) => {
  const dir = await lockDir(t)
  const [a, b] = lockers(t, dir, 2, { retryMs: 60_000 })
  const held = await a!.lock('upload1', { timeoutMs: 1000 })
  const refused = await lockError(b!.lock('upload1', { timeoutMs: 200, requestRelease: false }))
  t.equal(refused.code, 'FST_TUS_LOCKED')
  t.equal(refused.statusCode, 423)
  const other = await b!.lock('upload2', { timeoutMs: 1000 })
  await other.release()
  t.same(await readdir(dir), ['upload1.lock'], 'one lock file while held, removed by the release')
  // retryMs is a minute: only the release (seen through fs.watch) can wake the waiter within its 30 s.
  const begin = Date.now()
  const waiting = b!.lock('upload1', { timeoutMs: 30_000, requestRelease: false })
  await held.release()
  await held.release()
  const next = await waiting
  t.ok(Date.now() - begin < 5000, `woken by the release (${Date.now() - begin} ms)`)
  await next.release()
  t.same(await readdir(dir), [])
})

t.test('waiting asks the holder to finish; requestRelease: false does not, nor a waiter that then holds it', async (t) => {
  const dir = await lockDir(t)
  const [a, b] = lockers(t, dir, 2)
  let asked = 0
  let askedOnce: () => void = () => {}
  const askedPromise = new Promise<void>((resolve) => { askedOnce = resolve })
  const held = await a!.lock('u', { timeoutMs: 1000, onReleaseRequested: () => { asked++; askedOnce() } })
  await lockError(b!.lock('u', { timeoutMs: 300, requestRelease: false }))
  t.equal(asked, 0, 'background waiters do not disturb the holder')
  let askedB = 0
  const waiting = b!.lock('u', { timeoutMs: 30_000, onReleaseRequested: () => { askedB++ } })
  await askedPromise
  t.ok(asked >= 1, 'the holder was asked')
  await held.release()
  const next = await waiting
  // Its own request, still on disk if the holder had gone before it was written, is not a request to it.
  const check = await a!.lock('other', { timeoutMs: 1000 })
  await check.release()
  t.equal(askedB, 0, 'the new holder is not asked by its own request')
  await next.release()
})

t.test('three lockers contending for one upload never overlap', async (t) => {
  t.setTimeout(120_000)
  const dir = await lockDir(t)
  let inside = 0
  let overlaps = 0
  let count = 0
  await Promise.all(lockers(t, dir, 3, { retryMs: 20 }).map(async (locker) => {
    for (let i = 0; i < 20; i++) {
      const lock = await locker.lock('shared', { timeoutMs: 60_000, requestRelease: false })
      inside++
      if (inside > 1) overlaps++
      await new Promise((resolve) => setImmediate(resolve))
      count++
      inside--
      await lock.release()
    }
  }))
  t.equal(overlaps, 0)
  t.equal(count, 60)
})

t.test('a release request is removed by the waiter that made it, when it gives up too; one another waiter replaced is left', async (t) => {
  const dir = await lockDir(t)
  const [a, b, c] = lockers(t, dir, 3)
  const held = await a!.lock('u', { timeoutMs: 1000 })
  t.equal((await lockError(b!.lock('u', { timeoutMs: 200 }))).code, 'FST_TUS_LOCKED')
  t.same(await readdir(dir), ['u.lock'], 'the waiter that gave up took its request with it')

  // b asks, then c asks (replacing b's request); b gives up: the request is c's now, and stays.
  const giving = lockError(b!.lock('u', { timeoutMs: 1500 }))
  while (!(await readdir(dir)).includes('u.release')) await new Promise((resolve) => setImmediate(resolve))
  // b's request, read before c starts: read after, it could already be c's, which nothing would replace.
  const release = join(dir, 'u.release')
  const first = await readFile(release, 'utf8')
  const patient = c!.lock('u', { timeoutMs: 30_000 })
  while (await readFile(release, 'utf8') === first) await new Promise((resolve) => setImmediate(resolve))
  t.equal((await giving).code, 'FST_TUS_LOCKED')
  t.same((await readdir(dir)).sort(), ['u.lock', 'u.release'], 'c\'s request is left')
  await held.release()
  const next = await patient
  t.same(await readdir(dir), ['u.lock'], 'c holds it, and removed its request')
  await next.release()
  t.same(await readdir(dir), [], 'nothing left once released')
})

t.test('a lock whose lease ran out is taken over; the old holder\'s signal is aborted and its release leaves the new lock', async (t) => {
  const dir = await lockDir(t)
  // A ttl of seconds, not a few hundred ms: a takeover removes the lock file only while its claim is younger than
  // half the ttl, and on a loaded disk b's link and stats took longer than 300 ms (b then waited in vain).
  const [a, b] = lockers(t, dir, 2, { ttlMs: 3000, retryMs: 20 })
  let stop: () => void = () => {}
  const stopped = new Promise<void>((resolve) => { stop = resolve })
  const stale = await a!.lock('u', { timeoutMs: 1000, onReleaseRequested: () => { stop() } })
  // What a frozen or dead holder leaves: a lease not renewed for longer than the ttl. But a is alive and renews it
  // every second: a renewal landing between the ageing and b's look makes it live again, as it is, and b gives up.
  // It is aged again then, until b finds it expired.
  const past = new Date(Date.now() - 60_000)
  let current: UploadLock | undefined
  for (let attempt = 0; attempt < 10 && current === undefined; attempt++) {
    await utimes(join(dir, 'u.lock'), past, past)
    current = await b!.lock('u', { timeoutMs: 500, requestRelease: false }).catch(() => undefined)
  }
  if (current === undefined) throw new Error('b never took over the lock whose lease ran out')
  // The locker's timers do not keep a process alive (a server does); this test's process needs one.
  const alive = setInterval(() => {}, 1000)
  await stopped
  clearInterval(alive)
  t.equal(stale.signal?.aborted, true, 'the old holder knows it lost the lock')
  t.equal(current.signal?.aborted, false)
  await stale.release()
  const refused = await lockError(a!.lock('u', { timeoutMs: 200, requestRelease: false }))
  t.equal(refused.code, 'FST_TUS_LOCKED', 'the new holder still holds it')
  await current.release()
  t.same(await readdir(dir), [], 'no lock file, no claim left')
})

t.test('lockers taking over expired locks at once: never two holders of one lock', async (t) => {
  t.setTimeout(120_000)
  // 100 rounds of 12 expired lock files, each taken over by 4 lockers at once (in a process of their own, see the
  // fixture). Lockers that moved a lock file aside to check it, before the claims, let two hold one lock 5-30 times.
  const dir = await lockDir(t)
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'fixtures', 'takeover-stress.ts'), dir, '100', '4', '12'], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { child.kill('SIGKILL') })
  let output = ''
  child.stdout.setEncoding('utf8').on('data', (text: string) => { output += text })
  const exit = await new Promise((resolve) => child.on('close', resolve))
  t.equal(exit, 0, 'the stress ran')
  const { held, doubles, left } = JSON.parse(output) as { held: number, doubles: number, left: string[] }
  t.equal(doubles, 0, 'no lock held by two at once')
  t.equal(held, 100 * 12 * 4, 'every locker had every lock')
  t.same(left, [], 'no lock file, no claim left')
})

t.test('a claim left by a taker that died does not block the lock: passed once unchanged for the ttl', async (t) => {
  const dir = await lockDir(t)
  // Seconds, not a few hundred ms: the claim must still look fresh when a first looks at it, and a's own claim must
  // be younger than half the ttl when it removes the lock file (a loaded disk took longer than 200 ms for both).
  const ttlMs = 2000
  const [a] = lockers(t, dir, 1, { ttlMs, retryMs: 20 })
  const path = join(dir, 'u.lock')
  await writeFile(path, 'dead-holder.1')
  const past = new Date(Date.now() - 60_000)
  await utimes(path, past, past)
  // Before the link: its ctime, from which the ttl counts, is not earlier (the link may be answered long after).
  const begin = Date.now()
  // What a taker that died between its claim and the removal leaves: the expired lock, and a claim on it.
  await link(path, `${path}.dead-holder.1.claim`)
  const refused = await lockError(a!.lock('u', { timeoutMs: 150, requestRelease: false }))
  t.equal(refused.code, 'FST_TUS_LOCKED', 'a fresh claim: someone is taking it over')
  const lock = await a!.lock('u', { timeoutMs: 10_000, requestRelease: false })
  // 50 ms short of the ttl: a file's ctime comes from the kernel's coarse clock, a tick behind Date.now().
  t.ok(Date.now() - begin >= ttlMs - 50, `taken once the claim was unchanged for the ttl (${Date.now() - begin} ms)`)
  t.equal(await readFile(path, 'utf8') !== 'dead-holder.1', true, 'its own lock file')
  t.same(await readdir(dir), ['u.lock'], 'the claims are gone')
  await lock.release()
  t.same(await readdir(dir), [])
})

t.test('invalid options are refused at construction', async (t) => {
  for (const options of [{ directory: '' }, { directory: '/tmp', ttlMs: 0 }, { directory: '/tmp', retryMs: 1.5 }]) {
    t.throws(() => new FileLocker(options), { code: 'FST_TUS_INVALID_OPTION' }, JSON.stringify(options))
  }
})

async function processes (t: Parameters<typeof lockDir>[0], count: number): Promise<ChildServer[]> {
  const dir = await lockDir(t)
  const env = { TUS_CHILD_FILE_LOCKS: join(dir, '.locks') }
  // The first reports its progress: a test knows when a PATCH of its holds the lock.
  return await Promise.all(Array.from({ length: count }, async (_, index) => await startChild(t, dir, index === 0 ? { ...env, TUS_CHILD_PROGRESS: '1' } : env)))
}

async function progress (server: ChildServer, atLeast: number, exactly = false): Promise<void> {
  for (;;) {
    const { value, done } = await server.lines.next()
    if (done === true) throw new Error('the child exited')
    const offset = /^progress (\d+)$/.test(value) ? Number(value.slice(9)) : -1
    if (exactly ? offset === atLeast : offset >= atLeast) return
  }
}

t.test('two processes on one upload directory: concurrent PATCHes never interleave, a HEAD on one ends a PATCH on the other', async (t) => {
  t.setTimeout(120_000)
  const [a, b] = await processes(t, 2)
  const size = 8 * MiB
  await concurrentPatchRounds(t, a!.port, b!.port, size)

  // An upload whose requests alternate between the processes ends byte-identical.
  const data = randomBytesSeeded(3 * MiB + 17, 110)
  const created = await tusRequest(`http://127.0.0.1:${b!.port}/files/`, { method: 'POST', headers: { 'Upload-Length': String(data.length) } })
  const id = idOf(new URL(created.headers.location!).href)
  for (let offset = 0, turn = 0; offset < data.length; turn++) {
    const server = [a!, b!][turn % 2]!
    const response = await tusRequest(`http://127.0.0.1:${server.port}/files/${id}`, {
      method: 'PATCH', headers: { 'Upload-Offset': String(offset), ...OCTET }, body: data.subarray(offset, offset + MiB)
    })
    t.equal(response.status, 204)
    offset = Number(response.headers['upload-offset'])
  }
  const download = await tusRequest(`http://127.0.0.1:${a!.port}/files/${id}`)
  t.equal(sha256(download.body), sha256(data))

  // A HEAD on B waits for the PATCH running on A, and asks it to end (else it would wait for its idle timeout).
  const slow = await tusRequest(`http://127.0.0.1:${a!.port}/files/`, { method: 'POST', headers: { 'Upload-Length': String(MiB) } })
  const slowUrl = new URL(slow.headers.location!).pathname
  const body = new PassThrough()
  const patch = tusRequest(`http://127.0.0.1:${a!.port}${slowUrl}`, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET, 'Content-Length': String(MiB) }, body })
    .then((response) => response.status, () => 'closed')
  body.write(Buffer.alloc(1000, 1))
  // Exactly 1000: A's earlier reports (whole chunks of other uploads) are still in the pipe.
  await progress(a!, 1000, true)
  const head = await tusRequest(`http://127.0.0.1:${b!.port}${slowUrl}`, { method: 'HEAD' })
  t.equal(head.headers['upload-offset'], '1000')
  t.ok([204, 'closed'].includes(await patch), 'the PATCH on A ended when B asked')
})

t.test('fencing with lock files: a process frozen past the lease, then resumed, appends nothing after the new holder\'s bytes', async (t) => {
  t.setTimeout(120_000)
  const dir = await lockDir(t)
  const env = { TUS_CHILD_FILE_LOCKS: join(dir, '.locks'), TUS_CHILD_LOCK_TTL: '1500', TUS_CHILD_LOCK_TIMEOUT: '8000' }
  const [a, b] = await Promise.all([startChild(t, dir, { ...env, TUS_CHILD_PROGRESS: '1' }), startChild(t, dir, env)])
  t.teardown(() => { a!.child.kill('SIGCONT') })
  const size = 8 * MiB
  const created = await tusRequest(`http://127.0.0.1:${b!.port}/files/`, { method: 'POST', headers: { 'Upload-Length': String(size) } })
  const url = new URL(created.headers.location!).pathname
  const stale = randomBytesSeeded(6 * MiB, 120)
  const body = new PassThrough()
  const patchA = tusRequest(`http://127.0.0.1:${a!.port}${url}`, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET, 'Content-Length': String(stale.length) }, body })
    .then((response) => response.status, () => 'closed')
  body.write(stale.subarray(0, 3 * MiB))
  await progress(a!, 3 * MiB)
  // Reported is handed to the store. A write already handed to the file system when A froze still runs when it
  // wakes, at its own offset: from a real client the very bytes B receives there (the next test), but this
  // test's A sends other bytes, so wait until its writes are on disk.
  const dataFile = join(dir, new URL(created.headers.location!).pathname.split('/').pop()!)
  while ((await stat(dataFile)).size < 3 * MiB) await new Promise((resolve) => setTimeout(resolve, 10))
  a!.child.kill('SIGSTOP')
  // B waits for A's lease to run out; the bytes A stored before it froze are the upload's.
  const head = await tusRequest(`http://127.0.0.1:${b!.port}${url}`, { method: 'HEAD' })
  const stored = Number(head.headers['upload-offset'])
  t.equal(stored, 3 * MiB, 'what A stored before it froze')
  const data = randomBytesSeeded(size, 121)
  const patchB = await tusRequest(`http://127.0.0.1:${b!.port}${url}`, { method: 'PATCH', headers: { 'Upload-Offset': String(stored), ...OCTET }, body: data.subarray(stored, stored + MiB) })
  t.equal(patchB.status, 204)
  a!.child.kill('SIGCONT')
  body.end(stale.subarray(3 * MiB))
  t.not(await patchA, 204, 'the resumed PATCH is not acknowledged')
  const after = await tusRequest(`http://127.0.0.1:${b!.port}${url}`, { method: 'HEAD' })
  t.equal(after.headers['upload-offset'], String(stored + MiB), 'nothing appended after B\'s bytes')
  const rest = await tusRequest(`http://127.0.0.1:${a!.port}${url}`, { method: 'PATCH', headers: { 'Upload-Offset': String(stored + MiB), ...OCTET }, body: data.subarray(stored + MiB) })
  t.equal(rest.status, 204)
  const download = await tusRequest(`http://127.0.0.1:${b!.port}${url}`)
  t.equal(sha256(download.body), sha256(Buffer.concat([stale.subarray(0, stored), data.subarray(stored)])), 'every stored byte where it was acknowledged')
})

async function completions (server: ChildServer): Promise<Record<string, number>> {
  return JSON.parse((await tusRequest(`http://127.0.0.1:${server.port}/test/completions`)).body.toString()) as Record<string, number>
}

t.test('fencing with lock files: a process frozen with writes still queued for the disk, then resumed, writes none of them', async (t) => {
  t.setTimeout(120_000)
  const dir = await lockDir(t)
  const env = { TUS_CHILD_FILE_LOCKS: join(dir, '.locks'), TUS_CHILD_LOCK_TTL: '1500', TUS_CHILD_LOCK_TIMEOUT: '8000' }
  const [a, b] = await Promise.all([startChild(t, dir, { ...env, TUS_CHILD_PROGRESS: '1' }), startChild(t, dir, env)])
  t.teardown(() => { a!.child.kill('SIGCONT') })
  const data = randomBytesSeeded(64 * MiB, 122)
  const created = await tusRequest(`http://127.0.0.1:${b!.port}/files/`, { method: 'POST', headers: { 'Upload-Length': String(data.length) } })
  const url = new URL(created.headers.location!).pathname
  // One client sending its file as fast as it can: A is frozen mid-stream, with chunks queued behind a write.
  const body = new PassThrough()
  const patchA = tusRequest(`http://127.0.0.1:${a!.port}${url}`, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET, 'Content-Length': String(data.length) }, body })
    .then((response) => response.status, () => 'closed')
  body.write(data.subarray(0, 16 * MiB))
  await progress(a!, 4 * MiB)
  a!.child.kill('SIGSTOP')
  // The client, cut off, resumes through B once A's lease has run out; B acknowledges 4 MiB more.
  const head = await tusRequest(`http://127.0.0.1:${b!.port}${url}`, { method: 'HEAD' })
  const stored = Number(head.headers['upload-offset'])
  const acknowledged = stored + 4 * MiB
  const patchB = await tusRequest(`http://127.0.0.1:${b!.port}${url}`, { method: 'PATCH', headers: { 'Upload-Offset': String(stored), ...OCTET }, body: data.subarray(stored, acknowledged) })
  t.equal(patchB.headers['upload-offset'], String(acknowledged))
  a!.child.kill('SIGCONT')
  body.end(data.subarray(16 * MiB))
  t.not(await patchA, 204, 'the resumed PATCH is not acknowledged')
  const after = await tusRequest(`http://127.0.0.1:${b!.port}${url}`, { method: 'HEAD' })
  t.equal(after.headers['upload-offset'], String(acknowledged), 'the offset is what B acknowledged: nothing of A\'s queue landed after it')
  const rest = await tusRequest(`http://127.0.0.1:${a!.port}${url}`, { method: 'PATCH', headers: { 'Upload-Offset': String(acknowledged), ...OCTET }, body: data.subarray(acknowledged) })
  t.equal(rest.status, 204)
  const download = await tusRequest(`http://127.0.0.1:${b!.port}${url}`)
  t.equal(sha256(download.body), sha256(data), 'byte-identical')
  const id = idOf(`http://x${url}`)
  t.equal(((await completions(a!))[id] ?? 0) + ((await completions(b!))[id] ?? 0), 1, 'onUploadComplete ran once')
})

t.test('fencing with lock files: a process frozen while it copies partials into a final stops copying when it wakes; the final completes once, elsewhere', async (t) => {
  t.setTimeout(120_000)
  const dir = await lockDir(t)
  const env = { TUS_CHILD_FILE_LOCKS: join(dir, '.locks'), TUS_CHILD_LOCK_TTL: '1500', TUS_CHILD_LOCK_TIMEOUT: '8000' }
  const [a, b] = await Promise.all([startChild(t, dir, env), startChild(t, dir, env)])
  t.teardown(() => { a!.child.kill('SIGCONT') })
  const parts = [randomBytesSeeded(96 * MiB, 123), randomBytesSeeded(96 * MiB, 124)]
  const partials: string[] = []
  for (const part of parts) {
    const partial = await tusRequest(`http://127.0.0.1:${b!.port}/files/`, { method: 'POST', headers: { 'Upload-Length': String(part.length), 'Upload-Concat': 'partial', ...OCTET }, body: part })
    t.equal(partial.status, 201)
    partials.push(new URL(partial.headers.location!).pathname)
  }
  const before = new Set(await readdir(dir))
  const finalA = tusRequest(`http://127.0.0.1:${a!.port}/files/`, { method: 'POST', headers: { 'Upload-Concat': `final;${partials.join(' ')}` } })
    .then((response) => response.status, () => 'closed')
  // Frozen once the copy has begun (no event tells: the final's data file is watched growing).
  let id: string | undefined
  while (id === undefined) {
    id = (await readdir(dir)).find((name) => !before.has(name) && name.endsWith('.json'))?.slice(0, -'.json'.length)
    if (id === undefined) await new Promise((resolve) => setImmediate(resolve))
  }
  while (((await stat(join(dir, id)).catch(() => undefined))?.size ?? 0) === 0) await new Promise((resolve) => setImmediate(resolve))
  a!.child.kill('SIGSTOP')
  // B's HEAD waits for A's lease to run out, then finishes the final itself.
  const head = await tusRequest(`http://127.0.0.1:${b!.port}/files/${id}`, { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(head.headers['upload-offset'], String(192 * MiB), 'B finished the final')
  a!.child.kill('SIGCONT')
  t.not(await finalA, 201, 'the frozen creation is not acknowledged')
  t.equal((await stat(join(dir, id))).size, 192 * MiB, 'A copied nothing more after waking')
  const download = await tusRequest(`http://127.0.0.1:${b!.port}/files/${id}`)
  t.equal(sha256(download.body), sha256(Buffer.concat(parts)), 'byte-identical')
  t.equal(((await completions(a!))[id] ?? 0) + ((await completions(b!))[id] ?? 0), 1, 'onUploadComplete ran once, on B')
})

t.test('app.close() resolves once every lock is released: no lock file is left to hold the uploads of a restarted process', async (t) => {
  const dir = await lockDir(t)
  const locks = join(dir, '.locks')
  const server = await startServer(t, { locker: new FileLocker({ directory: locks }) })
  const urls = [await createUpload(server, { 'Upload-Length': String(8 * MiB) }), await createUpload(server, { 'Upload-Length': String(8 * MiB) })]
  const bodies = urls.map(() => new PassThrough())
  const stored = new Promise<void>((resolve) => {
    const seen = new Set<string>()
    server.app.tus.on('progress', (upload) => { seen.add(upload.id); if (seen.size === urls.length) resolve() })
  })
  const patches = urls.map(async (url, index) => await tusRequest(url, { method: 'PATCH', headers: { 'Upload-Offset': '0', ...OCTET, 'Content-Length': String(8 * MiB) }, body: bodies[index] })
    .then((response) => response.status, () => 'closed'))
  for (const body of bodies) body.write(randomBytesSeeded(MiB, 130))
  await stored
  await server.app.close()
  t.same((await readdir(locks)).filter((name) => name.endsWith('.lock')), [], 'every lock released before close() resolved')
  for (const body of bodies) body.destroy()
  await Promise.all(patches)
})
